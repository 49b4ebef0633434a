"""Backbones and the projectors of the paper's Tables 1-2 and appendix F.

r = backbone(x) is the representation (2048-d for ResNet-50), z = projector(r) the embedding fed to the
loss. Projectors (``--projector``):

=============== ================================================= ======================================
name            z =                                               paper
=============== ================================================= ======================================
none            r                                                 "no projector" (51.5)
linear          W r, W: Linear(width, 128, bias=False)            "1-layer linear" / code "single" (61.1)
                (``layers`` L > 1: W_L ... W_1 r, then 128 x 128)   deep linear (Sec. 5, Theorem 3)
mlp             BN(W2 ReLU(BN(W1 r))), 128-d, hidden = width      "2-layer nonlinear" (66.5)
diagonal        diag(w) r, w trainable (init 1)                   trainable diagonal (60.2)
orthogonal      Q r, Q orthogonal (matrix-exp parametrization)    orthogonal (52.2)
fixed-lowrank   U diag(1_d0, 0) V^T r, U, V fixed random orthog.  fixed low-rank (62.3)
directclr       r[:, :d0]                                         DirectCLR (62.7)
random-subset   r[:, S_t], S_t a fresh d0-subset every step       App. F random dropout (43.0)
=============== ================================================= ======================================
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils import parametrizations

BACKBONES = ("resnet18", "resnet50", "tiny")
PROJECTORS = (
    "none",
    "linear",
    "mlp",
    "diagonal",
    "orthogonal",
    "fixed-lowrank",
    "directclr",
    "random-subset",
)
WIDTH = {"resnet18": 512, "resnet50": 2048, "tiny": 128}
EMBED_DIM = 128


def default_d0(width: int) -> int:
    """The paper's d0 = 360 for a 2048-d representation, rescaled: round(360 / 2048 * width)."""
    return max(1, round(360 / 2048 * width))


class BasicBlock(nn.Module):
    """torchvision's BasicBlock, restated so that the tiny model needs no torchvision import (seconds)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TinyResNet(nn.Module):
    """4 stages of one BasicBlock, widths 16-32-64-128: a ResNet that trains on a laptop CPU."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), cifar_stem: bool = True):
        super().__init__()
        w0 = widths[0]
        if cifar_stem:
            self.stem = nn.Sequential(
                nn.Conv2d(3, w0, 3, 1, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True)
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, w0, 7, 2, 3, bias=False),
                nn.BatchNorm2d(w0),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        blocks, cin = [], w0
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or cin != w:
                down = nn.Sequential(nn.Conv2d(cin, w, 1, stride, bias=False), nn.BatchNorm2d(w))
            blocks.append(BasicBlock(cin, w, stride, down))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for b in blocks:  # zero_init_residual, as torchvision does it
            nn.init.zeros_(b.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(self.stem(x))).flatten(1)


def build_backbone(name: str, cifar_stem: bool) -> tuple[nn.Module, int]:
    """(backbone, representation width). torchvision ResNets use zero_init_residual and fc = Identity."""
    if name == "tiny":
        return TinyResNet(cifar_stem=cifar_stem), WIDTH["tiny"]
    if name not in ("resnet18", "resnet50"):
        raise ValueError(f"unknown backbone {name!r} (choose {', '.join(BACKBONES)})")
    import torchvision

    net = getattr(torchvision.models, name)(weights=None, zero_init_residual=True)
    if cifar_stem:
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net, WIDTH[name]


