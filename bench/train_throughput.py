"""Training throughput of ``empirical``: the full step (per-sample augmentation included) vs the model alone.

All measured in one run on the same model, interleaved, with the training run of ``empirical.train`` itself
(``build_run`` on a random uint8 dataset on the device; its step: both views' forward, in one call with view-wise
BatchNorm on CUDA, loss, backward, LARS with a 0-d learning-rate tensor that follows the schedule; compiled as a
unit with --compile-mode, eager fallback) and its CUDA settings (cudnn.benchmark, TF32 for fp32; channels-last by
default on CUDA): "full" = uint8 batch on the device -> two augmented views -> the step; "full_prefetch" (with
--prefetch) = the same with the per-sample parameters drawn ahead in a background thread; "model" = the same step
on pre-augmented views (what the step would cost with free data); "augment" = the two views alone. Then the LARS
step alone, vectorized (``optimizer_ms``) and the per-parameter reference loop (``optimizer_loop_ms``), on the same
parameters and gradients. ``mfu``: FLOPs of one step (torch.utils.flop_counter.FlopCounterMode, forward + backward)
x full steps/s over the device's peak: the vendor's dense peak for known GPUs at the run's precision; on a CPU the
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

from dimcollapse.io import run_cli, write_json  # noqa: E402
from empirical.augment import Prefetcher  # noqa: E402
from empirical.config import RunConfig  # noqa: E402
from empirical.data import Batch, Split  # noqa: E402
from empirical.optim import build_optimizer  # noqa: E402
from empirical.train import Data, Run, build_run, lr_tensor, make_views, step_loss, train_step  # noqa: E402
from empirical.viewwise import make_viewwise, stack_views  # noqa: E402

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


def _parser() -> argparse.ArgumentParser:
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
    return p


def _build(args: argparse.Namespace) -> Run:
    """The training's own run (``empirical.train.build_run``) on a random uint8 dataset of 4 batches on the
    device, as the in-memory datasets are during training: LARS, InfoNCE, the trainer's flags for the rest."""
    flags = ["--backbone", args.backbone, "--projector", args.projector, "--batch-size", str(args.batch_size),
             "--image-size", str(args.image_size), "--augment", args.augment, "--optimizer", "lars", "--lr", "0.1",
             "--weight-decay", "1e-6", "--loss", "info_nce", "--epochs", "1000", "--warmup-epochs", "0"]  # fmt: skip
    for flag in ("device", "precision", "threads", "compile_mode"):
        if getattr(args, flag) is not None:
            flags += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    if args.compile and args.compile_mode is None:
        flags.append("--compile")
    if args.channels_last is not None:
        flags.append("--channels-last" if args.channels_last else "--no-channels-last")
    config = RunConfig.from_argv(flags)
    device, b, s = torch.device(config.device), args.batch_size, args.image_size
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4 * b, 3, s, s), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (4 * b,), device=device)
    data = Data(4 * b, 10, Split(images[:2], labels[:2]), images, train=Split(images, labels))
    return build_run(config, device=device, data=data)


def _other_calls(run: Run):
    """The step with the views run the other way (eager): one call where the run takes two, or the reverse."""
    other = copy.deepcopy(run.model)
    if other.one_call:
        other.one_call = False
        make_viewwise(other, 1)
    else:
        stack_views(other)
    opt = build_optimizer("lars", other, 0.1, 1e-6)
    lr_tensor(opt, run.device)
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.config.precision == "fp16")
    return functools.partial(train_step, other, opt, scaler, "info_nce", 0.1, None, run.amp)


def _timers(run: Run, args: argparse.Namespace, pre, other_fn):
    """``time(kind, n)``: seconds for ``n`` steps of one kind (each kind walks its own step sequence)."""
    b, device = args.batch_size, run.device
    images, labels = run.data.train.images, run.data.train.labels[:b]
    next_step: dict = {}
    fixed = _views(run, images, 0, None)

    def time_kind(kind: str, n: int) -> float:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            step = next_step.get(kind, 0)
            next_step[kind] = step + 1
            i = (step % 4) * b
            batch = Batch(step, images[i : i + b], images[i : i + b], labels, cropped=False)
            if kind in ("full", "full_prefetch"):
                run.prefetcher = pre if kind == "full_prefetch" else None
                run.take_step(batch)
            elif kind == "model":
                run.step_fn(*fixed, labels)
            elif kind == "model_other_calls":
                other_fn(*fixed, labels)
            else:
                _views(run, images, step, None)
        _sync(device)
        return time.perf_counter() - t0

    return time_kind, fixed


def _views(run: Run, images: torch.Tensor, step: int, pre) -> list[torch.Tensor]:
    c, b = run.config, run.config.batch_size
    i = (step % 4) * b
    batch = Batch(step, images[i : i + b], images[i : i + b], run.data.train.labels[i : i + b], cropped=False)
    return make_views(batch, run.recipes, c.image_size, c.seed, b, 0, c.channels_last, pre)


def _optimizer_timing(run: Run, opt_steps: int) -> dict:
    """The LARS step alone: vectorized vs the reference loop, same parameters and gradients (the last step's)."""
    vec = build_optimizer("lars", run.model, 0.1, 1e-6, foreach=True)
    loop = build_optimizer("lars", run.model, 0.1, 1e-6, foreach=False)
    for o in (vec, loop):
        o.step()  # warm-up, momentum buffers allocated
    best = {"vec": float("inf"), "loop": float("inf")}
    for _ in range(5):  # interleaved rounds; the best round of each is the least disturbed by other tenants
        for key, o in (("vec", vec), ("loop", loop)):
            _sync(run.device)
            t0 = time.perf_counter()
            for _ in range(opt_steps):
                o.step()
            _sync(run.device)
            best[key] = min(best[key], (time.perf_counter() - t0) / opt_steps)
    return {
        "optimizer_ms": round(1e3 * best["vec"], 4),
        "optimizer_loop_ms": round(1e3 * best["loop"], 4),
        "optimizer_speedup": round(best["loop"] / best["vec"], 2),
        "optimizer_params": sum(len(g["params"]) for g in run.optimizer.param_groups),
    }


