"""Benchmarks of the theory package: what a user waits for, as ratios measured within one run.

The workload of every comparison: the official toy code's setup (one 16x16 linear layer, dot-product InfoNCE
with tau = 0.1, both views noised, lr 0.001, 10,000 gd steps, batch 128, init scale 0.5774) at 8 strengths x
5 seeds = 40 configurations, timed as whole processes (imports included):

1. ``python -m theory.phase`` (the batched sweep, float64 and float32) vs the same 40 configurations as 40
   ``python -m theory.simulate`` runs (a few timed, the rest extrapolated; said so in the output) vs a
   per-configuration torch-autograd loop (a few timed, extrapolated) vs, with ``--official PATH``, one run of
   the paper's ``case_1.py`` (its ``.cuda()`` calls dropped, run from a temporary folder). Goals: sweep >= 5x
   faster than one by one; the 40 configurations in less wall time than one official run.
2. The sweep's training kernel in GFLOP/s (the usual route's matmul flops, 6 N^2 d + 8 N d^2 per
   configuration-step, and the fewer the one-layer kernel performs) against this machine's matmul rate
   (1024^2 gemm) on the same number of threads; workers over configuration blocks vs BLAS threads. Goal: >= 50%
   at N = 128, d = 16, 40 configurations.
3. Kept from before: the Eqn-2 gradient at N = 2048, d = 128 vs matmul; ode vs gd evaluations.

    python bench/theory_bench.py [--quick] [--json PATH] [--official PATH/case_1.py] [--device cuda]

``--device cuda`` instead runs the GPU check: 10,000 configurations x 10,000 steps through the torch backend
(views drawn on the device), and records the GPU and torch version.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dimcollapse.io import OneLineParser, write_json  # noqa: E402
from theory import toy  # noqa: E402
from theory.batched import train_batched  # noqa: E402
from theory.dynamics import loss_and_gradients, paper_init, run_gd, run_ode  # noqa: E402
from theory.experiment import SimConfig  # noqa: E402

SETUP = dict(loss="dot", noisy_views=2, lr=0.001, steps=10_000, init="0.5774", samples=128, dim=16)
STRENGTHS = np.linspace(0.0, 3.5, 8)
SEEDS = 5


def flops_per_config_step(n: int = 128, d: int = 16) -> float:
    """Matmul flops of one dot-loss step as usually computed: views through W, s = z z'^T, p z', p^T z, dW."""
    return 6 * n * n * d + 8 * n * d * d


def performed_flops_per_config_step(n: int = 128, d: int = 16) -> float:
    """Matmul flops the one-layer kernel performs: views through W, s, e [x', 1], M = D^T x, W (M + M^T)."""
    return 4 * n * d * d + 2 * n * n * d + 2 * n * n * (d + 1) + 2 * n * d * d + 2 * d**3


def wall(cmd: list[str], threads: int = 1) -> float:
    """Whole-process wall time of a command, with ``threads`` BLAS/OpenMP threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads), "PYTHONPATH": ROOT}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return took


def matmul_rate(dtype: str, threads: int, size: int = 1024, repeats: int = 3) -> float:
    """GFLOP/s of size^2 gemms: ``threads`` Python threads, one BLAS thread each (the sweep's model)."""
    rng = np.random.default_rng(0)
    a = [rng.standard_normal((size, size)).astype(dtype) for _ in range(threads)]
    out = [np.empty_like(x) for x in a]

    def work(i: int) -> None:
        for _ in range(repeats):
            np.matmul(a[i], a[i], out=out[i])

    best = np.inf
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
        for _ in range(3):
            start = time.perf_counter()
            list(pool.map(work, range(threads)))
            best = min(best, time.perf_counter() - start)
    return threads * repeats * 2 * size**3 / best / 1e9


def small_matmul_rate(dtype: str, configs: int = 40, n: int = 128, d: int = 16, repeats: int = 20) -> float:
    """GFLOP/s of the kernel's own product shape, (n x d)(d x n) batched over configurations, one thread."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((configs, n, d)).astype(dtype)
    b = rng.standard_normal((configs, d, n)).astype(dtype)
    out = np.empty((configs, n, n), dtype)
    best = np.inf
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(repeats):
                np.matmul(a, b, out=out)
            best = min(best, time.perf_counter() - start)
    return repeats * configs * 2 * n * n * d / best / 1e9


def bench_kernel(steps: int, configs: tuple[int, int] = (8, 5), rounds: int = 2) -> dict:
    """Training-loop GFLOP/s at N = 128, d = 16, 40 configurations, per thread mode and dtype."""
    base = SimConfig(**{**SETUP, "steps": steps})
    strengths = np.linspace(0.0, 3.5, configs[0])[:, None]
    seeds = np.arange(configs[1])[None, :]
    work = configs[0] * configs[1] * steps * flops_per_config_step()
    modes = {"2 workers over blocks": dict(workers=2, blas_threads=1),
             "1 worker, 2 BLAS threads": dict(workers=1, blas_threads=2),
             "1 worker": dict(workers=1, blas_threads=1)}
    out: dict = {"configurations": configs[0] * configs[1], "steps": steps,
                 "flops_per_configuration_step": flops_per_config_step(),
                 "performed_flops_per_configuration_step": performed_flops_per_config_step(), "modes": {}}
    for dtype in ("float64", "float32"):
        rate = {t: matmul_rate(dtype, t) for t in (1, 2)}
        out[f"{dtype}_matmul_gflops_kernel_shape_1_thread"] = small_matmul_rate(dtype)
        for name, kw in modes.items():
            times = []
            for _ in range(rounds):  # best of several: the machine is shared
                start = time.perf_counter()
                train_batched(strengths, base, seeds=seeds, dtype=dtype, **kw)
                times.append(time.perf_counter() - start)
            used = kw["workers"] * kw["blas_threads"]
            gflops = work / min(times) / 1e9
            rate_now = max(rate[used], matmul_rate(dtype, used))  # the higher of before/after: conservative
            performed = gflops * performed_flops_per_config_step() / flops_per_config_step()
            out["modes"][f"{dtype}, {name}"] = {
                "seconds": min(times), "gflops": gflops, "matmul_gflops_same_threads": rate_now,
                "fraction_of_matmul": gflops / rate_now, "performed_gflops": performed,
                "performed_fraction_of_matmul": performed / rate_now,
                "microseconds_per_configuration_step": min(times) / (work / flops_per_config_step()) * 1e6,
            }
    return out


def torch_loop(configs: int, steps: int) -> float:
    """Seconds for ``configs`` configurations trained one after another by a plain torch-autograd loop."""
    import torch

    torch.set_num_threads(1)
    mask = torch.from_numpy(toy.augmentation_mask(16, 8))
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for c in range(configs):
        s = float(STRENGTHS[c % len(STRENGTHS)])
        w = (0.5774 / 4.0 * torch.randn(16, 16, generator=gen, dtype=torch.float64)).requires_grad_(True)
        for _ in range(steps):
            x = torch.randn(128, 16, generator=gen, dtype=torch.float64)
            x1 = x + s * mask * torch.randn(128, 16, generator=gen, dtype=torch.float64)
            x2 = x + s * mask * torch.randn(128, 16, generator=gen, dtype=torch.float64)
            logits = (x1 @ w.T) @ (x2 @ w.T).T / 0.1
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(128))
            (grad,) = torch.autograd.grad(loss, w)
            with torch.no_grad():
                w -= 0.001 * grad
    return time.perf_counter() - start


def official_run(path: str, steps_note: str) -> dict:
    """One run of the paper's case_1.py on the CPU: a copy in a temporary folder with ``.cuda()`` removed."""
    with open(path) as f:
        source = f.read()
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "case_1_cpu.py")
        with open(script, "w") as f:
            f.write(source.replace(".cuda()", ""))
        seconds = wall([sys.executable, script, "--noise", "3.0"])
    return {"seconds": seconds, "command": f"case_1.py --noise 3.0 (.cuda() removed), 1 thread; {steps_note}"}


def bench_users(quick: bool, official: str | None) -> dict:
    """Whole-process wall times of the 40-configuration workload, all in this one run."""
    steps = 50 if quick else SETUP["steps"]
    py = sys.executable
    phase = [py, "-m", "theory.phase", "--loss", "dot", "--noisy-views", "2", "--lrs", "0.001", "--steps",
             str(steps), "--init", "0.5774", "--strengths", "0:3.5:8", "--seeds", str(SEEDS), "--no-plot"]
    tmp = tempfile.mkdtemp()
    res: dict = {"steps": steps, "configurations": len(STRENGTHS) * SEEDS, "load_average_before": os.getloadavg()}
    sweep_f64 = wall([*phase, "--out", tmp])
    sweep_f32 = wall([*phase, "--dtype", "float32", "--out", tmp])
    timed = 1 if quick else 3
    singles = [wall([py, "-m", "theory.simulate", "--loss", "dot", "--noisy-views", "2", "--lr", "0.001",
                     "--steps", str(steps), "--init", "0.5774", "--augment-strength", f"{s:g}", "--seed", str(r),
                     "--quiet"]) for s, r in zip(STRENGTHS[:: len(STRENGTHS) // timed][:timed], range(timed),
                                                 strict=True)]
    torch_configs = 1 if quick else 4
    torch_import = wall([py, "-c", "import torch"])
    torch_seconds = torch_loop(torch_configs, steps)
    if not quick:  # again, interleaved: the load of the shared machine drifts
        sweep_f64 = min(sweep_f64, wall([*phase, "--out", tmp]))
        sweep_f32 = min(sweep_f32, wall([*phase, "--dtype", "float32", "--out", tmp]))
    one_by_one = float(np.median(singles)) * res["configurations"]
    torch_all = torch_import + torch_seconds / torch_configs * res["configurations"]
    res.update({
        "sweep_float64_seconds": sweep_f64,
        "sweep_float32_seconds": sweep_f32,
        "sweep_command": " ".join(phase[1:]) + " [--dtype float32] (with X's predictions, 2 threads)",
        "simulate_seconds_timed": singles,
        "simulate_40_seconds_extrapolated": one_by_one,
        "simulate_note": f"{timed} of the 40 theory.simulate runs timed; 40 x their median",
        "torch_autograd_40_seconds_extrapolated": torch_all,
        "torch_note": f"{torch_configs} configurations timed in-process (1 thread), scaled to 40, plus a torch "
                      "import",
        "speedup_vs_one_by_one_float64": one_by_one / sweep_f64,
        "speedup_vs_one_by_one_float32": one_by_one / sweep_f32,
        "speedup_vs_torch_loop_float64": torch_all / sweep_f64,
    })
    if official:
        res["official_case_1"] = official_run(official, "10,000 steps, batch 128")
        res["official_over_sweep_float64"] = res["official_case_1"]["seconds"] / sweep_f64
        res["official_over_sweep_float32"] = res["official_case_1"]["seconds"] / sweep_f32
        res["per_configuration_throughput_vs_official_float32"] = \
            res["configurations"] * res["official_case_1"]["seconds"] / sweep_f32
    else:
        res["official_case_1"] = {"seconds": 15.4, "note": "not run here: the reference time of one official "
                                  "case_1.py --noise 3.0 run on this machine type (1 thread), from earlier"}
    res["load_average_after"] = os.getloadavg()
    return res


def bench_gradient_kernel(n: int = 2048, d: int = 128, repeats: int = 5, threads: int = 1) -> dict:
    """GFLOP/s of one-layer Eqn-2 loss_and_gradients vs numpy's matmul rate on comparable shapes."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d))
    x_aug = x + rng.standard_normal((n, d))
    w = rng.standard_normal((d, d)) / np.sqrt(d) * 0.3
    flops = 6 * n * n * d + 8 * n * d * d

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    a, b = rng.standard_normal((n, d)), rng.standard_normal((d, n))
    c = rng.standard_normal((n, n))
    with threadpool_limits(limits=threads, user_api="blas"):
        kernel = best(lambda: loss_and_gradients([w], x, x_aug))
        matmul = best(lambda: (a @ b, c @ a))
    rate = 2 * n * n * d * 2 / matmul / 1e9
    achieved = flops / kernel / 1e9
    return {"n": n, "d": d, "blas_threads": threads, "kernel_seconds": kernel, "kernel_gflops": achieved,
            "numpy_matmul_gflops": rate, "fraction_of_matmul": achieved / rate}


def bench_ode_vs_gd(time_horizon: float = 2.0, dim: int = 16, samples: int = 128) -> dict:
    """Gradient evaluations needed to match a fine reference's final singular values to 1e-3."""
    rng = np.random.default_rng(0)
    views = toy.toy_views(rng, samples, dim, 8, 2.0, 1)
    w0 = paper_init(dim, 2, rng)
    ref = run_ode(w0, time_horizon, views=views, rtol=1e-11, atol=1e-13, records=1, method="DOP853")

    def error(traj) -> float:
        return max(
            float(np.max(np.abs(np.linalg.svd(a, compute_uv=False) - np.linalg.svd(b, compute_uv=False))
                         / np.linalg.svd(b, compute_uv=False)))
            for a, b in zip(traj.final, ref.final, strict=True)
        )

    ode = run_ode(w0, time_horizon, views=views, rtol=1e-5, atol=1e-8, records=1)
    ode_err = error(ode)
    gd_steps, gd_err = 25, np.inf
    while gd_err > 1e-3 and gd_steps < 2_000_000:
        gd_steps *= 2
        gd = run_gd(w0, gd_steps, time_horizon / gd_steps, views, record_every=gd_steps)
        gd_err = error(gd)
    return {"time": time_horizon, "layers": 2, "ode_evaluations": ode.gradient_evaluations,
            "ode_relative_error": ode_err, "gd_evaluations": gd_steps, "gd_relative_error": gd_err,
            "evaluation_ratio": gd_steps / ode.gradient_evaluations}


def bench_gpu(device: str, configs: int, steps: int, dtype: str) -> dict:
    """The torch backend on a GPU: ``configs`` configurations x ``steps`` steps, views drawn on the device."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: torch sees no CUDA device here")
    seeds = max(1, configs // len(STRENGTHS))
    base = SimConfig(**{**SETUP, "steps": steps})
    strengths = np.linspace(0.0, 3.5, configs // seeds)[:, None]
    train_batched(strengths[:2], SimConfig(**{**SETUP, "steps": 10}), seeds=np.arange(2)[None, :],
                  backend="torch", device=device, dtype=dtype, views="torch")  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    traj, _ = train_batched(strengths, base, seeds=np.arange(seeds)[None, :], backend="torch", device=device,
                            dtype=dtype, views="torch")
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    count = strengths.size * seeds
    return {"device": torch.cuda.get_device_name() if device.startswith("cuda") else device,
            "torch": torch.__version__, "dtype": dtype, "configurations": count, "steps": steps,
            "seconds": seconds, "configuration_steps_per_second": count * steps / seconds,
            "gflops": count * steps * flops_per_config_step() / seconds / 1e9,
            "diverged": int(np.isfinite(traj.info["diverged_at"]).sum())}


def main() -> None:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run in seconds, not a measurement)")
    p.add_argument("--json", metavar="PATH", help="also write the results as strict JSON")
    p.add_argument("--official", metavar="PATH", help="the paper's toy_task/case_1.py, to time one run of it")
    p.add_argument("--device", default=None, help="run the GPU check on this torch device instead (e.g. cuda)")
    p.add_argument("--gpu-configs", type=int, default=10_000, help="configurations of the GPU check")
    p.add_argument("--gpu-steps", type=int, default=10_000, help="steps of the GPU check")
    p.add_argument("--gpu-dtype", choices=("float32", "float64"), default="float32")
    args = p.parse_args()
    if args.official and not os.path.isfile(args.official):
        p.error(f"--official {args.official}: no such file")
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                     "numpy": np.__version__, "python": platform.python_version(),
                     "quick": args.quick, "load_average_start": os.getloadavg()}
    if args.device:
        configs, steps = (16, 50) if args.quick else (args.gpu_configs, args.gpu_steps)
        try:
            results["gpu"] = bench_gpu(args.device, configs, steps, args.gpu_dtype)
        except RuntimeError as err:  # no such device here
            p.error(str(err))
        print(json.dumps(results["gpu"], indent=1))
    else:
        print("1/4 the 40-configuration workload, whole processes ...", flush=True)
        results["workload"] = bench_users(args.quick, args.official)
        print(json.dumps(results["workload"], indent=1), flush=True)
        print("2/4 sweep kernel GFLOP/s vs matmul ...", flush=True)
        results["sweep_kernel"] = bench_kernel(*((20, (8, 5), 1) if args.quick else (3000, (8, 5), 2)))
        print(json.dumps(results["sweep_kernel"], indent=1), flush=True)
        print("3/4 Eqn-2 gradient N=2048 d=128 ...", flush=True)
        results["gradient_kernel"] = bench_gradient_kernel(*((256, 32, 2) if args.quick else (2048, 128, 5)))
        print(json.dumps(results["gradient_kernel"], indent=1), flush=True)
        print("4/4 ode vs gd ...", flush=True)
        results["ode_vs_gd"] = bench_ode_vs_gd(0.5 if args.quick else 2.0)
        print(json.dumps(results["ode_vs_gd"], indent=1))
    results["load_average_end"] = os.getloadavg()
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
