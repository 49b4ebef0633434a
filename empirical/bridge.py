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
    persists); chance: the 95th percentile of |Spearman| with the predictions shuffled within each interval
    (200 draws).
(b) Early warning (Theorem 1). At the row nearest each fraction of training (5%, 10%, and every row for the
    curve), score the end map's row-space directions v_k (right singular vectors of W = W_L ... W_1 at the
    last row) by -v_k^T X v_k, and label v_k collapsed when sigma_k^2 <= COLLAPSE_RTOL sigma_max^2 at the
    end. AUC (Mann-Whitney) against chance 0.5 and against the baseline score -|W_early v_k| (the weakest
    directions of the early map); subspace overlap of X's |T| lowest eigenvectors with the collapsed set T,
    against |T| / d (a random subspace) and the early map's |T| weakest right singular vectors.
(c) Depth and alignment (Sec. 5). Collapsed count at the end (end-to-end sigma rule and the embedding
    spectrum's count) against projector depth, and the gap-grouped alignment of adjacent layers over time
    (``theory.predict.layer_alignment``) against its chance level.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from theory.io import OneLineParser, UserError, run_cli, write_json
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
            "momentum", "weight_decay", "batch_size", "epochs", "max_steps", "augment", "augment_strength")
DEFAULT_MOMENTUM = {"sgd": 0.9, "lars": 0.9}  # empirical.optim's choice
DEFAULT_ETA = 0.001
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
        config = json.load(open(cfg_path))
    except json.JSONDecodeError as e:
        raise UserError(f"{cfg_path} is not valid JSON ({e.msg}, line {e.lineno})") from None
    rows = []
    for n, line in enumerate(open(log_path), 1):
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


def step_factors(run: Run, row: dict) -> tuple[np.ndarray, str] | tuple[None, str]:
    """Per-layer multiplier of ``effective_step`` (1, or LARS's trust ratio; module doc (a)) and how."""
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
            lam, eta = float(c.get("weight_decay", 0.0)), float(c.get("eta", DEFAULT_ETA))
            q = []
            for layer in row["layers"]:
                s, rate = np.asarray(layer["sigma"], float), np.asarray(layer["rate"], float)
                inner = np.nansum(s**2 * rate)  # <W, -G> = sum_i sigma_i u_i^T (-G) v_i
                w2 = layer["weight_norm"] ** 2
                g2 = max(lam**2 * w2 - 2 * lam * inner + layer["grad_norm"] ** 2, 1e-300)
                q.append(eta * layer["weight_norm"] / np.sqrt(g2))
            q = np.asarray(q)
            how += ", LARS trust ratio estimated from the held-out gradient"
        factor = factor * q
    return factor, how


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


def instantaneous(run: Run, rng: np.random.Generator) -> dict:
    """Prediction (a) for one run: pooled over layers, singular values and intervals."""
    lam = float(run.config.get("weight_decay", 0.0))
    last = run.rows[-1]["step"]
    pred, obs, rank_obs, base, when, interval, exact = [], [], [], [], [], [], []
    has_exact = all("rate_exact" in layer for row in run.rows for layer in row["layers"])
    e2e_pred, e2e_obs = [], []
    how = None
    prev_obs: dict = {}
    for k, (r0, r1) in enumerate(zip(run.rows[:-1], run.rows[1:], strict=True)):
        factor, how = step_factors(run, r0)
        if factor is None:
            return {"skipped": how}
        steps = effective_step(run, r0["step"], r1["step"], r1) * factor
        gains, ranks, e2e = observed_changes(run, r0, r1)
        for ell, layer in enumerate(r0["layers"]):
            rate = np.asarray([np.nan if v is None else v for v in layer["rate"]], float)
            p, o = steps[ell] * (rate - lam), gains[ell]
            b = prev_obs.get(ell, np.full_like(o, np.nan))
            prev_obs[ell] = o
            ok = np.isfinite(o) & np.isfinite(p) & np.isfinite(ranks[ell])
            if has_exact:
                p_ex = steps[ell] * (np.asarray([np.nan if v is None else v for v in layer["rate_exact"]]) - lam)
                ok &= np.isfinite(p_ex)
                exact.append(p_ex[ok])
            pred.append(p[ok]), obs.append(o[ok]), rank_obs.append(ranks[ell][ok]), base.append(b[ok])
            when.append(np.full(ok.sum(), r0["step"] / last)), interval.append(np.full(ok.sum(), k))
        by_layer = np.asarray(r0["end_to_end"]["rate_by_layer"], dtype=np.float64)
        p = np.sum(steps[:, None] * (by_layer - lam), axis=0)
        ok = np.isfinite(e2e) & np.isfinite(p)
        e2e_pred.append(p[ok]), e2e_obs.append(e2e[ok])
    pred, obs, base, rank_obs = (np.concatenate(a) for a in (pred, obs, base, rank_obs))
    when, interval = np.concatenate(when), np.concatenate(interval)
    e2e_pred, e2e_obs = np.concatenate(e2e_pred), np.concatenate(e2e_obs)
    # null: predictions shuffled within each interval (the points of an interval are contiguous)
    from scipy.stats import rankdata

    rp, ro = rankdata(pred), rankdata(obs)
    ro = (ro - ro.mean()) / (ro.std() or 1.0)
    null = []
    for _ in range(PERMUTATIONS):
        shuffled = rp[np.lexsort((rng.random(len(rp)), interval))]
        null.append(float(np.mean((shuffled - rp.mean()) / (rp.std() or 1.0) * ro)))
    per_interval = [_spearman(pred[interval == k], obs[interval == k]) for k in np.unique(interval)]
    per_interval = [v for v in per_interval if v is not None]
    has_base = np.isfinite(base)
    keep = rng.permutation(len(pred))[:MAX_POINTS]
    rho = _spearman(pred, obs)
    chance = float(np.quantile(np.abs(null), 0.95))
    return {
        "effective_step": how,
        "points": int(len(pred)),
        "spearman": rho,
        "slope": _slope(pred, obs),
        "median_interval_spearman": float(np.median(per_interval)) if per_interval else None,
        "chance_spearman_95": chance,
        "baseline_spearman": _spearman(base[has_base], obs[has_base]),
        "baseline_slope": _slope(base[has_base], obs[has_base]),
        "rank_matched_spearman": _spearman(pred, rank_obs),
        "rank_matched_slope": _slope(pred, rank_obs),
        "end_to_end_spearman": _spearman(e2e_pred, e2e_obs),
        "end_to_end_slope": _slope(e2e_pred, e2e_obs),
        "exact_gradient_spearman": _spearman(np.concatenate(exact), obs) if has_exact else None,
        "exact_gradient_slope": _slope(np.concatenate(exact), obs) if has_exact else None,
        "better_than_chance": bool(rho is not None and rho > chance),
        # 4 significant digits are more than a scatter plot resolves and keep bridge.json small
        "scatter": {k: _significant(v[keep]) for k, v in (("predicted", pred), ("observed", obs), ("time", when))},
    }


