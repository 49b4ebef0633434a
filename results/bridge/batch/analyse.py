"""Per-interval scores of the one-layer Eqn-2 prediction in the batch-size runs (``run.sh``), as JSON + text.

    python results/bridge/batch/analyse.py runs/bridge-batch/paper-sgd-L1-b*-s? > results/bridge/batch/scores.json

For each interval between monitor rows: predicted dlog sigma_i = step * v_i^T X v_i (plain SGD: step = the
sum of the learning rates), observed = the matched change of log sigma_i (``empirical.bridge``). Scores, as
medians over intervals: Spearman on all 128 directions, on the 64 with the largest sigma and on the 64 with
the smallest; Spearman of the persistence baseline (the previous interval's observed change); and the
unexplained share var(observed - slope * predicted) / var(observed) with the interval's OLS slope, whose
mini-batch part should fall as 1/batch if gradient noise is what the prediction misses.
"""

import json
import sys

import numpy as np
from scipy.stats import linregress, spearmanr

from empirical.bridge import _matched_change, effective_step, load_run


def scores(path: str) -> dict:
    run = load_run(path)
    rows = run.rows
    out: dict = {"all": [], "large_sigma": [], "small_sigma": [], "persistence": [], "unexplained": [], "slope": []}
    prev = None
    for r0, r1 in zip(rows[:-1], rows[1:], strict=True):
        step = effective_step(run, r0["step"], r1["step"], r1)
        pred = step * np.asarray(r0["layers"][0]["rate"], float)
        obs = _matched_change(run.arrays(r0)["w0"], run.arrays(r1)["w0"])
        sigma = np.asarray(r0["layers"][0]["sigma"], float)
        big = sigma >= np.median(sigma)
        out["all"].append(spearmanr(pred, obs).statistic)
        out["large_sigma"].append(spearmanr(pred[big], obs[big]).statistic)
        out["small_sigma"].append(spearmanr(pred[~big], obs[~big]).statistic)
        fit = linregress(pred, obs)
        out["slope"].append(fit.slope)
        out["unexplained"].append(float(np.var(obs - fit.slope * pred - fit.intercept) / np.var(obs)))
        if prev is not None:
            out["persistence"].append(spearmanr(prev, obs).statistic)
        prev = obs
    med = {k: float(np.median(v)) for k, v in out.items()}
    return {"run": run.name, "batch_size": run.config["batch_size"], "intervals": len(rows) - 1, **med}


if __name__ == "__main__":
    res = [scores(p) for p in sys.argv[1:]]
    for r in res:
        print(f"{r['run']}: median over {r['intervals']} intervals: Spearman {r['all']:.3f} (large sigma "
              f"{r['large_sigma']:.3f}, small {r['small_sigma']:.3f}), persistence {r['persistence']:.3f}, "
              f"slope {r['slope']:.3f}, unexplained {r['unexplained']:.3f}", file=sys.stderr)
    json.dump(res, sys.stdout, indent=1)
