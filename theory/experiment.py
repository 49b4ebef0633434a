"""One toy experiment of the paper (Sec. 4-5, App. C): configure, integrate, analyse.

``simulate(SimConfig(...))`` trains a linear network under InfoNCE on the toy data and returns a JSON-ready
dict with what was observed (embedding spectrum, collapsed dimensions) next to what the theory predicts
(X's negative eigen-directions at W -> 0, at t = 0 and late in training, alignment, conservation law,
Theorem 3). ``theory.simulate`` is its command line.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from . import toy
from .covariance import COVARIANCE_LOSSES, contrastive_covariance, psd_check
from .dynamics import (
    ODE_METHODS,
    Trajectory,
    end_to_end,
    forward,
    paper_init,
    run_gd,
    run_ode,
    scaled_init,
)
from .losses import DEFAULT_TEMPERATURE, LOSSES
from .predict import (
    alignment_matrix,
    alignment_score,
    collapsed_input_subspace,
    conservation_drift,
    negative_subspace,
    subspace_overlap,
    theorem3_check,
)
from .spectrum import collapsed_mask, embedding_spectrum

EVAL_SAMPLES = 4096
X_BATCHES = 64  # fresh batches per X measurement on a gd run: their spread sets the noise floor of psd_check
LATE_FRACTION = 0.1  # "late in training": the last 10% of the recorded times


@dataclass
class SimConfig:
    augment_strength: float = 2.0
    augmented_dims: int = 8
    dim: int = 16
    layers: int = 1
    relu: bool = False
    samples: int = 128
    loss: str = "paper"
    temperature: float = DEFAULT_TEMPERATURE
    integrator: str = "gd"
    steps: int = 2000
    time: float | None = None
    lr: float = 0.02
    init: str = "paper"
    noisy_views: int = 1
    ode_method: str = "RK45"
    seed: int = 0

    @property
    def total_time(self) -> float:
        return self.time if self.time is not None else self.steps * self.lr

    def validate(self) -> None:
        """Raise ValueError with one line naming the bad value and what is allowed."""
        s = self.augment_strength
        if not (isinstance(s, int | float) and math.isfinite(s) and s >= 0):
            raise ValueError(f"--augment-strength must be a finite number >= 0, got {s}")
        if self.dim < 1:
            raise ValueError(f"--dim must be >= 1, got {self.dim}")
        if not 0 <= self.augmented_dims <= self.dim:
            raise ValueError(f"--augmented-dims must be between 0 and --dim ({self.dim}), got {self.augmented_dims}")
        if self.layers < 1:
            raise ValueError(f"--layers must be >= 1, got {self.layers}")
        if self.samples < 2:
            raise ValueError(f"--samples must be >= 2 (a batch needs negatives), got {self.samples}")
        if self.loss not in LOSSES:
            raise ValueError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"--temperature must be a finite number > 0, got {self.temperature}")
        if self.integrator not in ("gd", "ode"):
            raise ValueError(f"--integrator must be gd or ode, got {self.integrator!r}")
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")
        if self.time is not None and not (math.isfinite(self.time) and self.time > 0):
            raise ValueError(f"--time must be a finite number > 0, got {self.time}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr must be a finite number > 0, got {self.lr}")
        if self.init != "paper":
            try:
                scale = float(self.init)
            except ValueError:
                raise ValueError(f"--init must be 'paper' or a positive number, got {self.init!r}") from None
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"--init must be 'paper' or a positive number, got {self.init!r}")
        if self.noisy_views not in toy.NOISY_VIEWS:
            raise ValueError(f"--noisy-views must be 1 or 2, got {self.noisy_views}")
        if self.ode_method not in ODE_METHODS:
            raise ValueError(f"--ode-method must be one of {', '.join(ODE_METHODS)}, got {self.ode_method!r}")


def initial_weights(cfg: SimConfig, rng: np.random.Generator, batch_shape: tuple = ()) -> list[np.ndarray]:
    if cfg.init == "paper":
        return paper_init(cfg.dim, cfg.layers, rng, batch_shape)
    return scaled_init(cfg.dim, cfg.layers, float(cfg.init), rng, batch_shape)


def _views(cfg: SimConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return toy.toy_views(rng, cfg.samples, cfg.dim, cfg.augmented_dims, cfg.augment_strength, cfg.noisy_views)


def integrate(cfg: SimConfig, progress: bool = False) -> tuple[Trajectory, np.random.Generator, tuple | None]:
    """Run the configured integrator; returns the trajectory, the rng and the fixed sample (ode) if any."""
    rng = np.random.default_rng(cfg.seed)
    weights = initial_weights(cfg, rng)
    kwargs = dict(loss=cfg.loss, temperature=cfg.temperature, relu=cfg.relu)
    if cfg.integrator == "gd":
        record_every = max(1, cfg.steps // 200)
        steps = cfg.steps if cfg.time is None else max(1, round(cfg.time / cfg.lr))
        traj = run_gd(weights, steps, cfg.lr, lambda r: _views(cfg, r), rng, record_every, progress, **kwargs)
        return traj, rng, None
    fixed = _views(cfg, rng)
    return run_ode(weights, cfg.total_time, views=fixed, method=cfg.ode_method, **kwargs), rng, fixed


def measured_covariance(
    cfg: SimConfig, weight: np.ndarray, rng: np.random.Generator, fixed: tuple | None
) -> np.ndarray:
    """Per-batch X of the end-to-end map, (B, d, d): the fixed sample (ode, B = 1) or fresh batches (gd)."""
    batches = [fixed] if fixed is not None else [_views(cfg, rng) for _ in range(X_BATCHES)]
    return np.stack([contrastive_covariance(x, xa, weight, cfg.loss, cfg.temperature)[0] for x, xa in batches])


def _finite_or_none(value: float) -> float | None:
    """JSON has no infinity: an absent threshold is null."""
    return value if math.isfinite(value) else None


def analyse(cfg: SimConfig, traj: Trajectory, rng: np.random.Generator, fixed: tuple | None) -> dict:
    """Observed outcome and the theory's predictions, as a JSON-ready dict."""
    final = traj.final
    eval_rng = np.random.default_rng(cfg.seed + 1_000_003)
    x_eval = eval_rng.standard_normal((EVAL_SAMPLES, cfg.dim))
    z_eval = forward(final, x_eval, cfg.relu)[0]
    spec = embedding_spectrum(z_eval)
    result: dict = {
        "config": asdict(cfg),
        "time": float(traj.times[-1]),
        "gradient_evaluations": traj.gradient_evaluations,
        "final_loss": float(traj.losses[-1]) if len(traj.losses) else None,
        "weight_singular_values": [np.linalg.svd(w, compute_uv=False).tolist() for w in final],
        "embedding_singular_values": spec.singular_values.tolist(),
        "embedding_log10_spectrum": spec.to_json()["log10"],
        "collapsed_dims": spec.n_collapsed,
        "effective_rank": spec.effective_rank,
        "rankme": spec.rankme,
        "apriori_threshold": _finite_or_none(toy.apriori_threshold(cfg.noisy_views)),
        "trajectory": {
            "times": traj.times.tolist(),
            "weight_singular_values": [np.linalg.svd(w, compute_uv=False).tolist() for w in traj.weights],
            "loss": [float(v) for v in traj.losses],
        },
    }
    if not cfg.relu:  # for isotropic data the embedding covariance is W W^T: its singular values over time
        end = end_to_end(traj.weights)
        result["trajectory"]["embedding_singular_values"] = (np.linalg.svd(end, compute_uv=False) ** 2).tolist()
    linear_x = not cfg.relu and cfg.loss in COVARIANCE_LOSSES
    if linear_x:
        w_end0 = end_to_end([w[0] for w in traj.weights])
        w_end = end_to_end(final)
        late = np.flatnonzero(traj.times >= (1 - LATE_FRACTION) * traj.times[-1])
        samples_init = measured_covariance(cfg, w_end0, rng, fixed)
        samples_late = np.concatenate([measured_covariance(cfg, end_to_end([w[k] for w in traj.weights]), rng, fixed)
                                       for k in late[:: max(1, len(late) // 5)]])
        samples_apriori = measured_covariance(cfg, np.zeros((1, cfg.dim)), rng, fixed)
        x_init, x_late, x_apriori = (x.mean(axis=0) for x in (samples_init, samples_late, samples_apriori))
        check0 = psd_check(x_init, samples=samples_init)
        check1 = psd_check(x_late, samples=samples_late)
        check_prior = psd_check(x_apriori, samples=samples_apriori)
        predicted = negative_subspace(x_late, samples=samples_late)
        observed = collapsed_input_subspace(w_end, spec.n_collapsed)
        gain = np.linalg.norm(w_end @ check1.eigenvectors, axis=0) ** 2
        mask = toy.augmentation_mask(cfg.dim, cfg.augmented_dims)
        result.update({
            "predicted_collapsed_dims": check1.n_negative,
            "predicted_collapsed_dims_initial": check0.n_negative,
            "predicted_collapsed_dims_apriori": check_prior.n_negative,
            "collapsed_subspace_overlap": subspace_overlap(predicted, observed),
            "contrastive_covariance_eigenvalues": {
                "initial": check0.eigenvalues.tolist(),
                "final": check1.eigenvalues.tolist(),
                "apriori": check_prior.eigenvalues.tolist(),
            },
            "is_psd": {"initial": check0.is_psd, "final": check1.is_psd, "apriori": check_prior.is_psd},
            "directions": {  # eigen-directions of the late X, ascending eigenvalue
                "x_eigenvalue_final": check1.eigenvalues[::-1].tolist(),
                "x_rayleigh_initial": np.einsum("ik,ij,jk->k", check1.eigenvectors, x_init,
                                                check1.eigenvectors)[::-1].tolist(),
                "embedding_variance": gain[::-1].tolist(),
                "augmented_share": ((check1.eigenvectors**2).T @ mask)[::-1].tolist(),
                "predicted_collapsed": (check1.eigenvalues < -check1.tolerance)[::-1].tolist(),
                "observed_collapsed": collapsed_mask(gain)[::-1].tolist(),
            },
        })
    if cfg.layers >= 2:
        a = alignment_matrix(final[0], final[1])
        survivors = spec.singular_values.size - spec.n_collapsed
        result["alignment_matrix"] = a.tolist()
        result["alignment_score"] = alignment_score(a)
        result["alignment_score_surviving"] = alignment_score(a, survivors)
        if not cfg.relu:
            result["conservation_drift"] = conservation_drift([w[0] for w in traj.weights], final)
    if cfg.layers >= 2 and linear_x:
        check = theorem3_check(x_init, np.linalg.svd(traj.weights[0][0], compute_uv=False), cfg.layers)
        result["theorem3"] = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in check.items()}
    return result


def simulate(cfg: SimConfig, progress: bool = False) -> dict:
    """Validate, integrate, analyse. Raises ValueError (bad config) or DivergenceError (blow-up)."""
    cfg.validate()
    with threadpool_limits(limits=1, user_api="blas"):  # tiny matrices: extra threads only synchronise
        traj, rng, fixed = integrate(cfg, progress)
        return analyse(cfg, traj, rng, fixed)
