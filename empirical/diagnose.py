"""Diagnose any model: its collapse against baselines, label-free quality scores, and what causes it.

    python -m empirical.diagnose RUN                      a run of empirical.train (its encoder, projector, recipe)
    python -m empirical.diagnose --features A.npy [B.npy] features you saved (one array, or two paired views)

    from empirical.diagnose import diagnose
    report = diagnose(encoder, inputs, [("crop", crop), ("jitter", jitter)], projector=head)
    print(report.text()); report.to_json()

Definitions (every number the report gives; docs/diagnose.md has the same with the reasons):

* Features. r = encoder(x) (the *representation*); z = projector(r) (the *embedding*, what the loss sees; z = r
  without a projector). Spectra, RankMe and alpha-ReQ use the clean inputs (no augmentation), the first
  ``pairs`` of them, through the model in eval mode. Views (for X and LiDAR) apply the named augmentations in
  order; each step draws from its own generator keyed by (seed, view, step name, chunk), so leaving a step out
  leaves every other step's draws unchanged, and each setting's views are drawn once and shared.
* Spectrum. The covariance C = (1/N) sum (f - fbar)(f - fbar)^T of the N feature vectors (centred, 1/N), its
  singular values (= its eigenvalues, C being PSD; = the squared singular values of the centred feature matrix
  over N), descending. With the ``info_nce`` loss each vector is L2-normalized first (the official protocol
  for real networks); for ``paper`` and ``dot`` the features are used as they are. Collapsed: a value at most
  1e-3 x the largest (``theory.spectrum.COLLAPSE_RTOL``: a standard deviation 1.5 decades below the largest).
* Baselines. The same count for an isotropic Gaussian sample of the same N x d (what finite N alone gives), and
  for the same architecture at random init: every submodule's ``reset_parameters()`` under ``seed`` (PyTorch's
  default init of each layer, not necessarily the architecture's own), when the encoder is an ``nn.Module``.
* RankMe (Garrido et al. 2023): exp of the entropy of p_k = s_k / sum s + 1e-7, s the singular values of the
  *uncentred* N x d feature matrix (``theory.spectrum.rankme``). k equal singular values give k.
* LiDAR (Thilak et al. 2023): each input is a class whose members are its q = 2 views. Within-class
  Sigma_w = (1/(nq)) sum_i sum_j (f_ij - mu_i)(f_ij - mu_i)^T + delta I, between-class Sigma_b = (1/n) sum_i
  (mu_i - mu)(mu_i - mu)^T; LiDAR = exp of the entropy of p_k = lambda_k / sum lambda + 1e-7, lambda the
  eigenvalues of Sigma_w^{-1/2} Sigma_b Sigma_w^{-1/2}. delta = 1e-4 x tr(Sigma_w) / d (the paper's 1e-4 made
  relative, so that the score does not depend on the features' scale). Same normalization as the spectra.
* alpha-ReQ (Agrawal et al. 2022): lambda_k ~ k^(-alpha), alpha minus the least-squares slope of log lambda_k on
  log k over the fitted index range k = 1 .. K (1-based), K the last value the collapse rule keeps (collapsed
  values are rounding, not a power law); at least 3 points.
* X. Theorem 1 for the last linear layer z = W h of the projector (h its input; W with an eval-mode
  BatchNorm1d after it folded in as diag(gamma / sqrt(var + eps)) W, the shift dropped); without a projector
  h = r and W = I (the loss on r). X of ``pairs // batch_size`` disjoint batches (``theory.covariance``), its
  three-outcome PSD test ``psd_check`` ("not psd" with ``n_negative`` significant directions, "psd",
  "undetermined"; family-wise error 0.01) and the smallest |negative eigenvalue| those batches detect.
  ``paper``: Eqn 2 with view 1 as the anchor; ``dot``: z.z'/tau with view 1 as the anchor; ``info_nce``
  (cosine, symmetrized): not of the W X form, so its first-order form is used, as empirical.xmonitor does:
  every |z| frozen at c, the RMS norm of z over both views of the batch, X = X_dot(h; W / c, tau) / c^2,
  symmetrized over the two orders.
* Attribution. Each collapsed direction u of z is taken to the layer's input, v = W^T u / |W^T u|. "strong
  augmentation": X is "not psd" and at least half of |v|^2 lies in its significantly negative subspace;
  "not strong augmentation": X was decided PSD there (the whole X "psd", or X restricted to the orthogonal
  complement of the negative subspace tested "psd"); else "undetermined". Each direction X predicts will collapse
  (its significantly negative subspace) is "strong augmentation" by Theorem 1, and is marked as already
  collapsed in z or not (half of it in the span of the collapsed directions' v).
* Augmentation effects. For each augmentation name, X's verdict and negative count with that step left out of
  both views, same inputs, seeds and weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dimcollapse.io import OneLineParser, UserError, atomic_path, check_finite, jsonable, run_cli, write_json
from theory.covariance import PSD_ALPHA, psd_check, x_batches
from theory.spectrum import COLLAPSE_RTOL, collapsed_mask, embedding_spectrum, singular_values

# empirical.losses.REGISTRY's losses that have an X form, named here without importing torch (a test ties them)
LOSSES = ("info_nce", "paper", "dot")
LIDAR_DELTA = 1e-4  # relative to tr(Sigma_w) / d
LIDAR_EPS = 1e-7
ATTRIBUTION_SHARE = 0.5
MIN_FIT_POINTS = 3
ABLATION_TABLE = os.path.join("results", "projector-ablation-mnist5k-cpu-10ep-corrected", "table.json")
RULE = f"covariance singular value <= {COLLAPSE_RTOL:g} x the largest"

Step = tuple[str, Callable]


# ---- label-free quality scores ---------------------------------------------------------------------------------


def _entropy_rank(values: np.ndarray, eps: float) -> float:
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, None)
    total = values.sum()
    if total <= 0:
        return 0.0
    p = values / total + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def lidar(views: np.ndarray, delta: float = LIDAR_DELTA, eps: float = LIDAR_EPS) -> dict:
    """LiDAR of features ``views`` (n classes, q members, d) (module doc): value, eigenvalues, delta used."""
    from scipy.linalg import eigh

    views = np.asarray(views, dtype=np.float64)
    if views.ndim != 3 or views.shape[1] < 2 or views.shape[0] < 2:
        raise ValueError(f"LiDAR needs (n >= 2 classes, q >= 2 members, d) features, got {views.shape}")
    n, q, d = views.shape
    mu = views.mean(axis=1)
    within = (views - mu[:, None]).reshape(n * q, d)
    sw = within.T @ within / (n * q)
    between = mu - mu.mean(axis=0)
    sb = between.T @ between / n
    scale = float(np.trace(sw)) / d
    absolute = delta * (scale if scale > 0 else 1.0)
    lam = eigh(sb, sw + absolute * np.eye(d), eigvals_only=True)[::-1]  # Sigma_w^-1/2 Sigma_b Sigma_w^-1/2
    return {"value": _entropy_rank(lam, eps), "eigenvalues": lam, "delta": absolute, "classes": n, "views": q}


def alpha_req(values: np.ndarray, fit_range: tuple[int, int] | None = None) -> dict:
    """alpha-ReQ of descending covariance eigenvalues (module doc): alpha, the 1-based inclusive fit range, R^2."""
    values = np.asarray(values, dtype=np.float64)
    if fit_range is None:
        kept = ~collapsed_mask(values) & (values > 0)
        fit_range = (1, int(np.max(np.nonzero(kept)[0])) + 1 if kept.any() else 0)
    lo, hi = fit_range
    if hi - lo + 1 < MIN_FIT_POINTS or lo < 1 or hi > len(values) or np.any(values[lo - 1 : hi] <= 0):
        return {"alpha": None, "fit_range": [lo, hi], "r2": None,
                "note": f"fewer than {MIN_FIT_POINTS} positive uncollapsed values to fit"}
    k = np.arange(lo, hi + 1, dtype=np.float64)
    x, y = np.log(k), np.log(values[lo - 1 : hi])
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    ss = float(np.sum((y - y.mean()) ** 2))
    return {"alpha": float(-slope), "fit_range": [lo, hi], "r2": 1.0 - float(np.sum(resid**2)) / ss if ss else 1.0}


def spectrum_report(f: np.ndarray, normalize: bool) -> dict:
    """Spectrum of features (N, d) with the collapse count, its rule, sample size, RankMe and alpha-ReQ."""
    s = embedding_spectrum(f, normalize)
    return {"values": s.singular_values, "n_collapsed": int(s.n_collapsed), "dim": int(f.shape[1]),
            "samples": int(f.shape[0]), "rule": RULE, "normalized": bool(normalize),
            "effective_rank": s.effective_rank, "rankme": s.rankme, "alpha_req": alpha_req(s.singular_values)}


# ---- the projector's last linear layer -------------------------------------------------------------------------


def split_projector(projector) -> tuple[Callable | None, np.ndarray, list[str]]:
    """(head r -> h, W of z = W h, notes) for a module whose last layer is ``nn.Linear``, optionally followed by
    ``BatchNorm1d`` (eval mode: its scale folded into W, its shift dropped) or ``Identity``."""
    import torch.nn as nn

    if isinstance(projector, nn.Linear):
        mods = [projector]
    elif isinstance(projector, nn.Sequential):
        mods = list(projector)
    else:
        raise ValueError("projector must be an nn.Linear or an nn.Sequential whose last layer is nn.Linear "
                         f"(optionally followed by BatchNorm1d), got {type(projector).__name__}")
    linear = [i for i, m in enumerate(mods) if isinstance(m, nn.Linear)]
    if not linear or any(not isinstance(m, nn.BatchNorm1d | nn.Identity) for m in mods[linear[-1] + 1 :]):
        raise ValueError("the projector's last layer must be nn.Linear (only BatchNorm1d or Identity may follow "
                         "it): Theorem 1 applies to a linear last layer")
    last = mods[linear[-1]]
    weight = last.weight.detach().double().cpu().numpy().copy()
    notes = []
    if last.bias is not None:
        notes.append("the last layer's bias is dropped from X (z = W h + b; exact for the paper loss)")
    for m in mods[linear[-1] + 1 :]:
        if isinstance(m, nn.BatchNorm1d):
            var = m.running_var.detach().double().cpu().numpy() if m.running_var is not None else 1.0
            scale = 1.0 / np.sqrt(var + m.eps)
            if m.weight is not None:
                scale = scale * m.weight.detach().double().cpu().numpy()
            weight = np.asarray(scale).reshape(-1, 1) * weight
            notes.append("BatchNorm1d after the last layer: eval-mode scale folded into W, shift dropped")
    head = nn.Sequential(*mods[: linear[-1]]) if linear[-1] else None
    return head, weight, notes


# ---- feature passes --------------------------------------------------------------------------------------------


def _as_tensor(inputs, limit: int):
    import torch

    if isinstance(inputs, torch.Tensor):
        return inputs[:limit]
    if isinstance(inputs, np.ndarray):
        return torch.as_tensor(inputs[:limit])
    parts, total = [], 0
    for batch in inputs:
        batch = torch.as_tensor(batch)
        parts.append(batch)
        total += len(batch)
        if total >= limit:
            break
    if not parts:
        raise ValueError("inputs is empty")
    return torch.cat(parts)[:limit]


def _key(seed: int, view: int, name: str, chunk: int) -> int:
    return (seed * 1_000_003 + view * 7919 + zlib.crc32(name.encode()) * 31 + chunk) % (2**63)


def _views_spec(augmentations) -> tuple[list[Step], list[Step]]:
    if (isinstance(augmentations, tuple) and len(augmentations) == 2
            and all(isinstance(v, list | tuple) for v in augmentations)
            and all(not v or (isinstance(v[0], tuple | list) and len(v[0]) == 2 and callable(v[0][1]))
                    for v in augmentations)):
        v1, v2 = augmentations
    else:
        v1 = v2 = augmentations
    for steps in (v1, v2):
        for step in steps:
            if not (isinstance(step, tuple | list) and len(step) == 2 and isinstance(step[0], str)
                    and callable(step[1])):
                raise ValueError("augmentations must be a list of (name, fn) pairs, or a pair of such lists")
    return list(v1), list(v2)


class _Passes:
    """Encoder (+ head) passes in chunks, no gradients, eval mode, one cache per (view, steps applied)."""

    def __init__(self, encoder, head, projector, inputs, batch_size: int, seed: int, device, bar):
        import torch

        self.torch, self.encoder, self.head, self.projector, self.inputs = torch, encoder, head, projector, inputs
        self.chunk, self.seed, self.device, self.bar = batch_size, seed, device, bar
        self.cache: dict = {}

    def features(self, x):
        torch = self.torch
        with torch.inference_mode():
            if self.device is not None:
                x = x.to(self.device)
            r = self.encoder(x)
            h = self.head(r) if self.head is not None else r
            z = self.projector(r) if self.projector is not None else r
            return tuple(t.double().cpu().numpy() for t in (r, h, z))

    def clean(self, encoder=None, head=None, projector=None) -> tuple[np.ndarray, ...]:
        saved = self.encoder, self.head, self.projector
        if encoder is not None:
            self.encoder, self.head, self.projector = encoder, head, projector
        try:
            out = [self.features(self.inputs[lo : lo + self.chunk]) for lo in range(0, len(self.inputs), self.chunk)]
        finally:
            self.encoder, self.head, self.projector = saved
        if self.bar is not None:
            self.bar.update(1)
        return tuple(np.concatenate(part) for part in zip(*out, strict=True))

    def view(self, view: int, steps: list[Step]) -> tuple[np.ndarray, ...]:
        """(r, h, z) of one view made by ``steps``."""
        key = (view, tuple(name for name, _ in steps))
        if key not in self.cache:
            out = []
            for c, lo in enumerate(range(0, len(self.inputs), self.chunk)):
                x = self.inputs[lo : lo + self.chunk]
                for name, fn in steps:
                    gen = self.torch.Generator().manual_seed(_key(self.seed, view, name, c))
                    x = fn(x, gen)
                out.append(self.features(x))
            self.cache[key] = tuple(np.concatenate(part) for part in zip(*out, strict=True))
            if self.bar is not None:
                self.bar.update(1)
        return self.cache[key]


def _reinit(module, seed: int):
    """A copy of ``module`` with every submodule's reset_parameters() under ``seed``; None if none has one."""
    import torch

    if module is None or not isinstance(module, torch.nn.Module):
        return None
    clone = copy.deepcopy(module)
    found = False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in clone.modules():
            if callable(getattr(m, "reset_parameters", None)):
                m.reset_parameters()
                found = True
            if callable(getattr(m, "reset_running_stats", None)):
                m.reset_running_stats()
    return clone.eval() if found else None