def measure(args: argparse.Namespace) -> dict:
    """Every rate of the module docstring, measured in one run on one model, interleaved."""
    run = _build(args)
    c, device, b = run.config, run.device, args.batch_size
    pre = Prefetcher(run.recipes, c.seed, b, 0, b, (c.image_size,) * 2, True, device) if args.prefetch else None
    other_fn = _other_calls(run) if c.compile_mode == "none" else None  # does one call pay on this device?
    time_kind, fixed = _timers(run, args, pre, other_fn)
    flops = _step_flops(run.model, fixed, run.data.train.labels[:b], run.amp, device)
    kinds = ["full"] + (["full_prefetch"] if pre else []) + ["model"] + (["model_other_calls"] if other_fn else [])
    kinds += ["augment"]
    for kind in kinds[:-1]:
        time_kind(kind, args.warmup)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    compile_mode = None if c.compile_mode == "none" else c.compile_mode
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "backbone": c.backbone,
        "projector": c.projector, "batch": b, "image_size": c.image_size, "precision": c.precision,
        "channels_last": c.channels_last, "compile": compile_mode is not None, "compile_mode": compile_mode,
        "prefetch": args.prefetch, "views_in_one_call": run.model.one_call,
    }  # fmt: skip
    # Interleave the measurements so that drifting clocks and noisy neighbours hit all of them alike.
    times = dict.fromkeys(kinds, 0.0)
    for _ in range(2):
        for kind in kinds:
            times[kind] += time_kind(kind, args.steps)
    for kind, t in times.items():
        result[f"{kind}_img_per_s"] = round(2 * args.steps * b / t, 1)
        result[f"{kind}_views_per_s"] = round(4 * args.steps * b / t, 1)
    result["full_over_model"] = round(result["full_img_per_s"] / result["model_img_per_s"], 3)
    if pre:
        result["full_prefetch_over_model"] = round(result["full_prefetch_img_per_s"] / result["model_img_per_s"], 3)
        pre.close()
    if other_fn:  # model-only step rate, both views in one call over two calls (eager, same run)
        rates = (result["model_img_per_s"], result["model_other_calls_img_per_s"])
        result["one_call_over_two_calls"] = round(rates[0] / rates[1] if run.model.one_call else rates[1] / rates[0], 3)
    result["peak_mem_mb"] = round(_peak_mb(device), 1)
    result.update(_optimizer_timing(run, args.opt_steps))
    result.update(_mfu(args, device, c.precision, flops, result, b))
    result["kinds"] = kinds
    return result


def _mfu(args: argparse.Namespace, device: torch.device, precision: str, flops: int, result: dict, b: int) -> dict:
    peak, source = (
        (args.peak_tflops, "--peak-tflops")
        if args.peak_tflops
        else _peak_tflops(device, precision, torch.get_num_threads())
    )
    full_tflops = flops * result["full_img_per_s"] / b / 1e12
    model_tflops = flops * result["model_img_per_s"] / b / 1e12
    return {
        "flops_per_step": flops,
        "full_tflops": round(full_tflops, 4),
        "model_tflops": round(model_tflops, 4),
        "peak_tflops": None if peak is None else round(peak, 4),
        "peak_source": source,
        "mfu": None if peak is None else round(full_tflops / peak, 4),
        "mfu_model": None if peak is None else round(model_tflops / peak, 4),
    }


def report(result: dict) -> None:
    """The measurements as text, then as one JSON line."""
    kinds = result.pop("kinds")
    r = result
    print(
        f"{r['device']}  {r['backbone']}/{r['projector']}  batch {r['batch']}  {r['image_size']}px  {r['precision']}  "
        f"channels_last={r['channels_last']}  compile={r['compile_mode']}  prefetch={r['prefetch']}"
    )
    for kind in kinds:
        print(f"  {kind:17s} {r[f'{kind}_img_per_s']:10.1f} img/s  {r[f'{kind}_views_per_s']:10.1f} views/s")
    print(f"  full/model {r['full_over_model']:.3f}   peak memory {r['peak_mem_mb']:.0f} MiB")
    if "one_call_over_two_calls" in r:
        print(
            f"  views in one call: {r['views_in_one_call']} (model_other_calls: the other way, eager); one call over "
            f"two calls {r['one_call_over_two_calls']:.3f}"
        )
    print(
        f"  LARS step ({r['optimizer_params']} tensors): vectorized {r['optimizer_ms']:.3f} ms, "
        f"loop {r['optimizer_loop_ms']:.3f} ms, ratio {r['optimizer_speedup']:.2f}x"
    )
    mfu = "null" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
    print(
        f"  {r['flops_per_step'] / r['batch'] / 1e9:.3f} GFLOP per image (fwd+bwd, 2 views); full step "
        f"{r['full_tflops']:.3f} TFLOP/s, mfu {mfu}"
    )
    print(f"  peak: {r['peak_source']}")
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    for name in ("batch_size", "image_size", "steps", "warmup", "opt_steps"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    result = measure(args)
    report(result)
    if args.json:
        write_json(args.json, result, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
