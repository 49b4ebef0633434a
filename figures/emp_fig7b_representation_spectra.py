"""Paper Fig. 7b on a real network: representation spectra of SimCLR with and without a projector.

Reads results/projector-ablation-<dataset>-<scale>/table.json. r is the backbone output (128-d for the tiny
ResNet), test split, paper protocol (L2-normalize, covariance singular values, log10). Paper's claim: without
a projector the representation collapses; with the MLP projector it does not.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from figures import emp_results as er
from figures import style

NAME = "emp_fig7b_representation_spectra"


def main(quick: bool = False, out_dir=None, results=None) -> dict:
    data = er.load("projector-ablation", results)
    mlp = er.need(er.row(data, "mlp"), "mlp")
    none = er.need(er.row(data, "none"), "none")
    fig, ax = plt.subplots(figsize=(6.6, 3.9))
    er.draw_spectrum(ax, mlp, "r", style.CLEAN, er.label(mlp, "r").replace("mlp", "with MLP projector"))
    er.draw_spectrum(ax, none, "r", style.AUGMENTED, er.label(none, "r").replace("none", "no projector"))
    ax.set(xlabel="singular value rank index", ylabel="log10 singular value of C (representation r)")
    er.legend(ax, loc="lower left")
    a, b = mlp["spectra"]["r"], none["spectra"]["r"]
    er.claim(
        fig,
        f"Fig. 7b ({er.short(data)}): collapsed dims of r, "
        f"{a['n_collapsed']} with projector vs {b['n_collapsed']} without",
    )
    out = {
        "claim": "without a projector the representation r collapses more than with the MLP projector",
        "holds_here": b["n_collapsed"] > a["n_collapsed"] or b["effective_rank"] < a["effective_rank"],
        "recipe": er.recipe_text(data),
        "with_projector_r": a,
        "without_projector_r": b,
    }
    style.save(fig, NAME, out, out_dir)
    return out


if __name__ == "__main__":
    er.cli(main, __doc__.splitlines()[0])