class Diagonal(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return r * self.weight


class FixedLowRank(nn.Module):
    """z = r M^T with M = U diag(1_d0, 0) V^T fixed (a buffer); U, V random orthogonal from ``seed``."""

    def __init__(self, width: int, d0: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        u, _ = torch.linalg.qr(torch.randn(width, width, generator=g, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(width, width, generator=g, dtype=torch.float64))
        s = torch.zeros(width, dtype=torch.float64)
        s[:d0] = 1
        self.register_buffer("matrix", (u * s) @ v.T)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return r @ self.matrix.to(r.dtype).T


class Slice(nn.Module):
    """z = r[:, :d0] (DirectCLR: the fixed low-rank diagonal projector diag(1_d0, 0), zeros dropped)."""

    def __init__(self, d0: int):
        super().__init__()
        self.d0 = d0

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return r[:, : self.d0]


class RandomSubset(nn.Module):
    """z = r[:, S_t] with S_t a random d0-subset drawn from (seed, step): the same on every rank.

    In eval mode (spectrum monitoring) the whole representation is returned: a per-step subset has no
    fixed embedding space to measure.
    """

    def __init__(self, width: int, d0: int, seed: int):
        super().__init__()
        self.width, self.d0, self.seed = width, d0, seed
        self.register_buffer("index", torch.arange(d0), persistent=False)

    def set_step(self, step: int) -> None:
        g = torch.Generator().manual_seed((self.seed * 7919 + step) % (2**63))
        index = torch.randperm(self.width, generator=g)[: self.d0]
        if self.index.device.type == "cuda":  # pinned + asynchronous: no host sync in the training step
            self.index.copy_(index.pin_memory(), non_blocking=True)
        else:
            self.index.copy_(index)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return r.index_select(1, self.index) if self.training else r


def build_projector(name: str, width: int, d0: int, seed: int = 0, layers: int = 1) -> nn.Module:
    """``layers`` only concerns ``linear``: a chain of bias-free Linear layers, width -> 128 -> ... -> 128
    (one layer: the plain ``nn.Linear``, as before)."""
    if name not in PROJECTORS:
        raise ValueError(f"unknown projector {name!r} (choose {', '.join(PROJECTORS)})")
    if name in ("fixed-lowrank", "directclr", "random-subset") and not 1 <= d0 <= width:
        raise ValueError(f"--d0 {d0} must be between 1 and the representation width {width}")
    if name == "none":
        return nn.Identity()
    if layers < 1 or (layers > 1 and name != "linear"):
        raise ValueError(f"projector layers {layers}: only the linear projector takes more than 1 (at least 1)")
    if name == "linear":
        if layers == 1:
            return nn.Linear(width, EMBED_DIM, bias=False)
        dims = [width] + [EMBED_DIM] * layers
        return nn.Sequential(*(nn.Linear(i, o, bias=False) for i, o in zip(dims[:-1], dims[1:], strict=True)))
    if name == "mlp":
        return nn.Sequential(
            nn.Linear(width, width, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.Linear(width, EMBED_DIM, bias=False),
            nn.BatchNorm1d(EMBED_DIM),
        )
    if name == "diagonal":
        return Diagonal(width)
    if name == "orthogonal":
        return parametrizations.orthogonal(nn.Linear(width, width, bias=False), orthogonal_map="matrix_exp")
    if name == "fixed-lowrank":
        return FixedLowRank(width, d0, seed)
    if name == "directclr":
        return Slice(d0)
    return RandomSubset(width, d0, seed)


class SSLModel(nn.Module):
    """Backbone + projector + online linear probe on the detached representation (a monitor only)."""

    one_call = False  # both views in one backbone call (set by empirical.viewwise.stack_views)

    def __init__(
        self,
        backbone: str = "tiny",
        projector: str = "mlp",
        d0: int | None = None,
        cifar_stem: bool = True,
        num_classes: int = 10,
        seed: int = 0,
        projector_layers: int = 1,
    ):
        super().__init__()
        self.backbone, self.width = build_backbone(backbone, cifar_stem)
        self.d0 = default_d0(self.width) if d0 is None else d0
        self.projector = build_projector(projector, self.width, self.d0, seed, projector_layers)
        self.probe = nn.Linear(self.width, max(num_classes, 1))

    def projector_weights(self) -> list[torch.Tensor]:
        """The linear projector's weights, input side first (z = W_L ... W_1 r); what the monitor reads."""
        proj = self.projector
        layers = [proj] if isinstance(proj, nn.Linear) else list(proj) if isinstance(proj, nn.Sequential) else []
        if not layers or not all(isinstance(m, nn.Linear) and m.bias is None for m in layers):
            raise ValueError("projector_weights needs the linear projector (bias-free Linear layers)")
        return [m.weight for m in layers]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(r, z) of one batch."""
        r = self.backbone(x)
        return r, self.projector(r)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor):
        """(r1, z1, r2, z2, probe logits on r1.detach()) in one call, so that DDP sees one forward per step.

        The views go through the backbone separately (per-view BatchNorm statistics, as the official code),
        or, after ``empirical.viewwise.stack_views``, stacked in one call with view-wise BatchNorm (the same
        statistics).
        """
        if self.one_call:
            n = len(x1)
            r, z = self.encode(torch.cat([x1, x2]))
            r1, r2, z1, z2 = r[:n], r[n:], z[:n], z[n:]
        else:
            r1, z1 = self.encode(x1)
            r2, z2 = self.encode(x2)
        return r1, z1, r2, z2, self.probe(r1.detach())
