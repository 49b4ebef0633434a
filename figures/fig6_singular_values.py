"""Paper Fig. 6: singular values of W1, W2 and of the embedding covariance in training; Theorem 3 over.

Top row: the InfoNCE simulation (two 16x16 linear layers, paper init sigma_k = exp(-0.35 k), isotropic noise
std 0.001, lr 0.01, 10,000 GD steps as in case_2.py): the smallest singular values of both layers stay
small and the embedding covariance becomes low-rank although X stays positive definite (Corollary 2).
At t = 0 this init already puts 11 of the 16 embedding variances (sigma_k^4 ~ exp(-1.4 k)) under the collapse
rule: training keeps them there while the 5 leading modes grow; the top row shows that lag, not a collapse
that training created (``python -m theory.simulate --layers 2 --augment-strength 0.1 --init 0.1 --steps 3000``
shows one, from an init with nothing collapsed).

Bottom row: Theorem 3's premise made exact. X is frozen at its value at initialization, the two layers start
aligned and balanced with the same initial singular values, and the flow W' = -dL/dW is integrated (RK45,
tight tolerances); the closed form sigma_k(t) = (sigma0_k^-2 - 2 lambda_k t)^(-1/2) (Eqn 10, L = 2) is drawn
over it. This row checks the closed form against a simulation of its own premise, not the top row's run.
"""

from __future__ import annotations

import numpy as np

from figures import style
from figures.common import (
    SimConfig,
    analyse,
    covariance_samples,
    embeddings,
    eval_inputs,
    integrate,
    one_blas_thread,
)
from theory import COLLAPSE_RTOL, singular_values, theorem3_check

NAME = "fig6_singular_values"


def main(quick: bool = False, out_dir=None) -> dict:
    cfg = SimConfig(
        layers=2,
        augmented_dims=16,
        augment_strength=0.001,
        lr=0.01,
        steps=600 if quick else 10000,
        init="paper",
    )
    with one_blas_thread():
        traj, rng, fixed = integrate(cfg)
        report = analyse(cfg, traj, rng, fixed)
        x_init = covariance_samples(cfg, [w[0] for w in traj.weights], np.random.default_rng(cfg.seed + 5)).mean(0)
        t3 = theorem3_check(x_init, np.linalg.svd(traj.weights[0][0], compute_uv=False), cfg.layers)
    sv1 = np.linalg.svd(traj.weights[0], compute_uv=False)  # [time, rank]
    sv2 = np.linalg.svd(traj.weights[1], compute_uv=False)
    emb = singular_values(embeddings([traj.weights[0], traj.weights[1]], eval_inputs(cfg)))
    closed, sim = np.asarray(t3["closed_form"]), np.asarray(t3["simulated"])
    x = report.x_predictions
    data = {
        "claim": "the smallest singular values lag and the embedding covariance becomes low-rank "
        "although X has no significantly negative eigenvalue; "
        "Theorem 3's closed form matches the aligned fixed-X flow",
        "config": vars(cfg),
        "infonce": {
            "times": traj.times,
            "sigma_w1": sv1,
            "sigma_w2": sv2,
            "embedding_singular_values": emb,
            "collapsed_dims_final": report.collapsed_dims,
            "collapsed_dims_initial": report.collapsed_dims_initial,
            "collapsed_by_training": report.collapsed_by_training,
            "collapse_reference": report.collapse_reference,
            "x_is_psd": x.is_psd,
            "x_verdict": x.x_verdict,
            "x_eigenvalues_initial": x.contrastive_covariance_eigenvalues["initial"],
            "x_eigenvalues_late": x.contrastive_covariance_eigenvalues["final"],
        },
        "fixed_x": {
            "times": t3["times"],
            "lambda": t3["lambda"],
            "sigma0": t3["sigma0"],
            "simulated": sim,
            "closed_form": closed,
            "max_relative_error": t3["max_relative_error"],
            "predicted_collapsed": t3["predicted_collapsed"],
            "observed_collapsed": t3["observed_collapsed"],
        },
    }
    draw(data, out_dir)
    return data


def _word(verdict: str) -> str:
    return {"psd": "shown PSD", "not psd": "not PSD", "undetermined": "undetermined"}[verdict]


def draw(data: dict, out_dir=None) -> None:
    inf, fx = data["infonce"], data["fixed_x"]
    fig, axes = style.plt.subplots(2, 3, figsize=(12.5, 7.2))
    dim = np.asarray(inf["sigma_w1"]).shape[1]
    cols = style.colors(dim)
    _draw_infonce(axes[0], inf, cols)
    _draw_fixed_x(axes[1], fx, cols)
    cfg = data["config"]
    style.claim(
        fig,
        f"Fig. 6: small singular values lag and the embedding stays low-rank ({inf['collapsed_dims_initial']}/{dim} "
        f"at t = 0 with the paper init, {inf['collapsed_dims_final']}/{dim} at the end) although X has no "
        f"significantly negative eigenvalue ({_word(inf['x_verdict']['initial'])} at t = 0, "
        f"{_word(inf['x_verdict']['final'])} at the end); "
        f"Theorem 3's closed form is exact for aligned layers ({cfg['steps']} steps, lr {cfg['lr']})",
    )
    style.save(fig, NAME, data, out_dir)


