"""The theory against a training run, over time: ``python -m empirical.bridge RUN [RUN ...] --out DIR``.

Reads each run folder's ``config.json`` and ``monitor.jsonl`` (rows of ``empirical.xmonitor``, with the npz
side files) and tests three predictions, each beside a baseline and chance; runs that share every setting but
the seed are aggregated (mean +- standard error over seeds).

(a) Instantaneous (Lemma 2). Between monitor rows t0 < t1, every singular value of every projector layer is
    predicted to move by  dlog sigma_i = step_l (rate_i(t0) - lambda)  (rate from ``xmonitor``, lambda the
    weight decay), against the observed log sigma_j(t1) - log sigma_i(t0), j the singular value whose right
    singular vector matches v_i(t0) (an assignment on |V(t0)^T V(t1)|; the rank-matched change, which mixes
    up crossing singular values, is reported beside it). The effective
    step of layer l between the rows:
      plain SGD            step = sum of the learning rates of the updates in between (exact as lr -> 0);
      momentum m           step = sum_s lr_s (1 - m^(s+1)) / (1 - m): what a constant gradient moves the
                           weights with the buffer started at zero at step 0, i.e. lr / (1 - m) at steady
                           state (the buffer's lag still over-states a direction changing by delta per step
                           by about m delta / (1 - m) relative: 1/(1 - m e^-delta) instead of 1/(1 - m));
      LARS                 also x the layer's trust ratio q_l = eta ||W_l|| / ||G_l + lambda W_l||, read from
                           the row's ``trust_ratio`` when the trainer logs it, else estimated with the
                           held-out full-batch gradient G_l (row: weight_norm, grad_norm, sigma, rate; the
                           mini-batch noise makes the real ||G_l|| larger, so the estimate over-states q);
      AdamW                per-coordinate scaling, no scalar step: the prediction is skipped.
    Scores: Spearman (pooled, and the median within an interval) and the OLS slope of observed on
    predicted (for cosine InfoNCE also with the exact gradient's rates, ``exact_gradient_*``, which separates
    the error of the W X form from the rest); baseline: the previous interval's observed change (growth
    persists), pooled and (``baseline_median_interval_spearman``) within each interval like the prediction's
    median; chance: the 95th percentile of |Spearman| with the predictions shuffled within each interval
    (200 draws). Beside the one-row prediction (``instantaneous`` lists the fields):
      history_*            momentum's buffer history: the interval's displacement is sum_j c_kj q_j D_j over
                           the rows j <= k (``momentum_kernel``: gradients held piecewise constant between rows,
                           weighted by sum_s lr_s m^(s-r)); with m = 0.9 and 5-step intervals about 74 % of it
                           comes from rows before the interval (``history_share``), which the one-row form fills
                           with the current row's rate;
      interval_trust_*     LARS's trust ratio averaged over the interval (``interval_trust``), not the one
                           mini-batch value at its start;
      delta_sigma_*, surviving_*, collapsed_*   the comparison in sigma itself (no division by a near-zero
                           sigma) and the log-sigma comparison split at the collapse threshold.
    ``fork_ceiling`` / ``ceiling_spread``: the noise ceiling from two batch streams forked from the same weights,
    with a bootstrap interval, clipped at 1 and flagged above it.
(b) Early warning (Theorem 1). At the row nearest each fraction of training (5%, 10%, and every row for the
    curve), score the end map's row-space directions v_k (right singular vectors of W = W_L ... W_1 at the
    last row) by -v_k^T X v_k, and label v_k collapsed when sigma_k^2 <= COLLAPSE_RTOL sigma_max^2 at the
    end. AUC (Mann-Whitney) against chance 0.5 and against the baseline score -|W_early v_k| (the weakest
    directions of the early map) and the early-trend baseline -Delta log|W v_k| from the first row to the
    early one (``auc_trend``: a rate, like X); subspace overlap of X's |T| lowest eigenvectors with the
    collapsed set T, against |T| / d (a random subspace), the early map's |T| weakest right singular vectors
    and the |T| directions that shrank most since the first row (``overlap_trend``: the lowest generalized
    eigenvectors of |W_early v|^2 / |W_first v|^2).
(c) Depth and alignment (Sec. 5). Collapsed count at the end (end-to-end sigma rule and the embedding
    spectrum's count) against projector depth, and the gap-grouped alignment of adjacent layers over time
    (``theory.predict.layer_alignment``) against its chance level.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from dimcollapse.io import OneLineParser, UserError, run_cli, write_json
from theory.predict import subspace_overlap
from theory.spectrum import COLLAPSE_RTOL

EARLY = (0.05, 0.10)
PERMUTATIONS = 200
MAX_POINTS = 4000  # scatter points kept per run for the figures


def _significant(values: np.ndarray, digits: int = 4) -> np.ndarray:
    """``values`` rounded to ``digits`` significant digits (zeros and non-finite values unchanged)."""
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(values))))
    scale = np.where(np.isfinite(scale), scale, 1.0)
    return np.round(values * scale) / scale


# settings that define a group of seeds (whichever the config has)
SETTINGS = ("dataset", "backbone", "projector", "projector_layers", "loss", "temperature", "optimizer", "lr",
            "momentum", "weight_decay", "batch_size", "full_batch", "epochs", "max_steps", "augment",
            "augment_strength")
DEFAULT_MOMENTUM = {"sgd": 0.9, "lars": 0.9}  # empirical.optim's choice
DEFAULT_ETA = 0.001
# per-run numbers of prediction (a) averaged over seeds
INSTANTANEOUS_METRICS = (
    "spearman", "slope", "median_interval_spearman", "chance_spearman_95", "baseline_spearman", "baseline_slope",
    "rank_matched_spearman", "rank_matched_slope", "end_to_end_spearman", "end_to_end_slope",
    "exact_gradient_spearman", "exact_gradient_slope", "history_share", "history_spearman", "history_slope",
    "history_median_interval_spearman", "history_end_to_end_spearman", "history_end_to_end_slope",
    "interval_trust_spearman", "interval_trust_slope", "baseline_median_interval_spearman",
    "median_interval_spearman_paired", "history_median_interval_spearman_paired", "delta_sigma_spearman",
    "delta_sigma_slope", "history_delta_sigma_spearman", "history_delta_sigma_slope", "surviving_points",
    "surviving_spearman", "surviving_slope", "history_surviving_spearman", "history_surviving_slope",
    "collapsed_points", "collapsed_spearman", "collapsed_slope",
    "max_abs_predicted", "p99_abs_predicted")
ROW_KEYS = ("step", "loss", "x", "layers", "end_to_end", "spectrum_z", "alignment", "arrays")


@dataclass
class Run:
    name: str
    path: str
    config: dict
    rows: list[dict]
    depth: int = field(init=False)
    _arrays: dict = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self):
        self.depth = len(self.rows[0]["layers"])

    def arrays(self, row: dict) -> dict[str, np.ndarray]:
        """X and the weights of one row (npz side file), read once."""
        if row["step"] not in self._arrays:
            path = os.path.join(self.path, row["arrays"])
            if not os.path.exists(path):
                raise UserError(f"{self.name}: step {row['step']} names {path}, which does not exist")
            with np.load(path) as f:
                self._arrays[row["step"]] = {k: f[k].astype(np.float64) for k in f.files}
        return self._arrays[row["step"]]

    def end_to_end(self, row: dict) -> tuple[np.ndarray, np.ndarray]:
        a = self.arrays(row)
        total = a["w0"]
        for ell in range(1, self.depth):
            total = a[f"w{ell}"] @ total
        return a["x"], total


def load_run(path: str) -> Run:
    """Run folder -> Run; every missing or malformed piece is a one-line UserError."""
    if not os.path.isdir(path):
        raise UserError(f"run folder {path!r} does not exist")
    cfg_path, log_path = os.path.join(path, "config.json"), os.path.join(path, "monitor.jsonl")
    for p in (cfg_path, log_path):
        if not os.path.exists(p):
            raise UserError(f"{path} has no {os.path.basename(p)} (train with --monitor-every N)")
    try:
        with open(cfg_path) as f:
            config = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{cfg_path} is not valid JSON ({e.msg}, line {e.lineno})") from None
    rows = []
    with open(log_path) as f:
        lines = list(f)
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{log_path} line {n} is not valid JSON ({e.msg})") from None
    if len(rows) < 2:
        raise UserError(f"{log_path} has {len(rows)} row(s); the bridge needs at least 2 monitor steps")
    for n, row in enumerate(rows, 1):
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise UserError(f"{log_path} row {n} lacks {', '.join(missing)} (not an empirical.xmonitor row)")
    rows.sort(key=lambda r: r["step"])
    name = os.path.basename(os.path.normpath(path))
    return Run(name, path, config, rows)


def settings(run: Run, with_depth: bool = True) -> dict:
    out = {k: run.config.get(k) for k in SETTINGS if k in run.config and (with_depth or k != "projector_layers")}
    out["monitor_loss"] = run.rows[0]["loss"]
    if with_depth:
        out["depth"] = run.depth
    return out


def group_label(s: dict) -> str:
    """e.g. "paper sgd lr 0.1 momentum 0.9 full batch depth 1": what tells a group's runs from another's."""
    optimizer = s.get("optimizer", "?")
    momentum = s.get("momentum", DEFAULT_MOMENTUM.get(optimizer))
    parts = [str(s.get("monitor_loss")), optimizer, f"lr {s['lr']:g}" if s.get("lr") is not None else "",
             f"momentum {momentum:g}" if momentum is not None and optimizer != "adamw" else "",
             "full batch" if s.get("full_batch") else f"batch {s['batch_size']}" if s.get("batch_size") else "",
             f"depth {s['depth']}" if "depth" in s else ""]
    return " ".join(p for p in parts if p)


# ---- (a) instantaneous ----------------------------------------------------------------------------------------

def learning_rates(run: Run, s0: int, s1: int, row1: dict) -> np.ndarray:
    """The learning rates of the updates s0 .. s1-1 (those between the rows at steps s0 and s1): the trainer's
    schedule from config.json (lr, warmup_steps, total_steps; or schedule "constant"), else the row's
    ``lr_sum`` spread evenly, else the trapezoid of the rows' ``lr``."""
    c, n = run.config, s1 - s0
    if c.get("schedule") == "constant" and "lr" in c:
        return np.full(n, float(c["lr"]))
    if all(k in c for k in ("lr", "warmup_steps", "total_steps")):
        from empirical.optim import lr_at

        return np.array([lr_at(s, c["lr"], c["warmup_steps"], c["total_steps"]) for s in range(s0, s1)])
    if row1.get("lr_sum") is not None:
        return np.full(n, float(row1["lr_sum"]) / n)
    prev = [r for r in run.rows if r["step"] == s0]
    lrs = [prev[0].get("lr") if prev else None, row1.get("lr")]
    if any(v is None for v in lrs):
        raise UserError(f"{run.name}: no learning rate (config lr/warmup_steps/total_steps, or rows' lr)")
    return np.full(n, 0.5 * (lrs[0] + lrs[1]))


