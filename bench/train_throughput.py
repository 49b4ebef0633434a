"""Training throughput of ``empirical``: the full step (per-sample augmentation included) vs the model alone.

All measured in one run on the same model, interleaved, with the training step of ``empirical.train`` itself
(``train_step``: both views' forward, in one call with view-wise BatchNorm on CUDA, loss, backward, LARS with
a 0-d learning-rate tensor; compiled as a unit with --compile-mode, eager fallback) and its CUDA settings
(cudnn.benchmark, TF32 for fp32; channels-last by default on CUDA): "full" = uint8 batch on the device -> two
augmented views -> the step; "full_prefetch" (with --prefetch) = the same with the per-sample parameters drawn
ahead in a background thread; "model" = the same step on pre-augmented views (what the step
would cost with free data); "augment" = the two views alone. Then the LARS step alone, vectorized
(``optimizer_ms``) and the per-parameter reference loop (``optimizer_loop_ms``), on the same parameters and
gradients. ``mfu``: FLOPs of one step (torch.utils.flop_counter.FlopCounterMode, forward + backward) x full
steps/s over the device's peak: the vendor's dense peak for known GPUs at the run's precision; on a CPU the
rate of a large matmul at the run's precision measured in the same run (so there "mfu" is the fraction of this
CPU's matmul rate); null with a reason when neither is known (--peak-tflops sets it).

    python bench/train_throughput.py --backbone tiny --batch-size 64 --device cpu --threads 2    (CPU, ~1 min)
    python bench/train_throughput.py --backbone resnet18 --batch-size 512 --precision bf16 \
        [--compile-mode default|reduce-overhead|max-autotune] [--prefetch]

Images/s count source images (each gives 2 views); views/s = 2 x images/s. Peak memory: CUDA allocator peak
on GPUs, process max RSS on CPUs.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from empirical.augment import Prefetcher, augment_packed, recipe  # noqa: E402
from empirical.data import Batch  # noqa: E402
from empirical.models import SSLModel  # noqa: E402
from empirical.optim import build_optimizer  # noqa: E402
from empirical.train import (  # noqa: E402
    AMP,
    CompiledOrEager,
    cuda_settings,
    lr_tensor,
    make_views,
    step_loss,
    train_step,
    views_in_one_call,
)
from empirical.viewwise import make_viewwise, stack_views  # noqa: E402
from theory.io import write_json  # noqa: E402

# Vendor dense peaks in TFLOP/s (bf16/fp16 tensor cores; tf32 is half). First match of the device name wins.
GPU_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_tflops(device: torch.device, precision: str, threads: int) -> tuple[float | None, str]:
    """(peak TFLOP/s, where it comes from) for the MFU denominator."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in GPU_PEAK_TFLOPS:
            if key in name:
                peak = tflops if precision in ("bf16", "fp16") else tflops / 2  # fp32 runs as TF32 here
                return peak, f"vendor dense {precision} peak of {key}"
        return None, f"no peak known for {name!r}; pass --peak-tflops"
    if device.type != "cpu":
        return None, f"no peak known for device {device.type}; pass --peak-tflops"
    n, reps = 1024, 8
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(5):  # the best of 5 rounds: a peak, not an average under load
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, time.perf_counter() - t0)
    rate = 2 * n**3 * reps / best / 1e12
    return rate, f"measured {precision} {n}x{n} matmul rate of this CPU, {threads} threads, same run"


