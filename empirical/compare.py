"""Theory vs the trained network: ``python -m empirical.compare RUN [--out DIR] [--data-dir DIR]``.

Every theoretical object comes from ``theory``; this module loads a run, feeds real features and real weights
to three analyses, writes compare.json and prints a summary:

1. X from real features (``empirical.compare_x``): X's negative directions (Theorem 1) against the directions
   the trained projector collapsed.
2. Frozen-feature theory experiment (``empirical.compare_frozen``): 1-3 layer linear networks trained by the
   theory's own GD on the run's whitened features; predicted vs observed collapse.
3. Alignment in the real projector (``empirical.compare_alignment``): consecutive linear maps against
   Theorem 2 / Propositions 1-2.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import time

import numpy as np
import torch

from dimcollapse.io import NonFiniteError, OneLineParser, UserError, run_cli, write_json
from empirical.compare_alignment import alignment_analysis
from empirical.compare_frozen import frozen_experiment, whiten
from empirical.compare_x import x_analysis
from empirical.evaluate import portable_path
from empirical.features import view_features
from empirical.linear_maps import SUPPORTED, projector_map
from theory import COLLAPSE_RTOL, embedding_spectrum


def trained_steps(checkpoint: str, config: dict) -> int | None:
    """The step of a ckpt-*.pt (the newest one for a folder without final.pt); final.pt: the whole schedule."""
    if os.path.isdir(checkpoint) and not os.path.isfile(os.path.join(checkpoint, "final.pt")):
        checkpoint = (sorted(glob.glob(os.path.join(checkpoint, "ckpt-*.pt"))) or [checkpoint])[-1]
    found = re.search(r"ckpt-(\d+)\.pt$", checkpoint)
    return int(found.group(1)) if found else config.get("total_steps")


def compare(
    checkpoint: str,
    samples: int = 2048,
    split: str = "train",
    frozen_dim: int = 16,
    frozen_steps: int = 5000,
    seed: int = 0,
    device: str = "cpu",
    data_dir: str | None = None,
    progress: bool = False,
) -> dict:
    """All three analyses of the module doc for one trained run, as a JSON-ready dict."""
    from tqdm import tqdm

    from empirical.evaluate import load_split, load_trained

    if not os.path.exists(checkpoint):
        raise UserError(f"checkpoint {checkpoint!r} not found")
    model, config = load_trained(checkpoint, device)
    name = config["projector"]
    if name not in SUPPORTED:
        raise UserError(f"projector {name!r} has no fixed linear map for X (supported: {', '.join(SUPPORTED)})")
    images, _ = load_split({**config, "data_dir": data_dir or config.get("data_dir", "data")}, split)
    model.cpu()
    bar = tqdm(total=4, desc="compare", disable=not progress, dynamic_ncols=True)
    bar.set_postfix_str("features")
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:samples]
    t0 = time.time()
    f = view_features(model, images[pick], config, seed)
    if not all(np.all(np.isfinite(v)) for v in f.values()):
        bar.close()
        raise NonFiniteError(f"the features of {checkpoint} are not finite: the run diverged")
    bar.update()
    bar.set_postfix_str("X from features")
    r1, r2 = f["r1"], f["r2"]
    weight, info = projector_map(model.projector, name, r1)
    z_lin = r1 @ weight.T
    resid = f["z1"] - z_lin - (f["z1"] - z_lin).mean(axis=0)
    info["r2_of_linear_map"] = float(1 - np.sum(resid**2) / np.sum((f["z1"] - f["z1"].mean(axis=0)) ** 2))
    result = {
        "checkpoint": portable_path(getattr(model, "loaded_from", checkpoint)),
        "trained_steps": trained_steps(getattr(model, "loaded_from", checkpoint), config),
        "config": {**config, "out": portable_path(config["out"])} if config.get("out") else config,
        "samples": len(r1),
        "split": split,
        "seed": seed,
        "projector_map": info,
        "spectra": {k: embedding_spectrum(f[k], normalize=True).to_json() for k in ("r1", "z1")},
        "x_from_features": x_analysis(r1, r2, f["z1"], weight, config["batch_size"], config["temperature"]),
    }
    bar.update()
    bar.set_postfix_str("frozen-feature experiment")
    if np.linalg.matrix_rank(r1 - r1.mean(axis=0)) >= frozen_dim:
        x, x_aug, pca_var = whiten(r1, r2, frozen_dim)
        result["frozen"] = {
            **frozen_experiment(x, x_aug, steps=frozen_steps, seed=seed),
            "pca_variance": pca_var,
        }
    else:
        result["frozen"] = {"skipped": f"representation rank below --frozen-dim {frozen_dim}"}
    bar.update()
    bar.set_postfix_str("alignment")
    result["alignment"] = alignment_analysis(model, name, r1)
    result["seconds"] = time.time() - t0
    bar.update()
    bar.close()
    return result


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def summary(res: dict) -> str:
    xf, cfg = res["x_from_features"], res["config"]
    lines = [
        f"{cfg['dataset']} / {cfg['backbone']} / projector {cfg['projector']} ({res['projector_map']['kind']}, "
        f"linear-map R^2 {res['projector_map']['r2_of_linear_map']:.3f}); {res['samples']} samples, "
        f"width {xf['width']}",
        f"[1] W collapses {xf['weight_collapsed']} of the {xf['support_dim']} directions where r varies "
        f"(sigma^2 <= {COLLAPSE_RTOL:g} max)",
    ]
    for v in ("trained", "matched", "apriori"):
        d = xf[v]
        label = f"X ({v}):"
        lines.append(
            f"    {label:<14}{d['n_negative']:3d} negative eigenvalues; overlap with W's collapsed "
            f"directions {_fmt(d['overlap_same_count'])} (chance {d['chance_overlap']:.2f}); "
            f"v'Xv/max|X| on W's collapsed {_fmt(d['rayleigh_collapsed'], '+.3f')}, surviving "
            f"{_fmt(d['rayleigh_surviving'], '+.3f')}"
        )
    fr = res["frozen"]
    if "depths" in fr:
        lines.append(
            f"[2] frozen features, PCA {fr['dim']} whitened: X(W->0) has {fr['apriori_n_negative']} "
            "negative eigenvalues"
        )
        for layers, d in fr["depths"].items():
            if "diverged" in d:
                lines.append(f"    {layers} layer(s): diverged")
                continue
            lines.append(
                f"    {layers} layer(s): collapsed {d['observed_collapsed']:2d}/{fr['dim']} observed, "
                f"predicted {d['predicted_theorem1']} (Theorem 1) and {d['predicted_theorem3']} (Theorem 3); "
                f"X late in training has {d['late_n_negative']} negative eigenvalues"
            )
    else:
        lines.append(f"[2] skipped: {fr['skipped']}")
    for key, d in res["alignment"].items():
        sc = ", ".join(f"top{m} {s:.2f}" for m, s in d["scores"].items())
        lines.append(
            f"[3] {key}: |A_kk| {sc} (chance {d['chance_score']:.2f}); erank {d['erank1']:.1f} / "
            f"{d['erank2']:.1f}; top-{d['top_k']} subspace overlap {d['subspace_overlap_top_k']:.2f} "
            f"(chance {d['subspace_chance']:.2f})"
        )
    lines += verdict_lines(xf)
    return "\n".join(lines)


X_VARIANTS = (("apriori", "at W -> 0"), ("trained", "trained"), ("matched", "matched"))


def _psd_words(d: dict) -> str:
    """One X's PSD verdict in words (``compare_x``'s ``verdict_text``; older results: the count alone)."""
    return d.get("verdict_text") or f"{d['n_negative']} negative eigenvalue(s), no PSD verdict (an older result)"


def attribution(xf: dict) -> str:
    """Is the projector's collapse attributed to strong augmentation? Theorem 1: it is when X at W -> 0 (the
    augmentation alone, before the projector shapes the softmax) has significantly negative directions; not
    when that X is shown PSD; undetermined when the test decides neither."""
    k, m, a = xf["weight_collapsed"], xf["support_dim"], xf["apriori"]
    if k == 0:
        return f"the projector collapses none of the {m} directions where r varies: nothing to attribute"
    what = f"the projector's collapse ({k} of {m} directions)"
    verdict = a.get("verdict")
    if verdict == "not psd":
        overlap = "" if a.get("overlap_same_count") is None else (
            f"; they overlap W's collapsed directions {a['overlap_same_count']:.2f}, chance {a['chance_overlap']:.2f}")
        return (f"{what} is attributed to strong augmentation: X at W -> 0 has {a['n_negative']} significantly "
                f"negative direction(s) (Theorem 1){overlap}")
    if verdict == "psd":
        return (f"{what} is not attributed to strong augmentation: X at W -> 0 is shown PSD, so Theorem 1's "
                "premise fails here (another cause, e.g. the projector's depth, Theorem 3)")
    return (f"{what}: attribution to strong augmentation undetermined (the PSD test of X at W -> 0 decides "
            "neither way)")


def verdict_lines(xf: dict) -> list[str]:
    """The closing verdict in words: each X's PSD verdict, then the attribution of the projector's collapse."""
    return ["verdict on X: " + "; ".join(f"{what}: {_psd_words(xf[v])}" for v, what in X_VARIANTS),
            "verdict: " + attribution(xf)]


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m empirical.compare", description=__doc__.splitlines()[0])
    p.add_argument("run", nargs="?", default=None, help="run folder (or final.pt / ckpt-*.pt)")
    p.add_argument("--checkpoint", default=None, help="the same as RUN")
    p.add_argument("--out", default=None, help="output folder for compare.json (default: the run folder)")
    p.add_argument("--data-dir", default=None, help="where the run's dataset is (default: the training --data-dir)")
    p.add_argument("--samples", type=int, default=2048, help="images (each in two views); N x N softmax memory")
    p.add_argument("--split", default="train", choices=("train", "test"))
    p.add_argument("--frozen-dim", type=int, default=16, help="PCA components of the frozen-feature experiment")
    p.add_argument("--frozen-steps", type=int, default=5000, help="GD steps per depth in the frozen-feature experiment")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    target = args.run or args.checkpoint
    if target is None:
        raise UserError("which run? give a run folder (or final.pt / ckpt-*.pt), see --help")
    if not 8 <= args.samples <= 8192:
        raise UserError(f"--samples {args.samples} must be between 8 and 8192 (N x N softmax memory)")
    if not 1 <= args.frozen_dim <= 64:
        raise UserError(f"--frozen-dim {args.frozen_dim} must be between 1 and 64")
    if args.frozen_steps < 1:
        raise UserError(f"--frozen-steps {args.frozen_steps} must be at least 1")
    if args.seed < 0:
        raise UserError(f"--seed {args.seed} must be at least 0")
    ckpt = os.path.abspath(target)
    out = args.out or (ckpt if os.path.isdir(ckpt) else os.path.dirname(ckpt))
    try:  # before minutes of work: can --out take the result?
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, f".write-test-{os.getpid()}"), "w"):
            pass
        os.remove(os.path.join(out, f".write-test-{os.getpid()}"))
    except OSError as e:
        raise UserError(f"--out {out!r} is not writable ({e.strerror or e})") from None
    res = compare(
        target, args.samples, args.split, args.frozen_dim, args.frozen_steps, args.seed,
        data_dir=args.data_dir, progress=not args.no_progress,
    )  # fmt: skip
    path = os.path.join(out, "compare.json")
    write_json(path, res)
    print(summary(res))
    print(f"wrote {path}")  # the one file this command writes
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