def momentum_of(run: Run) -> float:
    opt = run.config.get("optimizer", "sgd")
    return float(run.config.get("momentum", DEFAULT_MOMENTUM.get(opt, 0.0)))


def effective_step(run: Run, s0: int, s1: int, row1: dict) -> float:
    """sum_s lr_s (1 - m^(s+1)) / (1 - m) over the updates s0 .. s1-1: the distance a constant gradient moves
    the weights with momentum m, the buffer starting at zero at step 0 (torch SGD, LARS); plain SGD: sum lr."""
    m = momentum_of(run)
    steps = np.arange(s0, s1)
    return float(np.sum(learning_rates(run, s0, s1, row1) * (1.0 - m ** (steps + 1)) / (1.0 - m)))


def estimated_trust(run: Run, row: dict) -> np.ndarray:
    """LARS's q_l = eta ||W_l|| / ||G_l + lambda W_l|| per layer, with the row's held-out full-batch gradient G_l
    (row: weight_norm, grad_norm, sigma, rate; the mini-batch noise makes the real ||G_l|| larger, so this
    over-states q)."""
    lam, eta = float(run.config.get("weight_decay", 0.0)), float(run.config.get("eta", DEFAULT_ETA))
    q = []
    for layer in row["layers"]:
        s, rate = np.asarray(layer["sigma"], float), np.asarray(layer["rate"], float)
        inner = np.nansum(s**2 * rate)  # <W, -G> = sum_i sigma_i u_i^T (-G) v_i
        w2 = layer["weight_norm"] ** 2
        g2 = max(lam**2 * w2 - 2 * lam * inner + layer["grad_norm"] ** 2, 1e-300)
        q.append(eta * layer["weight_norm"] / np.sqrt(g2))
    return np.asarray(q)


def step_factors(run: Run, row: dict) -> tuple[np.ndarray, str] | tuple[None, str]:
    """Per-layer multiplier of ``effective_step`` (1, or LARS's trust ratio; module doc (a)) and how: the
    one-row form, q from ``row`` alone (the value logged for the update taken at the row, else the estimate)."""
    c = run.config
    opt = c.get("optimizer", "sgd")
    if opt not in ("sgd", "lars"):
        return None, f"{opt}: per-coordinate scaling, no scalar effective step"
    m = momentum_of(run)
    factor = np.ones(run.depth)
    how = "plain SGD" if m == 0 else f"momentum {m:g}: lr (1 - m^(s+1)) / (1 - m)"
    if opt == "lars":
        if row.get("trust_ratio") is not None:
            q = np.asarray(row["trust_ratio"], dtype=np.float64)
            how += ", LARS trust ratio logged"
        else:
            q = estimated_trust(run, row)
            how += ", LARS trust ratio estimated from the held-out gradient"
        factor = factor * q
    return factor, how


