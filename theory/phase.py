"""Dense collapse phase diagrams: collapsed dimensions over augmentation strength x width x depth x lr.

    python -m theory.phase --strengths 0:4:17 --lrs 0.01,0.02 --widths 16 --depths 1,2 --seeds 4 --out phase

Every (width, depth) pair is one batched sweep (``theory.sweep``: strengths x lrs x seeds trained together,
seed r giving ``theory.simulate --seed r``'s run). Writes ``<out>/phase.json`` (strict JSON; arrays indexed
[width, depth, strength, lr, seed], -1 where a network diverged) and a heat map ``<out>/phase.png`` / ``.pdf``:
mean collapsed dimensions over seeds, per panel strength x lr, beside the count at t = 0 (the baseline).
A grid value is a comma list (``0,0.5,2``) or ``start:stop:count`` (evenly spaced, both ends included).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

from dimcollapse.io import OneLineParser, UserError, atomic_path, check_budget, run_cli, write_json

from .batched import BACKENDS, DTYPES, sweep
from .experiment import SimConfig
from .losses import SWEEP_LOSSES, TEMPERATURE_LOSSES, loss_help

MAX_GRID_VALUES = 1_000_000  # per axis: a start:stop:count beyond this is refused before it is materialised


def grid(text: str) -> list[float]:
    """'a,b,c' or 'start:stop:count' -> values; argparse type (one-line error on bad input)."""
    try:
        if ":" in text:
            start, stop, count = text.split(":")
            if int(count) < 1:
                raise ValueError
            if int(count) > MAX_GRID_VALUES:
                raise argparse.ArgumentTypeError(
                    f"{text!r} asks for {int(count)} values: at most {MAX_GRID_VALUES} per axis")
            values = np.linspace(float(start), float(stop), int(count)).tolist()
        else:
            values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a grid: give a comma list (0,0.5,2) or start:stop:count (0:4:17)") from None
    return values


def positive_ints(text: str) -> list[int]:
    values = grid(text)
    if any(v < 1 or v != int(v) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be a whole number >= 1")
    return [int(v) for v in values]


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m theory.phase", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("grid")
    g.add_argument("--strengths", type=grid, default=grid("0:4:17"), help="augmentation std (default 0:4:17)")
    g.add_argument("--lrs", type=grid, default=[0.02], help="learning rates (default 0.02)")
    g.add_argument("--widths", type=positive_ints, default=[16], help="dim of data and layers (default 16)")
    g.add_argument("--depths", type=positive_ints, default=[1], help="linear layers (default 1)")
    g.add_argument("--seeds", type=int, default=3, help="seeds per cell: 0, 1, ... (default 3)")
    t = p.add_argument_group("training (as theory.simulate)")
    t.add_argument("--augmented-fraction", type=float, default=0.5,
                   help="share of the coordinates that are augmented (default 0.5: 8 of 16)")
    t.add_argument("--samples", type=int, default=128, help="batch size N (default 128)")
    t.add_argument("--steps", type=int, default=2000, help="gd steps (default 2000)")
    t.add_argument("--loss", choices=SWEEP_LOSSES, default="paper", help=loss_help(SWEEP_LOSSES))
    tau_losses = " and ".join(n for n in SWEEP_LOSSES if n in TEMPERATURE_LOSSES)
    t.add_argument("--temperature", type=float, default=0.1, help=f"tau of the {tau_losses} loss (default 0.1)")
    t.add_argument("--noisy-views", type=int, choices=(1, 2), default=1,
                   help="1: x' = x + noise (paper); 2: both views noised (official toy code)")
    t.add_argument("--init", default="orthogonal", help="as theory.simulate --init (default orthogonal)")
    r = p.add_argument_group("engine")
    r.add_argument("--dtype", choices=DTYPES, default="float64", help="float32 is faster, same verdicts")
    r.add_argument("--workers", type=int, default=None,
                   help="parallel workers, processes on Linux (default: one per core)")
    r.add_argument("--backend", choices=BACKENDS, default="numpy", help="torch needs torch installed")
    r.add_argument("--device", default=None, help="torch device, e.g. cuda or cpu (backend torch only)")
    r.add_argument("--no-predict", action="store_true", help="skip X's predictions (faster; observed only)")
    p.add_argument("--out", default="phase", help="output folder (default ./phase)")
    p.add_argument("--no-plot", action="store_true", help="JSON only")
    return p


def run(args: argparse.Namespace) -> dict:
    from tqdm.auto import tqdm

    strengths = np.asarray(args.strengths)
    lrs = np.asarray(args.lrs)
    cells = [(w, dp) for w in args.widths for dp in args.depths]
    shape = (len(args.widths), len(args.depths), len(strengths), len(lrs), args.seeds)
    keys = ("collapsed_dims", "collapsed_dims_initial", "total_collapse", "diverged", "predicted_apriori",
            "predicted_late")
    arrays = {k: np.zeros(shape, dtype=int) for k in keys}
    augmented = {}
    start = time.perf_counter()
    for w, dp in tqdm(cells, desc="phase diagram", unit="sweep", disable=len(cells) == 1):
        k = int(round(args.augmented_fraction * w))
        augmented[w] = k
        base = SimConfig(dim=w, augmented_dims=k, layers=dp, samples=args.samples, steps=args.steps,
                         loss=args.loss, temperature=args.temperature, noisy_views=args.noisy_views,
                         init=args.init, lr=float(lrs[0]))
        out = sweep(strengths, args.seeds, base, progress=True, lrs=lrs, dtype=args.dtype, workers=args.workers,
                    backend=args.backend, device=args.device, predict=not args.no_predict)
        i, j = args.widths.index(w), args.depths.index(dp)
        for key in keys:
            if key in out:
                arrays[key][i, j] = out[key]
    config = vars(base)
    return {
        "grid": {"widths": args.widths, "depths": args.depths, "strengths": strengths, "lrs": lrs,
                 "seeds": list(range(args.seeds)), "augmented_dims": [augmented[w] for w in args.widths]},
        "axes": ["width", "depth", "strength", "lr", "seed"],
        "config": {k: v for k, v in config.items() if k not in ("dim", "augmented_dims", "layers", "lr",
                                                                "augment_strength", "seed")},
        "dtype": args.dtype, "backend": args.backend,
        "seconds": time.perf_counter() - start,
        "predicted": not args.no_predict,
        **{k: v for k, v in arrays.items() if not (args.no_predict and k.startswith("predicted"))},
    }


ANNOTATE_CELLS = 100  # a panel with at most this many cells writes its mean count in each


def _annotate(ax, mean: np.ndarray, width: int) -> None:
    """The mean collapsed count in every cell of ``mean`` [strength, lr] (none where every seed diverged)."""
    whole = np.allclose(mean[np.isfinite(mean)], np.round(mean[np.isfinite(mean)]))
    size = 8 if mean.size <= 30 else 6
    for (si, li), m in np.ndenumerate(mean):
        if not np.isfinite(m):
            continue
        text = f"{m:.0f}" if whole else f"{m:.1f}"
        # magma is dark at the low end: white text there, black on the bright upper part
        ax.text(si, li, text, ha="center", va="center", fontsize=size,
                color="white" if m < 0.6 * width else "black")


def plot(data: dict, stem: str) -> list[str]:
    """Heat map per (width, depth): mean collapsed dims over seeds, strength x lr; diverged cells hatched; the
    mean written in each cell of a panel of at most ``ANNOTATE_CELLS`` cells."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = data["grid"]
    collapsed = np.asarray(data["collapsed_dims"], dtype=float)
    initial = np.asarray(data["collapsed_dims_initial"], dtype=float)
    diverged = np.asarray(data["diverged"], dtype=bool)
    nw, nd = len(g["widths"]), len(g["depths"])
    fig_width = 1.2 + 4.2 * nd
    fig, axes = plt.subplots(nw, nd, figsize=(fig_width, 1.1 + 2.6 * nw), squeeze=False,
                             constrained_layout=True)
    s, lrs = np.asarray(g["strengths"]), np.asarray(g["lrs"])
    seeds = collapsed.shape[-1]
    for i, w in enumerate(g["widths"]):
        for j, dp in enumerate(g["depths"]):
            ax = axes[i, j]
            cell = np.where(diverged[i, j], np.nan, collapsed[i, j])
            with warnings.catch_warnings():  # a cell where every seed diverged has no mean
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(cell, axis=-1)  # [strength, lr]
            image = ax.imshow(mean.T, origin="lower", aspect="auto", cmap="magma", vmin=0, vmax=w,
                              extent=(-0.5, len(s) - 0.5, -0.5, len(lrs) - 0.5))
            hatched = diverged[i, j].any(-1).T
            for (li, si) in zip(*np.nonzero(hatched), strict=True):
                ax.add_patch(plt.Rectangle((si - 0.5, li - 0.5), 1, 1, fill=False, hatch="xx", color="grey"))
            if mean.size <= ANNOTATE_CELLS:
                _annotate(ax, mean, w)
            ax.set_xticks(range(len(s)), [f"{v:g}" for v in s], rotation=90 if len(s) > 8 else 0)
            ax.set_yticks(range(len(lrs)), [f"{v:g}" for v in lrs])
            ax.set(xlabel="augmentation strength (noise std)", ylabel="learning rate")
            ax.set_title(f"width {w} ({g['augmented_dims'][i]} augmented), depth {dp}; "
                         f"collapsed at t=0: {int(initial[i, j].max())}", fontsize=8)
            fig.colorbar(image, ax=ax, label=f"collapsed dims of {w}\n(mean of {seeds} seeds)")
    cfg = data["config"]
    lines = [f"collapsed embedding dims after {cfg['steps']} gd steps, {cfg['loss']} loss, "
             f"{cfg['noisy_views']} noisy view(s)", f"hatched: diverged; colour: mean of {seeds} seeds"]
    # wrapped to the canvas: a 9-pt character is ~0.075 in wide
    wrapped = [part for line in lines for part in textwrap.wrap(line, max(30, int(fig_width / 0.075)))]
    fig.suptitle("\n".join(wrapped), fontsize=9)
    paths = []
    for ext in ("png", "pdf"):
        path = f"{stem}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, metadata={"CreationDate": None} if ext == "pdf" else None)
        paths.append(path)
    plt.close(fig)
    return paths


