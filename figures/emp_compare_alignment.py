"""Theory vs the trained network, item 3: alignment |V2^T U1| of consecutive linear maps in a trained network
(the MLP projector's two layers with BN folded; the backbone's last conv vs the projector's first matrix).

Reads ``results/compare/*/compare.json`` (never trains). Theorem 2 predicts A -> I (for linear layers with
distinct singular values); Propositions 1-2 read that as "the projector's rotation is redundant, only its
(low-rank) singular values matter". Heat maps of the leading block of |A| and both layers' singular values.
"""

from __future__ import annotations

import numpy as np

from figures import style
from figures.emp_compare_x import load_results, title

NAME = "emp_compare_alignment"


def main(quick: bool = False, out_dir=None) -> dict:
    runs = {k: v for k, v in load_results().items() if v["alignment"]}
    if not runs:
        raise style.MissingResults("no compare.json with an alignment pair")
    cols = max(len(v["alignment"]) for v in runs.values()) + 1
    data: dict = {"claim": "Theorem 2 in a trained network: is |V2^T U1| close to I?", "runs": {}}
    fig, axes = style.plt.subplots(len(runs), cols, figsize=(3.6 * cols, 3.6 * len(runs)), squeeze=False)
    for row, (name, res) in enumerate(runs.items()):
        ax_s = axes[row, -1]
        data["runs"][name] = {}
        for col, (pair, d) in enumerate(res["alignment"].items()):
            ax = axes[row, col]
            im = ax.imshow(np.asarray(d["alignment_top_block"]), cmap=style.HEATMAP, vmin=0, vmax=1)
            ax.grid(False)
            lead = max(d["scores"], key=int)
            ax.set(
                xlabel="k' (left sing. vector of W1)",
                ylabel="k (right sing. vector of W2)",
                title=f"{pair}\nmean |A_kk| top {lead}: {d['scores'][lead]:.2f} (chance {d['chance_score']:.2f})",
            )
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
            color = style.LAYER_COLORS[col % len(style.LAYER_COLORS)]
            for key, ls in (("sigma1", "-"), ("sigma2", "--")):
                s = np.asarray(d[key])
                ax_s.plot(
                    style.log10(s / s.max(), 1e-30),
                    ls=ls,
                    color=color,
                    label=f"{pair.replace('_vs_', ' vs ')}: {'W1' if key == 'sigma1' else 'W2'} "
                    f"(erank {d['erank1' if key == 'sigma1' else 'erank2']:.0f})",
                )
            data["runs"][name][pair] = {
                k: d[k]
                for k in (
                    "scores",
                    "chance_score",
                    "erank1",
                    "erank2",
                    "top_k",
                    "subspace_overlap_top_k",
                    "subspace_chance",
                )
            }
        for col in range(len(res["alignment"]), cols - 1):
            axes[row, col].axis("off")
        ax_s.set(xlabel="rank", ylabel="log10 σ_k / σ_1", title="singular values (solid W1, dashed W2)")
        ax_s.legend(fontsize=6.5)
        axes[row, 0].annotate(
            title(name, res), (0, 1.25), xycoords="axes fraction", fontsize=8, fontweight="bold"
        )
    style.claim(fig, "Alignment of consecutive linear maps in the trained network (Theorem 2, Props. 1-2)")
    style.save(fig, NAME, data, out_dir)
    return data


if __name__ == "__main__":
    style.cli(main, __doc__.splitlines()[0])
