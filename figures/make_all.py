"""Regenerate every figure: ``python -m figures.make_all [--quick] [--jobs N] [--out DIR] [names ...]``.

Each figure is a module in ``FIGURES`` with ``main(quick, out_dir) -> dict``. Figures that draw saved results
(e.g. trained networks from the empirical package) raise ``style.MissingResults`` when those are absent
and are reported as skipped. Independent figures run in parallel worker processes (one BLAS thread each).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

# slowest first, so that parallel workers finish together
FIGURES = (
    "phase_diagram",
    "fig11_depth",
    "fig5_alignment",
    "fig6_singular_values",
    "fig3_strong_augmentation",
    "x_over_time",
    # trained networks: these draw saved results (results/) and never train
    "emp_fig2_embedding_spectrum",
    "emp_fig7b_representation_spectra",
    "emp_fig9_directclr",
    "emp_fig12_d0_sweep",
    "emp_compare_x",
    "emp_compare_frozen",
    "emp_compare_alignment",
    "bridge_growth",
    "bridge_early_warning",
    "bridge_depth",
)


def run_one(name: str, quick: bool, out_dir: str | None) -> tuple[str, str, float]:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from figures import style

    start = time.perf_counter()
    try:
        importlib.import_module(f"figures.{name}").main(quick=quick, out_dir=out_dir)
    except style.MissingResults as err:
        return name, f"skipped ({err})", time.perf_counter() - start
    return name, "ok", time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"figures to make (default: all of {', '.join(FIGURES)})")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds each), for tests")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel figures")
    parser.add_argument("--out", default=None, help="output folder (default figures/out)")
    args = parser.parse_args(argv)
    names = args.names or list(FIGURES)
    unknown = sorted(set(names) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(FIGURES)}")
    start = time.perf_counter()
    print(
        f"making {len(names)} figure(s){' (quick)' if args.quick else ''} with {args.jobs} job(s) ...",
        flush=True,
    )
    failed = 0
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_one, n, args.quick, args.out): n for n in names}
        for done, future in enumerate(as_completed(futures), 1):
            name = futures[future]
            try:
                _, status, seconds = future.result()
            except Exception as err:  # report every figure, then fail
                status, seconds, failed = f"FAILED: {type(err).__name__}: {err}", float("nan"), failed + 1
            print(
                f"[{done}/{len(names)}] {name:<26} {status:<8} {seconds:6.1f} s   "
                f"(elapsed {time.perf_counter() - start:6.1f} s)",
                flush=True,
            )
    print(f"total {time.perf_counter() - start:.1f} s; outputs in {args.out or 'figures/out'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
