"""Batched augmentation with per-sample random parameters (paper App. D; official DirectCLR code).

torchvision draws one parameter set per call, i.e. per batch, which is wrong for contrastive learning; here
every sample of a batch gets its own crop, flip, colour jitter (values and order), grayscale, blur and
solarization. The parameters are drawn on the CPU from a ``torch.Generator`` keyed by (seed, step) and are the
same for any device, any batch split and any number of ranks: a rank draws them for the whole global batch and
keeps its slice, which also makes resume exact. The pixel work is batched torch on the images' device, and its
shapes depend only on (batch, image size), never on the draws (blur always runs, with a delta kernel when off),
so the pipeline can be compiled or captured with the training step.

Each pixel operation follows ``torchvision.transforms.v2.functional`` on the same parameters (tested):
RandomResizedCrop (scale, ratio 3/4-4/3, up to 10 tries then a centre crop; bicubic, antialiased, as the
official code's ``Image.BICUBIC``), horizontal flip, ColorJitter (brightness, contrast, saturation, hue in HSV,
in a random order per sample), grayscale, Gaussian blur (kernel 2*ceil(3 sigma_max)+1, reflect padding),
solarize (threshold 128/255, as PIL's default on uint8). Resized crops are clamped to [0, 1], as a uint8
(PIL) pipeline is.

Recipes (``--augment``):
* ``paper``: the official asymmetric recipe at every image size: crop(0.08-1), flip 0.5,
  jitter(0.4, 0.4, 0.2, 0.1) p=0.8, grayscale 0.2; view 1: blur p=1.0, solarize p=0; view 2: blur p=0.1,
  solarize p=0.2. Blur sigma ~ U[0.1, 2.0] in pixels of the view, as the official code applies it to its
  224 px views; at 32 px this blurs strongly (sigma 2 px is 6% of the side), so the asymmetry is kept.
* ``simclr``: symmetric SimCLR: the same crop/flip/grayscale, jitter p=0.8 of strength
  (0.8, 0.8, 0.8, 0.2) at >= 96 px (SimCLR's ImageNet strength) and (0.4, 0.4, 0.4, 0.1) below (its CIFAR
  strength); blur p=0.5 at >= 96 px and none below (SimCLR drops blur on CIFAR); no solarization.
``strength`` multiplies the jitter magnitudes and the crop severity 1 - scale_min.
"""

from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
RATIO = (3 / 4, 4 / 3)
CROP_TRIES = 10
SIGMA = (0.1, 2.0)
SOLARIZE_THRESHOLD = 128 / 255
SMALL = 96  # below this side (CIFAR, mnist5k) the simclr recipe uses SimCLR's CIFAR settings


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
    """The two view recipes of ``--augment name`` at ``--augment-strength strength`` for ``image_size`` px views."""
    if not strength >= 0:  # also rejects nan
        raise ValueError(f"augment strength must be a finite number >= 0, got {strength}")
    severity = min((1 - 0.08) * strength, 0.99)
    scale_min = 1 - severity
    if name == "paper":
        j = (0.4, 0.4, 0.2, 0.1)
        views = [(1.0, 0.0), (0.1, 0.2)]
    elif name == "simclr":
        large = image_size >= SMALL
        j = (0.8, 0.8, 0.8, 0.2) if large else (0.4, 0.4, 0.4, 0.1)
        p_blur = 0.5 if large else 0.0
        views = [(p_blur, 0.0), (p_blur, 0.0)]
    else:
        raise ValueError(f"unknown augmentation recipe {name!r} (choose paper or simclr)")
    jit = (j[0] * strength, j[1] * strength, j[2] * strength, min(j[3] * strength, 0.5))
    out = tuple(ViewRecipe(scale_min, jit, p_blur=b, p_solarize=s) for b, s in views)
    return out  # type: ignore[return-value]


