"""Batched augmentation with per-sample random parameters (paper.md 3.1, "Augmentations"; App. D).

torchvision v2 draws one parameter set per call, i.e. per batch, which is wrong for contrastive learning;
here every sample of a batch gets its own crop, flip, colour jitter, grayscale, blur and solarization draw.
The parameters are drawn on the CPU from a ``torch.Generator`` and are the same for any device, any
batch-splitting and any number of ranks: a rank draws them for the whole global batch and keeps its slice.
The pixel work is plain torch (``affine_grid``/``grid_sample``, grouped convolutions), so kornia is optional.

Recipes (``--augment``):
* ``paper``: the official asymmetric BYOL-style recipe: crop(0.08-1, ratio 3/4-4/3), flip 0.5,
  jitter(0.4, 0.4, 0.2, 0.1) p=0.8, grayscale 0.2; view 1: blur p=1.0, solarize p=0; view 2: blur p=0.1,
  solarize p=0.2.
* ``simclr``: symmetric SimCLR: the same crop/flip/grayscale, jitter(0.4, 0.4, 0.4, 0.1) p=0.8, blur p=0.5
  at >= 96 px only (SimCLR drops blur on CIFAR), no solarization.

Deviations from torchvision, on purpose: jitter runs in the fixed order brightness, contrast, saturation,
hue (torchvision shuffles it); hue is a rotation in YIQ space (as NVIDIA DALI does) instead of an HSV
round trip; crops are drawn in one shot and clamped to the image instead of rejection-sampled; bilinear
resampling; blur sigma is U[0.1, 2.0] at 224 px and scales with the image size, kernel ~ 10% of the side.
``strength`` multiplies the jitter magnitudes and the crop severity 1 - scale_min.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_GRAY = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ViewRecipe:
    """Probabilities and magnitudes for one view."""

    scale_min: float = 0.08
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    p_jitter: float = 0.8
    p_gray: float = 0.2
    p_blur: float = 0.0
    p_solarize: float = 0.0
    p_flip: float = 0.5


def recipe(name: str, strength: float = 1.0, image_size: int = 224) -> tuple[ViewRecipe, ViewRecipe]:
    """The two view recipes of ``--augment name`` at ``--augment-strength strength``."""
    if strength < 0:
        raise ValueError("augment strength must be >= 0")
    severity = min((1 - 0.08) * strength, 0.99)
    scale_min = 1 - severity
    if name == "paper":
        j = (0.4, 0.4, 0.2, 0.1)
        views = [(1.0, 0.0), (0.1, 0.2)]
    elif name == "simclr":
        j = (0.4, 0.4, 0.4, 0.1)
        p_blur = 0.5 if image_size >= 96 else 0.0
        views = [(p_blur, 0.0), (p_blur, 0.0)]
    else:
        raise ValueError(f"unknown augmentation recipe {name!r} (choose paper or simclr)")
    jit = (j[0] * strength, j[1] * strength, j[2] * strength, min(j[3] * strength, 0.5))
    out = tuple(ViewRecipe(scale_min, jit, p_blur=b, p_solarize=s) for b, s in views)
    return out  # type: ignore[return-value]


def sample_params(rec: ViewRecipe, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-sample parameters for ``n`` images, drawn in a fixed order from ``gen`` (CPU)."""

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)

    def coin(p: float) -> torch.Tensor:
        return torch.rand(n, generator=gen) < p

    area = u(rec.scale_min, 1.0)
    log_ratio = u(math.log(3 / 4), math.log(4 / 3))
    w = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)
    h = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
    cx = (w / 2) + (1 - w) * u(0, 1)
    cy = (h / 2) + (1 - h) * u(0, 1)
    b, c, s, hue = rec.jitter
    p = {
        "w": w,
        "h": h,
        "cx": cx,
        "cy": cy,
        "flip": coin(rec.p_flip),
        "jitter": coin(rec.p_jitter),
        "bright": u(max(0.0, 1 - b), 1 + b),
        "contrast": u(max(0.0, 1 - c), 1 + c),
        "sat": u(max(0.0, 1 - s), 1 + s),
        "hue": u(-hue, hue),
        "gray": coin(rec.p_gray),
        "blur": coin(rec.p_blur),
        "sigma": u(0.1, 2.0),
        "solarize": coin(rec.p_solarize),
    }
    return p


def _blur_kernels(p: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """(n, k) 1-D Gaussian kernels, sigma scaled from 224 px to ``size``; a delta for unblurred samples."""
    k = max(3, int(0.1 * size) // 2 * 2 + 1)
    sigma = (p["sigma"] * size / 224).clamp(min=1e-3)
    t = torch.arange(k, dtype=torch.float64) - k // 2
    ker = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))
    ker = ker / ker.sum(1, keepdim=True)
    return torch.where(p["blur"][:, None], ker, (t == 0).double().expand(len(sigma), k))


