"""Contrastive losses of the paper (Sec. 6.2 and the official DirectCLR code).

Both losses L2-normalize their inputs and return the mean over anchors. They compute in float32 at least:
bf16/fp16 inputs are upcast (fp16 inside ``F.normalize`` is a known source of NaNs), float64 stays float64.

``info_nce`` is the official DirectCLR form: anchors from one view, keys from the *other* view only
(N-1 negatives), symmetrized::

    l(a, b) = -1/N sum_i log softmax_j(a_i . b_j / t)[i],      L = l(z1, z2)/2 + l(z2, z1)/2

``nt_xent`` is SimCLR's NT-Xent: each of the 2N embeddings is an anchor against the other 2N-1
(one positive, 2N-2 negatives); L is the mean over the 2N anchors.

``paper_loss`` and ``dot_loss`` are the theory's forms on **unnormalized** z, one direction, batch mean: the
torch twins of ``theory.losses.paper_loss`` (Eqn 2: logits -|z_i - z_j|^2/2, negatives z1_j from the same view,
positive z2_i) and ``theory.losses.dot_loss`` (logits z1_i . z2_j / t). For a linear projector z = W r their
weight gradient is -W X(r) with X from ``theory.covariance.contrastive_covariance`` (Lemma 2), which is what
``empirical.xmonitor`` reads.

Distributed training: pass ``gather``, a callable ``x -> (x_all, offset)`` that concatenates ``x`` over ranks
(with gradients) and says where this rank's rows start. Anchors stay local, keys are global, so that the
mean of the per-rank losses equals the single-process loss on the global batch (see ``all_gather_with_grad``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Gather = Callable[[torch.Tensor], tuple[torch.Tensor, int]]


def _prepare(z: torch.Tensor) -> torch.Tensor:
    if z.dtype not in (torch.float32, torch.float64):
        z = z.float()
    return F.normalize(z, dim=1)


def _no_gather(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    return x, 0


def all_gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate ``x`` over all ranks, keeping gradients (backward sums them back to their owner)."""
    import torch.distributed as dist
    import torch.distributed.nn.functional as dist_fn

    parts = dist_fn.all_gather(x)
    return torch.cat(parts, dim=0), dist.get_rank() * x.shape[0]


def _one_way(a: torch.Tensor, b_all: torch.Tensor, offset: int, temperature: float) -> torch.Tensor:
    logits = a @ b_all.T / temperature
    labels = torch.arange(a.shape[0], device=a.device) + offset
    return F.cross_entropy(logits, labels)