def _draw_infonce(axes, inf: dict, cols: list) -> None:
    """Top row: singular values of W1, W2 and the embedding covariance over the InfoNCE run, one curve per rank."""
    t = np.asarray(inf["times"])
    keep = t > 0
    series = (
        ("sigma_w1", "singular values of W1", "(a) InfoNCE: W1"),
        ("sigma_w2", "singular values of W2", "(b) InfoNCE: W2"),
        (
            "embedding_singular_values",
            "singular values of C (variances)",
            "(c) InfoNCE: embedding covariance",
        ),
    )
    dim = len(cols)
    for ax, (key, ylabel, title) in zip(axes, series, strict=True):
        values = np.asarray(inf[key])
        for k in range(dim):
            ax.loglog(t[keep], np.maximum(values[keep, k], 1e-300), color=cols[k], lw=1)
        ax.set(xlabel="training time t = lr × step", ylabel=ylabel, title=title)
    emb = np.asarray(inf["embedding_singular_values"])
    axes[2].loglog(
        t[keep],
        COLLAPSE_RTOL * np.maximum(emb[keep, 0], emb[0, 0]),
        color="grey",
        ls=":",
        lw=1.2,
        label=f"collapse rule ({COLLAPSE_RTOL:g} × largest so far)",
    )
    # room under the smallest variance for the legend, so that it covers no curve
    low = float(np.min(emb[keep][emb[keep] > 0]))
    axes[2].set_ylim(bottom=low * 10**-4.5)
    axes[2].legend(loc="lower left", title=f"collapsed: {inf['collapsed_dims_initial']} of {dim} at t = 0, "
                   f"{inf['collapsed_dims_final']} at the end")
    axes[0].text(
        0.03, 0.97, "colour = rank k (dark = largest)", transform=axes[0].transAxes, va="top", fontsize=7.5
    )
    # in the title, not over the curves, which fill the panel's top
    axes[1].set_title(
        f"(b) InfoNCE: W2; X at t = 0 {_word(inf['x_verdict']['initial'])}, at the end "
        f"{_word(inf['x_verdict']['final'])} (lowest eigenvalue at the end {min(inf['x_eigenvalues_late']):.1e})"
    )


def _draw_fixed_x(axes, fx: dict, cols: list) -> None:
    """Bottom row: the fixed-X flow of aligned, balanced layers against Eqn 10's closed form, and their gap."""
    tf = np.asarray(fx["times"])
    sim, closed = np.asarray(fx["simulated"]), np.asarray(fx["closed_form"])
    keep = tf > 0
    for k in range(len(cols)):
        label_s = "simulated (fixed-X flow)" if k == 0 else None
        label_c = "closed form, Eqn 10" if k == 0 else None
        axes[0].loglog(tf[keep], sim[keep, k], color=cols[k], lw=2.2, alpha=0.8, label=label_s)
        axes[0].loglog(tf[keep], closed[keep, k], color=style.PREDICTION, ls="--", lw=0.9, label=label_c)
        axes[1].loglog(tf[keep], sim[keep, k] ** 4, color=cols[k], lw=2.2, alpha=0.8, label=label_s)
        axes[1].loglog(
            tf[keep], closed[keep, k] ** 4, color=style.PREDICTION, ls="--", lw=0.9, label=label_c
        )
        err = np.abs(sim[keep, k] - closed[keep, k]) / closed[keep, k]
        axes[2].loglog(tf[keep], np.maximum(err, 1e-17), color=cols[k], lw=1)
    lam = np.asarray(fx["lambda"])
    axes[0].set(
        xlabel="time t (X frozen at t = 0; to 0.9 × first blow-up)",
        ylabel="σ_k of W1 (= W2, balanced)",
        title=f"(d) aligned, balanced layers, fixed X (λ_k = v_kᵀXv_k ∈ [{lam.min():.2f}, {lam.max():.2f}])",
    )
    axes[1].set(
        xlabel="time t (X frozen at t = 0)",
        ylabel="embedding variance σ_k⁴ (isotropic x)",
        title="(e) the same modes in the embedding",
    )
    axes[2].set(
        xlabel="time t",
        ylabel="|simulated − closed form| / closed form",
        title=f"(f) relative error (max {fx['max_relative_error']:.1e})",
    )
    for ax in axes[:2]:
        ax.legend(loc="upper left")

if __name__ == "__main__":
    style.cli(main, __doc__.splitlines()[0])
