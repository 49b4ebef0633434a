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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .losses import DEFAULT_TEMPERATURE, REGISTRY, X_LOSSES, paper_weights

PSD_RTOL = 1e-2
PSD_ALPHA = 0.01  # family-wise level of the cross-fitted test, and 1 - the confidence of the PSD bound
COVARIANCE_LOSSES = X_LOSSES  # the losses with an X: derived from the loss registry
BOOTSTRAP_DRAWS = 200  # sign-flip draws for the PSD bound's quantile
MIN_SAMPLES = 4  # two halves of two: the fewest that cross-fit with a held-out spread
VERDICTS = ("not psd", "psd", "undetermined")
X_BATCHES = 32  # fewest batches for an X verdict by default: see docs/psd_test.md for the power


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

    x, x_aug: (..., N, d) the two views; weight: (..., d_out, d) the end-to-end linear map. The form of X is the
    one the loss registry names for ``loss`` (``losses.REGISTRY[loss].x_form``, a key of ``X_FORMS``).
    """
    form = _x_form(loss)
    x, x_aug, weight = _checked(x, x_aug, weight)
    return X_FORMS[form](x, x_aug, x @ _t(weight), x_aug @ _t(weight), temperature)


def _eqn6_covariance(x, x_aug, z, z_aug, temperature) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lemma 2 (Eqn 6-7) for the paper loss: Sigma0 over alpha-weighted pairs, Sigma1 over the view differences."""
    n = x.shape[-2]
    alpha = paper_weights(z, z_aug)
    a_pos = np.diagonal(alpha, axis1=-2, axis2=-1)
    off = alpha * (1.0 - np.eye(n))
    sigma0 = _pair_covariance(off, x) / n
    eps = x_aug - x
    sigma1 = _t(eps) @ ((1.0 - a_pos)[..., None] * eps) / n
    return sigma0 - sigma1, sigma0, sigma1


def _dot_covariance(x, x_aug, z, z_aug, temperature) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The dot loss's symmetric X, split as Sigma0 (PSD) and Sigma1 = Sigma0 - X (module doc)."""
    p = _dot_softmax(z, z_aug, temperature)
    cov = _dot_x(p, x, x_aug, temperature)
    sigma0 = _pair_covariance(p, x) / (temperature * x.shape[-2])
    return cov, sigma0, sigma0 - cov


# the closed forms of X, by the name a loss's registry entry gives (``LossSpec.x_form``)
X_FORMS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]] = {
    "eqn6": _eqn6_covariance,
    "dot": _dot_covariance,
}


def _x_form(loss: str) -> str:
    """The registry's X form of ``loss``; ValueError (naming the losses that have one) where it has none."""
    spec = REGISTRY.get(loss) if isinstance(loss, str) else None
    if spec is None or spec.x_form is None:
        raise ValueError(f"X is defined for the losses {', '.join(COVARIANCE_LOSSES)}, not {loss!r}")
    return spec.x_form


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
    if _x_form(loss) != "dot":
        return contrastive_covariance(x, x_aug, weight, loss, temperature)[0]
    x, x_aug, weight = _checked(x, x_aug, weight)
    p = _dot_softmax(x @ _t(weight), x_aug @ _t(weight), temperature)
    return _dot_x(p, x, x_aug, temperature)


