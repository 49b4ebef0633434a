"""How much of the end's collapse lies in X's significantly negative subspace at the early rows (Theorem 1).

For each run of runs/bridge-verdicts: the end-to-end map W at the last row; its collapsed input directions
(right singular vectors with sigma^2 <= 1e-3 sigma_max^2, as the bridge counts them); at the rows at 5 % and
10 % of training, X's n_negative most negative eigenvectors (the three-outcome test's count, 31 image-disjoint
batches). Reported: the share of the collapsed subspace inside X's negative subspace, ||P_neg V_c||_F^2 / k_c,
beside its chance level n_negative / d (a random subspace of that size). The early rows are the first at or
after 5 % and 10 % of the last step, as the bridge picks them (steps 20 and 35 of the 310-step study). Run from
the repository root after results/bridge-verdicts/run.sh (the full-batch study passes its runs and output):

    python results/bridge-verdicts/theorem1_share.py
    python results/bridge-verdicts/theorem1_share.py "runs/bridge-fullbatch/*-s?" \
        results/bridge-fullbatch/theorem1_share.json
"""

import glob
import json
import os
import sys

import numpy as np

FRACTIONS = ("0.05", "0.1")  # the bridge's early-warning rows


def main(pattern: str = "runs/bridge-verdicts/*-s?", path: str = "results/bridge-verdicts/theorem1_share.json") -> None:
    out = {}
    for folder in sorted(glob.glob(pattern)):
        rows = {json.loads(line)["step"]: json.loads(line) for line in open(os.path.join(folder, "monitor.jsonl"))}
        last = max(rows)
        early = {f: min(s for s in rows if s >= float(f) * last) for f in FRACTIONS}  # as the bridge picks them
        w = np.load(os.path.join(folder, "monitor", f"step_{last:08d}.npz"))["w0"]
        _, s, vt = np.linalg.svd(w)
        collapsed = vt[s**2 <= 1e-3 * s.max() ** 2].T
        d, k = w.shape[1], collapsed.shape[1]
        run = {"collapsed_end": k, "d": d, "at": {}}
        for frac, step in early.items():
            x = np.load(os.path.join(folder, "monitor", f"step_{step:08d}.npz"))["x"]
            n = rows[step]["x"]["n_negative"]
            neg = np.linalg.eigh(0.5 * (x + x.T))[1][:, :n]
            share = float(np.sum((neg.T @ collapsed) ** 2) / k) if k else None
            run["at"][frac] = {"step": step, "verdict": rows[step]["x"]["verdict"], "n_negative": n,
                               "share_inside": share, "chance": n / d}
        out[os.path.basename(folder)] = run
        print(os.path.basename(folder), json.dumps(run["at"]))
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
