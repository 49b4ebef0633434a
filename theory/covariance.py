"""The contrastive covariance X (paper Lemma 1-2, Eqn 5-7) and its PSD check.

For a linear network with end-to-end matrix W (z = W x), the gradient of the batch-mean loss is
-dL/dW = W X (Eqn 5, G = -W X), so a single layer follows W' = W X (Lemma 1).

``paper`` loss (Eqn 2), Lemma 2 with the sign of App. B.2 (the main text's leading minus
is a typo), divided by N because our loss is the batch mean:

    X = Sigma0 - Sigma1
    Sigma0 = (1/N) sum_{i,j} alpha_ij (x_i - x_j)(x_i - x_j)^T          weighted data covariance
    Sigma1 = (1/N) sum_i (1 - alpha_ii)(x_i' - x_i)(x_i' - x_i)^T       weighted augmentation covariance

At W = 0 every alpha is 1/N, so exactly X = 2 C(x) - (N-1)/N M(x' - x), with C the 1/N sample covariance
and M(e) = (1/N) sum_i e_i e_i^T; in expectation, for zero-mean noise, X = (N-1)/N (2 Cov(x) - Cov(x' - x))
with population covariances. With one noisy view (x' = x + eps) X stops being PSD where the noise variance
exceeds twice the data variance; with both views noisy X -> 2 Cov(clean x), PSD at every strength (see
``apriori_covariance``).

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
PSD_ALPHA = 0.01  # family-wise level of the cross-fitted PSD test
COVARIANCE_LOSSES = ("paper", "dot")


def _t(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


def _pair_covariance(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """sum_{i,j} w_ij (x_i - x_j)(x_i - x_j)^T for a (..., N, N) weight matrix, in O(N^2 d + N d^2)."""
    out_w = weights.sum(axis=-1)[..., :, None]
    in_w = weights.sum(axis=-2)[..., :, None]
    cross = _t(x) @ weights @ x
    return _t(x) @ ((out_w + in_w) * x) - cross - _t(cross)


def _checked(x, x_aug, weight) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, x_aug, weight = (np.asarray(a, dtype=np.float64) for a in (x, x_aug, weight))
    if x.shape != x_aug.shape:
        raise ValueError(f"views must have the same shape, got {x.shape} and {x_aug.shape}")
    if weight.shape[-1] != x.shape[-1]:
        raise ValueError(f"weight has input dimension {weight.shape[-1]}, data has {x.shape[-1]}")
    return x, x_aug, weight


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
    x, x_aug, weight = _checked(x, x_aug, weight)
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
        p = _dot_softmax(z, z_aug, temperature)
        cov = _dot_x(p, x, x_aug, temperature)
        sigma0 = _pair_covariance(p, x) / (temperature * n)
        return cov, sigma0, sigma0 - cov
    raise ValueError(f"X is defined for the losses {', '.join(COVARIANCE_LOSSES)}, not {loss!r}")


def _dot_softmax(z: np.ndarray, z_aug: np.ndarray, temperature: float) -> np.ndarray:
    """p = softmax(z z'^T / tau) row-wise."""
    logits = z @ _t(z_aug) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    p = np.exp(logits, out=logits)
    p /= p.sum(axis=-1, keepdims=True)
    return p


def _dot_x(p: np.ndarray, x: np.ndarray, x_aug: np.ndarray, temperature: float) -> np.ndarray:
    """X = (x^T (I - p) x' + x'^T (I - p)^T x) / (tau N) of the dot loss."""
    half = _t(x) @ x_aug - (_t(x) @ p) @ x_aug
    return (half + _t(half)) / (temperature * x.shape[-2])


def contrastive_x(
    x: np.ndarray, x_aug: np.ndarray, weight: np.ndarray, loss: str = "paper",
    temperature: float = DEFAULT_TEMPERATURE,
) -> np.ndarray:
    """X alone (``contrastive_covariance(...)[0]``), without the dot loss's Sigma0 and Sigma1."""
    if loss != "dot":
        return contrastive_covariance(x, x_aug, weight, loss, temperature)[0]
    x, x_aug, weight = _checked(x, x_aug, weight)
    p = _dot_softmax(x @ _t(weight), x_aug @ _t(weight), temperature)
    return _dot_x(p, x, x_aug, temperature)


@dataclass
class PSDCheck:
    """Spectrum of a symmetric matrix X (descending), its significantly negative directions, the verdict.

    ``negative`` marks the ``n_negative`` most negative eigen-directions of X (a suffix, since the
    eigenvalues descend); ``basis`` is their orthonormal basis, Theorem 1's predicted collapse set. With
    ``samples`` the held-out statistics of both cross-fitting splits are kept (row s: directions chosen on
    half s, in the descending order of that half's eigenvalues, tested on the other half).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray  # columns, in the order of ``eigenvalues``
    n_negative: int
    is_psd: bool
    # eigenvalue k counts as negative iff eigenvalues[k] < -tolerance[k] (a float without samples: the rule)
    tolerance: float | np.ndarray
    standard_errors: np.ndarray | None = None  # (2, d) held-out standard error of v^T X v
    statistics: np.ndarray | None = None  # (2, d) held-out t = mean(v^T X_b v) / standard error
    p_values: np.ndarray | None = None  # (2, d) one-sided, H0: v^T E[X] v >= 0
    directions: np.ndarray | None = None  # (2, d, d) the tested directions (columns) of each split
    alpha: float | None = None  # family-wise level of the test (Holm over the 2d p-values)
    n_significant: tuple[int, int] | None = None  # Holm rejections per split

    @property
    def negative(self) -> np.ndarray:
        return self.eigenvalues < -np.asarray(self.tolerance)

    @property
    def basis(self) -> np.ndarray:
        return self.eigenvectors[:, self.negative]


def holm(p_values: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's step-down rejections (family-wise error <= alpha under any dependence)."""
    flat = p_values.ravel()
    order = np.argsort(flat, kind="stable")
    passed = flat[order] <= alpha / (flat.size - np.arange(flat.size))
    k = flat.size if passed.all() else int(np.argmin(passed))
    reject = np.zeros(flat.size, dtype=bool)
    reject[order[:k]] = True
    return reject.reshape(p_values.shape)


def one_sided_t(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of values (samples, k): standard error of the mean, t = mean / se and the one-sided p-value of
    H0: mean >= 0 (Student's t with samples - 1 degrees of freedom; ``ttest_1samp(..., alternative="less")``)."""
    from scipy.special import stdtr

    n = len(values)
    mean = values.mean(axis=0)
    se = values.std(axis=0, ddof=1) / np.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, mean / np.where(se > 0, se, 1.0), np.where(mean < 0, -np.inf, np.inf))
    return se, t, stdtr(n - 1, t)


def _held_out(select: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, ...]:
    """Eigen-directions of mean(select) (descending) and the t statistics of v^T X_b v over ``test``."""
    sel = np.mean(select, axis=0)
    vectors = np.linalg.eigh(0.5 * (sel + sel.T))[1][:, ::-1]
    return vectors, *one_sided_t(np.einsum("ik,bij,jk->bk", vectors, test, vectors))


def psd_check(
    matrix: np.ndarray,
    rtol: float = PSD_RTOL,
    samples: np.ndarray | None = None,
    z_score: float | None = None,
    alpha: float = PSD_ALPHA,
) -> PSDCheck:
    """Is E[X] PSD, and along which directions is it significantly negative (Theorem 1, Corollary 1)?

    Without ``samples``: eigenvalue k of ``matrix`` counts as negative when it is below -rtol * max|eig|.

    With ``samples`` (B independent, identically distributed estimates X_b of E[X], shape (B, d, d);
    ``matrix`` is normally their mean), a cross-fitted test decides the count. The samples are cut into
    two halves H0, H1 (first and second B // 2). For split s, the eigenvectors v_k of mean(H_s) are fixed
    before H_{1-s} is looked at, so on H_{1-s} each v_k^T X_b v_k is an i.i.d. sample whose mean is
    v_k^T E[X] v_k; its one-sided t test (Student t, |H_{1-s}| - 1 degrees of freedom) rejects
    H0_k: v_k^T E[X] v_k >= 0. If E[X] is PSD every H0_k is true, so Holm's correction over the 2d tests
    makes P(any rejection) <= ``alpha`` (default 0.01; exact for Gaussian X_b, asymptotic in the batch size
    otherwise). Choosing and testing on the same batches would select the most negative noise and is biased
    toward "not PSD". The count is the larger number of rejections of the two splits, further capped by the
    relative rule above (an eigenvalue of ``matrix`` below -rtol * max|eig|), and the reported basis is the
    eigenvectors of ``matrix`` for its ``n_negative`` lowest eigenvalues. ``z_score``, if given, replaces the
    Holm threshold by the per-direction rule t < -z_score (no multiplicity correction, not calibrated).
    With B < 4 there is no held-out spread to test with: the relative rule alone decides (``statistics`` is
    None), as without samples.

    The samples must be independent draws at one fixed W: for gradient flow on a fixed sample, pass X of
    fresh batches at the final W, never snapshots of X over time (their spread is drift, not noise).
    The verdict is invariant to an orthogonal change of basis of X and of all samples.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {matrix.shape}")
    d = matrix.shape[0]
    values, vectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
    values, vectors = values[::-1], vectors[:, ::-1]
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    rel_tol = rtol * scale
    relative = int(np.sum(values < -rel_tol))
    if samples is not None:
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim != 3 or samples.shape[1:] != (d, d):
            raise ValueError(f"samples must have shape (B, {d}, {d}), got {samples.shape}")
    if samples is None or len(samples) < 4:
        return PSDCheck(values, vectors, relative, relative == 0, rel_tol)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    samples = 0.5 * (samples + np.swapaxes(samples, -1, -2))
    half = len(samples) // 2
    halves = (samples[:half], samples[half:])
    splits = [_held_out(halves[s], halves[1 - s]) for s in (0, 1)]
    directions, errors, stats, p_values = (np.stack(parts) for parts in zip(*splits, strict=True))
    reject = stats < -z_score if z_score is not None else holm(p_values, alpha)
    n_significant = (int(reject[0].sum()), int(reject[1].sum()))
    n_negative = min(max(n_significant), relative)
    tol = np.maximum(rel_tol, -values)  # not negative ...
    tol[d - n_negative :] = rel_tol  # ... except the n_negative lowest, all below -rel_tol
    return PSDCheck(values, vectors, n_negative, n_negative == 0, tol, errors, stats, p_values, directions,
                    alpha, n_significant)


def apriori_covariance(x: np.ndarray, x_aug: np.ndarray) -> np.ndarray:
    """X at W -> 0 for the paper loss: all alpha_ij = 1/N, independent of the network (Sec. 1.5)."""
    x = np.asarray(x, dtype=np.float64)
    return contrastive_covariance(x, x_aug, np.zeros((1, x.shape[-1])))[0]
