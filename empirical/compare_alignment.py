"""Alignment of consecutive linear maps in a trained network, the third analysis of ``empirical.compare``.

|V2^T U1| (``theory.alignment_matrix``) for the backbone's last layer vs the projector's first matrix, and
the MLP projector's two layers (BatchNorm folded), against Theorem 2 / Propositions 1-2.
"""

from __future__ import annotations

import math

import numpy as np
import torch.nn as nn

from empirical.linear_maps import EXACT, backbone_last_layers, mlp_layers, projector_map
from theory import alignment_matrix, alignment_score, effective_rank, subspace_overlap

LEAD = (4, 8, 16, 32)  # leading-mode counts for the alignment score
TOP_BLOCK = 32  # |A| stored for the leading TOP_BLOCK modes only (JSON size)


def pair_alignment(w1: np.ndarray, w2: np.ndarray) -> dict:
    """|V2^T U1| (Theorem 2), singular values and effective ranks of both, leading-mode scores.

    ``subspace_overlap_top_k``: the top-k left singular subspace of W1 vs the top-k right singular subspace
    of W2, k = round(erank(W2)); basis-free, so it also reads degenerate spectra (directclr, fixed-lowrank).
    """
    a = alignment_matrix(w1, w2)
    s1, s2 = (np.linalg.svd(w, compute_uv=False) for w in (w1, w2))
    k = max(1, int(round(effective_rank(s2))))
    u1 = np.linalg.svd(w1)[0][:, :k]
    v2 = np.linalg.svd(w2)[2][:k].T
    d = a.shape[0]
    top = min(len(s1), len(s2))
    gaps = np.abs(np.diff(s2[: min(16, len(s2))])) / s2[0]
    return {
        "shape_w1": list(w1.shape),
        "shape_w2": list(w2.shape),
        "sigma1": s1,
        "sigma2": s2,
        "erank1": effective_rank(s1),
        "erank2": effective_rank(s2),
        "alignment_top_block": a[:TOP_BLOCK, :TOP_BLOCK],
        "alignment_diagonal": np.diagonal(a)[:top],
        "scores": {str(m): alignment_score(a, m) for m in LEAD if m <= top},
        "chance_score": math.sqrt(2 / (math.pi * d)),  # E|u.v| for independent random unit vectors in R^d
        "top_k": k,
        "subspace_overlap_top_k": subspace_overlap(u1, v2),
        "subspace_chance": k / d,
        "w2_degenerate": bool(np.min(gaps) < 1e-6) if gaps.size else True,
    }


def alignment_analysis(model: nn.Module, name: str, r: np.ndarray) -> dict:
    """Alignment (module doc) for every pair of consecutive linear maps this model has."""
    out: dict = {}
    first = None
    if name == "mlp":
        a1, b1, a2, _ = mlp_layers(model.projector)
        active = (r @ a1.T + b1 > 0).mean(axis=0)
        out["mlp_layer1_vs_layer2"] = pair_alignment(a1, a2)
        out["mlp_layer1_vs_gated_layer2"] = pair_alignment(a1, a2 * active[None, :])
        first = a1
    elif name in EXACT and name != "none":
        first = projector_map(model.projector, name, r)[0]
    if first is not None:
        for key, w in backbone_last_layers(model.backbone, r.shape[1]).items():
            out[f"backbone_{key}_vs_projector"] = pair_alignment(w, first)
    return out