# ---- X, its verdict, attribution ---------------------------------------------------------------------------------


def x_samples(h1: np.ndarray, h2: np.ndarray, weight: np.ndarray, loss: str, temperature: float,
              batch_size: int) -> np.ndarray:
    """(B, d, d) X of B = N // batch_size disjoint batches of pairs (module doc: which X for which loss)."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if loss != "info_nce":
        return x_batches(h1, h2, weight, loss, temperature, batch_size)
    from empirical.xmonitor import contrastive_x

    count = len(h1) // batch_size
    if count < 1:
        raise ValueError(f"batch size must lie in [2, {len(h1)}] (the number of pairs), got {batch_size}")
    parts = [slice(b * batch_size, (b + 1) * batch_size) for b in range(count)]
    return np.stack([contrastive_x(h1[s], h2[s], weight, "cosine", temperature)[0] for s in parts])


def x_summary(samples: np.ndarray) -> tuple[dict, object]:
    check = psd_check(samples.mean(axis=0), samples=samples)
    out = {"verdict": check.verdict, "n_negative": int(check.n_negative), "detectable": check.detectable,
           "lower_bound": check.lower_bound, "delta": check.delta, "batches": int(check.samples),
           "samples_to_decide": check.samples_to_decide, "alpha": PSD_ALPHA, "eigenvalues": check.eigenvalues,
           "describe": check.describe()}
    return out, check


def _complement_psd(check, samples: np.ndarray) -> str:
    """Verdict of X restricted to the orthogonal complement of its significantly negative subspace."""
    rest = check.eigenvectors[:, ~check.negative]
    if rest.shape[1] == 0:
        return "psd"
    sub = np.einsum("ik,bij,jl->bkl", rest, samples, rest)
    return psd_check(sub.mean(axis=0), samples=sub).verdict


def _orthonormal(vectors: np.ndarray) -> np.ndarray:
    if vectors.size == 0:
        return vectors
    u, s, _ = np.linalg.svd(vectors, full_matrices=False)
    return u[:, s > 1e-10 * max(s.max(), 1e-300)]


def attribution(z: np.ndarray, normalize: bool, weight: np.ndarray, check, samples: np.ndarray) -> dict:
    """Cause of each collapsed direction of z and of each direction X predicts will collapse (module doc)."""
    z = np.asarray(z, dtype=np.float64)
    if normalize:
        z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    values = singular_values(z)
    mask = collapsed_mask(values)
    vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=True)[2]
    basis = check.basis
    complement = _complement_psd(check, samples) if check.verdict == "not psd" else None
    x_mean = samples.mean(axis=0)
    wnorm = float(np.linalg.norm(weight))
    rows, inputs = [], []
    for k in np.nonzero(mask)[0]:
        u = vt[k]
        v = weight.T @ u
        norm = float(np.linalg.norm(v))
        row = {"index": int(k), "variance": float(values[k])}
        if norm <= 1e-12 * max(wnorm, 1e-300):
            row.update(cause="undetermined", note="outside the last layer's range (no input direction)")
            rows.append(row)
            continue
        v = v / norm
        inputs.append(v)
        share = float(np.sum((basis.T @ v) ** 2)) if basis.size else 0.0
        row.update(negative_share=share, rayleigh=float(v @ x_mean @ v))
        if check.verdict == "not psd" and share >= ATTRIBUTION_SHARE:
            row["cause"] = "strong augmentation"
        elif check.verdict == "psd" or complement == "psd":
            row["cause"] = "not strong augmentation"
        else:
            row["cause"] = "undetermined"
        rows.append(row)
    span = _orthonormal(np.array(inputs).T) if inputs else np.zeros((weight.shape[1], 0))
    predicted = []
    for j in range(basis.shape[1]):
        v = basis[:, j]
        inside = float(np.sum((span.T @ v) ** 2)) if span.size else 0.0
        eig = float(check.eigenvalues[len(check.eigenvalues) - basis.shape[1] + j])
        predicted.append({"eigenvalue": eig, "cause": "strong augmentation",
                          "collapsed_in_z": inside >= ATTRIBUTION_SHARE, "share_in_collapsed": inside})
    counts = {c: sum(r["cause"] == c for r in rows)
              for c in ("strong augmentation", "not strong augmentation", "undetermined")}
    return {"collapsed_z": rows, "predicted": predicted, "counts": counts, "complement_verdict": complement,
            "share_threshold": ATTRIBUTION_SHARE}


# ---- the report ----------------------------------------------------------------------------------------------------


@dataclass
class DiagnoseReport:
    """Everything ``diagnose`` measured; ``to_json()`` is strict JSON, ``text()`` the words."""

    setup: dict
    spectrum_r: dict
    spectrum_z: dict
    baselines: dict
    rankme: dict
    lidar: dict | None
    alpha_req: dict
    x: dict | None
    attribution: dict | None
    augmentation_effects: list[dict] = field(default_factory=list)
    what_to_try: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        out = jsonable({k: getattr(self, k) for k in (
            "setup", "spectrum_r", "spectrum_z", "baselines", "rankme", "lidar", "alpha_req", "x", "attribution",
            "augmentation_effects", "what_to_try", "notes", "seconds")})
        json.dumps(out, allow_nan=False)
        return out

    def text(self) -> str:
        return report_text(self.to_json())


def _baselines(r: np.ndarray, z: np.ndarray, normalize: bool, seed: int, random_init: dict | None,
               reason: str | None) -> dict:
    rng = np.random.default_rng(seed)
    gauss = {}
    for name, f in (("r", r), ("z", z)):
        g = rng.standard_normal(f.shape)
        s = embedding_spectrum(g, normalize)
        gauss[name] = {"n_collapsed": int(s.n_collapsed), "dim": int(f.shape[1]), "samples": int(f.shape[0]),
                       "rankme": s.rankme}
    return {"gaussian": gauss, "random_init": random_init, "random_init_note": reason}


def _beyond(spec: dict, base: dict, space: str) -> int:
    """Collapsed dimensions beyond the larger baseline count."""
    counts = [base["gaussian"][space]["n_collapsed"]]
    if base.get("random_init"):
        counts.append(base["random_init"][space]["n_collapsed"])
    return spec["n_collapsed"] - max(counts)


def ablation_numbers(root: str | None = None) -> str | None:
    """This project's projector ablation (committed table), as one clause; None when the table is absent."""
    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        with open(os.path.join(root, ABLATION_TABLE)) as f:
            rows = json.load(f)["table"]
        table = {}
        for row in rows:  # the first complete row per projector (directclr's second is its r[:d0] probe)
            if not row.get("failed") and row.get("z_collapsed") is not None:
                table.setdefault(row["projector"], row)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    parts = []
    for name in ("mlp", "linear", "directclr", "none"):
        if name in table and table[name].get("linear_top1") is not None:
            row = table[name]
            parts.append(f"{name} {100 * row['linear_top1']:.1f}% linear top-1, r collapsed {row['r_collapsed']} "
                         f"of {row['r_dim']}, z {row['z_collapsed']} of {row['z_dim']}")
    return ("this project's projector ablation (tiny ResNet on mnist5k, 10 epochs, "
            f"{ABLATION_TABLE}): " + "; ".join(parts)) if parts else None


