"""Frozen features of a trained model: one eval-mode pass shared by the training monitor, evaluation and compare.

uint8 images -> the ImageNet-mean/std normalization the training uses -> ``model.encode`` (r, z) and, on
request, the online probe's logits; in chunks, without gradients, in eval mode (BatchNorm running statistics),
with the model's previous train/eval mode restored. ``view_features`` does the same for two augmented views.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from empirical.augment import augment, normalize_images, recipe, view_params


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


def view_features(model: nn.Module, images: torch.Tensor, config: dict, seed: int, chunk: int = 512) -> dict:
    """{"r1", "z1", "r2", "z2"} (float64 numpy) of two augmented views of uint8 ``images``, drawn with the run's
    recipe (``config``: augment, augment_strength, image_size) and per-sample parameters keyed by ``seed``.

    The views are quantized back to uint8 before ``encode_images`` (error <= 1/510 per pixel).
    """
    recipes = recipe(config["augment"], config["augment_strength"], config["image_size"])
    feats: dict = {"r1": [], "z1": [], "r2": [], "z2": []}
    for step, lo in enumerate(range(0, len(images), chunk)):
        x = images[lo : lo + chunk]
        for view, p in enumerate(view_params(recipes, seed, step, len(x), 0, len(x)), start=1):
            v = augment(x, p, config["image_size"], crop=True, normalize=False)
            r, z = encode_images(model, (v * 255).round().clamp(0, 255).to(torch.uint8), dtype=torch.float64)
            feats[f"r{view}"].append(r.numpy())
            feats[f"z{view}"].append(z.numpy())
    return {k: np.concatenate(v) for k, v in feats.items()}
