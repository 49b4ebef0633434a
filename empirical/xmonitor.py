"""A collapse monitor for any contrastive training loop with a linear projector (Lemma 2, Theorems 1-3).

Plain functions on the representations r1, r2 of a fixed held-out set of augmented pairs (the same pairs at
every call) and the projector's linear layers; nothing here knows about a trainer, and nothing touches the
accelerator between calls: each call copies r1, r2 to the CPU once (one sync) and does the rest in float64
numpy, with X, the spectra and the alignment from ``theory`` (the one implementation of that maths).

The statement (Lemma 2, batch-mean loss). z = W r with W = W_L ... W_1 (no biases) and a loss of Eqn-2 form
(``paper``) or z.z'/tau (``dot``) on unnormalized z: whatever the backbone, -dL/dW = W X, X = X(r; W) from
``theory.covariance.contrastive_covariance``. With P_l = W_L ... W_{l+1} and Q_l = W_{l-1} ... W_1 (identity
when empty) the chain rule gives -dL/dW_l = P_l^T W X Q_l^T, so under gradient flow, for W_l = U S V^T,
Lemma 4 (sigma_i' = u_i^T W_l' v_i) gives

    d log sigma_i(W_l) / dt = u_i^T P_l^T W X Q_l^T v_i / sigma_i                       (``rate``)

For the last layer (P_L = I) this is v_i^T X(h) v_i with X(h) = Q_L X Q_L^T, the X of the layer's input
h = Q_L r (alpha depends on z only); for one layer it is d log sigma_i/dt = v_i^T X v_i. The end-to-end map
moves by W' = sum_l P_l W_l' Q_l, so d log sigma_i(W)/dt = sum_l c_li with

    c_li = u_i^T P_l P_l^T W X Q_l^T Q_l v_i / sigma_i                                   (``rate_by_layer``)

kept per layer so that per-layer step sizes (LARS) can be applied. Coupled weight decay lambda adds -lambda
to every layer's rate and -lambda to every c_li (the analysis adds it; it is not in these numbers).

``cosine`` (InfoNCE on L2-normalized z, symmetrized, as the official real-network loss): the gradient is
W X only to first order. We freeze every |z_i| at c = the RMS norm of z over both views and drop the tangent
projection (I - u u^T): then L(W) = dot-loss(W / c) and -dL/dW = W X_dot(r; W / c, tau) / c^2, which is what
is returned. How well that survives normalization is measured, not assumed: for ``cosine`` the rows also
carry ``rate_exact``, the same rates from the exact gradient of the normalized loss (``cosine_neg_grad``), so
that the error of the W X form and the error of the dynamics can be told apart.

X of a batch depends on the batch size N through alpha, so X is estimated as the mean of per-batch X_b over
``len(r1) // batch_size`` disjoint batches (use the training batch size); those X_b are the i.i.d. samples of
the three-outcome PSD test (``theory.covariance.psd_check``: "not psd", "psd" or "undetermined"; fewer than 4
batches leave it undetermined; a single batch of all the pairs is taken as exact, as it is for full-batch
training on those pairs). Its power grows with the number of batches: 32 or more are advised.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

from dimcollapse.io import atomic_path, jsonable
from theory.covariance import PSD_ALPHA, PSD_RTOL, contrastive_covariance, psd_check
from theory.losses import dot_loss
from theory.predict import adjacent_alignments
from theory.spectrum import COLLAPSE_RTOL, embedding_spectrum

LOSS_FORMS = ("paper", "dot", "cosine")


def to_numpy(a) -> np.ndarray:
    """float64 CPU copy of a torch tensor or array (the monitor's one host transfer per tensor)."""
    if hasattr(a, "detach"):
        a = a.detach().to("cpu").double().numpy()
    return np.asarray(a, dtype=np.float64)


def chain(weights: list[np.ndarray], start: int, stop: int, dim: int) -> np.ndarray:
    """W_{stop} ... W_{start+1} for 0-based layers start..stop-1 (identity of size ``dim`` when empty)."""
    out = np.eye(dim)
    for w in weights[start:stop]:
        out = w @ out
    return out


def contrastive_x(r1: np.ndarray, r2: np.ndarray, weight: np.ndarray, loss: str = "paper",
                  temperature: float = 0.1, symmetric: bool = False) -> tuple[np.ndarray, float | None]:
    """(X, c^2) for one batch of pairs: -dL/dW = W X (module doc); c^2 is the frozen squared norm for
    ``cosine`` (None otherwise). ``symmetric``: the loss is l(z1, z2)/2 + l(z2, z1)/2, so X is the mean of
    both orders (always the case for ``cosine``)."""
    if loss not in LOSS_FORMS:
        raise ValueError(f"loss must be one of {', '.join(LOSS_FORMS)}, got {loss!r}")
    scale, c2 = weight, None
    if loss == "cosine":
        z = np.concatenate([r1, r2]) @ weight.T
        c2 = float(np.mean(np.sum(z * z, axis=1)))
        scale, symmetric = weight / np.sqrt(c2), True
    form = "paper" if loss == "paper" else "dot"
    x = contrastive_covariance(r1, r2, scale, form, temperature)[0]
    if symmetric:
        x = 0.5 * (x + contrastive_covariance(r2, r1, scale, form, temperature)[0])
    return (x / c2 if c2 else x), c2


def cosine_neg_grad(r1: np.ndarray, r2: np.ndarray, weight: np.ndarray, temperature: float = 0.1) -> np.ndarray:
    """Exact -dL/dW for symmetrized InfoNCE on u = z / |z| (other-view negatives, as the official loss):
    theory's closed-form dot-loss gradients on u (``theory.losses.dot_loss``), through g_z = (I - u u^T) g_u / |z|.
    """
    z1, z2 = r1 @ weight.T, r2 @ weight.T
    n1, n2 = np.linalg.norm(z1, axis=1, keepdims=True), np.linalg.norm(z2, axis=1, keepdims=True)
    u1, u2 = z1 / n1, z2 / n2
    _, a1, a2 = dot_loss(u1, u2, temperature)
    _, b2, b1 = dot_loss(u2, u1, temperature)
    g1, g2 = 0.5 * (a1 + b1), 0.5 * (a2 + b2)
    g1 = (g1 - u1 * np.sum(u1 * g1, axis=1, keepdims=True)) / n1
    g2 = (g2 - u2 * np.sum(u2 * g2, axis=1, keepdims=True)) / n2
    return -(g1.T @ r1 + g2.T @ r2)


def growth_rates(weights: list[np.ndarray], neg_grad: np.ndarray) -> tuple[list[dict], dict]:
    """Per layer {sigma, rate, u, v, weight_norm, grad_norm} and end-to-end {sigma, rate, rate_by_layer}
    (module doc; layers ordered input side first) from N = -dL/dW of the end-to-end map (W X for the Lemma-2
    losses): -dL/dW_l = P_l^T N Q_l^T. ``grad_norm`` is that matrix's norm, the full-batch gradient's, from
    which a LARS trust ratio can be estimated."""
    d = neg_grad.shape[1]
    total = chain(weights, 0, len(weights), d)
    layers, contributions = [], []
    u_e, s_e, vt_e = np.linalg.svd(total, full_matrices=False)
    for ell, w in enumerate(weights):
        p = chain(weights, ell + 1, len(weights), w.shape[0])
        q = chain(weights, 0, ell, d)
        layer_grad = p.T @ neg_grad @ q.T
        u, s, vt = np.linalg.svd(w, full_matrices=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.einsum("ki,kj,ji->i", u, layer_grad, vt.T) / s
            flow = p @ layer_grad @ q  # layer l's share of W'
            contributions.append(np.einsum("ki,kj,ji->i", u_e, flow, vt_e.T) / s_e)
        layers.append({"sigma": s, "rate": rate, "u": u, "v": vt.T,
                       "weight_norm": float(np.linalg.norm(w)), "grad_norm": float(np.linalg.norm(layer_grad))})
    by_layer = np.array(contributions)
    return layers, {"sigma": s_e, "rate": by_layer.sum(axis=0), "rate_by_layer": by_layer, "v": vt_e.T}


@dataclass
class MonitorResult:
    """One monitor call. ``to_json()`` is one strict-JSON row; ``arrays()`` the matrices for a side file."""

    loss: str
    symmetric: bool
    temperature: float
    pairs: int
    batch_size: int
    x: np.ndarray  # (d, d) mean of the per-batch X_b
    x_eigenvalues: np.ndarray  # descending
    x_n_negative: int  # calibrated count (psd_check)
    x_is_psd: bool  # True only for the verdict "psd"
    x_verdict: str  # "not psd", "psd" or "undetermined" (theory.covariance.psd_check)
    x_detectable: float | None  # about the smallest |negative eigenvalue| these batches detect
    x_lower_bound: float | None  # 99 % lower bound on X's lowest eigenvalue (when nothing was significant)
    x_relative_negative: int  # eigenvalues below -rtol max|eig| (the cap of the count)
    x_n_significant: tuple[int, int] | None
    cosine_c2: float | None
    layers: list[dict]  # per layer (input side first): sigma, rate, weight_norm, grad_norm (+ u, v, kept off JSON)
    end_to_end: dict  # sigma, rate, rate_by_layer
    spectrum_z: dict
    spectrum_r: dict
    spectra_normalized: bool
    alignment: list[dict]  # per adjacent pair (lower, upper): score, chance, diagonal_score, surviving
    weights: list[np.ndarray] = field(repr=False, default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        row = {
            "loss": self.loss, "symmetric": self.symmetric, "temperature": self.temperature,
            "pairs": self.pairs, "batch_size": self.batch_size, "n_batches": self.pairs // self.batch_size,
            "x": {"eigenvalues": self.x_eigenvalues, "n_negative": self.x_n_negative, "is_psd": self.x_is_psd,
                  "verdict": self.x_verdict, "detectable": self.x_detectable, "lower_bound": self.x_lower_bound,
                  "relative_negative": self.x_relative_negative, "n_significant": self.x_n_significant,
                  "cosine_c2": self.cosine_c2},
            "layers": [{k: layer[k] for k in ("sigma", "rate", "rate_exact", "weight_norm", "grad_norm")
                        if k in layer} | {"shape": list(w.shape)}
                       for layer, w in zip(self.layers, self.weights, strict=True)],
            "end_to_end": {k: self.end_to_end[k] for k in ("sigma", "rate", "rate_by_layer",
                                                           "rate_exact_by_layer") if k in self.end_to_end},
            "spectrum_z": self.spectrum_z, "spectrum_r": self.spectrum_r,
            "spectra_normalized": self.spectra_normalized, "alignment": self.alignment,
            "monitor_seconds": self.seconds,
        }
        out = jsonable(row)
        json.dumps(out, allow_nan=False)  # strict JSON or fail here, not in a reader
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """X and every layer's weight (float32), for the early-warning analysis of ``empirical.bridge``."""
        out = {"x": self.x.astype(np.float32)}
        out.update({f"w{ell}": w.astype(np.float32) for ell, w in enumerate(self.weights)})
        return out


def _surviving(layer_lo: dict, layer_hi: dict, rtol: float = COLLAPSE_RTOL) -> int:
    """Modes scored by the alignment: those whose squared singular value is above rtol x the largest in both
    layers (collapsed modes have no defined direction)."""
    def alive(s: np.ndarray) -> int:
        return int(np.sum(s**2 > rtol * np.max(s**2))) if s.size and np.max(s) > 0 else 0

    return min(alive(layer_lo["sigma"]), alive(layer_hi["sigma"]))


def monitor(r1, r2, weights, loss: str = "paper", temperature: float = 0.1, batch_size: int | None = None,
            symmetric: bool = False, alpha: float = PSD_ALPHA, normalize_spectra: bool | None = None
            ) -> MonitorResult:
    """Everything the bridge reads at one training step (module doc).

    r1, r2: (N, d) representations of the two views of the held-out pairs (torch tensors or arrays);
    weights: the projector's linear weight (d_out, d) or a list of them, input side first (torch
    ``nn.Linear.weight`` convention); batch_size: pairs per X sample (default N // 32, at least 2: the PSD
    test's power grows with the number of batches, see docs/psd_test.md).
    ``normalize_spectra`` (default: only for ``cosine``) L2-normalizes before the spectra, as the official
    ``spectrum.py``.
    """
    start = time.perf_counter()
    r1, r2 = to_numpy(r1), to_numpy(r2)
    weights = [to_numpy(w) for w in (weights if isinstance(weights, list | tuple) else [weights])]
    if r1.shape != r2.shape or r1.ndim != 2:
        raise ValueError(f"r1 and r2 must be (N, d) of one shape, got {r1.shape} and {r2.shape}")
    if not weights or weights[0].shape[1] != r1.shape[1]:
        raise ValueError(f"the first layer must take {r1.shape[1]} inputs, got {[w.shape for w in weights]}")
    for lo, hi in zip(weights[:-1], weights[1:], strict=False):
        if hi.shape[1] != lo.shape[0]:
            raise ValueError(f"layers do not chain: {lo.shape} then {hi.shape}")
    n = len(r1)
    batch_size = batch_size or max(2, n // 32)
    if not 2 <= batch_size <= n:
        raise ValueError(f"batch_size must be between 2 and the {n} pairs, got {batch_size}")
    total = chain(weights, 0, len(weights), r1.shape[1])
    samples, c2s, exact = [], [], []
    for b in range(n // batch_size):
        part = slice(b * batch_size, (b + 1) * batch_size)
        xb, c2 = contrastive_x(r1[part], r2[part], total, loss, temperature, symmetric)
        samples.append(xb)
        c2s.append(c2)
        if loss == "cosine":
            exact.append(cosine_neg_grad(r1[part], r2[part], total, temperature))
    samples = np.stack(samples)
    x = samples.mean(axis=0)
    # one batch of all the pairs: for full-batch training on them X is exact, not a sample (the relative rule)
    check = psd_check(x, samples=samples if len(samples) > 1 else None, alpha=alpha)
    relative = int(np.sum(check.eigenvalues < -PSD_RTOL * np.max(np.abs(check.eigenvalues))))
    layers, e2e = growth_rates(weights, total @ x)
    if exact:  # cosine: the exact gradient's rates beside the first-order X ones
        ex_layers, ex_e2e = growth_rates(weights, np.mean(exact, axis=0))
        for layer, ex in zip(layers, ex_layers, strict=True):
            layer["rate_exact"] = ex["rate"]
        e2e["rate_exact_by_layer"] = ex_e2e["rate_by_layer"]
    normalize = loss == "cosine" if normalize_spectra is None else normalize_spectra
    both = np.concatenate([r1, r2])
    alignment = []
    for k, al in enumerate(adjacent_alignments(weights, [_surviving(lo, hi) for lo, hi in
                                                         zip(layers[:-1], layers[1:], strict=False)])):
        alignment.append({"pair": [k, k + 1], "score": al.score, "chance": al.chance, "chance_sd": al.chance_sd,
                          "shared_basis": al.shared_basis, "grouped_score": al.grouped_score,
                          "grouped_chance": al.grouped_chance, "diagonal_score": al.diagonal_score,
                          "surviving": al.surviving})
    return MonitorResult(
        loss=loss, symmetric=symmetric or loss == "cosine", temperature=temperature, pairs=n,
        batch_size=batch_size, x=x, x_eigenvalues=check.eigenvalues, x_n_negative=int(check.n_negative),
        x_is_psd=bool(check.is_psd), x_verdict=check.verdict, x_detectable=check.detectable,
        x_lower_bound=check.lower_bound, x_relative_negative=relative, x_n_significant=check.n_significant,
        cosine_c2=float(np.mean(c2s)) if loss == "cosine" else None, layers=layers, end_to_end=e2e,
        spectrum_z=embedding_spectrum(both @ total.T, normalize).to_json(),
        spectrum_r=embedding_spectrum(both, normalize).to_json(), spectra_normalized=normalize,
        alignment=alignment, weights=weights, seconds=time.perf_counter() - start,
    )


class MonitorLog:
    """``monitor.jsonl`` (one strict-JSON row per call) and ``monitor/step_XXXXXXXX.npz`` (X, weights) in a
    run folder. ``resume_step``: rows after it are dropped (the resumed run writes them again)."""

    def __init__(self, out_dir: str, resume_step: int | None = None) -> None:
        self.path = os.path.join(out_dir, "monitor.jsonl")
        self.arrays_dir = os.path.join(out_dir, "monitor")
        os.makedirs(self.arrays_dir, exist_ok=True)
        if resume_step is not None:
            # imported here, not above: the monitor runs without torch; a trainer has torch loaded anyway
            from empirical.checkpoint import truncate_log

            truncate_log(self.path, resume_step)  # also drops a row torn by a crash mid-write

    def write(self, step: int, result: MonitorResult, lr: float | None = None, **extra) -> dict:
        """Append the row {step, lr, **extra, **result.to_json(), arrays}; the npz first, atomically, so a
        row never points at a missing file. ``extra``: e.g. trust_ratio=[q per layer] when the optimizer logs
        it, lr_sum=sum of the rates since the previous row."""
        name = f"step_{step:08d}.npz"
        # a file object, not a name: np.savez would append .npz to the temporary name
        with atomic_path(os.path.join(self.arrays_dir, name)) as tmp, open(tmp, "wb") as f:
            np.savez(f, **result.arrays())
        row = {"step": int(step), "lr": lr, **jsonable(extra), **result.to_json(),
               "arrays": os.path.join("monitor", name)}
        with open(self.path, "a") as f:
            f.write(json.dumps(row, allow_nan=False) + "\n")
        return row


def _time_it(argv: list[str] | None = None) -> int:
    """``python -m empirical.xmonitor --dim D --pairs P --batch-size B --layers L``: seconds of one call on
    random data (the monitor's CPU cost at a given size)."""
    from dimcollapse.io import OneLineParser

    p = OneLineParser(prog="python -m empirical.xmonitor", description=_time_it.__doc__.split(":")[0])
    p.add_argument("--dim", type=int, default=128, help="representation width (tiny 128, resnet18 512)")
    p.add_argument("--out-dim", type=int, default=128, help="embedding width (default 128)")
    p.add_argument("--pairs", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--loss", default="paper", choices=LOSS_FORMS)
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    r1 = rng.standard_normal((a.pairs, a.dim))
    r2 = r1 + 0.5 * rng.standard_normal(r1.shape)
    ws = [rng.standard_normal((a.out_dim, a.dim)) / np.sqrt(a.dim)]
    ws += [rng.standard_normal((a.out_dim, a.out_dim)) / np.sqrt(a.out_dim) for _ in range(a.layers - 1)]
    res = monitor(r1, r2, ws, loss=a.loss, batch_size=a.batch_size)
    print(f"monitor: d={a.dim}, {a.pairs} pairs in batches of {a.batch_size}, {a.layers} layer(s), {a.loss}: "
          f"{res.seconds:.2f} s")
    return 0


if __name__ == "__main__":
    import sys

    from dimcollapse.io import run_cli

    sys.exit(run_cli(_time_it))
