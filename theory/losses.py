"""InfoNCE forms with closed-form embedding gradients (paper Sec. 4.1, Eqn 2; Lemma 1, Eqn 4).

Every function takes the embeddings of the two views, ``z`` and ``z_aug``, with shape (..., N, d)
(leading axes are independent configurations, for batched sweeps) and returns
``(loss, g_z, g_z_aug)``: the loss averaged over the batch, shape (...), and its gradients with respect to
``z`` and ``z_aug``. The batch mean (the paper writes the sum) makes learning rates independent of N;
every gradient below is the paper's divided by N.

Forms
-----
``paper``  Eqn 2: logits -|z_i - z_j|^2 / 2, positive z_i' from the other branch, negatives z_j (j != i)
           from the *same* branch, no temperature. Gradients are Eqn 4 with alpha from Sec. 1.3.
``dot``    the official toy code (``toy_task/case_*.py``): logits z_i . z_j' / tau, positives on the
           diagonal, negatives from the other view, one direction, no normalization.
``ntxent`` SimCLR's NT-Xent: cosine similarity / tau over the 2N embeddings of both views, 2N - 2
           negatives per anchor, mean over the 2N anchors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DEFAULT_TEMPERATURE = 0.1


def _softmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row softmax and row log-sum-exp, stable."""
    top = logits.max(axis=-1, keepdims=True)
    e = np.exp(logits - top)
    total = e.sum(axis=-1, keepdims=True)
    return e / total, (np.log(total) + top)[..., 0]


def _diag(a: np.ndarray) -> np.ndarray:
    return np.diagonal(a, axis1=-2, axis2=-1)


