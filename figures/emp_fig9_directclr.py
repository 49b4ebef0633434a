"""Paper Fig. 9 on a real network: representation spectra of DirectCLR vs SimCLR with (a) the MLP
projector, (b) a linear projector, (c) no projector.

Reads results/projector-ablation-<dataset>-<scale>/table.json; r = backbone output, test split, paper
protocol. Paper's claim: DirectCLR's representation does not collapse, like SimCLR with a projector.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from figures import emp_results as er
from figures import style

NAME = "emp_fig9_directclr"
OTHERS = (
    ("mlp", "(a) vs 2-layer MLP projector"),
    ("linear", "(b) vs linear projector"),
    ("none", "(c) vs no projector"),
)


def main(quick: bool = False, out_dir=None, results=None) -> dict:
    data = er.load("projector-ablation", results)
    dclr = er.need(er.row(data, "directclr"), "directclr")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    out = {"claim": "DirectCLR's representation collapses no more than SimCLR's with a projector",
           "recipe": er.recipe_text(data), "directclr_r": dclr["spectra"]["r"]}  # fmt: skip
    for ax, (proj, title) in zip(axes, OTHERS, strict=True):
        other = er.row(data, proj)
        er.draw_spectrum(
            ax, dclr, "r", style.LAYER_COLORS[3], er.label(dclr, "r").replace("directclr", "DirectCLR")
        )
        if other is not None:
            er.draw_spectrum(ax, other, "r", style.LAYER_COLORS[0], "SimCLR " + er.label(other, "r"))
            out[f"{proj}_r"] = other["spectra"]["r"]
        ax.set(title=title, xlabel="singular value rank index")
        # below the panel: the spectra fill the axes from the top left to the floor at the right
        er.legend(ax, loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=7, frameon=False)
    axes[0].set_ylabel("log10 singular value of C (representation r)")
    s = dclr["spectra"]["r"]
    er.claim(
        fig,
        f"Fig. 9 ({er.short(data)}): DirectCLR (d0={dclr['d0']}) representation: "
        f"{s['n_collapsed']}/{s['dim']} collapsed, eff. rank {s['effective_rank']:.1f}",
    )
    style.save(fig, NAME, out, out_dir)
    return out


if __name__ == "__main__":
    er.cli(main, __doc__.splitlines()[0])
