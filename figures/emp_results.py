"""Shared loader and command line for the empirical figures (emp_*.py): they read saved results, never train.

Results come from ``python -m empirical.experiments NAME --dataset D --scale S``, which writes
``results/<NAME>-<D>-<S>/table.json`` (committed for the CPU-scale mnist5k runs). Spectra there are the
paper's protocol through ``theory.spectrum``: L2-normalized features, covariance singular values, log10.
Every figure takes a results folder as its argument (``python -m figures.emp_fig2_embedding_spectrum
results/projector-ablation-mnist5k-gpu-60ep``); without one it draws the committed CPU results.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np

from figures import style

RESULTS = Path(__file__).resolve().parent.parent / "results"
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
    data["meta"]["folder"] = str(path.parent)
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
    """Sorted log10 singular values, plus the collapse threshold of this spectrum (dotted)."""
    y = log10_spectrum(r, space)
    floor = np.nanmin(y[np.isfinite(y)]) - 1 if np.isfinite(y).any() else -20
    y = np.where(np.isfinite(y), y, floor)
    ax.plot(np.arange(1, len(y) + 1), y, color=color, label=name or label(r, space), **kw)
    ax.axhline(np.nanmax(y) - COLLAPSE_DECADES, color=color, ls=":", lw=0.8)
    top = max(np.nanmax(y), getattr(ax, "_emp_top", -np.inf))
    ax._emp_top = top
    ax.set_ylim(bottom=top - SHOWN_DECADES, top=top + 0.5)  # lower values run off the axis


def recipe_text(data: dict) -> str:
    m = data["meta"]
    return f"{m.get('folder', '?')}: {m['dataset']}, {' '.join(m['recipe'])}"


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
    from theory.io import OneLineParser, UserError, run_cli

    parser = OneLineParser(description=description)
    parser.add_argument("results", nargs="?", default=None, help="results folder (default: committed CPU results)")
    parser.add_argument("--out", default=None, help=f"output folder (default {style.OUT_DIR})")
    parser.add_argument("--quick", action="store_true", help="accepted for make_all; these figures are fast")

    def run(argv: list[str] | None) -> int:
        args = parser.parse_args(argv)
        try:
            main(quick=args.quick, out_dir=args.out, results=args.results)
        except style.MissingResults as e:
            raise UserError(str(e)) from None
        print(f"wrote {Path(args.out or style.OUT_DIR)}")
        return 0

    sys.exit(run_cli(run))
