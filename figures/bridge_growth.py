"""Lemma 2 during training: predicted vs observed change of log sigma_i between monitor steps.

Reads ``results/bridge/bridge.json`` (``python -m empirical.bridge RUN ... --out results/bridge``; never
trains). One panel per group of seeds (loss, optimizer, depth): every projector singular value of every
interval, predicted step x (v_i^T X v_i - lambda) against the observed change, coloured by training time,
with the identity line; the title gives Spearman and slope (mean +- s.e. over seeds) beside chance and the
persistence baseline, and, where the results have them, the momentum-history prediction, the within-interval
medians of the prediction and of persistence, and the comparison in sigma itself (no division by sigma).
"""

from __future__ import annotations

import json
import os

import numpy as np

from figures import style

NAME = "bridge_growth"
RESULTS = os.path.join(style.REPO, "results", "bridge")


def load(root: str = RESULTS) -> dict:
    path = os.path.join(root, "bridge.json")
    if not os.path.exists(path):
        raise style.MissingResults(
            f"no {style.shown(path)}; run python -m empirical.bridge RUN ... --out {style.shown(root)}"
        )
    with open(path) as f:
        return json.load(f)


def fmt(m: dict, signed: bool = True) -> str:
    if m["mean"] is None:
        return "n/a"
    s = f"{m['mean']:+.2f}" if signed else f"{m['mean']:.2f}"
    return s + (f" ± {m['se']:.2f}" if m.get("se") is not None else "")


def group_label(s: dict) -> str:
    return f"{s.get('monitor_loss')}, {s.get('optimizer', '?')}, depth {s.get('depth')}"


def extra_caption(i: dict) -> str:
    """The lines of the newer bridge fields, each beside what it is compared with (empty for results written
    before them): momentum history, within-interval persistence, the change of sigma itself."""
    def have(key: str) -> bool:
        return i.get(key, {}).get("mean") is not None

    lines = []
    if have("history_share") and i["history_share"]["mean"] > 0:
        lines.append(f"history ({100 * i['history_share']['mean']:.0f}% of step): Spearman "
                     f"{fmt(i['history_spearman'])}, Δσ slope {fmt(i['history_delta_sigma_slope'])}")
    if have("baseline_median_interval_spearman"):
        lines.append(f"within an interval: prediction {fmt(i['median_interval_spearman_paired'])}, "
                     f"persistence {fmt(i['baseline_median_interval_spearman'])}")
    if have("delta_sigma_spearman"):
        lines.append(f"Δσ: Spearman {fmt(i['delta_sigma_spearman'])}, slope {fmt(i['delta_sigma_slope'])}")
    return "".join(f"\n{line}" for line in lines)


def draw(result: dict, out_dir=None) -> dict:
    groups = [g for g in result["groups"] if g["instantaneous"]["spearman"]["n"]]
    if not groups:
        raise style.MissingResults("no run with a scalar effective step (SGD or LARS) in the bridge results")
    fig, axes = style.plt.subplots(1, len(groups), figsize=(4.4 * len(groups), 4.4), squeeze=False)
    data: dict = {"claim": "Lemma 2 between monitor steps: predicted (step x v_i^T X v_i) vs observed change of "
                           "log sigma_i", "panels": []}
    for ax, g in zip(axes[0], groups, strict=True):
        pred, obs, when = [], [], []
        for name in g["runs"]:
            sc = result["runs"][name]["instantaneous"].get("scatter")
            if sc:
                pred += sc["predicted"]
                obs += sc["observed"]
                when += sc["time"]
        pred, obs = np.asarray(pred, float), np.asarray(obs, float)
        art = ax.scatter(pred, obs, c=when, cmap=style.SEQUENTIAL, s=5, alpha=0.6, vmin=0, vmax=1,
                         rasterized=True)
        outside = 0
        if len(pred):
            ok = np.isfinite(pred) & np.isfinite(obs)
            # a few modes near sigma = 0 get huge predicted changes (the rate divides by sigma): the view is the
            # central 99% of both axes, and the caption counts the points left outside it
            lo = float(min(np.percentile(pred[ok], 0.5), np.percentile(obs[ok], 0.5)))
            hi = float(max(np.percentile(pred[ok], 99.5), np.percentile(obs[ok], 99.5)))
            pad = 0.05 * (hi - lo)
            lo, hi = lo - pad, hi + pad
            outside = int(np.sum(ok & ((pred < lo) | (pred > hi) | (obs < lo) | (obs > hi))))
            ax.plot([lo, hi], [lo, hi], color=style.PREDICTION, lw=0.8, label="observed = predicted")
            ax.set(xlim=(lo, hi), ylim=(lo, hi))
        i = g["instantaneous"]
        caption = (f"Spearman {fmt(i['spearman'])}, slope {fmt(i['slope'])}\n"
                   f"chance (95%) {fmt(i['chance_spearman_95'], False)}\n"
                   f"persistence {fmt(i['baseline_spearman'])}; {g['seeds']} seed(s)\n"
                   f"{outside} of {len(pred)} points outside the view")
        if i.get("exact_gradient_spearman", {}).get("mean") is not None:  # cosine: the exact-gradient rates
            caption += (f"\nexact gradient: Spearman {fmt(i['exact_gradient_spearman'])}, "
                        f"slope {fmt(i['exact_gradient_slope'])}")
        caption += extra_caption(i)
        ax.set_title(f"{group_label(g['settings'])}\n{caption}", fontsize=8)
        ax.set(xlabel="predicted change of log σ_i", ylabel="observed change of log σ_i")
        data["panels"].append({"settings": g["settings"], "seeds": g["seeds"], "caption": caption,
                               "instantaneous": i})
    fig.colorbar(art, ax=axes[0, -1], label="training time (fraction)")
    # one legend for every panel, under them: inside an axes it would cover the scatter
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", frameon=False)
    rho = [p["instantaneous"]["spearman"]["mean"] for p in data["panels"]]
    style.claim(fig, "Lemma 2 between monitor steps: predicted (step × v_iᵀXv_i) vs observed change of log σ_i; "
                f"Spearman {min(rho):+.2f} to {max(rho):+.2f} over {len(rho)} groups (1 = same order; chance and "
                "persistence baseline in each panel)")
    style.save(fig, NAME, data, out_dir)
    return data


def main(quick: bool = False, out_dir=None) -> dict:
    return draw(load(), out_dir)


if __name__ == "__main__":
    style.cli(main, __doc__.splitlines()[0])