@dataclass
class PSDCheck:
    """Spectrum of a symmetric matrix X (descending), its significantly negative directions, the verdict.

    ``verdict`` is one of ``VERDICTS``: "not psd" (``n_negative`` directions significantly negative, family-wise
    error <= ``alpha``), "psd" (a confidence bound puts every eigenvalue of E[X] above -``delta``) or
    "undetermined" (neither; ``samples_to_decide`` estimates how many samples would decide). ``negative``
    marks the ``n_negative`` most negative eigen-directions of X (a suffix, since the eigenvalues descend);
    ``basis`` is their orthonormal basis, Theorem 1's predicted collapse set. With ``samples`` the held-out
    statistics of both cross-fitting splits are kept (row s: directions chosen on half s, ascending in that
    half's eigenvalues, i.e. in the order they are tested, evaluated on the other half).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray  # columns, in the order of ``eigenvalues``
    n_negative: int
    verdict: str
    # eigenvalue k counts as negative iff eigenvalues[k] < -tolerance[k] (a float without samples: the rule)
    tolerance: float | np.ndarray
    delta: float  # "psd" means: every eigenvalue of E[X] > -delta (rtol * max|eigenvalue| unless given)
    lower_bound: float | None = None  # (1 - alpha) lower confidence bound on the lowest eigenvalue of E[X]
    samples_to_decide: int | None = None  # undetermined only: about this many samples would decide
    detectable: float | None = None  # about the smallest |negative eigenvalue| these samples detect
    samples: int = 0  # how many samples X_b were tested
    standard_errors: np.ndarray | None = None  # (2, d) held-out standard error of v^T X v
    statistics: np.ndarray | None = None  # (2, d) held-out t = mean(v^T X_b v) / standard error
    p_values: np.ndarray | None = None  # (2, d) one-sided, H0: v^T E[X] v >= 0
    directions: np.ndarray | None = None  # (2, d, d) the tested directions (columns) of each split
    alpha: float | None = None  # family-wise level of the test
    n_significant: tuple[int, int] | None = None  # fixed-sequence rejections per split

    @property
    def is_psd(self) -> bool:
        return self.verdict == "psd"

    @property
    def negative(self) -> np.ndarray:
        return self.eigenvalues < -np.asarray(self.tolerance)

    @property
    def basis(self) -> np.ndarray:
        return self.eigenvectors[:, self.negative]

    def describe(self) -> str:
        """The verdict in one line of words, with the evidence behind it."""
        if self.samples == 0:
            how = f"exact matrix, tolerance {self.delta:.3g}"
        else:
            how = f"{self.samples} samples, family-wise error <= {self.alpha:g}"
        if self.verdict == "not psd":
            return f"not PSD: {self.n_negative} significantly negative direction(s) ({how})"
        if self.verdict == "psd":
            bound = "" if self.lower_bound is None else f"; lowest eigenvalue >= {self.lower_bound:.3g}"
            return f"PSD: every eigenvalue above -{self.delta:.3g} ({how}{bound})"
        more = f"; about {self.samples_to_decide} samples would decide" if self.samples_to_decide else ""
        seen = "" if self.detectable is None else f", negatives below about -{self.detectable:.3g} detectable"
        return f"undetermined: no significant negative and no PSD bound ({how}{seen}{more})"


def holm(p_values: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's step-down rejections (family-wise error <= alpha under any dependence)."""
    flat = p_values.ravel()
    order = np.argsort(flat, kind="stable")
    passed = flat[order] <= alpha / (flat.size - np.arange(flat.size))
    k = flat.size if passed.all() else int(np.argmin(passed))
    reject = np.zeros(flat.size, dtype=bool)
    reject[order[:k]] = True
    return reject.reshape(p_values.shape)


def fixed_sequence(p_values: np.ndarray, alpha: float) -> int:
    """How many hypotheses, tested in their given order each at level alpha, are rejected before the first
    that is not: family-wise error <= alpha for any order fixed before the data are seen."""
    passed = np.asarray(p_values) <= alpha
    return int(passed.size if passed.all() else np.argmin(passed))


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
    """Eigen-directions of mean(select), ascending (most negative first), and the t statistics of v^T X_b v
    over ``test``."""
    sel = np.mean(select, axis=0)
    vectors = np.linalg.eigh(0.5 * (sel + sel.T))[1]
    return vectors, *one_sided_t(np.einsum("ik,bij,jk->bk", vectors, test, vectors))


def psd_lower_bound(samples: np.ndarray, alpha: float = PSD_ALPHA, draws: int = BOOTSTRAP_DRAWS) -> float:
    """(1 - alpha) lower confidence bound on the lowest eigenvalue of E[X] from i.i.d. samples X_b.

    Weyl: lambda_min(E[X]) >= lambda_min(mean) - lambda_max(mean - E[X]). The quantile of the last term is
    taken from a sign-flip (Rademacher multiplier) bootstrap, (1/B) sum_b e_b (X_b - mean) scaled by
    sqrt(B / (B - 1)), which has the covariance of mean - E[X]. The draws use a fixed seed: reproducible.
    """
    b = len(samples)
    mean = samples.mean(axis=0)
    signs = np.random.default_rng(0).choice([-1.0, 1.0], size=(draws, b))
    flips = np.einsum("rb,bij->rij", signs, samples - mean) * (np.sqrt(b / (b - 1)) / b)
    quantile = float(np.quantile(np.linalg.eigvalsh(flips)[:, -1], 1.0 - alpha))
    return float(np.linalg.eigvalsh(mean)[0]) - quantile


def significant_negatives(samples: np.ndarray, alpha: float = PSD_ALPHA) -> tuple:
    """The "not psd" half of ``psd_check``: cross-fitted fixed-sequence t tests on symmetric samples (B, d, d).

    Returns (directions, standard errors, t statistics, p-values), each stacked over the two splits, and the
    number of rejections per split; P(any rejection) <= alpha when E[X] is PSD.
    """
    half = len(samples) // 2
    halves = (samples[:half], samples[half:])
    splits = [_held_out(halves[s], halves[1 - s]) for s in (0, 1)]
    directions, errors, stats, p_values = (np.stack(parts) for parts in zip(*splits, strict=True))
    return directions, errors, stats, p_values, tuple(fixed_sequence(p_values[s], alpha / 2) for s in (0, 1))


