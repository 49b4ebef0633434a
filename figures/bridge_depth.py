"""Sec. 5 on a real backbone: collapsed count vs linear-projector depth, and adjacent-layer alignment over time.

Reads ``results/bridge-verdicts/bridge.json`` (never trains). Left: collapsed dimensions at the end (end-to-end
map's singular values and the embedding spectrum), mean +- s.e. over seeds, per depth. Right: the
chance-corrected alignment of adjacent layers (Theorem 2) over training, per depth, beside its chance level
(dashed, 0). Where the results
have it, the left title gives per depth the slope of the observed on the predicted change of sigma itself (no
division by a near-zero sigma) beside the log-sigma slope.
The drawing lives in ``empirical.bridge_plots`` (shipped with the package, used by ``empirical.bridge``).
"""

from __future__ import annotations

from empirical import bridge_plots
from figures import style
from figures.bridge_growth import load

NAME = "bridge_depth"


def draw(result: dict, out_dir=None) -> dict:
    fig, data = bridge_plots.depth(result)
    style.save(fig, NAME, data, out_dir)
    return data


def main(quick: bool = False, out_dir=None) -> dict:
    return draw(load(), out_dir)


if __name__ == "__main__":
    style.cli(main, __doc__.splitlines()[0])