def _normalized_views(name: str, z1: torch.Tensor, z2: torch.Tensor, gather: Gather | None):
    """Checked, L2-normalized local views and their gathered (global) versions, with this rank's offset."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"{name} needs two (N, d) tensors of equal shape, got {tuple(z1.shape)}, {tuple(z2.shape)}")
    gather = gather or _no_gather
    a, b = _prepare(z1), _prepare(z2)
    a_all, offset = gather(a)
    b_all, _ = gather(b)
    return a, b, a_all, b_all, offset


def info_nce(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, gather: Gather | None = None
) -> torch.Tensor:
    """Symmetrized InfoNCE with negatives from the other view (official code): l(z1,z2)/2 + l(z2,z1)/2."""
    a, b, a_all, b_all, offset = _normalized_views("info_nce", z1, z2, gather)
    return _one_way(a, b_all, offset, temperature) / 2 + _one_way(b, a_all, offset, temperature) / 2


def _unnormalized(name: str, z: torch.Tensor) -> torch.Tensor:
    if z.ndim != 2:
        raise ValueError(f"{name} needs (N, d) tensors, got {tuple(z.shape)}")
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


def paper_loss(z1: torch.Tensor, z2: torch.Tensor, gather: Gather | None = None) -> torch.Tensor:
    """Eqn 2, batch mean: -1/N sum_i log softmax over {z2_i} U {z1_j, j != i} of -|z1_i - k|^2/2 at z2_i.

    The anchor's own term -|z1_i|^2/2 is common to its row and cancels in the softmax, so the logit of key k
    is z1_i . k - |k|^2/2 (as ``theory.losses``): one N x N product, no pairwise differences.
    """
    if z1.shape != z2.shape:
        raise ValueError(f"paper_loss needs two views of one shape, got {tuple(z1.shape)}, {tuple(z2.shape)}")
    a, b = _unnormalized("paper_loss", z1), _unnormalized("paper_loss", z2)
    a_all, offset = (gather or _no_gather)(a)
    logits = a @ a_all.T - 0.5 * (a_all * a_all).sum(1)
    rows = torch.arange(a.shape[0], device=a.device)
    positive = (a * b).sum(1) - 0.5 * (b * b).sum(1)
    logits = logits.index_put((rows, rows + offset), positive)  # the positive replaces the anchor itself
    return F.cross_entropy(logits, rows + offset)


def dot_loss(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, gather: Gather | None = None
) -> torch.Tensor:
    """The official toy code's loss: -1/N sum_i log softmax_j(z1_i . z2_j / t)[i], unnormalized, one way."""
    if z1.shape != z2.shape:
        raise ValueError(f"dot_loss needs two views of one shape, got {tuple(z1.shape)}, {tuple(z2.shape)}")
    a, b = _unnormalized("dot_loss", z1), _unnormalized("dot_loss", z2)
    b_all, offset = (gather or _no_gather)(b)
    return _one_way(a, b_all, offset, temperature)


def nt_xent(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, gather: Gather | None = None
) -> torch.Tensor:
    """SimCLR NT-Xent: 2N anchors, each with 1 positive and 2N-2 negatives; mean over the anchors."""
    a, b, a_all, b_all, offset = _normalized_views("nt_xent", z1, z2, gather)
    n, n_all = a.shape[0], a_all.shape[0]
    anchors = torch.cat([a, b])  # (2n, d)
    keys = torch.cat([a_all, b_all])  # (2N, d): view-1 rows first, then view-2 rows
    logits = anchors @ keys.T / temperature
    rows = torch.arange(n, device=a.device) + offset
    self_idx = torch.cat([rows, rows + n_all])
    pos_idx = torch.cat([rows + n_all, rows])
    # An anchor is never its own negative: mask it out before the softmax.
    logits = logits.masked_fill(F.one_hot(self_idx, 2 * n_all).bool(), float("-inf"))
    return F.cross_entropy(logits, pos_idx)


def _paper(z1: torch.Tensor, z2: torch.Tensor, temperature: float, gather: Gather | None = None) -> torch.Tensor:
    return paper_loss(z1, z2, gather=gather)  # Eqn 2 has no temperature


@dataclass(frozen=True)
class Loss:
    """A training loss: ``fn(z1, z2, temperature, gather)``, the form of X that its gradient takes for a linear
    projector (``empirical.xmonitor``'s ``paper``, ``dot`` or ``cosine``; None: no X), whether it is symmetrized,
    and the help text."""

    fn: Callable[..., torch.Tensor]
    x_form: str | None
    symmetric: bool
    help: str


REGISTRY: dict[str, Loss] = {
    "info_nce": Loss(info_nce, "cosine", True, "official (other-view negatives, symmetrized)"),
    "nt_xent": Loss(nt_xent, None, False, "SimCLR's 2N-2 negatives"),
    "paper": Loss(_paper, "paper", False, "Eqn 2 on unnormalized z"),
    "dot": Loss(dot_loss, "dot", False, "z1.z2/t on unnormalized z"),
}
ALIASES = {"infonce": "info_nce", "ntxent": "nt_xent"}  # earlier spellings, still accepted


def canonical(name: str) -> str:
    """The registry name of ``name`` (an earlier spelling is mapped; an unknown name is returned unchanged)."""
    return ALIASES.get(name, name)