def summary_line(data: dict) -> str:
    """Counts over the networks that finished; diverged ones are reported as diverged, never as a count."""
    collapsed = np.asarray(data["collapsed_dims"])
    diverged = np.asarray(data["diverged"], dtype=bool)
    initial = np.asarray(data["collapsed_dims_initial"])[~diverged]
    text = f"{collapsed.size} networks in {data['seconds']:.1f} s; "
    if diverged.all():
        return text + f"all {collapsed.size} diverged"
    done = collapsed[~diverged]
    return (text + f"collapsed dims at the end: {done.min()}-{done.max()} (at t=0: {initial.min()}-{initial.max()}), "
            f"diverged {int(diverged.sum())}")


def _check_grid(args: argparse.Namespace) -> None:
    """Every strength and lr as ``theory.simulate`` would accept it, the error naming this command's flag."""
    from .experiment import MAX_STRENGTH

    s, lrs = np.asarray(args.strengths), np.asarray(args.lrs)
    bad = s[~(np.isfinite(s) & (s >= 0) & (s <= MAX_STRENGTH))]
    if bad.size:
        try:
            SimConfig(augment_strength=float(bad[0])).validate()
        except ValueError as err:
            raise UserError(f"--strengths {bad[0]:g} is refused (each value is a theory.simulate "
                            f"--augment-strength): {err}") from None
    bad = lrs[~(np.isfinite(lrs) & (lrs > 0))]
    if bad.size:
        raise UserError(f"--lrs {bad[0]:g}: every learning rate must be a finite number > 0")


