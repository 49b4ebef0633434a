"""The paper's predictions as functions (Theorems 1-3, Corollaries 1-2, the conservation law).

Theorem 1 / Corollary 1  collapsed input directions = eigen-directions of X with negative eigenvalues.
Theorem 2                A = V_2^T U_1 -> I between adjacent layers when X > 0 (non-degenerate case).
Conservation (App. B.5)  W_1 W_1^T - W_2^T W_2 is constant under gradient flow of linear layers.
Theorem 3 (Eqn 10)       aligned, balanced layers: sigma' = lambda sigma^(2L-1), lambda = v^T X v, so for
                         L >= 2 sigma(t) = (sigma0^-(2L-2) - (2L-2) lambda t)^(-1/(2L-2)) (blow-up at
                         t* = 1/((2L-2) lambda sigma0^(2L-2))), and sigma(t) = sigma0 exp(lambda t) for L = 1.
"""

from __future__ import annotations

import numpy as np

from .covariance import PSD_ALPHA, PSD_RTOL, psd_check
from .spectrum import COLLAPSE_RTOL


def negative_subspace(
    cov: np.ndarray, rtol: float = PSD_RTOL, samples: np.ndarray | None = None, alpha: float = PSD_ALPHA
) -> np.ndarray:
    """Orthonormal basis (columns) of X's significantly negative eigen-directions (Theorem 1's collapse
    set): ``psd_check(cov, rtol, samples, alpha=alpha).basis``."""
    return psd_check(cov, rtol, samples, alpha=alpha).basis