def what_to_try(rep: dict) -> list[str]:
    """Sentences from what was measured only (module doc of the report fields)."""
    out = []
    x, effects, base = rep.get("x"), rep.get("augmentation_effects") or [], rep["baselines"]
    beyond_z = _beyond(rep["spectrum_z"], base, "z")
    beyond_r = _beyond(rep["spectrum_r"], base, "r")
    if x is not None and x["verdict"] == "not psd":
        n = x["n_negative"]
        turns = [e for e in effects if e["verdict"] == "psd"]
        if turns:
            names = ", ".join(e["left_out"] for e in turns)
            out.append(f"Leaving out {names} turns X PSD ({n} significantly negative direction(s) -> none, "
                       "shown PSD): weaken or drop it; Theorem 1 then predicts no collapse from augmentation.")
        elif effects:
            low = min(e["n_negative"] for e in effects)
            best = [e["left_out"] for e in effects if e["n_negative"] == low]
            if low < n:
                which = best[0] if len(best) == 1 else " or ".join(best) + " (a tie)"
                out.append(f"Leaving out {which} removes the most negative directions of X ({n} -> {low}, "
                           f"X still not PSD): weaken {'it' if len(best) == 1 else 'one of them'} first.")
            else:
                out.append(f"No single augmentation left out lowers X's {n} negative direction(s): several steps "
                           "share them; weaken them together or reduce the overall strength.")
    elif x is not None and x["verdict"] == "undetermined" and x.get("samples_to_decide"):
        out.append(f"X's test is undetermined with {x['batches']} batches; about {x['samples_to_decide']} batches "
                   "would decide (raise --pairs, or lower --batch-size).")
    att = rep.get("attribution") or {}
    unexplained = sum(att.get("counts", {}).get(c, 0) for c in ("not strong augmentation", "undetermined"))
    if beyond_z > 0 and unexplained:
        clause = ablation_numbers()
        out.append(f"{unexplained} collapsed direction(s) of z are not explained by X (z has "
                   f"{rep['spectrum_z']['n_collapsed']} collapsed, {beyond_z} beyond the baselines): the knobs "
                   "left are the projector's depth (implicit regularization, Theorem 3) and DirectCLR (no "
                   "trainable projector)" + (f"; {clause}." if clause else "."))
    if beyond_r > 0 and rep["spectrum_r"] is not rep["spectrum_z"] and not (beyond_z > 0 and unexplained):
        clause = ablation_numbers()
        out.append(f"r has {rep['spectrum_r']['n_collapsed']} of {rep['spectrum_r']['dim']} collapsed, {beyond_r} "
                   "beyond the baselines, which the last layer's X does not speak to: the knobs for r are the "
                   "projector's depth and DirectCLR (the loss on a sub-vector of r)"
                   + (f"; {clause}." if clause else "."))
    if beyond_z <= 0 and beyond_r <= 0:
        rz, rr = rep["spectrum_z"], rep["spectrum_r"]
        out.append(f"No collapse beyond the baselines: z has {rz['n_collapsed']} of {rz['dim']} collapsed and r "
                   f"{rr['n_collapsed']} of {rr['dim']}, no more than an isotropic Gaussian sample of the same size"
                   + (" or the model at random init." if base.get("random_init") else "."))
    return out


