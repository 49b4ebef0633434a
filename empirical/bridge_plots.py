"""The three figures of ``empirical.bridge``, shipped with the installed package (``figures`` is not installed).

Each builder takes the bridge results (the dict of bridge.json) and returns ``(figure, data)``; ``save`` writes
``<name>.png``, ``.pdf`` and ``.json`` the way the gallery does (titles wrapped to fit, no dates or versions in
the metadata, temp file + rename), so the same results give the same bytes on every rerun. The gallery's
``figures/bridge_*.py`` call the same builders and save through ``figures.style``.

* ``growth``: Lemma 2 between monitor steps, predicted vs observed change of log sigma_i (one panel per group).
* ``early_warning``: Theorem 1 as an early warning, AUC and subspace overlap over training.
* ``depth``: Sec. 5, collapsed count vs linear-projector depth and adjacent-layer alignment over time.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dimcollapse.io import atomic_path, write_json
from empirical.bridge import group_label
from empirical.plotting import RC, fit_titles

NAMES = ("bridge_growth", "bridge_early_warning", "bridge_depth")

# the gallery's look (figures.style): one colour per role, one font size
CLEAN = "#1f77b4"
AUGMENTED = "#d62728"
PREDICTION = "black"
LAYER_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")
SEQUENTIAL = "viridis"


class NoFigure(RuntimeError):
    """The results hold nothing this figure can draw (e.g. only AdamW runs: no growth figure)."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _claim(fig, text: str) -> None:
    """The one-line title stating the claim the figure checks."""
    fig.suptitle(text, fontsize=10, fontweight="bold")


def fmt(m: dict, signed: bool = True) -> str:
    """mean +- s.e. of a ``bridge.mean_se`` dict ("n/a" without a mean)."""
    if m["mean"] is None:
        return "n/a"
    s = f"{m['mean']:+.2f}" if signed else f"{m['mean']:.2f}"
    return s + (f" ± {m['se']:.2f}" if m.get("se") is not None else "")


# ---- (a) growth -------------------------------------------------------------------------------------------------

def extra_caption(i: dict) -> str:
    """The lines of the newer bridge fields, each beside what it is compared with (empty for results written
    before them): momentum history, within-interval persistence, the change of sigma itself."""
    def have(key: str) -> bool:
        return i.get(key, {}).get("mean") is not None

    lines = []
    if have("history_share") and i["history_share"]["mean"] > 0:
        lines.append(f"history ({100 * i['history_share']['mean']:.0f}% of step; not the points): Spearman "
                     f"{fmt(i['history_spearman'])}, Δσ slope {fmt(i['history_delta_sigma_slope'])}")
    if have("baseline_median_interval_spearman"):
        lines.append(f"within an interval: prediction {fmt(i['median_interval_spearman_paired'])}, "
                     f"persistence {fmt(i['baseline_median_interval_spearman'])}")
    if have("delta_sigma_spearman"):
        lines.append(f"Δσ: Spearman {fmt(i['delta_sigma_spearman'])}, slope {fmt(i['delta_sigma_slope'])}")
    return "".join(f"\n{line}" for line in lines)


def growth(result: dict):
    """Lemma 2 between monitor steps: every projector singular value of every interval, predicted step x
    (v_i^T X v_i - lambda) against the observed change, coloured by training time, with the identity line."""
    groups = [g for g in result["groups"] if g["instantaneous"]["spearman"]["n"]]
    if not groups:
        raise NoFigure("no run with a scalar effective step (SGD or LARS) in the bridge results")
    plt = _pyplot()
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, len(groups), figsize=(4.4 * len(groups), 4.4), squeeze=False)
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
            art = ax.scatter(pred, obs, c=when, cmap=SEQUENTIAL, s=5, alpha=0.6, vmin=0, vmax=1, rasterized=True)
            outside = 0
            if len(pred):
                ok = np.isfinite(pred) & np.isfinite(obs)
                # a few modes near sigma = 0 get huge predicted changes (the rate divides by sigma): the view is
                # the central 99% of both axes, and the caption counts the points left outside it
                lo = float(min(np.percentile(pred[ok], 0.5), np.percentile(obs[ok], 0.5)))
                hi = float(max(np.percentile(pred[ok], 99.5), np.percentile(obs[ok], 99.5)))
                pad = 0.05 * (hi - lo)
                lo, hi = lo - pad, hi + pad
                outside = int(np.sum(ok & ((pred < lo) | (pred > hi) | (obs < lo) | (obs > hi))))
                ax.plot([lo, hi], [lo, hi], color=PREDICTION, lw=0.8, label="observed = predicted")
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
        _claim(fig, "Lemma 2 between monitor steps: predicted (step × v_iᵀXv_i) vs observed change of log σ_i; "
                    f"Spearman {min(rho):+.2f} to {max(rho):+.2f} over {len(rho)} groups (1 = same order; chance "
                    "and persistence baseline in each panel)")
    return fig, data


