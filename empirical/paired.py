"""Paired differences between the rows of an experiment table:
``python -m empirical.paired SEED_DIR [SEED_DIR ...] [--metric linear_top1] [--reference none]``.

Each SEED_DIR is one seed's ``empirical.experiments`` output (its ``table.json``); rows are matched by name.

Several seeds: two rows trained with the same seed share the seed's draw (data order, augmentations, test
images), so a difference between rows is judged on the per-seed differences d_s = A_s - B_s:

    mean d,  paired SE = sd(d) / sqrt(n),  t = mean d / paired SE on n - 1 degrees of freedom (paired t test)

beside the unpaired SE sqrt(SE_A^2 + SE_B^2) that comparing the rows' own error bars implies. With 3 seeds,
|t| must exceed 4.30 for p < 0.05 (two-sided): a gap of "three standard errors" is not enough on its own.

One seed: the rows were evaluated on the same test images, and each row stores which images its probe got
right (``top1_correct``), so the difference is judged image by image (McNemar's exact test): with b images right
only for A and c only for B among n, the difference is (b - c) / n, its SE sqrt(b + c - (b - c)^2 / n) / n, and
p the two-sided binomial probability of a split at least as uneven as b : c at 1/2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from dimcollapse.io import OneLineParser, UserError, run_cli, write_json

ALPHA = 0.05


class _Verdict:
    """A difference's verdict from its two-sided ``p``: "differ" below ALPHA, else "undetermined"."""

    @property
    def significant(self) -> bool:
        return bool(self.p < ALPHA)

    @property
    def verdict(self) -> str:
        return "differ" if self.significant else "undetermined"


@dataclass(frozen=True)
class PairedDifference(_Verdict):
    """Row ``a`` minus row ``b`` over the seeds both have (``differences`` in seed order)."""

    a: str
    b: str
    differences: tuple[float, ...]
    mean: float
    paired_se: float
    unpaired_se: float
    t: float
    p: float

    def describe(self, scale: float = 100.0) -> str:
        return (f"{self.a} - {self.b}: {scale * self.mean:+.1f} +- {scale * self.paired_se:.1f} paired "
                f"(unpaired {scale * self.unpaired_se:.1f}), t = {self.t:+.2f} on {len(self.differences) - 1} df, "
                f"p = {self.p:.3f}: {self.verdict}")


def paired_difference(a: str, b: str, values_a: np.ndarray, values_b: np.ndarray) -> PairedDifference:
    """The paired t test of ``values_a - values_b`` (one value per seed, the same seeds in the same order)."""
    values_a, values_b = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    if values_a.shape != values_b.shape or values_a.ndim != 1 or len(values_a) < 2:
        raise ValueError(f"need one value per seed for both rows (at least 2 seeds), got {values_a.shape} and "
                         f"{values_b.shape}")
    d = values_a - values_b
    n = len(d)
    paired_se = float(np.std(d, ddof=1) / np.sqrt(n))
    unpaired_se = float(np.sqrt((np.var(values_a, ddof=1) + np.var(values_b, ddof=1)) / n))
    if paired_se > 0:
        t = float(np.mean(d) / paired_se)
        p = float(2 * stats.t.sf(abs(t), n - 1))
    else:  # every seed gave the same difference: decided unless it is zero
        t = float(np.copysign(np.inf, np.mean(d))) if np.mean(d) else 0.0
        p = 0.0 if np.mean(d) else 1.0
    return PairedDifference(a, b, tuple(float(x) for x in d), float(np.mean(d)), paired_se, unpaired_se, t, p)


def row_name(row: dict, table: list[dict]) -> str:
    """The row's run name, with its projector label when the run has several rows (DirectCLR's r[:d0] probe)."""
    twins = sum(r["run"] == row["run"] for r in table)
    return row["run"] if twins == 1 else f"{row['run']}: {row['projector']}"


def load_seeds(folders: list[str], metric: str) -> dict[str, np.ndarray]:
    """{row: the metric per seed, in the order of ``folders``} for the rows every seed has with the metric."""
    per_seed = []
    for folder in folders:
        path = os.path.join(folder, "table.json")
        try:
            with open(path) as f:
                table = json.load(f)["table"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}: not an experiment table ({e})") from None
        per_seed.append({row_name(r, table): r[metric] for r in table
                         if r.get(metric) is not None and not r.get("failed")})
    common = [row for row in per_seed[0] if all(row in seed for seed in per_seed)]
    if not common:
        raise UserError(f"no row has --metric {metric} in every table of {', '.join(folders)}")
    return {row: np.array([seed[row] for seed in per_seed]) for row in common}


def unpack_mask(hex_bits: str, n: int) -> np.ndarray:
    """The boolean per-image mask that ``empirical.evaluate.top1_mask`` packed into hex."""
    return np.unpackbits(np.frombuffer(bytes.fromhex(hex_bits), dtype=np.uint8))[:n].astype(bool)