def diagnose(
    encoder,
    inputs,
    augmentations,
    projector=None,
    loss: str = "info_nce",
    temperature: float = 0.1,
    batch_size: int = 256,
    pairs: int = 4096,
    seed: int = 0,
    device=None,
    progress: bool = False,
) -> DiagnoseReport:
    """Diagnose ``encoder`` (+ ``projector``) on ``inputs`` under the named ``augmentations`` (module doc).

    encoder: a torch module or callable, batch -> r (N, d). inputs: a tensor (or array) of inputs, or an iterable
    of batches; the first ``pairs`` are used. augmentations: [(name, fn(batch, generator) -> batch), ...] applied
    in order to make each view, or (view1_steps, view2_steps) for an asymmetric recipe. projector: None (z = r) or
    a module whose last layer is nn.Linear (X is taken for that layer's input). loss: info_nce, paper or dot.
    """
    import torch

    start = time.perf_counter()
    _check_loss_and_batch(loss, batch_size)
    view1, view2 = _views_spec(augmentations)
    names = list(dict.fromkeys([n for n, _ in view1] + [n for n, _ in view2]))
    x_in, notes = _first_inputs(inputs, pairs, batch_size)
    n = len(x_in)
    if device is not None:
        device = torch.device(device)
    modules = [m for m in (encoder, projector) if isinstance(m, torch.nn.Module)]
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
        if device is not None:
            m.to(device)
    head, weight, bar = None, None, None
    try:  # the caller's modules get their train/eval mode back whatever fails
        if projector is not None:
            head, weight, pnotes = split_projector(projector)
            notes += pnotes
        total_passes = 2 + 1 + 2 * len(names) + 1  # clean, random init, the two views, each left out, the bar's end
        bar = _progress_bar(total_passes) if progress else None
        passes = _Passes(encoder, head, projector, x_in, int(batch_size), int(seed), device, bar)
        r, h, z = passes.clean()
        if weight is None:
            weight = np.eye(h.shape[1])
        normalize = loss == "info_nce"
        spec_r, spec_z = spectrum_report(r, normalize), spectrum_report(z, normalize)
        random_init, reason = _random_init_spectra(passes, encoder, projector, seed, normalize)
        baselines = _baselines(r, z, normalize, seed, random_init, reason)
        (r1, h1, z1), (r2, h2, z2) = passes.view(1, view1), passes.view(2, view2)
        lid = _view_lidar(r1, r2, z1, z2, normalize)
        samples = x_samples(h1, h2, weight, loss, temperature, int(batch_size))
        x, check = x_summary(samples)
        x.update(_x_setting(projector is not None, h.shape[1], loss))
        att = attribution(z, normalize, weight, check, samples)
        effects = _leave_one_out(passes, names, view1, view2, weight, loss, temperature, int(batch_size))
        if bar is not None:
            bar.update(max(0, total_passes - bar.n))
    finally:
        if bar is not None:
            bar.close()
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)
    report = DiagnoseReport(
        setup={"loss": loss, "temperature": float(temperature), "batch_size": int(batch_size), "pairs": int(n),
               "seed": int(seed), "augmentations": {"view1": [s[0] for s in view1], "view2": [s[0] for s in view2]},
               "projector": None if projector is None else type(projector).__name__,
               "weight_shape": list(weight.shape)},
        spectrum_r=spec_r, spectrum_z=spec_z, baselines=baselines,
        rankme={"z": spec_z["rankme"], "r": spec_r["rankme"]}, lidar=lid,
        alpha_req={"z": spec_z["alpha_req"], "r": spec_r["alpha_req"]}, x=x, attribution=att,
        augmentation_effects=effects, notes=notes)
    report.what_to_try = what_to_try(report.to_json())
    report.seconds = time.perf_counter() - start
    return report


