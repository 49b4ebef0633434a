"""Lemma 2 as an identity on the real network: does the monitor's X reproduce every weight update?

For full-batch training on the monitored pairs, -dL/dW = W X exactly, so torch's SGD (dampening 0) moves the
projector by  Delta W_k = lr_k b_k,  b_k = m b_(k-1) + W_k X_k  (b_0 = W_0 X_0; m = 0: Delta W_k = lr_k W_k X_k),
with W_k and X_k from the monitor row after k updates. Reported per run: the relative error
|Delta W_k - lr_k b_k| / |Delta W_k| over every step (median and largest), beside the same error of the
momentum-free form lr_k W_k X_k (the one-row prediction) and of a random X of the same size (chance).
Run from the repository root after the trainings of run.sh:

    python results/bridge-fullbatch/update_check.py "runs/bridge-fullbatch/*-s?" \
        results/bridge-fullbatch/update_check.json

The weights are stored in float32, so a step whose update is below float32's resolution of W (the last steps,
where the cosine schedule has brought lr to 1e-4) shows a larger error from the storage alone.
"""

import glob
import json
import os
import sys

import numpy as np


def check(folder: str, rng: np.random.Generator) -> dict:
    with open(os.path.join(folder, "config.json")) as f:
        momentum = float(json.load(f)["momentum"])
    with open(os.path.join(folder, "monitor.jsonl")) as f:
        rows = sorted((json.loads(line) for line in f if line.strip()), key=lambda r: r["step"])
    arrays = [np.load(os.path.join(folder, r["arrays"])) for r in rows]
    errors, one_row, chance = [], [], []
    buffer = None
    for k in range(len(rows) - 1):
        w, x = arrays[k]["w0"].astype(np.float64), arrays[k]["x"].astype(np.float64)
        step = w @ x
        buffer = step if buffer is None else momentum * buffer + step
        lr = rows[k]["lr"]
        delta = arrays[k + 1]["w0"].astype(np.float64) - w
        scale = np.linalg.norm(delta)
        errors.append(np.linalg.norm(delta - lr * buffer) / scale)
        one_row.append(np.linalg.norm(delta - lr * step) / scale)
        noise = rng.standard_normal(x.shape)
        noise = (noise + noise.T) / 2 * np.linalg.norm(x) / np.linalg.norm(noise)
        chance.append(np.linalg.norm(delta - lr * w @ noise) / scale)
    summary = lambda e: {"median": float(np.median(e)), "max": float(np.max(e))}  # noqa: E731
    return {"momentum": momentum, "steps": len(errors), "relative_error": summary(errors),
            "one_row_relative_error": summary(one_row), "random_x_relative_error": summary(chance)}


def main(pattern: str = "runs/bridge-fullbatch/*-s?", path: str = "results/bridge-fullbatch/update_check.json") -> None:
    rng = np.random.default_rng(0)
    out = {os.path.basename(folder): check(folder, rng) for folder in sorted(glob.glob(pattern))}
    for name, run in out.items():
        print(name, json.dumps(run))
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
