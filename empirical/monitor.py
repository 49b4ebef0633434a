"""Spectrum monitoring during training (the paper's Fig. 2 / 7b / 9).

On a fixed held-out batch (no augmentation, eval mode): representation r and embedding z, each
L2-normalized, covariance C = (1/N) sum (z - zbar)(z - zbar)^T, its singular values, the number of collapsed
dimensions, effective rank and RankMe, all computed by ``theory.spectrum.embedding_spectrum`` (the one
implementation of these numbers in the project). Also the online probe's accuracy on that batch.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from empirical.features import encode_images
from theory.spectrum import embedding_spectrum


def embed(
    model: nn.Module, images: torch.Tensor, batch: int = 512, amp_dtype=None, channels_last: bool = False
):
    """(r, z, probe logits) for uint8 images, in eval mode (``empirical.features.encode_images``)."""
    return encode_images(model, images, batch, amp_dtype, channels_last, probe=True)


def spectrum_metrics(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, amp_dtype=None, channels_last: bool = False
) -> tuple[dict, dict]:
    """(scalar metrics for metrics.jsonl, full log10 spectra for spectra.jsonl)."""
    r, z, logits = embed(model, images, amp_dtype=amp_dtype, channels_last=channels_last)
    scalars: dict = {}
    spectra: dict = {}
    for name, emb in (("z", z), ("r", r)):
        if not torch.isfinite(emb).all():
            scalars[f"nonfinite_{name}"] = True
            continue
        s = embedding_spectrum(emb.double().numpy(), normalize=True)
        scalars[f"erank_{name}"] = s.effective_rank
        scalars[f"rankme_{name}"] = s.rankme
        scalars[f"collapsed_{name}"] = int(s.n_collapsed)
        scalars[f"dim_{name}"] = int(emb.shape[1])
        spectra[f"log10_{name}"] = s.to_json()["log10"]
    known = labels >= 0
    if known.any():
        scalars["probe_acc_heldout"] = float((logits[known].argmax(1) == labels[known]).float().mean())
    return scalars, spectra
