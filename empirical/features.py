"""Frozen features of a trained model: one eval-mode pass shared by the training monitor, evaluation and compare.

uint8 images -> the ImageNet-mean/std normalization the training uses -> ``model.encode`` (r, z) and, on
request, the online probe's logits; in chunks, without gradients, in eval mode (BatchNorm running statistics),
with the model's previous train/eval mode restored.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from empirical.augment import normalize_images


@torch.no_grad()
def encode_images(
    model: nn.Module,
    images: torch.Tensor,
    batch: int = 512,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    probe: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, ...]:
    """(r, z) or, with ``probe``, (r, z, probe logits) for uint8 images, as ``dtype`` CPU tensors.

    The images go to the model's device chunk by chunk; autocast with ``amp_dtype`` when given.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[list[torch.Tensor]] = [[], [], []] if probe else [[], []]
    try:
        for lo in range(0, len(images), batch):
            x = normalize_images(images[lo : lo + batch].to(device))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                r, z = model.encode(x)
                parts = (r, z, model.probe(r)) if probe else (r, z)
            for acc, t in zip(out, parts, strict=True):
                acc.append(t.to(dtype).cpu())
    finally:
        model.train(was_training)
    return tuple(torch.cat(acc) for acc in out)
