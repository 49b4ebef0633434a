"""Paper Fig. 11: embedding spectra for 1-4 layers, linear and with ReLU between layers.

Every layer 16x16 with the paper's init (sigma_k = exp(-0.35 k), random orthogonal factors), weak isotropic
augmentation (noise std 0.001), lr 0.01, 10,000 GD steps, and the official toy code's loss (dot-product logits
z.z'/0.1, ``loss="dot"``), with which the paper's toy figures were made; the linear runs are repeated with the
paper's Eqn 2 loss (``loss="paper"``) for comparison. One layer cannot collapse under
weak augmentation (X > 0, Theorem 1); deeper networks collapse more (Corollary 2's implicit regularization,
stronger with depth since sigma' ~ sigma^(2L-1)).

t = 0: with this init the end-to-end embedding variances spread like exp(-0.7 L k), so at L >= 2 many dims
start under the collapse rule (dotted lines in panel (c)): most of the count at depth is the init's, kept by
the slow growth of small modes, not created by training. Collapse is counted against
S = max(largest variance at t = 0, at the end).

ReLU: the last layer's gradient is exactly W_L X(h), X(h) the contrastive covariance of its input features
h >= 0 (Theorem 1 applied to W_L). With the dot loss X(h) has one strongly negative eigenvalue whose
eigenvector is ~E[h]; W_L's weakest direction ends on it. That is the one ReLU collapse X predicts: the
embedding dimension at the float64 floor in every ReLU run.
"""

from __future__ import annotations

import numpy as np

from figures import style
from figures.common import SimConfig, analyse, embeddings, eval_inputs, integrate, one_blas_thread
from theory import COLLAPSE_RTOL, embedding_spectrum

NAME = "fig11_depth"
DEPTHS = (1, 2, 3, 4)
# an independent numpy re-implementation of this setting (not the paper's numbers, which exist only in a plot):
# collapsed dims of 16
REFERENCE = {"linear": {1: 0, 2: 3, 3: 9, 4: 12}, "relu": {2: 1, 3: 4}}


def run(layers: int, relu: bool, steps: int, loss: str = "dot") -> dict:
    cfg = SimConfig(
        layers=layers, relu=relu, augmented_dims=16, augment_strength=0.001, lr=0.01, steps=steps, loss=loss,
        init="paper",
    )
    with one_blas_thread():
        traj, rng, fixed = integrate(cfg)
        report = analyse(cfg, traj, rng, fixed)
    spec = embedding_spectrum(embeddings(traj.final, eval_inputs(cfg), relu))
    out = {
        "layers": layers,
        "relu": relu,
        "loss": loss,
        "singular_values": report.embedding_singular_values,
        "singular_values_init": report.embedding_singular_values_initial,
        "collapse_reference": report.collapse_reference,
        "collapsed_dims": report.collapsed_dims,
        "collapsed_dims_init": report.collapsed_dims_initial,
        "collapsed_by_training": report.collapsed_by_training,
        "effective_rank": spec.effective_rank,
    }
    r = report.relu_last_layer
    if r is not None:
        out["last_layer"] = {
            "predicted": r.predicted_collapsed_dims,
            "observed": r.observed_collapsed_dims,
            "overlap": r.overlap,
            "inside_observed": r.predicted_inside_observed,
            "observed_initial": r.observed_collapsed_dims_initial,
            "cosine_with_mean_h": r.cosine_most_negative_with_mean_h["final"],
            "most_negative_eigenvalue": r.most_negative_eigenvalue,
        }
    return out


def main(quick: bool = False, out_dir=None) -> dict:
    steps = 600 if quick else 10000
    depths = DEPTHS[:3] if quick else DEPTHS
    runs = {
        "linear": [run(L, False, steps) for L in depths],
        "relu": [run(L, True, steps) for L in depths if L > 1],
        "linear_paper_loss": [run(L, False, steps, "paper") for L in depths],
    }
    data = {
        "claim": "one layer does not collapse under weak augmentation; deeper networks collapse more",
        "config": {"steps": steps, "lr": 0.01, "augment_strength": 0.001, "init": "paper", "loss": "dot"},
        "relu_last_layer_prediction": {str(r["layers"]): r["last_layer"] for r in runs["relu"]},
        "depths": depths,
        "runs": runs,
        "reference_r4": REFERENCE,
        "collapsed": {kind: {str(r["layers"]): r["collapsed_dims"] for r in rs} for kind, rs in runs.items()},
    }
    draw(data, out_dir)
    return data


