"""Batched sweeps: many (augmentation strength, seed) configurations of the toy in one vectorized run.

Every configuration is an independent network; the leading axes (strength, seed) of every array are
carried through the closed-form gradients by numpy's batched matmul, so S x R runs cost about as much
Python overhead as one.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from threadpoolctl import threadpool_limits

from . import toy
from .covariance import contrastive_covariance, psd_check
from .dynamics import Trajectory, end_to_end, forward, run_gd
from .experiment import EVAL_SAMPLES, X_BATCHES, SimConfig, _finite_or_none, initial_weights
from .spectrum import n_collapsed, singular_values


def train_batched(
    strengths: np.ndarray, base: SimConfig, record_every: int | None = None, progress: bool = False
) -> tuple[Trajectory, np.random.Generator]:
    """One network per entry of ``strengths`` (any shape), trained together by gd with fresh views.

    Returns the trajectory (weights with leading axes ``strengths.shape``) and the generator, positioned
    after training, for further fresh batches.
    """
    strengths = np.asarray(strengths, dtype=np.float64)
    shape = strengths.shape
    rng = np.random.default_rng(base.seed)
    weights = initial_weights(base, rng, shape)

    def views(r: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return toy.toy_views(r, base.samples, base.dim, base.augmented_dims, strengths, base.noisy_views, shape)

    with threadpool_limits(limits=1, user_api="blas"):  # many tiny matmuls: threads only synchronise
        traj = run_gd(weights, base.steps, base.lr, views, rng, record_every=record_every or base.steps,
                      progress=progress, loss=base.loss, temperature=base.temperature, relu=base.relu)
    return traj, rng


def sweep(
    strengths: np.ndarray, seeds: int, base: SimConfig | None = None, progress: bool = False
) -> dict:
    """Train ``len(strengths) x seeds`` linear networks with gd (fresh augmentation each step) in one call.

    Returns arrays indexed [strength, seed]: ``collapsed_dims`` (observed, embedding spectrum on clean
    data), ``predicted_apriori`` (significantly negative eigenvalues of X at W -> 0), ``predicted_late``
    (of X at the end of training), both over ``X_BATCHES`` fresh batches, and
    ``embedding_singular_values`` [strength, seed, dim].
    """
    base = base or SimConfig()
    strengths = np.asarray(strengths, dtype=np.float64)
    for s in strengths:
        replace(base, augment_strength=float(s), integrator="gd").validate()
    if base.relu or base.loss not in ("paper", "dot"):
        raise ValueError("sweep supports linear networks with the paper or dot loss")
    shape = (len(strengths), seeds)
    per_config = np.broadcast_to(strengths[:, None], shape)
    traj, rng = train_batched(per_config, base, progress=progress)
    final = end_to_end(traj.final)
    x_eval = np.random.default_rng(base.seed + 1_000_003).standard_normal((EVAL_SAMPLES, base.dim))
    spectra = singular_values(forward([final], x_eval)[0])

    def predicted(weight: np.ndarray) -> np.ndarray:
        samples = np.stack([
            contrastive_covariance(
                *toy.toy_views(rng, base.samples, base.dim, base.augmented_dims, per_config, base.noisy_views, shape),
                weight, base.loss, base.temperature)[0]
            for _ in range(X_BATCHES)
        ])
        return np.array([[psd_check(samples[:, i, j].mean(0), samples=samples[:, i, j]).n_negative
                          for j in range(seeds)] for i in range(len(strengths))])

    with threadpool_limits(limits=1, user_api="blas"):
        return {
            "strengths": strengths.tolist(),
            "seeds": seeds,
            "config": {k: v for k, v in vars(base).items() if k != "augment_strength"},
            "collapsed_dims": np.asarray(n_collapsed(spectra)),
            "predicted_apriori": predicted(np.zeros((*shape, 1, base.dim))),
            "predicted_late": predicted(final),
            "embedding_singular_values": spectra,
            "final_weights": final,
            "apriori_threshold": _finite_or_none(toy.apriori_threshold(base.noisy_views)),
        }
