"""Theory vs the trained network: ``python -m empirical.compare RUN [--out DIR] [--data-dir DIR]``.

Every theoretical object comes from ``theory``; this module only feeds it real features and real weights.

1. X from real features. r1, r2 = frozen backbone representations of two views drawn with the run's own
   augmentation recipe are the projector's inputs x, x'. With the projector's end-to-end map W (exact for
   none / linear / diagonal / orthogonal / fixed-lowrank / directclr; for the MLP its batch-averaged
   Jacobian, see ``projector_map``), X = Sigma0 - Sigma1 (Lemma 2) is ``theory.contrastive_covariance`` with
   ``loss="paper"`` on the raw linear outputs W r, as the paper's Sec. 4 analysis does. The network was
   trained with temperature-cosine InfoNCE on L2-normalized z, for which this X is an approximation; the
   ``matched`` variant rescales W so that the paper loss's softmax is as sharp as cos/tau (for |z| = rho,
   -|c z_i - c z_j|^2/2 = z_i.z_j/(rho^2 tau) + row constants when c = 1/(rho sqrt(tau))). Theorem 1:
   W shrinks along X's negative eigen-directions; we compare them with W's smallest right singular vectors.
2. Frozen-feature theory experiment. PCA of r1 to ``dim`` components, whitened (Cov(x) = I, the toy's
   isotropic data, so the toy's init and learning rate apply and Theorem 3's isotropic-data formula holds);
   1-3 layer linear networks trained by ``theory.run_gd`` on fresh minibatches of real (x, x') pairs.
   Predicted: X(W -> 0) negative directions (Theorem 1), Theorem 3's closed form (Corollary 2); observed:
   the embedding spectrum.
3. Alignment in the real projector: |V2^T U1| (``theory.alignment_matrix``) for the backbone's last layer vs
   the projector's first matrix, and the MLP's two layers (BN folded), against Theorem 2 / Propositions 1-2.
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import re
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from scipy.stats import spearmanr

from empirical.linear_maps import (
    EXACT,
    SUPPORTED,
    backbone_last_layers,
    mlp_layers,
    projector_map,
)
from theory import (
    COLLAPSE_RTOL,
    DivergenceError,
    alignment_matrix,
    alignment_score,
    collapsed_input_subspace,
    contrastive_covariance,
    effective_rank,
    embedding_spectrum,
    end_to_end,
    forward,
    n_collapsed,
    paper_init,
    predicted_collapsed_modes,
    psd_check,
    run_gd,
    subspace_overlap,
)
from theory.io import NonFiniteError, OneLineParser, UserError, run_cli, write_json

X_BATCHES_MAX = 16
LEAD = (4, 8, 16, 32)  # leading-mode counts for the alignment score
TOP_BLOCK = 32  # |A| stored for the leading TOP_BLOCK modes only (JSON size)


# ---- 1. X from real features -------------------------------------------------------------------------------


MIN_BATCHES = 4


def x_batch(batch: int, samples: int) -> int:
    """The training batch, or less so that ``samples`` make at least ``MIN_BATCHES`` batches."""
    return max(2, min(batch, samples // MIN_BATCHES))


def batched_x(r1: np.ndarray, r2: np.ndarray, weight: np.ndarray, batch: int) -> np.ndarray:
    """X of every consecutive batch (B, d, d): the batch size the training step saw sets the softmax.

    At least ``MIN_BATCHES`` batches (the PSD test cross-fits two halves), smaller ones when samples are few.
    """
    n = x_batch(batch, len(r1))
    starts = range(0, len(r1) - n + 1, n)
    return np.stack([contrastive_covariance(r1[s : s + n], r2[s : s + n], weight)[0] for s in starts])


def support(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Orthonormal basis (width x m) of the directions where the features vary (both views pooled): PCA
    directions with variance above COLLAPSE_RTOL of the largest. Elsewhere r is constant (dead channels, a
    collapsed representation), so those directions enter neither X nor the embedding."""
    both = np.concatenate([r1, r2])
    lam, vec = np.linalg.eigh(np.cov(both - both.mean(axis=0), rowvar=False))
    return vec[:, lam > COLLAPSE_RTOL * lam.max()][:, ::-1]


