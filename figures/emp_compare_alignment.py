"""Theory vs the trained network: alignment |V2^T U1| of consecutive linear maps in a trained network
(the MLP projector's two layers with BN folded; the backbone's last conv vs the projector's first matrix).

Reads ``results/compare/*/compare.json`` (never trains), or the compare.json of the folder given as argument.
Theorem 2 predicts A -> I (for linear layers with distinct singular values); Propositions 1-2 read that as
"the projector's rotation is redundant, only its (low-rank) singular values matter". Heat maps of the leading
block of |A| and both layers' singular values; the title states what the trained network shows.
"""

from __future__ import annotations

import numpy as np

from figures import style
from figures.emp_compare_x import load_results, title

NAME = "emp_compare_alignment"
ALIGNED = 3.0  # a pair counts as aligned when its leading-mode score is this many times chance


def _verdict(res: dict) -> str:
    scores = []
    for d in res["alignment"].values():
        lead = max(d["scores"], key=int)
        scores.append((d["scores"][lead], d["chance_score"], lead))
    lo, hi = min(s for s, _, _ in scores), max(s for s, _, _ in scores)
    chance, lead = scores[0][1], scores[0][2]
    aligned = sum(s >= ALIGNED * c for s, c, _ in scores)
    word = "aligned" if aligned == len(scores) else "not aligned" if aligned == 0 else "partly aligned"
    return (
        f"{word}: mean |A_kk| over the top {lead} modes {lo:.2f}-{hi:.2f} vs chance {chance:.2f} "
        f"({aligned} of {len(scores)} pairs at {ALIGNED:g}x chance or more); Theorem 2 predicts 1"
    )


def main(quick: bool = False, out_dir=None, results=None) -> dict:
    runs = {k: v for k, v in load_results(results).items() if v["alignment"]}
    if not runs:
        raise style.MissingResults("no compare.json with an alignment pair")
    data: dict = {"claim": "Theorem 2 in a trained network: is |V2^T U1| close to I?", "runs": {}}
    fig = style.plt.figure(figsize=(11, 6.4 * len(runs)))
    subs = fig.subfigures(len(runs), 1, squeeze=False)[:, 0]
    verdicts = []
    for sub, (name, res) in zip(subs, runs.items(), strict=True):
        pairs = list(res["alignment"].items())[:4]
        left, right = sub.subfigures(1, 2, width_ratios=[1.45, 1])
        axes = left.subplots(2, 2, squeeze=False).ravel()
        ax_s = right.subplots(1, 1)
        data["runs"][name] = {}
        im = None
        for ax, (pair, d) in zip(axes, pairs, strict=False):
            im = ax.imshow(np.asarray(d["alignment_top_block"]), cmap=style.HEATMAP, vmin=0, vmax=1)
            ax.grid(False)
            lead = max(d["scores"], key=int)
            ax.set_title(
                f"{pair.replace('_vs_', ' vs ').replace('_', ' ')}\n"
                f"top-{lead} mean |A_kk| {d['scores'][lead]:.2f} (chance {d['chance_score']:.2f})",
                fontsize=8,
            )
            ax.set_xlabel("k' (left singular vector of W1)", fontsize=8)
            ax.set_ylabel("k (right singular vector of W2)", fontsize=8)
        for ax in axes[len(pairs) :]:
            ax.axis("off")
        if im is not None:
            left.colorbar(im, ax=list(axes[: len(pairs)]), fraction=0.04, pad=0.02, label="|A_kk'|")
        for col, (pair, d) in enumerate(pairs):
            color = style.LAYER_COLORS[col % len(style.LAYER_COLORS)]
            for key, ls in (("sigma1", "-"), ("sigma2", "--")):
                s = np.asarray(d[key])
                ax_s.plot(
                    style.log10(s / s.max(), 1e-30),
                    ls=ls,
                    color=color,
                    label=f"{pair.replace('_vs_', ' vs ').replace('_', ' ')}: {'W1' if key == 'sigma1' else 'W2'} "
                    f"(eff. rank {d['erank1' if key == 'sigma1' else 'erank2']:.0f})",
                )
            data["runs"][name][pair] = {
                k: d[k]
                for k in ("scores", "chance_score", "erank1", "erank2", "top_k", "subspace_overlap_top_k",
                          "subspace_chance")
            }  # fmt: skip
        ax_s.set(xlabel="rank", ylabel="log10 σ_k / σ_1", ylim=(-6, 0.3))
        ax_s.set_title("singular values (solid W1, dashed W2)", fontsize=9)
        ax_s.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), fontsize=7, frameon=False)
        verdict = _verdict(res)
        verdicts.append(verdict)
        data["runs"][name]["verdict"] = verdict
        sub.suptitle(f"{title(name, res)}\n{verdict}", fontsize=9)
    head = verdicts[0].split(":")[0] if len(verdicts) == 1 else "alignment"
    style.claim(fig, f"Consecutive linear maps of the trained network are {head} (Theorem 2 predicts |V2^T U1| = I)")
    style.save(fig, NAME, data, out_dir)
    return data


if __name__ == "__main__":
    from figures import emp_results as er

    er.cli(main, __doc__.splitlines()[0])
