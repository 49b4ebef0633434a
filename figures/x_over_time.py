"""X during training (beyond the paper): the negative eigen-directions of X are the ones that collapse.

One 16x16 linear layer, the paper's loss, noise on the last 8 coordinates of one view, a weak (s = 1,
below the a-priori threshold sqrt(2)) and a strong (s = 2) augmentation. On snapshots of the GD trajectory,
X (Lemma 2, Eqn 6-7) is measured at the current W on fresh batches. Beside X's eigenvalues: the embedding
variances sigma_k(W)^2 along W's right singular vectors (isotropic inputs), and the overlap of X's negative
eigen-space and the equally many weakest directions of W. Theorem 1 (X frozen): directions with lambda_k < 0
decay as exp(2 lambda_k t), those with lambda_k >= 0 do not.

The embedding variance is read along W's own singular vectors, not along X's eigenvectors: X is estimated on
finite batches, its eigenvectors are tilted by ~1e-2 rad, and the leak from the large clean directions would
floor |W v_k|^2 near 1e-3 while the collapsed block is many decades lower.

t = 0: the default init (random orthogonal factors, singular values within half a decade) starts with no
collapsed dimension; a dimension counts as collapsed at time t when its variance is at most 1e-3 times the
larger of the largest variance at t = 0 and at t. X's negative count is the cross-fitted PSD test's.
"""

from __future__ import annotations

import numpy as np

from figures import style
from figures.common import SimConfig, integrate, one_blas_thread
from theory import (
    collapsed_input_subspace,
    collapsed_mask,
    contrastive_covariance,
    negative_subspace,
    psd_check,
    subspace_overlap,
    toy,
)

NAME = "x_over_time"
STRENGTHS = (("weak", 1.0), ("strong", 2.0))
X_BATCHES = 64  # as theory.experiment: their spread sets psd_check's noise floor
SNAPSHOTS = 40


def measure(cfg: SimConfig, snapshots: int, x_batches: int = X_BATCHES) -> dict:
    with one_blas_thread():
        traj = integrate(cfg)[0]
        rng = np.random.default_rng(cfg.seed + 7)
        idx = np.unique(np.linspace(0, len(traj.times) - 1, snapshots).round().astype(int))
        mask = toy.augmentation_mask(cfg.dim, cfg.augmented_dims)
        eig, share, n_neg, negative, w_var, w_share, overlap = [], [], [], [], [], [], []
        for k in idx:
            w = traj.weights[0][k]
            batches = [
                toy.toy_views(
                    rng, cfg.samples, cfg.dim, cfg.augmented_dims, cfg.augment_strength, cfg.noisy_views
                )
                for _ in range(x_batches)
            ]
            samples = np.stack([contrastive_covariance(x, xa, w, cfg.loss)[0] for x, xa in batches])
            x_cov = samples.mean(axis=0)
            check = psd_check(x_cov, samples=samples)
            eig.append(check.eigenvalues)
            share.append((check.eigenvectors**2).T @ mask)
            n_neg.append(check.n_negative)
            negative.append(check.eigenvalues < -check.tolerance)
            _, sv, vt = np.linalg.svd(w)
            w_var.append(sv**2)
            w_share.append((vt**2) @ mask)
            overlap.append(
                subspace_overlap(
                    negative_subspace(x_cov, samples=samples), collapsed_input_subspace(w, check.n_negative)
                )
                if check.n_negative
                else np.nan
            )  # undefined without a negative eigenvalue
    eig, share, w_var, w_share = np.array(eig), np.array(share), np.array(w_var), np.array(w_share)
    negative = np.array(negative)
    collapsed = collapsed_mask(w_var, w_var[0].max())  # against the t = 0 scale as well (module doc)
    return {
        "config": vars(cfg),
        "times": traj.times[idx],
        "x_eigenvalues": eig,  # [snapshot, k], descending
        "augmented_share": share,
        "embedding_variance": w_var,  # [snapshot, k]: sigma_k(W)^2, descending
        "embedding_variance_augmented_share": w_share,
        "n_negative": n_neg,
        "n_collapsed": collapsed.sum(1),
        "negative_in_augmented_block": (negative & (share > 0.5)).sum(1),
        "collapsed_in_augmented_block": (collapsed & (w_share > 0.5)).sum(1),
        "overlap_negative_vs_weakest": overlap,
        "min_eigenvalue_over_max": eig[:, -1] / np.abs(eig).max(1),
        "first_negative_time": next(
            (float(t) for t, n in zip(traj.times[idx], n_neg, strict=True) if n > 0), None
        ),
    }


