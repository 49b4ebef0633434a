"""JPEG input rate for ``--dataset imagefolder``: the trainer's two input paths and the decoders alone.

On a generated folder of JPEGs (smooth random images, ImageNet-like size by default), in one run:

* ``pipeline`` (``--decode workers``): ``empirical.data.folder_batches`` as training runs it (PIL decode + two
  random resized crops + flips in ``--workers`` DataLoader workers, batches moved to the device): image
  pairs/s, worker start included (as at the start of every training run);
* ``device_pipeline`` (``--decode device``): the same function with the workers only reading the files and
  the main process decoding each batch with ``decode_jpeg`` on ``--device`` and cropping there: pairs/s;
* ``pil_decode``: PIL decode alone, one process: images/s;
* ``decode_jpeg``: ``torchvision.io.decode_jpeg`` on a list of encoded files, batched, on ``--device``
  (nvJPEG on CUDA): images/s, file reading excluded (the bytes are read once, ahead).

    python bench/jpeg_decode.py --device cpu --workers 2      (CPU, a few seconds)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dimcollapse.io import write_json  # noqa: E402
from empirical.data import FolderPairs, folder_batches  # noqa: E402


def make_folder(root: str, n: int, height: int, width: int, classes: int = 4, seed: int = 0) -> None:
    """``n`` JPEGs (quality 90) of smooth random colour fields under root/<class>/."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        low = rng.uniform(0, 255, (height // 16 + 1, width // 16 + 1, 3)).astype(np.uint8)
        img = Image.fromarray(low).resize((width, height), Image.BICUBIC)
        d = os.path.join(root, f"c{i % classes}")
        os.makedirs(d, exist_ok=True)
        img.save(os.path.join(d, f"{i:05d}.jpg"), quality=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=256, help="JPEGs in the generated folder")
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--size", type=int, default=224, help="crop size of the training pipeline")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None, help="also write the result as JSON here")
    args = p.parse_args()
    for name in ("images", "height", "width", "size", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.workers < 0:
        p.error(f"--workers must be >= 0, got {args.workers}")
    if args.batch_size > args.images:
        p.error(f"--batch-size {args.batch_size} is larger than --images {args.images}")
    import torchvision
    from PIL import Image
    from torchvision.io import decode_jpeg

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "images": args.images,
        "image_hw": [args.height, args.width],
        "crop": args.size,
        "batch": args.batch_size,
        "workers": args.workers,
    }
    with tempfile.TemporaryDirectory() as root:
        make_folder(root, args.images, args.height, args.width)
        ds = FolderPairs(root, args.size, 0.08)
        steps = args.images // args.batch_size
        decode_jpeg([torchvision.io.read_file(ds.folder.samples[0][0])], device=device)  # nvJPEG handles
        for name, decode in (("pipeline", "workers"), ("device_pipeline", "device")):
            t0 = time.perf_counter()
            for _batch in folder_batches(ds, 0, steps, args.batch_size, 0, 1, 0, args.workers, device, decode):
                pass
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            result[f"{name}_pairs_per_s"] = round(steps * args.batch_size / (time.perf_counter() - t0), 1)

        paths = [path for path, _ in ds.folder.samples]
        t0 = time.perf_counter()
        for path in paths:
            Image.open(path).convert("RGB").load()
        result["pil_decode_img_per_s"] = round(len(paths) / (time.perf_counter() - t0), 1)

        data = [torchvision.io.read_file(path) for path in paths]
        decode_jpeg(data[: args.batch_size], device=device)  # warm-up (nvJPEG handles on CUDA)
        t0 = time.perf_counter()
        for lo in range(0, len(data), args.batch_size):
            decode_jpeg(data[lo : lo + args.batch_size], device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        result["decode_jpeg_img_per_s"] = round(len(data) / (time.perf_counter() - t0), 1)
    print(
        f"{result['device']}  {args.images} JPEGs {args.height}x{args.width}, crops {args.size}, batch "
        f"{args.batch_size}, {args.workers} workers\n"
        f"  --decode workers (PIL decode + 2 crops)      {result['pipeline_pairs_per_s']:9.1f} pairs/s\n"
        f"  --decode device (decode_jpeg + 2 crops)      {result['device_pipeline_pairs_per_s']:9.1f} pairs/s\n"
        f"  PIL decode, one process                      {result['pil_decode_img_per_s']:9.1f} img/s\n"
        f"  torchvision decode_jpeg on {device.type:4s} (batched)   {result['decode_jpeg_img_per_s']:9.1f} img/s"
    )
    print(json.dumps(result))
    if args.json:
        write_json(args.json, result, indent=2)


if __name__ == "__main__":
    main()