def _check_loss_and_batch(loss: str, batch_size: int) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)} (X is not defined for {loss!r}; "
                         "info_nce uses its first-order form)")
    if not 2 <= int(batch_size):
        raise ValueError(f"batch_size must be at least 2, got {batch_size}")


def _first_inputs(inputs, pairs: int, batch_size: int):
    """The first ``pairs`` inputs as one tensor, and a note when there are fewer."""
    x_in = _as_tensor(inputs, int(pairs))
    n = len(x_in)
    if n // batch_size < 1 or n < 2:
        raise ValueError(f"{n} inputs make no batch of {batch_size} pairs")
    return x_in, [f"only {n} inputs: {n} pairs instead of {pairs}"] if n < pairs else []


def _progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="diagnose (feature passes)", dynamic_ncols=True, file=sys.stderr)


def _random_init_spectra(passes: _Passes, encoder, projector, seed: int,
                         normalize: bool) -> tuple[dict | None, str | None]:
    """The spectra of r and z with the model re-initialised under ``seed`` (the random-init baseline), or None
    and why not; one feature pass either way."""
    import torch

    enc0, proj0 = _reinit(encoder, seed), _reinit(projector, seed)
    random_init, reason = None, None
    if enc0 is None and not isinstance(encoder, torch.nn.Module):
        reason = "the encoder is not an nn.Module: no random-init baseline"
    elif enc0 is None and proj0 is None:
        reason = "nothing to re-initialise (no layer has reset_parameters)"
    else:
        head0 = split_projector(proj0)[0] if proj0 is not None else None
        r0, _, z0 = passes.clean(enc0 or encoder, head0, proj0)
        random_init = {"r": spectrum_report(r0, normalize), "z": spectrum_report(z0, normalize)}
        if enc0 is None:
            reason = "the encoder has no parameters to re-initialise: only the projector was"
    if passes.bar is not None and random_init is None:
        passes.bar.update(1)  # the pass not taken
    return random_init, reason


def _unit_rows(a: np.ndarray) -> np.ndarray:
    """a_i / |a_i| (rows of norm below 1e-12 scaled by 1e12 instead)."""
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def _view_lidar(r1: np.ndarray, r2: np.ndarray, z1: np.ndarray, z2: np.ndarray, normalize: bool) -> dict:
    """LiDAR of z and of r, the classes the inputs and their members the two views (on the sphere for
    info_nce)."""
    if normalize:
        r1, r2, z1, z2 = (_unit_rows(a) for a in (r1, r2, z1, z2))
    return {"z": lidar(np.stack([z1, z2], axis=1)), "r": lidar(np.stack([r1, r2], axis=1)),
            "note": "classes = inputs, members = their 2 views"}


def _x_setting(has_projector: bool, dim: int, loss: str) -> dict:
    """Where X lives and which form of the loss it is taken for."""
    return {
        "space": "input of the projector's last linear layer" if has_projector else "r (W = I)",
        "dim": int(dim),
        "loss_form": {"info_nce": "dot form on z / c, c = RMS norm of z (first order), symmetrized",
                      "paper": "Eqn 2, view 1 as the anchor", "dot": "z.z'/tau, view 1 as the anchor"}[loss],
    }


