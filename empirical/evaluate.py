"""Evaluate a trained SimCLR / DirectCLR checkpoint (issue 5; paper.md 2 Fig. 2/7b/9, 3.2-3.3; landscape C).

    python -m empirical.evaluate --checkpoint runs/mnist5k-mlp-s0/final.pt [--out DIR] [--device cpu]

Features are extracted once, deterministically (eval mode, no augmentation, the same uint8 -> ImageNet-mean/std
normalization the training used for its held-out spectrum batch):

* r: backbone output (the *representation*), z: projector output (the *embedding*; r[:, :d0] for DirectCLR,
  r itself for ``none`` and ``random-subset``, whose per-step subset has no fixed embedding space).
* Spectra of r, z and, for DirectCLR, r[:, d0:] on the test split, in the paper's protocol through
  ``theory.spectrum.embedding_spectrum(normalize=True)``: L2-normalize, covariance C = (1/N) sum (x - xbar)
  (x - xbar)^T, singular values (stored as log10), collapsed dims (s_k <= 1e-3 s_max), effective rank, RankMe.
* kNN on r (InstDisc / solo-learn): cosine similarity s_ij to the k = 200 nearest train features, class score
  sum_j exp(s_ij / T) [y_j = c], T = 0.1; top-1 and top-5.
* Linear probe on frozen r: features standardized with train mean/std, multinomial logistic regression
  W x + b trained full-batch with L-BFGS (L2 penalty ``wd``); top-1 and top-5 on the test split.
  For DirectCLR also the probe on r[:, :d0] only (paper Table 2: 47.9 vs 62.7).

Exit status: 0 done, 2 bad input (one line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from empirical import checkpoint as ckpt_io
from empirical.augment import normalize_images
from empirical.data import DATASETS, folder_heldout, load_memory_dataset
from empirical.models import SSLModel
from theory.io import OneLineParser, UserError, write_json
from theory.spectrum import embedding_spectrum

KNN_K, KNN_T = 200, 0.1
SPACE_DOC = {
    "r": "representation: backbone output (what the probes see)",
    "z": "embedding: projector output, the space the loss sees",
    "r_rest": "representation channels r[d0:] that the DirectCLR loss never sees directly",
}


# ---- contract used by empirical.compare -----------------------------------------------------------------


def _read_checkpoint(path: str) -> tuple[dict, dict]:
    """(state_dict, config) of final.pt (weights; config.json beside it) or ckpt-*.pt (weights + config)."""
    if os.path.isdir(path):
        final = os.path.join(path, "final.pt")
        found = ckpt_io.list_checkpoints(path)
        if os.path.isfile(final):
            path = final
        elif found:
            path = found[0]
        else:
            raise UserError(f"no final.pt or ckpt-*.pt in {path!r}")
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path!r} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated zip, garbled pickle, not a torch file: several exception types
        raise UserError(f"cannot read checkpoint {path!r} ({type(e).__name__})") from None
    if isinstance(obj, dict) and "model" in obj and "config" in obj:
        return obj["model"], obj["config"]
    cfg_path = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    if not isinstance(obj, dict) or not os.path.isfile(cfg_path):
        raise UserError(f"{path!r} is not a checkpoint of empirical.train (no config.json beside it)")
    with open(cfg_path) as f:
        return obj, json.load(f)


def load_trained(checkpoint: str, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model from the checkpoint's saved config, load its weights; eval mode on ``device``.

    ``checkpoint``: final.pt, ckpt-*.pt, or the run folder (final.pt preferred, else the newest ckpt).
    """
    state, config = _read_checkpoint(checkpoint)
    num_classes = int(state["probe.weight"].shape[0]) if "probe.weight" in state else 10
    model = SSLModel(
        config["backbone"],
        config["projector"],
        config["d0"],
        config["cifar_stem"],
        num_classes,
        config.get("seed", 0),
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"weights do not match the saved config: {str(e).splitlines()[0]}") from None
    return model.to(device).eval(), config


