"""Batched sweeps: many toy configurations trained together by one preallocated gradient-descent kernel.

Every configuration is an independent linear network z = W_L ... W_1 x trained by gd with fresh views
each step. Configurations that share a seed share one random stream (common random numbers): the entry
(strength s, seed r, lr) sees exactly the initial weights and views of
``simulate(SimConfig(augment_strength=s, seed=r, lr=lr))`` and reproduces that single run's trajectory, in
whatever sweep it sits. So a sweep of S strengths x R seeds draws R streams, not S x R.

Kernel, per step, for a block of configurations (leading axis c) with views X = [x; x'] of shape (2N, d):

* forward ``h_l = h_{l-1} W_l^T`` (h_0 = X, z = h_L = [z; z']);
* ``dot`` (official toy code): s = z z'^T / tau, e = exp(s) in place, and one product
  e [z', 1] = [e z', row sums t]; g_z = (e z' / t - z') / (tau N), g_z' = (e^T (z / t) - z) / (tau N)
  (``losses.dot_loss``);
* ``paper`` (Eqn 2): the logits come from one product [z, 1] [z, -|z|^2/2]^T with the positives
  written on the diagonal; e [z, 1] and e^T [z / t, 1 / t] give alpha z, alpha^T z and the column sums
  (``losses.paper_loss``, Eqn 4);
* backward ``dL/dW_l = delta_l^T h_{l-1}``, ``delta_{l-1} = delta_l W_l`` (Eqn 8-9), then W_l -= lr dL/dW_l;
  for one layer both losses' gradients are W (M + M^T) with M a d x d product of N-row factors, so one N x N
  product follows the logits (dot loss, ``Kernel._dot_one_layer``), plus one matrix-vector product for
  Eqn 2 (``Kernel._paper_one_layer``).

Every array is allocated once per block and reused (``out=``, in-place exponentials, computed as exp2 of the
logits in base 2, which numpy evaluates faster); the views carry a column of ones, so e [x', 1] needs no
copy. Blocks run on workers, forked processes sharing the arrays on Linux (threads elsewhere, which hand the
GIL back and forth at every numpy call of these small steps); each worker trains its blocks on one stretch
of views, then draws its share of the seeds' next stretch, so ``workers`` is the number of busy cores.
"""

from __future__ import annotations

import math
import mmap
import multiprocessing as mp
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
from numpy.typing import ArrayLike
from threadpoolctl import threadpool_limits

from . import toy
from .covariance import contrastive_x, psd_check
from .dynamics import DIVERGENCE_NORM, Trajectory, end_to_end, forward
from .experiment import X_BATCHES, SimConfig, _finite_or_none, evaluation_inputs, initial_weights
from .losses import SWEEP_LOSSES  # noqa: F401  (re-exported: the losses the kernels implement, from the registry)
from .spectrum import collapse_counts, singular_values
from .views import Layout, Streams

DTYPES = ("float64", "float32")
BACKENDS = ("numpy", "torch")
CONFIG_BLOCK = 32  # most configurations per kernel block
EXP_LIMIT = {"float64": 700.0, "float32": 80.0}  # |logit| below this: exp neither overflows nor underflows
LOG2E, LN2 = 1.0 / math.log(2.0), math.log(2.0)  # exp(s) = exp2(s log2 e): numpy's exp2 is 1.2-2x faster
Record = Callable[["Kernel", int, "np.ndarray | None"], None]  # record(kernel, step, loss) before the step