def psd_check(
    matrix: np.ndarray,
    rtol: float = PSD_RTOL,
    samples: np.ndarray | None = None,
    alpha: float = PSD_ALPHA,
    delta: float | None = None,
) -> PSDCheck:
    """Is E[X] PSD, and along which directions is it significantly negative (Theorem 1, Corollary 1)?

    Without ``samples`` ``matrix`` is taken as exact: eigenvalue k counts as negative when it is below
    -rtol * max|eig|, and the verdict is "not psd" or "psd" by that rule alone.

    With ``samples`` (B independent, identically distributed estimates X_b of E[X], shape (B, d, d);
    ``matrix`` is normally their mean) three outcomes, each with its error controlled:

    * "not psd": cross-fitted fixed-sequence t tests. The samples are cut into halves H0, H1 (first and
      second B // 2). For split s the eigenvectors v_1, v_2, ... of mean(H_s), most negative first, are fixed
      before H_{1-s} is looked at, so on H_{1-s} each v_k^T X_b v_k is an i.i.d. sample with mean
      v_k^T E[X] v_k; its one-sided t test (|H_{1-s}| - 1 degrees of freedom) rejects H0_k:
      v_k^T E[X] v_k >= 0. The tests run in that order at level alpha / 2 and stop at the first that does not
      reject, so the family-wise error is <= alpha over both splits (exact for Gaussian X_b, asymptotic in the
      batch size otherwise) without the d-fold penalty of correcting over every direction. The count is the
      larger of the two splits' rejections, capped by the relative rule above; the basis is the eigenvectors
      of ``matrix`` for its ``n_negative`` lowest eigenvalues.
    * "psd": when nothing is rejected and the (1 - alpha) lower bound of ``psd_lower_bound`` on E[X]'s lowest
      eigenvalue is >= -delta (default delta = rtol * max|eig(matrix)|).
    * "undetermined": neither, with ``samples_to_decide`` (``_samples_to_decide``).

    B < 4 leaves no held-out spread: "undetermined". The samples must be independent draws at one fixed W:
    for gradient flow on a fixed sample, pass X of fresh batches at the final W, never snapshots of X over
    time (their spread is drift, not noise). The verdict is invariant to an orthogonal change of basis.
    """
    from scipy.special import stdtrit

    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {matrix.shape}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    d = matrix.shape[0]
    values, vectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
    values, vectors = values[::-1], vectors[:, ::-1]
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    rel_tol = rtol * scale
    delta = rel_tol if delta is None else float(delta)
    relative = int(np.sum(values < -rel_tol))
    if samples is None:
        verdict = "not psd" if relative else "psd"
        return PSDCheck(values, vectors, relative, verdict, rel_tol, delta, float(values[-1]) if d else None)
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3 or samples.shape[1:] != (d, d):
        raise ValueError(f"samples must have shape (B, {d}, {d}), got {samples.shape}")
    b = len(samples)
    if b < MIN_SAMPLES:
        return PSDCheck(values, vectors, 0, "undetermined", np.full(d, np.inf), delta, samples_to_decide=MIN_SAMPLES,
                        samples=b)
    samples = 0.5 * (samples + np.swapaxes(samples, -1, -2))
    directions, errors, stats, p_values, n_significant = significant_negatives(samples, alpha)
    n_negative = min(max(n_significant), relative)
    tol = np.maximum(rel_tol, -values)  # not negative ...
    tol[d - n_negative :] = rel_tol  # ... except the n_negative lowest, all below -rel_tol
    half = b // 2
    t_crit = -stdtrit(np.array([b - half, half]) - 1, alpha / 2)  # per split: its test half's size
    detectable = float(np.max(t_crit * np.median(errors, axis=1)))
    check = PSDCheck(values, vectors, n_negative, "not psd" if n_negative else "undetermined", tol, delta,
                     detectable=detectable, samples=b, standard_errors=errors, statistics=stats,
                     p_values=p_values, directions=directions, alpha=alpha, n_significant=n_significant)
    if n_negative:
        return check
    check.lower_bound = psd_lower_bound(samples, alpha)
    if check.lower_bound >= -delta:
        check.verdict = "psd"
        return check
    check.samples_to_decide = _samples_to_decide(samples, check, float(np.min(t_crit)))
    return check


