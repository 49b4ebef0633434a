"""Simulate a linear network under InfoNCE on the paper's toy data and set the theory beside it.

    python -m theory.simulate --augment-strength 2.0

Defaults reproduce paper Sec. 4 (Fig. 3): 16-d isotropic Gaussian data, additive Gaussian augmentation on the
last 8 coordinates, one 16x16 linear layer, the paper's loss (Eqn 2), gradient descent with a fresh
augmentation every step. The run reports, side by side, what was observed (embedding spectrum and collapsed
dimensions at t = 0 and at the end) and what the theory predicts (X's significantly negative eigen-directions
at W -> 0, at t = 0 and at the end; whether the run has finished; alignment of adjacent layers; the
conservation law per pair). See ``theory.experiment`` for the rules.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from dimcollapse.io import NonFiniteError, OneLineParser, UserError, run_cli, write_json

from .dynamics import ODE_METHODS, DivergenceError
from .experiment import (
    INITS,
    DirectionTable,
    ReluLastLayer,
    SimConfig,
    ToyReport,
    Unfinished,
    XPredictions,
    run_experiment,
)
from .losses import LOSSES, TEMPERATURE_LOSSES, loss_help


def _log10s(values: list) -> str:
    return " ".join("-inf" if v is None else f"{v:.1f}" for v in values)


def _ranks(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {ranks[0]}-{ranks[-1]}"


def _overlap(value: float | None) -> str:
    return "n/a (nothing predicted, nothing collapsed)" if value is None else f"{value:.3f}"


def _predicted_word(directions: DirectionTable, k: int) -> str:
    if directions.predicted_collapsed[k]:
        return "collapse"
    return "shrinks" if directions.shrinks[k] else "-"


def _x_lines(report: ToyReport, x: XPredictions) -> list[str]:
    """The three X verdicts (W -> 0, t = 0, end) and the overlap of each prediction with what collapsed."""
    test = x.psd_test
    names = {"apriori": "W->0", "initial": "t=0", "final": "end"}
    looks = 1 + int(np.log2(test.budget / test.first_batches))
    lines = [f"X's verdicts (fresh batches of {test.batch_size}: {test.first_batches} first, doubled while "
             f"undetermined up to {test.budget}; error <= {test.alpha * looks:g} over {looks} looks):"]
    counts = {"apriori": x.predicted_collapsed_dims_apriori,
              "initial": x.predicted_collapsed_dims_initial, "final": x.x_negative_dims_final}
    for key, name in names.items():
        lines.append(f"  X at {name:>4}: {x.x_verdict_text[key]}" + ("" if x.x_verdict[key] != "not psd" else
                     f" -> {counts[key]} direction(s) shrink under X"))
    if x.x_negative_dims_final > x.predicted_collapsed_dims:
        lines.append(f"  of the end's {x.x_negative_dims_final} negative directions, "
                     f"{x.predicted_collapsed_dims} stay negative once W drops them (collapse); the rest "
                     "shrink toward a finite equilibrium (restoring forces), which is not collapse")
    ov = x.overlaps
    lines.append("overlap of the observed collapsed subspace with X's prediction at W->0 / t=0 / end: "
                 + " / ".join("n/a" if ov[k] is None else f"{ov[k]:.3f}" for k in names)
                 + (" (nothing predicted, nothing collapsed)" if all(v is None for v in ov.values()) else ""))
    if report.collapsed_dims > 0 and x.predicted_collapsed_dims == 0:
        lines.append("  " + ("X was shown PSD at W->0, t=0 and the end: this collapse is not Theorem 1's"
                             if x.not_theorem1 else "X's end prediction is empty, but not every X was shown "
                             "PSD: whether this collapse is Theorem 1's is undetermined"))
    return lines


def _observed_lines(report: ToyReport) -> list[str]:
    """The run, its augmentation, the spectra at t = 0 and at the end, and what collapsed."""
    cfg = report.config
    dim = cfg["dim"]
    steps = f"{cfg['steps']} steps of lr {cfg['lr']:g}" if cfg["integrator"] == "gd" else \
        f"{report.gradient_evaluations} gradient evaluations"
    lines = [
        f"dimcollapse: {cfg['layers']}-layer {'ReLU' if cfg['relu'] else 'linear'} network, dim {dim}, "
        f"init {cfg['init']}, loss {cfg['loss']}, {cfg['integrator']} to t = {report.time:.4g} ({steps})",
        f"augmentation: std {cfg['augment_strength']:g} on the last {cfg['augmented_dims']} dims, "
        f"noisy views {cfg['noisy_views']}; a-priori threshold (X at W->0 stops being PSD): "
        + (f"{report.apriori_threshold:.4g}" if report.apriori_threshold is not None
           else "none: X at W->0 is PSD at every strength for this loss"
           + (" (2 Cov(clean x) / tau)" if cfg["loss"] == "dot" else " (both views noised: 2 Cov(clean x))")),
        "embedding spectrum, log10 variance, t=0: " + _log10s(report.embedding_log10_spectrum_initial),
        "                                    end: " + _log10s(report.embedding_log10_spectrum),
        f"collapsed dims (variance <= 1e-3 x the same spectrum's largest): at t=0 "
        f"{report.collapsed_dims_initial} of {dim}, at the end {report.collapsed_dims} of {dim}, "
        f"collapsed by training {report.collapsed_by_training}",
    ]
    if report.total_collapse:
        end, start = (_log10s(s[:1]) for s in (report.embedding_log10_spectrum,
                                               report.embedding_log10_spectrum_initial))
        lines.append(f"TOTAL COLLAPSE: the end's largest variance (log10 {end}) is 3 or more decades below t=0's "
                     f"(log10 {start}): all {dim} dims count as collapsed")
    if report.collapsed_dims_initial:
        logs = report.collapsed_initial_log10
        lines.append(
            f"  the init starts collapsed: {_ranks(report.collapsed_initial_ranks)} of the t=0 spectrum, "
            f"{max(logs):.1f} to {min(logs):.1f} decades below the largest variance; those are the init's, "
            "not training's (the default --init orthogonal starts with none)")
    return lines


def _unfinished_lines(u: Unfinished | None, layers: int) -> list[str]:
    if u is None:
        return []
    rate = "variance ~ exp(2 lambda t) for one layer" if layers == 1 else \
        "Theorem 3's sigma' = lambda sigma^(2L-1) for balanced layers"
    return [
        f"UNFINISHED: X still predicts collapse along {u.directions} direction(s) that have not collapsed;"
        f" their variance must fall another {u.decades_to_go[0]:.1f}-{u.decades_to_go[1]:.1f} decades"
        f" (to 1e-3 x the largest). At the end's X eigenvalues there ({max(u.x_eigenvalues):.2g} to "
        f"{min(u.x_eigenvalues):.2g}; {rate}) or at the decay these ranks showed over the run's last "
        f"quarter, whichever is slower, that takes t = {u.more_time_needed:.3g} more, "
        "longer if the rates keep falling as the loss saturates: rerun with at least --time "
        f"{u.suggested_time:g}"]


def _direction_table(d: DirectionTable) -> list[str]:
    """X's end eigen-directions, ascending: eigenvalues, t = 0 Rayleigh quotients, gains, the verdicts."""
    lines = ["", "  eigen-direction of X at end | X eig end | X at t=0 | embed. var | aug. share | "
             "predicted | observed"]
    for k in range(len(d.x_eigenvalue_final)):
        lines.append(
            f"  {k:>27d} | {d.x_eigenvalue_final[k]:>9.3g} | {d.x_rayleigh_initial[k]:>8.3g} | "
            f"{d.embedding_variance[k]:>10.3g} | {d.augmented_share[k]:>10.2f} | "
            f"{_predicted_word(d, k):>9} | "
            f"{'collapse' if d.observed_collapsed[k] else '-':>8}"
        )
    return lines


