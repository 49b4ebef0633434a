"""Evaluate a trained run: spectra of the representation and the embedding, kNN and linear probe, a plot.

    python -m empirical.evaluate RUN [--plot spectrum.png] [--out DIR] [--device cpu]

RUN is a run folder of ``empirical.train`` (final.pt preferred, else its newest checkpoint), or a single
final.pt / ckpt-*.pt (also as ``--checkpoint``). Features are extracted once, deterministically (eval mode, no
augmentation, the same uint8 -> ImageNet-mean/std normalization the training used for its held-out spectrum):

* r: backbone output (the *representation*), z: projector output (the *embedding*; r[:, :d0] for DirectCLR,
  r itself for ``none`` and ``random-subset``, whose per-step subset has no fixed embedding space).
* Spectra of r, z and, for DirectCLR, r[:, d0:] on the test split, in the paper's protocol through
  ``theory.spectrum.embedding_spectrum(normalize=True)``: L2-normalize, covariance C = (1/N) sum (x - xbar)
  (x - xbar)^T, singular values (stored as log10), collapsed dims (s_k <= 1e-3 s_max), effective rank, RankMe.
* kNN on r (InstDisc / solo-learn): cosine similarity s_ij to the k = 200 nearest train features, class score
  sum_j exp(s_ij / T) [y_j = c], T = 0.1; top-1 and top-5.
* Linear probe on frozen r, on the whole training split unless ``--max-train``:
  ``--probe fast`` (default): multinomial logistic regression, full-batch L-BFGS, on features centred and
  divided by ONE global scale (the RMS over channels). Per-channel standardization is deliberately not used:
  it would rescale nearly dead (collapsed) channels by up to 1/floor and hide the collapse this project
  measures; one global scale keeps every channel's relative magnitude as the network produced it.
  ``--probe official``: the official DirectCLR linear evaluation on the frozen backbone (eval mode): a linear
  layer initialised N(0, 0.01), SGD momentum 0.9, lr 0.1, weight decay 1e-6, batch 256, cosine over
  ``--probe-epochs`` (100), random resized crop + flip of the training images each epoch, test on the plain
  images; the final and the best-over-epochs top-1 (the official script reports the best).
  For DirectCLR also the fast probe on r[:, :d0] only (the paper's sub-vector probe).

Exit status: 0 done, 2 bad input (one line), 3 the checkpoint's features are not finite (a diverged run).
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

from dimcollapse.io import NonFiniteError, OneLineParser, UserError, atomic_path, check_finite, run_cli, write_json
from empirical import checkpoint as ckpt_io
from empirical.augment import ViewRecipe, augment, sample_params
from empirical.config import check_device, check_out_dir
from empirical.data import DATASETS, folder_heldout, load_memory_dataset
from empirical.features import encode_images
from empirical.models import SSLModel
from theory.spectrum import embedding_spectrum

KNN_K, KNN_T = 200, 0.1
MIN_PROBE_TRAIN = 2  # the probe centres the features and divides by their spread: one image has none
SPACE_DOC = {
    "r": "representation: backbone output (what the probes see)",
    "z": "embedding: projector output, the space the loss sees",
    "r_rest": "representation channels r[d0:] that the DirectCLR loss never sees directly",
}


# ---- contract used by empirical.compare -----------------------------------------------------------------


def portable_path(path: str) -> str:
    """``path`` as a result file records it: relative to the repository when inside it, else the run folder's name
    and the file's, so that no result holds this machine's directories."""
    full = os.path.abspath(path)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.commonpath([full, root]) == root:
        return os.path.relpath(full, root)
    return os.path.join(os.path.basename(os.path.dirname(full)), os.path.basename(full))


CONFIG_KEYS = ("backbone", "projector", "d0", "cifar_stem", "dataset", "image_size")


def _read_config(cfg_path: str) -> dict:
    """config.json of a run as a dict with the keys a model is rebuilt from; ``UserError`` naming the file."""
    try:
        with open(cfg_path) as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        reason = "empty" if os.path.getsize(cfg_path) == 0 else f"not valid JSON: {e}"
        raise UserError(f"config {cfg_path!r} is {reason}: it must be the config.json empirical.train wrote "
                        "(rerun the training, or copy config.json from the run)") from None
    missing = [k for k in CONFIG_KEYS if k not in config] if isinstance(config, dict) else list(CONFIG_KEYS)
    if missing:
        raise UserError(f"config {cfg_path!r} is not a training config (missing {', '.join(missing)})")
    return config


def _load_one(path: str) -> tuple[dict, dict]:
    """(state_dict, config) of one final.pt (weights; config.json beside it) or ckpt-*.pt (weights + config)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated zip, garbled pickle, not a torch file: several exception types
        raise UserError(f"cannot read checkpoint {path!r} ({type(e).__name__})") from None
    if isinstance(obj, dict) and "model" in obj and "config" in obj:
        return obj["model"], obj["config"]
    cfg_path = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    if not isinstance(obj, dict) or not os.path.isfile(cfg_path):
        raise UserError(f"{path!r} is not a checkpoint of empirical.train (no config.json beside it)")
    return obj, _read_config(cfg_path)