def x_analysis(
    r1: np.ndarray, r2: np.ndarray, z1: np.ndarray, weight: np.ndarray, batch: int, temperature: float
) -> dict:
    """X's negative directions (Theorem 1) vs the directions W collapses, for three scalings of W.

    All in the m-dim feature support (``support``): x = r P, W_s = W P. ``trained``: W as trained;
    ``matched``: W / (rho sqrt(tau)) (module doc); ``apriori``: W -> 0 (all alpha = 1/N). A converged W is
    a stationary point, W X ~ 0, so X ~ 0 on W's row space: the trained X tests stationarity, the a-priori X
    the strength of the augmentation (Theorem 1's premise), ``rayleigh_*`` the sign of X on the directions W
    did and did not collapse.
    """
    basis = support(r1, r2)
    x, x_aug, w_s = r1 @ basis, r2 @ basis, weight @ basis
    m = basis.shape[1]
    sw = np.linalg.svd(w_s, compute_uv=False)
    w_var = np.concatenate([sw**2, np.zeros(max(0, m - len(sw)))])  # embedding gain per input direction
    w_collapsed = int(n_collapsed(w_var))
    dead = collapsed_input_subspace(w_s, w_collapsed)
    alive = collapsed_input_subspace(w_s, m)[:, : m - w_collapsed]  # leading right singular vectors
    rho = float(np.median(np.linalg.norm(z1, axis=1)))
    out: dict = {
        "width": r1.shape[1],
        "support_dim": m,
        "weight_singular_values": sw,
        "weight_collapsed": w_collapsed,
        "median_norm_z": rho,
        "batch": x_batch(batch, len(r1)),
    }
    for variant, scale in (
        ("trained", 1.0),
        ("matched", 1.0 / (rho * math.sqrt(temperature))),
        ("apriori", 0.0),
    ):
        samples = batched_x(x, x_aug, scale * w_s, batch)
        mean = samples.mean(axis=0)
        check = psd_check(mean, samples=samples)
        neg = check.eigenvectors[:, check.eigenvalues < -check.tolerance]
        k = neg.shape[1]
        top = float(np.max(np.abs(check.eigenvalues)))
        gain = np.linalg.norm(w_s @ check.eigenvectors, axis=0) ** 2  # ordered as the eigenvalues, descending

        def rayleigh(v: np.ndarray, top: float = top, mean: np.ndarray = mean) -> float | None:
            return float(np.mean(np.einsum("ik,ij,jk->k", v, mean, v)) / top) if v.shape[1] else None

        out[variant] = {
            "scale": scale,
            "n_batches": len(samples),
            "eigenvalues": check.eigenvalues,
            "n_negative": check.n_negative,
            "is_psd": check.is_psd,
            "gain_along_eigenvectors": gain,
            "spearman_eigenvalue_vs_gain": float(spearmanr(check.eigenvalues, gain)[0]) if m > 1 else None,
            "overlap_same_count": subspace_overlap(neg, collapsed_input_subspace(w_s, k)) if k else None,
            "overlap_observed_count": subspace_overlap(neg, dead) if k and w_collapsed else None,
            "chance_overlap": k / m,
            "rayleigh_collapsed": rayleigh(dead),
            "rayleigh_surviving": rayleigh(alive),
            "stationarity": float(np.linalg.norm(scale * w_s @ mean) / max(np.linalg.norm(scale * w_s) * top, 1e-300)),
        }
    return out


# ---- 2. frozen-feature theory experiment -------------------------------------------------------------------