def _samples_to_decide(samples: np.ndarray, check: PSDCheck, t_crit: float) -> int | None:
    """Scale the batches by the squared ratio of what is needed to what was seen: the PSD bound's width
    against lambda_min(mean) + delta, or the first direction's t against its critical value; both shrink like
    1 / sqrt(B). None when neither side can be reached."""
    b = len(samples)
    needed = []
    lowest = float(np.linalg.eigvalsh(samples.mean(axis=0))[0])
    width, gap = lowest - check.lower_bound, lowest + check.delta
    if gap > 0:
        needed.append(b * (width / gap) ** 2)
    first = float(np.min(check.statistics[:, 0]))
    if first < 0 and np.isfinite(first):
        needed.append(b * (t_crit / first) ** 2)
    return int(np.ceil(min(needed))) if needed else None


def x_batches(
    x: np.ndarray, x_aug: np.ndarray, weight: np.ndarray | None, loss: str = "paper",
    temperature: float = DEFAULT_TEMPERATURE, batch_size: int | None = None,
) -> np.ndarray:
    """X of consecutive, disjoint batches of ``batch_size`` pairs: shape (N // batch_size, d, d).

    x, x_aug: (N, d) paired views (inputs of the linear map ``weight``, (d_out, d)); ``weight=None`` is
    W -> 0 (every alpha_ij = 1/N). X depends on the batch size through the softmax over the batch, so it
    should be the training batch size; None takes all N pairs as one batch.
    """
    x, x_aug = np.asarray(x, dtype=np.float64), np.asarray(x_aug, dtype=np.float64)
    n, d = x.shape
    size = n if batch_size is None else int(batch_size)
    if not 2 <= size <= n:
        raise ValueError(f"batch size must lie in [2, {n}] (the number of pairs), got {batch_size}")
    count = n // size
    weight = np.zeros((1, d)) if weight is None else weight
    shape = (count, size, d)
    return contrastive_x(x[: count * size].reshape(shape), x_aug[: count * size].reshape(shape), weight, loss,
                         temperature)


def x_verdict(
    views: tuple[np.ndarray, np.ndarray] | Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]],
    weight: np.ndarray | None = None, loss: str = "paper", temperature: float = DEFAULT_TEMPERATURE,
    batch_size: int | None = None, batches: int = X_BATCHES, budget: int | None = None,
    rng: np.random.Generator | None = None, alpha: float = PSD_ALPHA, rtol: float = PSD_RTOL,
) -> tuple[PSDCheck, np.ndarray]:
    """The PSD verdict on X at fixed weights, and the per-batch samples it rests on.

    ``views`` is either paired representations (x, x_aug), each (N, d), cut into N // batch_size disjoint
    batches (``x_batches``), or a sampler ``views(rng) -> (x, x_aug)`` of one fresh batch. A sampler draws
    ``batches`` batches and doubles them up to ``budget`` (default ``batches``) while the answer is open: the
    verdict is "undetermined", or "not psd" with fewer significant directions than the mean has eigenvalues
    below -delta. Each look is tested at alpha / (number of planned looks), so the error stays <= alpha.
    """
    if callable(views):
        rng = np.random.default_rng(0) if rng is None else rng
        budget = batches if budget is None else max(int(budget), batches)
        looks = 1 + int(np.floor(np.log2(budget / batches)))

        def draw() -> np.ndarray:
            x, x_aug = views(rng)
            return contrastive_x(x, x_aug, np.zeros((1, x.shape[-1])) if weight is None else weight, loss,
                                 temperature)

        drawn = [draw() for _ in range(batches)]
        while True:
            samples = np.stack(drawn)
            check = psd_check(samples.mean(axis=0), rtol, samples, alpha / looks)
            if _settled(check) or len(drawn) * 2 > budget:
                return check, samples
            drawn += [draw() for _ in range(len(drawn))]
    samples = x_batches(*views, weight, loss, temperature, batch_size)
    return psd_check(samples.mean(axis=0), rtol, samples, alpha), samples


def _settled(check: PSDCheck) -> bool:
    """Shown PSD, or every eigenvalue of the mean below -delta counted as significantly negative."""
    if check.verdict == "psd":
        return True
    return check.verdict == "not psd" and check.n_negative >= int(np.sum(check.eigenvalues < -check.delta))


def apriori_covariance(x: np.ndarray, x_aug: np.ndarray) -> np.ndarray:
    """X at W -> 0 for the paper loss: all alpha_ij = 1/N, independent of the network (Sec. 1.5)."""
    x = np.asarray(x, dtype=np.float64)
    return contrastive_covariance(x, x_aug, np.zeros((1, x.shape[-1])))[0]
