"""Theory vs the trained network: 1-3 layer linear projectors trained by ``theory.run_gd`` on frozen,
PCA-whitened features of a trained backbone (real data, real augmentation), as the toy Fig. 6 / Fig. 11.

Reads ``results/compare/*/compare.json`` (never trains), or the compare.json of the folder given as argument.
Per checkpoint: the embedding variances over training
for each depth (Fig. 6c style) and the collapsed-dimension count vs depth, observed against Theorem 1
(negative eigenvalues of X at W -> 0) and Theorem 3's closed form (fixed X, aligned and balanced layers).
"""

from __future__ import annotations

import numpy as np

from figures import style
from figures.emp_compare_x import load_results, title

NAME = "emp_compare_frozen"


def main(quick: bool = False, out_dir=None, results=None) -> dict:
    runs = {k: v for k, v in load_results(results).items() if "depths" in v["frozen"]}
    if not runs:
        raise style.MissingResults("no compare.json with a frozen-feature experiment")
    data: dict = {"claim": "more linear layers collapse more dimensions of real frozen features", "runs": {}}
    fig = style.plt.figure(figsize=(14, 4.4 * len(runs)))
    subs = fig.subfigures(len(runs), 1, squeeze=False)[:, 0]
    for sub, (name, res) in zip(subs, runs.items(), strict=True):
        axes = sub.subplots(1, 4, squeeze=False)
        row = 0
        fr = res["frozen"]
        depths = sorted(fr["depths"], key=int)
        counts = {"observed": [], "theorem1": [], "theorem3": [], "late_x": []}
        for col, layers in enumerate(depths[:3]):
            d = fr["depths"][layers]
            ax = axes[row, col]
            if "diverged" in d:
                ax.set_title(f"{layers} layer(s): diverged")
                continue
            var = np.asarray(d["embedding_variance_history"])
            top = np.max(var, axis=1, keepdims=True)
            for k, c in enumerate(style.colors(var.shape[1])):
                ax.plot(d["times"], style.log10(var[:, k] / top[:, 0], 1e-30), color=c, lw=1)
            ax.axhline(-3, color=style.PREDICTION, ls="--", lw=0.8)
            ax.set(
                xlabel="time (lr × steps)",
                ylabel="log10 embedding variance / max",
                ylim=(-12, 0.5),
                title=f"{layers} layer(s): {d['observed_collapsed']}/{fr['dim']} collapsed",
            )
        for layers in depths:
            d = fr["depths"][layers]
            counts["observed"].append(d.get("observed_collapsed"))
            counts["theorem1"].append(d["predicted_theorem1"])
            counts["theorem3"].append(d["predicted_theorem3"])
            counts["late_x"].append(d.get("late_n_negative"))
        ax = axes[row, 3]
        xs = np.array([int(v) for v in depths])
        for i, (key, label, color) in enumerate(
            (
                ("observed", "observed", style.CLEAN),
                ("theorem1", "Thm 1: X(W→0) < 0", style.AUGMENTED),
                ("late_x", "X at the end < 0", "#9467bd"),
                ("theorem3", "Thm 3 closed form", "0.4"),
            )
        ):
            ys = [np.nan if v is None else v for v in counts[key]]
            bars = ax.bar(xs + (i - 1.5) * 0.2, ys, 0.2, color=color, edgecolor="black", lw=0.4, label=label)
            # every count printed, so a zero (no bar) is still visible
            ax.bar_label(bars, labels=["n/a" if v is None else str(v) for v in counts[key]], fontsize=6.5)
        top = max([v for c in counts.values() for v in c if v is not None] + [1])
        ax.set(xticks=xs, xlabel="linear layers", ylabel=f"collapsed dims of {fr['dim']}", ylim=(0, 1.15 * top))
        ax.set_title("collapsed dimensions by depth", fontsize=9)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=7, frameon=False)
        sub.suptitle(title(name, res), fontsize=9)
        data["runs"][name] = {
            "dim": fr["dim"],
            "depths": [int(v) for v in depths],
            **counts,
            "apriori_eigenvalues": fr["apriori_eigenvalues"],
        }
    obs = {n: d["observed"] for n, d in data["runs"].items()}
    grows = all(
        all(b is not None and a is not None and b >= a for a, b in zip(o, o[1:], strict=False)) for o in obs.values()
    )
    counts = "; ".join(" -> ".join("n/a" if v is None else str(v) for v in o) for o in obs.values())
    style.claim(
        fig,
        f"Frozen real features, theory's own GD: collapsed dimensions by depth 1 -> 3: {counts} "
        f"({'grows with depth, as Thm 3 / Cor. 2 predict' if grows else 'does not grow monotonically'})",
    )
    style.save(fig, NAME, data, out_dir)
    return data


if __name__ == "__main__":
    from figures import emp_results as er

    er.cli(main, __doc__.splitlines()[0])
