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
import os
import sys

import numpy as np

from .dynamics import ODE_METHODS, DivergenceError
from .experiment import SimConfig, analyse, integrate, simulate  # noqa: F401  (re-exported for scripts)
from .io import OneLineParser, write_json
from .losses import LOSSES


def summary(result: dict) -> str:
    """A short human-readable report of one run."""
    cfg = result["config"]
    lines = [
        f"dimcollapse: {cfg['layers']}-layer {'ReLU' if cfg['relu'] else 'linear'} network, dim {cfg['dim']}, "
        f"loss {cfg['loss']}, {cfg['integrator']} to t = {result['time']:.4g} "
        f"({result['gradient_evaluations']} gradient evaluations)",
        f"augmentation: std {cfg['augment_strength']:g} on the last {cfg['augmented_dims']} dims, "
        f"noisy views {cfg['noisy_views']}; a-priori threshold (X at W->0 stops being PSD): "
        + (f"{result['apriori_threshold']:.4g}" if result["apriori_threshold"] is not None
           else "none (with both views noised X(W->0) = 2 Cov(clean x) is PSD at every strength)"),
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
            f"overlap of predicted and observed collapsed subspaces: {result['collapsed_subspace_overlap']:.3f}"
            + (" (X predicts none: this collapse is not Theorem 1's)"
               if result["predicted_collapsed_dims"] == 0 and result["collapsed_dims"] > 0 else ""),
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
            f"modes still collapsed: predicted {sum(t3['predicted_collapsed'])}, "
            f"simulated {sum(t3['observed_collapsed'])}"
        )
    return "\n".join(lines)


def plot_trajectory(result: dict, path: str) -> None:
    """Singular values of every layer, and of the embedding covariance, over time on log axes (paper Fig. 6
    style), coloured by rank; writes PNG or PDF by the path's suffix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traj = result["trajectory"]
    panels = [(f"W{k + 1}", sv) for k, sv in enumerate(traj["weight_singular_values"])]
    if "embedding_singular_values" in traj:
        panels.append(("embedding covariance", traj["embedding_singular_values"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False, layout="constrained")
    times = np.asarray(traj["times"])
    for ax, (name, values) in zip(axes[0], panels, strict=True):
        values = np.maximum(np.asarray(values), 1e-300)
        colours = plt.cm.viridis(np.linspace(0, 0.9, values.shape[1]))
        for k in range(values.shape[1]):
            ax.semilogy(times, values[:, k], lw=1, color=colours[k])
        ax.set(xlabel="time t = lr x steps", ylabel="singular values", title=name)
    cfg = result["config"]
    fig.suptitle(f"augment strength {cfg['augment_strength']:g}, {cfg['layers']} layer(s): "
                 f"{result['collapsed_dims']} of {cfg['dim']} embedding dims collapsed (dark = largest)")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    d = SimConfig()
    p = OneLineParser(
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
    p.add_argument("--time", type=float, default=None,
                   help="integration time; overrides --steps (when omitted: steps x lr)")
    p.add_argument("--lr", type=float, default=d.lr, help="gd learning rate on the batch-mean loss")
    p.add_argument("--init", default=d.init,
                   help="'paper' (singular values exp(-0.35k), random orthogonal factors) or a scale s "
                   "(entries N(0, s^2/dim))")
    p.add_argument("--noisy-views", type=int, default=d.noisy_views,
                   help="1: x' = x + noise (paper Sec. 4); 2: noise on both views (official toy code)")
    p.add_argument("--ode-method", default=d.ode_method, help=f"adaptive solve_ivp method: {', '.join(ODE_METHODS)}")
    p.add_argument("--seed", type=int, default=d.seed, help="seeds the init, the data and the augmentation")
    p.add_argument("--json", metavar="PATH", help="write every number of the run as JSON")
    p.add_argument("--plot", metavar="PATH", help="write the singular-values-over-time figure (PNG/PDF)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p


def _writable(path: str) -> None:
    if os.path.isdir(path):
        raise ValueError(f"cannot write {path!r}: it is a folder, give a file path")
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
        parser.error(str(err))
    except DivergenceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        write_json(args.json, result)
    if args.plot:
        plot_trajectory(result, args.plot)
    if not args.quiet:
        print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
