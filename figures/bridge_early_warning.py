"""Theorem 1 as an early warning: does X at an early step rank the directions that are collapsed at the end?

Reads ``results/bridge/bridge.json`` (never trains). Per group of seeds: the AUC of -v^T X v (X at each
monitor step) for the end map's collapsed directions, beside the baseline (the weakest directions of the map at
that step) and chance 0.5; and the subspace overlap of X's lowest eigenvectors with the collapsed set, beside
the baseline and a random subspace. Where the results have it, the early-trend baseline (the directions that
shrank most since the first row, -Delta log|W v_k|: a rate, like X) is drawn beside the level baseline.
"""

from __future__ import annotations

import numpy as np

from figures import style
from figures.bridge_growth import fmt, group_label, load

NAME = "bridge_early_warning"


def _curve(result: dict, names: list[str], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and standard error over the runs, per monitor step (runs of one group share their steps)."""
    curves = [result["runs"][n]["early_warning"]["curve"] for n in names]
    steps = sorted({e["step"] for c in curves for e in c})
    frac, mean, se = [], [], []
    for st in steps:
        vals = [e[key] for c in curves for e in c if e["step"] == st and e.get(key) is not None]
        if vals:
            frac.append([e["fraction"] for c in curves for e in c if e["step"] == st][0])
            mean.append(np.mean(vals))
            se.append(np.std(vals, ddof=1) / np.sqrt(len(vals)) if len(vals) > 1 else 0.0)
    return np.asarray(frac), np.asarray(mean), np.asarray(se)


def _verdict(groups: list[dict]) -> str:
    """What the AUC at 10 % of training shows, against chance (0.5) and the weakest-directions baseline."""
    pairs = [(g["early_warning"].get("0.1", {}).get("auc_x", {}).get("mean"),
              g["early_warning"].get("0.1", {}).get("auc_baseline", {}).get("mean")) for g in groups]
    pairs = [(x, b) for x, b in pairs if x is not None and b is not None]
    if not pairs:
        return "X at an early step vs the directions collapsed at the end (Thm 1): no AUC at 10 % of training"
    xs, bs = [x for x, _ in pairs], [b for _, b in pairs]
    better = sum(x > b for x, b in pairs)
    trends = [g["early_warning"].get("0.1", {}).get("auc_trend", {}).get("mean") for g in groups]
    trends = [t for t in trends if t is not None]
    trend = f"; shrinking since step 0 {min(trends):.2f}-{max(trends):.2f}" if trends else ""
    return (f"X at 10 % of training ranks the end's collapsed directions with AUC {min(xs):.2f}-{max(xs):.2f} "
            f"(chance 0.5); the map's weakest directions {min(bs):.2f}-{max(bs):.2f}: X ahead in {better} of "
            f"{len(pairs)} groups{trend} (Thm 1 as an early warning)")


def draw(result: dict, out_dir=None) -> dict:
    groups = result["groups"]
    fig, axes = style.plt.subplots(2, len(groups), figsize=(4.2 * len(groups), 6.4), squeeze=False)
    data: dict = {"claim": "does X at an early step rank the directions collapsed at the end (Thm 1), better "
                           "than the map's weakest directions do?", "panels": []}
    for col, g in enumerate(groups):
        ew = g["early_warning"]
        for row, (metric, chance, label) in enumerate((("auc", 0.5, "AUC"), ("overlap", None, "overlap"))):
            ax = axes[row, col]
            for key, color, name in ((f"{metric}_x", style.PREDICTION, "X (theory)"),
                                     (f"{metric}_baseline", style.CLEAN, "weakest map directions"),
                                     (f"{metric}_trend", style.AUGMENTED, "shrinking since step 0")):
                f, m, s = _curve(result, g["runs"], key)
                if len(f):
                    ax.plot(f, m, color=color, label=name)
                    ax.fill_between(f, m - s, m + s, color=color, alpha=0.2)
            level = chance if chance is not None else ew["chance_overlap"]["mean"]
            if level is not None:
                ax.axhline(level, color="gray", ls="--", lw=0.8, label="chance")
            at = ew.get("0.1", {})
            cap = (f"at 10%: X {fmt(at.get(f'{metric}_x', {'mean': None}), False)}, baseline "
                   f"{fmt(at.get(f'{metric}_baseline', {'mean': None}), False)}")
            if at.get(f"{metric}_trend", {}).get("mean") is not None:
                cap += f", trend {fmt(at[f'{metric}_trend'], False)}"
            title = f"{group_label(g['settings'])}, {g['seeds']} seed(s)\n{cap}" if row == 0 else cap
            ax.set(title=title, xlabel="monitor step (fraction of training)", ylabel=label, ylim=(-0.02, 1.02))
        data["panels"].append({"settings": g["settings"], "seeds": g["seeds"], "early_warning": ew})
    # one legend under all panels: the curves fill the panels at different heights
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=3, frameon=False)
    style.claim(fig, _verdict(groups))
    style.save(fig, NAME, data, out_dir)
    return data


def main(quick: bool = False, out_dir=None) -> dict:
    return draw(load(), out_dir)


if __name__ == "__main__":
    style.cli(main, __doc__.splitlines()[0])