def _check_backend(args: argparse.Namespace) -> None:
    if args.device is not None and args.backend != "torch":
        raise UserError("--device needs --backend torch")
    if args.backend != "torch":
        return
    try:
        from .torch_kernel import check_device
    except ImportError:
        raise UserError("--backend torch needs torch installed (pip install torch), or use --backend numpy") from None
    try:
        check_device(args.device)
    except ValueError as err:
        raise UserError(str(err)) from None


def _check_size(args: argparse.Namespace) -> None:
    """Refuse a grid that cannot fit in memory or finish in a day, with the estimate (before any work).

    Rough model, measured on a 2-core machine (numpy, float64): every configuration of a (width d, depth L)
    sweep holds ~2 N x N, ~200 N x d (the 2 x 64 batches drawn for X) and ~330 d x d float64 arrays (X's
    samples and their test), the sweeps of the grid one after another; one gd step costs ~N^2 d + L N d^2
    multiply-adds, X's 2 x 64 batches ~N^2 d + N d^2 + d^3 each, at ~2e9 per second on a CPU (a lower bound:
    the verdicts cost more) and an assumed 100x that on CUDA.
    """
    n, configs = args.samples, len(args.strengths) * len(args.lrs) * args.seeds
    d = max(args.widths)
    memory = 100e6 + 8.0 * configs * (2 * n * n + 200 * n * d + 330 * d * d)
    work = sum(configs * (args.steps * (n * n * w + dp * n * w * w) + 128 * (n * n * w + n * w * w + w**3))
               for w in args.widths for dp in args.depths)
    rate = 2e11 if args.backend == "torch" and str(args.device or "").startswith("cuda") else 2e9
    check_budget(f"this grid ({configs} networks per sweep, {len(args.widths) * len(args.depths)} sweep(s), "
                 f"N = {n}, widths up to {d})", memory, work / rate,
                 "fewer --strengths / --lrs / --seeds, smaller --widths / --samples, or fewer --steps")


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    if args.seeds < 1:
        parser().error(f"--seeds must be >= 1, got {args.seeds}")
    if args.workers is not None and args.workers < 1:
        parser().error(f"--workers must be >= 1, got {args.workers}")
    if not 0.0 <= args.augmented_fraction <= 1.0:
        parser().error(f"--augmented-fraction must be between 0 and 1, got {args.augmented_fraction}")
    _check_backend(args)
    _check_grid(args)
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if args.samples < 2:
        raise UserError(f"--samples must be >= 2 (a batch needs negatives), got {args.samples}")
    _check_size(args)
    os.makedirs(args.out, exist_ok=True)  # before the sweep: an unwritable --out fails at once
    try:
        data = run(args)
    except ValueError as err:  # a configuration the toy rejects, named in one line
        raise UserError(str(err)) from None
    write_json(os.path.join(args.out, "phase.json"), data)
    written = [os.path.join(args.out, "phase.json")]
    if not args.no_plot:
        written += plot(data, os.path.join(args.out, "phase"))
    print(summary_line(data) + f"; wrote {', '.join(written)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv, resume_hint="nothing was written; the same command starts over (same result)")


if __name__ == "__main__":
    sys.exit(main())