def load_split(config: dict, split: str, max_images: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, 3, S, S), int64 labels) of the ``train`` or ``test`` split at the training size.

    In-memory sets use the training's fixed split; ``imagefolder`` uses DIR/train and DIR/val (resize +
    centre crop, at most ``max_images`` rows, default 10000, in a fixed shuffled order).
    """
    if split not in ("train", "test"):
        raise UserError(f"split must be train or test, not {split!r}")
    name, size = config["dataset"], config["image_size"]
    data_dir = config.get("data_dir", "data")
    if name == "imagefolder":
        root = os.path.join(data_dir, "train" if split == "train" else "val")
        s = folder_heldout(root, size, max_images or 10_000)
        return s.images, s.labels
    train, test, _ = load_memory_dataset(name, data_dir, size)
    s = train if split == "train" else test
    images, labels = s.images, s.labels
    if max_images is not None:
        images, labels = images[:max_images], labels[:max_images]
    return images, labels


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    images_uint8: torch.Tensor,
    config: dict,
    batch_size: int = 512,
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """{"r": (N, width), "z": (N, dim z)} as float64 numpy; eval mode (BN running stats), no augmentation.

    For directclr also "r_rest" = r[:, d0:]. The model's train/eval mode and weights are left unchanged.
    """
    was_training = model.training
    model.eval()
    dev = torch.device(device)
    model.to(dev)
    rs, zs = [], []
    try:
        for lo in range(0, len(images_uint8), batch_size):
            x = normalize_images(images_uint8[lo : lo + batch_size].to(dev))
            r, z = model.encode(x)
            rs.append(r.double().cpu())
            zs.append(z.double().cpu())
    finally:
        model.train(was_training)
    out = {"r": torch.cat(rs).numpy(), "z": torch.cat(zs).numpy()}
    if config.get("projector") == "directclr" and config["d0"] < out["r"].shape[1]:
        out["r_rest"] = out["r"][:, config["d0"] :]
    return out


# ---- metrics ------------------------------------------------------------------------------------------------


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """Fraction of rows whose label is among the ``k`` highest scores, for each k (k capped at #classes)."""
    out = {}
    for k in ks:
        kk = min(k, scores.shape[1])
        hit = (scores.topk(kk, dim=1).indices == labels[:, None]).any(1)
        out[f"top{k}"] = float(hit.double().mean())
    return out


@torch.no_grad()
def knn_eval(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    k: int = KNN_K,
    temperature: float = KNN_T,
    chunk: int = 1024,
) -> dict:
    """Weighted cosine kNN: score_c(x) = sum over the k nearest train x_j of exp(cos(x, x_j) / T) [y_j = c]."""
    tx = F.normalize(torch.as_tensor(train_x, dtype=torch.float32), dim=1)
    ty = torch.as_tensor(train_y, dtype=torch.long)
    qx = F.normalize(torch.as_tensor(test_x, dtype=torch.float32), dim=1)
    qy = torch.as_tensor(test_y, dtype=torch.long)
    n_cls = int(max(ty.max(), qy.max())) + 1
    k = min(k, len(tx))  # a small train set cannot supply 200 neighbours
    scores = []
    for lo in range(0, len(qx), chunk):
        sim, idx = (qx[lo : lo + chunk] @ tx.T).topk(k, dim=1)
        w = (sim / temperature).exp()
        s = torch.zeros(len(sim), n_cls).scatter_add_(1, ty[idx], w)
        scores.append(s)
    res = topk_correct(torch.cat(scores), qy)
    return {**res, "k": k, "temperature": temperature, "metric": "weighted cosine kNN"}


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    wd: float = 1e-4,
    max_iter: int = 300,
    device: str = "cpu",
) -> dict:
    """Multinomial logistic regression on standardized frozen features, full-batch L-BFGS.

    Minimizes mean CE(W x_i + b, y_i) + wd ||W||^2 with x standardized by the train mean/std. Deterministic
    (zero init, no sampling).
    """
    dev = torch.device(device)
    xtr = torch.as_tensor(train_x, dtype=torch.float32, device=dev)
    mean, std = xtr.mean(0), xtr.std(0).clamp(min=1e-6)
    xtr = (xtr - mean) / std
    xte = (torch.as_tensor(test_x, dtype=torch.float32, device=dev) - mean) / std
    ytr = torch.as_tensor(train_y, dtype=torch.long, device=dev)
    yte = torch.as_tensor(test_y, dtype=torch.long, device=dev)
    n_cls = int(max(ytr.max(), yte.max())) + 1
    w = torch.zeros(xtr.shape[1], n_cls, device=dev, requires_grad=True)
    b = torch.zeros(n_cls, device=dev, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe", tolerance_grad=1e-6
    )

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xtr @ w + b, ytr) + wd * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        train_acc = topk_correct((xtr @ w + b).cpu(), ytr.cpu(), ks=(1,))["top1"]
        res = topk_correct((xte @ w + b).cpu(), yte.cpu())
    return {
        **res,
        "train_top1": train_acc,
        "wd": wd,
        "metric": "linear probe (L-BFGS, standardized features)",
    }


def spectrum_summary(x: np.ndarray, name: str) -> dict:
    """The paper's spectrum protocol on features x (N, d) via theory.spectrum (L2-normalized)."""
    if not np.all(np.isfinite(x)):  # a diverged network: say so instead of failing the whole evaluation
        return {"space": SPACE_DOC.get(name, name), "dim": int(x.shape[1]), "nonfinite": True}
    s = embedding_spectrum(x, normalize=True)
    j = s.to_json()
    return {
        "space": SPACE_DOC.get(name, name),
        "dim": int(x.shape[1]),
        "n_collapsed": int(s.n_collapsed),
        "effective_rank": float(s.effective_rank),
        "rankme": float(s.rankme),
        "log10": j["log10"],
    }


