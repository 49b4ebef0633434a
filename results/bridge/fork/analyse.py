"""The noise floor of one monitor interval (``run.sh``): two mini-batch streams from the same weights.

    python results/bridge/fork/analyse.py runs/bridge-batch/paper-sgd-L1-b128-s0 runs/bridge-fork/fork*

For each fork step t: predicted dlog sigma_i = step * v_i^T X v_i from the row at t (shared), observed A =
the matched change t -> t+5 of the uninterrupted run, observed B = the same for the fork (seed-1 batches).
noise share = var(A - B) / 2 / var(A): the part of the observed change that another batch stream would not
repeat. Its complement is the largest share of var(A) that any prediction of the expected change can
explain; ``explained`` is the share the prediction's OLS fit explains.

The ceiling (the share of the explainable variance that the prediction explains) comes from
``empirical.bridge.fork_ceiling``: both streams alike, cov(A, B) as the explainable variance, a bootstrap
interval over the singular values, the estimate clipped at 1 and flagged when above; ``ceiling`` in the output
gives its spread over the forks (``empirical.bridge.ceiling_spread``: mean +- s.e., range, count above 1, and
the pooled sum(explained) / sum(explainable)).
"""

import json
import sys

import numpy as np
from scipy.stats import linregress, pearsonr, spearmanr

from empirical.bridge import _matched_change, ceiling_spread, effective_step, fork_ceiling, load_run


def interval(run, t: int):
    r0 = next(r for r in run.rows if r["step"] == t)
    r1 = next(r for r in run.rows if r["step"] == t + 5)
    obs = _matched_change(run.arrays(r0)["w0"], run.arrays(r1)["w0"])
    return r0, obs, effective_step(run, t, t + 5, r1) * np.asarray(r0["layers"][0]["rate"], float)


def fork_scores(run_a, fork) -> dict:
    t = max(r["step"] for r in fork.rows) - 5
    ra, obs_a, pred = interval(run_a, t)
    rb, obs_b, pred_b = interval(fork, t)
    same = float(np.max(np.abs(np.asarray(ra["layers"][0]["sigma"]) - np.asarray(rb["layers"][0]["sigma"]))))
    noise = float(np.var(obs_a - obs_b) / 2 / np.var(obs_a))
    fit = linregress(pred, obs_a)
    resid = obs_a - fit.slope * pred - fit.intercept
    return {
        "fork_step": t,
        "max_sigma_difference_at_fork": same,  # 0: the fork starts from the same weights
        "spearman_a_b": float(spearmanr(obs_a, obs_b).statistic),
        "pearson_a_b": float(pearsonr(obs_a, obs_b).statistic),
        "spearman_pred_a": float(spearmanr(pred, obs_a).statistic),
        "spearman_pred_b": float(spearmanr(pred_b, obs_b).statistic),
        "spearman_pred_mean_ab": float(spearmanr(pred, (obs_a + obs_b) / 2).statistic),
        "pearson_pred_a": float(pearsonr(pred, obs_a).statistic),
        "slope_pred_a": float(fit.slope),
        "noise_share": noise,
        "explainable_share": 1 - noise,
        "explained_share": float(1 - np.var(resid) / np.var(obs_a)),
        "ceiling": fork_ceiling(pred, obs_a, obs_b, np.random.default_rng(t)),
    }


if __name__ == "__main__":
    run_a = load_run(sys.argv[1])
    res = [fork_scores(run_a, load_run(p)) for p in sys.argv[2:]]
    for r in res:
        print(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()), file=sys.stderr)
    keys = [k for k in res[0] if k != "fork_step" and isinstance(res[0][k], float)]
    summary = {k: float(np.mean([r[k] for r in res])) for k in keys}
    print("mean over forks: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()), file=sys.stderr)
    spread = ceiling_spread([r["ceiling"] for r in res])
    c = spread["ceiling_fraction"]
    print(f"ceiling over {spread['forks']} forks: {c['mean']:.3f} +- {c['se'] or 0:.3f} (range "
          f"{spread['ceiling_range'][0]:.3f}-{spread['ceiling_range'][1]:.3f}, {spread['above_one']} above 1; "
          f"clipped mean {spread['ceiling_fraction_clipped']['mean']:.3f}); pooled "
          f"{spread['pooled_ceiling_fraction']:.3f}", file=sys.stderr)
    json.dump({"forks": res, "mean": summary, "ceiling": spread}, sys.stdout, indent=1)
