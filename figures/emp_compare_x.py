"""Theory vs the trained network: X = Sigma0 - Sigma1 (Lemma 2) from real frozen features.

Reads ``results/compare/*/compare.json`` written by ``python -m empirical.compare`` (never trains), or the
compare.json of the folder given as argument. One row per
checkpoint: (a) X's eigenvalues (normalized by max|eigenvalue|) for the trained map W, W rescaled to the real
loss's softmax sharpness (``matched``) and W -> 0 (``apriori``); (b) the embedding gain |W v_k|^2 along each
eigen-direction v_k against its eigenvalue: Theorem 1 says W shrinks where X < 0; (c) W's singular values in
the feature support with the collapse threshold.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from figures import style

NAME = "emp_compare_x"
RESULTS = os.path.join(style.REPO, "results", "compare")
VARIANTS = (("trained", "#1f77b4"), ("matched", "#ff7f0e"), ("apriori", "#2ca02c"))


def load_results(root: str | None = None) -> dict[str, dict]:
    """{run name: compare.json} for a folder holding compare.json, or every one under ``root`` (default
    results/compare); MissingResults when there is none."""
    root = RESULTS if root is None else str(root)
    if os.path.isfile(os.path.join(root, "compare.json")):
        paths = [os.path.join(root, "compare.json")]
    else:
        paths = sorted(glob.glob(os.path.join(root, "*", "compare.json")))
    if not paths:
        raise style.MissingResults(
            f"no {style.shown(root)}/*/compare.json; run python -m empirical.compare --out {style.shown(root)}/NAME"
        )
    out = {}
    for p in paths:
        with open(p) as f:
            out[os.path.basename(os.path.dirname(p))] = json.load(f)
    return out


def title(name: str, res: dict) -> str:
    c = res["config"]
    steps = res.get("trained_steps", c.get("total_steps"))
    head = f"{name}: {c['dataset']}, {c['backbone']}, projector {c['projector']}"
    return f"{head}, step {steps} of {c.get('total_steps')}"


def main(quick: bool = False, out_dir=None, results=None) -> dict:
    runs = load_results(results)
    data: dict = {
        "claim": "Theorem 1 on real features: W shrinks along X's negative eigen-directions",
        "runs": {},
    }
    fig = style.plt.figure(figsize=(12, 4.3 * len(runs)))
    rows = fig.subfigures(len(runs), 1, squeeze=False)[:, 0]
    for sub, (name, res) in zip(rows, runs.items(), strict=True):
        xf = res["x_from_features"]
        ax_e, ax_g, ax_w = sub.subplots(1, 3)
        summary = {"support_dim": xf["support_dim"], "weight_collapsed": xf["weight_collapsed"]}
        for variant, color in VARIANTS:
            d = xf[variant]
            ev = np.asarray(d["eigenvalues"])
            top = np.max(np.abs(ev))
            ax_e.plot(ev / top, color=color, label=f"{variant}: {d['n_negative']} negative")
            ax_g.plot(
                ev / top,
                style.log10(d["gain_along_eigenvectors"], 1e-30),
                ".",
                color=color,
                ms=4,
                alpha=0.8,
                label=f"{variant} (Spearman {d['spearman_eigenvalue_vs_gain']:+.2f})",
            )
            summary[variant] = {
                k: d[k]
                for k in (
                    "n_negative",
                    "overlap_same_count",
                    "chance_overlap",
                    "rayleigh_collapsed",
                    "rayleigh_surviving",
                    "stationarity",
                )
            }
        ax_e.axhline(0, color="k", lw=0.7)
        ax_e.set(
            xlabel="eigen-direction k (descending)",
            ylabel="eigenvalue / max|eigenvalue|",
            title=f"X in the {xf['support_dim']}-dim feature support",
        )
        ax_e.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
        ax_g.axvline(0, color="k", lw=0.7)
        ax_g.set(
            xlabel="eigenvalue of X / max|eigenvalue|",
            ylabel="log10 |W v_k|²",
            title="gain of the trained map along X's eigen-directions",
        )
        ax_g.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
        s2 = np.asarray(xf["weight_singular_values"]) ** 2
        ax_w.plot(style.log10(s2 / s2.max(), 1e-30), color=style.CLEAN)
        ax_w.axhline(np.log10(1e-3), color=style.PREDICTION, ls="--", label="collapse threshold 1e-3")
        ax_w.set(
            xlabel="rank",
            ylabel="log10 σ_k² / σ_1²",
            title=f"end-to-end W in the support: {xf['weight_collapsed']} collapsed",
        )
        ax_w.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
        sub.suptitle(title(name, res), fontsize=9)
        data["runs"][name] = summary
    style.claim(
        fig, "X from real features (Lemma 2, paper loss): where is X negative, and does W shrink there?"
    )
    style.save(fig, NAME, data, out_dir)
    return data


if __name__ == "__main__":
    from figures import emp_results as er

    er.cli(main, __doc__.splitlines()[0])
