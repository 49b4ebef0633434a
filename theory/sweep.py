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
from .dynamics import end_to_end, forward, run_gd
from .experiment import EVAL_SAMPLES, X_BATCHES, SimConfig, initial_weights
from .spectrum import n_collapsed, singular_values


def sweep(
    strengths: np.ndarray, seeds: int, base: SimConfig | None = None, progress: bool = False
) -> dict:
    """Train ``len(strengths) x seeds`` networks with gd (fresh augmentation each step) in one call.

    Returns arrays indexed [strength, seed]: ``collapsed_dims`` (observed, embedding spectrum on clean
    data), ``predicted_apriori`` (negative eigenvalues of X at W -> 0), ``predicted_late`` (of X at the end
    of training, averaged over fresh batches), and ``embedding_singular_values`` [strength, seed, dim].
    """
    base = base or SimConfig()
    strengths = np.asarray(strengths, dtype=np.float64)
    for s in strengths:
        replace(base, augment_strength=float(s), integrator="gd").validate()
    if base.relu or base.loss not in ("paper", "dot"):
        raise ValueError("sweep supports linear networks with the paper or dot loss")
    with threadpool_limits(limits=1, user_api="blas"):  # many tiny matmuls: threads only synchronise
        return _sweep(base, strengths, seeds, progress)


def _sweep(base: SimConfig, strengths: np.ndarray, seeds: int, progress: bool) -> dict:
    shape = (len(strengths), seeds)
    per_config = np.broadcast_to(strengths[:, None], shape)
    rng = np.random.default_rng(base.seed)
    weights = initial_weights(base, rng, shape)

    def views(r: np.random.Generator, n: int = base.samples) -> tuple[np.ndarray, np.ndarray]:
        return toy.toy_views(r, n, base.dim, base.augmented_dims, per_config, base.noisy_views, shape)

    traj = run_gd(weights, base.steps, base.lr, views, rng, record_every=base.steps, progress=progress,
                  loss=base.loss, temperature=base.temperature)
    final = end_to_end(traj.final)
    x_eval = np.random.default_rng(base.seed + 1_000_003).standard_normal((EVAL_SAMPLES, base.dim))
    spectra = singular_values(forward([final], x_eval)[0])

    def predicted(weight: np.ndarray) -> np.ndarray:
        cov = np.mean([contrastive_covariance(*views(rng), weight, base.loss, base.temperature)[0]
                       for _ in range(X_BATCHES)], axis=0)
        return np.array([[psd_check(cov[i, j]).n_negative for j in range(seeds)] for i in range(len(strengths))])

    return {
        "strengths": strengths.tolist(),
        "seeds": seeds,
        "config": {k: v for k, v in vars(base).items() if k not in ("augment_strength",)},
        "collapsed_dims": np.asarray(n_collapsed(spectra)),
        "predicted_apriori": predicted(np.zeros((*shape, 1, base.dim))),
        "predicted_late": predicted(final),
        "embedding_singular_values": spectra,
        "apriori_threshold": toy.apriori_threshold(base.noisy_views),
    }
