"""Embedding spectrum (paper Sec. 3, Eqn 1), the collapse rule, effective rank and RankMe.

This is the one implementation of these metrics in the project; ``empirical`` imports it.

Conventions
-----------
* Covariance: C = (1/N) sum_i (z_i - zbar)(z_i - zbar)^T (Eqn 1, 1/N, not np.cov's 1/(N-1);
  the factor does not change any count or ratio below).
* ``normalize=True`` L2-normalizes every embedding first, as the official ``spectrum.py`` does for
  real networks. The linear toy models are analysed unnormalized, as in the paper's Sec. 4-5.
* Collapse rule: dimension k is collapsed when its covariance singular value (a variance) is at most
  ``COLLAPSE_RTOL`` times a reference scale S, i.e. its standard deviation is 1.5 decades or more below
  sqrt(S). S is the larger of the spectrum's own largest value and an optional ``reference``: a scale
  that does not itself collapse, such as the largest variance at t = 0. Without a reference (real
  networks, one snapshot) S is the largest value, and a total collapse, where the largest value falls
  with the rest, is invisible; with the t = 0 scale as reference it counts every dimension. A spectrum
  that is all zero is fully collapsed.
* Collapse over a run (``collapse_counts``): t = 0 is judged against its own largest variance and the end
  against the end's own largest, so an init's scale, or a loss that shrinks the whole spectrum, does not
  change the count. When the end's largest variance itself falls to ``COLLAPSE_RTOL`` times t = 0's or
  below, every dimension has collapsed: a total collapse, counted as all d and reported as such.
* Effective rank (Roy & Vetterli 2007): exp(H(p)), p_k = s_k / sum(s), on the singular values of the
  centered embedding matrix (= sqrt of C's singular values, up to sqrt(N)).
* RankMe (Garrido et al. 2023, Eq. 1): the same entropy on the singular values of the *uncentered*
  embedding matrix, with p_k = s_k / ||s||_1 + eps, eps = 1e-7.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

COLLAPSE_RTOL = 1e-3
RANKME_EPS = 1e-7


def covariance(z: np.ndarray, normalize: bool = False) -> np.ndarray:
    """Embedding covariance C (Eqn 1) of z with shape (..., N, d); returns (..., d, d)."""
    z = np.asarray(z, dtype=np.float64)
    if normalize:
        z = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    zc = z - z.mean(axis=-2, keepdims=True)
    return np.swapaxes(zc, -1, -2) @ zc / z.shape[-2]


def singular_values(z: np.ndarray, normalize: bool = False) -> np.ndarray:
    """Singular values of the embedding covariance C (Eqn 1), descending, shape (..., d).

    Computed as s_k(Z_c)^2 / N from the centered embeddings Z_c rather than from C itself: squaring first
    would bury every value below ~1e-16 of the largest in rounding, and collapsed values go far lower.
    """
    z = np.asarray(z, dtype=np.float64)
    if normalize:
        z = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    zc = z - z.mean(axis=-2, keepdims=True)
    values = np.linalg.svd(zc, compute_uv=False) ** 2 / z.shape[-2]
    missing = z.shape[-1] - values.shape[-1]  # N < d: C has d - N more zero singular values
    return np.concatenate([values, np.zeros((*values.shape[:-1], missing))], axis=-1) if missing > 0 else values


def collapsed_mask(
    values: np.ndarray, reference: float | np.ndarray | None = None, *, rtol: float = COLLAPSE_RTOL
) -> np.ndarray:
    """Boolean mask over covariance singular values (..., d): True where s_k <= rtol * S.

    S = max(s_max, reference): ``reference`` (scalar or shape ``values.shape[:-1]``) is a scale that does
    not itself collapse, e.g. the largest variance at t = 0; None keeps the relative-to-largest rule.
    """
    values = np.asarray(values, dtype=np.float64)
    scale = values.max(axis=-1, keepdims=True)
    if reference is not None:
        scale = np.maximum(scale, np.asarray(reference, dtype=np.float64)[..., None])
    return values <= rtol * scale


def collapse_counts(initial: np.ndarray, final: np.ndarray, rtol: float = COLLAPSE_RTOL) -> dict:
    """The collapse rule of a run (module doc) for spectra at t = 0 and at the end, each (..., d).

    Returns ``initial`` and ``final`` counts, ``total`` (the end's largest variance at most rtol times t = 0's)
    and ``reference``, the scale the end was judged against (t = 0's largest for a total collapse).
    """
    initial, final = np.asarray(initial, dtype=np.float64), np.asarray(final, dtype=np.float64)
    top0, top1 = initial.max(axis=-1), final.max(axis=-1)
    total = top1 <= rtol * top0
    count = np.where(total, final.shape[-1], collapsed_mask(final, rtol=rtol).sum(axis=-1))
    scalar = np.ndim(total) == 0
    return {"initial": n_collapsed(initial, rtol=rtol), "final": int(count) if scalar else count,
            "total": bool(total) if scalar else total,
            "reference": float(np.where(total, top0, top1)) if scalar else np.where(total, top0, top1)}


def n_collapsed(
    values: np.ndarray, reference: float | np.ndarray | None = None, *, rtol: float = COLLAPSE_RTOL
) -> np.ndarray | int:
    """Number of collapsed dimensions, ``collapsed_mask(values, reference, rtol=rtol).sum(-1)``."""
    counts = collapsed_mask(values, reference, rtol=rtol).sum(axis=-1)
    return int(counts) if np.ndim(counts) == 0 else counts


def effective_rank(values: np.ndarray, eps: float = 0.0) -> np.ndarray | float:
    """exp of the Shannon entropy of p = values / sum(values) (+ eps); Roy & Vetterli 2007.

    A zero vector (complete collapse) has effective rank 0.
    """
    values = np.abs(np.asarray(values, dtype=np.float64))
    total = values.sum(axis=-1, keepdims=True)
    p = np.divide(values, total, out=np.zeros_like(values), where=total > 0) + eps
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    erank = np.exp(-plogp.sum(axis=-1))
    erank = np.where(total[..., 0] > 0, erank, 0.0)
    return float(erank) if np.ndim(erank) == 0 else erank


def rankme(z: np.ndarray, eps: float = RANKME_EPS) -> float:
    """RankMe (Garrido et al. 2023, Eq. 1) of the embedding matrix z (N, d), uncentered."""
    s = np.linalg.svd(np.asarray(z, dtype=np.float64), compute_uv=False)
    return float(effective_rank(s, eps=eps))


@dataclass
class Spectrum:
    """Everything the paper's protocol reads off one set of embeddings."""

    singular_values: np.ndarray  # covariance singular values, descending
    log10: np.ndarray  # log10 of the above (-inf for exact zeros)
    n_collapsed: int
    effective_rank: float
    rankme: float

    def to_json(self) -> dict:
        out = asdict(self)
        out["singular_values"] = self.singular_values.tolist()
        out["log10"] = [None if not np.isfinite(v) else float(v) for v in self.log10]
        return out


def embedding_spectrum(z: np.ndarray, normalize: bool = False, rtol: float = COLLAPSE_RTOL) -> Spectrum:
    """Spectrum of embeddings z (N, d) in the paper's protocol (Eqn 1), with rank summaries."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"embeddings must have shape (N >= 2, d), got {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("embeddings contain NaN or infinite values")
    s = singular_values(z, normalize)
    with np.errstate(divide="ignore"):
        log10 = np.log10(s)
    zn = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12) if normalize else z
    return Spectrum(
        singular_values=s,
        log10=log10,
        n_collapsed=n_collapsed(s, rtol=rtol),
        effective_rank=float(effective_rank(np.sqrt(np.clip(s, 0.0, None)))),
        rankme=rankme(zn),
    )
