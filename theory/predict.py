"""The paper's predictions as functions (Theorems 1-3, Corollaries 1-2, the conservation law).

Theorem 1 / Corollary 1  collapsed input directions = eigen-directions of X with negative eigenvalues.
Theorem 2                A = V_2^T U_1 -> I between adjacent layers when X > 0 (non-degenerate case);
                         measured by the chance-corrected von Neumann score (``Alignment``): 1 aligned,
                         0 for Haar-random singular vectors at the same spectra, with its exact spread.
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
    misaligned. ``layer_alignment`` scores invariantly to rotations inside degenerate blocks instead.
    """
    diag = np.diagonal(abs_alignment)
    return float(np.mean(diag[: modes if modes else len(diag)]))


ALIGN_GAP_RATIO = 1.1  # consecutive singular values closer than 10% belong to one (diagnostic) group


def haar_coupling_sd(a: np.ndarray, b: np.ndarray) -> float:
    """Standard deviation of sum_ij O_ij^2 a_i b_j for a Haar-random orthogonal O (h x h) and centred a, b
    (sum a = sum b = 0): sqrt(2 / ((h-1)(h+2))) ||a|| ||b||, exact.

    From the orthogonal Weingarten moments E O_11^4 = 3/(h(h+2)), E O_11^2 O_12^2 = E O_11^2 O_21^2 =
    1/(h(h+2)), E O_11^2 O_22^2 = (h+1)/((h-1)h(h+2)): with sum a = sum b = 0 the four index patterns add up
    to ||a||^2 ||b||^2 (3 - 1 - 1 + (h+1)/(h-1)) / (h(h+2)) = 2 ||a||^2 ||b||^2 / ((h-1)(h+2)).
    """
    h = len(a)
    if h < 2:
        return 0.0
    return float(np.sqrt(2.0 / ((h - 1) * (h + 2))) * np.linalg.norm(a) * np.linalg.norm(b))


@dataclass
class Alignment:
    """Alignment of two adjacent layers W_1 (lower, input side) and W_2 (Theorem 2: A = V_2^T U_1 -> I).

    Headline, ``score``: the chance-corrected von Neumann score of the surviving modes. Let m = ``surviving``,
    W^(m) the rank-m truncation (leading m singular triplets), P = W_2^(m)T W_2^(m) and Q = W_1^(m) W_1^(m)T
    (both h x h, h the shared width), x = sigma(W_2)^2 and y = sigma(W_1)^2 sorted descending, zero beyond m.
    In the bases of A,

        tr(P Q) = ||W_2^(m) W_1^(m)||_F^2 = sum_ij A_ij^2 x_i y_j,

    and A o A (entrywise squares) is doubly stochastic. Von Neumann's trace inequality (Birkhoff plus the
    rearrangement inequality) bounds it by sum_k x_k y_k, with equality iff P and Q are diagonal in one
    orthonormal basis with their eigenvalues in the same order: exactly Theorem 2's A = I, up to rotations
    inside blocks of equal singular values, where the singular vectors are not defined. The expectation
    when U_1 (or V_2) is Haar-random, independent of the rest, is E A_ij^2 = 1/h, i.e. (sum x)(sum y) / h.
    With x~ = x - mean x and y~ = y - mean y (rows and columns of A o A sum to 1),

        score = sum_ij A_ij^2 x~_i y~_j / sum_k x~_k y~_k
              = (||W_2^(m) W_1^(m)||_F^2 - E_Haar) / (sum_k sigma_k(W_2)^2 sigma_k(W_1)^2 - E_Haar),

    1 iff aligned, 0 in expectation at chance (``chance`` = 0.0, exact), negative when the layers pair large
    modes with small ones (its floor is the reversed pairing). It depends on the weights only through
    tr(P Q) and the spectra, so it is invariant to any rotation inside a degenerate block, continuous across
    near-degenerate ones (a mix of two modes by angle theta costs sin^2(theta) (x_i - x_j)(y_i - y_j) of the
    numerator: nothing is cut), and weighs each mode by its share of the product's energy. ``chance_sd`` is
    its exact standard deviation under the same Haar model, sqrt(2/((h-1)(h+2))) ||x~|| ||y~|| / sum x~ y~
    (``haar_coupling_sd``): about 1.4/h for well-spread spectra, large when one spectrum is nearly flat (then
    no pairing can be told from another). If x~ or y~ is zero (a flat spectrum, m = 0) every pairing is
    equally good: score = chance = 1, chance_sd = 0.

    ``shared_basis`` drops the order: 1 - ||[P, Q]||_F^2 / E_Haar ||[P, Q]||_F^2, 1 iff P and Q commute (the
    layers share singular vectors, in any order), 0 in expectation at chance; E_Haar ||[P, Q]||_F^2 =
    2 h^3 var(x) var(y) / ((h-1)(h+2)) (var over the h entries). Layers that share their basis but pair
    their modes in reverse order score ~1 here and < 0 in ``score``.

    Kept for comparison: the gap-grouped measure (``grouped_score``, ``grouped_chance``, ``groups``,
    ``group_scores``, ``cut_cosines``: modes 0..m-1 cut into groups at singular-value ratio ``gap_ratio`` in
    both layers, ||A[g, g]||_F^2 / |g| per group, pooled sum_g ||A[g, g]||_F^2 / m with chance
    sum_g |g|^2 / (h m)); it splits near-degenerate blocks and its chance level approaches m/h when the
    spectrum has no 10% gaps. ``diagonal_score`` is the rank-order mean |A_kk|.
    """

    matrix: np.ndarray  # |V_2^T U_1|, (h, h), rows: rank of W_2's right vectors, columns: of W_1's left vectors
    sigma_lower: np.ndarray  # singular values of W_1, descending
    sigma_upper: np.ndarray  # singular values of W_2, descending
    surviving: int  # modes scored: ranks 0..surviving-1
    groups: list[tuple[int, int]]  # (start, size), consecutive, covering 0..surviving-1 (gap-grouped measure)
    group_scores: np.ndarray  # ||A[g, g]||_F^2 / |g| per group
    cut_cosines: list[np.ndarray]  # per group end k: cosines of the principal angles, top-k U_1 vs top-k V_2
    score: float  # chance-corrected von Neumann score: 1 aligned, 0 chance
    chance: float  # its expectation for Haar-random singular vectors at the same spectra: 0 (1 if undefined)
    diagonal_score: float  # the rank-order measure, mean |A_kk| over the surviving modes, for comparison
    gap_ratio: float
    chance_sd: float = 0.0  # standard deviation of ``score`` at chance (exact)
    shared_basis: float = 1.0  # order-free: 1 - ||[P, Q]||_F^2 / its chance expectation
    grouped_score: float = 1.0  # the former gap-grouped score
    grouped_chance: float = 1.0  # its chance level

    @property
    def z(self) -> float:
        """(score - chance) / chance_sd: how many chance standard deviations the score lies above chance."""
        return float((self.score - self.chance) / self.chance_sd) if self.chance_sd > 0 else 0.0


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