def _leave_one_out(passes: _Passes, names: list[str], view1: list[Step], view2: list[Step], weight: np.ndarray,
                   loss: str, temperature: float, batch_size: int) -> list[dict]:
    """X's verdict with each named augmentation left out of both views (two feature passes each)."""
    effects = []
    for name in names:
        s1 = [s for s in view1 if s[0] != name]
        s2 = [s for s in view2 if s[0] != name]
        g1, g2 = passes.view(1, s1)[1], passes.view(2, s2)[1]
        e, _ = x_summary(x_samples(g1, g2, weight, loss, temperature, batch_size))
        effects.append({"left_out": name, "verdict": e["verdict"], "n_negative": e["n_negative"],
                        "detectable": e["detectable"], "eigenvalues": e["eigenvalues"]})
    return effects


def diagnose_features(a: np.ndarray, b: np.ndarray | None = None, loss: str = "info_nce", temperature: float = 0.1,
                      batch_size: int = 256, seed: int = 0) -> DiagnoseReport:
    """The report for saved features: A alone (spectra, RankMe, alpha-ReQ, the Gaussian baseline), or paired views
    A, B (also LiDAR and X with W = I, the loss on the features; no leave-one-out)."""
    start = time.perf_counter()
    a = np.asarray(a, dtype=np.float64)
    normalize = loss == "info_nce"
    spec = spectrum_report(a, normalize)
    base = _baselines(a, a, normalize, seed, None, "saved features: no model to re-initialise")
    lid = x = att = None
    notes = ["z = r = the saved features (no projector)"]
    if b is not None:
        b = np.asarray(b, dtype=np.float64)
        fa, fb = a, b
        if normalize:
            fa, fb = _unit_rows(a), _unit_rows(b)
        lid = {"z": lidar(np.stack([fa, fb], axis=1)), "note": "classes = rows, members = A and B"}
        samples = x_samples(a, b, np.eye(a.shape[1]), loss, temperature, batch_size)
        x, check = x_summary(samples)
        x["space"], x["dim"] = "the features (W = I)", int(a.shape[1])
        att = attribution(a, normalize, np.eye(a.shape[1]), check, samples)
    report = DiagnoseReport(
        setup={"loss": loss, "temperature": float(temperature), "batch_size": int(batch_size),
               "pairs": int(len(a)), "seed": int(seed), "augmentations": None, "projector": None},
        spectrum_r=spec, spectrum_z=spec, baselines=base, rankme={"z": spec["rankme"]}, lidar=lid,
        alpha_req={"z": spec["alpha_req"]}, x=x, attribution=att, notes=notes)
    report.what_to_try = what_to_try(report.to_json())
    report.seconds = time.perf_counter() - start
    return report


# ---- text and figure ---------------------------------------------------------------------------------------------