@dataclass(frozen=True)
class ImageDifference(_Verdict):
    """Row ``a`` minus row ``b`` on the same ``n`` test images (McNemar: module doc)."""

    a: str
    b: str
    n: int
    a_only: int
    b_only: int
    mean: float
    se: float
    p: float

    def describe(self, scale: float = 100.0) -> str:
        return (f"{self.a} - {self.b}: {scale * self.mean:+.1f} +- {scale * self.se:.1f} on the same {self.n} images "
                f"({self.a_only} right only for {self.a}, {self.b_only} only for {self.b}), McNemar p = "
                f"{self.p:.3f}: {self.verdict}")


def mcnemar(a: str, b: str, correct_a: np.ndarray, correct_b: np.ndarray) -> ImageDifference:
    """McNemar's exact test of two classifiers' top-1 correctness on the same images (module doc)."""
    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape or correct_a.ndim != 1:
        raise ValueError(f"need one mask per row over the same images, got {correct_a.shape} and {correct_b.shape}")
    n = len(correct_a)
    only_a, only_b = int(np.sum(correct_a & ~correct_b)), int(np.sum(~correct_a & correct_b))
    split = only_a + only_b
    p = float(stats.binomtest(min(only_a, only_b), split, 0.5).pvalue) if split else 1.0
    se = float(np.sqrt(max(split - (only_a - only_b) ** 2 / n, 0.0)) / n)
    return ImageDifference(a, b, n, only_a, only_b, (only_a - only_b) / n, se, p)


def load_masks(folder: str, metric: str) -> dict[str, np.ndarray]:
    """{row: which test images its probe got right} from one experiment folder's table.json rows."""
    probe = {"linear_top1": ("linear_r", "linear_r_head"), "knn_top1": ("knn_r", None)}.get(metric)
    if probe is None:
        raise UserError(f"--metric {metric}: one seed folder compares rows image by image, for linear_top1 or "
                        "knn_top1 only (give 2 or more seed folders for a paired t test of any column)")
    path = os.path.join(folder, "table.json")
    try:
        with open(path) as f:
            rows = json.load(f)["rows"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not an experiment table ({e})") from None
    masks = {}
    for row in rows:
        for key, label in zip(probe, ("", ": directclr r[:d0]"), strict=False):
            if key and isinstance(row.get(key), dict) and row[key].get("top1_correct"):
                masks[row["run"] + label] = unpack_mask(row[key]["top1_correct"], int(row["n_test"]))
    if len(masks) < 2:
        raise UserError(f"{path}: fewer than 2 rows store per-image predictions (rows evaluated before they were "
                        "stored); give 2 or more seed folders for a paired t test instead")
    return masks


def compare_rows(values: dict[str, np.ndarray], reference: str | None, test=None) -> dict:
    """The rows by mean (best first), each adjacent pair's paired difference, and every row against
    ``reference`` when it is a row. ``test``: ``paired_difference`` (values per seed, default) or ``mcnemar``
    (values per image)."""
    test = test or paired_difference
    order = sorted(values, key=lambda row: -np.mean(values[row]))
    adjacent = [test(a, b, values[a], values[b]) for a, b in zip(order[:-1], order[1:], strict=True)]
    against = [] if reference not in values else [
        test(row, reference, values[row], values[reference]) for row in order if row != reference
    ]
    return {"order": order, "mean": {row: float(np.mean(values[row])) for row in order},
            "adjacent": [asdict(d) | {"significant": d.significant} for d in adjacent],
            "against_reference": [asdict(d) | {"significant": d.significant} for d in against],
            "lines": [d.describe() for d in adjacent], "reference_lines": [d.describe() for d in against]}


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m empirical.paired", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="one experiment output folder (with table.json) per seed; a single "
                   "folder compares its rows image by image")
    p.add_argument("--metric", default="linear_top1",
                   help="a column of table.json's rows: linear_top1 (default), knn_top1, linear_top5, r_collapsed, ...")
    p.add_argument("--reference", default="none", help="also compare every row with this one (default none)")
    p.add_argument("--json", default=None, help="write the comparison here (default: print only)")
    a = p.parse_args(argv)
    if len(set(map(os.path.realpath, a.folders))) != len(a.folders):
        raise UserError("a seed folder is given twice: each folder must be a different seed")
    if len(a.folders) == 1:
        result = compare_rows(load_masks(a.folders[0], a.metric), a.reference, mcnemar)
        how = "one seed, McNemar's exact test on the shared test images"
    else:
        result = compare_rows(load_seeds(a.folders, a.metric), a.reference)
        how = f"{len(a.folders)} seeds, paired t test"
    print(f"{a.metric}, {how}, alpha {ALPHA} (rows by mean, best first):")
    for line in result["lines"]:
        print("  " + line)
    if result["reference_lines"]:
        print(f"against {a.reference}:")
        for line in result["reference_lines"]:
            print("  " + line)
    if a.json:
        write_json(a.json, {"metric": a.metric, "folders": a.folders, "alpha": ALPHA, **result})
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
