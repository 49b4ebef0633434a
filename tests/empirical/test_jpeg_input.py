"""Image-folder input decoded on the device: same pixels as PIL, same crop boxes as the worker path, PNG files,
a clear error for undecodable files, and a training run that resumes exactly."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
Image = pytest.importorskip("PIL.Image")

from dimcollapse.io import UserError  # noqa: E402
from empirical.augment import random_resized_crop_box  # noqa: E402
from empirical.data import (  # noqa: E402
    FolderPairs,
    _StepSampler,
    crop_pair,
    decode_images,
    folder_batches,
)
from empirical.train import main  # noqa: E402

CPU = torch.device("cpu")


def _image(rng, h, w, mode="RGB"):
    """A smooth colour field (as photographs are) in ``mode``."""
    low = rng.integers(0, 255, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    return Image.fromarray(low).resize((w, h), Image.BICUBIC).convert(mode)


def _folder(root, per_class=4, png=0, modes=("RGB",), seed=0):
    """JPEGs of different sizes under root/c0, root/c1; the first ``png`` of c1 are PNGs."""
    rng = np.random.default_rng(seed)
    for c in range(2):
        d = root / f"c{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            img = _image(rng, 30 + 7 * i, 44 - 3 * i + 5 * c, modes[i % len(modes)])
            if c == 1 and i < png:
                img.save(d / f"{i}.png")
            else:
                img.save(d / f"{i}.jpg", quality=90)
    return root


def _read(path):
    from torchvision.io import read_file

    return read_file(str(path))


def test_device_decode_equals_pil(tmp_path):
    """decode_jpeg on the CPU and PIL both use libjpeg-turbo: measured max difference 0 (RGB, L and CMYK JPEGs,
    torchvision 0.29.1, Pillow 13); allowed: one uint8 level."""
    root = _folder(tmp_path / "f", per_class=3, modes=("RGB", "L", "CMYK"))
    paths = sorted(str(p) for p in root.rglob("*.jpg"))
    ours = decode_images([_read(p) for p in paths], paths, CPU)
    worst = 0
    for p, img in zip(paths, ours, strict=True):
        ref = torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
        assert img.shape == ref.shape and img.dtype == torch.uint8
        worst = max(worst, int((img.int() - ref.int()).abs().max()))
    assert worst <= 1, worst


def test_png_decodes_and_bad_file_is_one_line_error(tmp_path):
    root = _folder(tmp_path / "f", per_class=2, png=2)
    paths = sorted(str(p) for p in root.rglob("*.*"))
    assert any(p.endswith(".png") for p in paths)
    for p, img in zip(paths, decode_images([_read(p) for p in paths], paths, CPU), strict=True):
        ref = torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(img, ref) if p.endswith(".png") else img.shape == ref.shape
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"not an image" * 10)
    with pytest.raises(UserError) as e:
        decode_images([_read(paths[0]), _read(bad)], [paths[0], str(bad)], CPU)
    msg = str(e.value)
    assert "\n" not in msg and "bad.jpg" in msg and "JPEG, PNG" in msg


def test_crop_pair_uses_the_augment_sampler():
    """Each view's box is random_resized_crop_box's next draw from the same generator (then a flip coin)."""
    (b1, f1), (b2, f2) = crop_pair(1234, 40, 50, 0.08)
    g = torch.Generator().manual_seed(1234)
    assert b1 == random_resized_crop_box(g, 40, 50, 0.08)
    assert f1 == bool(torch.rand(1, generator=g, dtype=torch.float64) < 0.5)
    assert b2 == random_resized_crop_box(g, 40, 50, 0.08)
    flips = [crop_pair(s, 40, 50, 0.08)[0][1] for s in range(400)]
    assert 0.4 < np.mean(flips) < 0.6


def test_both_decode_paths_give_the_same_views(tmp_path):
    """Same (seed, step) keys -> the same crop boxes and flips; on a CPU also the same pixels."""
    root = _folder(tmp_path / "f", per_class=4, png=1)
    ds = FolderPairs(str(root), 16, 0.08)
    runs = {  # one loader worker: the encoded files cross a process boundary
        d: list(folder_batches(ds, 1, 4, 4, 0, 1, 7, 1, CPU, decode=d)) for d in ("workers", "device")
    }
    assert len(runs["device"]) == 3
    for a, b in zip(runs["workers"], runs["device"], strict=True):
        assert a.step == b.step and a.cropped and b.cropped
        assert torch.equal(a.labels, b.labels)
        for x, y in ((a.x1, b.x1), (a.x2, b.x2)):
            assert x.shape == y.shape == (4, 3, 16, 16) and x.dtype == y.dtype == torch.uint8
            assert torch.equal(x, y)
    # and the boxes are the ones crop_pair draws for the sampler's keys
    keys = next(iter(_StepSampler(len(ds), 1, 2, 4, 0, 1, 7)))
    row, seed = keys[0]
    img = torch.from_numpy(np.array(Image.open(ds.folder.samples[row][0]).convert("RGB"))).permute(2, 0, 1)
    (top, left, h, w), flip = crop_pair(seed, *img.shape[-2:], 0.08)[0]
    from torchvision.transforms.v2 import functional as TF

    ref = TF.resized_crop(img, top, left, h, w, [16, 16], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    assert torch.equal(runs["device"][0].x1[0], TF.horizontal_flip(ref) if flip else ref)
    with pytest.raises(UserError, match="--decode"):
        next(folder_batches(ds, 0, 1, 4, 0, 1, 0, 0, CPU, decode="gpu"))


def test_imagefolder_device_decode_run_resumes_exactly(tmp_path):
    for split in ("train", "val"):
        _folder(tmp_path / "data" / split, per_class=4, png=1, seed=len(split))
    args = [
        *["--dataset", "imagefolder", "--data-dir", str(tmp_path / "data"), "--decode", "device"],
        *["--image-size", "16", "--batch-size", "4", "--max-steps", "4", "--workers", "0", "--log-every", "1"],
        *["--spectrum-every", "0", "--spectrum-samples", "8", "--projector", "mlp", "--backbone", "tiny"],
        *["--no-progress", "--threads", "1", "--no-tensorboard"],
    ]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    assert main([*args, "--out", str(tmp_path / "part"), "--stop-at", "2"]) == 0
    assert main([*args, "--out", str(tmp_path / "part"), "--resume"]) == 0
    a, b = (torch.load(tmp_path / r / "final.pt") for r in ("full", "part"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    import json

    losses = [[json.loads(x)["loss"] for x in open(tmp_path / r / "metrics.jsonl")] for r in ("full", "part")]
    assert losses[0] == losses[1] and len(losses[0]) == 4


def test_decode_flag_defaults_and_bad_value(capsys):
    from empirical.config import build_parser, resolve

    assert resolve(build_parser().parse_args(["--device", "cpu"])).decode == "workers"  # CUDA: device
    assert resolve(build_parser().parse_args(["--device", "cpu", "--decode", "device"])).decode == "device"
    assert main(["--dataset", "imagefolder", "--decode", "gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--decode" in err and "workers" in err, err