def collapsed_input_subspace(weight: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` input directions the end-to-end map W shrinks most: its last right singular vectors."""
    _, _, vt = np.linalg.svd(weight)
    return vt[vt.shape[0] - count :].T if count > 0 else np.zeros((weight.shape[1], 0))


def subspace_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """||A^T B||_F^2 / max(k_a, k_b) for orthonormal bases A, B (columns): 1 iff the subspaces are equal,
    0 iff orthogonal; the mean squared cosine of the principal angles when k_a = k_b. Two empty bases: 1.
    """
    k = max(a.shape[1], b.shape[1])
    if k == 0:
        return 1.0
    return float(np.sum((a.T @ b) ** 2) / k)


def alignment_matrix(w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """|A| = |V_2^T U_1| (Sec. 5.3): overlap of W_2's right and W_1's left singular vectors, by rank.

    Absolute values, because each singular vector is defined only up to sign.
    """
    u1 = np.linalg.svd(w1)[0]
    v2 = np.linalg.svd(w2)[2].T
    return np.abs(v2.T @ u1)


def alignment_score(abs_alignment: np.ndarray, modes: int | None = None) -> float:
    """Mean |A_kk| over the leading ``modes`` ranks (all by default): 1 for perfect alignment."""
    diag = np.diagonal(abs_alignment)
    return float(np.mean(diag[: modes if modes else len(diag)]))


def conserved_quantities(weights: list[np.ndarray]) -> list[np.ndarray]:
    """W_l W_l^T - W_{l+1}^T W_{l+1} for each adjacent pair (constant under linear gradient flow)."""
    return [w @ w.T - v.T @ v for w, v in zip(weights[:-1], weights[1:], strict=False)]


def conservation_drift(initial: list[np.ndarray], final: list[np.ndarray]) -> float:
    """max over pairs of ||C(T) - C(0)||_F / ||W_l W_l^T (T)||_F: 0 for exact gradient flow."""
    drifts = []
    for layer, (c0, c1) in enumerate(
        zip(conserved_quantities(initial), conserved_quantities(final), strict=True)
    ):
        scale = np.linalg.norm(final[layer] @ final[layer].T)
        drifts.append(np.linalg.norm(c1 - c0) / max(scale, 1e-300))
    return float(max(drifts)) if drifts else 0.0


def blowup_time(sigma0: np.ndarray, lam: np.ndarray, layers: int = 2) -> np.ndarray:
    """t* = 1 / ((2L-2) lambda sigma0^(2L-2)) for lambda > 0 and L >= 2; inf otherwise."""
    sigma0, lam = np.broadcast_arrays(np.asarray(sigma0, float), np.asarray(lam, float))
    if layers < 2:
        return np.full(sigma0.shape, np.inf)
    p = 2 * layers - 2
    with np.errstate(divide="ignore"):
        return np.where(lam > 0, 1.0 / (p * np.where(lam > 0, lam, 1.0) * sigma0**p), np.inf)


def sigma_trajectory(sigma0: np.ndarray, lam: np.ndarray, times: np.ndarray, layers: int = 2) -> np.ndarray:
    """Closed-form singular value of each of L aligned, balanced layers under fixed X (Theorem 3).

    Shapes broadcast as (T, modes); past the blow-up time the value is inf.
    """
    sigma0 = np.asarray(sigma0, dtype=np.float64)[None, :]
    lam = np.asarray(lam, dtype=np.float64)[None, :]
    t = np.asarray(times, dtype=np.float64)[:, None]
    if layers == 1:
        return sigma0 * np.exp(lam * t)
    p = 2 * layers - 2
    with np.errstate(divide="ignore", invalid="ignore"):
        base = sigma0 ** (-p) - p * lam * t
        return np.where(base > 0, np.abs(base) ** (-1.0 / p), np.inf)


def predicted_collapsed_modes(
    sigma0: np.ndarray, lam: np.ndarray, time: float, layers: int = 2, rtol: float = COLLAPSE_RTOL
) -> np.ndarray:
    """Which modes still count as collapsed at ``time`` (Corollary 2): the embedding variance of mode k,
    sigma_k(T)^(2L) for isotropic data, is at most rtol times the largest (the rule of ``spectrum``).
    """
    sigma = sigma_trajectory(sigma0, lam, np.array([time]), layers)[0]
    variance = sigma ** (2 * layers)
    return np.isfinite(variance) & (variance <= rtol * np.max(variance))


def aligned_balanced_init(cov: np.ndarray, sigma0: np.ndarray, layers: int) -> list[np.ndarray]:
    """L square layers, all with singular values sigma0, chained so that V_{l+1} = U_l (A = I) and
    W_1's right singular vectors are X's eigenvectors (descending eigenvalue): Theorem 3's premise.
    """
    d = cov.shape[0]
    eigvecs = np.linalg.eigh(cov)[1][:, ::-1]
    rng = np.random.default_rng(0)
    bases = [eigvecs] + [np.linalg.qr(rng.standard_normal((d, d)))[0] for _ in range(layers)]
    return [bases[k + 1] @ np.diag(sigma0) @ bases[k].T for k in range(layers)]


def theorem3_check(cov: np.ndarray, sigma0: np.ndarray, layers: int = 2, time: float | None = None,
                   records: int = 100) -> dict:
    """Simulate the fixed-X flow from an aligned, balanced init and set Eqn 10's closed form beside it.

    ``time`` defaults to 90% of the earliest blow-up time. Returns times, simulated and closed-form
    per-layer singular values per mode (ordered as X's eigenvalues, descending), lambda_k, and which
    modes are collapsed at the end, predicted and observed.
    """
    from .dynamics import run_ode

    lam = np.linalg.eigvalsh(cov)[::-1]
    sigma0 = np.asarray(sigma0, dtype=np.float64)
    if time is None:
        t_star = np.min(blowup_time(sigma0, lam, layers))
        time = 0.9 * t_star if np.isfinite(t_star) else 1.0
    weights = aligned_balanced_init(cov, sigma0, layers)
    traj = run_ode(weights, time, cov=cov, records=records, rtol=1e-10, atol=1e-12)
    v1 = np.linalg.eigh(cov)[1][:, ::-1]
    # singular value of W_1 along mode k is |W_1 v_k| while the layers stay aligned
    simulated = np.linalg.norm(traj.weights[0] @ v1, axis=-2)
    closed = sigma_trajectory(sigma0, lam, traj.times, layers)
    end_variance = simulated[-1] ** (2 * layers)
    return {
        "times": traj.times,
        "lambda": lam,
        "sigma0": sigma0,
        "simulated": simulated,
        "closed_form": closed,
        "max_relative_error": float(np.max(np.abs(simulated - closed) / closed)),
        "predicted_collapsed": predicted_collapsed_modes(sigma0, lam, float(traj.times[-1]), layers),
        "observed_collapsed": end_variance <= COLLAPSE_RTOL * np.max(end_variance),
    }
