"""The linear maps of a trained network that the theory reads (paper Sec. 5-6, Propositions 1-2).

A projector's end-to-end matrix W (z ~ W r + b) and the channel-mixing matrix of the backbone's last layers,
as numpy arrays, with eval-mode BatchNorm folded into the weights so that every layer is affine.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

EXACT = ("none", "linear", "diagonal", "orthogonal", "fixed-lowrank", "directclr")
SUPPORTED = (*EXACT, "mlp")  # random-subset has no fixed map: a fresh selector every step


def fold_bn(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BN as an affine map h -> s * h + c: s = gamma / sqrt(var + eps), c = beta - s mu."""
    s = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double().numpy()
    return s, bn.bias.detach().double().numpy() - s * bn.running_mean.detach().double().numpy()


def mlp_layers(proj: nn.Sequential) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(A1, b1, A2, b2) of z = A2 ReLU(A1 r + b1) + b2: the Linear-BN-ReLU-Linear-BN projector, BN folded."""
    s1, c1 = fold_bn(proj[1])
    s2, c2 = fold_bn(proj[4])
    w1, w2 = (proj[i].weight.detach().double().numpy() for i in (0, 3))
    return s1[:, None] * w1, c1, s2[:, None] * w2, c2


def projector_map(proj: nn.Module, name: str, r: np.ndarray) -> tuple[np.ndarray, dict]:
    """End-to-end matrix W with z ~ W r + b, and notes on how it was obtained.

    Exact for the ``EXACT`` projectors (directclr: the selector E = [I_d0 0]; fixed-lowrank: U diag(1_d0, 0)
    V^T). For the MLP (eval mode, BN folded, so every layer is affine) the Jacobian at r_i is
    A2 diag(1[A1 r_i + b1 > 0]) A1; averaged over the batch r it is A2 diag(p) A1 with p the fraction of
    samples where each hidden unit is active. The affine offset b cancels in X (Lemma 2 only sees
    differences of z), but not in the real loss's normalization.
    """
    width = r.shape[1]
    if name == "none":
        return np.eye(width), {"kind": "identity"}
    if name in ("linear", "orthogonal"):  # orthogonal: .weight is the parametrized Q = expm(A - A^T)
        return proj.weight.detach().double().numpy(), {"kind": "exact"}
    if name == "diagonal":
        return np.diag(proj.weight.detach().double().numpy()), {"kind": "exact"}
    if name == "fixed-lowrank":
        return proj.matrix.detach().double().numpy(), {"kind": "exact (fixed)"}
    if name == "directclr":
        return np.eye(width)[: proj.d0], {"kind": "exact (fixed selector)"}
    if name == "mlp":
        a1, b1, a2, _ = mlp_layers(proj)
        active = (r @ a1.T + b1 > 0).mean(axis=0)
        return a2 @ (active[:, None] * a1), {
            "kind": "batch-averaged Jacobian A2 diag(p) A1 (eval-mode BN folded: affine layers)",
            "active_fraction_mean": float(active.mean()),
            "dead_hidden_units": int(np.sum(active == 0)),
        }
    raise ValueError(f"projector {name!r} has no fixed linear map for X (supported: {', '.join(SUPPORTED)})")


def backbone_last_layers(backbone: nn.Module, width: int) -> dict[str, np.ndarray]:
    """Channel-mixing matrices (width x c_in), BN folded, of the last residual block's main-branch last conv
    (3x3 taps summed: exact for a spatially constant input, borders aside) and of its 1x1 shortcut if any.
    Residual sum and ReLU between them and r are ignored."""
    block = [m for m in backbone.modules() if hasattr(m, "conv2") and hasattr(m, "bn2")][-1]
    conv, bn = (block.conv3, block.bn3) if hasattr(block, "conv3") else (block.conv2, block.bn2)
    out = {}
    pairs = [("main", conv, bn)]
    down = getattr(block, "downsample", None)
    if isinstance(down, nn.Sequential) and len(down) == 2:
        pairs.append(("shortcut", down[0], down[1]))
    for key, c, b in pairs:
        s, _ = fold_bn(b)
        mat = c.weight.detach().double().sum(dim=(2, 3)).numpy()
        if mat.shape[0] == width:
            out[key] = s[:, None] * mat
    return out