# ---- (b) early warning ----------------------------------------------------------------------------------------

def _auc(score: np.ndarray, label: np.ndarray) -> float | None:
    """P(score of a collapsed direction > score of a surviving one), ties half (Mann-Whitney U / n1 n0)."""
    from scipy.stats import mannwhitneyu

    pos, neg = score[label], score[~label]
    if not len(pos) or not len(neg):
        return None
    return float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def early_warning(run: Run, fractions=EARLY) -> dict:
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
    curve = []
    for row in run.rows[:-1]:
        x, w = run.end_to_end(row)
        rayleigh = np.einsum("ik,ij,jk->k", v, x, v)
        gain = np.linalg.norm(w @ v, axis=0)
        entry = {"step": row["step"], "fraction": row["step"] / last, "x_n_negative": row["x"]["n_negative"],
                 "auc_x": _auc(-rayleigh, collapsed), "auc_baseline": _auc(-gain, collapsed)}
        if 0 < n_t < d:
            lowest = np.linalg.eigh(x)[1][:, :n_t]
            _, _, wvt = np.linalg.svd(w, full_matrices=False)
            weakest = wvt[k - n_t : k].T
            entry.update(overlap_x=subspace_overlap(lowest, target), overlap_baseline=subspace_overlap(weakest, target))
        else:
            entry.update(overlap_x=None, overlap_baseline=None)
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


# ---- aggregation over seeds -----------------------------------------------------------------------------------

def mean_se(values) -> dict:
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
        entry["instantaneous"] = {m: mean_se(i[m] for i in inst) for m in (
            "spearman", "slope", "median_interval_spearman", "chance_spearman_95", "baseline_spearman",
            "baseline_slope", "rank_matched_spearman", "rank_matched_slope", "end_to_end_spearman",
            "end_to_end_slope", "exact_gradient_spearman", "exact_gradient_slope")}
        early = {}
        for f in res[0]["early_warning"]["at"]:
            ats = [r["early_warning"]["at"][f] for r in res]
            early[f] = {m: mean_se(a[m] for a in ats) for m in ("auc_x", "auc_baseline", "overlap_x",
                                                               "overlap_baseline", "x_n_negative")}
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


def analyse(paths: list[str], seed: int = 0, progress: bool = True) -> dict:
    from tqdm import tqdm

    runs = [load_run(p) for p in paths]
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
                             "results/bridge")
    p.add_argument("runs", nargs="+", help="run folders with config.json and monitor.jsonl")
    p.add_argument("--out", required=True, help="output folder for bridge.json and the figures")
    p.add_argument("--seed", type=int, default=0, help="seed of the permutation null (default 0)")
    p.add_argument("--no-figures", action="store_true", help="write bridge.json only")
    p.add_argument("--no-progress", action="store_true")
    return p


def main_(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = analyse(args.runs, args.seed, progress=not args.no_progress)
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "bridge.json"), result, indent=None)
    result = json.load(open(os.path.join(args.out, "bridge.json")))  # the figures see what a reader sees
    if not args.no_figures:
        from figures import bridge_depth, bridge_early_warning, bridge_growth, style

        for mod in (bridge_growth, bridge_early_warning, bridge_depth):
            try:
                mod.draw(result, args.out)
            except style.MissingResults as e:  # e.g. only AdamW runs: no growth figure
                print(f"note: no {mod.NAME} figure ({e})", file=sys.stderr)
    for g in result["groups"]:
        i, s = g["instantaneous"], g["settings"]
        fmt = lambda m: "n/a" if m["mean"] is None else f"{m['mean']:+.3f}"  # noqa: E731
        print(f"{s.get('monitor_loss')} {s.get('optimizer', '?')} depth {s['depth']} ({g['seeds']} seed(s)): "
              f"Spearman {fmt(i['spearman'])} (chance {fmt(i['chance_spearman_95'])}, baseline "
              f"{fmt(i['baseline_spearman'])}), slope {fmt(i['slope'])}")
    print(f"wrote {os.path.join(args.out, 'bridge.json')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(main_, argv)


if __name__ == "__main__":
    sys.exit(main())