def interval_trust(run: Run, r0: dict, r1: dict) -> tuple[np.ndarray, str]:
    """LARS's trust ratio per layer averaged over the updates between rows r0 and r1, and how it was formed:
    the row's ``trust_ratio_mean`` (the trainer's mean over the interval's updates) when r1 carries it; the
    value logged at r0 when the interval is one update (a row every step); else the mean of the values at the
    interval's two ends (each logged, or estimated from that row's held-out gradient when not logged): a
    trapezoid over the interval, not one mini-batch value applied to all of it. 1 for SGD."""
    if run.config.get("optimizer", "sgd") != "lars":
        return np.ones(run.depth), "none (SGD)"
    if r1.get("trust_ratio_mean") is not None:
        return np.asarray(r1["trust_ratio_mean"], dtype=np.float64), "interval mean logged"
    if r1["step"] - r0["step"] == 1 and r0.get("trust_ratio") is not None:
        return np.asarray(r0["trust_ratio"], dtype=np.float64), "logged at every update"
    ends, kinds = [], []
    for row in (r0, r1):
        if row.get("trust_ratio") is not None:
            ends.append(np.asarray(row["trust_ratio"], dtype=np.float64))
            kinds.append("logged")
        else:
            ends.append(estimated_trust(run, row))
            kinds.append("estimated")
    kind = kinds[0] if kinds[0] == kinds[1] else "logged or estimated"
    return 0.5 * (ends[0] + ends[1]), f"mean of the {kind} values at the interval's two ends"


def momentum_kernel(run: Run, starts: list[int], k: int, row1: dict) -> np.ndarray:
    """Weights c_kj (j = 0 .. k) of the rows' negative gradients in the displacement over interval k
    [starts[k], starts[k+1]): with momentum m (torch SGD / LARS: buffer b_s = m b_{s-1} + g_s from b = 0 at
    step 0, update lr_s b_s), the update at step s moves the weights by lr_s sum_{r <= s} m^(s-r) g_r; the
    gradient g_r is held at row j's for r in [starts[j], starts[j+1]) (row 0's from step 0). So
    c_kj = sum_s lr_s sum_{r in row j's span, r <= s} m^(s-r), and sum_j c_kj = ``effective_step``: the
    one-row prediction is the same kernel with every earlier row's gradient replaced by row k's."""
    m = momentum_of(run)
    s0, s1 = starts[k], starts[k + 1]
    lrs = learning_rates(run, s0, s1, row1)
    steps = np.arange(s0, s1)
    c = np.zeros(k + 1)
    a_k = 0 if k == 0 else s0
    c[k] = np.sum(lrs * (1.0 - m ** (steps - a_k + 1)) / (1.0 - m))
    if m == 0:
        return c
    for j in range(k - 1, -1, -1):
        a, b = (0 if j == 0 else starts[j]), starts[j + 1]
        if m ** (s0 - b + 1) < 1e-12:
            break
        c[j] = np.sum(lrs * m ** (steps - b + 1)) * (1.0 - m ** (b - a)) / (1.0 - m)
    return c


def neg_gradients(run: Run, row: dict) -> list[np.ndarray]:
    """-dL/dW_l - lambda W_l of every layer at a row, from its side file: -dL/dW_l = P_l^T W X Q_l^T
    (the W X form of the rates; the rows' ``rate`` are u_i^T P_l^T W X Q_l^T v_i / sigma_i)."""
    a = run.arrays(row)
    lam = float(run.config.get("weight_decay", 0.0))
    ws = [a[f"w{ell}"] for ell in range(run.depth)]
    total = _chain(ws, 0, run.depth, ws[0].shape[1])
    neg = total @ a["x"]
    out = []
    for ell, w in enumerate(ws):
        p, q = _chain(ws, ell + 1, run.depth, w.shape[0]), _chain(ws, 0, ell, ws[0].shape[1])
        out.append(p.T @ neg @ q.T - lam * w)
    return out


def _chain(ws: list[np.ndarray], lo: int, hi: int, dim: int) -> np.ndarray:
    """W_{hi-1} ... W_lo (the identity of size ``dim`` when empty)."""
    out = np.eye(dim)
    for w in ws[lo:hi]:
        out = w @ out
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def _slope(pred: np.ndarray, obs: np.ndarray) -> float | None:
    from scipy.stats import linregress

    return float(linregress(pred, obs).slope) if len(pred) >= 3 and np.ptp(pred) > 0 else None


def _matched_change(w0: np.ndarray, w1: np.ndarray) -> np.ndarray:
    """log sigma_j(t1) - log sigma_i(t0) with j the singular vector of W(t1) matched to v_i(t0) (assignment
    maximizing sum |v_i(t0) . v_j(t1)|; rank order when every vector keeps its place)."""
    from scipy.optimize import linear_sum_assignment

    _, s0, vt0 = np.linalg.svd(w0, full_matrices=False)
    _, s1, vt1 = np.linalg.svd(w1, full_matrices=False)
    _, match = linear_sum_assignment(-np.abs(vt0 @ vt1.T))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(s1[match]) - np.log(s0)


def observed_changes(run: Run, r0: dict, r1: dict) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Per layer (matched, rank): the observed change of log sigma_i between two rows, with singular values
    matched by their right singular vectors (no mix-up when two values cross) and by rank; and the
    end-to-end map's matched change."""
    a0, a1 = run.arrays(r0), run.arrays(r1)
    matched, ranks = [], []
    for ell, (l0, l1) in enumerate(zip(r0["layers"], r1["layers"], strict=True)):
        matched.append(_matched_change(a0[f"w{ell}"], a1[f"w{ell}"]))
        with np.errstate(divide="ignore", invalid="ignore"):
            ranks.append(np.log(np.asarray(l1["sigma"], float)) - np.log(np.asarray(l0["sigma"], float)))
    return matched, ranks, _matched_change(run.end_to_end(r0)[1], run.end_to_end(r1)[1])


def _medians(values: np.ndarray, obs: np.ndarray, interval: np.ndarray, mask=None) -> tuple[float | None, list]:
    """Median over intervals of the within-interval Spearman of ``values`` with ``obs`` (the points in ``mask``
    only, when given), and the intervals that could be scored."""
    keep = np.ones(len(obs), bool) if mask is None else mask
    scored = [(k, _spearman(values[keep & (interval == k)], obs[keep & (interval == k)]))
              for k in np.unique(interval[keep])]
    scored = [(k, v) for k, v in scored if v is not None]
    return (float(np.median([v for _, v in scored])) if scored else None), [k for k, _ in scored]


