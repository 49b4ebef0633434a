"""Calibration and power of ``theory.covariance.psd_check``'s "not psd" test on the spiked model.

X_b = E[X] + E_b, E_b = (G + G^T) / sqrt(2), G i.i.d. N(0, 1) (off-diagonal entry std 1); E[X] is zero but
for k planted eigenvalues -effect * edge, edge = 2 sqrt(d) / sqrt(B / 2), the noise edge of the selection
half's mean. Reported: the share of trials that count at least one negative direction (null, E[X] = 0), and
the mean share of the k planted directions counted (power); in parentheses the same for Holm's correction
over all 2d held-out tests, the earlier test. Writes JSON and a markdown table.

    python bench/psd_power.py [--trials 100] [--json bench/psd_power.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dimcollapse.io import write_json  # noqa: E402
from theory.covariance import PSD_ALPHA, holm, significant_negatives  # noqa: E402

BATCHES = (4, 8, 16, 32, 64)
EFFECTS = (0.25, 0.5, 1.0, 2.0)
SPIKES = (1, 4, 16)


def noise(rng: np.random.Generator, batches: int, d: int) -> np.ndarray:
    g = rng.standard_normal((batches, d, d))
    return (g + np.swapaxes(g, 1, 2)) / np.sqrt(2)


def counted(rng: np.random.Generator, d: int, batches: int, k: int, effect: float) -> tuple[int, int]:
    """(this test's count, the count of Holm's correction over all 2d held-out tests, the earlier test)."""
    mean = 0.0
    if k:
        u = np.linalg.qr(rng.standard_normal((d, k)))[0]
        mean = -effect * 2 * np.sqrt(d) / np.sqrt(batches // 2) * u @ u.T
    *_, p_values, per_split = significant_negatives(mean + noise(rng, batches, d), PSD_ALPHA)
    return max(per_split), int(holm(p_values, PSD_ALPHA).sum(axis=1).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100, help="trials per cell (default 100)")
    parser.add_argument("--json", default="bench/psd_power.json", help="output (default bench/psd_power.json)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    null = {}
    for d in (16, 128):
        for b in BATCHES:
            trials = args.trials * 5
            hits = np.array([counted(rng, d, b, 0, 0.0) for _ in range(trials)]) > 0
            null[f"d={d},B={b}"], null[f"holm,d={d},B={b}"] = (float(v) for v in hits.mean(axis=0))
    power = {}
    cells = [(k, b, e) for k in SPIKES for b in BATCHES for e in EFFECTS]
    for k, b, e in tqdm(cells, desc="power"):
        found = np.minimum([counted(rng, 128, b, k, e) for _ in range(args.trials)], k) / k
        power[f"k={k},B={b},effect={e}"], power[f"holm,k={k},B={b},effect={e}"] = (float(v) for v in found.mean(0))
    write_json(args.json, {"alpha": PSD_ALPHA, "trials": args.trials, "null_trials": args.trials * 5,
                           "d_power": 128, "null_rate": null, "power": power})
    print(f"null: share of trials counting >= 1 negative direction (E[X] = 0, alpha {PSD_ALPHA}, "
          f"{args.trials * 5} trials)")
    print("| d | " + " | ".join(f"B={b}" for b in BATCHES) + " |\n|---|" + "---|" * len(BATCHES))
    for d in (16, 128):
        print(f"| {d} | " + " | ".join(f"{null[f'd={d},B={b}']:.3f} ({null[f'holm,d={d},B={b}']:.3f})"
                                       for b in BATCHES) + " |")
    print(f"\npower at d = 128: mean share of the k planted directions counted ({args.trials} trials)")
    print("| k | effect (edges) | " + " | ".join(f"B={b}" for b in BATCHES) + " |\n|---|---|"
          + "---|" * len(BATCHES))
    for k in SPIKES:
        for e in EFFECTS:
            print(f"| {k} | {e:g} | " + " | ".join(
                f"{power[f'k={k},B={b},effect={e}']:.2f} ({power[f'holm,k={k},B={b},effect={e}']:.2f})"
                for b in BATCHES) + " |")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