def main(quick: bool = False, out_dir=None) -> dict:
    steps = 400 if quick else 2000
    data = {
        "claim": "the directions where X turns negative are those whose embedding variance collapses",
        "runs": {
            name: measure(
                SimConfig(augment_strength=s, steps=steps, seed=0),
                8 if quick else SNAPSHOTS,
                X_BATCHES,
            )
            for name, s in STRENGTHS
        },
        "apriori_threshold": toy.apriori_threshold(1),
    }
    draw(data, out_dir)
    return data


def draw(data: dict, out_dir=None) -> None:
    fig, axes = style.plt.subplots(2, 3, figsize=(14, 7.2), sharex=True)
    cmap = style.plt.get_cmap("coolwarm")
    for row, (name, s) in enumerate(STRENGTHS):
        r = data["runs"][name]
        t = np.asarray(r["times"])
        eig, share, var, var_share = (
            np.asarray(r[k])
            for k in (
                "x_eigenvalues",
                "augmented_share",
                "embedding_variance",
                "embedding_variance_augmented_share",
            )
        )
        for k in range(eig.shape[1]):
            axes[row, 0].plot(t, eig[:, k], color=cmap(float(np.mean(share[:, k]))), lw=1.1)
            axes[row, 1].semilogy(t, var[:, k], color=cmap(float(np.mean(var_share[:, k]))), lw=1.1)
        ax = axes[row, 2]
        ax.plot(
            t,
            [np.nan if v is None else v for v in r["overlap_negative_vs_weakest"]],
            "o-",
            ms=3,
            color=style.PREDICTION,
            label="overlap: X's negative space vs W's weakest",
        )
        ax.set(ylim=(-0.05, 1.05), ylabel="subspace overlap (1 = identical)")
        twin = ax.twinx()
        twin.step(t, r["n_negative"], where="mid", color="#2ca02c", label="# negative eigenvalues of X")
        twin.step(t, r["n_collapsed"], where="mid", color=style.AUGMENTED, ls="--", label="# collapsed dims")
        twin.set(ylim=(-0.4, 16.4), ylabel="count (of 16)")
        twin.grid(False)
        lines = ax.get_legend_handles_labels()
        more = twin.get_legend_handles_labels()
        # weak: every count stays near 0, the top is free; strong: the counts sit at 8, the bottom right is free
        ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right" if name == "weak" else "lower right")
        ax.set_title(f"({'ef'[row]}) {name}: prediction vs observation", fontsize=9)
        axes[row, 0].axhline(0, color=style.PREDICTION, lw=0.8)
        axes[row, 0].set_yscale("symlog", linthresh=1e-2)
        where = "below" if s < data["apriori_threshold"] else "above"
        axes[row, 0].set(
            ylabel="eigenvalues λ_k of X (symlog)",
            # below 0 in the mean X is not yet negative: the count is the cross-fitted test's, which leaves out
            # eigenvalues within the batch-to-batch noise
            title=f"({'ac'[row]}) {name}: s = {s:g} ({where} √2): eigenvalues of X; at the end "
            f"{int(np.sum(eig[-1] < 0))} below 0,\n{r['n_negative'][-1]} significantly (cross-fitted test, "
            f"{X_BATCHES} batches)",
        )
        axes[row, 1].set(
            ylabel="embedding variance σ_k(W)²",
            title=f"({'bd'[row]}) {name}: variance along W's singular vectors; "
            f"{r['n_collapsed'][-1]} collapsed",
        )
    for ax in axes[1]:
        ax.set_xlabel("training time t = lr × step")
        ax.xaxis.set_tick_params(labelbottom=True)
    sm = style.plt.cm.ScalarMappable(cmap=cmap, norm=style.plt.Normalize(0, 1))
    fig.colorbar(
        sm,
        ax=axes[:, :2],
        fraction=0.03,
        pad=0.01,
        location="bottom",
        aspect=60,
        label="share of the direction (X's eigenvector in a, c; W's singular vector in b, d) in the "
        "augmented block: blue clean, red augmented",
    )
    cfg = data["runs"]["strong"]["config"]
    style.claim(
        fig,
        "X over time: strong augmentation turns X negative on the 8 augmented directions, and exactly "
        f"those collapse (1 linear layer, {cfg['steps']} GD steps, lr {cfg['lr']}; "
        f"t = 0: {data['runs']['strong']['n_collapsed'][0]} collapsed, init {cfg['init']})",
    )
    style.save(fig, NAME, data, out_dir)


if __name__ == "__main__":
    style.cli(main, __doc__.splitlines()[0])
