"""Benchmarks of the theory package, each a ratio measured within one run (the machine is noisy).

1. Batched sweep vs a straightforward per-configuration torch-autograd implementation of Eqn 2, same
   configurations and step count (goal: >= 5x the throughput).
2. Gradient kernel at N = 2048, d = 128: achieved GFLOP/s as a fraction of numpy's matmul rate measured
   in the same run (goal: >= 40%).
3. ``ode`` vs ``gd``: gradient evaluations to reach the final spectrum of a fine reference within a
   relative error of 1e-3 (goal: >= 10x fewer for ``ode``).

    python bench/theory_bench.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from theory import toy  # noqa: E402
from theory.dynamics import loss_and_gradients, paper_init, run_gd, run_ode  # noqa: E402


def bench_sweep(configs: int, steps: int, samples: int = 128, dim: int = 16) -> dict:
    """config-steps per second: one batched numpy call vs a torch-autograd loop over configurations."""
    import torch

    torch.set_num_threads(1)
    strengths = np.linspace(0.0, 3.0, configs)
    rng = np.random.default_rng(0)
    weights = paper_init(dim, 1, rng, (configs,))

    def views(r: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return toy.toy_views(r, samples, dim, 8, strengths, 1, (configs,))

    def numpy_run() -> float:
        start = time.perf_counter()
        run_gd(weights, steps, 0.02, views, rng, record_every=steps)
        return time.perf_counter() - start

    def torch_loss(w: torch.Tensor, x: torch.Tensor, x_aug: torch.Tensor) -> torch.Tensor:
        """Eqn 2 written directly: logits -|z_i - z_j|^2/2, positive on the diagonal, batch mean."""
        z, z_aug = x @ w.T, x_aug @ w.T
        logits = -0.5 * torch.cdist(z, z) ** 2
        positive = -0.5 * ((z - z_aug) ** 2).sum(1)
        logits = logits - torch.diag(torch.diagonal(logits)) + torch.diag(positive)
        return (torch.logsumexp(logits, 1) - positive).mean()

    mask = torch.from_numpy(toy.augmentation_mask(dim, 8))
    gen = torch.Generator().manual_seed(0)

    def torch_run() -> float:
        start = time.perf_counter()
        for s in strengths:
            w = torch.from_numpy(paper_init(dim, 1, np.random.default_rng(1))[0]).requires_grad_(True)
            for _ in range(steps):
                x = torch.randn(samples, dim, generator=gen, dtype=torch.float64)
                x_aug = x + float(s) * mask * torch.randn(samples, dim, generator=gen, dtype=torch.float64)
                (grad,) = torch.autograd.grad(torch_loss(w, x, x_aug), w)
                with torch.no_grad():
                    w -= 0.02 * grad
        return time.perf_counter() - start

    # interleaved, best of two each: the machine's load drifts between measurements
    with threadpool_limits(limits=1, user_api="blas"):
        numpy_times, torch_times = zip(*[(numpy_run(), torch_run()) for _ in range(2)], strict=True)
    numpy_time, torch_time = min(numpy_times), min(torch_times)
    work = configs * steps
    return {
        "configs": configs, "steps": steps, "samples": samples, "dim": dim,
        "numpy_batched_config_steps_per_s": work / numpy_time,
        "torch_autograd_loop_config_steps_per_s": work / torch_time,
        "speedup": torch_time / numpy_time,
    }


def bench_kernel(n: int = 2048, d: int = 128, repeats: int = 5, threads: int = 1) -> dict:
    """GFLOP/s of one-layer loss_and_gradients vs numpy's own matmul rate on comparable shapes.

    Both run with the same number of BLAS threads (1 by default: on this shared 2-core machine a second
    thread mostly measures the neighbours' load).
    """
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d))
    x_aug = x + rng.standard_normal((n, d))
    w = rng.standard_normal((d, d)) / np.sqrt(d) * 0.3
    # matmul work: two views through W (2 * 2N d^2), the Gram matrix (2 N^2 d), alpha z and alpha^T z
    # (4 N^2 d), the weight gradient of both views (2 * 2N d^2)
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
    matmul_flops = 2 * n * n * d * 2
    rate = matmul_flops / matmul / 1e9
    achieved = flops / kernel / 1e9
    return {
        "n": n, "d": d, "blas_threads": threads, "kernel_seconds": kernel, "kernel_gflops": achieved,
        "numpy_matmul_gflops": rate, "fraction_of_matmul": achieved / rate,
    }


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
    return {
        "time": time_horizon, "layers": 2,
        "ode_evaluations": ode.gradient_evaluations, "ode_relative_error": ode_err,
        "gd_evaluations": gd_steps, "gd_relative_error": gd_err,
        "evaluation_ratio": gd_steps / ode.gradient_evaluations,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not a measurement)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args()
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "numpy": np.__version__}
    print("1/3 batched sweep vs torch autograd ...", flush=True)
    results["sweep"] = bench_sweep(*((4, 20) if args.quick else (32, 300)))
    print(json.dumps(results["sweep"], indent=1))
    print("2/3 gradient kernel N=2048 d=128 ...", flush=True)
    results["kernel"] = bench_kernel(*((256, 32, 2) if args.quick else (2048, 128, 5)))
    print(json.dumps(results["kernel"], indent=1))
    print("3/3 ode vs gd ...", flush=True)
    results["ode_vs_gd"] = bench_ode_vs_gd(0.5 if args.quick else 2.0)
    print(json.dumps(results["ode_vs_gd"], indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
