"""Sec. 5 on a real backbone: collapsed count vs linear-projector depth, and adjacent-layer alignment over time.

Reads ``results/bridge/bridge.json`` (never trains). Left: collapsed dimensions at the end (end-to-end map's
singular values and the embedding spectrum), mean +- s.e. over seeds, per depth. Right: gap-grouped alignment
of adjacent layers (Theorem 2) over training, per depth, beside its chance level (dashed). Where the results
have it, the left title gives per depth the slope of the observed on the predicted change of sigma itself (no
division by a near-zero sigma) beside the log-sigma slope.
"""

from __future__ import annotations

import numpy as np

from figures import style
from figures.bridge_growth import load

NAME = "bridge_depth"


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


def draw(result: dict, out_dir=None) -> dict:
    tables = result["depth"]
    fig, axes = style.plt.subplots(len(tables), 2, figsize=(9, 3.4 * len(tables)), squeeze=False)
    data: dict = {"claim": "collapsed count vs linear-projector depth, and adjacent-layer alignment vs chance (Sec. 5)",
                  "panels": []}
    grows, ends = [], []
    for (ax_c, ax_a), table in zip(axes, tables, strict=True):
        rows = table["by_depth"]
        depth = np.array([r["depth"] for r in rows])
        for key, color, label in (("collapsed_end_to_end", style.AUGMENTED, "end-to-end map"),
                                  ("collapsed_embedding", style.CLEAN, "embedding spectrum")):
            m = np.array([r[key]["mean"] for r in rows], dtype=float)
            s = np.array([r[key]["se"] or 0.0 for r in rows], dtype=float)
            ax_c.errorbar(depth, m, yerr=s, marker="o", color=color, capsize=3, label=label)
        seeds = ", ".join(f"depth {r['depth']}: {r['seeds']}" for r in rows)
        counts = ", ".join(f"{r['collapsed_end_to_end']['mean']:.1f}" for r in rows)
        s0 = table["settings"]
        title = f"{s0.get('monitor_loss')}, {s0.get('optimizer', '?')}: collapsed {counts}\nseeds {seeds}"
        sigma = _sigma_slopes(result, s0, [r["depth"] for r in rows])
        if sigma:
            title += f"\n{sigma}"
        ax_c.set(title=title,
                 xlabel="projector depth (linear layers)", ylabel="collapsed dimensions at the end",
                 xticks=depth)
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
            color = style.LAYER_COLORS[k % len(style.LAYER_COLORS)]
            ax_a.plot(f, m, color=color, label=f"depth {r['depth']} (end {m[-1]:.2f}, chance {c[-1]:.2f})")
            ax_a.plot(f, c, color=color, ls="--", lw=0.8)
            ends.append((r["depth"], m[-1], c[-1]))
        ax_a.set(title="alignment of adjacent layers (dashed: chance)", xlabel="training time (fraction)",
                 ylabel="gap-grouped alignment", ylim=(-0.02, 1.02))
        if ax_a.lines:
            ax_a.legend(loc="lower right")
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
                f"{', '.join(f'{c:.2f}' for _, _, c in ends)}: above chance (by > 0.05) at {above} of {len(ends)} "
                "depths")
    else:
        tail = "no alignment measured"
    style.claim(fig, f"{head}; {tail} (Sec. 5)")
    style.save(fig, NAME, data, out_dir)
    return data


def main(quick: bool = False, out_dir=None) -> dict:
    return draw(load(), out_dir)


if __name__ == "__main__":
    style.cli(main, __doc__.splitlines()[0])
