"""Paper Fig. 3: strong augmentation collapses the augmented directions of a single linear layer.

One 16x16 layer, isotropic data, additive noise of std s on the last 8 coordinates of one view, the paper's
loss (Eqn 2), gradient descent with a fresh augmentation every step. All strengths train in one batched
call. For each strength: sorted singular values of W and of the embedding covariance C (Eqn 1), and how much
of each right singular vector of W lies in the augmented block. Prediction (Theorem 1 with X at W -> 0):
the augmented block collapses above s = sqrt(2), the clean block never.

t = 0: the default init (random orthogonal factors, singular values within half a decade) puts every
embedding variance within one decade of the largest, so nothing is collapsed at the start. Collapse is
counted against S = max(largest variance at t = 0, at the end), so a block that falls with everything else
still counts.
"""

from __future__ import annotations

import numpy as np

from figures import style
from figures.common import SimConfig, embeddings, eval_inputs, train_batched
from theory import collapsed_mask, singular_values, toy

NAME = "fig3_strong_augmentation"
STRENGTHS = (0.0, 0.5, 1.0, 1.2, float(np.sqrt(2.0)), 1.7, 2.0, 2.5, 3.0)
QUICK_STRENGTHS = (0.0, 1.0, 3.0)


def main(quick: bool = False, out_dir=None) -> dict:
    strengths = np.array(QUICK_STRENGTHS if quick else STRENGTHS)
    base = SimConfig(steps=300 if quick else 2000, seed=0)
    traj = train_batched(strengths, base)[0]
    w0, w = traj.weights[0][0], traj.final[0]
    _, w_sv, vt = np.linalg.svd(w)
    aug = toy.augmentation_mask(base.dim, base.augmented_dims)
    aug_share = (vt**2) @ aug  # [strength, rank]: share of v_k in the augmented block
    z = embeddings([w], eval_inputs(base))
    emb_sv = singular_values(z)  # theory's Eqn 1; float64 eigen-solver floor ~1e-16 x largest
    # the same spectrum from the SVD of the centred embeddings: exact down to ~1e-32 x largest
    zc = z - z.mean(axis=-2, keepdims=True)
    emb_sv_precise = np.linalg.svd(zc, compute_uv=False) ** 2 / z.shape[-2]
    emb_sv0 = singular_values(embeddings([w0], eval_inputs(base)))
    reference = np.maximum(emb_sv0.max(-1), emb_sv.max(-1))
    collapsed = collapsed_mask(emb_sv_precise, reference)
    collapsed0 = collapsed_mask(emb_sv0)
    # C ~ W W^T on isotropic data, so C's k-th singular value belongs to W's k-th right singular vector
    is_aug = aug_share > 0.5
    data = {
        "claim": "strong augmentation collapses the augmented directions of W; clean directions survive",
        "config": vars(base),
        "strengths": strengths,
        "apriori_threshold": toy.apriori_threshold(base.noisy_views),
        "weight_singular_values": w_sv,
        "augmented_share": aug_share,
        "embedding_singular_values": emb_sv,
        "embedding_singular_values_precise": emb_sv_precise,
        "embedding_singular_values_initial": emb_sv0,
        "collapse_reference": reference,
        "collapsed_dims_initial": collapsed0.sum(-1),
        "collapsed_dims": collapsed.sum(-1),
        "collapsed_augmented": (collapsed & is_aug).sum(-1),
        "collapsed_clean": (collapsed & ~is_aug).sum(-1),
        "log10_sigma_clean_mean": [
            float(np.mean(np.log10(w_sv[i][~is_aug[i]]))) if (~is_aug[i]).any() else None
            for i in range(len(strengths))
        ],
        "log10_sigma_augmented_mean": [
            float(np.mean(np.log10(w_sv[i][is_aug[i]]))) if is_aug[i].any() else None
            for i in range(len(strengths))
        ],
    }
    draw(data, out_dir)
    return data


def draw(data: dict, out_dir=None) -> None:
    fig, axes = style.plt.subplots(1, 3, figsize=(12, 3.8))
    cols = style.colors(len(data["strengths"]), "plasma")
    _draw_spectra(axes[:2], data, cols)
    _draw_block_means(axes[2], data)
    cfg = data["config"]
    style.claim(
        fig,
        "Fig. 3: strong augmentation (s > √2) collapses the 8 augmented directions of W; "
        f"the 8 clean ones survive (1 linear layer, {cfg['steps']} GD steps, lr {cfg['lr']}; "
        f"t = 0: {max(data['collapsed_dims_initial'])} of 16 collapsed, init {cfg['init']})",
    )
    style.save(fig, NAME, data, out_dir)