def _relu_lines(r: ReluLastLayer) -> list[str]:
    low, cos = r.most_negative_eigenvalue, r.cosine_most_negative_with_mean_h

    def fmt(c: float | None) -> str:
        return "n/a" if c is None else f"{c:.3f}"

    return [
        f"ReLU last layer (Theorem 1 applied to W_L: -dL/dW_L = W_L X(h), h = its input features): X(h) is "
        f"{r.x_verdict['initial']} at t=0 with {r.predicted_collapsed_dims_initial} significantly negative "
        f"eigenvalues, {r.x_verdict['final']} at the end with {r.x_negative_dims_final}, of which "
        f"{r.predicted_collapsed_dims} stay negative once W_L drops them (collapse; the rest shrink) "
        f"(lowest {low['initial']:.3g} at t=0, {low['final']:.3g} "
        f"at the end); cosine of its eigenvector with E[h]: {fmt(cos['initial'])} at t=0, "
        f"{fmt(cos['final'])} at the end",
        f"  W_L's collapsed directions (sigma^2 <= 1e-3 x largest at t=0 or at the end): "
        f"{r.observed_collapsed_dims_initial} at t=0, {r.observed_collapsed_dims} at the end; "
        f"overlap with X(h)'s prediction: {_overlap(r.overlap)}"
        + ("" if r.predicted_inside_observed is None else
           f", share of the prediction inside W_L's collapsed directions {r.predicted_inside_observed:.3f}"),
    ]


