"""The augment-strength study over seeds: per strength, z and r collapse (mean +- SE over seeds) and the
a-priori X verdicts of the trained and the untrained backbone, seed by seed. Run from the repository root:

    python results/augment-strength-mnist5k-cpu-verdicts/summarize.py
"""

import glob
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = (("mlp-aug_0.25", 0.25), ("mlp-aug_0.5", 0.5), ("mlp", 1.0), ("mlp-aug_1.5", 1.5))


def mean_se(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return f"{v.mean():.1f} ± {se:.1f}"


def main() -> None:
    seeds = sorted(glob.glob(os.path.join(HERE, "seed*", "rows")))
    out, lines = {}, []
    lines.append("| strength | z collapsed / 128 | r collapsed / 128 | linear top-1 | a-priori X(r), trained (seed by "
                 "seed) | untrained backbone | seeds |")
    lines.append("|---|---|---|---|---|---|---|")
    for run, strength in ROWS:
        paths = [os.path.join(s, f"{run}.json") for s in seeds]
        rows = [json.load(open(p)) for p in paths if os.path.isfile(p)]
        z = [r["spectra"]["z"]["n_collapsed"] for r in rows]
        rr = [r["spectra"]["r"]["n_collapsed"] for r in rows]
        top1 = [100 * r["linear_r"]["top1"] for r in rows]
        trained = [f"{r['x_apriori_verdict']} ({r['x_apriori_negative']})" for r in rows]
        init = [f"{r['x_apriori_verdict_init']} ({r['x_apriori_negative_init']})" for r in rows]
        out[str(strength)] = {"z_collapsed": z, "r_collapsed": rr, "linear_top1": top1, "x_trained": trained,
                              "x_untrained": init, "x_detectable": [r["x_apriori_detectable"] for r in rows]}
        lines.append(f"| {strength:g} | {mean_se(z)} | {mean_se(rr)} | {mean_se(top1)} | {', '.join(trained)} | "
                     f"{', '.join(init)} | {len(rows)} |")
    print("\n".join(lines))
    with open(os.path.join(HERE, "summary.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