def _pack(p: dict[str, torch.Tensor], size: int, blur: bool) -> torch.Tensor:
    """Everything the pixel ops need, per sample, as one (n, 20 [+ k]) float64 CPU matrix.

    One host-to-device copy per view (pinned, asynchronous on CUDA) instead of a dozen small synchronous ones.
    Columns: affine crop/flip theta (6), brightness, contrast, saturation (3), hue matrix (9), gray, solarize,
    blur kernel (k, only when some sample is blurred).
    """
    n = len(p["w"])
    sign = 1.0 - 2.0 * p["flip"].double()
    zero = torch.zeros(n, dtype=torch.float64)
    theta = torch.stack([p["w"] * sign, zero, 2 * p["cx"] - 1, zero, p["h"], 2 * p["cy"] - 1], 1)
    on = p["jitter"]
    one = torch.ones(n, dtype=torch.float64)
    bcs = torch.stack([torch.where(on, p[k], one) for k in ("bright", "contrast", "sat")], 1)
    # Hue: rotate the chroma (I, Q) plane of YIQ by 2*pi*hue, i.e. x -> YIQ^-1 R YIQ x per sample.
    ang = 2 * math.pi * torch.where(on, p["hue"], zero)
    rot = torch.zeros(n, 3, 3, dtype=torch.float64)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = torch.cos(ang), -torch.sin(ang)
    rot[:, 2, 1], rot[:, 2, 2] = torch.sin(ang), torch.cos(ang)
    yiq = _YIQ.double()
    mat = (torch.linalg.inv(yiq) @ rot @ yiq).reshape(n, 9)
    cols = [theta, bcs, mat, p["gray"].double()[:, None], p["solarize"].double()[:, None]]
    if blur:
        cols.append(_blur_kernels(p, size))
    return torch.cat(cols, 1)


def _to_device(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.device.type == "cuda":
        return t.to(like.dtype).pin_memory().to(like.device, non_blocking=True)
    return t.to(device=like.device, dtype=like.dtype)


_CONST: dict = {}


def _const(name: str, values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    """Small constant tensors, cached per device and dtype (no host-to-device copy per call)."""
    key = (name, like.device, like.dtype)
    if key not in _CONST:
        _CONST[key] = torch.tensor(values, device=like.device, dtype=like.dtype).view(1, -1, 1, 1)
    return _CONST[key]


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (x * _const("gray", _GRAY, x)).sum(1, keepdim=True)


def _blur(x: torch.Tensor, ker: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with per-sample kernels ``ker`` (n, k): one grouped conv per direction."""
    n, c, hgt, wid = x.shape
    k = ker.shape[1]
    ker = ker.repeat_interleave(c, 0)  # (n*c, k)
    y = F.pad(x.reshape(1, n * c, hgt, wid), (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    y = F.conv2d(y, ker.view(n * c, 1, k, 1), groups=n * c)
    y = F.conv2d(y, ker.view(n * c, 1, 1, k), groups=n * c)
    return y.view(n, c, hgt, wid)


def augment(
    x: torch.Tensor, p: dict[str, torch.Tensor], size: int, crop: bool = True, normalize: bool = True
) -> torch.Tensor:
    """Apply one view's per-sample parameters ``p`` to uint8 or [0, 1] float images (N, 3, H, W)."""
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    n = x.shape[0]
    blur = bool(p["blur"].any())
    q = _to_device(_pack(p, size, blur), x)
    col = lambda i: q[:, i].view(n, 1, 1, 1)  # noqa: E731
    if crop:  # random resized crop + horizontal flip as one per-sample affine resampling
        grid = F.affine_grid(q[:, :6].view(n, 2, 3), [n, x.shape[1], size, size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    elif x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = (x * col(6)).clamp(0, 1)
    m = _gray(x).mean(dim=(2, 3), keepdim=True)
    x = ((x - m) * col(7) + m).clamp(0, 1)
    g = _gray(x)
    x = ((x - g) * col(8) + g).clamp(0, 1)
    x = torch.einsum("nij,njhw->nihw", q[:, 9:18].view(n, 3, 3), x).clamp(0, 1)
    x = torch.where(col(18) > 0.5, _gray(x).expand_as(x), x)
    if blur:
        x = _blur(x, q[:, 20:])
    x = torch.where((col(19) > 0.5) & (x >= 0.5), 1 - x, x)
    return normalize_images(x) if normalize else x


def normalize_images(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> ImageNet mean/std normalized (uint8 input is scaled first)."""
    x = x.float() / 255 if x.dtype == torch.uint8 else x
    return (x - _const("mean", MEAN, x)) / _const("std", STD, x)


def view_params(
    recipes: tuple[ViewRecipe, ViewRecipe], seed: int, step: int, global_batch: int, offset: int, n: int
) -> list[dict[str, torch.Tensor]]:
    """Per-sample parameters of both views for rows [offset, offset+n) of the global batch at ``step``.

    They depend only on (seed, step, global row), never on the device or the number of ranks.
    """
    gen = torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))
    out = []
    for rec in recipes:
        p = sample_params(rec, global_batch, gen)
        out.append({k: v[offset : offset + n] for k, v in p.items()})
    return out


def two_views(
    x: torch.Tensor,
    recipes: tuple[ViewRecipe, ViewRecipe],
    size: int,
    seed: int,
    step: int,
    global_batch: int | None = None,
    offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both views of ``x`` (rows [offset, offset+len(x)) of a global batch; default: x is the whole batch)."""
    p1, p2 = view_params(recipes, seed, step, global_batch or len(x), offset, len(x))
    return augment(x, p1, size), augment(x, p2, size)