def sample_params(rec: ViewRecipe, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-sample parameters for ``n`` images, drawn in a fixed order from ``gen`` (CPU).

    Crops are drawn as ``CROP_TRIES`` candidate (area fraction, log aspect ratio, top, left) uniforms per sample;
    which candidate fits is decided against the source image's size in :func:`crop_boxes`.
    """

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, *shape, generator=gen, dtype=torch.float64)

    def coin(p: float) -> torch.Tensor:
        return torch.rand(n, generator=gen, dtype=torch.float64) < p

    b, c, s, hue = rec.jitter
    return {
        "area": u(rec.scale_min, 1.0, CROP_TRIES),
        "log_ratio": u(math.log(RATIO[0]), math.log(RATIO[1]), CROP_TRIES),
        "top": u(0, 1, CROP_TRIES),
        "left": u(0, 1, CROP_TRIES),
        "flip": coin(rec.p_flip),
        "jitter": coin(rec.p_jitter),
        "bright": u(max(0.0, 1 - b), 1 + b),
        "contrast": u(max(0.0, 1 - c), 1 + c),
        "sat": u(max(0.0, 1 - s), 1 + s),
        "hue": u(-hue, hue),
        "order": torch.rand(n, 4, generator=gen, dtype=torch.float64).argsort(1),  # a permutation per sample
        "gray": coin(rec.p_gray),
        "blur": coin(rec.p_blur),
        "sigma": u(*SIGMA),
        "solarize": coin(rec.p_solarize),
    }


def crop_boxes(p: dict[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
    """(n, 4) float64 (top, left, h, w) in pixels: torchvision's RandomResizedCrop.get_params, per sample.

    The first of the candidates whose rounded box fits the image wins; if none does, the largest centred
    crop with an aspect ratio inside ``RATIO``.
    """
    target = height * width * p["area"]
    aspect = torch.exp(p["log_ratio"])
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.to(torch.uint8).argmax(1, keepdim=True)  # index of the first fitting candidate (0 if none fits)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    top = torch.floor(p["top"].gather(1, first)[:, 0] * (height - h + 1))
    left = torch.floor(p["left"].gather(1, first)[:, 0] * (width - w + 1))
    in_ratio = width / height
    if in_ratio < RATIO[0]:
        fw, fh = width, round(width / RATIO[0])
    elif in_ratio > RATIO[1]:
        fw, fh = round(height * RATIO[1]), height
    else:
        fw, fh = width, height
    fallback = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=torch.float64)
    box = torch.stack([top, left, h, w], 1)
    return torch.where(ok.any(1, keepdim=True), box, fallback)


def random_resized_crop_box(gen: torch.Generator, height: int, width: int, scale_min: float) -> tuple[int, ...]:
    """One (top, left, h, w) box drawn from ``gen`` with RandomResizedCrop's semantics, for per-image loaders."""
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(1, CROP_TRIES, generator=gen, dtype=torch.float64)  # noqa: E731
    p = {
        "area": u(scale_min, 1.0),
        "log_ratio": u(math.log(RATIO[0]), math.log(RATIO[1])),
        "top": u(0, 1),
        "left": u(0, 1),
    }
    return tuple(int(v) for v in crop_boxes(p, height, width)[0].tolist())


# Columns of the packed per-sample matrix: one host-to-device copy per view. The jitter is 3 blend slots before
# the hue rotation, the hue shift, 3 blend slots after it; a blend slot is (factor f, is-contrast, is-saturation).
_TOP, _LEFT, _H, _W, _FLIP, _PRE, _HUE, _POST, _GRAYC, _SOL, _SIG = 0, 1, 2, 3, 4, 5, 14, 15, 24, 25, 26


def pack(p: dict[str, torch.Tensor], height: int, width: int, crop: bool = True) -> torch.Tensor:
    """Everything the pixel operations need, per sample, as one (n, 27) float64 CPU matrix.

    Columns: crop box top, left, h, w (the whole image when ``crop`` is False), flip, the jitter in this
    sample's order as the blends before the hue rotation, the hue shift, the blends after it (identity slots
    pad both, and everything is identity when the jitter is off), gray, solarize, blur sigma (0 = no blur).
    Depends only on the parameters and the source size.
    """
    n = len(p["flip"])
    box = crop_boxes(p, height, width) if crop else torch.tensor([[0.0, 0.0, height, width]]).double().expand(n, 4)
    on = p["jitter"]
    one, zero = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    factor = torch.stack([torch.where(on, p[k], one) for k in ("bright", "contrast", "sat")] + [one], 1)
    order = p["order"]
    hue_at = (order == 3).long().argmax(1, keepdim=True)  # position of the hue in this sample's order
    slots = []
    for lo, hi in ((torch.zeros_like(hue_at), hue_at), (hue_at + 1, torch.full_like(hue_at, 4))):
        for j in range(3):  # positions [lo, hi) of the order, then identity (op 3 with factor 1)
            pos = lo + j
            op = torch.where(pos < hi, order.gather(1, pos.clamp(max=3)), 3)[:, 0]
            slots += [factor.gather(1, op[:, None])[:, 0], (op == 1).double(), (op == 2).double()]
    stages = torch.stack(slots[:9] + [torch.where(on, p["hue"], zero)] + slots[9:], 1)
    cols = [
        box,
        (p["flip"] & crop).double()[:, None],  # pre-cropped input (an image folder) is flipped by its loader
        stages,
        p["gray"].double()[:, None],
        p["solarize"].double()[:, None],
        torch.where(p["blur"], p["sigma"], zero)[:, None],
    ]
    return torch.cat(cols, 1)


def _to_device(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.device.type == "cuda":
        if not t.is_pinned():
            t = t.pin_memory()
        return t.to(like.device, non_blocking=True)
    return t.to(device=like.device)


_CONST: dict = {}


def _const(name: str, values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    """Small constant tensors, cached per device and dtype (no host-to-device copy per call)."""
    key = (name, like.device, like.dtype)
    if key not in _CONST:
        _CONST[key] = torch.tensor(values, device=like.device, dtype=like.dtype).view(1, -1, 1, 1)
    return _CONST[key]


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (r * _GRAY[0] + g * _GRAY[1] + b * _GRAY[2]).unsqueeze(1)


def _cubic_aa(t: torch.Tensor) -> torch.Tensor:
    """Keys' cubic with a = -0.5, the kernel of torch's antialiased bicubic (and PIL's)."""
    a = -0.5
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return torch.where(t < 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def resize_matrix(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """(n, out, in) weights: row i resamples pixels [start, start+length) of an axis to output pixel i.

    The antialiased bicubic of ``F.interpolate(crop, mode="bicubic", antialias=True, align_corners=False)``:
    centre c = s (i + 1/2) with s = length / out, support 2 max(s, 1), taps inside the crop only, weights
    normalized per row.
    """
    s = (length / out_size)[:, None, None]  # (n, 1, 1)
    i = torch.arange(out_size, device=length.device, dtype=length.dtype)[None, :, None]
    j = torch.arange(in_size, device=length.device, dtype=length.dtype)[None, None, :] - start[:, None, None]
    centre = s * (i + 0.5)
    support = 2 * s.clamp(min=1)
    lo = torch.floor(centre - support + 0.5).clamp(min=0)
    hi = torch.minimum(torch.floor(centre + support + 0.5), length[:, None, None])
    w = _cubic_aa((j - centre + 0.5) / s.clamp(min=1)) * ((j >= lo) & (j < hi))
    return w / w.sum(2, keepdim=True)


def _resized_crop(x: torch.Tensor, q: torch.Tensor, size: int) -> torch.Tensor:
    """Per-sample crop box + bicubic resize to ``size`` + optional horizontal flip, as two batched matmuls.

    With TF32 matmuls allowed on a GPU these run in TF32 (relative error ~1e-3, a quarter of a uint8 level).
    """
    _, _, hgt, wid = x.shape
    ry = resize_matrix(q[:, _TOP], q[:, _H], hgt, size)
    rx = resize_matrix(q[:, _LEFT], q[:, _W], wid, size)
    rx = torch.where(q[:, _FLIP, None, None] > 0.5, rx.flip(1), rx)  # a flip reverses the output columns
    return (ry[:, None] @ x @ rx[:, None].transpose(-1, -2)).clamp(0, 1)


def _adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue by ``shift`` (n, 1, 1, 1) turns; samples with shift 0 are returned untouched.

    HSV round trip without forming s: with v = max, c = max - min and the hue in sextants h6 (PIL's and
    torchvision's rgb_to_hsv), channel r, g, b is v - c clamp(min(k, 4 - k), 0, 1), k = (n + h6 + 6 shift) mod 6
    for n = 5, 3, 1.
    """
    r, g, b = x.unbind(1)
    v = torch.maximum(torch.maximum(r, g), b)
    c = v - torch.minimum(torch.minimum(r, g), b)
    safe = c + (c == 0).to(c.dtype)  # c = 0 (gray pixel): the hue is irrelevant, the result is v
    h6 = torch.where(v == r, (g - b) / safe, torch.where(v == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    k = torch.remainder((h6 + 6 * shift[:, 0]).unsqueeze(1) + _const("hsv_offsets", (5.0, 3.0, 1.0), x), 6)
    y = v.unsqueeze(1) - c.unsqueeze(1) * torch.minimum(k, 4 - k).clamp(0, 1)
    return torch.where(shift != 0, y, x)


def _blend(x: torch.Tensor, q: torch.Tensor, at: int) -> torch.Tensor:
    """Brightness, contrast or saturation per sample: f x + (1 - f) t, clamped, t = 0, mean(gray(x)), gray(x).

    torchvision's definitions; the slot at column ``at`` holds (f, is-contrast, is-saturation), f = 1 = identity.
    """
    n = x.shape[0]
    f, is_c, is_s = (q[:, at + j].view(n, 1, 1, 1) for j in range(3))
    g = _gray(x)
    target = is_c * g.mean((2, 3), keepdim=True) + is_s * g
    return (f * x + (1 - f) * target).clamp(0, 1)


def _jitter(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """ColorJitter with per-sample factors and per-sample order (torchvision's ``randperm(4)`` per sample).

    Every order is "some blends, the hue rotation, the other blends": 3 blend slots, one hue rotation, 3 blend
    slots, unused slots identity; shapes never depend on the order.
    """
    for j in range(3):
        x = _blend(x, q, _PRE + 3 * j)
    x = _adjust_hue(x, q[:, _HUE].view(-1, 1, 1, 1))
    for j in range(3):
        x = _blend(x, q, _POST + 3 * j)
    return x


def blur_kernel_size(size: int) -> int:
    """Odd kernel covering +-3 sigma_max, capped so that reflect padding fits the image."""
    return min(2 * math.ceil(3 * SIGMA[1]) + 1, 2 * (size - 1) + 1)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur, per-sample sigma (n,), reflect padding; sigma 0 = delta kernel (identity)."""
    n, c, hgt, wid = x.shape
    k = blur_kernel_size(min(hgt, wid))
    t = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    s = sigma[:, None].clamp(min=1e-6)
    ker = torch.softmax(-0.5 * (t / s) ** 2, 1)  # normalized exp(-t^2 / 2 sigma^2)
    ker = torch.where(sigma[:, None] > 0, ker, (t == 0).to(x.dtype))
    ker = ker.repeat_interleave(c, 0)  # (n*c, k)
    y = F.pad(x.reshape(1, n * c, hgt, wid), (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    y = F.conv2d(y, ker.view(n * c, 1, k, 1), groups=n * c)
    y = F.conv2d(y, ker.view(n * c, 1, 1, k), groups=n * c)
    return y.view(n, c, hgt, wid)


def augment_packed(
    x: torch.Tensor, q: torch.Tensor, size: int, crop: bool = True, normalize: bool = True
) -> torch.Tensor:
    """Apply one view's packed parameters ``q`` (:func:`pack`, on x's device) to uint8 or [0, 1] images.

    Order as the official recipe: resized crop + flip, colour jitter, grayscale, blur, solarize. ``crop``
    must be the value ``q`` was packed with; uncropped input already at ``size`` skips the resampling.
    """
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    q = q.to(x.dtype)
    n = x.shape[0]
    col = lambda i: q[:, i].view(n, 1, 1, 1)  # noqa: E731
    if crop or (x.shape[-2], x.shape[-1]) != (size, size):
        x = _resized_crop(x, q, size)
    x = _jitter(x, q)
    x = torch.where(col(_GRAYC) > 0.5, _gray(x).expand_as(x), x)
    x = _blur(x, q[:, _SIG])
    x = torch.where((col(_SOL) > 0.5) & (x >= SOLARIZE_THRESHOLD), 1 - x, x)
    return normalize_images(x) if normalize else x


def augment(
    x: torch.Tensor, p: dict[str, torch.Tensor], size: int, crop: bool = True, normalize: bool = True
) -> torch.Tensor:
    """Apply one view's per-sample parameters ``p`` to uint8 or [0, 1] float images (N, 3, H, W).

    ``crop=False``: input already cropped (and flipped) by its loader; it is only resized to ``size``.
    """
    return augment_packed(x, _to_device(pack(p, x.shape[-2], x.shape[-1], crop), x), size, crop, normalize)


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


class Prefetcher:
    """Draws and packs the next steps' per-sample parameters in a background thread.

    The parameters depend only on (seed, step), so drawing them ahead changes nothing: ``get(step)`` returns
    exactly ``[pack(p) for p in view_params(...)]`` on ``device`` (pinned, asynchronous copy on CUDA). Steps are
    expected in order from ``start``; any other step is drawn synchronously and the thread restarts from it.

        pre = Prefetcher(recipes, seed, global_batch, offset, n, (H, W), crop, device, start)
        q1, q2 = pre.get(step); v1, v2 = (augment_packed(x, q, size, crop) for x, q in ((x1, q1), (x2, q2)))
    """

    def __init__(
        self,
        recipes: tuple[ViewRecipe, ViewRecipe],
        seed: int,
        global_batch: int,
        offset: int,
        n: int,
        source_hw: tuple[int, int],
        crop: bool,
        device: torch.device | str,
        start: int = 0,
        depth: int = 2,
    ):
        self.args = (recipes, seed, global_batch, offset, n)
        self.hw, self.crop, self.device, self.depth = source_hw, crop, torch.device(device), depth
        self._thread: threading.Thread | None = None
        self._start(start)

    def _packed(self, step: int) -> list[torch.Tensor]:
        recipes, seed, global_batch, offset, n = self.args
        out = [pack(p, *self.hw, self.crop) for p in view_params(recipes, seed, step, global_batch, offset, n)]
        return [t.pin_memory() for t in out] if self.device.type == "cuda" else out

    def _start(self, step: int) -> None:
        self.close()
        self._next, self._stop = step, threading.Event()
        self._queue: queue.Queue = queue.Queue(self.depth)

        def work(first: int, stop: threading.Event, q: queue.Queue) -> None:
            s = first
            while not stop.is_set():
                item = (s, self._packed(s))
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                s += 1

        self._thread = threading.Thread(target=work, args=(step, self._stop, self._queue), daemon=True)
        self._thread.start()

    def get(self, step: int) -> list[torch.Tensor]:
        if step != self._next:
            self._start(step)
        got, packed = self._queue.get()
        assert got == step, (got, step)
        self._next = step + 1
        if self.device.type == "cuda":
            return [t.to(self.device, non_blocking=True) for t in packed]
        return [t.to(self.device) for t in packed]

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
