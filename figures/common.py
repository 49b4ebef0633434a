"""The one place the figures reach into ``theory`` beyond its top-level API, plus small shared helpers.

If the theory package moves a name, only this module needs to follow it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from theory import toy
from theory.dynamics import forward, run_gd
from theory.experiment import EVAL_SAMPLES, SimConfig, analyse, initial_weights, integrate

__all__ = [
    "EVAL_SAMPLES",
    "SimConfig",
    "analyse",
    "eval_inputs",
    "initial_weights",
    "integrate",
    "one_blas_thread",
    "train_batched",
]


def one_blas_thread() -> threadpool_limits:
    """The toy's matrices are 16 x 16 and 128 x 16: BLAS threads only synchronise. Use as a context."""
    return threadpool_limits(limits=1, user_api="blas")


def eval_inputs(cfg: SimConfig) -> np.ndarray:
    """The clean evaluation inputs ``theory`` uses for every embedding spectrum (same seed rule)."""
    return np.random.default_rng(cfg.seed + 1_000_003).standard_normal((EVAL_SAMPLES, cfg.dim))


def train_batched(
    strengths: np.ndarray, base: SimConfig, record_every: int | None = None, on_views: Callable | None = None
):
    """Train one network per strength in one batched run_gd call; returns the Trajectory.

    ``theory.sweep`` runs the same batched loop but returns only spectra and counts, not the weights.
    """
    strengths = np.asarray(strengths, dtype=np.float64)
    shape = strengths.shape
    rng = np.random.default_rng(base.seed)
    weights = initial_weights(base, rng, shape)

    def views(r: np.random.Generator):
        return toy.toy_views(
            r, base.samples, base.dim, base.augmented_dims, strengths, base.noisy_views, shape
        )

    with one_blas_thread():
        return run_gd(
            weights,
            base.steps,
            base.lr,
            views,
            rng,
            record_every=record_every or base.steps,
            loss=base.loss,
            temperature=base.temperature,
            relu=base.relu,
        )


def embeddings(weights: list[np.ndarray], x: np.ndarray, relu: bool = False) -> np.ndarray:
    return forward(weights, x, relu)[0]
