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


def torch_losses(tau: float = 0.1):
    """(torch, {name: loss(z, z_aug)}): the three losses written from the equations, batch mean."""
    import pytest

    torch = pytest.importorskip("torch")
    functional = torch.nn.functional

    def paper(z, za):
        # logits -|z_i - z_j|^2 / 2 to same-branch negatives, the positive from the other branch on the diagonal
        neg = -0.5 * ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
        pos = -0.5 * ((z - za) ** 2).sum(-1)
        eye = torch.eye(len(z), dtype=torch.bool)
        logits = torch.where(eye, pos[:, None].expand_as(neg), neg)
        return (torch.logsumexp(logits, dim=1) - pos).mean()

    def dot(z, za):
        s = z @ za.T / tau
        return functional.cross_entropy(s, torch.arange(len(z)))

    def ntxent(z, za):
        n = len(z)
        u = functional.normalize(torch.cat([z, za]), dim=1)
        s = u @ u.T / tau
        s = s.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
        target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
        return functional.cross_entropy(s, target)

    return torch, {"paper": paper, "dot": dot, "ntxent": ntxent}
