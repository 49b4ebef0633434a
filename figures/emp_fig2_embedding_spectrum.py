"""Paper Fig. 2 on a real network: the embedding spectrum of SimCLR with the 2-layer MLP projector.

Reads results/projector-ablation-<dataset>-<scale>/table.json (empirical.experiments). The embedding z is the
128-d projector output on the test split; spectrum in the paper's protocol (L2-normalize, covariance singular
values, log10; collapsed = 3 decades or more below the largest). Paper: about 34/128 collapsed (ImageNet).
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from figures import emp_results as er
from figures import style

NAME = "emp_fig2_embedding_spectrum"


def main(quick: bool = False, out_dir=None, results=None) -> dict:
    data = er.load("projector-ablation", results)
    mlp = er.need(er.row(data, "mlp"), "mlp")
    lin = er.row(data, "linear")
    fig, ax = plt.subplots(figsize=(6.6, 3.9))
    er.draw_spectrum(ax, mlp, "z", style.LAYER_COLORS[0], marker=".", ms=3)
    if lin is not None:
        er.draw_spectrum(ax, lin, "z", style.LAYER_COLORS[1], lw=1)
    ax.set(xlabel="singular value rank index", ylabel="log10 singular value of C (embedding z)")
    er.legend(ax, loc="lower left")
    s = mlp["spectra"]["z"]
    er.claim(
        fig,
        f"Fig. 2 ({er.short(data)}): SimCLR + MLP projector embedding, "
        f"{s['n_collapsed']}/{s['dim']} dims collapsed",
    )
    out = {
        "claim": "the SimCLR embedding (after the MLP projector) has collapsed dimensions",
        "recipe": er.recipe_text(data),
        "mlp_z": mlp["spectra"]["z"],
        "linear_z": lin["spectra"]["z"] if lin else None,
    }
    style.save(fig, NAME, out, out_dir)
    return out


if __name__ == "__main__":
    er.cli(main, __doc__.splitlines()[0])