class Kernel:
    """Preallocated gd for a block of configurations (numpy); see the module doc for the math."""

    def __init__(
        self, weights: list[np.ndarray], strengths: np.ndarray, lrs: np.ndarray, groups: np.ndarray,
        layout: Layout, loss: str, temperature: float, dtype: str,
    ):
        self.w = weights  # views into the sweep's weight arrays, updated in place
        self.layout, self.loss, self.tau = layout, loss, float(temperature)
        self.dtype = np.dtype(dtype)
        self.limit = EXP_LIMIT[dtype]
        self.strengths = np.asarray(strengths, dtype=np.float64)
        self.groups = np.asarray(groups)
        c, n, d = len(self.strengths), layout.samples, layout.dim
        # the loss gradient's constant factor goes into the step: W -= (lr / (tau N)) delta^T h
        scale = 1.0 / (self.tau * n) if loss == "dot" else 1.0 / n
        self.step_scale = (np.asarray(lrs, dtype=np.float64) * scale).astype(self.dtype)[:, None, None]
        f, layers = self.dtype, len(weights)
        self.views = np.empty((c, 2 * n, d + 1), f)  # [x, 1; x', 1]
        self.noise = np.empty_like(self.views)
        self.scale = self.strengths[:, None, None].astype(f)
        self.h = [self.views[..., :d]] + [np.empty((c, 2 * n, d), f) for _ in range(layers)]  # h[L] = z
        self.s = np.empty((c, n, n), f)
        self.one = np.ones((c, n, d + 1), f)  # [., 1]: the last column is never overwritten
        self.rhs = np.empty((c, n, d + 1), f)
        self.prod = np.empty((c, n, d + 1), f)
        self.prod_t = np.empty((c, n, d + 1), f)
        self.tmp = np.empty((c, n, d), f)
        self.vec = [np.empty((c, n), f) for _ in range(6)]
        self.sq = np.empty((c, 2 * n), f)
        self.delta = [np.empty((c, 2 * n, d), f) for _ in range(2)]
        self.grads = [np.empty_like(w) for w in weights]
        self.small = np.empty((2, c, d, d), f)  # d x d products of the one-layer gradients
        self.col = np.empty((c, n, 1), f)
        self.wabs = np.empty_like(weights[0])
        self.diverged = np.full(c, -1, dtype=np.int64)

    def load(self, packed_step: np.ndarray) -> None:
        """[x; x'] = clean + strength * noise from one step of the seeds' packed streams, (G, 2, 2N, d + 1)
        (``Layout.pack``); bitwise ``toy_views`` in float64."""
        np.take(packed_step[:, 0], self.groups, axis=0, out=self.views, mode="clip")
        np.take(packed_step[:, 1], self.groups, axis=0, out=self.noise, mode="clip")
        self.noise *= self.scale
        self.views += self.noise

    def forward(self) -> np.ndarray:
        for layer, w in enumerate(self.w):
            np.matmul(self.h[layer], np.swapaxes(w, -1, -2), out=self.h[layer + 1])
        return self.h[-1]

    def loss_gradient(self, want_loss: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """delta = [g_z; g_z'] up to the factor in ``step_scale``; the batch-mean loss if asked."""
        if self.loss == "dot":
            return self._dot(want_loss)
        return self._paper(want_loss)

    def _dot_exp_logits(self) -> tuple[np.ndarray, np.ndarray | None]:
        """exp(z1 z2^T / tau) in place in ``self.s`` (as exp2 of the logits in base 2), and the row maxima
        subtracted first, in natural units (None when no shift is needed: |s| <= |z1| |z2| / tau bounds every
        logit below the overflow limit)."""
        n = self.layout.samples
        z = self.h[-1]
        z1, z2 = z[:, :n], z[:, n:]
        np.einsum("cnd,cnd->cn", z, z, out=self.sq)
        bound = math.sqrt(float(self.sq[:, :n].max()) * float(self.sq[:, n:].max())) / self.tau
        np.multiply(z1, LOG2E / self.tau, out=self.tmp)
        s = np.matmul(self.tmp, np.swapaxes(z2, -1, -2), out=self.s)
        top = None
        if not bound < self.limit:  # rare: shift every row by its maximum
            top = np.max(s, axis=-1, out=self.vec[3])
            s -= top[..., None]
            top = top * LN2
        np.exp2(s, out=s)
        return s, top

    def _dot(self, want_loss: bool) -> tuple[np.ndarray, np.ndarray | None]:
        n, d = self.layout.samples, self.layout.dim
        z = self.h[-1]
        z1, z2 = z[:, :n], z[:, n:]
        s, top = self._dot_exp_logits()
        rhs = self.one
        rhs[..., :d] = z2
        prod = np.matmul(s, rhs, out=self.prod)  # [e z', t]
        inv = np.reciprocal(prod[..., d], out=self.vec[0])
        delta = self.delta[0]
        np.multiply(prod[..., :d], inv[..., None], out=delta[:, :n])
        delta[:, :n] -= z2
        np.multiply(z1, inv[..., None], out=self.tmp)
        np.matmul(np.swapaxes(s, -1, -2), self.tmp, out=delta[:, n:])
        delta[:, n:] -= z1
        value = None
        if want_loss:
            lse = np.log(prod[..., d]) + (0.0 if top is None else top)
            value = np.mean(lse - np.einsum("cnd,cnd->cn", z1, z2) / self.tau, axis=-1)
        return delta, value

    def _dot_one_layer(self, want_loss: bool) -> np.ndarray | None:
        """dL/dW of the dot loss for one layer, up to step_scale, from one N x N product after the logits.

        With z = x W^T, Q = p x' (p = softmax(s)) and D = Q - x': p z' - z' = D W^T and z^T (p x' - x') =
        W x^T D, so dL/dW = (p z' - z')^T x + (p^T z - z)^T x' = W (M + M^T) with M = D^T x.
        """
        n, d = self.layout.samples, self.layout.dim
        x1, x2 = self.h[0][:, :n], self.h[0][:, n:]
        s, top = self._dot_exp_logits()
        prod = np.matmul(s, self.views[:, n:], out=self.prod)  # [e x', t]
        inv = np.reciprocal(prod[..., d], out=self.vec[0])
        q = np.multiply(prod[..., :d], inv[..., None], out=self.tmp)
        q -= x2  # D
        self._symmetric_gradient(np.swapaxes(q, -1, -2), x1)
        if not want_loss:
            return None
        z1, z2 = self.h[-1][:, :n], self.h[-1][:, n:]
        lse = np.log(prod[..., d]) + (0.0 if top is None else top)
        return np.mean(lse - np.einsum("cnd,cnd->cn", z1, z2) / self.tau, axis=-1)

    def _symmetric_gradient(self, left_t: np.ndarray, right: np.ndarray) -> None:
        """grads[0] = W (M + M^T) with M = left_t @ right (d x d)."""
        m, sym = self.small
        np.matmul(left_t, right, out=m)
        np.add(m, np.swapaxes(m, -1, -2), out=sym)
        np.matmul(self.w[0], sym, out=self.grads[0])

    def _paper_logits(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """exp of Eqn 2's logits in self.s (rows shifted, see ``losses._paper_exp_rows``; computed as exp2 of
        the logits in base 2); returns (e, its diagonal, the row shift, the positives' log-weights)."""
        n, d = self.layout.samples, self.layout.dim
        z1, z2 = self.h[-1][:, :n], self.h[-1][:, n:]
        sq, pos, half = self.vec[0], self.vec[1], self.vec[2]
        np.einsum("cnd,cnd->cn", z1, z1, out=sq)
        np.subtract(z1, z2, out=self.tmp)
        np.einsum("cnd,cnd->cn", self.tmp, self.tmp, out=pos)
        pos *= -0.5  # log-weight of the positive, -|z_i - z_i'|^2 / 2
        np.multiply(sq, 0.5, out=half)  # the row term |z_i|^2 / 2, which cancels in the softmax
        self.one[..., :d] = z1
        np.multiply(z1, LOG2E, out=self.rhs[..., :d])
        np.multiply(sq, -0.5 * LOG2E, out=self.rhs[..., d])
        s = np.matmul(self.one, np.swapaxes(self.rhs, -1, -2), out=self.s)  # (z_i.z_j - |z_j|^2 / 2) log2 e
        diag = s.reshape(len(s), n * n)[:, :: n + 1]
        np.add(pos, half, out=diag)
        diag *= LOG2E
        shift = half
        if float(half.max()) > self.limit or float(diag.min()) * LN2 < -self.limit:
            top = np.max(s, axis=-1, out=self.vec[3])
            s -= top[..., None]
            shift = half - top * LN2
        np.exp2(s, out=s)
        return s, diag, shift, pos

    def _paper_one_layer(self, want_loss: bool) -> np.ndarray | None:
        """dL/dW of Eqn 2 for one layer, up to step_scale, from one N x N product and one N x N
        matrix-vector product after the logits.

        With z = x W^T, B = alpha x = (e x) / t, r_i = 1 - alpha_ii and c_i = alpha_ii + sum_j alpha_ji,
        Eqn 4 gives dL/dW = W B^T x + z^T B - (c z + r z')^T x + (r (z' - z))^T x'; every term is W times a d x d
        matrix, and collecting them gives dL/dW = W (K + K^T) with K = F^T [x; x'],
        F = [B - r x' - c x / 2; r x' / 2] (row-wise factors).
        """
        n, d = self.layout.samples, self.layout.dim
        x1, x2 = self.h[0][:, :n], self.h[0][:, n:]
        s, diag, shift, pos = self._paper_logits()
        prod = np.matmul(s, self.views[:, :n], out=self.prod)  # [e x, t]
        inv = np.reciprocal(prod[..., d], out=self.vec[4])
        a_pos = np.multiply(diag, inv, out=self.vec[5])
        col = np.matmul(np.swapaxes(s, -1, -2), inv[..., None], out=self.col)[..., 0]  # sum_j alpha_ji
        half_c = np.add(col, a_pos, out=col)
        half_c *= 0.5
        half_r = np.subtract(1.0, a_pos, out=a_pos)
        half_r *= 0.5
        f = self.delta[0]
        top, bottom = f[:, :n], f[:, n:]
        np.multiply(x2, half_r[..., None], out=bottom)  # r x' / 2
        np.multiply(x1, half_c[..., None], out=top)
        top += bottom
        top += bottom
        np.multiply(prod[..., :d], inv[..., None], out=self.tmp)  # B
        np.subtract(self.tmp, top, out=top)
        self._symmetric_gradient(np.swapaxes(f, -1, -2), self.h[0])
        if not want_loss:
            return None
        return np.mean(np.log(prod[..., d]) - shift - pos, axis=-1)

    def _paper(self, want_loss: bool) -> tuple[np.ndarray, np.ndarray | None]:
        n, d = self.layout.samples, self.layout.dim
        z = self.h[-1]
        z1, z2 = z[:, :n], z[:, n:]
        s, diag, shift, pos = self._paper_logits()
        one, rhs = self.one, self.rhs  # one = [z, 1]
        prod = np.matmul(s, one, out=self.prod)  # [e z, t]
        inv = np.reciprocal(prod[..., d], out=self.vec[4])
        a_pos = np.multiply(diag, inv, out=self.vec[5])
        np.multiply(one, inv[..., None], out=rhs)  # [z / t, 1 / t]
        prod_t = np.matmul(np.swapaxes(s, -1, -2), rhs, out=self.prod_t)  # [alpha^T z, column sums]
        delta = self.delta[0]
        g, g_aug = delta[:, :n], delta[:, n:]
        np.multiply(prod[..., :d], inv[..., None], out=g)
        g += prod_t[..., :d]
        coef = prod_t[..., d]  # sum_j alpha_ji, then 2 alpha_ii + sum_{j != i} alpha_ji
        coef += a_pos
        np.multiply(z1, coef[..., None], out=self.tmp)
        g -= self.tmp
        row = np.subtract(1.0, a_pos, out=a_pos)  # sum_{j != i} alpha_ij
        np.multiply(z2, row[..., None], out=self.tmp)
        g -= self.tmp
        np.subtract(z2, z1, out=g_aug)
        g_aug *= row[..., None]
        value = None
        if want_loss:
            value = np.mean(np.log(prod[..., d]) - shift - pos, axis=-1)
        return delta, value

    def step(self, packed_step: np.ndarray, step: int, record: Record | None = None, update: bool = True) -> None:
        """One gd step on the views of packed_step; ``record(kernel, step, loss)`` first sees the weights and
        loss before the step."""
        self.load(packed_step)
        self.forward()
        if len(self.w) == 1:
            one_layer = self._dot_one_layer if self.loss == "dot" else self._paper_one_layer
            value = one_layer(record is not None)
            if record is not None:
                record(self, step, value)
            if update:
                self.grads[0] *= self.step_scale
                self.w[0] -= self.grads[0]
                self._check(step + 1)
            return
        delta, value = self.loss_gradient(record is not None)
        if record is not None:
            record(self, step, value)
        if not update:
            return
        spare = self.delta[1]
        for layer in range(len(self.w) - 1, -1, -1):
            np.matmul(np.swapaxes(delta, -1, -2), self.h[layer], out=self.grads[layer])
            if layer > 0:
                np.matmul(delta, self.w[layer], out=spare)
                delta, spare = spare, delta
        for w, g in zip(self.w, self.grads, strict=True):
            g *= self.step_scale
            w -= g
        self._check(step + 1)

    def _check(self, steps_done: int) -> None:
        """Configurations whose weights left the finite range stop (weights zeroed), noting the step."""
        bad = None
        for w in self.w:
            np.abs(w, out=self.wabs)
            if not float(self.wabs.max()) <= DIVERGENCE_NORM:  # NaN fails too
                flags = ~(np.max(self.wabs, axis=(-2, -1)) <= DIVERGENCE_NORM)
                bad = flags if bad is None else bad | flags
        if bad is not None:
            fresh = bad & (self.diverged < 0)
            self.diverged[fresh] = steps_done
            for w in self.w:
                w[bad] = 0.0  # a zero network stays zero: its gradient vanishes

    def run(self, raw: np.ndarray, first_step: int, count: int, total: int, record_every: int,
            record: Record) -> None:
        """Steps first_step .. first_step + count - 1 on packed views (G, block, 2, 2N, d + 1); step ``total`` only
        evaluates the final loss."""
        for i in range(count):
            step = first_step + i
            keep = record if step == total or step % record_every == 0 else None
            self.step(raw[:, i], step, keep, update=step < total)


def _as_configs(strengths, seeds, lrs, base: SimConfig) -> tuple[tuple, np.ndarray, np.ndarray, np.ndarray]:
    strengths = np.asarray(strengths, dtype=np.float64)
    seeds = np.asarray(base.seed if seeds is None else seeds)
    lrs = np.asarray(base.lr if lrs is None else lrs, dtype=np.float64)
    shape = np.broadcast_shapes(strengths.shape, seeds.shape, lrs.shape)
    flat = [np.broadcast_to(a, shape).ravel() for a in (strengths, seeds, lrs)]
    if not np.issubdtype(flat[1].dtype, np.integer):
        raise ValueError(f"seeds must be integers, got {seeds.dtype}")
    return shape, flat[0], flat[1].astype(np.int64), flat[2]


def validate(base: SimConfig, strengths: np.ndarray, lrs: np.ndarray, dtype: str, backend: str) -> None:
    """Raise ValueError (one line) for what the batched kernel cannot run."""
    if base.relu or base.loss not in SWEEP_LOSSES:
        raise ValueError(f"sweeps run linear networks with the loss {' or '.join(SWEEP_LOSSES)}, "
                         f"got loss {base.loss!r}{' with ReLU' if base.relu else ''}")
    if base.integrator != "gd" or base.time is not None:
        raise ValueError("sweeps integrate with gd for a number of steps (no --time, no ode)")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    for s in np.unique(strengths):
        replace(base, augment_strength=float(s)).validate()
    for lr in np.unique(lrs):
        replace(base, lr=float(lr)).validate()


def train_batched(
    strengths: ArrayLike, base: SimConfig, record_every: int | None = None, progress: bool = False, *,
    seeds: ArrayLike | None = None, lrs: ArrayLike | None = None, dtype: str = "float64", workers: int | None = None,
    config_block: int = CONFIG_BLOCK, blas_threads: int = 1, backend: str = "numpy", device: str | None = None,
    views: str | None = None,
) -> tuple[Trajectory, dict[int, np.random.Generator]]:
    """One network per entry of ``broadcast(strengths, seeds, lrs)`` (default seed and lr: ``base``'s),
    all trained by gd for ``base.steps`` steps with fresh views.

    Returns the trajectory (weights (T, *shape, d, d), losses (T, *shape), ``info['diverged_at']`` the time
    each configuration's weights passed 1e8, NaN if never; such a network is zeroed and stops) and each
    seed's generator, positioned after training as ``simulate``'s is.
    ``workers`` (default: one per CPU core) run blocks of ``config_block`` configurations and draw the views,
    with ``blas_threads`` BLAS threads each (workers over blocks measure faster than BLAS threads on these
    small products). ``backend="torch"`` runs the same kernel in torch on ``device`` (and ``views``, see
    ``torch_kernel``).
    """
    shape, s_flat, seed_flat, lr_flat = _as_configs(strengths, seeds, lrs, base)
    validate(base, s_flat, lr_flat, dtype, backend)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    unique, groups = np.unique(seed_flat, return_inverse=True)
    rngs = {int(r): np.random.default_rng(int(r)) for r in unique}
    init = [initial_weights(replace(base, seed=int(r)), rngs[int(r)]) for r in unique]
    weights = [np.stack([init[g][layer] for g in groups]) for layer in range(base.layers)]
    layout = Layout(base.samples, base.dim, base.augmented_dims, base.noisy_views)
    steps = base.steps
    record_every = record_every or steps
    times = list(range(0, steps, record_every)) + [steps]
    if backend == "torch":
        from .torch_kernel import train_torch

        snaps, losses, diverged = train_torch(weights, s_flat, lr_flat, groups, list(rngs.values()), layout, base,
                                              times, record_every, dtype, device, progress, int(unique.min()), views)
    else:
        snaps, losses, diverged = _train_numpy(weights, s_flat, lr_flat, groups, list(rngs.values()), layout, base,
                                               times, record_every, dtype, workers, config_block, blas_threads,
                                               progress)
    diverged_at = np.where(diverged >= 0, diverged * lr_flat, np.nan)
    return Trajectory(
        np.array(times, dtype=np.float64) * base.lr,
        [s.reshape(len(times), *shape, *s.shape[2:]) for s in snaps],
        losses.reshape(len(times), *shape),
        gradient_evaluations=steps,
        info={"diverged_at": diverged_at.reshape(shape), "lr": lr_flat.reshape(shape),
              "times_in_steps": np.array(times)},
    ), rngs


def _shared(shape: tuple, dtype) -> np.ndarray:
    """An array in anonymous shared memory: what a forked worker writes, its parent reads."""
    size = int(np.prod(shape))
    dtype = np.dtype(dtype)
    return np.frombuffer(mmap.mmap(-1, max(1, size * dtype.itemsize)), dtype=dtype, count=size).reshape(shape)


def _train_numpy(weights, strengths, lrs, groups, rngs, layout, base, times, record_every, dtype, workers,
                 config_block, blas_threads, progress) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    count, steps = len(strengths), base.steps
    workers = max(1, min(workers or os.cpu_count() or 1, count))
    # forked processes on Linux: threads would hand the GIL back and forth at every numpy call of these small
    # steps (measured 1.6x on two cores, processes 2.0x); elsewhere fork is unsafe (macOS) or missing (Windows)
    forked = workers > 1 and sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()
    alloc = _shared if forked else np.empty
    w = [alloc(a.shape, dtype) for a in weights]
    for a, b in zip(w, weights, strict=True):
        a[...] = b
    snaps = [alloc((len(times), *a.shape), np.float64) for a in w]
    losses = alloc((len(times), count), np.float64)
    diverged = alloc((count,), np.int64)
    done = alloc((1,), np.int64)  # steps finished by every worker, for the progress bar
    done[0] = 0
    where = {t: i for i, t in enumerate(times)}
    blocks = workers * -(-count // (workers * max(1, config_block)))  # equal blocks, a multiple of workers
    edges = np.linspace(0, count, min(blocks, count) + 1).round().astype(int)
    kernels = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        k = Kernel([a[lo:hi] for a in w], strengths[lo:hi], lrs[lo:hi], groups[lo:hi], layout, base.loss,
                   base.temperature, dtype)
        k.lo = lo
        kernels.append(k)

    def record(k: Kernel, step: int, value: np.ndarray) -> None:
        i = where[step]
        losses[i, k.lo : k.lo + len(value)] = value
        for snap, a in zip(snaps, k.w, strict=True):
            snap[i, k.lo : k.lo + len(a)] = a

    streams = Streams(rngs, layout, steps + 1, packed=True, dtype=dtype, alloc=alloc)  # + 1: the final loss
    streams.fill(0, min(streams.block, steps + 1))
    share = [kernels[i::workers] for i in range(workers)]
    seed_share = [list(range(i, len(rngs), workers)) for i in range(workers)]

    def work(i: int, barrier) -> dict:
        """Worker i trains its blocks on one stretch of views, draws its seeds' next stretch into the other
        buffer and waits for the others: every worker busy, none waiting on a drawing one. Returns the
        states of its seeds' generators."""
        total, first, which = steps + 1, 0, 0
        with np.errstate(over="ignore", invalid="ignore"):
            while first < total:
                n = min(streams.block, total - first)
                for k in share[i]:
                    k.run(streams.output(which), first, n, steps, record_every, record)
                if total - first - n:
                    streams.fill(1 - which, min(streams.block, total - first - n), seed_share[i])
                barrier.wait()
                first, which = first + n, 1 - which
                if i == 0:
                    done[0] = min(first, steps)
        for k in share[i]:
            diverged[k.lo : k.lo + len(k.diverged)] = k.diverged
        return {g: rngs[g].bit_generator.state for g in seed_share[i]}

    with threadpool_limits(limits=blas_threads, user_api="blas"):
        if forked:  # the seeds' generators end where the workers left them
            for states in _run_forked(work, workers, done, steps, progress):
                for g, state in states.items():
                    rngs[g].bit_generator.state = state
        else:
            _run_threads(work, workers, done, steps, progress)
    return snaps, losses, diverged


def _progress(done: np.ndarray, steps: int, progress: bool, running) -> None:
    """Show done[0] of ``steps`` while ``running()``."""
    from tqdm.auto import tqdm

    with tqdm(total=steps, disable=not progress, desc="sweep", unit="step", delay=1.0) as bar:
        while running():
            time.sleep(0.05)
            bar.update(int(done[0]) - bar.n)
        bar.update(int(done[0]) - bar.n)


def _run_threads(work, workers: int, done: np.ndarray, steps: int, progress: bool) -> None:
    barrier = threading.Barrier(workers)

    def guarded(i: int) -> dict:
        try:
            return work(i, barrier)
        except BaseException:
            barrier.abort()  # the others stop waiting for this one
            raise

    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(guarded, i) for i in range(workers)]
        _progress(done, steps, progress, lambda: not all(f.done() for f in futures))
        for f in sorted(futures, key=lambda f: isinstance(f.exception(), threading.BrokenBarrierError)):
            f.result()  # the first real error, not a worker it stopped


def _run_forked(work, workers: int, done: np.ndarray, steps: int, progress: bool) -> list[dict]:
    """work(i, barrier) in ``workers`` forked processes sharing the arrays; returns what each returned."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(workers)
    pipes = [ctx.Pipe(duplex=False) for _ in range(workers)]

    def child(i: int) -> None:
        try:
            message = ("ok", work(i, barrier))
        except BaseException as error:  # any, Ctrl-C included: the parent raises it
            barrier.abort()
            message = ("stopped" if isinstance(error, threading.BrokenBarrierError) else "error",
                       f"{type(error).__name__}: {error}")
        pipes[i][1].send(message)

    procs = [ctx.Process(target=child, args=(i,), daemon=True) for i in range(workers)]
    try:
        for proc in procs:
            proc.start()
        for _, send in pipes:
            send.close()  # a worker that dies closes the last write end: recv then raises EOFError
        _progress(done, steps, progress,
                  lambda: any(p.is_alive() for p in procs) and all(p.exitcode in (None, 0) for p in procs))
        if any(p.exitcode not in (None, 0) for p in procs):
            barrier.abort()
        messages = []
        for (recv, _), proc in zip(pipes, procs, strict=True):
            try:
                messages.append(recv.recv())
            except EOFError:
                proc.join()
                messages.append(("error", f"a sweep worker died (exit code {proc.exitcode})"))
    finally:
        for proc in procs:
            proc.join(timeout=1.0)
            if proc.is_alive():
                proc.terminate()
    failed = [text for kind, text in messages if kind == "error"] or [text for kind, text in messages
                                                                      if kind == "stopped"]
    if failed:
        raise RuntimeError(failed[0])
    return [states for _, states in messages]


def sweep(
    strengths: ArrayLike, seeds: int, base: SimConfig | None = None, progress: bool = False, *,
    lrs: ArrayLike | None = None, dtype: str = "float64", workers: int | None = None, backend: str = "numpy",
    device: str | None = None, predict: bool = True,
) -> dict:
    """Train ``len(strengths) x [len(lrs) x] seeds`` linear networks (seeds base.seed, base.seed + 1, ...).

    Returns arrays indexed [strength, (lr,) seed]: ``collapsed_dims`` (embedding spectrum on clean data,
    ``theory.spectrum.collapse_counts``, as ``theory.simulate``), ``collapsed_dims_initial`` (t = 0, the
    baseline), ``total_collapse``, ``predicted_apriori`` (significantly negative eigenvalues of X at
    W -> 0) and ``predicted_late`` (of X at the trained W), both over ``X_BATCHES`` fresh batches,
    ``diverged`` and ``embedding_singular_values`` [..., dim]. Diverged networks count -1.
    """
    base = base or SimConfig()
    strengths = np.asarray(strengths, dtype=np.float64)
    seed_list = base.seed + np.arange(seeds)
    lrs = None if lrs is None else np.asarray(lrs, dtype=np.float64)
    grid = _grid(strengths, seed_list, lrs)
    traj, rngs = train_batched(grid[0], base, progress=progress, seeds=grid[1], lrs=grid[2], dtype=dtype,
                               workers=workers, backend=backend, device=device)
    shape = traj.losses.shape[1:]
    seed_of, strength_of = np.broadcast_to(grid[1], shape), np.broadcast_to(grid[0], shape)
    result = {
        "strengths": strengths.tolist(),
        "seeds": seed_list.tolist(),
        "lrs": None if lrs is None else lrs.tolist(),
        "config": {k: v for k, v in vars(base).items() if k not in ("augment_strength", "seed")},
        "dtype": dtype,
        **_observed(traj, base, seed_of, seed_list),
    }
    if not predict:
        return result
    apriori, late = _x_negatives(traj, rngs, base, seed_of, strength_of, workers)
    result["predicted_apriori"] = apriori
    result["predicted_late"] = np.where(result["diverged"], -1, late)
    return result


def _grid(strengths: np.ndarray, seed_list: np.ndarray, lrs: np.ndarray | None) -> tuple:
    """(strengths, seeds, lrs) shaped to broadcast to [strength, (lr,) seed]; lrs None: the base's lr."""
    if lrs is None:
        return strengths[:, None], seed_list[None, :], None
    return strengths[:, None, None], seed_list[None, None, :], lrs[None, :, None]


def _clean_spectra(weights: list[np.ndarray], seed_of: np.ndarray, seed_list: np.ndarray, dim: int) -> np.ndarray:
    """Each network's embedding spectrum, [..., dim], on simulate's evaluation inputs of its seed."""
    w = end_to_end([a.astype(np.float64) for a in weights])
    out = np.empty((*seed_of.shape, dim))
    for r in seed_list:
        x_eval = evaluation_inputs(int(r), dim)
        mask = seed_of == r
        out[mask] = singular_values(forward([w[mask]], x_eval)[0])
    return out


def _observed(traj: Trajectory, base: SimConfig, seed_of: np.ndarray, seed_list: np.ndarray) -> dict:
    """What collapsed, by the rule theory.simulate applies, per configuration; diverged networks count -1."""
    diverged = np.isfinite(traj.info["diverged_at"])
    final = _clean_spectra(traj.final, seed_of, seed_list, base.dim)
    initial = _clean_spectra([a[0] for a in traj.weights], seed_of, seed_list, base.dim)
    counts = collapse_counts(initial, final)
    return {
        "collapsed_dims": np.where(diverged, -1, counts["final"]),
        "collapsed_dims_initial": counts["initial"],
        "total_collapse": np.where(diverged, False, counts["total"]),
        "diverged": diverged,
        "embedding_singular_values": final,
        "final_weights": end_to_end(traj.final),
        "final_loss": traj.losses[-1],
        "apriori_threshold": _finite_or_none(toy.apriori_threshold(base.noisy_views, loss=base.loss)),
    }


def _x_negatives(traj: Trajectory, rngs: dict[int, np.random.Generator], base: SimConfig, seed_of: np.ndarray,
                 strength_of: np.ndarray, workers: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Significantly negative eigenvalues of X at W -> 0 and at the trained W, per configuration, each over
    ``X_BATCHES`` fresh batches of its seed's stream, drawn after training."""
    layout = Layout(base.samples, base.dim, base.augmented_dims, base.noisy_views)
    seed_index = {int(r): i for i, r in enumerate(rngs)}
    flat_group = np.array([seed_index[int(r)] for r in seed_of.ravel()])
    w_final = end_to_end([a.astype(np.float64) for a in traj.final]).reshape(-1, base.dim, base.dim)

    # every batch drawn first, in the order of a sequential evaluation, then X and the tests on worker threads
    raws = [np.stack([rng.standard_normal(layout.per_step) for rng in rngs.values()])[flat_group]
            for _ in range(2 * X_BATCHES)]
    weights = [np.zeros((len(flat_group), 1, base.dim)), w_final]

    def x_sample(index: int) -> np.ndarray:  # batch index % X_BATCHES at weights[index // X_BATCHES]
        x, x_aug = layout.views(raws[index], strength_of.ravel())
        return contrastive_x(x, x_aug, weights[index // X_BATCHES], base.loss, base.temperature)

    def negatives(samples: np.ndarray) -> int:
        return psd_check(samples.mean(0), samples=samples).n_negative

    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        samples = np.stack(list(pool.map(x_sample, range(2 * X_BATCHES))))
        samples = samples.reshape(2, X_BATCHES, *samples.shape[1:])
        counts = list(pool.map(negatives, (samples[w, :, i] for w in range(2) for i in range(len(flat_group)))))
    apriori, late = np.array(counts).reshape(2, *seed_of.shape)
    return apriori, late
