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

from .batched import BACKENDS, DTYPES, SWEEP_LOSSES, sweep
from .experiment import SimConfig
from .io import OneLineParser, UserError, run_cli, write_json


def grid(text: str) -> list[float]:
    """'a,b,c' or 'start:stop:count' -> values; argparse type (one-line error on bad input)."""
    try:
        if ":" in text:
            start, stop, count = text.split(":")
            if int(count) < 1:
                raise ValueError
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
    t.add_argument("--loss", choices=SWEEP_LOSSES, default="paper", help="paper (Eqn 2) or dot (official toy code)")
    t.add_argument("--temperature", type=float, default=0.1, help="tau of the dot loss (default 0.1)")
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


def plot(data: dict, stem: str) -> list[str]:
    """Heat map per (width, depth): mean collapsed dims over seeds, strength x lr; diverged cells hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = data["grid"]
    collapsed = np.asarray(data["collapsed_dims"], dtype=float)
    initial = np.asarray(data["collapsed_dims_initial"], dtype=float)
    diverged = np.asarray(data["diverged"], dtype=bool)
    nw, nd = len(g["widths"]), len(g["depths"])
    fig, axes = plt.subplots(nw, nd, figsize=(1.2 + 4.2 * nd, 0.9 + 2.6 * nw), squeeze=False,
                             constrained_layout=True)
    s, lrs = np.asarray(g["strengths"]), np.asarray(g["lrs"])
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
            ax.set_xticks(range(len(s)), [f"{v:g}" for v in s], rotation=90 if len(s) > 8 else 0)
            ax.set_yticks(range(len(lrs)), [f"{v:g}" for v in lrs])
            ax.set(xlabel="augmentation strength (noise std)", ylabel="learning rate")
            ax.set_title(f"width {w} ({g['augmented_dims'][i]} augmented), depth {dp}; "
                         f"collapsed at t=0: {int(initial[i, j].max())}", fontsize=8)
            fig.colorbar(image, ax=ax, label=f"collapsed dims of {w} (mean of {collapsed.shape[-1]} seeds)")
    cfg = data["config"]
    fig.suptitle(f"collapsed embedding dims after {cfg['steps']} gd steps, {cfg['loss']} loss, "
                 f"{cfg['noisy_views']} noisy view(s); hatched: diverged", fontsize=9)
    paths = []
    for ext in ("png", "pdf"):
        path = f"{stem}.{ext}"
        fig.savefig(f"{path}.tmp.{ext}", metadata={"CreationDate": None} if ext == "pdf" else None)
        os.replace(f"{path}.tmp.{ext}", path)
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


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    if args.seeds < 1:
        parser().error(f"--seeds must be >= 1, got {args.seeds}")
    if args.workers is not None and args.workers < 1:
        parser().error(f"--workers must be >= 1, got {args.workers}")
    if not 0.0 <= args.augmented_fraction <= 1.0:
        parser().error(f"--augmented-fraction must be between 0 and 1, got {args.augmented_fraction}")
    if args.device is not None and args.backend != "torch":
        parser().error("--device needs --backend torch")
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
