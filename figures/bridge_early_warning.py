"""Theorem 1 as an early warning: does X at an early step rank the directions that are collapsed at the end?

Reads ``results/bridge-verdicts/bridge.json`` (never trains): every setting monitored on 31 image-disjoint
batches, where the three-outcome X test has its power. Per group of seeds: the AUC of -v^T X v (X at each
monitor step) for the end map's collapsed directions, beside the baseline (the weakest directions of the map at
that step) and chance 0.5; and the subspace overlap of X's lowest eigenvectors with the collapsed set, beside
the baseline and a random subspace. Where the results have it, the early-trend baseline (the directions that
shrank most since the first row, -Delta log|W v_k|: a rate, like X) is drawn beside the level baseline.
The drawing lives in ``empirical.bridge_plots`` (shipped with the package, used by ``empirical.bridge``).
"""

from __future__ import annotations

import os

from empirical import bridge_plots
from figures import style
from figures.bridge_growth import load

RESULTS = os.path.join(style.REPO, "results", "bridge-verdicts")

NAME = "bridge_early_warning"


def draw(result: dict, out_dir=None) -> dict:
    fig, data = bridge_plots.early_warning(result)
    style.save(fig, NAME, data, out_dir)
    return data


def main(quick: bool = False, out_dir=None) -> dict:
    return draw(load(), out_dir)


if __name__ == "__main__":
    style.cli(main, __doc__.splitlines()[0])