def von_neumann_alignment(a: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """(score, chance, chance_sd, shared_basis) of ``Alignment`` from A = V_2^T U_1 (h x h) and the squared
    singular values x of W_2, y of W_1 (length h, descending, zero beyond the surviving modes)."""
    h = len(x)
    xc, yc = x - x.mean(), y - y.mean()
    top = float(xc @ yc)  # the aligned value: Chebyshev's sum inequality makes it >= 0, 0 iff one is flat
    scale = float(np.linalg.norm(xc) * np.linalg.norm(yc))
    flat = min(np.linalg.norm(xc) / max(np.linalg.norm(x), 1e-300), np.linalg.norm(yc) / max(np.linalg.norm(y), 1e-300))
    if h < 2 or flat <= 1e-9 or top <= 1e-12 * scale:  # a flat spectrum (to rounding): nothing to pair
        return 1.0, 1.0, 0.0, 1.0
    score = float(xc @ (a * a) @ yc) / top
    q = (a * y) @ a.T  # Q in W_2's right basis
    commutator = float(np.sum(np.subtract.outer(x, x) ** 2 * q**2))
    expected = 2.0 * h**3 * x.var() * y.var() / ((h - 1) * (h + 2))
    return score, 0.0, haar_coupling_sd(xc, yc) / top, 1.0 - commutator / expected


def layer_alignment(w_lower: np.ndarray, w_upper: np.ndarray, surviving: int | None = None,
                    gap_ratio: float = ALIGN_GAP_RATIO) -> Alignment:
    """Alignment of W_1 = ``w_lower`` (h, d_in) and W_2 = ``w_upper`` (d_out, h), Theorem 2 (see
    ``Alignment``: the headline ``score`` is the chance-corrected von Neumann score, chance 0).

    ``surviving``: how many leading modes to score (the non-collapsed ones; default every mode both layers
    have, min(h, d_in, d_out)); the rest are set to zero (rank-``surviving`` truncation of both layers). A
    cut inside a block of exactly equal singular values picks arbitrary vectors there: place it at a gap.
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
    x, y = np.zeros(h), np.zeros(h)
    x[:surviving], y[:surviving] = s2[:surviving] ** 2, s1[:surviving] ** 2
    score, chance, chance_sd, shared = von_neumann_alignment(a, x, y) if surviving else (1.0, 1.0, 0.0, 1.0)
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
        score=score,
        chance=chance,
        diagonal_score=float(np.mean(np.abs(np.diagonal(a))[:surviving])) if surviving else 1.0,
        gap_ratio=gap_ratio,
        chance_sd=chance_sd,
        shared_basis=shared,
        grouped_score=float(mass.sum() / surviving) if surviving else 1.0,
        grouped_chance=float(np.sum(sizes**2) / (h * surviving)) if surviving else 1.0,
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
