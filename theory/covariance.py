"""The contrastive covariance X (paper Lemma 1-2, Eqn 5-7) and its PSD check.

For a linear network with end-to-end matrix W (z = W x), the gradient of the batch-mean loss is
-dL/dW = W X (Eqn 5, G = -W X), so a single layer follows W' = W X (Lemma 1).

``paper`` loss (Eqn 2), Lemma 2 with the sign of App. B.2 (paper.md 1.4; the main text's leading minus
is a typo), divided by N because our loss is the batch mean:

    X = Sigma0 - Sigma1
    Sigma0 = (1/N) sum_{i,j} alpha_ij (x_i - x_j)(x_i - x_j)^T          weighted data covariance
    Sigma1 = (1/N) sum_i (1 - alpha_ii)(x_i' - x_i)(x_i' - x_i)^T       weighted augmentation covariance

At W = 0 every alpha is 1/N, so X = (N-1)/N (2 Cov(x) - Cov(x' - x)) up to sampling: with one noisy view
(x' = x + eps) X stops being PSD where the noise variance exceeds twice the data variance; with both views
noisy X -> 2 Cov(clean x), PSD at every strength (see ``apriori_covariance``).

``dot`` loss (official toy code, p = softmax(z z'^T / tau)): the same identity holds with the symmetric

    X = (x^T (I - p) x' + x'^T (I - p)^T x) / (tau N).

We split it as Sigma0 = (1/(tau N)) sum_ij p_ij (x_i - x_j)(x_i - x_j)^T (PSD, the analogue of Lemma 2's)
and Sigma1 = Sigma0 - X, which holds the augmentation terms and is *not* PSD in general.

NT-Xent normalizes z, so its weight gradient is not W times a symmetric matrix: X is not defined for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .losses import DEFAULT_TEMPERATURE, paper_weights

PSD_RTOL = 1e-2
COVARIANCE_LOSSES = ("paper", "dot")


def _t(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


def _pair_covariance(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """sum_{i,j} w_ij (x_i - x_j)(x_i - x_j)^T for a (..., N, N) weight matrix, in O(N^2 d + N d^2)."""
    out_w = weights.sum(axis=-1)[..., :, None]
    in_w = weights.sum(axis=-2)[..., :, None]
    cross = _t(x) @ weights @ x
    return _t(x) @ ((out_w + in_w) * x) - cross - _t(cross)


def contrastive_covariance(
    x: np.ndarray,
    x_aug: np.ndarray,
    weight: np.ndarray,
    loss: str = "paper",
    temperature: float = DEFAULT_TEMPERATURE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (X, Sigma0, Sigma1) with X = Sigma0 - Sigma1 and -dL/dW = W X (Lemma 2, Eqn 6-7).

    x, x_aug: (..., N, d) the two views; weight: (..., d_out, d) the end-to-end linear map.
    """
    x = np.asarray(x, dtype=np.float64)
    x_aug = np.asarray(x_aug, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    if x.shape != x_aug.shape:
        raise ValueError(f"views must have the same shape, got {x.shape} and {x_aug.shape}")
    if weight.shape[-1] != x.shape[-1]:
        raise ValueError(f"weight has input dimension {weight.shape[-1]}, data has {x.shape[-1]}")
    n = x.shape[-2]
    z, z_aug = x @ _t(weight), x_aug @ _t(weight)
    if loss == "paper":
        alpha = paper_weights(z, z_aug)
        a_pos = np.diagonal(alpha, axis1=-2, axis2=-1)
        off = alpha * (1.0 - np.eye(n))
        sigma0 = _pair_covariance(off, x) / n
        eps = x_aug - x
        sigma1 = _t(eps) @ ((1.0 - a_pos)[..., None] * eps) / n
        return sigma0 - sigma1, sigma0, sigma1
    if loss == "dot":
        logits = z @ _t(z_aug) / temperature
        logits -= logits.max(axis=-1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=-1, keepdims=True)
        m = np.eye(n) - p
        half = _t(x) @ m @ x_aug
        cov = (half + _t(half)) / (temperature * n)
        sigma0 = _pair_covariance(p, x) / (temperature * n)
        return cov, sigma0, sigma0 - cov
    raise ValueError(f"X is defined for the losses {', '.join(COVARIANCE_LOSSES)}, not {loss!r}")


@dataclass
class PSDCheck:
    """Eigenvalues of a symmetric matrix (descending), how many are negative, and the verdict."""

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray  # columns, in the order of ``eigenvalues``
    n_negative: int
    is_psd: bool
    tolerance: float | np.ndarray  # eigenvalue k counts as negative when below -tolerance (per direction)
    standard_errors: np.ndarray | None = None  # of v_k^T X v_k across the given samples


def psd_check(
    matrix: np.ndarray, rtol: float = PSD_RTOL, samples: np.ndarray | None = None, z_score: float = 3.0
) -> PSDCheck:
    """Is ``matrix`` PSD? An eigenvalue counts as negative when it is below -rtol * max|eigenvalue|.

    When ``samples`` (B, d, d), independent estimates whose mean is ``matrix``, are given, the eigenvalue
    must also lie more than ``z_score`` standard errors below zero, the standard error of v^T X v across
    the samples. Both guards matter late in training: at a stationary point of W' = W X, X vanishes on
    W's row space, so there X is pure sampling noise of either sign, and only significantly negative
    eigenvalues predict collapse (Theorem 1). The verdict is invariant to an orthogonal change of basis.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {matrix.shape}")
    sym = 0.5 * (matrix + matrix.T)
    values, vectors = np.linalg.eigh(sym)
    values, vectors = values[::-1], vectors[:, ::-1]
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    tol: float | np.ndarray = rtol * scale
    errors = None
    if samples is not None and len(samples) > 1:
        rayleigh = np.einsum("ik,bij,jk->bk", vectors, np.asarray(samples, dtype=np.float64), vectors)
        errors = rayleigh.std(axis=0, ddof=1) / np.sqrt(len(samples))
        tol = np.maximum(tol, z_score * errors)
    n_negative = int(np.sum(values < -tol))
    return PSDCheck(values, vectors, n_negative, n_negative == 0, tol, errors)


def apriori_covariance(x: np.ndarray, x_aug: np.ndarray) -> np.ndarray:
    """X at W -> 0 for the paper loss: all alpha_ij = 1/N, independent of the network (Sec. 1.5)."""
    x = np.asarray(x, dtype=np.float64)
    return contrastive_covariance(x, x_aug, np.zeros((1, x.shape[-1])))[0]