def _t(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


def paper_weights(z: np.ndarray, z_aug: np.ndarray) -> np.ndarray:
    """Softmax weights alpha of Eqn 2 (Sec. 1.3), shape (..., N, N).

    alpha_ij = exp(-|z_i - z_j|^2/2) / Z_i for j != i and alpha_ii = exp(-|z_i - z_i'|^2/2) / Z_i:
    the positive sits on the diagonal, so every row sums to 1.
    """
    sq = np.sum(z * z, axis=-1)
    pos = -0.5 * np.sum((z - z_aug) ** 2, axis=-1)
    e, total, _ = _paper_exp_rows(z, sq, pos, 0, z.shape[-2])
    return e / total[..., None]


def _paper_exp_rows(
    z: np.ndarray, sq: np.ndarray, pos: np.ndarray, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows start:stop of the unnormalized weights e (alpha = e / total), the row sums, and log Z_i.

    The logit -|z_i - z_j|^2/2 = m_ij - |z_i|^2/2 with m_ij = z_i.z_j - |z_j|^2/2; the row term cancels in
    the softmax, so exp(m) is taken directly, saving a pass over the N x N block. m_ij <= |z_i|^2/2 and
    the row sum is at least exp(pos_i + |z_i|^2/2), so that is safe unless some |z_i|^2 > 1400 (overflow)
    or pos_i + |z_i|^2/2 < -700 (underflow); then the row maximum is subtracted first.
    """
    rows = np.arange(stop - start)
    row_term = 0.5 * sq[..., start:stop]
    logits = z[..., start:stop, :] @ _t(z)
    logits -= 0.5 * sq[..., None, :]
    logits[..., rows, start + rows] = pos[..., start:stop] + row_term
    shift = row_term
    if np.max(row_term) > 700.0 or np.min(logits[..., rows, start + rows]) < -700.0:
        top = np.max(logits, axis=-1, keepdims=True)
        logits -= top
        shift = row_term - top[..., 0]
    e = np.exp(logits, out=logits)
    total = e.sum(axis=-1)
    return e, total, np.log(total) - shift


def paper_loss(z: np.ndarray, z_aug: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eqn 2 (batch mean) and its gradients, Eqn 4:

    g_{z_i}  = sum_{j != i} alpha_ij (z_j - z_i') + sum_{j != i} alpha_ji (z_j - z_i)
    g_{z_i'} = sum_{j != i} alpha_ij (z_i' - z_i) = (1 - alpha_ii)(z_i' - z_i)

    With alpha = e / t (row sums t): alpha z = (e z) / t, and alpha^T [z, 1] = e^T [z / t, 1 / t] gives
    alpha^T z and the column sums in one product, so the N x N block is never divided or summed by column.
    It is built a block of rows at a time (about 2 MB each for large N) so that it stays in cache.
    """
    n = z.shape[-2]
    block = n if n <= 512 else max(64, 2**18 // n)
    sq = np.sum(z * z, axis=-1)
    pos = -0.5 * np.sum((z - z_aug) ** 2, axis=-1)
    lse = np.empty_like(pos)
    a_pos = np.empty_like(pos)
    alpha_z = np.empty_like(z)
    alpha_t = np.zeros((*z.shape[:-1], z.shape[-1] + 1))  # [alpha^T z, column sums]
    z_one = np.concatenate([z, np.ones_like(z[..., :1])], axis=-1)
    for start in range(0, n, block):
        stop = min(n, start + block)
        e, total, lse[..., start:stop] = _paper_exp_rows(z, sq, pos, start, stop)
        rows = np.arange(stop - start)
        a_pos[..., start:stop] = e[..., rows, start + rows] / total
        alpha_z[..., start:stop, :] = (e @ z) / total[..., None]
        alpha_t += _t(e) @ (z_one[..., start:stop, :] / total[..., None])
    a_pos = a_pos[..., None]
    row = 1.0 - a_pos  # sum_{j != i} alpha_ij
    col = alpha_t[..., -1:] - a_pos  # sum_{j != i} alpha_ji
    # off-diagonal alpha times z is alpha z - diag(alpha) z, for alpha and alpha^T alike
    g_z = alpha_z + alpha_t[..., :-1] - (2.0 * a_pos + col) * z - row * z_aug
    g_aug = row * (z_aug - z)
    loss = np.mean(lse - pos, axis=-1)
    return loss, g_z / n, g_aug / n


def dot_loss(
    z: np.ndarray, z_aug: np.ndarray, temperature: float = DEFAULT_TEMPERATURE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Official toy-code InfoNCE: L = mean_i [-s_ii + log sum_j exp s_ij], s = z z'^T / tau.

    With p = softmax_rows(s): g_{z_i} = (sum_j p_ij z_j' - z_i') / tau and
    g_{z_j'} = (sum_i p_ij z_i - z_j) / tau (each divided by N for the mean).
    """
    s = z @ _t(z_aug) / temperature
    p, lse = _softmax(s)
    n = z.shape[-2]
    loss = np.mean(lse - _diag(s), axis=-1)
    g_z = (p @ z_aug - z_aug) / (temperature * n)
    g_aug = (_t(p) @ z - z) / (temperature * n)
    return loss, g_z, g_aug


def ntxent_loss(
    z: np.ndarray, z_aug: np.ndarray, temperature: float = DEFAULT_TEMPERATURE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SimCLR NT-Xent on u = [z; z'] / |.|: L = mean_a [-s_{a,a+} + log sum_{b != a} exp s_ab], s = u u^T / tau.

    With P = softmax over b != a and Q the positive-pair permutation, dL/du = ((P + P^T) - 2Q) u / (2N tau);
    the chain rule through u = z / |z| gives g_z = (I - u u^T) dL/du / |z|.
    """
    n = z.shape[-2]
    both = np.concatenate([z, z_aug], axis=-2)
    norm = np.linalg.norm(both, axis=-1, keepdims=True)
    u = both / np.maximum(norm, 1e-12)
    s = u @ _t(u) / temperature
    idx = np.arange(2 * n)
    partner = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
    positive = s[..., idx, partner]
    # cosine <= 1 bounds every logit by 1/tau: a fixed shift keeps exp finite and saves a max pass
    p = np.exp(s - 1.0 / temperature)
    p[..., idx, idx] = 0.0  # an anchor is not its own negative
    total = p.sum(axis=-1, keepdims=True)
    if np.min(total) < 1e-300:  # only for tiny tau: fall back to the row-max shift
        s[..., idx, idx] = -np.inf
        p, lse = _softmax(s)
    else:
        p /= total
        lse = np.log(total[..., 0]) + 1.0 / temperature
    loss = np.mean(lse - positive, axis=-1)
    g_u = ((p + _t(p)) @ u - 2.0 * u[..., partner, :]) / (2 * n * temperature)
    g_both = (g_u - u * np.sum(u * g_u, axis=-1, keepdims=True)) / np.maximum(norm, 1e-12)
    return loss, g_both[..., :n, :], g_both[..., n:, :]


# ---- the one table of losses: every other list of loss names in ``theory`` is derived from it ----------------


@dataclass(frozen=True)
class LossSpec:
    """One loss of the package.

    ``function(z, z_aug[, temperature])`` returns (mean loss, dL/dz, dL/dz_aug); ``uses_temperature`` says whether
    it takes tau. ``x_form`` names the closed form of the contrastive covariance X (-dL/dW = W X) that
    ``covariance.contrastive_covariance`` computes for it (a key of ``covariance.X_FORMS``), None where no X
    exists. ``sweep``: the batched sweep kernels (``batched``, ``torch_kernel``) implement it.
    """

    name: str
    function: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]
    summary: str
    uses_temperature: bool
    x_form: str | None
    sweep: bool


REGISTRY: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec("paper", paper_loss, "Eqn 2 (-|z_i-z_j|^2/2 logits)", uses_temperature=False,
                 x_form="eqn6", sweep=True),
        LossSpec("dot", dot_loss, "official toy code (z.z'/tau)", uses_temperature=True, x_form="dot", sweep=True),
        LossSpec("ntxent", ntxent_loss, "SimCLR", uses_temperature=True, x_form=None, sweep=False),
    )
}

LOSSES = tuple(REGISTRY)  # every loss, in registry order
X_LOSSES = tuple(name for name, spec in REGISTRY.items() if spec.x_form is not None)  # losses with an X
SWEEP_LOSSES = tuple(name for name, spec in REGISTRY.items() if spec.sweep)  # losses the batched sweep runs
TEMPERATURE_LOSSES = tuple(name for name, spec in REGISTRY.items() if spec.uses_temperature)  # losses with a tau


def loss_spec(name: str) -> LossSpec:
    """The registry entry of ``name``; ValueError naming the allowed losses otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(LOSSES)}") from None


def loss_help(names: tuple[str, ...] = LOSSES) -> str:
    """``name: summary`` for each of ``names``, for a ``--loss`` help text."""
    return "; ".join(f"{name}: {REGISTRY[name].summary}" for name in names)


def contrastive_loss(
    z: np.ndarray, z_aug: np.ndarray, loss: str = "paper", temperature: float = DEFAULT_TEMPERATURE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dispatch to one of ``LOSSES``; returns (mean loss, dL/dz, dL/dz_aug)."""
    spec = loss_spec(loss)
    if spec.uses_temperature:
        return spec.function(z, z_aug, temperature)
    return spec.function(z, z_aug)