def _read_checkpoint(path: str) -> tuple[dict, dict, str]:
    """(state_dict, config, the file read) of a run folder, final.pt or ckpt-*.pt.

    A run folder: final.pt, else its newest checkpoint. A final.pt or checkpoint that cannot be read (truncated by
    a crash or a full disk) falls back to the newest readable ckpt-*.pt beside it, with a note naming both.
    """
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
        return (*_load_one(path), path)
    except UserError as first:
        if not str(first).startswith("cannot read checkpoint"):
            raise
        folder = os.path.dirname(os.path.abspath(path))
        for other in ckpt_io.list_checkpoints(folder):
            if os.path.abspath(other) == os.path.abspath(path):
                continue
            try:
                state, config = _load_one(other)
            except UserError:
                continue
            print(f"note: {first} (truncated?): using the newest readable checkpoint beside it, {other!r}",
                  file=sys.stderr)
            return state, config, other
        raise UserError(f"{first}, and no readable ckpt-*.pt beside it") from None


def load_trained(checkpoint: str, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model from the checkpoint's saved config, load its weights; eval mode on ``device``.

    ``checkpoint``: final.pt, ckpt-*.pt, or the run folder (final.pt preferred, else the newest ckpt); an
    unreadable one falls back to the newest readable ckpt-*.pt beside it. The file read is ``model.loaded_from``.
    """
    state, config, used = _read_checkpoint(checkpoint)
    num_classes = int(state["probe.weight"].shape[0]) if "probe.weight" in state else 10
    model = SSLModel(
        config["backbone"],
        config["projector"],
        config["d0"],
        config["cifar_stem"],
        num_classes,
        config.get("seed", 0),
        config.get("projector_layers", 1),
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"weights do not match the saved config: {str(e).splitlines()[0]}") from None
    model.loaded_from = used
    return model.to(device).eval(), config


def load_split(config: dict, split: str, max_images: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, 3, S, S), int64 labels) of the ``train`` or ``test`` split at the training size.

    In-memory sets use the training's fixed split; ``imagefolder`` uses DIR/train and DIR/val (resize +
    centre crop, in a fixed shuffled order). ``max_images``: the first rows only (default: all; an image
    folder is held in memory as uint8, N x 3 x S x S bytes).
    """
    if split not in ("train", "test"):
        raise UserError(f"split must be train or test, not {split!r}")
    name, size = config["dataset"], config["image_size"]
    data_dir = config.get("data_dir", "data")
    if name == "imagefolder":
        root = os.path.join(data_dir, "train" if split == "train" else "val")
        s = folder_heldout(root, size, max_images or 2**62)
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
    model.to(torch.device(device))
    r, z = encode_images(model, images_uint8, batch_size, dtype=torch.float64)
    out = {"r": r.numpy(), "z": z.numpy()}
    if config.get("projector") == "directclr" and config["d0"] < out["r"].shape[1]:
        out["r_rest"] = out["r"][:, config["d0"] :]
    return out


# ---- metrics ------------------------------------------------------------------------------------------------


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Fraction of rows whose label is among the ``k`` highest scores, for each k (k capped at #classes)."""
    out = {}
    for k in ks:
        kk = min(k, scores.shape[1])
        hit = (scores.topk(kk, dim=1).indices == labels[:, None]).any(1)
        out[f"top{k}"] = float(hit.double().mean())
    return out


def top1_mask(scores: torch.Tensor, labels: torch.Tensor) -> str:
    """Which test images are right at top-1, as the hex of their packed bits (``empirical.paired.unpack_mask``):
    two rows evaluated on the same test images can then be compared image by image (McNemar)."""
    hit = (scores.argmax(1) == labels).cpu().numpy()
    return np.packbits(hit).tobytes().hex()


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
    scores = torch.cat(scores)
    res = topk_correct(scores, qy)
    return {**res, "k": k, "temperature": temperature, "metric": "weighted cosine kNN",
            "top1_correct": top1_mask(scores, qy)}


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    wd: float = 1e-4,
    max_iter: int = 300,
    device: str = "cpu",
) -> dict:
    """Multinomial logistic regression on frozen features, full-batch L-BFGS (module doc, ``--probe fast``).

    Minimizes mean CE(W x_i + b, y_i) + wd ||W||^2 with x = (f - mean) / s, s = sqrt(mean_k var_k) one number
    for all channels (so ``wd`` means the same at any feature scale while a dead channel stays dead).
    Deterministic (zero init, no sampling).
    """
    dev = torch.device(device)
    xtr = torch.as_tensor(train_x, dtype=torch.float32, device=dev)
    mean = xtr.mean(0)
    scale = xtr.var(0).mean().sqrt().clamp(min=1e-12)  # one scale: relative channel magnitudes kept
    xtr = (xtr - mean) / scale
    xte = (torch.as_tensor(test_x, dtype=torch.float32, device=dev) - mean) / scale
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
        test_scores = (xte @ w + b).cpu()
        res = topk_correct(test_scores, yte.cpu())
    return {
        **res,
        "top1_correct": top1_mask(test_scores, yte.cpu()),
        "train_top1": train_acc,
        "wd": wd,
        "metric": "linear probe (L-BFGS, centred features / one global scale)",
    }


def official_probe(
    model: torch.nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_x: np.ndarray,
    test_y: np.ndarray,
    size: int,
    epochs: int = 100,
    batch: int = 256,
    lr: float = 0.1,
    wd: float = 1e-6,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
) -> dict:
    """The official linear evaluation (module doc, ``--probe official``) on frozen r; ``test_x``: test features."""
    from tqdm import tqdm

    dev = torch.device(device)
    model.eval()
    keep = train_labels >= 0
    images, labels = train_images[keep], train_labels[keep]
    n_cls = int(max(int(labels.max()), int(test_y.max()))) + 1
    width = test_x.shape[1]
    fc = torch.nn.Linear(width, n_cls)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        fc.weight.normal_(0, 0.01, generator=gen)
        fc.bias.zero_()
    fc = fc.to(dev)
    opt = torch.optim.SGD(fc.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    crop_flip = ViewRecipe(scale_min=0.08, p_jitter=0.0, p_gray=0.0, p_blur=0.0, p_solarize=0.0, p_flip=0.5)
    xte = torch.as_tensor(test_x, dtype=torch.float32, device=dev)
    yte = torch.as_tensor(test_y, dtype=torch.long)
    history = []
    for _ in tqdm(range(epochs), desc="official probe", disable=not progress, dynamic_ncols=True):
        perm = torch.randperm(len(images), generator=gen)
        for lo in range(0, len(images) - batch + 1 if len(images) >= batch else 1, batch):
            idx = perm[lo : lo + batch]
            x = augment(images[idx], sample_params(crop_flip, len(idx), gen), size).to(dev)
            with torch.no_grad():
                r = model.encode(x)[0].float()
            loss = F.cross_entropy(fc(r), labels[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        with torch.no_grad():
            history.append(topk_correct(fc(xte).cpu(), yte))
    best = max(h["top1"] for h in history)
    return {
        **history[-1],
        "best_top1": best,
        "top1_per_epoch": [h["top1"] for h in history],
        "epochs": epochs,
        "batch": batch,
        "lr": lr,
        "wd": wd,
        "metric": "official linear evaluation (SGD, crop + flip, frozen backbone); best_top1 is selected on test",
    }


def spectrum_summary(x: np.ndarray, name: str) -> dict:
    """The paper's spectrum protocol on features x (N, d) via theory.spectrum (L2-normalized)."""
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


def step0_collapsed(checkpoint: str, config: dict) -> dict | None:
    """The collapsed counts of the run's step-0 spectrum (spectra.jsonl beside the checkpoint, training's
    first --spectrum-samples held-out images), the baseline of the trained counts; None when not logged."""
    from theory.spectrum import n_collapsed

    path = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "spectra.jsonl")
    try:
        with open(path) as f:
            first = json.loads(f.readline())
    except (OSError, ValueError):
        return None
    if first.get("step") != 0:
        return None
    counts = {k[len("log10_"):]: int(n_collapsed(10.0 ** np.asarray(v, dtype=float))) for k, v in first.items()
              if k.startswith("log10_") and v}
    return {**counts, "images": config.get("spectrum_samples")}


def evaluate(
    checkpoint: str,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
    k: int = KNN_K,
    temperature: float = KNN_T,
    max_train: int | None = None,
    probe: str = "fast",
    probe_epochs: int = 100,
    spectra_only: bool = False,
    progress: bool = False,
) -> dict:
    """Every number of the module doc for one checkpoint, as a JSON-ready dict.

    Raises ``NonFiniteError`` when the features are not finite (a diverged run).
    """
    t0 = time.time()
    model, config = load_trained(checkpoint, device)
    data_cfg = dict(config)
    if dataset is not None:
        data_cfg["dataset"] = dataset
    if data_dir is not None:
        data_cfg["data_dir"] = data_dir
    feats, labels, images = {}, {}, {}
    for split in ("test",) if spectra_only else ("train", "test"):
        images[split], labels[split] = load_split(data_cfg, split, max_train if split == "train" else None)
        feats[split] = extract_features(model, images[split], config, device=device)
        if not all(np.all(np.isfinite(x)) for x in feats[split].values()):
            raise NonFiniteError(
                f"the features of {checkpoint} are not finite on the {split} split: the run diverged "
                "(train it again with a lower --lr)"
            )
    yte = labels["test"].numpy()
    keep_te = yte >= 0  # stl10's unlabeled rows
    res: dict = {
        "checkpoint": portable_path(getattr(model, "loaded_from", checkpoint)),
        "dataset": data_cfg["dataset"],
        "projector": config["projector"],
        "backbone": config["backbone"],
        "d0": config["d0"],
        "train_steps": config.get("total_steps"),
        "n_test": int(keep_te.sum()),
        "spectrum_split": "test",
        "spectra": {name: spectrum_summary(x, name) for name, x in feats["test"].items()},
        "collapsed_step0": step0_collapsed(getattr(model, "loaded_from", checkpoint), config),
    }
    if not spectra_only:
        ytr = labels["train"].numpy()
        keep_tr = ytr >= 0
        if keep_tr.sum() < MIN_PROBE_TRAIN:
            raise UserError(f"only {int(keep_tr.sum())} labelled training image(s): the linear probe needs at least "
                            f"{MIN_PROBE_TRAIN} (raise --max-train, or --spectra-only)")
        res["n_train"] = int(keep_tr.sum())
        res["max_train"] = max_train
        ftr, fte = feats["train"]["r"][keep_tr], feats["test"]["r"][keep_te]
        ytr, yte = ytr[keep_tr], yte[keep_te]
        res["knn_r"] = knn_eval(ftr, ytr, fte, yte, k, temperature)
        res["linear_r"] = linear_probe(ftr, ytr, fte, yte, device=device)
        if config["projector"] == "directclr":
            d0 = config["d0"]
            res["linear_r_head"] = linear_probe(ftr[:, :d0], ytr, fte[:, :d0], yte, device=device)
        if probe == "official":
            res["official_r"] = official_probe(
                model, images["train"], labels["train"], fte, yte, config["image_size"], probe_epochs,
                device=device, progress=progress,
            )  # fmt: skip
    res["eval_seconds"] = time.time() - t0
    return res


def plot_spectra(res: dict, path: str) -> list[str]:
    """The paper's spectrum plot (Fig. 2 / 7b / 9) of one evaluation: sorted log10 singular values of the
    embedding z and the representation r, collapsed dimensions (3 decades below the top) shaded and
    counted. Writes ``path`` (PNG) and the same name with .pdf; returns both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spaces = [s for s in ("z", "r") if s in res["spectra"]]
    if res["projector"] in ("none", "random-subset"):
        spaces = ["r"]  # z is r itself
    fig, axes = plt.subplots(1, len(spaces), figsize=(4.2 * len(spaces) + 0.6, 3.6), squeeze=False,
                             constrained_layout=True)  # fmt: skip
    for ax, space in zip(axes[0], spaces, strict=True):
        s = res["spectra"][space]
        y = np.array([np.nan if v is None else v for v in s["log10"]], dtype=np.float64)
        top = np.nanmax(y)
        floor = top - 10  # dead channels sit near the float64 floor: show the top 10 decades, the rest at the bottom
        at_floor = ~np.isfinite(y) | (y <= floor)
        y = np.where(at_floor, floor, y)
        ranks = np.arange(1, len(y) + 1)
        alive = len(y) - s["n_collapsed"]
        marker = "." if len(y) <= 160 else None
        ax.plot(ranks[~at_floor], y[~at_floor], color="#1f77b4", marker=marker, ms=3, label="singular values")
        if at_floor.any():  # drawn apart, grey and labelled: they are not values but a floor of the display
            ax.plot(ranks[at_floor], y[at_floor], color="grey", ls="none", marker="v", ms=3,
                    label=f"{int(at_floor.sum())} at or below the display floor (10 decades under the largest)")
        ax.axhline(top - 3, color="black", ls=":", lw=0.9, label="collapse threshold (1e-3 x largest)")
        if s["n_collapsed"]:
            ax.axvspan(alive + 0.5, len(y) + 0.5, color="#d62728", alpha=0.12,
                       label=f"{s['n_collapsed']} collapsed")  # fmt: skip
        name = "embedding z" if space == "z" else "representation r"
        ax.set(xlabel="singular value rank index", ylabel="log10 singular value of C", ylim=(floor - 0.3, top + 0.5),
               xlim=(0.5, len(y) + 0.5))  # fmt: skip
        ax.set_title(
            f"{name}: {s['n_collapsed']} of {s['dim']} collapsed\n(effective rank {s['effective_rank']:.1f})",
            fontsize=9,
        )
        ax.legend(loc="lower left", fontsize=8)
    steps = res.get("train_steps")
    fig.suptitle(
        f"{res['projector']} projector, {res['backbone']} on {res['dataset']}"
        + (f", {steps} steps" if steps else "")
        + f" ({res['n_test']} test images)",
        fontsize=10,
    )
    stem = os.path.splitext(path)[0]
    out = []
    for ext in (".png", ".pdf"):
        target = stem + ext
        with atomic_path(target) as tmp:  # the temporary name has no suffix: the format is named
            fig.savefig(tmp, format=ext[1:], dpi=150, metadata={"CreationDate": None} if ext == ".pdf" else None)
        out.append(target)
    plt.close(fig)
    return out


def table(res: dict) -> str:
    """A short human-readable summary of ``evaluate``'s result."""
    if "knn_r" not in res:
        lines = [f"{res['projector']} on {res['dataset']} ({res['n_test']} test images; spectra only)"]
    else:
        lines = [
            f"{res['projector']} on {res['dataset']} ({res['n_train']} train / {res['n_test']} test images)",
            f"  kNN on r (k={res['knn_r']['k']}, T={res['knn_r']['temperature']}): "
            f"top-1 {100 * res['knn_r']['top1']:.2f}  top-5 {100 * res['knn_r']['top5']:.2f}",
            f"  linear probe on frozen r (L-BFGS): top-1 {100 * res['linear_r']['top1']:.2f}  "
            f"top-5 {100 * res['linear_r']['top5']:.2f}",
        ]
    if "official_r" in res:
        o = res["official_r"]
        lines.append(
            f"  official linear evaluation ({o['epochs']} epochs): top-1 {100 * o['top1']:.2f} final, "
            f"{100 * o['best_top1']:.2f} best over epochs"
        )
    if "linear_r_head" in res:
        lines.append(f"  linear probe on r[:d0] only: top-1 {100 * res['linear_r_head']['top1']:.2f}")
    lines.append(f"  collapsed = covariance singular values <= 1e-3 x the largest, on all {res['n_test']} test images "
                 "(eval-mode features); training's closing summary counts the first --spectrum-samples held-out "
                 "images, so the two can differ")
    lines.append(f"  {'space':8s} {'dim':>5s} {'collapsed':>9s} {'eff.rank':>9s} {'RankMe':>8s}")
    for name, s in res["spectra"].items():
        lines.append(
            f"  {name:8s} {s['dim']:5d} {s['n_collapsed']:9d} {s['effective_rank']:9.2f} {s['rankme']:8.2f}"
            f"   {s['space']}"
        )
    base = res.get("collapsed_step0")
    if base:
        lines.append(f"  at step 0 (training's spectra.jsonl, the first {base['images']} held-out images): "
                     + ", ".join(f"{k} {v} collapsed" for k, v in base.items() if k != "images"))
    else:
        lines.append("  at step 0: not logged by this run (runs log their step-0 spectrum in spectra.jsonl)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m empirical.evaluate",
        description="Evaluate a trained run: spectra of r and z, kNN and linear probe on frozen r, and "
        "optionally the spectrum plot. Writes eval.json.",
        epilog="examples:\n  python -m empirical.evaluate runs/digits-mlp-s0 --plot spectrum.png\n"
        "  python -m empirical.evaluate runs/c10-mlp --probe official --device cuda",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", nargs="?", default=None, help="run folder (or final.pt / ckpt-*.pt)")
    p.add_argument("--checkpoint", default=None, help="the same as RUN (final.pt, ckpt-*.pt or the run folder)")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="also draw the spectra to this .png or .pdf (the other format is written beside it)")
    p.add_argument("--spectra-only", action="store_true", help="skip kNN and probes (fast; for --plot)")
    p.add_argument("--dataset", default=None, choices=DATASETS, help="default: the training dataset")
    p.add_argument("--data-dir", default=None, help="default: the training --data-dir")
    p.add_argument("--out", default=None, help="folder for eval.json (default: the run folder)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    p.add_argument("--k", type=int, default=KNN_K, help="kNN neighbours (default 200)")
    p.add_argument("--temperature", type=float, default=KNN_T, help="kNN temperature (default 0.1)")
    p.add_argument(
        "--probe",
        default="fast",
        choices=("fast", "official"),
        help="fast: L-BFGS on centred features (default); official: also the official SGD linear "
        "evaluation with crop + flip (minutes on a CPU)",
    )
    p.add_argument("--probe-epochs", type=int, default=100, help="epochs of --probe official (default 100)")
    p.add_argument(
        "--max-train", type=int, default=None, help="use only the first N training images (default: all)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.run and args.checkpoint and args.run != args.checkpoint:
        raise UserError("give the run either as RUN or as --checkpoint, not both")
    target = args.run or args.checkpoint
    if target is None:
        raise UserError("which run? give a run folder (or final.pt / ckpt-*.pt), see --help")
    if not os.path.exists(target):
        raise UserError(f"run {target!r} not found")
    if args.k < 1:
        raise UserError(f"--k {args.k} must be at least 1")
    check_finite("--temperature", args.temperature, 1e-4, 100.0)
    if args.max_train is not None and args.max_train < 1:
        raise UserError(f"--max-train {args.max_train} must be at least 1 (and {MIN_PROBE_TRAIN} for the probes)")
    if args.max_train is not None and args.max_train < MIN_PROBE_TRAIN and not args.spectra_only:
        raise UserError(f"--max-train {args.max_train} is too few: the linear probe needs at least "
                        f"{MIN_PROBE_TRAIN} training images (it centres and scales by their spread), or --spectra-only")
    if args.probe_epochs < 1:
        raise UserError(f"--probe-epochs {args.probe_epochs} must be at least 1")
    check_device(args.device)
    out = args.out or (target if os.path.isdir(target) else os.path.dirname(target) or ".")
    check_out_dir(out)
    if args.plot is not None:
        name = os.path.basename(args.plot)
        if not name.strip() or name.startswith(".") or os.path.isdir(args.plot):
            raise UserError(f"--plot {args.plot!r} is not a file name: give one ending in .png or .pdf")
        if os.path.splitext(args.plot)[1].lower() not in (".png", ".pdf", ""):
            raise UserError(f"--plot {args.plot!r}: give a .png name or a .pdf name (the other is written beside it)")
        check_out_dir(os.path.dirname(os.path.abspath(args.plot)), "--plot")
    if args.max_train is not None:
        print(f"note: the probes use only the first {args.max_train} training images (--max-train)", file=sys.stderr)
    res = evaluate(
        target,
        args.dataset,
        args.data_dir,
        args.device,
        args.k,
        args.temperature,
        args.max_train,
        args.probe,
        args.probe_epochs,
        args.spectra_only,
        progress=not args.no_progress,
    )
    path = os.path.join(out, "eval.json")
    write_json(path, res)
    print(table(res))
    print(f"wrote {path}")
    if args.plot is not None:
        stem, ext = os.path.splitext(args.plot)
        print("wrote " + " and ".join(plot_spectra(res, stem + (ext or ".png"))))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
