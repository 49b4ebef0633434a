"""The theory's own experiment on a trained network's frozen features, the second analysis of ``empirical.compare``.

PCA of r1 to ``dim`` components, whitened (Cov(x) = I, the toy's isotropic data, so the toy's init and
learning rate apply and Theorem 3's isotropic-data formula holds); 1-3 layer linear networks trained by
``theory.run_gd`` on fresh minibatches of real (x, x') pairs. Predicted: X(W -> 0) negative directions
(Theorem 1), Theorem 3's closed form (Corollary 2); observed: the embedding spectrum.
"""

from __future__ import annotations

import numpy as np

from empirical.seeding import keyed_rng
from theory import (
    DivergenceError,
    alignment_matrix,
    alignment_score,
    collapsed_input_subspace,
    embedding_spectrum,
    end_to_end,
    forward,
    paper_init,
    predicted_collapsed_modes,
    run_gd,
    subspace_overlap,
)
from theory.covariance import X_BATCHES, x_verdict

X_BATCHES_MAX = X_BATCHES  # fresh batches per X verdict: 32 detect one noise edge (docs/psd_test.md)


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
    depths: tuple[int, ...] = (1, 2, 3),
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
    views = _pair_sampler(x, x_aug, batch)
    prior = _sample_x(views, np.zeros((1, dim)), np.random.default_rng(seed))
    out: dict = {
        "dim": dim,
        "samples": n,
        "steps": steps,
        "lr": lr,
        "batch": batch,
        "loss": "paper",
        "apriori_eigenvalues": prior.eigenvalues,
        "apriori_n_negative": prior.n_negative,
        "apriori_verdict": prior.verdict,
        "augmentation_variance": np.linalg.eigvalsh(np.cov(x_aug - x, rowvar=False))[::-1],
        "depths": {},
    }
    for layers in depths:
        out["depths"][str(layers)] = _depth_row(x, views, prior, layers, steps, lr, seed, records)
    return out


def _pair_sampler(x: np.ndarray, x_aug: np.ndarray, batch: int):
    """rng -> a fresh minibatch of ``batch`` pairs (x_i, x'_i), drawn without replacement."""

    def views(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        idx = rng.choice(len(x), batch, replace=False)
        return x[idx], x_aug[idx]

    return views


def _sample_x(views, weight: np.ndarray, rng: np.random.Generator):
    """X at ``weight`` over X_BATCHES_MAX fresh batches, with its PSD verdict."""
    return x_verdict(views, weight, batches=X_BATCHES_MAX, rng=rng)[0]


def _negative_directions(check) -> np.ndarray:
    return check.eigenvectors[:, check.eigenvalues < -check.tolerance]


def _depth_row(x: np.ndarray, views, prior, layers: int, steps: int, lr: float, seed: int, records: int) -> dict:
    """One depth: the predicted collapse (Theorem 1: X's negative directions at W -> 0; Theorem 3: the closed
    form from paper_init's singular values sigma0_k = exp(-0.35 k)) against the trained network's."""
    dim = x.shape[1]
    rng = keyed_rng(seed, layers)
    sigma0 = np.exp(-0.35 * np.arange(dim))  # paper_init's singular values
    row: dict = {
        "layers": layers,
        "predicted_theorem1": prior.n_negative,
        "predicted_theorem3": int(np.sum(predicted_collapsed_modes(sigma0, prior.eigenvalues, steps * lr, layers))),
    }
    try:
        traj = run_gd(paper_init(dim, layers, rng), steps, lr, views, rng, max(1, steps // records))
    except DivergenceError as e:
        row["diverged"] = str(e)
        return row
    w_end = end_to_end(traj.final)
    spec = embedding_spectrum(forward(traj.final, x)[0])
    late = _sample_x(views, w_end, rng)
    observed = collapsed_input_subspace(w_end, spec.n_collapsed)
    row.update(
        {
            "observed_collapsed": spec.n_collapsed,
            "embedding_singular_values": spec.singular_values,
            "effective_rank": spec.effective_rank,
            "final_loss": float(traj.losses[-1]),
            "late_n_negative": late.n_negative,
            "late_verdict": late.verdict,
            "overlap_apriori_vs_observed": subspace_overlap(_negative_directions(prior), observed),
            "overlap_late_vs_observed": subspace_overlap(_negative_directions(late), observed),
            "times": traj.times,
            "embedding_variance_history": _variance_history(traj, x),
        }
    )
    if layers >= 2:
        a = alignment_matrix(traj.final[0], traj.final[1])
        row["alignment_score_surviving"] = alignment_score(a, dim - spec.n_collapsed)
    return row


def _variance_history(traj, x: np.ndarray) -> np.ndarray:
    """Eigenvalues of Cov(W(t) x) = W(t) Cov(x) W(t)^T at each recorded t, descending, clipped at 0."""
    cx = np.cov(x, rowvar=False)
    history = [
        np.linalg.eigvalsh(w @ cx @ w.T)[::-1]
        for w in (end_to_end([wl[t] for wl in traj.weights]) for t in range(len(traj.times)))
    ]
    return np.maximum(np.array(history), 0.0)