@dataclass
class _Interval:
    """Interval k between the monitor rows r0 and r1, with the per-layer factors of its predictions."""

    k: int
    r0: dict
    r1: dict
    steps: np.ndarray  # effective step x step factor (LARS: the trust ratio at r0)
    trust: np.ndarray  # q_l averaged over the interval (``interval_trust``; 1 for SGD)
    kernel: np.ndarray  # c_kj, j = 0 .. k (``momentum_kernel``)


@dataclass
class _Points:
    """Prediction (a)'s points: one array per interval and layer while collecting, one array each once pooled.

    pred = step_l (rate_i - lambda); obs, rank_obs: the matched and the rank-matched change of log sigma_i;
    base: the previous interval's obs (persistence; NaN in the first); exact: pred with the exact gradient's
    rates; hist: the momentum-history prediction; pred_q: pred with the interval's mean trust ratio;
    sig0 = sigma_i(t0); alive: sigma_i^2 > COLLAPSE_RTOL sigma_max^2 at t0; when = t0 / last step;
    interval = k; e2e_*: the end-to-end map's pred, obs and hist.
    """

    pred: list = field(default_factory=list)
    obs: list = field(default_factory=list)
    rank_obs: list = field(default_factory=list)
    base: list = field(default_factory=list)
    exact: list = field(default_factory=list)
    hist: list = field(default_factory=list)
    pred_q: list = field(default_factory=list)
    sig0: list = field(default_factory=list)
    alive: list = field(default_factory=list)
    when: list = field(default_factory=list)
    interval: list = field(default_factory=list)
    e2e_pred: list = field(default_factory=list)
    e2e_obs: list = field(default_factory=list)
    e2e_hist: list = field(default_factory=list)

    def pooled(self) -> _Points:
        """Each field's parts concatenated (None for one never filled: ``exact`` without exact rates)."""
        return _Points(**{name: np.concatenate(parts) if parts else None for name, parts in vars(self).items()})


def _rates(values: list) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], float)