def _step_flops(model, views, labels, amp, device) -> int:
    """FLOPs of one forward + backward of the eager model on two views (matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            ssl, probe, _, _ = step_loss(model, *views, labels, "infonce", 0.1)
        (ssl + probe).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="tiny", choices=("tiny", "resnet18", "resnet50"))
    p.add_argument("--projector", default="mlp")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--precision", default=None, choices=("bf16", "fp16", "fp32"))
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels-last memory format (default: on for CUDA, off for CPU, as training)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the training step (mode: --compile-mode)")
    p.add_argument(
        "--compile-mode",
        default=None,
        choices=("default", "reduce-overhead", "max-autotune"),
        help="torch.compile mode (implies --compile); reduce-overhead captures CUDA graphs",
    )
    p.add_argument("--prefetch", action="store_true", help="also time the full step with parameters drawn ahead")
    p.add_argument("--device", default=None)
    p.add_argument("--augment", default="paper", choices=("paper", "simclr"))
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile, cudnn autotune)")
    p.add_argument("--opt-steps", type=int, default=20, help="LARS steps per timed round (best of 5 rounds)")
    p.add_argument("--peak-tflops", type=float, default=None, help="MFU denominator (default: see above)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the result as JSON here")
    args = p.parse_args()
    for name in ("batch_size", "image_size", "steps", "warmup", "opt_steps"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    compile_mode = args.compile_mode or ("default" if args.compile else None)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.channels_last is None:
        args.channels_last = device.type == "cuda"
    cuda_settings(device)
    torch.manual_seed(0)
    b, s = args.batch_size, args.image_size
    model = SSLModel(args.backbone, args.projector, None, s <= 64, num_classes=10).to(device)
    views_in_one_call(model, device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer("lars", model, 0.1, 1e-6)
    lr_tensor(opt, device)
    amp = AMP[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    step_fn = CompiledOrEager(
        functools.partial(train_step, model, opt, scaler, "info_nce", 0.1, None, amp),
        compile_mode or "none",
        restore=(model, opt, scaler),
    )
    other_fn = None
    if compile_mode is None:  # the other way of running the views (eager): does one call pay on this device?
        other = copy.deepcopy(model)
        if other.one_call:
            other.one_call = False
            make_viewwise(other, 1)
        else:
            stack_views(other)
        opt2 = build_optimizer("lars", other, 0.1, 1e-6)
        lr_tensor(opt2, device)
        scaler2 = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        other_fn = functools.partial(train_step, other, opt2, scaler2, "info_nce", 0.1, None, amp)
    recipes = recipe(args.augment, 1.0, s)
    # A uint8 "dataset" already on the device, as the in-memory datasets are during training.
    data = torch.randint(0, 256, (4 * b, 3, s, s), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (4 * b,), device=device)
    pre = Prefetcher(recipes, 0, b, 0, b, (s, s), True, device) if args.prefetch else None

    def views(step: int, prefetched: bool = False):
        i = (step % 4) * b
        x = data[i : i + b]
        if not prefetched:
            return make_views(
                Batch(step, x, x, labels[i : i + b], cropped=False), recipes, s, 0, b, 0, args.channels_last
            )
        out = [augment_packed(x, q, s, crop=True) for q in pre.get(step)]
        return [v.contiguous(memory_format=torch.channels_last) for v in out] if args.channels_last else out

    fixed = views(0)
    flops = _step_flops(model, fixed, labels[:b], amp, device)
    next_step = {"full": 0, "full_prefetch": 0, "augment": 0}  # each kind walks its own step sequence

    def run(kind: str, n: int) -> float:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            step = next_step.get(kind, 0)
            next_step[kind] = step + 1
            if kind == "full":
                step_fn(*views(step), labels[:b])
            elif kind == "full_prefetch":
                step_fn(*views(step, prefetched=True), labels[:b])
            elif kind == "model":
                step_fn(*fixed, labels[:b])
            elif kind == "model_other_calls":
                other_fn(*fixed, labels[:b])
            else:
                views(step)
        _sync(device)
        return time.perf_counter() - t0

    kinds = ["full"] + (["full_prefetch"] if pre else []) + ["model"] + (["model_other_calls"] if other_fn else [])
    kinds += ["augment"]
    for kind in kinds[:-1]:
        run(kind, args.warmup)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "backbone": args.backbone,
        "projector": args.projector,
        "batch": b,
        "image_size": s,
        "precision": precision,
        "channels_last": args.channels_last,
        "compile": compile_mode is not None,
        "compile_mode": compile_mode,
        "prefetch": args.prefetch,
        "views_in_one_call": model.one_call,
    }
    # Interleave the measurements so that drifting clocks and noisy neighbours hit all of them alike.
    times = dict.fromkeys(kinds, 0.0)
    for _ in range(2):
        for kind in kinds:
            times[kind] += run(kind, args.steps)
    n = 2 * args.steps
    for kind, t in times.items():
        result[f"{kind}_img_per_s"] = round(n * b / t, 1)
        result[f"{kind}_views_per_s"] = round(2 * n * b / t, 1)
    result["full_over_model"] = round(result["full_img_per_s"] / result["model_img_per_s"], 3)
    if pre:
        result["full_prefetch_over_model"] = round(result["full_prefetch_img_per_s"] / result["model_img_per_s"], 3)
        pre.close()
    if other_fn:  # model-only step rate, both views in one call over two calls (eager, same run)
        rates = (result["model_img_per_s"], result["model_other_calls_img_per_s"])
        result["one_call_over_two_calls"] = round(rates[0] / rates[1] if model.one_call else rates[1] / rates[0], 3)
    result["peak_mem_mb"] = round(_peak_mb(device), 1)

    # The LARS step alone: vectorized vs the reference loop, same parameters and gradients (from the last step).
    vec = build_optimizer("lars", model, 0.1, 1e-6, foreach=True)
    loop = build_optimizer("lars", model, 0.1, 1e-6, foreach=False)
    for o in (vec, loop):
        o.step()  # warm-up, momentum buffers allocated
    best = {"vec": float("inf"), "loop": float("inf")}
    for _ in range(5):  # interleaved rounds; the best round of each is the least disturbed by other tenants
        for key, o in (("vec", vec), ("loop", loop)):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(args.opt_steps):
                o.step()
            _sync(device)
            best[key] = min(best[key], (time.perf_counter() - t0) / args.opt_steps)
    result["optimizer_ms"] = round(1e3 * best["vec"], 4)
    result["optimizer_loop_ms"] = round(1e3 * best["loop"], 4)
    result["optimizer_speedup"] = round(best["loop"] / best["vec"], 2)
    result["optimizer_params"] = sum(len(g["params"]) for g in opt.param_groups)

    peak, source = (
        (args.peak_tflops, "--peak-tflops")
        if args.peak_tflops
        else _peak_tflops(device, precision, torch.get_num_threads())
    )
    full_tflops = flops * result["full_img_per_s"] / b / 1e12
    model_tflops = flops * result["model_img_per_s"] / b / 1e12
    result["flops_per_step"] = flops
    result["full_tflops"] = round(full_tflops, 4)
    result["model_tflops"] = round(model_tflops, 4)
    result["peak_tflops"] = None if peak is None else round(peak, 4)
    result["peak_source"] = source
    result["mfu"] = None if peak is None else round(full_tflops / peak, 4)
    result["mfu_model"] = None if peak is None else round(model_tflops / peak, 4)

    print(
        f"{result['device']}  {args.backbone}/{args.projector}  batch {b}  {s}px  {precision}  "
        f"channels_last={args.channels_last}  compile={compile_mode}  prefetch={args.prefetch}"
    )
    for kind in kinds:
        img, vs = result[f"{kind}_img_per_s"], result[f"{kind}_views_per_s"]
        print(f"  {kind:17s} {img:10.1f} img/s  {vs:10.1f} views/s")
    print(f"  full/model {result['full_over_model']:.3f}   peak memory {result['peak_mem_mb']:.0f} MiB")
    if other_fn:
        print(
            f"  views in one call: {model.one_call} (model_other_calls: the other way, eager); one call over two "
            f"calls {result['one_call_over_two_calls']:.3f}"
        )
    print(
        f"  LARS step ({result['optimizer_params']} tensors): vectorized {result['optimizer_ms']:.3f} ms, "
        f"loop {result['optimizer_loop_ms']:.3f} ms, ratio {result['optimizer_speedup']:.2f}x"
    )
    mfu = "null" if result["mfu"] is None else f"{100 * result['mfu']:.1f}%"
    print(f"  {flops / b / 1e9:.3f} GFLOP per image (fwd+bwd, 2 views); full step {full_tflops:.3f} TFLOP/s, mfu {mfu}")
    print(f"  peak: {source}")
    print(json.dumps(result))
    if args.json:
        write_json(args.json, result, indent=2)


if __name__ == "__main__":
    main()