def whiten(r1: np.ndarray, r2: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA of view 1 to ``dim`` components, scaled to unit variance; the same map applied to view 2."""
    mu = r1.mean(axis=0)
    lam, vec = np.linalg.eigh(np.cov(r1 - mu, rowvar=False))
    lam, vec = lam[::-1][:dim], vec[:, ::-1][:, :dim]
    proj = vec / np.sqrt(np.maximum(lam, 1e-12 * lam[0]))
    return (r1 - mu) @ proj, (r2 - mu) @ proj, lam


def frozen_experiment(
    x: np.ndarray,
    x_aug: np.ndarray,
    depths=(1, 2, 3),
    steps: int = 5000,
    lr: float = 0.01,
    batch: int = 128,
    seed: int = 0,
    records: int = 60,
) -> dict:
    """Train linear projectors on real (x, x') with theory's own GD; predicted vs observed collapse.

    Init, loss (Eqn 2), lr and batch are the toy figures'. Prediction for L layers: X at W -> 0 over
    ``X_BATCHES_MAX`` fresh batches (Theorem 1: its negative directions), and Theorem 3's aligned,
    balanced closed form from the init's singular values (``theory.predicted_collapsed_modes``).
    """
    n, dim = x.shape
    batch = min(batch, n)

    def views(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        idx = rng.choice(n, batch, replace=False)
        return x[idx], x_aug[idx]

    def sample_x(weight: np.ndarray, rng: np.random.Generator):
        samples = np.stack([contrastive_covariance(*views(rng), weight)[0] for _ in range(X_BATCHES_MAX)])
        return psd_check(samples.mean(axis=0), samples=samples)

    rng = np.random.default_rng(seed)
    prior = sample_x(np.zeros((1, dim)), rng)
    prior_neg = prior.eigenvectors[:, prior.eigenvalues < -prior.tolerance]
    sigma0 = np.exp(-0.35 * np.arange(dim))  # paper_init's singular values
    out: dict = {
        "dim": dim,
        "samples": n,
        "steps": steps,
        "lr": lr,
        "batch": batch,
        "loss": "paper",
        "apriori_eigenvalues": prior.eigenvalues,
        "apriori_n_negative": prior.n_negative,
        "augmentation_variance": np.linalg.eigvalsh(np.cov(x_aug - x, rowvar=False))[::-1],
        "depths": {},
    }
    for layers in depths:
        rng = np.random.default_rng(seed + layers)
        row: dict = {
            "layers": layers,
            "predicted_theorem1": prior.n_negative,
            "predicted_theorem3": int(np.sum(predicted_collapsed_modes(sigma0, prior.eigenvalues, steps * lr, layers))),
        }
        try:
            traj = run_gd(paper_init(dim, layers, rng), steps, lr, views, rng, max(1, steps // records))
        except DivergenceError as e:
            row["diverged"] = str(e)
            out["depths"][str(layers)] = row
            continue
        w_end = end_to_end(traj.final)
        spec = embedding_spectrum(forward(traj.final, x)[0])
        late = sample_x(w_end, rng)
        late_neg = late.eigenvectors[:, late.eigenvalues < -late.tolerance]
        observed = collapsed_input_subspace(w_end, spec.n_collapsed)
        cx = np.cov(x, rowvar=False)
        history = [
            np.linalg.eigvalsh(w @ cx @ w.T)[::-1]
            for w in (end_to_end([wl[t] for wl in traj.weights]) for t in range(len(traj.times)))
        ]
        row.update(
            {
                "observed_collapsed": spec.n_collapsed,
                "embedding_singular_values": spec.singular_values,
                "effective_rank": spec.effective_rank,
                "final_loss": float(traj.losses[-1]),
                "late_n_negative": late.n_negative,
                "overlap_apriori_vs_observed": subspace_overlap(prior_neg, observed),
                "overlap_late_vs_observed": subspace_overlap(late_neg, observed),
                "times": traj.times,
                "embedding_variance_history": np.maximum(np.array(history), 0.0),
            }
        )
        if layers >= 2:
            a = alignment_matrix(traj.final[0], traj.final[1])
            row["alignment_score_surviving"] = alignment_score(a, dim - spec.n_collapsed)
        out["depths"][str(layers)] = row
    return out


# ---- 3. alignment of consecutive linear maps ---------------------------------------------------------------


def pair_alignment(w1: np.ndarray, w2: np.ndarray) -> dict:
    """|V2^T U1| (Theorem 2), singular values and effective ranks of both, leading-mode scores.

    ``subspace_overlap_top_k``: the top-k left singular subspace of W1 vs the top-k right singular subspace
    of W2, k = round(erank(W2)); basis-free, so it also reads degenerate spectra (directclr, fixed-lowrank).
    """
    a = alignment_matrix(w1, w2)
    s1, s2 = (np.linalg.svd(w, compute_uv=False) for w in (w1, w2))
    k = max(1, int(round(effective_rank(s2))))
    u1 = np.linalg.svd(w1)[0][:, :k]
    v2 = np.linalg.svd(w2)[2][:k].T
    d = a.shape[0]
    top = min(len(s1), len(s2))
    gaps = np.abs(np.diff(s2[: min(16, len(s2))])) / s2[0]
    return {
        "shape_w1": list(w1.shape),
        "shape_w2": list(w2.shape),
        "sigma1": s1,
        "sigma2": s2,
        "erank1": effective_rank(s1),
        "erank2": effective_rank(s2),
        "alignment_top_block": a[:TOP_BLOCK, :TOP_BLOCK],
        "alignment_diagonal": np.diagonal(a)[:top],
        "scores": {str(m): alignment_score(a, m) for m in LEAD if m <= top},
        "chance_score": math.sqrt(2 / (math.pi * d)),  # E|u.v| for independent random unit vectors in R^d
        "top_k": k,
        "subspace_overlap_top_k": subspace_overlap(u1, v2),
        "subspace_chance": k / d,
        "w2_degenerate": bool(np.min(gaps) < 1e-6) if gaps.size else True,
    }


def alignment_analysis(model: nn.Module, name: str, r: np.ndarray) -> dict:
    """Alignment (analysis 3 of the module doc) for every pair of consecutive linear maps this model has."""
    out: dict = {}
    first = None
    if name == "mlp":
        a1, b1, a2, _ = mlp_layers(model.projector)
        active = (r @ a1.T + b1 > 0).mean(axis=0)
        out["mlp_layer1_vs_layer2"] = pair_alignment(a1, a2)
        out["mlp_layer1_vs_gated_layer2"] = pair_alignment(a1, a2 * active[None, :])
        first = a1
    elif name in EXACT and name != "none":
        first = projector_map(model.projector, name, r)[0]
    if first is not None:
        for key, w in backbone_last_layers(model.backbone, r.shape[1]).items():
            out[f"backbone_{key}_vs_projector"] = pair_alignment(w, first)
    return out


# ---- features, CLI -----------------------------------------------------------------------------------------


def view_features(model: nn.Module, images: torch.Tensor, config: dict, seed: int, chunk: int = 512) -> dict:
    """r and z of two augmented views (the run's recipe, per-sample parameters), via evaluate.extract_features.

    The views are quantized back to uint8 (what extract_features takes; error <= 1/510 per pixel).
    """
    from empirical.augment import augment, recipe, view_params
    from empirical.evaluate import extract_features

    recipes = recipe(config["augment"], config["augment_strength"], config["image_size"])
    feats: dict = {"r1": [], "z1": [], "r2": [], "z2": []}
    for step, lo in enumerate(range(0, len(images), chunk)):
        x = images[lo : lo + chunk]
        for view, p in enumerate(view_params(recipes, seed, step, len(x), 0, len(x)), start=1):
            v = augment(x, p, config["image_size"], crop=True, normalize=False)
            f = extract_features(model, (v * 255).round().clamp(0, 255).to(torch.uint8), config)
            feats[f"r{view}"].append(f["r"])
            feats[f"z{view}"].append(f["z"])
    return {k: np.concatenate(v) for k, v in feats.items()}


def trained_steps(checkpoint: str, config: dict) -> int | None:
    """The step of a ckpt-*.pt (the newest one for a folder without final.pt); final.pt: the whole schedule."""
    if os.path.isdir(checkpoint) and not os.path.isfile(os.path.join(checkpoint, "final.pt")):
        checkpoint = (sorted(glob.glob(os.path.join(checkpoint, "ckpt-*.pt"))) or [checkpoint])[-1]
    found = re.search(r"ckpt-(\d+)\.pt$", checkpoint)
    return int(found.group(1)) if found else config.get("total_steps")


def compare(
    checkpoint: str,
    samples: int = 2048,
    split: str = "train",
    frozen_dim: int = 16,
    frozen_steps: int = 5000,
    seed: int = 0,
    device: str = "cpu",
    data_dir: str | None = None,
    progress: bool = False,
) -> dict:
    """All three analyses of the module doc for one trained run, as a JSON-ready dict."""
    from tqdm import tqdm

    from empirical.evaluate import load_split, load_trained

    if not os.path.exists(checkpoint):
        raise UserError(f"checkpoint {checkpoint!r} not found")
    model, config = load_trained(checkpoint, device)
    name = config["projector"]
    if name not in SUPPORTED:
        raise UserError(f"projector {name!r} has no fixed linear map for X (supported: {', '.join(SUPPORTED)})")
    images, _ = load_split({**config, "data_dir": data_dir or config.get("data_dir", "data")}, split)
    model.cpu()
    bar = tqdm(total=4, desc="compare", disable=not progress, dynamic_ncols=True)
    bar.set_postfix_str("features")
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:samples]
    t0 = time.time()
    f = view_features(model, images[pick], config, seed)
    if not all(np.all(np.isfinite(v)) for v in f.values()):
        bar.close()
        raise NonFiniteError(f"the features of {checkpoint} are not finite: the run diverged")
    bar.update()
    bar.set_postfix_str("X from features")
    r1, r2 = f["r1"], f["r2"]
    weight, info = projector_map(model.projector, name, r1)
    z_lin = r1 @ weight.T
    resid = f["z1"] - z_lin - (f["z1"] - z_lin).mean(axis=0)
    info["r2_of_linear_map"] = float(1 - np.sum(resid**2) / np.sum((f["z1"] - f["z1"].mean(axis=0)) ** 2))
    result = {
        "checkpoint": os.path.abspath(checkpoint),
        "trained_steps": trained_steps(checkpoint, config),
        "config": config,
        "samples": len(r1),
        "split": split,
        "seed": seed,
        "projector_map": info,
        "spectra": {k: embedding_spectrum(f[k], normalize=True).to_json() for k in ("r1", "z1")},
        "x_from_features": x_analysis(r1, r2, f["z1"], weight, config["batch_size"], config["temperature"]),
    }
    bar.update()
    bar.set_postfix_str("frozen-feature experiment")
    if np.linalg.matrix_rank(r1 - r1.mean(axis=0)) >= frozen_dim:
        x, x_aug, pca_var = whiten(r1, r2, frozen_dim)
        result["frozen"] = {
            **frozen_experiment(x, x_aug, steps=frozen_steps, seed=seed),
            "pca_variance": pca_var,
        }
    else:
        result["frozen"] = {"skipped": f"representation rank below --frozen-dim {frozen_dim}"}
    bar.update()
    bar.set_postfix_str("alignment")
    result["alignment"] = alignment_analysis(model, name, r1)
    result["seconds"] = time.time() - t0
    bar.update()
    bar.close()
    return result


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def summary(res: dict) -> str:
    xf, cfg = res["x_from_features"], res["config"]
    lines = [
        f"{cfg['dataset']} / {cfg['backbone']} / projector {cfg['projector']} ({res['projector_map']['kind']}, "
        f"linear-map R^2 {res['projector_map']['r2_of_linear_map']:.3f}); {res['samples']} samples, "
        f"width {xf['width']}",
        f"[1] W collapses {xf['weight_collapsed']} of the {xf['support_dim']} directions where r varies "
        f"(sigma^2 <= {COLLAPSE_RTOL:g} max)",
    ]
    for v in ("trained", "matched", "apriori"):
        d = xf[v]
        lines.append(
            f"    X ({v:8s}): {d['n_negative']:3d} negative eigenvalues; overlap with W's collapsed "
            f"directions {_fmt(d['overlap_same_count'])} (chance {d['chance_overlap']:.2f}); "
            f"v'Xv/max|X| on W's collapsed {_fmt(d['rayleigh_collapsed'], '+.3f')}, surviving "
            f"{_fmt(d['rayleigh_surviving'], '+.3f')}"
        )
    fr = res["frozen"]
    if "depths" in fr:
        lines.append(
            f"[2] frozen features, PCA {fr['dim']} whitened: X(W->0) has {fr['apriori_n_negative']} "
            "negative eigenvalues"
        )
        for layers, d in fr["depths"].items():
            if "diverged" in d:
                lines.append(f"    {layers} layer(s): diverged")
                continue
            lines.append(
                f"    {layers} layer(s): collapsed {d['observed_collapsed']:2d}/{fr['dim']} observed, "
                f"Thm1 {d['predicted_theorem1']}, Thm3 {d['predicted_theorem3']}; late X negative "
                f"{d['late_n_negative']}"
            )
    else:
        lines.append(f"[2] skipped: {fr['skipped']}")
    for key, d in res["alignment"].items():
        sc = ", ".join(f"top{m} {s:.2f}" for m, s in d["scores"].items())
        lines.append(
            f"[3] {key}: |A_kk| {sc} (chance {d['chance_score']:.2f}); erank {d['erank1']:.1f} / "
            f"{d['erank2']:.1f}; top-{d['top_k']} subspace overlap {d['subspace_overlap_top_k']:.2f} "
            f"(chance {d['subspace_chance']:.2f})"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m empirical.compare", description=__doc__.splitlines()[0])
    p.add_argument("run", nargs="?", default=None, help="run folder (or final.pt / ckpt-*.pt)")
    p.add_argument("--checkpoint", default=None, help="the same as RUN")
    p.add_argument("--out", default=None, help="output folder for compare.json (default: the run folder)")
    p.add_argument("--data-dir", default=None, help="where the run's dataset is (default: the training --data-dir)")
    p.add_argument("--samples", type=int, default=2048, help="images (each in two views); N x N softmax memory")
    p.add_argument("--split", default="train", choices=("train", "test"))
    p.add_argument("--frozen-dim", type=int, default=16, help="PCA components of the frozen-feature experiment")
    p.add_argument("--frozen-steps", type=int, default=5000, help="GD steps per depth in the frozen-feature experiment")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    target = args.run or args.checkpoint
    if target is None:
        raise UserError("which run? give a run folder (or final.pt / ckpt-*.pt), see --help")
    if not 8 <= args.samples <= 8192:
        raise UserError(f"--samples {args.samples} must be between 8 and 8192 (N x N softmax memory)")
    if not 1 <= args.frozen_dim <= 64:
        raise UserError(f"--frozen-dim {args.frozen_dim} must be between 1 and 64")
    if args.frozen_steps < 1:
        raise UserError(f"--frozen-steps {args.frozen_steps} must be at least 1")
    if args.seed < 0:
        raise UserError(f"--seed {args.seed} must be at least 0")
    ckpt = os.path.abspath(target)
    out = args.out or (ckpt if os.path.isdir(ckpt) else os.path.dirname(ckpt))
    try:  # before minutes of work: can --out take the result?
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, f".write-test-{os.getpid()}"), "w"):
            pass
        os.remove(os.path.join(out, f".write-test-{os.getpid()}"))
    except OSError as e:
        raise UserError(f"--out {out!r} is not writable ({e.strerror or e})") from None
    res = compare(
        target, args.samples, args.split, args.frozen_dim, args.frozen_steps, args.seed,
        data_dir=args.data_dir, progress=not args.no_progress,
    )  # fmt: skip
    path = os.path.join(out, "compare.json")
    write_json(path, res)
    print(summary(res))
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