def _fmt(v, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def report_text(rep: dict) -> str:
    s = rep["setup"]
    lines = [f"diagnose: {s['pairs']} pairs, loss {s['loss']} (temperature {s['temperature']:g}), "
             f"batches of {s['batch_size']}, seed {s['seed']}"]
    base = rep["baselines"]
    spaces = [("z", rep["spectrum_z"]), ("r", rep["spectrum_r"])] if s.get("projector") or s.get("augmentations") \
        else [("z", rep["spectrum_z"])]
    lines.append(f"collapsed dimensions ({RULE}, N = {rep['spectrum_z']['samples']}"
                 f"{', L2-normalized' if rep['spectrum_z']['normalized'] else ''}):")
    for name, spec in spaces:
        ri = base.get("random_init")
        rit = f", random init {ri[name]['n_collapsed']}" if ri else ""
        gauss = base["gaussian"][name]
        lines.append(f"  {name}: {spec['n_collapsed']} of {spec['dim']} (Gaussian {gauss['n_collapsed']}{rit})   "
                     f"RankMe {spec['rankme']:.1f} (Gaussian {gauss['rankme']:.1f})   "
                     f"alpha-ReQ {_fmt(spec['alpha_req']['alpha'])} (fit k = {spec['alpha_req']['fit_range'][0]}"
                     f"..{spec['alpha_req']['fit_range'][1]})")
    if base.get("random_init_note"):
        lines.append(f"  ({base['random_init_note']})")
    if rep.get("lidar"):
        lid = rep["lidar"]
        lines.append("LiDAR: " + ", ".join(f"{k} {lid[k]['value']:.1f}" for k in ("z", "r") if k in lid))
    x = rep.get("x")
    if x:
        lines.append(f"X ({x['space']}, {x['dim']}-d, {x['loss_form'] if 'loss_form' in x else s['loss']}): "
                     f"{x['describe']}")
    att = rep.get("attribution")
    if att:
        c = att["counts"]
        lines.append(f"attribution of the {len(att['collapsed_z'])} collapsed direction(s) of z: "
                     f"{c['strong augmentation']} strong augmentation, {c['not strong augmentation']} not strong "
                     f"augmentation, {c['undetermined']} undetermined; X predicts {len(att['predicted'])} more to "
                     f"collapse ({sum(p['collapsed_in_z'] for p in att['predicted'])} already collapsed in z)")
    if rep.get("augmentation_effects"):
        lines.append("leave one out (X without that augmentation):")
        for e in rep["augmentation_effects"]:
            lines.append(f"  {e['left_out']:<12} {e['verdict']:<13} {e['n_negative']} negative")
    for note in rep.get("notes") or []:
        lines.append(f"note: {note}")
    if rep.get("what_to_try"):
        lines.append("what to try:")
        lines += [f"  - {t}" for t in rep["what_to_try"]]
    return "\n".join(lines)


def plot_report(rep: dict, path: str) -> list[str]:
    """Spectra with baselines, X's eigenvalues with the decision band, the leave-one-out bars: PNG and PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    base = rep["baselines"]
    for name, color in (("z", "C0"), ("r", "C1")):
        spec = rep["spectrum_z" if name == "z" else "spectrum_r"]
        vals = np.asarray(spec["values"], dtype=float)
        top = vals.max() if vals.size and vals.max() > 0 else 1.0
        ax.plot(np.arange(1, len(vals) + 1), np.log10(np.maximum(vals / top, 1e-18)), color=color, label=f"{name}")
        ri = base.get("random_init")
        if ri and ri[name].get("values") is not None:
            v0 = np.asarray(ri[name]["values"], dtype=float)
            ax.plot(np.arange(1, len(v0) + 1), np.log10(np.maximum(v0 / max(v0.max(), 1e-300), 1e-18)),
                    color=color, ls=":", label=f"{name} at random init")
        if rep["spectrum_z"] is rep["spectrum_r"]:
            break
    ax.axhline(np.log10(COLLAPSE_RTOL), color="k", lw=0.8, ls="--", label="collapse rule")
    ax.set(xlabel="index k", ylabel="log10 (value / largest)", title="spectra (floor 1e-18)")
    ax.legend(fontsize=7)
    ax = axes[1]
    x = rep.get("x")
    if x:
        eig = np.asarray(x["eigenvalues"], dtype=float)
        k = np.arange(1, len(eig) + 1)
        neg = np.zeros(len(eig), bool)
        if x["n_negative"]:
            neg[-x["n_negative"] :] = True
        ax.scatter(k[~neg], eig[~neg], s=10, color="C0", label="X eigenvalues")
        ax.scatter(k[neg], eig[neg], s=14, color="C3", label="significantly negative")
        if x.get("detectable"):
            ax.axhspan(-x["detectable"], 0, color="0.85", label="not detectable")
        ax.axhline(-x["delta"], color="k", lw=0.8, ls="--", label="-delta (psd)")
        ax.set(title=f"X: {x['verdict']} ({x['n_negative']} negative)")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no X (one view)", ha="center", transform=ax.transAxes)
    ax.set(xlabel="index")
    ax = axes[2]
    effects = rep.get("augmentation_effects") or []
    if effects:
        colors = {"not psd": "C3", "psd": "C2", "undetermined": "0.6"}
        names = [e["left_out"] for e in effects]
        ax.bar(range(len(effects)), [e["n_negative"] for e in effects],
               color=[colors[e["verdict"]] for e in effects])
        if x:
            ax.axhline(x["n_negative"], color="k", lw=0.8, ls="--", label="all augmentations")
            ax.legend(fontsize=7)
        ax.set_xticks(range(len(effects)), names, rotation=30, fontsize=8)
        ax.set(ylabel="negative directions of X", title="leave one out (red not psd, green psd)")
    else:
        ax.text(0.5, 0.5, "no leave-one-out", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    stem = os.path.splitext(path)[0]
    out = []
    for ext in (".png", ".pdf"):
        meta = {"Software": None} if ext == ".png" else {"Creator": None, "Producer": None, "CreationDate": None}
        with atomic_path(stem + ext) as tmp:
            fig.savefig(tmp, format=ext[1:], dpi=110, metadata=meta)
        out.append(stem + ext)
    plt.close(fig)
    return out


# ---- this project's runs: the recipe as named steps ----------------------------------------------------------------


def recipe_steps(name: str, strength: float, size: int) -> tuple[list[Step], list[Step]]:
    """The run's augmentation recipe (empirical.augment) as named steps per view: crop (random resized, bicubic),
    flip, jitter, grayscale, blur, solarize; a step with probability 0 in a view is left out of that view.
    Inputs are float images in [0, 1]; each step draws its per-sample parameters from its own generator."""
    import torch

    from empirical import augment as A

    recipes = A.recipe(name, strength, size)

    def params(rec, x, gen):
        return A.sample_params(rec, len(x), gen)

    def steps(rec) -> list[Step]:
        def crop(x, gen):
            p = params(rec, x, gen)
            p["flip"] = torch.zeros_like(p["flip"])
            return A._resized_crop(x, A.pack(p, x.shape[-2], x.shape[-1], True).to(x.dtype), size)

        def flip(x, gen):
            on = torch.rand(len(x), generator=gen, dtype=torch.float64) < rec.p_flip
            return torch.where(on.view(-1, 1, 1, 1), x.flip(-1), x)

        def jitter(x, gen):
            return A._jitter(x, A.pack(params(rec, x, gen), x.shape[-2], x.shape[-1], False).to(x.dtype))

        def gray(x, gen):
            on = torch.rand(len(x), generator=gen, dtype=torch.float64) < rec.p_gray
            return torch.where(on.view(-1, 1, 1, 1), A._gray(x).expand_as(x), x)

        def blur(x, gen):
            p = params(rec, x, gen)
            sigma = torch.where(p["blur"], p["sigma"], torch.zeros_like(p["sigma"]))
            return A._blur(x, sigma.to(x.dtype))

        def solarize(x, gen):
            on = (torch.rand(len(x), generator=gen, dtype=torch.float64) < rec.p_solarize).view(-1, 1, 1, 1)
            return torch.where(on & (x >= A.SOLARIZE_THRESHOLD), 1 - x, x)

        out = [("crop", crop), ("flip", flip)]
        out += [("jitter", jitter)] if rec.p_jitter > 0 and any(rec.jitter) else []
        out += [("grayscale", gray)] if rec.p_gray > 0 else []
        out += [("blur", blur)] if rec.p_blur > 0 else []
        out += [("solarize", solarize)] if rec.p_solarize > 0 else []
        return out

    return steps(recipes[0]), steps(recipes[1])


def _run_model(model):
    """(encoder on [0, 1] images, projector or None) of an SSLModel: the run's projector as a linear last layer."""
    import torch
    import torch.nn as nn

    from empirical import models as M
    from empirical.augment import normalize_images

    class Encoder(nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

        def forward(self, x):
            return self.backbone(normalize_images(x).contiguous(memory_format=torch.channels_last))

    proj = model.projector
    if isinstance(proj, nn.Identity | M.RandomSubset):
        head = None  # random-subset: the whole r in eval mode
    elif isinstance(proj, nn.Linear | nn.Sequential):
        head = proj
    else:
        weight = {M.Diagonal: lambda p: torch.diag(p.weight.detach()),
                  M.FixedLowRank: lambda p: p.matrix.detach().float(),
                  M.Slice: lambda p: torch.eye(model.width)[: p.d0]}[type(proj)](proj)
        head = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            head.weight.copy_(weight)
    return Encoder(model.backbone.to(memory_format=torch.channels_last)), head


# ---- command line ------------------------------------------------------------------------------------------------

HELP_DEFINITIONS = """definitions (docs/diagnose.md):
  spectra     covariance C = (1/N) sum (f - fbar)(f - fbar)^T of the clean inputs' features (centred), its
              singular values (= eigenvalues; squared singular values of the centred matrix / N); features
              L2-normalized first for info_nce. Collapsed: value <= 1e-3 x the largest. r = backbone output,
              z = projector output.
  baselines   the same count for an isotropic Gaussian sample of the same N x d, and for the architecture at
              random init (each layer's reset_parameters() under --seed).
  RankMe      exp entropy of the normalized singular values (+1e-7) of the UNcentred feature matrix.
  LiDAR       classes = inputs, members = their 2 views; exp entropy of the eigenvalues of
              Sw^-1/2 Sb Sw^-1/2, delta = 1e-4 tr(Sw)/d added to Sw.
  alpha-ReQ   minus the slope of log(value_k) on log k, k = 1 .. the last uncollapsed value.
  X           Theorem 1 for the projector's last linear layer (its input; eval-mode BatchNorm1d after it
              folded): X of --pairs // --batch-size disjoint batches, three-outcome PSD test (error 0.01).
              info_nce: first-order dot form on z / (RMS norm of z), symmetrized; paper / dot: view 1 anchors.
  attribution a collapsed direction of z (taken to the layer's input) is "strong augmentation" when half of
              it lies in X's significantly negative subspace, "not strong augmentation" when X was shown PSD
              there, else "undetermined".
  leave one out  X's verdict with each named augmentation removed from both views (same inputs and seeds).
exit status: 0 done, 2 bad input (one line on stderr)."""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m empirical.diagnose",
        description="Diagnose a model's dimensional collapse: spectra against baselines, RankMe, LiDAR, alpha-ReQ, "
        "the X verdict of its last linear layer, what causes each collapsed direction, and which augmentation "
        "drives it. Writes diagnose.json, diagnose.png and diagnose.pdf.",
        epilog=HELP_DEFINITIONS + "\nexamples:\n  python -m empirical.diagnose runs/experiments/augment-seed0/mlp\n"
        "  python -m empirical.diagnose --features view1.npy view2.npy --loss dot --out diag",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", nargs="?", default=None, help="a run folder of empirical.train (or its final.pt / ckpt-*.pt)")
    p.add_argument("--features", nargs="+", metavar="NPY", default=None,
                   help="instead of RUN: A.npy (N, d) features, or A.npy B.npy two paired views (row i of each)")
    p.add_argument("--loss", default=None, choices=LOSSES,
                   help="loss whose X is tested (default: the run's loss; info_nce for --features)")
    p.add_argument("--temperature", type=float, default=None,
                   help="loss temperature (default: the run's; 0.1 for --features)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="pairs per X batch (default: the run's training batch size; 256 for --features)")
    p.add_argument("--pairs", type=int, default=4096, help="inputs (pairs of views) used (default 4096)")
    p.add_argument("--split", default="both", choices=("train", "test", "both"),
                   help="RUN: images from the train split, the test split or both, shuffled by --seed (default both)")
    p.add_argument("--seed", type=int, default=0, help="seeds the views, the image order and the baselines (default 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch (default 1: on a shared 2-core machine one thread ran the passes "
                   "4x faster than two)")
    p.add_argument("--out", default=None,
                   help="folder for diagnose.json/.png/.pdf (default: the run folder, or the folder of A.npy)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG/PDF panel")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _load_npy(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise UserError(f"features file {path!r} not found")
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise UserError(f"cannot read {path!r} as a .npy array ({type(e).__name__})") from None
    if a.ndim != 2 or a.shape[0] < 2 or a.shape[1] < 1 or not np.issubdtype(a.dtype, np.number):
        raise UserError(f"{path!r} must hold a numeric (N >= 2, d) array, got shape {a.shape} of {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise UserError(f"{path!r} contains NaN or infinite values")
    return a.astype(np.float64)


def _relative(path: str) -> str:
    from empirical.evaluate import portable_path

    return portable_path(path)


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.run is None) == (args.features is None):
        raise UserError("give either RUN or --features A.npy [B.npy], see --help")
    if args.features is not None and len(args.features) > 2:
        raise UserError(f"--features takes one or two .npy files, got {len(args.features)}")
    if args.threads < 1:
        raise UserError(f"--threads {args.threads} must be at least 1")
    if args.pairs < 2:
        raise UserError(f"--pairs {args.pairs} must be at least 2")
    if args.batch_size is not None and args.batch_size < 2:
        raise UserError(f"--batch-size {args.batch_size} must be at least 2")
    if args.temperature is not None:
        check_finite("--temperature", args.temperature, 1e-4, 100.0)
    from empirical.config import check_device, check_out_dir

    check_device(args.device)
    progress = not args.no_progress
    if args.features is not None:
        a = _load_npy(args.features[0])
        b = _load_npy(args.features[1]) if len(args.features) == 2 else None
        if b is not None and b.shape != a.shape:
            raise UserError(f"the two views must have one shape, got {a.shape} and {b.shape}")
        batch = args.batch_size or 256
        if b is not None and batch > len(a):
            raise UserError(f"--batch-size {batch} is more than the {len(a)} pairs")
        out = args.out or os.path.dirname(os.path.abspath(args.features[0]))
        check_out_dir(out)
        rep = diagnose_features(a, b, args.loss or "info_nce", args.temperature or 0.1, batch, args.seed)
        source = {"features": [_relative(f) for f in args.features]}
    else:
        import torch

        from empirical.evaluate import load_split, load_trained

        if not os.path.exists(args.run):
            raise UserError(f"run {args.run!r} not found")
        model, config = load_trained(args.run, args.device)
        loss = args.loss or config.get("loss", "info_nce")
        if loss not in LOSSES:
            raise UserError(f"the run's loss {loss!r} has no X (nt_xent also contrasts a view with its own "
                            "batch); pass --loss info_nce for its first-order form")
        batch = args.batch_size or int(config.get("batch_size", 256))
        temperature = args.temperature if args.temperature is not None else float(config.get("temperature", 0.1))
        parts = [load_split(config, s)[0] for s in (("train", "test") if args.split == "both" else (args.split,))]
        images = torch.cat(parts)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[: args.pairs]
        images = images[order].float() / 255
        if batch > len(images):
            raise UserError(f"--batch-size {batch} is more than the {len(images)} images")
        out = args.out or (args.run if os.path.isdir(args.run) else os.path.dirname(args.run) or ".")
        check_out_dir(out)
        encoder, projector = _run_model(model)
        steps = recipe_steps(config["augment"], float(config.get("augment_strength", 1.0)), config["image_size"])
        torch.set_num_threads(args.threads)
        rep = diagnose(encoder, images, steps, projector, loss, temperature, batch, args.pairs, args.seed,
                       args.device, progress=progress)
        source = {"run": _relative(getattr(model, "loaded_from", args.run)), "projector": config["projector"],
                  "recipe": f"{config['augment']} x {config.get('augment_strength', 1.0):g}",
                  "split": args.split}
    rep.setup["source"] = source
    data = rep.to_json()
    print(report_text(data))
    path = os.path.join(out, "diagnose.json")
    written = [path]
    if not args.no_plot:
        written += plot_report(data, os.path.join(out, "diagnose.png"))
        data["figures"] = [_relative(f) for f in written[1:]]
    write_json(path, data)
    print(f"wrote {', '.join(written)} ({rep.seconds:.1f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
