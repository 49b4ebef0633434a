"""Shared helpers for the theory tests: central finite differences and small random problems."""

from __future__ import annotations

import numpy as np


def central_diff(fun, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Gradient of the scalar function ``fun`` at ``x`` (any shape) by central differences."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + h
        up = float(fun(x))
        flat[k] = old - h
        down = float(fun(x))
        flat[k] = old
        gflat[k] = (up - down) / (2 * h)
    return grad


def random_views(rng: np.random.Generator, n: int, d: int, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Two views of n points in R^d: x ~ N(0, I), x' = x + noise * N(0, I)."""
    x = rng.standard_normal((n, d))
    return x, x + noise * rng.standard_normal((n, d))


def random_orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))