# ---- (b) early warning ------------------------------------------------------------------------------------------

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


def early_warning_verdict(groups: list[dict]) -> str:
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


def early_warning(result: dict):
    """Per group of seeds: the AUC of -v^T X v for the end map's collapsed directions and the overlap of X's
    lowest eigenvectors with them, over training, beside the baselines and chance."""
    groups = result["groups"]
    plt = _pyplot()
    with plt.rc_context(RC):
        fig, axes = plt.subplots(2, len(groups), figsize=(4.2 * len(groups), 6.4), squeeze=False)
        data: dict = {"claim": "does X at an early step rank the directions collapsed at the end (Thm 1), better "
                               "than the map's weakest directions do?", "panels": []}
        for col, g in enumerate(groups):
            ew = g["early_warning"]
            for row, (metric, chance, label) in enumerate((("auc", 0.5, "AUC"), ("overlap", None, "overlap"))):
                ax = axes[row, col]
                for key, color, name in ((f"{metric}_x", PREDICTION, "X (theory)"),
                                         (f"{metric}_baseline", CLEAN, "weakest map directions"),
                                         (f"{metric}_trend", AUGMENTED, "shrinking since step 0")):
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
                title = f"{group_label(g['settings'])}\n{g['seeds']} seed(s); {cap}" if row == 0 else cap
                ax.set(title=title, xlabel="monitor step (fraction of training)", ylabel=label, ylim=(-0.02, 1.02))
            data["panels"].append({"settings": g["settings"], "seeds": g["seeds"], "early_warning": ew})
        # one legend under all panels: the curves fill the panels at different heights
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=3, frameon=False)
        _claim(fig, early_warning_verdict(groups))
    return fig, data


# ---- (c) depth and alignment ------------------------------------------------------------------------------------

def _sigma_slopes(result: dict, settings: dict, depths: list[int]) -> str:
    """Per depth, the slope of the observed on the predicted change in sigma itself (no division by a near-zero
    sigma) beside the log-sigma slope of all modes; empty for results written before the sigma comparison."""
    parts = []
    for dep in depths:
        group = next((g for g in result.get("groups", []) if g["settings"].get("depth") == dep and settings ==
                      {k: v for k, v in g["settings"].items() if k not in ("depth", "projector_layers")}), None)
        i = (group or {}).get("instantaneous", {})
        ds, log = i.get("delta_sigma_slope", {}).get("mean"), i.get("slope", {}).get("mean")
        if ds is not None and log is not None:
            parts.append(f"{dep}: {ds:.2f} ({log:.2f})")
    return "slope in Δσ (in Δlog σ) by depth: " + ", ".join(parts) if parts else ""


