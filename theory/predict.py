"""The paper's predictions as functions (Theorems 1-3, Corollaries 1-2, the conservation law).

Theorem 1 / Corollary 1  collapsed input directions = eigen-directions of X with negative eigenvalues.
Theorem 2                A = V_2^T U_1 -> I between adjacent layers when X > 0 (non-degenerate case);
                         measured per group of modes separated by singular-value gaps, beside its chance level.
Conservation (App. B.5)  W_l W_l^T - W_{l+1}^T W_{l+1} is constant under gradient flow of linear layers;
                         one gd step changes it by exactly lr^2 (G_l G_l^T - G_{l+1}^T G_{l+1}).
Theorem 3 (Eqn 10)       aligned, balanced layers: sigma' = lambda sigma^(2L-1), lambda = v^T X v, so for
                         L >= 2 sigma(t) = (sigma0^-(2L-2) - (2L-2) lambda t)^(-1/(2L-2)) (blow-up at
                         t* = 1/((2L-2) lambda sigma0^(2L-2))), and sigma(t) = sigma0 exp(lambda t) for L = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """Mean |A_kk| over the leading ``modes`` ranks (all by default): 1 for perfect alignment.

    Rank order only: two nearly equal singular values ordered differently in W_1 and W_2 read as
    misaligned. ``layer_alignment`` measures per gap-separated group instead.
    """
    diag = np.diagonal(abs_alignment)
    return float(np.mean(diag[: modes if modes else len(diag)]))


ALIGN_GAP_RATIO = 1.1  # consecutive singular values closer than 10% belong to one group


@dataclass
class Alignment:
    """Alignment of two adjacent layers W_1 (lower, input side) and W_2 (Theorem 2: V_2^T U_1 -> I).

    With A = V_2^T U_1, the modes 0..surviving-1 are cut into groups at the gaps of the singular values; per
    group g, ||A[g, g]||_F^2 / |g| is the mean squared cosine of the principal angles between
    span(U_1[:, g]) and span(V_2[:, g]), invariant to any rotation inside the group (where, without a gap,
    Davis-Kahan leaves the singular vectors undetermined). ``score`` pools the groups:
    sum_g ||A[g, g]||_F^2 / surviving, 1 iff every group's subspaces coincide. ``chance`` is its exact
    expectation when U_1 or V_2 is a uniformly random orthogonal matrix (then E[A_ij^2] = 1/h, h the
    shared width): sum_g |g|^2 / (h surviving).
    """

    matrix: np.ndarray  # |V_2^T U_1|, (h, h), rows: rank of W_2's right vectors, columns: of W_1's left vectors
    sigma_lower: np.ndarray  # singular values of W_1, descending
    sigma_upper: np.ndarray  # singular values of W_2, descending
    surviving: int  # modes scored: ranks 0..surviving-1
    groups: list[tuple[int, int]]  # (start, size), consecutive, covering 0..surviving-1
    group_scores: np.ndarray  # ||A[g, g]||_F^2 / |g| per group
    cut_cosines: list[np.ndarray]  # per group end k: cosines of the principal angles, top-k U_1 vs top-k V_2
    score: float
    chance: float
    diagonal_score: float  # the rank-order measure, mean |A_kk| over the surviving modes, for comparison
    gap_ratio: float


def mode_groups(sigma_lower: np.ndarray, sigma_upper: np.ndarray, modes: int,
                gap_ratio: float = ALIGN_GAP_RATIO) -> list[tuple[int, int]]:
    """Cut ranks 0..modes-1 after rank k-1 iff sigma_{k-1} > gap_ratio sigma_k in *both* layers (a rank
    swap between the layers then cannot cross a cut): (start, size) per group."""
    out, start = [], 0
    for k in range(1, modes + 1):
        if k == modes or (sigma_lower[k - 1] > gap_ratio * sigma_lower[k]
                          and sigma_upper[k - 1] > gap_ratio * sigma_upper[k]):
            out.append((start, k - start))
            start = k
    return out


def layer_alignment(w_lower: np.ndarray, w_upper: np.ndarray, surviving: int | None = None,
                    gap_ratio: float = ALIGN_GAP_RATIO) -> Alignment:
    """Gap-grouped alignment of W_1 = ``w_lower`` (h, d_in) and W_2 = ``w_upper`` (d_out, h), Theorem 2.

    ``surviving``: how many leading modes to score (the non-collapsed ones; default every mode both layers
    have, min(h, d_in, d_out)). A cut is always placed after the last surviving mode.
    """
    w_lower, w_upper = np.asarray(w_lower, dtype=np.float64), np.asarray(w_upper, dtype=np.float64)
    if w_lower.ndim != 2 or w_upper.ndim != 2 or w_upper.shape[1] != w_lower.shape[0]:
        raise ValueError(f"layers do not chain: lower {w_lower.shape}, upper {w_upper.shape}")
    if not gap_ratio >= 1.0:
        raise ValueError(f"gap_ratio must be >= 1, got {gap_ratio}")
    u1, s1, _ = np.linalg.svd(w_lower)
    _, s2, v2t = np.linalg.svd(w_upper)
    a = v2t @ u1
    h = a.shape[0]
    modes = min(len(s1), len(s2))
    surviving = modes if surviving is None else int(surviving)
    if not 0 <= surviving <= modes:
        raise ValueError(f"surviving must be between 0 and {modes}, got {surviving}")
    groups = mode_groups(s1, s2, surviving, gap_ratio)
    mass = np.array([np.sum(a[i : i + m, i : i + m] ** 2) for i, m in groups])
    sizes = np.array([m for _, m in groups], dtype=np.float64)
    cosines = [np.linalg.svd(a[: i + m, : i + m], compute_uv=False) for i, m in groups]
    return Alignment(
        matrix=np.abs(a),
        sigma_lower=s1,
        sigma_upper=s2,
        surviving=surviving,
        groups=groups,
        group_scores=mass / np.maximum(sizes, 1.0),
        cut_cosines=cosines,
        score=float(mass.sum() / surviving) if surviving else 1.0,
        chance=float(np.sum(sizes**2) / (h * surviving)) if surviving else 1.0,
        diagonal_score=float(np.mean(np.abs(np.diagonal(a))[:surviving])) if surviving else 1.0,
        gap_ratio=gap_ratio,
    )


def adjacent_alignments(weights: list[np.ndarray], surviving: int | list[int] | None = None,
                        gap_ratio: float = ALIGN_GAP_RATIO) -> list[Alignment]:
    """``layer_alignment`` of every adjacent pair (W_l, W_{l+1}), l = 1..L-1; ``surviving`` per pair or
    one value for all."""
    pairs = list(zip(weights[:-1], weights[1:], strict=True))
    counts = surviving if isinstance(surviving, list) else [surviving] * len(pairs)
    if len(counts) != len(pairs):
        raise ValueError(f"surviving has {len(counts)} entries for {len(pairs)} adjacent pairs")
    return [layer_alignment(lo, up, k, gap_ratio) for (lo, up), k in zip(pairs, counts, strict=True)]


def conserved_quantities(weights: list[np.ndarray]) -> list[np.ndarray]:
    """D_l = W_l W_l^T - W_{l+1}^T W_{l+1} for each adjacent pair (constant under linear gradient flow,
    App. B.5)."""
    return [w @ w.T - v.T @ v for w, v in zip(weights[:-1], weights[1:], strict=False)]


def conservation_drifts(initial: list[np.ndarray], final: list[np.ndarray]) -> list[float]:
    """||D_l(T) - D_l(0)||_F / ||W_l W_l^T (T)||_F for every adjacent pair: 0 for exact gradient flow."""
    drifts = []
    for layer, (c0, c1) in enumerate(
        zip(conserved_quantities(initial), conserved_quantities(final), strict=True)
    ):
        scale = np.linalg.norm(final[layer] @ final[layer].T)
        drifts.append(float(np.linalg.norm(c1 - c0) / max(scale, 1e-300)))
    return drifts


def conservation_drift(initial: list[np.ndarray], final: list[np.ndarray]) -> float:
    """Largest of ``conservation_drifts``."""
    return max(conservation_drifts(initial, final), default=0.0)


def gd_conservation_increment(grads: list[np.ndarray], lr: float) -> list[np.ndarray]:
    """Exact change of every D_l in one gradient-descent step W_l <- W_l - lr G_l of a linear chain:
    lr^2 (G_l G_l^T - G_{l+1}^T G_{l+1}).

    The first-order terms -lr (G_l W_l^T + W_l G_l^T) and -lr (G_{l+1}^T W_{l+1} + W_{l+1}^T G_{l+1})
    cancel because G_l W_l^T = W_{l+1}^T G_{l+1} for linear layers (the conservation law of the flow),
    so gd drifts by a sum of these terms: O(lr) over a fixed time T = lr * steps. ``grads`` must be the
    gradients taken at the weights being stepped.
    """
    return [lr**2 * (g @ g.T - f.T @ f) for g, f in zip(grads[:-1], grads[1:], strict=False)]


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
