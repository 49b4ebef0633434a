"""Shared look and output helpers for every figure.

* Agg backend, one font size, one colour per role (clean / augmented directions, layers, predictions).
* ``save(fig, name, data, out_dir)`` writes ``<out_dir>/<name>.png``, ``.pdf`` and ``.json`` atomically
  (temp file + rename). Reruns give byte-identical files: no dates or software versions in the PNG/PDF
  metadata, no run times in titles or JSON, and paths recorded relative to the repository (``relative``).
  Titles too wide for their axes or figure are wrapped at word boundaries before saving (``fit_titles``).
* ``MissingResults``: raised by a figure that reads saved results (e.g. trained networks) which are not
  there yet; ``make_all`` reports it as skipped instead of failing.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dimcollapse.io import atomic_path, write_json  # noqa: E402
from empirical.plotting import RC, fit_titles  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "figures" / "out"

CLEAN = "#1f77b4"  # directions the augmentation leaves alone
AUGMENTED = "#d62728"  # directions the augmentation perturbs
PREDICTION = "black"  # theory drawn over the simulation
LAYER_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")
SEQUENTIAL = "viridis"  # one colour per augmentation strength / depth
HEATMAP = "magma"

plt.rcParams.update(RC)


class MissingResults(RuntimeError):
    """The saved results a figure draws from are not there (yet)."""


def colors(n: int, cmap: str = SEQUENTIAL) -> list:
    """n colours evenly spaced along a sequential colour map (dark = first)."""
    cm = plt.get_cmap(cmap)
    return [cm(0.9 * k / max(n - 1, 1)) for k in range(n)]


def claim(fig: plt.Figure, text: str) -> None:
    """The one-line title stating the claim the figure checks."""
    fig.suptitle(text, fontsize=10, fontweight="bold")


def fmt(value: float | None, spec: str = ".2f") -> str:
    """A number for a label; None (undefined, e.g. an overlap of two empty subspaces) is 'n/a'."""
    return "n/a" if value is None else format(value, spec)


def log10(values: np.ndarray, floor: float = 1e-300) -> np.ndarray:
    return np.log10(np.maximum(np.asarray(values, dtype=np.float64), floor))


def relative(path: str | os.PathLike) -> str:
    """A path for provenance fields: relative to the repository when inside it, else only its last component.

    An absolute path names the machine and the checkout, so the same figure made in two checkouts would
    differ; outside the repository the folder's own name is what identifies the results."""
    full = Path(path).resolve()
    try:
        return full.relative_to(REPO).as_posix() or "."
    except ValueError:
        return full.name


def shown(path: str | os.PathLike) -> str:
    """A path for messages: relative to the repository when inside it, else as it is."""
    full = Path(path).resolve()
    return full.relative_to(REPO).as_posix() if full.is_relative_to(REPO) else str(path)


def save(fig: plt.Figure, name: str, data: dict, out_dir: str | os.PathLike | None = None) -> Path:
    """Write ``name``.png/.pdf/.json into ``out_dir`` (default ``figures/out``); return the PNG path."""
    folder = Path(out_dir) if out_dir is not None else OUT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{name}.png"
    fit_titles(fig)
    # metadata without dates or versions: the same data give the same bytes on every rerun
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    with atomic_path(folder / f"{name}.pdf") as tmp:
        fig.savefig(tmp, format="pdf",
                    metadata={"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None})
    write_json(folder / f"{name}.json", data)
    plt.close(fig)
    return png


def cli(main, description: str) -> None:
    """``python -m figures.<name> [--quick] [--out DIR]``."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds), for tests")
    parser.add_argument("--out", default=None, help="output folder (default figures/out, the committed gallery)")
    args = parser.parse_args()
    main(quick=args.quick, out_dir=args.out)
    out = Path(args.out) if args.out is not None else OUT_DIR
    name = main.__globals__["NAME"]
    for ext in ("png", "pdf", "json"):
        print(f"wrote {shown(out / f'{name}.{ext}')}")