def _draw_spectra(axes, data: dict, cols: list) -> None:
    """Panels (a) and (b): the weight spectrum per strength, its augmented directions filled, and the embedding
    covariance spectrum against the collapse rule and the t = 0 band."""
    strengths = np.asarray(data["strengths"])
    w_sv = np.asarray(data["weight_singular_values"])
    emb_sv = np.asarray(data["embedding_singular_values_precise"])
    share = np.asarray(data["augmented_share"])
    ranks = np.arange(1, w_sv.shape[1] + 1)
    for i, s in enumerate(strengths):
        label = f"s = {s:.2f}" + (" (= √2)" if np.isclose(s, data["apriori_threshold"]) else "")
        aug = share[i] > 0.5
        axes[0].plot(ranks, np.log10(w_sv[i]), "-", color=cols[i], lw=1, label=label)
        axes[0].plot(ranks[aug], np.log10(w_sv[i][aug]), "o", ms=3.5, color=cols[i])
        axes[0].plot(ranks[~aug], np.log10(w_sv[i][~aug]), "o", ms=3.5, mfc="white", color=cols[i])
        axes[1].plot(ranks, style.log10(emb_sv[i]), "-o", ms=2.5, color=cols[i], lw=1)
    axes[0].set(
        xlabel="rank index k (sorted)",
        ylabel="log10 singular value of W",
        title="(a) weight spectrum; filled = augmented direction, hollow = clean",
    )
    axes[0].legend(loc="lower left", title="noise std s\n(data std = 1)")
    emb0 = np.asarray(data["embedding_singular_values_initial"])
    axes[1].fill_between(ranks, style.log10(emb0.min(0)), style.log10(emb0.max(0)), color="grey", alpha=0.25,
                         label=f"t = 0, all s: {max(data['collapsed_dims_initial'])} collapsed")
    axes[1].axhline(
        np.log10(1e-3 * np.mean(data["collapse_reference"])),
        color="grey",
        ls=":",
        lw=1,
        label="collapse rule: 1e-3 × S,\nS = largest at t = 0 or end",
    )
    axes[1].set(
        xlabel="rank index k (sorted)",
        ylabel="log10 singular value of C",
        title="(b) embedding covariance spectrum (Eqn 1, clean inputs)",
    )
    # left of the drop at rank 8 and under the clean block: no curve passes there
    axes[1].legend(loc="lower left", fontsize=7)


def _draw_block_means(ax, data: dict) -> None:
    """Panel (c): mean log10 singular value of the clean and the augmented block against the strength, the
    a-priori threshold and the collapsed augmented dims per strength."""
    strengths, thr = np.asarray(data["strengths"]), data["apriori_threshold"]
    clean, augm = data["log10_sigma_clean_mean"], data["log10_sigma_augmented_mean"]
    ax.plot(
        strengths,
        [np.nan if v is None else v for v in clean],
        "o-",
        color=style.CLEAN,
        label="clean block (8 dims)",
    )
    ax.plot(
        strengths,
        [np.nan if v is None else v for v in augm],
        "s-",
        color=style.AUGMENTED,
        label="augmented block (8 dims)",
    )
    ax.axvline(thr, color=style.PREDICTION, ls="--", lw=1, label=f"predicted threshold √2 ≈ {thr:.2f}")
    top = ax.get_ylim()[1]
    ax.set_ylim(top=top + 0.12 * (top - ax.get_ylim()[0]))
    for s, n in zip(strengths, data["collapsed_augmented"], strict=True):
        ax.text(
            s,
            0.97,
            str(n),
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="top",
            fontsize=8,
            color=style.AUGMENTED,
            fontweight="bold",
        )
    ax.set(
        xlabel="augmentation strength s (noise std)",
        ylabel="mean log10 singular value of W",
        title="(c) block means; digits = collapsed augmented dims",
    )
    ax.legend(loc="lower left")

if __name__ == "__main__":
    style.cli(main, __doc__.splitlines()[0])
