"""Training throughput of ``empirical``: the full step (per-sample augmentation included) vs the model alone.

Both are measured in one run on the same model: "full" = uint8 batch on the device -> two augmented views ->
forward/backward/LARS step; "model" = the same step on pre-augmented views (what the step would cost with
free data); "augment" = the two views alone. The issue's goal on a GPU: full >= 90% of model.

    python bench/train_throughput.py --backbone tiny --batch-size 64 --device cpu          (CPU, seconds)
    python bench/train_throughput.py --backbone resnet18 --batch-size 512 --precision bf16 --channels-last

Images/s count source images (each gives 2 views); views/s = 2 x images/s. Peak memory: CUDA allocator peak
on GPUs, process max RSS on CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from empirical.augment import recipe  # noqa: E402
from empirical.data import Batch  # noqa: E402
from empirical.models import SSLModel  # noqa: E402
from empirical.optim import build_optimizer  # noqa: E402
from empirical.train import AMP, make_views, step_loss  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="tiny", choices=("tiny", "resnet18", "resnet50"))
    p.add_argument("--projector", default="mlp")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--precision", default=None, choices=("bf16", "fp16", "fp32"))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default=None)
    p.add_argument("--augment", default="paper", choices=("paper", "simclr"))
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile, cudnn autotune)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the result as JSON here")
    args = p.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    b, s = args.batch_size, args.image_size
    model = SSLModel(args.backbone, args.projector, None, s <= 64, num_classes=10).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer("lars", model, 0.1, 1e-6)
    fwd = torch.compile(model) if args.compile else model
    amp = AMP[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    recipes = recipe(args.augment, 1.0, s)
    # A uint8 "dataset" already on the device, as the in-memory datasets are during training.
    data = torch.randint(0, 256, (4 * b, 3, s, s), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (4 * b,), device=device)

    def views(step: int):
        i = (step % 4) * b
        batch = Batch(step, data[i : i + b], data[i : i + b], labels[i : i + b], cropped=False)
        return make_views(batch, recipes, s, 0, b, 0, args.channels_last)

    def train_step(v1, v2, y):
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            ssl, probe, _, _ = step_loss(fwd, v1, v2, y, "infonce", 0.1)
        opt.zero_grad(set_to_none=True)
        scaler.scale(ssl + probe).backward()
        scaler.step(opt)
        scaler.update()
        return ssl

    fixed = views(0)

    def run(kind: str, n: int) -> float:
        _sync(device)
        t0 = time.perf_counter()
        for step in range(n):
            if kind == "full":
                v1, v2 = views(step)
                train_step(v1, v2, labels[:b])
            elif kind == "model":
                train_step(*fixed, labels[:b])
            else:
                views(step)
        _sync(device)
        return time.perf_counter() - t0

    for kind in ("full", "model"):
        run(kind, args.warmup)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "backbone": args.backbone,
        "projector": args.projector,
        "batch": b,
        "image_size": s,
        "precision": precision,
        "channels_last": args.channels_last,
        "compile": args.compile,
    }
    # Interleave the measurements so that drifting clocks and noisy neighbours hit all of them alike.
    times = {"full": 0.0, "model": 0.0, "augment": 0.0}
    for _ in range(2):
        for kind in times:
            times[kind] += run(kind, args.steps)
    n = 2 * args.steps
    for kind, t in times.items():
        result[f"{kind}_img_per_s"] = round(n * b / t, 1)
        result[f"{kind}_views_per_s"] = round(2 * n * b / t, 1)
    result["full_over_model"] = round(result["full_img_per_s"] / result["model_img_per_s"], 3)
    result["peak_mem_mb"] = round(_peak_mb(device), 1)
    print(
        f"{result['device']}  {args.backbone}/{args.projector}  batch {b}  {s}px  {precision}  "
        f"channels_last={args.channels_last}  compile={args.compile}"
    )
    for kind in times:
        img, views = result[f"{kind}_img_per_s"], result[f"{kind}_views_per_s"]
        print(f"  {kind:8s} {img:10.1f} img/s  {views:10.1f} views/s")
    print(f"  full/model {result['full_over_model']:.3f}   peak memory {result['peak_mem_mb']:.0f} MiB")
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