def depth(result: dict):
    """Left: collapsed dimensions at the end per depth (mean +- s.e. over seeds); right: alignment (chance-corrected)
    of adjacent layers over training per depth, beside its chance level (dashed)."""
    tables = result["depth"]
    plt = _pyplot()
    with plt.rc_context(RC):
        fig, axes = plt.subplots(len(tables), 2, figsize=(9, 3.4 * len(tables)), squeeze=False)
        data: dict = {"claim": "collapsed count vs linear-projector depth, and adjacent-layer alignment vs chance "
                               "(Sec. 5)", "panels": []}
        grows, ends = [], []
        for (ax_c, ax_a), table in zip(axes, tables, strict=True):
            rows = table["by_depth"]
            dep = np.array([r["depth"] for r in rows])
            for key, color, label in (("collapsed_end_to_end", AUGMENTED, "end-to-end map"),
                                      ("collapsed_embedding", CLEAN, "embedding spectrum")):
                m = np.array([r[key]["mean"] for r in rows], dtype=float)
                s = np.array([r[key]["se"] or 0.0 for r in rows], dtype=float)
                ax_c.errorbar(dep, m, yerr=s, marker="o", color=color, capsize=3, label=label)
            seeds = ", ".join(f"depth {r['depth']}: {r['seeds']}" for r in rows)
            counts = ", ".join(f"{r['collapsed_end_to_end']['mean']:.1f}" for r in rows)
            s0 = table["settings"]
            title = f"{group_label(s0)}: collapsed {counts}\nseeds {seeds}"
            sigma = _sigma_slopes(result, s0, [r["depth"] for r in rows])
            if sigma:
                title += f"\n{sigma}"
            ax_c.set(title=title, xlabel="projector depth (linear layers)", ylabel="collapsed dimensions at the end",
                     xticks=dep)
            ax_c.legend()
            counts_m = [r["collapsed_end_to_end"]["mean"] for r in rows]
            if len(rows) > 1:
                grows.append(all(b > a for a, b in zip(counts_m, counts_m[1:], strict=False)))
            for k, r in enumerate(rows):
                if not r["alignment"]:
                    continue
                f = np.array([a["fraction"] for a in r["alignment"]])
                m = np.array([a["score"]["mean"] for a in r["alignment"]])
                c = np.array([a["chance"]["mean"] for a in r["alignment"]])
                color = LAYER_COLORS[k % len(LAYER_COLORS)]
                ax_a.plot(f, m, color=color, label=f"depth {r['depth']} (end {m[-1]:.2f}, chance {c[-1]:.2f})")
                ax_a.plot(f, c, color=color, ls="--", lw=0.8)
                ends.append((r["depth"], m[-1], c[-1]))
            ax_a.set(title="alignment of adjacent layers (dashed: chance)", xlabel="training time (fraction)",
                     ylabel="alignment (chance-corrected)", ylim=(-0.02, 1.02))
            if ax_a.lines:
                ax_a.legend(loc="upper left")  # the curves rise from 0: the top left stays free
            else:  # a one-layer projector has no adjacent pair
                ax_a.text(0.5, 0.5, "no adjacent layers at this depth", transform=ax_a.transAxes, ha="center",
                          color="grey")
            data["panels"].append(table)
        # what the numbers show: growth with depth, and the alignment's end value against its chance level
        head = ("collapsed count grows with projector depth" if grows and all(grows)
                else "collapsed count does not grow with depth in every setting" if grows else "one depth only")
        if ends:
            above = sum(m - c > 0.05 for _, m, c in ends)
            tail = (f"adjacent-layer alignment ends at {', '.join(f'{m:.2f}' for _, m, _ in ends)} vs chance "
                    f"{', '.join(f'{c:.2f}' for _, _, c in ends)}: above chance (by > 0.05) at {above} of "
                    f"{len(ends)} depths")
        else:
            tail = "no alignment measured"
        _claim(fig, f"{head}; {tail} (Sec. 5)")
    return fig, data


BUILDERS = {"bridge_growth": growth, "bridge_early_warning": early_warning, "bridge_depth": depth}


# ---- writing ----------------------------------------------------------------------------------------------------

def save(fig, name: str, data: dict, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``name``.png/.pdf/.json into ``out_dir``; return the three paths (closes ``fig``)."""
    plt = _pyplot()
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.{ext}" for ext in ("png", "pdf", "json")]
    with plt.rc_context(RC):
        fit_titles(fig)
        # metadata without dates or versions: the same data give the same bytes on every rerun
        with atomic_path(paths[0]) as tmp:
            fig.savefig(tmp, format="png", metadata={"Software": None})
        with atomic_path(paths[1]) as tmp:
            fig.savefig(tmp, format="pdf", metadata={
                "CreationDate": None, "ModDate": None, "Producer": None, "Creator": None})
    write_json(paths[2], data)
    plt.close(fig)
    return paths


def draw_all(result: dict, out_dir: str | os.PathLike) -> tuple[list[Path], list[str]]:
    """Every bridge figure the results allow, saved into ``out_dir``: (the files written, a note per figure
    that could not be drawn)."""
    written, notes = [], []
    for name, build in BUILDERS.items():
        try:
            fig, data = build(result)
        except NoFigure as e:
            notes.append(f"no {name} figure ({e})")
            continue
        written += save(fig, name, data, out_dir)
    return written, notes
