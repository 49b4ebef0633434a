"""The one place the figures reach into ``theory`` beyond its top-level API, plus small shared helpers.

If the theory package moves a name, only this module needs to follow it.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from theory import SimConfig, analyse, integrate, train_batched
from theory.dynamics import forward
from theory.experiment import EVAL_SAMPLES, covariance_samples, evaluation_inputs

__all__ = [
    "EVAL_SAMPLES",
    "SimConfig",
    "analyse",
    "covariance_samples",
    "eval_inputs",
    "integrate",
    "one_blas_thread",
    "train_batched",
]


def one_blas_thread() -> threadpool_limits:
    """The toy's matrices are 16 x 16 and 128 x 16: BLAS threads only synchronise. Use as a context."""
    return threadpool_limits(limits=1, user_api="blas")


def eval_inputs(cfg: SimConfig) -> np.ndarray:
    """The clean evaluation inputs ``theory`` uses for every embedding spectrum."""
    return evaluation_inputs(cfg.seed, cfg.dim)


def embeddings(weights: list[np.ndarray], x: np.ndarray, relu: bool = False) -> np.ndarray:
    return forward(weights, x, relu)[0]
