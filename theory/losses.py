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

import numpy as np

LOSSES = ("paper", "dot", "ntxent")
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
    return _paper_softmax_rows(z, sq, pos, 0, z.shape[-2])[0]


def _paper_softmax_rows(
    z: np.ndarray, sq: np.ndarray, pos: np.ndarray, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows start:stop of alpha and of log Z_i, built in place.

    Every logit is -|.|^2/2 <= 0, so exp cannot overflow. Row i's sum is at least exp(pos_i), so it can
    underflow only where some pos_i < -700; only then is the row maximum subtracted first.
    """
    rows = np.arange(stop - start)
    logits = z[..., start:stop, :] @ _t(z)
    logits -= 0.5 * sq[..., None, :]
    logits -= 0.5 * sq[..., start:stop, None]
    logits[..., rows, start + rows] = pos[..., start:stop]
    shift = 0.0
    if np.min(pos[..., start:stop]) < -700.0:
        shift = np.max(logits, axis=-1, keepdims=True)
        logits -= shift
        shift = shift[..., 0]
    alpha = np.exp(logits, out=logits)
    total = alpha.sum(axis=-1, keepdims=True)
    alpha /= total
    return alpha, np.log(total[..., 0]) + shift


def paper_loss(z: np.ndarray, z_aug: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eqn 2 (batch mean) and its gradients, Eqn 4:

    g_{z_i}  = sum_{j != i} alpha_ij (z_j - z_i') + sum_{j != i} alpha_ji (z_j - z_i)
    g_{z_i'} = sum_{j != i} alpha_ij (z_i' - z_i) = (1 - alpha_ii)(z_i' - z_i)

    alpha is built a block of rows at a time (about 2 MB each for large N) so that the N x N work stays in
    cache; alpha z is filled per block and alpha^T z and the column sums are accumulated over blocks.
    """
    n = z.shape[-2]
    block = n if n <= 512 else max(64, 2**18 // n)
    sq = np.sum(z * z, axis=-1)
    pos = -0.5 * np.sum((z - z_aug) ** 2, axis=-1)
    lse = np.empty_like(pos)
    a_pos = np.empty_like(pos)
    col = np.zeros_like(pos)
    alpha_z = np.empty_like(z)
    alpha_t_z = np.zeros_like(z)
    for start in range(0, n, block):
        stop = min(n, start + block)
        alpha, lse[..., start:stop] = _paper_softmax_rows(z, sq, pos, start, stop)
        rows = np.arange(stop - start)
        a_pos[..., start:stop] = alpha[..., rows, start + rows]
        alpha_z[..., start:stop, :] = alpha @ z
        alpha_t_z += _t(alpha) @ z[..., start:stop, :]
        col += alpha.sum(axis=-2)
    a_pos, col = a_pos[..., None], col[..., None]
    row = 1.0 - a_pos  # sum_{j != i} alpha_ij
    col -= a_pos  # sum_{j != i} alpha_ji
    # off-diagonal alpha times z is alpha z - diag(alpha) z, for alpha and alpha^T alike
    g_z = alpha_z + alpha_t_z - (2.0 * a_pos + col) * z - row * z_aug
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


def contrastive_loss(
    z: np.ndarray, z_aug: np.ndarray, loss: str = "paper", temperature: float = DEFAULT_TEMPERATURE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dispatch to one of ``LOSSES``; returns (mean loss, dL/dz, dL/dz_aug)."""
    if loss == "paper":
        return paper_loss(z, z_aug)
    if loss == "dot":
        return dot_loss(z, z_aug, temperature)
    if loss == "ntxent":
        return ntxent_loss(z, z_aug, temperature)
    raise ValueError(f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")
