"""Shared loader and command line for the empirical figures (emp_*.py): they read saved results, never train.

Results come from ``python -m empirical.experiments NAME --dataset D --scale S``, which writes
``results/<NAME>-<D>-<S>/table.json`` (committed for the CPU-scale mnist5k runs). Spectra there are the
paper's protocol through ``theory.spectrum``: L2-normalized features, covariance singular values, log10.
Every figure takes a results folder as its argument (``python -m figures.emp_fig2_embedding_spectrum
results/projector-ablation-mnist5k-gpu-60ep``); without one it draws the committed CPU results into
figures/out. Given a folder on the command line it writes to ``runs/figures`` unless ``--out`` says otherwise,
so that drawing other results never replaces the committed gallery.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np

from figures import style

RESULTS = style.REPO / "results"
SCRATCH = style.REPO / "runs" / "figures"  # git-ignored: where figures of other results folders go
DATASET, SCALE = "mnist5k", "cpu"
# committed CPU results, preferred first: the corrected recipe and probe (10, then 3 epochs), then the earlier runs
SUFFIXES = ("-10ep-corrected", "-3ep-corrected", "", "-3ep")
COLLAPSE_DECADES = 3.0  # theory.spectrum.COLLAPSE_RTOL = 1e-3: collapsed when 3 decades below the top
SHOWN_DECADES = 10.0  # dead channels sit at ~1e-35 (float64 floor); show the top 10 decades only


def load(experiment: str, results: str | Path | None = None) -> dict:
    """table.json of one experiment: from ``results`` (a folder holding table.json) if given, else the first
    committed ``results/<experiment>-mnist5k-cpu<suffix>`` of ``SUFFIXES``; the recipe goes into each
    figure's title. ``style.MissingResults`` when there is none, or it holds another experiment."""
    if results is not None:
        path = Path(results) / "table.json"
        if not path.is_file():
            raise style.MissingResults(f"no table.json in {results} (a folder written by empirical.experiments)")
    else:
        tried = [RESULTS / f"{experiment}-{DATASET}-{SCALE}{sfx}" / "table.json" for sfx in SUFFIXES]
        path = next((t for t in tried if t.is_file()), tried[0])
        if not path.is_file():
            raise style.MissingResults(
                f"{path} missing: run python -m empirical.experiments {experiment} --dataset {DATASET}"
            )
    data = json.loads(path.read_text())
    if data["meta"]["experiment"] != experiment:
        raise style.MissingResults(f"{path} holds {data['meta']['experiment']}, this figure draws {experiment}")
    data["meta"]["folder"] = style.relative(path.parent)
    return data


def row(data: dict, projector: str, d0: int | None = None) -> dict | None:
    """The first finished row with this projector (and d0), or None."""
    for r in data["rows"]:
        if r.get("failed") or r["projector"] != projector:
            continue
        if d0 is None or r["d0"] == d0:
            return r
    return None


def need(r: dict | None, what: str) -> dict:
    if r is None:
        raise style.MissingResults(f"no finished {what} row in the results")
    return r


def log10_spectrum(r: dict, space: str) -> np.ndarray:
    """log10 covariance singular values of ``space`` (r, z, r_rest); -inf zeros drawn at the floor."""
    vals = r["spectra"][space]["log10"]
    return np.array([np.nan if v is None else v for v in vals], dtype=np.float64)


def label(r: dict, space: str) -> str:
    s = r["spectra"][space]
    return f"{r['projector']}: {s['n_collapsed']}/{s['dim']} collapsed, eff. rank {s['effective_rank']:.1f}"


