"""Paper Fig. 12 on a real network: DirectCLR accuracy and representation spectra vs d0.

Reads results/d0-sweep-<dataset>-<scale>/table.json (and the ablation's no-projector row when present).
Paper: inverted U, d0 -> 0 too little gradient, d0 -> full width = SimCLR without projector (51.5); best
d0 = 360 of 2048 (62.7). Accuracies: linear probe and kNN on the frozen representation r, test split.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from figures import emp_results as er
from figures import style

NAME = "emp_fig12_d0_sweep"


def main(quick: bool = False, out_dir=None, results=None) -> dict:
    data = er.load("d0-sweep", results)
    rows = sorted((r for r in data["rows"] if not r.get("failed")), key=lambda r: r["d0"])
    if not rows:
        raise style.MissingResults("no finished d0-sweep row")
    d0 = np.array([r["d0"] for r in rows])
    lin = np.array([100 * r["linear_r"]["top1"] for r in rows])
    knn = np.array([100 * r["knn_r"]["top1"] for r in rows])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot(d0, lin, "o-", color=style.LAYER_COLORS[0], label="linear probe top-1 (r)")
    axes[0].plot(d0, knn, "s--", color=style.LAYER_COLORS[1], label="kNN top-1 (r, k=200, T=0.1)")
    axes[0].set_xscale("log", base=2)
    axes[0].set(xlabel="d0 (DirectCLR sub-vector size)", ylabel="test accuracy (%)",
                title=f"(a) accuracy vs d0 (width {rows[0]['spectra']['r']['dim']})")  # fmt: skip
    axes[0].legend(loc="lower center")
    for r, c in zip(rows, style.colors(len(rows)), strict=True):
        same = " (= no projector)" if r["projector"] == "none" else ""
        er.draw_spectrum(
            axes[1], r, "r", c, f"d0={r['d0']}{same}: {r['spectra']['r']['n_collapsed']} collapsed"
        )
    axes[1].set(xlabel="singular value rank index", ylabel="log10 singular value of C (r)",
                title="(b) representation spectrum per d0")  # fmt: skip
    axes[1].legend(loc="lower left")
    best = int(d0[np.argmax(lin)])
    er.claim(fig, f"Fig. 12 ({er.short(data)}): DirectCLR d0 sweep, best linear top-1 at d0={best}")
    out = {
        "claim": "DirectCLR accuracy vs d0 (paper: inverted U, best d0 ~ 18% of the width)",
        "recipe": er.recipe_text(data),
        "d0": d0,
        "linear_top1": lin,
        "knn_top1": knn,
        "best_d0_linear": best,
        "r_collapsed": [r["spectra"]["r"]["n_collapsed"] for r in rows],
    }
    style.save(fig, NAME, out, out_dir)
    return out


if __name__ == "__main__":
    er.cli(main, __doc__.splitlines()[0])