def _layer_lines(report: ToyReport) -> list[str]:
    """Theorem 2's alignment and the conservation law, per adjacent pair."""
    lines = []
    for pair in report.alignment or []:
        i, j = pair.pair
        lines.append(
            f"alignment W{i}-W{j} (Theorem 2, A = V{j}^T U{i}, {pair.surviving} surviving modes): "
            f"{pair.score:.3f} (1 aligned, chance 0 +- {pair.chance_sd:.3f}); shared basis in any order "
            f"{pair.shared_basis:.3f}; gap-grouped {pair.grouped_score:.3f} against its chance "
            f"{pair.grouped_chance:.3f}; raw |A| in the JSON")
    for row in report.conservation or []:
        i, j = row.pair
        text = f"conservation W{i}W{i}^T - W{j}^TW{j}: relative drift {row.drift:.2e}"
        if row.gd_second_order is not None:
            text += (f"; gd's exact second-order term lr^2 sum(G{i}G{i}^T - G{j}^TG{j}) accounts for "
                     f"{row.gd_second_order:.2e} (unexplained {row.unexplained:.0e}): a gd effect that "
                     "shrinks with lr and is 0 for the flow")
        else:
            text += " (the flow conserves it exactly: this is the ODE solver's tolerance)"
        lines.append(text)
    return lines


def summary(report: ToyReport) -> str:
    """A short human-readable report of one run: observed, X's verdicts and predictions, the layers."""
    lines = _observed_lines(report)
    x = report.x_predictions
    if x is not None:
        lines += (_x_lines(report, x) + _unfinished_lines(x.unfinished, report.config["layers"])
                  + _direction_table(x.directions))
    elif report.relu_last_layer is not None:
        lines += _relu_lines(report.relu_last_layer)
    else:
        lines.append("predictions from X: not available (X is defined for the paper and dot losses; ntxent "
                     "normalizes z)")
    return "\n".join(lines + _layer_lines(report))