def draw_spectrum(ax, r: dict, space: str, color, name: str | None = None, **kw) -> None:
    """Sorted log10 singular values, plus the collapse threshold of this spectrum (dotted, same colour).

    Only the top ``SHOWN_DECADES`` of the axes are shown: values below (dead channels near the float64 floor,
    exact zeros) are drawn on the display floor, a grey line labelled in the legend, instead of running off
    the axes. Every call re-clips the curves already on ``ax``, whose floor moves with the highest top."""
    y = log10_spectrum(r, space)
    y = np.where(np.isfinite(y), y, -np.inf)  # zeros: drawn on the floor
    this_top = float(np.max(y[np.isfinite(y)])) if np.isfinite(y).any() else 0.0
    (line,) = ax.plot(np.arange(1, len(y) + 1), y, color=color, label=name or label(r, space), **kw)
    line._emp_raw = y
    first = not hasattr(ax, "_emp_top")
    ax.axhline(this_top - COLLAPSE_DECADES, color=color, ls=":", lw=0.8,
               label=f"dotted: collapse threshold ({COLLAPSE_DECADES:g} decades below each curve's top)"
               if first else "_nolegend_")  # fmt: skip
    top = max(this_top, getattr(ax, "_emp_top", -np.inf))
    ax._emp_top = top
    floor = top - SHOWN_DECADES
    below = 0
    for ln in ax.lines:
        if hasattr(ln, "_emp_raw"):
            ln.set_ydata(np.maximum(ln._emp_raw, floor))
            below += int(np.sum(ln._emp_raw < floor))
    if first:
        ax._emp_floor = ax.axhline(floor, color="0.45", lw=1.0)
    ax._emp_floor.set_ydata([floor, floor])
    ax._emp_floor.set_label(f"display floor (top − {SHOWN_DECADES:g} decades): {below} lower values drawn on it")
    ax.set_ylim(bottom=floor - 0.4, top=top + 0.5)


def effective_flags(recipe: list[str]) -> list[str]:
    """The recipe with each flag once, holding its last value (argparse's rule: a later flag overrides), in the
    order the flags first appear; a scale's defaults followed by an override are then not listed twice."""
    order: list[str] = []
    values: dict[str, list[str]] = {}
    i = 0
    while i < len(recipe):
        flag = recipe[i]
        takes_value = i + 1 < len(recipe) and not recipe[i + 1].startswith("--")
        if flag not in values:
            order.append(flag)
        values[flag] = [recipe[i + 1]] if takes_value else []
        i += 2 if takes_value else 1
    return [tok for flag in order for tok in (flag, *values[flag])]


def legend(ax, **kw) -> None:
    """``ax.legend`` with the spectra first and the reference lines (threshold, display floor) last."""
    handles, labels = ax.get_legend_handles_labels()
    reference = [lab.startswith(("dotted:", "display floor")) for lab in labels]
    order = sorted(range(len(labels)), key=lambda i: reference[i])
    ax.legend([handles[i] for i in order], [labels[i] for i in order], **kw)


def recipe_text(data: dict) -> str:
    m = data["meta"]
    return f"{m.get('folder', '?')}: {m['dataset']}, {' '.join(effective_flags(m['recipe']))}"


def short(data: dict) -> str:
    """'<dataset>, <backbone>, <epochs> ep' for figure titles (the last flag wins, as in argparse)."""
    rec = data["meta"]["recipe"]

    def last(flag: str, default: str) -> str:
        at = [i for i, a in enumerate(rec[:-1]) if a == flag]
        return rec[at[-1] + 1] if at else default

    return f"{data['meta']['dataset']}, {last('--backbone', 'tiny')} ResNet, {last('--epochs', '?')} epochs"


def claim(fig, text: str, width: int = 75) -> None:
    """``style.claim`` wrapped to lines of ``width`` characters, so that it fits the figure."""
    style.claim(fig, "\n".join(textwrap.wrap(text, width)))


def cli(main, description: str) -> None:
    """``python -m figures.<name> [RESULTS] [--out DIR]``: one line and exit 2 when the results are missing."""
    from dimcollapse.io import OneLineParser, UserError, run_cli

    parser = OneLineParser(description=description)
    parser.add_argument("results", nargs="?", default=None, help="results folder (default: committed CPU results)")
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (default: figures/out for the committed results, runs/figures for a results folder)",
    )
    parser.add_argument("--quick", action="store_true", help="accepted for make_all; these figures are fast")

    def run(argv: list[str] | None) -> int:
        args = parser.parse_args(argv)
        out = Path(args.out or (SCRATCH if args.results is not None else style.OUT_DIR))
        try:
            main(quick=args.quick, out_dir=out, results=args.results)
        except style.MissingResults as e:
            raise UserError(str(e)) from None
        name = main.__globals__["NAME"]
        for ext in ("png", "pdf", "json"):
            print(f"wrote {style.shown(out / f'{name}.{ext}')}")
        return 0

    sys.exit(run_cli(run))