def _per_sigma(u: np.ndarray, m: np.ndarray, vt: np.ndarray, s: np.ndarray) -> np.ndarray:
    """u_i^T M v_i / sigma_i for every singular triple (u_i, sigma_i, v_i)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.einsum("ki,kj,ij->i", u, m, vt) / s


class _Collector:
    """Gathers prediction (a)'s points over a run's intervals, with what carries from one interval to the next:
    the previous observed change (persistence) and the earlier rows' D_j = -dL/dW_l - lambda W_l and trust
    ratios (the momentum buffer's history)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.lam = float(run.config.get("weight_decay", 0.0))
        self.last = run.rows[-1]["step"]
        self.has_exact = all("rate_exact" in layer for row in run.rows for layer in row["layers"])
        self.points = _Points()
        self.prev_obs: dict[int, np.ndarray] = {}
        self.grads: dict[int, list[np.ndarray]] = {}  # row index -> per-layer D_j, while in the buffer's memory
        self.trusts: list[np.ndarray] = []

    def past(self, k: int, kernel: np.ndarray) -> list[np.ndarray | None]:
        """Per layer sum_{j<k} c_kj q_j D_j: the earlier rows' part of the displacement (None: none in memory)."""
        run = self.run
        past = [None] * run.depth
        for j in np.nonzero(kernel[:k])[0]:
            if j not in self.grads:
                self.grads[j] = neg_gradients(run, run.rows[j])
            for ell in range(run.depth):
                term = kernel[j] * self.trusts[j][ell] * self.grads[j][ell]
                past[ell] = term if past[ell] is None else past[ell] + term
        for j in [j for j in self.grads if j < k and kernel[j] == 0]:
            del self.grads[j]  # out of the buffer's memory
        return past

    def add(self, iv: _Interval) -> None:
        self.trusts.append(iv.trust)
        past = self.past(iv.k, iv.kernel)
        a0 = self.run.arrays(iv.r0)
        ws = [a0[f"w{ell}"] for ell in range(self.run.depth)]
        gains, ranks, e2e = observed_changes(self.run, iv.r0, iv.r1)
        for ell, layer in enumerate(iv.r0["layers"]):
            self._add_layer(iv, ell, layer, ws[ell], past[ell], gains[ell], ranks[ell])
        self._add_end_to_end(iv, ws, past, e2e)

    def _add_layer(self, iv: _Interval, ell: int, layer: dict, w: np.ndarray, past: np.ndarray | None,
                   obs: np.ndarray, rank_obs: np.ndarray) -> None:
        """One layer's points: pred = step_l (rate_i - lambda), hist = c_kk q_k (rate_i - lambda)
        + u_i^T past_l v_i / sigma_i."""
        p = self.points
        rate = _rates(layer["rate"]) - self.lam
        pred = iv.steps[ell] * rate
        hist = iv.kernel[iv.k] * iv.trust[ell] * rate
        if past is not None:
            u, s, vt = np.linalg.svd(w, full_matrices=False)
            hist = hist + _per_sigma(u, past, vt, s)
        base = self.prev_obs.get(ell, np.full_like(obs, np.nan))
        self.prev_obs[ell] = obs
        ok = np.isfinite(obs) & np.isfinite(pred) & np.isfinite(rank_obs)
        if self.has_exact:
            exact = iv.steps[ell] * (_rates(layer["rate_exact"]) - self.lam)
            ok &= np.isfinite(exact)
            p.exact.append(exact[ok])
        sigma = np.asarray(layer["sigma"], float)
        alive = sigma**2 > COLLAPSE_RTOL * np.max(sigma**2) if np.max(sigma) > 0 else np.zeros(len(sigma), bool)
        p.pred.append(pred[ok]), p.obs.append(obs[ok]), p.rank_obs.append(rank_obs[ok]), p.base.append(base[ok])
        p.when.append(np.full(ok.sum(), iv.r0["step"] / self.last)), p.interval.append(np.full(ok.sum(), iv.k))
        p.hist.append(hist[ok]), p.pred_q.append((iv.kernel.sum() * iv.trust[ell] * rate)[ok])
        p.sig0.append(sigma[ok]), p.alive.append(alive[ok])

    def _add_end_to_end(self, iv: _Interval, ws: list[np.ndarray], past: list, obs: np.ndarray) -> None:
        """The end map's points: pred_i = sum_l step_l (c_li - lambda), its history through
        sum_l P_l past_l Q_l."""
        run, p = self.run, self.points
        by_layer = np.asarray(iv.r0["end_to_end"]["rate_by_layer"], dtype=np.float64) - self.lam
        pred = np.sum(iv.steps[:, None] * by_layer, axis=0)
        hist = np.sum(iv.kernel[iv.k] * iv.trust[:, None] * by_layer, axis=0)
        if any(m is not None for m in past):
            d = ws[0].shape[1]
            flow = sum(_chain(ws, ell + 1, run.depth, ws[ell].shape[0]) @ m @ _chain(ws, 0, ell, d)
                       for ell, m in enumerate(past) if m is not None)
            u, s, vt = np.linalg.svd(_chain(ws, 0, run.depth, d), full_matrices=False)
            hist = hist + _per_sigma(u, flow, vt, s)
        ok = np.isfinite(obs) & np.isfinite(pred)
        p.e2e_pred.append(pred[ok]), p.e2e_obs.append(obs[ok]), p.e2e_hist.append(hist[ok])


def instantaneous(run: Run, rng: np.random.Generator) -> dict:
    """Prediction (a) for one run: pooled over layers, singular values and intervals.

    Beside the one-row prediction (module doc):
      history_*        the momentum buffer's history: pred_i = sum_{j<=k} c_kj q_j u_i^T D_j v_i / sigma_i with
                       c_kj from ``momentum_kernel`` (earlier rows' gradients, held piecewise constant between
                       rows, projected on the current row's singular vectors), D_j = -dL/dW_l - lambda W_l at
                       row j, q_j the trust ratio averaged over row j's interval (``interval_trust``); the
                       current row's term is the row's own rate. Equal to the one-row prediction when m = 0.
      interval_trust_* the one-row prediction with LARS's trust ratio averaged over the interval instead of
                       the value at its start (``trust_ratio_interval`` says how it was averaged).
      baseline_median_interval_spearman  persistence scored within each interval, like the prediction's median;
                       ``median_interval_spearman_paired`` is the prediction's median over the same intervals
                       (the first interval has no persistence).
      delta_sigma_*    predicted sigma_i(t0) x pred (step x u_i^T(-G)v_i: no division by sigma) against the
                       observed sigma_j(t1) - sigma_i(t0); ``surviving_*`` / ``collapsed_*`` split the log-sigma
                       comparison at sigma_i^2 <= COLLAPSE_RTOL sigma_max^2 of the layer at t0, where the rate
                       divides by a near-zero sigma.
    """
    collector = _Collector(run)
    starts = [r["step"] for r in run.rows]
    shares, trust_how, how = [], set(), None
    for k, (r0, r1) in enumerate(zip(run.rows[:-1], run.rows[1:], strict=True)):
        factor, how = step_factors(run, r0)
        if factor is None:
            return {"skipped": how}
        eff = effective_step(run, r0["step"], r1["step"], r1)
        trust, trust_kind = interval_trust(run, r0, r1)
        trust_how.add(trust_kind)
        kernel = momentum_kernel(run, starts, k, r1)
        shares.append(1.0 - kernel[k] / eff if eff > 0 else 0.0)
        collector.add(_Interval(k, r0, r1, eff * factor, trust, kernel))
    p = collector.points.pooled()
    lars = run.config.get("optimizer", "sgd") == "lars"
    # the null draws from rng before the scatter sample does: the order fixes bridge.json
    chance = _shuffled_chance(p.pred, p.obs, p.interval, rng)
    abs_pred = np.abs(p.pred)
    return {
        **_one_row_scores(p, how, chance, collector.has_exact),
        **_history_scores(p, shares),
        **_interval_trust_scores(p, trust_how, lars),
        **_persistence_scores(p),
        **_sigma_scores(p),
        "max_abs_predicted": float(abs_pred.max()) if len(p.pred) else None,
        "p99_abs_predicted": float(np.quantile(abs_pred, 0.99)) if len(p.pred) else None,
        "scatter": _scatter_sample(p, rng),
    }


def _shuffled_chance(pred: np.ndarray, obs: np.ndarray, interval: np.ndarray, rng: np.random.Generator) -> float:
    """95th percentile of |Spearman| with the predictions shuffled within each interval (the points of an
    interval are contiguous), over PERMUTATIONS draws."""
    from scipy.stats import rankdata

    rp, ro = rankdata(pred), rankdata(obs)
    ro = (ro - ro.mean()) / (ro.std() or 1.0)
    null = []
    for _ in range(PERMUTATIONS):
        shuffled = rp[np.lexsort((rng.random(len(rp)), interval))]
        null.append(float(np.mean((shuffled - rp.mean()) / (rp.std() or 1.0) * ro)))
    return float(np.quantile(np.abs(null), 0.95))


def _one_row_scores(p: _Points, how: str, chance: float, has_exact: bool) -> dict:
    """The one-row prediction against the observed change, persistence (the previous interval's change),
    the rank-matched change, the end map, and (cosine) the exact gradient's rates."""
    rho = _spearman(p.pred, p.obs)
    has_base = np.isfinite(p.base)
    return {
        "effective_step": how,
        "points": int(len(p.pred)),
        "spearman": rho,
        "slope": _slope(p.pred, p.obs),
        "median_interval_spearman": _medians(p.pred, p.obs, p.interval)[0],
        "chance_spearman_95": chance,
        "baseline_spearman": _spearman(p.base[has_base], p.obs[has_base]),
        "baseline_slope": _slope(p.base[has_base], p.obs[has_base]),
        "rank_matched_spearman": _spearman(p.pred, p.rank_obs),
        "rank_matched_slope": _slope(p.pred, p.rank_obs),
        "end_to_end_spearman": _spearman(p.e2e_pred, p.e2e_obs),
        "end_to_end_slope": _slope(p.e2e_pred, p.e2e_obs),
        "exact_gradient_spearman": _spearman(p.exact, p.obs) if has_exact else None,
        "exact_gradient_slope": _slope(p.exact, p.obs) if has_exact else None,
        "better_than_chance": bool(rho is not None and rho > chance),
    }


def _history_scores(p: _Points, shares: list[float]) -> dict:
    """Momentum: the buffer's history (earlier rows' gradients through the momentum kernel)."""
    fh, fe = np.isfinite(p.hist), np.isfinite(p.e2e_hist)
    return {
        "history_share": float(np.mean(shares)),
        "history_spearman": _spearman(p.hist[fh], p.obs[fh]),
        "history_slope": _slope(p.hist[fh], p.obs[fh]),
        "history_median_interval_spearman": _medians(p.hist, p.obs, p.interval, fh)[0],
        "history_end_to_end_spearman": _spearman(p.e2e_hist[fe], p.e2e_obs[fe]),
        "history_end_to_end_slope": _slope(p.e2e_hist[fe], p.e2e_obs[fe]),
    }


def _interval_trust_scores(p: _Points, trust_how: set[str], lars: bool) -> dict:
    """LARS: the trust ratio averaged over the interval (one-row rates); SGD: the one-row scores."""
    pred = p.pred_q if lars else p.pred
    return {
        "trust_ratio_interval": " / ".join(sorted(trust_how)),
        "interval_trust_spearman": _spearman(pred, p.obs),
        "interval_trust_slope": _slope(pred, p.obs),
    }


def _persistence_scores(p: _Points) -> dict:
    """Persistence within each interval, like the prediction's median, and both over the same intervals."""
    has_base, fh = np.isfinite(p.base), np.isfinite(p.hist)
    base_median, scored = _medians(p.base, p.obs, p.interval, has_base)
    paired = has_base & np.isin(p.interval, scored)  # like for like: the points persistence scores
    return {
        "baseline_median_interval_spearman": base_median,
        "median_interval_spearman_paired": _medians(p.pred, p.obs, p.interval, paired)[0],
        "history_median_interval_spearman_paired": _medians(p.hist, p.obs, p.interval, paired & fh)[0],
    }


def _sigma_scores(p: _Points) -> dict:
    """Depth: the change of sigma itself (no division by a near-zero sigma), and the log-sigma scores split at
    the collapse threshold."""
    with np.errstate(invalid="ignore", over="ignore"):
        d_obs, d_pred, d_hist = p.sig0 * np.expm1(p.obs), p.sig0 * p.pred, p.sig0 * p.hist
    fd = np.isfinite(d_obs) & np.isfinite(d_pred)
    fdh = fd & np.isfinite(d_hist)
    fh, alive = np.isfinite(p.hist), p.alive
    return {
        "delta_sigma_spearman": _spearman(d_pred[fd], d_obs[fd]),
        "delta_sigma_slope": _slope(d_pred[fd], d_obs[fd]),
        "history_delta_sigma_spearman": _spearman(d_hist[fdh], d_obs[fdh]),
        "history_delta_sigma_slope": _slope(d_hist[fdh], d_obs[fdh]),
        "surviving_points": int(alive.sum()),
        "surviving_spearman": _spearman(p.pred[alive], p.obs[alive]),
        "surviving_slope": _slope(p.pred[alive], p.obs[alive]),
        "history_surviving_spearman": _spearman(p.hist[alive & fh], p.obs[alive & fh]),
        "history_surviving_slope": _slope(p.hist[alive & fh], p.obs[alive & fh]),
        "collapsed_points": int((~alive).sum()),
        "collapsed_spearman": _spearman(p.pred[~alive], p.obs[~alive]),
        "collapsed_slope": _slope(p.pred[~alive], p.obs[~alive]),
    }


def _scatter_sample(p: _Points, rng: np.random.Generator) -> dict:
    """Up to MAX_POINTS random points for the figures; 4 significant digits are more than a scatter plot
    resolves and keep bridge.json small."""
    keep = rng.permutation(len(p.pred))[:MAX_POINTS]
    return {k: _significant(v[keep]) for k, v in (("predicted", p.pred), ("observed", p.obs), ("time", p.when))}


# ---- (b) early warning ----------------------------------------------------------------------------------------

def _auc(score: np.ndarray, label: np.ndarray) -> float | None:
    """P(score of a collapsed direction > score of a surviving one), ties half (Mann-Whitney U / n1 n0)."""
    from scipy.stats import mannwhitneyu

    pos, neg = score[label], score[~label]
    if not len(pos) or not len(neg):
        return None
    return float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def _shrunk_most(w_first: np.ndarray, w: np.ndarray, n: int) -> np.ndarray:
    """Orthonormal basis of the n directions v that shrank most from the first row: the lowest generalized
    eigenvectors of |W v|^2 / |W_first v|^2 (W_first^T W_first regularized by 1e-12 of its trace / d, so
    that its null space counts as not shrinking)."""
    from scipy.linalg import eigh

    b = w_first.T @ w_first
    b = b + 1e-12 * max(np.trace(b), 1e-300) / len(b) * np.eye(len(b))
    vecs = eigh(w.T @ w, b)[1][:, :n]
    return np.linalg.qr(vecs)[0]


def early_warning(run: Run, fractions: tuple[float, ...] = EARLY) -> dict:
    """Prediction (b) for one run: a curve over every row before the last, and the rows at ``fractions``."""
    x_end, w_end = run.end_to_end(run.rows[-1])
    d = w_end.shape[1]
    k = min(w_end.shape)
    _, s, vt = np.linalg.svd(w_end, full_matrices=False)
    v = vt[:k].T
    collapsed = s[:k] ** 2 <= COLLAPSE_RTOL * np.max(s**2) if np.max(s) > 0 else np.ones(k, bool)
    target = v[:, collapsed]
    n_t = int(collapsed.sum())
    last = run.rows[-1]["step"]
    w_first = run.end_to_end(run.rows[0])[1]
    gain_first = np.linalg.norm(w_first @ v, axis=0)
    curve = []
    for n, row in enumerate(run.rows[:-1]):
        x, w = run.end_to_end(row)
        rayleigh = np.einsum("ik,ij,jk->k", v, x, v)
        gain = np.linalg.norm(w @ v, axis=0)
        entry = {"step": row["step"], "fraction": row["step"] / last, "x_n_negative": row["x"]["n_negative"],
                 "auc_x": _auc(-rayleigh, collapsed), "auc_baseline": _auc(-gain, collapsed)}
        with np.errstate(divide="ignore", invalid="ignore"):
            trend = np.log(gain) - np.log(gain_first)  # Delta log|W v_k| from the first row: a rate, like X
        entry["auc_trend"] = _auc(-np.nan_to_num(trend, nan=0.0, posinf=0.0, neginf=-1e300), collapsed) if n else None
        if 0 < n_t < d:
            lowest = np.linalg.eigh(x)[1][:, :n_t]
            _, _, wvt = np.linalg.svd(w, full_matrices=False)
            weakest = wvt[k - n_t : k].T
            entry.update(overlap_x=subspace_overlap(lowest, target), overlap_baseline=subspace_overlap(weakest, target),
                         overlap_trend=subspace_overlap(_shrunk_most(w_first, w, n_t), target) if n else None)
        else:
            entry.update(overlap_x=None, overlap_baseline=None, overlap_trend=None)
        curve.append(entry)
    at = {}
    for f in fractions:
        cands = [e for e in curve if e["fraction"] >= f] or curve[-1:]
        at[f"{f:g}"] = cands[0]
    return {"n_collapsed_end": n_t, "directions": k, "dim": d, "chance_auc": 0.5,
            "chance_overlap": n_t / d if n_t else None, "at": at, "curve": curve}


# ---- (c) depth and alignment ----------------------------------------------------------------------------------

def depth_alignment(run: Run) -> dict:
    last = run.rows[-1]
    s = np.asarray(last["end_to_end"]["sigma"], float)
    n_w = int(np.sum(s**2 <= COLLAPSE_RTOL * np.max(s**2))) if np.max(s) > 0 else len(s)
    over_time = [{"step": r["step"], "fraction": r["step"] / last["step"],
                  "score": float(np.mean([a["score"] for a in r["alignment"]])),
                  "chance": float(np.mean([a["chance"] for a in r["alignment"]]))}
                 for r in run.rows if r["alignment"]]
    return {"depth": run.depth, "collapsed_end_to_end": n_w,
            "collapsed_embedding": int(last["spectrum_z"]["n_collapsed"]),
            "x_n_negative_end": int(last["x"]["n_negative"]), "alignment": over_time}


# ---- the noise ceiling of one interval (two batch streams from the same weights) ----------------------------

def _ceiling_parts(pred: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """(explained variance of A, of B, explainable variance cov(A, B), var(A)) for one fork."""
    var_p = np.var(pred)
    cov_ab = float(np.mean((a - a.mean()) * (b - b.mean())))
    if var_p == 0:
        return 0.0, 0.0, cov_ab, float(np.var(a))
    fit_a = float(np.mean((pred - pred.mean()) * (a - a.mean())) ** 2 / var_p)  # var of the OLS fit of A
    fit_b = float(np.mean((pred - pred.mean()) * (b - b.mean())) ** 2 / var_p)
    return fit_a, fit_b, cov_ab, float(np.var(a))


def fork_ceiling(pred: np.ndarray, obs_a: np.ndarray, obs_b: np.ndarray, rng: np.random.Generator | None = None,
                 draws: int = 1000) -> dict:
    """How much of what any prediction of the expected change could explain this prediction explains, from two
    batch streams A and B continued from the same weights (one interval, one point per singular value).

    With A = f + e_A and B = f + e_B (independent mini-batch noise), cov(A, B) estimates var(f), the explainable
    variance, and var(A - B) / 2 the noise. ``ceiling_fraction`` = (var(fit_A) + var(fit_B)) / 2 / cov(A, B),
    fit_X the OLS fit of stream X on the prediction: the share of the explainable variance explained, both
    streams used alike. It is a ratio of noisy estimates and can exceed 1; ``ceiling_ci95`` is its bootstrap
    interval over the singular values (``draws`` resamples), ``ceiling_p_above_one`` the share of resamples
    above 1, ``ceiling_fraction_clipped`` min(estimate, 1) and ``above_one`` the flag.
    ``ceiling_fraction_one_stream`` is the earlier estimator, R^2 of A / (1 - var(A - B) / 2 / var(A))."""
    pred, a, b = (np.asarray(v, dtype=np.float64) for v in (pred, obs_a, obs_b))
    ok = np.isfinite(pred) & np.isfinite(a) & np.isfinite(b)
    pred, a, b = pred[ok], a[ok], b[ok]
    rng = rng or np.random.default_rng(0)

    def ratio(idx):
        fa, fb, cov, _ = _ceiling_parts(pred[idx], a[idx], b[idx])
        return (fa + fb) / 2 / cov if cov > 0 else np.nan

    fa, fb, cov, var_a = _ceiling_parts(pred, a, b)
    noise = float(np.var(a - b) / 2 / var_a) if var_a > 0 else None
    est = (fa + fb) / 2 / cov if cov > 0 else None
    boot = np.array([ratio(rng.integers(0, len(a), len(a))) for _ in range(draws)])
    boot = boot[np.isfinite(boot)]
    one = fa / var_a / (1 - noise) if noise is not None and noise < 1 else None
    return {
        "points": int(len(a)),
        "noise_share": noise,
        "explainable_variance": cov,
        "explained_variance": (fa + fb) / 2,
        "ceiling_fraction": est,
        "ceiling_fraction_clipped": None if est is None else min(est, 1.0),
        "above_one": bool(est is not None and est > 1),
        "ceiling_ci95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))] if len(boot) else None,
        "ceiling_p_above_one": float(np.mean(boot > 1)) if len(boot) else None,
        "ceiling_fraction_one_stream": one,
    }


def ceiling_spread(forks: list[dict]) -> dict:
    """The ceiling over several forks: mean +- s.e. and range of the per-fork estimates (raw and clipped), how
    many exceed 1, and the pooled estimate sum(explained) / sum(explainable), which weighs the forks by their
    explainable variance and is steadier than the mean of ratios."""
    raw = [f["ceiling_fraction"] for f in forks if f["ceiling_fraction"] is not None]
    clipped = [min(v, 1.0) for v in raw]
    num = sum(f["explained_variance"] for f in forks)
    den = sum(f["explainable_variance"] for f in forks)
    pooled = num / den if den > 0 else None
    return {"forks": len(forks), "ceiling_fraction": mean_se(raw),
            "ceiling_range": [min(raw), max(raw)] if raw else None,
            "ceiling_fraction_clipped": mean_se(clipped), "above_one": int(sum(v > 1 for v in raw)),
            "pooled_ceiling_fraction": pooled,
            "pooled_ceiling_fraction_clipped": None if pooled is None else min(pooled, 1.0)}


# ---- aggregation over seeds -----------------------------------------------------------------------------------

def mean_se(values: Iterable[float | None]) -> dict:
    """Mean and standard error of the mean over the values that are not None (se None for fewer than 2)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if not len(v):
        return {"mean": None, "se": None, "n": 0}
    se = float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None
    return {"mean": float(np.mean(v)), "se": se, "n": int(len(v))}


def _group(runs: list[Run], with_depth: bool) -> list[tuple[dict, list[Run]]]:
    groups: dict[str, tuple[dict, list[Run]]] = {}
    for run in runs:
        key = settings(run, with_depth)
        groups.setdefault(json.dumps(key, sort_keys=True), (key, []))[1].append(run)
    return list(groups.values())


def aggregate(runs: list[Run], per_run: dict) -> dict:
    out = []
    for key, members in _group(runs, with_depth=True):
        res = [per_run[r.name] for r in members]
        inst = [r["instantaneous"] for r in res if "skipped" not in r["instantaneous"]]
        entry = {"settings": key, "runs": [r.name for r in members], "seeds": len(members)}
        entry["instantaneous"] = {m: mean_se(i.get(m) for i in inst) for m in INSTANTANEOUS_METRICS}
        early = {}
        for f in res[0]["early_warning"]["at"]:
            ats = [r["early_warning"]["at"][f] for r in res]
            early[f] = {m: mean_se(a.get(m) for a in ats) for m in (
                "auc_x", "auc_baseline", "auc_trend", "overlap_x", "overlap_baseline", "overlap_trend",
                "x_n_negative")}
        early["n_collapsed_end"] = mean_se(r["early_warning"]["n_collapsed_end"] for r in res)
        early["chance_overlap"] = mean_se(r["early_warning"]["chance_overlap"] for r in res)
        entry["early_warning"] = early
        out.append(entry)
    depth = []
    for key, members in _group(runs, with_depth=False):
        by_depth: dict[int, list] = {}
        for r in members:
            by_depth.setdefault(r.depth, []).append(per_run[r.name]["depth"])
        rows = []
        for dep, res in sorted(by_depth.items()):
            steps = sorted({a["step"] for r in res for a in r["alignment"]})
            curve = []
            for st in steps:
                vals = [a for r in res for a in r["alignment"] if a["step"] == st]
                curve.append({"step": st, "fraction": vals[0]["fraction"], "score": mean_se(a["score"] for a in vals),
                              "chance": mean_se(a["chance"] for a in vals)})
            rows.append({"depth": dep, "seeds": len(res),
                         "collapsed_end_to_end": mean_se(r["collapsed_end_to_end"] for r in res),
                         "collapsed_embedding": mean_se(r["collapsed_embedding"] for r in res),
                         "x_n_negative_end": mean_se(r["x_n_negative_end"] for r in res), "alignment": curve})
        depth.append({"settings": key, "by_depth": rows})
    return {"groups": out, "depth": depth}


def analyse(paths: list[str | Run], seed: int = 0, progress: bool = True) -> dict:
    """Predictions (a)-(c) for each run folder (or loaded ``Run``) and their aggregates over seeds."""
    from tqdm import tqdm

    runs = [p if isinstance(p, Run) else load_run(p) for p in paths]
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        for r in runs:
            r.name = os.path.normpath(r.path)
    rng = np.random.default_rng(seed)
    per_run = {}
    for run in tqdm(runs, desc="bridge", disable=not progress):
        per_run[run.name] = {"settings": settings(run), "steps": [run.rows[0]["step"], run.rows[-1]["step"]],
                             "rows": len(run.rows), "instantaneous": instantaneous(run, rng),
                             "early_warning": early_warning(run), "depth": depth_alignment(run)}
    return {"claim": "d log sigma_i/dt = v_i^T X v_i (Lemma 2), X's negative directions collapse (Theorem 1), "
                     "deeper linear projectors collapse more and align (Sec. 5)",
            "early_fractions": list(EARLY), "runs": per_run, **aggregate(runs, per_run)}


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m empirical.bridge", description=__doc__.splitlines()[0],
                      epilog="example: python -m empirical.bridge runs/paper-sgd-s0 runs/paper-sgd-s1 --out "
                             "runs/bridge")
    p.add_argument("runs", nargs="+", help="run folders with config.json and monitor.jsonl (one per seed; a "
                   "folder named twice counts once)")
    p.add_argument("--out", required=True, help="output folder for bridge.json and the figures")
    p.add_argument("--seed", type=int, default=0, help="seed of the permutation null, at least 0 (default 0)")
    p.add_argument("--no-figures", action="store_true", help="write bridge.json only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def distinct_runs(paths: list[str]) -> tuple[list[str], list[str]]:
    """``paths`` without repeats of one folder (however spelled: a trailing slash, ./, a link), and a note per
    repeat: one run named twice is one seed, not two."""
    seen: dict[str, str] = {}
    kept, notes = [], []
    for path in paths:
        key = os.path.realpath(path)
        if key in seen:
            notes.append(f"note: {path} is the run {seen[key]} again; counted once")
            continue
        seen[key] = path
        kept.append(path)
    return kept, notes


def check_out(out: str) -> None:
    """Fail before the analysis if ``--out`` cannot take bridge.json and the figures."""
    if not out:
        raise UserError("--out is empty: name the folder for bridge.json and the figures")
    if os.path.lexists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out!r} is an existing file, not a folder: choose another --out")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise UserError(f"--out {out!r} is not writable ({e.strerror or e})") from None


def main_(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.seed < 0:
        raise UserError(f"--seed {args.seed} must be at least 0")
    paths, notes = distinct_runs(args.runs)
    runs = [load_run(p) for p in paths]  # every folder readable before any work (one-line errors)
    check_out(args.out)
    for note in notes:
        print(note, file=sys.stderr)
    result = analyse(runs, args.seed, progress=not args.no_progress)
    written = [os.path.join(args.out, "bridge.json")]
    write_json(written[0], result, indent=None)
    result = json.load(open(written[0]))  # the figures see what a reader sees
    if not args.no_figures:
        from empirical import bridge_plots

        figures, fig_notes = bridge_plots.draw_all(result, args.out)
        written += [str(p) for p in figures]
        for note in fig_notes:  # e.g. only AdamW runs: no growth figure
            print(f"note: {note}", file=sys.stderr)
    fmt = lambda m: "n/a" if m is None or m.get("mean") is None else f"{m['mean']:+.3f}"  # noqa: E731
    cnt = lambda m: "n/a" if m is None or m.get("mean") is None else f"{m['mean']:.0f}"  # noqa: E731
    for g in result["groups"]:
        i, s = g["instantaneous"], g["settings"]
        print(f"{group_label(s)} ({g['seeds']} seed(s)): "
              f"Spearman {fmt(i['spearman'])} (chance {fmt(i['chance_spearman_95'])}, baseline "
              f"{fmt(i['baseline_spearman'])}), slope {fmt(i['slope'])}")
        if i["spearman"]["mean"] is None:
            continue
        share = cnt({'mean': 100 * i['history_share']['mean']})
        print(f"  momentum history ({share}% of the step from earlier rows): Spearman "
              f"{fmt(i['history_spearman'])}, slope {fmt(i['history_slope'])} (one-row {fmt(i['spearman'])}, "
              f"{fmt(i['slope'])}); surviving modes {fmt(i['history_surviving_spearman'])}, "
              f"{fmt(i['history_surviving_slope'])} (one-row {fmt(i['surviving_spearman'])}, "
              f"{fmt(i['surviving_slope'])})")
        if s.get("optimizer") == "lars":
            print(f"  trust ratio over the interval: Spearman {fmt(i['interval_trust_spearman'])}, slope "
                  f"{fmt(i['interval_trust_slope'])} (one value at the start {fmt(i['spearman'])}, "
                  f"{fmt(i['slope'])})")
        print(f"  within an interval (median Spearman): prediction {fmt(i['median_interval_spearman_paired'])}, "
              f"history {fmt(i['history_median_interval_spearman_paired'])}, persistence "
              f"{fmt(i['baseline_median_interval_spearman'])}")
        print(f"  no division by sigma: Delta sigma Spearman {fmt(i['delta_sigma_spearman'])}, slope "
              f"{fmt(i['delta_sigma_slope'])}; log sigma on {cnt(i['surviving_points'])} surviving points "
              f"{fmt(i['surviving_spearman'])}, {fmt(i['surviving_slope'])} and on {cnt(i['collapsed_points'])} "
              f"collapsed {fmt(i['collapsed_spearman'])}, {fmt(i['collapsed_slope'])} (all: "
              f"{fmt(i['spearman'])}, {fmt(i['slope'])})")
        for f in result.get("early_fractions", []):
            e = g["early_warning"].get(f"{f:g}", {})
            print(f"  early warning at {f:.0%}: AUC X {fmt(e.get('auc_x'))}, level {fmt(e.get('auc_baseline'))}, "
                  f"trend {fmt(e.get('auc_trend'))}; overlap X {fmt(e.get('overlap_x'))}, level "
                  f"{fmt(e.get('overlap_baseline'))}, trend {fmt(e.get('overlap_trend'))}")
    for path in written:
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(main_, argv)


if __name__ == "__main__":
    sys.exit(main())