def draw(data: dict, out_dir=None) -> None:
    depths = data["depths"]
    cols = dict(zip(depths, style.colors(len(depths), "viridis"), strict=True))
    fig, axes = style.plt.subplots(1, 3, figsize=(12.5, 3.9))
    for ax, kind in zip(axes[:2], ("linear", "relu"), strict=True):
        _draw_spectra(ax, kind, data, cols)
    _draw_counts(axes[2], data)
    cfg = data["config"]
    style.claim(
        fig,
        "Fig. 11: deeper networks end more collapsed (dotted: at t = 0, paper init); ReLU's predicted "
        f"collapse is W_L's E[h] direction ({cfg['steps']} steps)",
    )
    style.save(fig, NAME, data, out_dir)


def _runs(data: dict, kind: str) -> list[dict]:
    """The runs of one kind by depth; one layer has no ReLU, so the ReLU series starts at the linear L = 1."""
    return data["runs"][kind] if kind == "linear" else [data["runs"]["linear"][0]] + data["runs"][kind]


def _draw_spectra(ax, kind: str, data: dict, cols: dict) -> None:
    """Panels (a) and (b): every depth's embedding spectrum relative to its largest, the collapse rule under it."""
    for r in _runs(data, kind):
        s = np.asarray(r["singular_values"])
        rel = style.log10(s / s[0])
        ranks = np.arange(1, len(s) + 1)
        ax.plot(
            ranks,
            rel,
            "-o",
            ms=3,
            color=cols[r["layers"]],
            label=f"L = {r['layers']}: {r['collapsed_dims']} collapsed",
        )
    ax.axhline(np.log10(COLLAPSE_RTOL), color="grey", ls=":", lw=1, label="collapse rule (1e-3)")
    if kind == "relu":
        notes = [f"L = {r['layers']}: predicts {r['last_layer']['predicted']}; "
                 f"{style.fmt(r['last_layer']['inside_observed'])} of it in W_L's "
                 f"{r['last_layer']['observed']} collapsed ({r['last_layer']['observed_initial']} at t = 0)"
                 for r in data["runs"]["relu"]]
        # in the empty middle left: the curves sit near 0 above it and drop only at the last ranks
        ax.text(0.03, 0.5, "last layer, Theorem 1 with X(h):\n" + "\n".join(notes), transform=ax.transAxes,
                ha="left", va="center", fontsize=6.5, bbox={"fc": "white", "ec": "0.8", "alpha": 0.9})
    ax.set(
        xlabel="rank index k (sorted)",
        ylabel="log10 (singular value of C / largest)",
        title="(a) linear layers" if kind == "linear" else "(b) ReLU between layers (L = 1: no ReLU)",
    )
    ax.legend(loc="lower left")


def _draw_counts(ax, data: dict) -> None:
    """Panel (c): collapsed dims against depth, trained and at init, beside the independent re-implementation."""
    for kind, color, marker in (("linear", style.CLEAN, "o"), ("relu", style.AUGMENTED, "s")):
        runs = _runs(data, kind)
        ls = [r["layers"] for r in runs]
        ax.plot(ls, [r["collapsed_dims"] for r in runs], "-" + marker, color=color, label=f"{kind}: trained")
        ax.plot(
            ls,
            [r["collapsed_dims_init"] for r in runs],
            ":" + marker,
            color=color,
            mfc="white",
            alpha=0.7,
            label=f"{kind}: at init",
        )
        if kind == "linear":
            paper = data["runs"]["linear_paper_loss"]
            ax.plot(
                [r["layers"] for r in paper],
                [r["collapsed_dims"] for r in paper],
                "--^",
                color="#2ca02c",
                label="linear, Eqn 2 loss: trained",
            )
        ref = data["reference_r4"][kind]
        ref_l = [L for L in ls if str(L) in ref or L in ref]
        ax.plot(
            ref_l,
            [ref.get(str(L), ref.get(L)) for L in ref_l],
            "x",
            ms=8,
            mew=2,
            color=color,
            label=f"{kind}: independent re-implementation",
        )
    ax.set(
        xlabel="number of layers L",
        ylabel="collapsed embedding dims (of 16)",
        xticks=data["depths"],
        title="(c) collapsed dims vs depth",
        ylim=(-0.5, 28),  # the top 40 % holds the legend, above every count (at most 16)
        yticks=range(0, 17, 4),
    )
    ax.legend(loc="upper left", fontsize=6.5)

if __name__ == "__main__":
    style.cli(main, __doc__.splitlines()[0])
