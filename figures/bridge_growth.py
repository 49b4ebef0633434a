"""Lemma 2 during training: predicted vs observed change of log sigma_i between monitor steps.

Reads ``results/bridge-verdicts/bridge.json`` (made by ``results/bridge-verdicts/run.sh``: the
monitor on 31 image-disjoint batches, 3 seeds of every setting; never trains). One panel
per group of seeds (loss, optimizer, depth): every projector singular value of every interval, predicted
step x (v_i^T X v_i - lambda) against the observed change, coloured by training time, with the identity line;
the title gives Spearman and slope (mean +- s.e. over seeds) beside chance and the persistence baseline, and,
where the results have them, the momentum-history prediction, the within-interval medians of the prediction
and of persistence, and the comparison in sigma itself (no division by sigma).
The drawing lives in ``empirical.bridge_plots`` (shipped with the package, used by ``empirical.bridge``).
"""

from __future__ import annotations

import json
import os

from empirical import bridge_plots
from empirical.bridge_plots import fmt, group_label  # noqa: F401 (shared with the other bridge figures)
from figures import style

NAME = "bridge_growth"
RESULTS = os.path.join(style.REPO, "results", "bridge-verdicts")


def load(root: str = RESULTS) -> dict:
    path = os.path.join(root, "bridge.json")
    if not os.path.exists(path):
        raise style.MissingResults(
            f"no {style.shown(path)}; run python -m empirical.bridge RUN ... --out {style.shown(root)}"
        )
    with open(path) as f:
        return json.load(f)


def draw(result: dict, out_dir=None) -> dict:
    try:
        fig, data = bridge_plots.growth(result)
    except bridge_plots.NoFigure as e:
        raise style.MissingResults(str(e)) from None
    style.save(fig, NAME, data, out_dir)
    return data


def main(quick: bool = False, out_dir=None) -> dict:
    return draw(load(), out_dir)


if __name__ == "__main__":
    style.cli(main, __doc__.splitlines()[0])