def plot_trajectory(report: ToyReport, path: str) -> None:
    """Singular values of every layer, and of the embedding covariance, over time on log axes (paper Fig. 6
    style), coloured by rank; writes PNG or PDF by the path's suffix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = report.trajectory
    panels = [(f"W{k + 1}", sv) for k, sv in enumerate(history.weight_singular_values)]
    if history.embedding_singular_values is not None:
        panels.append(("embedding covariance", history.embedding_singular_values))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False, layout="constrained")
    times = np.asarray(history.times)
    for ax, (name, values) in zip(axes[0], panels, strict=True):
        values = np.maximum(np.asarray(values), 1e-300)
        colours = plt.cm.viridis(np.linspace(0, 0.9, values.shape[1]))
        for k in range(values.shape[1]):
            ax.semilogy(times, values[:, k], lw=1, color=colours[k])
        if name == "embedding covariance":  # the collapse rule against the largest variance so far
            ax.semilogy(times, 1e-3 * np.maximum.accumulate(values[:, 0]), color="grey", ls=":", lw=1.2,
                        label="1e-3 x largest so far")
            ax.legend(loc="lower right", fontsize=7)
        ax.set(xlabel="time t = lr x steps", ylabel="singular values", title=name)
    cfg = report.config
    fig.suptitle(f"augment strength {cfg['augment_strength']:g}, {cfg['layers']} layer(s), init {cfg['init']}: "
                 f"{report.collapsed_dims} of {cfg['dim']} embedding dims collapsed at the end, "
                 f"{report.collapsed_dims_initial} at t = 0 (dark = largest)")
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
    p.add_argument("--loss", choices=LOSSES, default=d.loss, help=loss_help(LOSSES))
    p.add_argument("--temperature", type=float, default=d.temperature,
                   help=f"tau for the {' and '.join(TEMPERATURE_LOSSES)} losses")
    p.add_argument("--integrator", choices=("gd", "ode"), default=d.integrator,
                   help="gd: gradient descent, fresh augmentation each step; ode: gradient flow on a fixed sample")
    p.add_argument("--steps", type=int, default=d.steps, help="gd steps (time = steps x lr)")
    p.add_argument("--time", type=float, default=None,
                   help="integration time; overrides --steps (when omitted: steps x lr)")
    p.add_argument("--lr", type=float, default=d.lr, help="gd learning rate on the batch-mean loss")
    p.add_argument("--init", default=d.init,
                   help=f"one of {', '.join(INITS)}, optionally ':scale', or a bare scale s (= orthogonal:s). "
                   "orthogonal: random orthogonal factors, distinct singular values spread so the end-to-end "
                   "variances start within one decade (nothing collapsed at t=0 at any width or depth); "
                   "paper: singular values exp(-0.35k) at width 16, the same span exp(-5.25) at every width "
                   "(starts with collapsed dims: 6 of 16 at L = 1, 11 at L = 2); gaussian: entries N(0, scale^2/dim)")
    p.add_argument("--noisy-views", type=int, default=d.noisy_views,
                   help="1: x' = x + noise (paper Sec. 4); 2: noise on both views (official toy code)")
    p.add_argument("--ode-method", default=d.ode_method, help=f"adaptive solve_ivp method: {', '.join(ODE_METHODS)}")
    p.add_argument("--seed", type=int, default=d.seed, help="seeds the init, the data and the augmentation")
    p.add_argument("--x-budget", type=int, default=d.x_budget,
                   help="most fresh batches per X verdict (PSD / not PSD / undetermined): 64 first, doubled while "
                   "undetermined up to this many")
    p.add_argument("--json", metavar="PATH", help="write every number of the run as JSON")
    p.add_argument("--plot", metavar="PATH", help="write the singular-values-over-time figure (.png or .pdf)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p


def _writable(path: str, flag: str, suffixes: tuple[str, ...] | None = None) -> None:
    """ValueError naming ``flag`` unless ``path`` is a file name we can write (with one of ``suffixes``)."""
    allowed = f" ending in {' or '.join(suffixes)}" if suffixes else ""
    if not path.strip() or path.endswith(("/", os.sep)):
        raise ValueError(f"{flag} {path!r} is not a file name: give a path{allowed}")
    if suffixes and os.path.splitext(path)[1].lower() not in suffixes:
        raise ValueError(f"{flag} cannot write {path!r}: the file name must end in {' or '.join(suffixes)}")
    if os.path.isdir(path):
        raise ValueError(f"{flag} cannot write {path!r}: it is a folder, give a file path{allowed}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ValueError(f"{flag} cannot write {path!r}: folder {folder!r} does not exist or is not writable")


def _main(argv: list[str] | None) -> int:
    from dimcollapse.io import check_budget

    from .experiment import X_BATCHES

    parser = build_parser()
    args = parser.parse_args(argv)
    fields = {k: v for k, v in vars(args).items() if k not in ("json", "plot", "quiet")}
    cfg = SimConfig(**fields)
    try:
        cfg.validate()
        if args.json is not None:
            _writable(args.json, "--json")
        if args.plot is not None:
            _writable(args.plot, "--plot", (".png", ".pdf"))
        # Rough cost model, measured on a 2-core machine (float64, one BLAS thread): one gd step costs about
        # N^2 d + L N d^2 multiply-adds, each of the 3 X verdicts at least X_BATCHES batches of N^2 d + N d^2 + d^3
        # (up to --x-budget), at ~2e9 per second (so the time is a lower bound); peak memory ~3 N x N float64
        # arrays, ~5 (d x d) per X batch of the budget plus ~201 snapshots per layer, plus 100 MB of Python.
        n, d, layers = cfg.samples, cfg.dim, cfg.layers
        steps = float(cfg.steps) if cfg.time is None or cfg.integrator == "ode" else cfg.time / cfg.lr
        work = steps * (n * n * d + layers * n * d * d) + 3 * X_BATCHES * (n * n * d + n * d * d + d**3)
        memory = 8.0 * (3 * n * n + 20 * n * d + (5 * cfg.x_budget + 201 * layers) * d * d) + 100e6
        check_budget(f"this run ({steps:.4g} steps of N = {n}, dim {d}, {layers} layer(s))", memory,
                     work / 2e9 + 1e-5 * steps,
                     "lower --steps / --time, --samples, --dim, --layers or --x-budget")
        report = run_experiment(cfg, progress=not args.quiet)
    except ValueError as err:
        raise UserError(str(err)) from None
    except DivergenceError as err:
        raise NonFiniteError(str(err)) from None
    if args.json is not None:
        write_json(args.json, report.to_json())
    if not args.quiet:
        print(summary(report), flush=True)
    if args.plot is not None:
        plot_trajectory(report, args.plot)
    written = [p for p in (args.json, args.plot) if p is not None]
    if written and not args.quiet:
        print(f"wrote {', '.join(written)}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit status as every command of the project: 2 bad input (one line), 3 a diverged run."""
    return run_cli(_main, argv, resume_hint="nothing was written; the same command starts over (same result)")


if __name__ == "__main__":
    sys.exit(main())