# ---- the whole evaluation -----------------------------------------------------------------------------------


def evaluate(
    checkpoint: str,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
    k: int = KNN_K,
    temperature: float = KNN_T,
    max_train: int | None = None,
) -> dict:
    """Every number of the module doc for one checkpoint, as a JSON-ready dict."""
    t0 = time.time()
    model, config = load_trained(checkpoint, device)
    data_cfg = dict(config)
    if dataset is not None:
        data_cfg["dataset"] = dataset
    if data_dir is not None:
        data_cfg["data_dir"] = data_dir
    feats = {}
    labels = {}
    for split in ("train", "test"):
        images, labels[split] = load_split(data_cfg, split, max_train if split == "train" else None)
        feats[split] = extract_features(model, images, config, device=device)
    ytr, yte = labels["train"].numpy(), labels["test"].numpy()
    keep_tr, keep_te = ytr >= 0, yte >= 0  # stl10's unlabeled rows
    res: dict = {
        "checkpoint": os.path.abspath(checkpoint),
        "dataset": data_cfg["dataset"],
        "projector": config["projector"],
        "backbone": config["backbone"],
        "d0": config["d0"],
        "train_steps": config.get("total_steps"),
        "n_train": int(keep_tr.sum()),
        "n_test": int(keep_te.sum()),
        "spectrum_split": "test",
        "spectra": {name: spectrum_summary(x, name) for name, x in feats["test"].items()},
    }
    ftr, fte = feats["train"]["r"][keep_tr], feats["test"]["r"][keep_te]
    ytr, yte = ytr[keep_tr], yte[keep_te]
    res["knn_r"] = knn_eval(ftr, ytr, fte, yte, k, temperature)
    res["linear_r"] = linear_probe(ftr, ytr, fte, yte, device=device)
    if config["projector"] == "directclr":
        d0 = config["d0"]
        res["linear_r_head"] = linear_probe(ftr[:, :d0], ytr, fte[:, :d0], yte, device=device)
    res["eval_seconds"] = time.time() - t0
    return res


def table(res: dict) -> str:
    """A short human-readable summary of ``evaluate``'s result."""
    lines = [
        f"{res['projector']} on {res['dataset']} ({res['n_train']} train / {res['n_test']} test images)",
        f"  kNN on r (k={res['knn_r']['k']}, T={res['knn_r']['temperature']}): "
        f"top-1 {100 * res['knn_r']['top1']:.2f}  top-5 {100 * res['knn_r']['top5']:.2f}",
        f"  linear probe on frozen r: top-1 {100 * res['linear_r']['top1']:.2f}  "
        f"top-5 {100 * res['linear_r']['top5']:.2f}",
    ]
    if "linear_r_head" in res:
        lines.append(f"  linear probe on r[:d0] only: top-1 {100 * res['linear_r_head']['top1']:.2f}")
    lines.append(f"  {'space':8s} {'dim':>5s} {'collapsed':>9s} {'eff.rank':>9s} {'RankMe':>8s}")
    for name, s in res["spectra"].items():
        lines.append(
            f"  {name:8s} {s['dim']:5d} {s['n_collapsed']:9d} {s['effective_rank']:9.2f} {s['rankme']:8.2f}"
            f"   {s['space']}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m empirical.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="final.pt, ckpt-*.pt or the run folder")
    p.add_argument("--dataset", default=None, choices=DATASETS, help="default: the training dataset")
    p.add_argument("--data-dir", default=None, help="default: the training --data-dir")
    p.add_argument("--out", default=None, help="folder for eval.json (default: the checkpoint's folder)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--k", type=int, default=KNN_K, help="kNN neighbours (default 200)")
    p.add_argument("--temperature", type=float, default=KNN_T, help="kNN temperature (default 0.1)")
    p.add_argument("--max-train", type=int, default=None, help="use at most this many train images")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.k < 1 or args.temperature <= 0:
            raise UserError("--k must be >= 1 and --temperature > 0")
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--device {args.device}: CUDA is not available on this machine")
        res = evaluate(
            args.checkpoint,
            args.dataset,
            args.data_dir,
            args.device,
            args.k,
            args.temperature,
            args.max_train,
        )
    except SystemExit as e:
        return int(e.code or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or (
        args.checkpoint if os.path.isdir(args.checkpoint) else os.path.dirname(args.checkpoint)
    )
    os.makedirs(out or ".", exist_ok=True)
    path = os.path.join(out or ".", "eval.json")
    write_json(path, res)
    print(table(res))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
