"""X from a trained network's real features (Lemma 2, Theorem 1), the first analysis of ``empirical.compare``.

r1, r2 = frozen backbone representations of two augmented views are the projector's inputs x, x'. With the
projector's end-to-end map W (``empirical.linear_maps.projector_map``), X = Sigma0 - Sigma1 (Lemma 2) is
``theory.contrastive_covariance`` with ``loss="paper"`` on the raw linear outputs W r, as the paper's Sec. 4
analysis does. The network was trained with temperature-cosine InfoNCE on L2-normalized z, for which this X
is an approximation; the ``matched`` variant rescales W so that the paper loss's softmax is as sharp as cos/tau
(for |z| = rho, -|c z_i - c z_j|^2/2 = z_i.z_j/(rho^2 tau) + row constants when c = 1/(rho sqrt(tau))).
Theorem 1: W shrinks along X's negative eigen-directions; they are compared with W's smallest right singular
vectors.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import spearmanr

from theory import COLLAPSE_RTOL, collapsed_input_subspace, n_collapsed, psd_check, subspace_overlap
from theory.covariance import X_BATCHES, x_batches

MIN_BATCHES = X_BATCHES  # the PSD test's power grows with the batches: 32 detect one noise edge (docs/psd_test.md)


def x_batch(batch: int, samples: int) -> int:
    """The training batch, or less so that ``samples`` make at least ``MIN_BATCHES`` batches."""
    return max(2, min(batch, samples // MIN_BATCHES))


def batched_x(r1: np.ndarray, r2: np.ndarray, weight: np.ndarray, batch: int) -> np.ndarray:
    """X of every consecutive batch (B, d, d): the batch size the training step saw sets the softmax.

    At least ``MIN_BATCHES`` batches, smaller ones when samples are few (``theory.covariance.x_batches``).
    """
    return x_batches(r1, r2, weight, "paper", batch_size=x_batch(batch, len(r1)))


def support(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Orthonormal basis (width x m) of the directions where the features vary (both views pooled): PCA
    directions with variance above COLLAPSE_RTOL of the largest. Elsewhere r is constant (dead channels, a
    collapsed representation), so those directions enter neither X nor the embedding."""
    both = np.concatenate([r1, r2])
    lam, vec = np.linalg.eigh(np.cov(both - both.mean(axis=0), rowvar=False))
    return vec[:, lam > COLLAPSE_RTOL * lam.max()][:, ::-1]


def x_analysis(
    r1: np.ndarray, r2: np.ndarray, z1: np.ndarray, weight: np.ndarray, batch: int, temperature: float
) -> dict:
    """X's negative directions (Theorem 1) vs the directions W collapses, for three scalings of W.

    All in the m-dim feature support (``support``): x = r P, W_s = W P. ``trained``: W as trained;
    ``matched``: W / (rho sqrt(tau)) (module doc); ``apriori``: W -> 0 (all alpha = 1/N). A converged W is
    a stationary point, W X ~ 0, so X ~ 0 on W's row space: the trained X tests stationarity, the a-priori X
    the strength of the augmentation (Theorem 1's premise), ``rayleigh_*`` the sign of X on the directions W
    did and did not collapse.
    """
    basis = support(r1, r2)
    x, x_aug, w_s = r1 @ basis, r2 @ basis, weight @ basis
    m = basis.shape[1]
    sw = np.linalg.svd(w_s, compute_uv=False)
    w_var = np.concatenate([sw**2, np.zeros(max(0, m - len(sw)))])  # embedding gain per input direction
    w_collapsed = int(n_collapsed(w_var))
    dead = collapsed_input_subspace(w_s, w_collapsed)
    alive = collapsed_input_subspace(w_s, m)[:, : m - w_collapsed]  # leading right singular vectors
    rho = float(np.median(np.linalg.norm(z1, axis=1)))
    out: dict = {
        "width": r1.shape[1],
        "support_dim": m,
        "weight_singular_values": sw,
        "weight_collapsed": w_collapsed,
        "median_norm_z": rho,
        "batch": x_batch(batch, len(r1)),
    }
    for variant, scale in (
        ("trained", 1.0),
        ("matched", 1.0 / (rho * math.sqrt(temperature))),
        ("apriori", 0.0),
    ):
        samples = batched_x(x, x_aug, scale * w_s, batch)
        mean = samples.mean(axis=0)
        check = psd_check(mean, samples=samples)
        neg = check.eigenvectors[:, check.eigenvalues < -check.tolerance]
        k = neg.shape[1]
        top = float(np.max(np.abs(check.eigenvalues)))
        gain = np.linalg.norm(w_s @ check.eigenvectors, axis=0) ** 2  # ordered as the eigenvalues, descending

        def rayleigh(v: np.ndarray, top: float = top, mean: np.ndarray = mean) -> float | None:
            return float(np.mean(np.einsum("ik,ij,jk->k", v, mean, v)) / top) if v.shape[1] else None

        out[variant] = {
            "scale": scale,
            "n_batches": len(samples),
            "eigenvalues": check.eigenvalues,
            "n_negative": check.n_negative,
            "is_psd": check.is_psd,
            "verdict": check.verdict,
            "verdict_text": check.describe(),
            "detectable": check.detectable,
            "gain_along_eigenvectors": gain,
            "spearman_eigenvalue_vs_gain": float(spearmanr(check.eigenvalues, gain)[0]) if m > 1 else None,
            "overlap_same_count": subspace_overlap(neg, collapsed_input_subspace(w_s, k)) if k else None,
            "overlap_observed_count": subspace_overlap(neg, dead) if k and w_collapsed else None,
            "chance_overlap": k / m,
            "rayleigh_collapsed": rayleigh(dead),
            "rayleigh_surviving": rayleigh(alive),
            "stationarity": float(np.linalg.norm(scale * w_s @ mean) / max(np.linalg.norm(scale * w_s) * top, 1e-300)),
        }
    return out
