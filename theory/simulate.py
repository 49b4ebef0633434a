"""Simulate a linear network under InfoNCE on the paper's toy data and set the theory beside it.

    python -m theory.simulate --augment-strength 2.0

Defaults reproduce paper Sec. 4 (R1): 16-d isotropic Gaussian data, additive Gaussian augmentation on the
last 8 coordinates, one 16x16 linear layer, the paper's loss (Eqn 2), gradient descent with a fresh
augmentation every step. The run reports, side by side, what was observed (embedding spectrum, collapsed
dimensions) and what the theory predicts (X's negative eigen-directions at t = 0 and late in training,
alignment, conservation law).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict, dataclass

import numpy as np

from . import toy
from .covariance import COVARIANCE_LOSSES, contrastive_covariance, psd_check
from .dynamics import (
    ODE_METHODS,
    DivergenceError,
    Trajectory,
    end_to_end,
    forward,
    paper_init,
    run_gd,
    run_ode,
    scaled_init,
)
from .losses import DEFAULT_TEMPERATURE, LOSSES
from .predict import (
    alignment_matrix,
    alignment_score,
    collapsed_input_subspace,
    conservation_drift,
    negative_subspace,
    subspace_overlap,
    theorem3_check,
)
from .spectrum import collapsed_mask, embedding_spectrum

EVAL_SAMPLES = 4096
X_BATCHES = 16  # fresh batches averaged when X is measured on a gd run (its sampling noise shrinks as 1/4)
LATE_FRACTION = 0.1  # "late in training": the last 10% of the recorded times


@dataclass
class SimConfig:
    augment_strength: float = 2.0
    augmented_dims: int = 8
    dim: int = 16
    layers: int = 1
    relu: bool = False
    samples: int = 128
    loss: str = "paper"
    temperature: float = DEFAULT_TEMPERATURE
    integrator: str = "gd"
    steps: int = 2000
    time: float | None = None
    lr: float = 0.02
    init: str = "paper"
    noisy_views: int = 1
    ode_method: str = "RK45"
    seed: int = 0

    @property
    def total_time(self) -> float:
        return self.time if self.time is not None else self.steps * self.lr

    def validate(self) -> None:
        """Raise ValueError with one line naming the bad value and what is allowed."""
        s = self.augment_strength
        if not (isinstance(s, int | float) and math.isfinite(s) and s >= 0):
            raise ValueError(f"--augment-strength must be a finite number >= 0, got {s}")
        if self.dim < 1:
            raise ValueError(f"--dim must be >= 1, got {self.dim}")
        if not 0 <= self.augmented_dims <= self.dim:
            raise ValueError(f"--augmented-dims must be between 0 and --dim ({self.dim}), got {self.augmented_dims}")
        if self.layers < 1:
            raise ValueError(f"--layers must be >= 1, got {self.layers}")
        if self.samples < 2:
            raise ValueError(f"--samples must be >= 2 (a batch needs negatives), got {self.samples}")
        if self.loss not in LOSSES:
            raise ValueError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"--temperature must be a finite number > 0, got {self.temperature}")
        if self.integrator not in ("gd", "ode"):
            raise ValueError(f"--integrator must be gd or ode, got {self.integrator!r}")
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")
        if self.time is not None and not (math.isfinite(self.time) and self.time > 0):
            raise ValueError(f"--time must be a finite number > 0, got {self.time}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr must be a finite number > 0, got {self.lr}")
        if self.init != "paper":
            try:
                scale = float(self.init)
            except ValueError:
                raise ValueError(f"--init must be 'paper' or a positive number, got {self.init!r}") from None
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"--init must be 'paper' or a positive number, got {self.init!r}")
        if self.noisy_views not in toy.NOISY_VIEWS:
            raise ValueError(f"--noisy-views must be 1 or 2, got {self.noisy_views}")
        if self.ode_method not in ODE_METHODS:
            raise ValueError(f"--ode-method must be one of {', '.join(ODE_METHODS)}, got {self.ode_method!r}")


def initial_weights(cfg: SimConfig, rng: np.random.Generator, batch_shape: tuple = ()) -> list[np.ndarray]:
    if cfg.init == "paper":
        return paper_init(cfg.dim, cfg.layers, rng, batch_shape)
    return scaled_init(cfg.dim, cfg.layers, float(cfg.init), rng, batch_shape)


def _views(cfg: SimConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return toy.toy_views(rng, cfg.samples, cfg.dim, cfg.augmented_dims, cfg.augment_strength, cfg.noisy_views)


def integrate(cfg: SimConfig, progress: bool = False) -> tuple[Trajectory, np.random.Generator, tuple | None]:
    """Run the configured integrator; returns the trajectory, the rng and the fixed sample (ode) if any."""
    rng = np.random.default_rng(cfg.seed)
    weights = initial_weights(cfg, rng)
    kwargs = dict(loss=cfg.loss, temperature=cfg.temperature, relu=cfg.relu)
    if cfg.integrator == "gd":
        record_every = max(1, cfg.steps // 200)
        steps = cfg.steps if cfg.time is None else max(1, round(cfg.time / cfg.lr))
        traj = run_gd(weights, steps, cfg.lr, lambda r: _views(cfg, r), rng, record_every, progress, **kwargs)
        return traj, rng, None
    fixed = _views(cfg, rng)
    return run_ode(weights, cfg.total_time, views=fixed, method=cfg.ode_method, **kwargs), rng, fixed


def measured_covariance(
    cfg: SimConfig, weight: np.ndarray, rng: np.random.Generator, fixed: tuple | None
) -> np.ndarray:
    """X for the end-to-end map: on the fixed sample (ode) or averaged over fresh batches (gd)."""
    batches = [fixed] if fixed is not None else [_views(cfg, rng) for _ in range(X_BATCHES)]
    return np.mean([contrastive_covariance(x, xa, weight, cfg.loss, cfg.temperature)[0] for x, xa in batches], 0)


def analyse(cfg: SimConfig, traj: Trajectory, rng: np.random.Generator, fixed: tuple | None) -> dict:
    """Observed outcome and the theory's predictions, as a JSON-ready dict."""
    final = traj.final
    eval_rng = np.random.default_rng(cfg.seed + 1_000_003)
    x_eval = eval_rng.standard_normal((EVAL_SAMPLES, cfg.dim))
    z_eval = forward(final, x_eval, cfg.relu)[0]
    spec = embedding_spectrum(z_eval)
    result: dict = {
        "config": asdict(cfg),
        "time": float(traj.times[-1]),
        "gradient_evaluations": traj.gradient_evaluations,
        "final_loss": float(traj.losses[-1]) if len(traj.losses) else None,
        "weight_singular_values": [np.linalg.svd(w, compute_uv=False).tolist() for w in final],
        "embedding_singular_values": spec.singular_values.tolist(),
        "embedding_log10_spectrum": spec.to_json()["log10"],
        "collapsed_dims": spec.n_collapsed,
        "effective_rank": spec.effective_rank,
        "rankme": spec.rankme,
        "apriori_threshold": toy.apriori_threshold(cfg.noisy_views),
        "trajectory": {
            "times": traj.times.tolist(),
            "weight_singular_values": [np.linalg.svd(w, compute_uv=False).tolist() for w in traj.weights],
            "loss": [float(v) for v in traj.losses],
        },
    }
    linear_x = not cfg.relu and cfg.loss in COVARIANCE_LOSSES
    if linear_x:
        w_end0 = end_to_end([w[0] for w in traj.weights])
        w_end = end_to_end(final)
        late = np.flatnonzero(traj.times >= (1 - LATE_FRACTION) * traj.times[-1])
        x_init = measured_covariance(cfg, w_end0, rng, fixed)
        x_late = np.mean([measured_covariance(cfg, end_to_end([w[k] for w in traj.weights]), rng, fixed)
                          for k in late[:: max(1, len(late) // 5)]], axis=0)
        x_apriori = measured_covariance(cfg, np.zeros((1, cfg.dim)), rng, fixed)
        check0, check1, check_prior = psd_check(x_init), psd_check(x_late), psd_check(x_apriori)
        predicted = negative_subspace(x_late)
        observed = collapsed_input_subspace(w_end, spec.n_collapsed)
        gain = np.linalg.norm(w_end @ check1.eigenvectors, axis=0) ** 2
        mask = toy.augmentation_mask(cfg.dim, cfg.augmented_dims)
        result.update({
            "predicted_collapsed_dims": check1.n_negative,
            "predicted_collapsed_dims_initial": check0.n_negative,
            "predicted_collapsed_dims_apriori": check_prior.n_negative,
            "collapsed_subspace_overlap": subspace_overlap(predicted, observed),
            "contrastive_covariance_eigenvalues": {
                "initial": check0.eigenvalues.tolist(),
                "final": check1.eigenvalues.tolist(),
                "apriori": check_prior.eigenvalues.tolist(),
            },
            "is_psd": {"initial": check0.is_psd, "final": check1.is_psd, "apriori": check_prior.is_psd},
            "directions": {  # eigen-directions of the late X, ascending eigenvalue
                "x_eigenvalue_final": check1.eigenvalues[::-1].tolist(),
                "x_rayleigh_initial": np.einsum("ik,ij,jk->k", check1.eigenvectors, x_init,
                                                check1.eigenvectors)[::-1].tolist(),
                "embedding_variance": gain[::-1].tolist(),
                "augmented_share": ((check1.eigenvectors**2).T @ mask)[::-1].tolist(),
                "predicted_collapsed": (check1.eigenvalues < -check1.tolerance)[::-1].tolist(),
                "observed_collapsed": collapsed_mask(gain)[::-1].tolist(),
            },
        })
    if cfg.layers >= 2:
        a = alignment_matrix(final[0], final[1])
        survivors = spec.singular_values.size - spec.n_collapsed
        result["alignment_matrix"] = a.tolist()
        result["alignment_score"] = alignment_score(a)
        result["alignment_score_surviving"] = alignment_score(a, survivors)
        if not cfg.relu:
            result["conservation_drift"] = conservation_drift([w[0] for w in traj.weights], final)
    if cfg.layers >= 2 and linear_x:
        check = theorem3_check(x_init, np.linalg.svd(traj.weights[0][0], compute_uv=False), cfg.layers)
        result["theorem3"] = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in check.items()}
    return result


def simulate(cfg: SimConfig, progress: bool = False) -> dict:
    """Validate, integrate, analyse. Raises ValueError (bad config) or DivergenceError (blow-up)."""
    cfg.validate()
    traj, rng, fixed = integrate(cfg, progress)
    return analyse(cfg, traj, rng, fixed)


def summary(result: dict) -> str:
    """A short human-readable report of one run."""
    cfg = result["config"]
    lines = [
        f"dimcollapse: {cfg['layers']}-layer {'ReLU' if cfg['relu'] else 'linear'} network, dim {cfg['dim']}, "
        f"loss {cfg['loss']}, {cfg['integrator']} to t = {result['time']:.4g} "
        f"({result['gradient_evaluations']} gradient evaluations)",
        f"augmentation: std {cfg['augment_strength']:g} on the last {cfg['augmented_dims']} dims, "
        f"noisy views {cfg['noisy_views']}; a-priori threshold (X at W->0 stops being PSD): "
        f"{result['apriori_threshold']:.4g}",
        "embedding spectrum (log10 of covariance singular values): "
        + " ".join("-inf" if v is None else f"{v:.1f}" for v in result["embedding_log10_spectrum"]),
        f"observed collapsed dims: {result['collapsed_dims']} of {cfg['dim']}  "
        f"(effective rank {result['effective_rank']:.2f}, RankMe {result['rankme']:.2f})",
    ]
    if "predicted_collapsed_dims" in result:
        psd = result["is_psd"]
        lines += [
            f"predicted collapsed dims (negative eigenvalues of X): a-priori W->0 "
            f"{result['predicted_collapsed_dims_apriori']}, at t=0 {result['predicted_collapsed_dims_initial']},"
            f" late {result['predicted_collapsed_dims']}; X PSD at t=0: {psd['initial']}, late: {psd['final']}",
            f"overlap of predicted and observed collapsed subspaces: {result['collapsed_subspace_overlap']:.3f}",
            "",
            "  eigen-direction of late X | X eig late | X at t=0 | embed. var | aug. share | predicted | observed",
        ]
        d = result["directions"]
        for k in range(len(d["x_eigenvalue_final"])):
            lines.append(
                f"  {k:>25d} | {d['x_eigenvalue_final'][k]:>10.3g} | {d['x_rayleigh_initial'][k]:>8.3g} | "
                f"{d['embedding_variance'][k]:>10.3g} | {d['augmented_share'][k]:>10.2f} | "
                f"{'collapse' if d['predicted_collapsed'][k] else '-':>9} | "
                f"{'collapse' if d['observed_collapsed'][k] else '-':>8}"
            )
    else:
        lines.append("predictions from X: not available (X is defined for linear networks with the paper or dot loss)")
    if "alignment_matrix" in result:
        lines.append(
            f"alignment |V2^T U1|: mean diagonal {result['alignment_score']:.3f} (all modes), "
            f"{result['alignment_score_surviving']:.3f} (non-collapsed modes)"
        )
    if "conservation_drift" in result:
        lines.append(f"conservation law W1W1^T - W2^TW2: relative drift {result['conservation_drift']:.2e}")
    if "theorem3" in result:
        t3 = result["theorem3"]
        lines.append(
            f"Theorem 3 under X(t=0), aligned balanced layers with the initial singular values, to t = "
            f"{t3['times'][-1]:.3g}: closed form vs simulation max rel. error {t3['max_relative_error']:.1e}; "
            f"modes still collapsed: predicted {sum(t3['predicted_collapsed'])}, simulated {sum(t3['observed_collapsed'])}"
        )
    return "\n".join(lines)


def plot_trajectory(result: dict, path: str) -> None:
    """Singular values of every layer over time, log scale (paper Fig. 6 style); writes PNG or PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traj = result["trajectory"]
    layers = len(traj["weight_singular_values"])
    fig, axes = plt.subplots(1, layers, figsize=(4.2 * layers, 3.4), squeeze=False)
    times = np.asarray(traj["times"])
    for layer, ax in enumerate(axes[0]):
        sv = np.asarray(traj["weight_singular_values"][layer])
        ax.semilogy(times, np.maximum(sv, 1e-300), lw=1)
        ax.set_xlabel("time t (lr x steps)")
        ax.set_ylabel(f"singular values of W{layer + 1}")
        ax.set_title(f"layer {layer + 1}")
    cfg = result["config"]
    fig.suptitle(f"augment strength {cfg['augment_strength']:g}: {result['collapsed_dims']} collapsed dims")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    d = SimConfig()
    p = argparse.ArgumentParser(
        prog="python -m theory.simulate",
        description="Simulate a linear network trained with InfoNCE on the paper's toy data and compare the "
        "observed dimensional collapse with the theory's predictions (Jing et al., ICLR 2022).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--augment-strength", type=float, default=d.augment_strength,
                   help="std of the additive noise on the augmented dims, in units of the data std")
    p.add_argument("--augmented-dims", type=int, default=d.augmented_dims, help="number of augmented (last) dims")
    p.add_argument("--dim", type=int, default=d.dim, help="input and layer width")
    p.add_argument("--layers", type=int, default=d.layers, help="number of linear layers L")
    p.add_argument("--relu", action="store_true", help="ReLU between layers (paper Fig. 11b)")
    p.add_argument("--samples", type=int, default=d.samples, help="batch size N of the loss")
    p.add_argument("--loss", choices=LOSSES, default=d.loss,
                   help="paper: Eqn 2 (-|z_i-z_j|^2/2 logits); dot: official toy code (z.z'/tau); ntxent: SimCLR")
    p.add_argument("--temperature", type=float, default=d.temperature, help="tau for the dot and ntxent losses")
    p.add_argument("--integrator", choices=("gd", "ode"), default=d.integrator,
                   help="gd: gradient descent, fresh augmentation each step; ode: gradient flow on a fixed sample")
    p.add_argument("--steps", type=int, default=d.steps, help="gd steps (time = steps x lr)")
    p.add_argument("--time", type=float, default=None, help="integration time (default: steps x lr)")
    p.add_argument("--lr", type=float, default=d.lr, help="gd learning rate on the batch-mean loss")
    p.add_argument("--init", default=d.init,
                   help="'paper' (singular values exp(-0.35k), random orthogonal factors) or a scale s "
                   "(entries N(0, s^2/dim))")
    p.add_argument("--noisy-views", type=int, default=d.noisy_views,
                   help="1: x' = x + noise (paper Sec. 4); 2: noise on both views (official toy code)")
    p.add_argument("--ode-method", default=d.ode_method, help=f"adaptive solve_ivp method: {', '.join(ODE_METHODS)}")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--json", metavar="PATH", help="write every number of the run as JSON")
    p.add_argument("--plot", metavar="PATH", help="write the singular-values-over-time figure (PNG/PDF)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p


def _writable(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write {path!r}: folder {folder!r} does not exist or is not writable")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    fields = {k: v for k, v in vars(args).items() if k not in ("json", "plot", "quiet")}
    cfg = SimConfig(**fields)
    try:
        cfg.validate()
        for path in (args.json, args.plot):
            if path:
                _writable(path)
        result = simulate(cfg, progress=not args.quiet)
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    except DivergenceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, args.json)
    if args.plot:
        plot_trajectory(result, args.plot)
    if not args.quiet:
        print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
