"""Training dynamics of z = W_L ... W_1 x (optionally ReLU between layers) under InfoNCE.

Paper Lemma 1 (one layer, W' = W X), Lemma 3 / Eqn 8-9 (two layers, W1' = W2^T W2 W1 X,
W2' = W2 W1 X W1^T) and App. C (deeper, ReLU). Layer gradients come from the closed-form embedding
gradients (``losses``) by the chain rule, never from autograd.

Weights are a list ``[W_1, ..., W_L]``; each W_l has shape (..., d_l, d_{l-1}), where the leading axes
index independent configurations (a batched sweep runs them all in one call). Time is measured in units of
the batch-mean loss: one gradient step of size lr advances t by lr.

Integrators
-----------
``gd``   discrete gradient descent; a fresh sample (fresh augmentation) every step, as the paper's
         experiments, or a fixed sample (then it is the Euler method for ``ode``).
``ode``  gradient flow on a fixed sample with scipy's adaptive ``solve_ivp`` (RK45 by default).
``expm_solution`` the exact one-layer flow W(t) = W(0) expm(X t) for X held fixed (Theorem 1's proof).

Unnormalized linear networks can blow up in finite time (Theorem 3), and gd can be unstable at too large a
step; both integrators stop with a ``DivergenceError`` naming the time instead of returning NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .losses import DEFAULT_TEMPERATURE, contrastive_loss

Weights = list[np.ndarray]
Sampler = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]
DIVERGENCE_NORM = 1e8
ODE_METHODS = ("RK45", "RK23", "DOP853", "Radau", "BDF")  # adaptive; LSODA deliberately excluded


class DivergenceError(RuntimeError):
    """The weights left the finite range or became non-finite; ``time`` is when. The cause (a gd step-size
    instability or a finite-time blow-up of the flow, Theorem 3) is for the caller to diagnose."""

    time: float = float("nan")


class EvaluationBudgetError(RuntimeError):
    """An adaptive integration needed more gradient evaluations than allowed (a stiff flow)."""


def _t(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


def haar_orthogonal(dim: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` Haar-random orthogonal (dim x dim) matrices: Q of a Gaussian matrix's QR with R's diagonal made
    positive (Mezzadri 2007), the same draws and arithmetic as ``scipy.stats.ortho_group.rvs(dim, count, rng)``
    (tested equal) without importing scipy.stats."""
    z = rng.normal(size=(count, dim, dim))
    q, r = np.linalg.qr(z)
    d = r.diagonal(offset=0, axis1=-2, axis2=-1)
    q *= (d / abs(d))[..., np.newaxis, :]
    return q


def spectral_init(
    singular_values: np.ndarray, layers: int, rng: np.random.Generator, batch_shape: tuple = ()
) -> Weights:
    """Square layers W = U diag(singular_values) V^T with U, V Haar-random orthogonal, independent per layer."""
    s = np.asarray(singular_values, dtype=np.float64)
    dim = s.size
    count = int(np.prod(batch_shape)) * layers
    if dim == 1:  # the 1x1 orthogonal matrices are +-1
        u, v = rng.choice([-1.0, 1.0], (2, count, 1, 1))
    else:
        u = haar_orthogonal(dim, max(count, 2), rng)[:count]
        v = haar_orthogonal(dim, max(count, 2), rng)[:count]
    w = (u * s[None, None, :]) @ _t(v)
    w = w.reshape(*batch_shape, layers, dim, dim)
    return [np.ascontiguousarray(w[..., layer, :, :]) for layer in range(layers)]


def paper_init(
    dim: int, layers: int, rng: np.random.Generator, batch_shape: tuple = (), decay: float = 0.35
) -> Weights:
    """Square layers W = U diag(exp(-decay k)) V^T, k = 0..dim-1, U, V random orthogonal (case_2.py).

    Non-degenerate singular values, as Theorem 2 requires.
    """
    return spectral_init(np.exp(-decay * np.arange(dim)), layers, rng, batch_shape)


def orthogonal_init(
    dim: int, layers: int, rng: np.random.Generator, batch_shape: tuple = (), scale: float = 1.0
) -> Weights:
    """Square layers W = scale U diag(s) V^T with s_k = 10^(-k / (2 L (dim-1))): random orthogonal factors and
    distinct singular values (Theorem 2's premise) spread over half a decade / L per layer.

    The end-to-end map then has sigma_min / sigma_max >= 10^-1/2, so every embedding variance starts within
    one decade of the largest at any width and depth: nothing starts collapsed (a Gaussian D x D matrix has
    sigma_min / sigma_max ~ 1/D, and depth multiplies it).
    """
    steps = np.arange(dim) / max(dim - 1, 1)
    return spectral_init(scale * 10.0 ** (-steps / (2 * layers)), layers, rng, batch_shape)


def scaled_init(
    dim: int, layers: int, scale: float, rng: np.random.Generator, batch_shape: tuple = ()
) -> Weights:
    """Square layers with i.i.d. N(0, scale^2 / dim) entries."""
    return [rng.normal(0.0, scale / np.sqrt(dim), (*batch_shape, dim, dim)) for _ in range(layers)]


def forward(weights: Weights, x: np.ndarray, relu: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """z = W_L s(... s(W_1 x)), s = ReLU or identity; also returns every layer's input and pre-activation."""
    h, cache = x, []
    for layer, w in enumerate(weights):
        a = h @ _t(w)
        cache.append((h, a))
        h = np.maximum(a, 0.0) if relu and layer < len(weights) - 1 else a
    return h, cache


def end_to_end(weights: Weights) -> np.ndarray:
    """W = W_L ... W_1 (linear networks only)."""
    product = weights[0]
    for w in weights[1:]:
        product = w @ product
    return product


def loss_and_gradients(
    weights: Weights,
    x: np.ndarray,
    x_aug: np.ndarray,
    loss: str = "paper",
    temperature: float = DEFAULT_TEMPERATURE,
    relu: bool = False,
) -> tuple[np.ndarray, Weights]:
    """Batch-mean loss and dL/dW_l for every layer by backpropagating the closed-form g_z, g_z'.

    Linear case: dL/dW_l = (W_L..W_{l+1})^T (dL/dW) (W_{l-1}..W_1)^T with dL/dW = -W X (Eqn 8-9).
    """
    n = x.shape[-2]
    both = np.concatenate([x, x_aug], axis=-2)
    z, cache = forward(weights, both, relu)
    value, g_z, g_aug = contrastive_loss(z[..., :n, :], z[..., n:, :], loss, temperature)
    delta = np.concatenate([g_z, g_aug], axis=-2)
    grads: Weights = [None] * len(weights)  # type: ignore[list-item]
    for layer in range(len(weights) - 1, -1, -1):
        h, _ = cache[layer]
        grads[layer] = _t(delta) @ h
        if layer > 0:
            delta = delta @ weights[layer]
            if relu:
                delta = delta * (cache[layer - 1][1] > 0)
    return value, grads


def fixed_covariance_gradients(weights: Weights, cov: np.ndarray) -> Weights:
    """Layer gradients of a linear network when X is held fixed: dL/dW = -W X for the end-to-end W.

    This is the flow Theorems 1 and 3 analyse; it is the gradient of -tr(W X W^T) / 2.
    """
    g_end = -end_to_end(weights) @ cov
    grads = []
    for layer in range(len(weights)):
        left = end_to_end(weights[layer + 1 :]) if layer + 1 < len(weights) else None
        right = end_to_end(weights[:layer]) if layer > 0 else None
        g = g_end if left is None else _t(left) @ g_end
        grads.append(g if right is None else g @ _t(right))
    return grads


@dataclass
class Trajectory:
    """Weights recorded at ``times``; ``weights[l]`` has shape (T, ..., d_l, d_{l-1}).

    ``losses[k]`` is the loss at ``times[k]`` (for ``gd``: of the minibatch of the step taken there).
    """

    times: np.ndarray
    weights: list[np.ndarray]
    losses: np.ndarray
    gradient_evaluations: int
    info: dict = field(default_factory=dict)

    @property
    def final(self) -> Weights:
        return [w[-1] for w in self.weights]


def _check_finite(weights: Weights, t: float) -> None:
    for w in weights:
        biggest = np.max(np.abs(w))
        if not np.isfinite(biggest) or biggest > DIVERGENCE_NORM:
            error = DivergenceError(f"weights diverged at t = {t:.4g} (max |W| > {DIVERGENCE_NORM:.0e})")
            error.time = t
            raise error


def run_gd(
    weights: Weights,
    steps: int,
    lr: float,
    views: Sampler | tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator | None = None,
    record_every: int = 10,
    progress: bool = False,
    track_conservation: bool = False,
    **loss_kwargs,
) -> Trajectory:
    """Gradient descent W_l <- W_l - lr dL/dW_l for ``steps`` steps.

    ``views`` is either a sampler rng -> (x, x_aug), called every step (fresh data and augmentation) with
    the given ``rng``, or a fixed pair (x, x_aug).

    ``track_conservation`` (linear networks) sums, per adjacent pair, the one part of a gd step that moves
    C_l = W_l W_l^T - W_{l+1}^T W_{l+1}: the first-order terms cancel (G_l W_l^T = W_{l+1}^T G_{l+1} by the
    chain rule), leaving lr^2 (G_l G_l^T - G_{l+1}^T G_{l+1}) per step. The sums go to
    ``info["conservation_increment"]``; C_l(T) - C_l(0) equals them to rounding.
    """
    from tqdm.auto import tqdm

    weights = [np.array(w, dtype=np.float64) for w in weights]
    if callable(views) and rng is None:
        raise ValueError("a sampler needs an explicit rng (np.random.Generator): no hidden random state")
    times, snaps, losses = [], [[] for _ in weights], []
    increments = [np.zeros(w.shape[:-1] + w.shape[-2:-1]) for w in weights[:-1]]

    def record(step: int, value: np.ndarray) -> None:
        times.append(step * lr)
        losses.append(value)
        for snap, w in zip(snaps, weights, strict=True):
            snap.append(w.copy())

    for step in tqdm(range(steps), disable=not progress, desc="gd", unit="step", delay=1.0):
        x, x_aug = views(rng) if callable(views) else views
        value, grads = loss_and_gradients(weights, x, x_aug, **loss_kwargs)
        if step % record_every == 0:
            record(step, value)
        if track_conservation:
            for pair, (g, g_next) in enumerate(zip(grads[:-1], grads[1:], strict=True)):
                increments[pair] += lr**2 * (g @ _t(g) - _t(g_next) @ g_next)
        for w, g in zip(weights, grads, strict=True):
            w -= lr * g
        _check_finite(weights, (step + 1) * lr)
    x, x_aug = views(rng) if callable(views) else views
    record(steps, loss_and_gradients(weights, x, x_aug, **loss_kwargs)[0])
    info = {"conservation_increment": increments} if track_conservation else {}
    return Trajectory(
        np.array(times), [np.stack(s) for s in snaps], np.array(losses), gradient_evaluations=steps, info=info
    )


def run_ode(
    weights: Weights,
    time: float,
    views: tuple[np.ndarray, np.ndarray] | None = None,
    cov: np.ndarray | None = None,
    records: int = 200,
    method: str = "RK45",
    rtol: float = 1e-6,
    atol: float = 1e-9,
    max_evaluations: int | None = None,
    **loss_kwargs,
) -> Trajectory:
    """Gradient flow dW_l/dt = -dL/dW_l on a fixed sample with an adaptive scipy integrator.

    Pass ``views`` (x, x_aug) for the full InfoNCE flow or ``cov`` for the fixed-X flow. With
    ``max_evaluations``, a stiff flow that would need more gradient evaluations raises EvaluationBudgetError.
    """
    from scipy.integrate import solve_ivp

    if method not in ODE_METHODS:
        raise ValueError(f"unknown ODE method {method!r}; allowed: {', '.join(ODE_METHODS)}")
    if (views is None) == (cov is None):
        raise ValueError("give exactly one of views=(x, x_aug) or cov=X")
    shapes = [np.shape(w) for w in weights]
    sizes = [int(np.prod(s)) for s in shapes]
    splits = np.cumsum(sizes)[:-1]

    def unpack(state: np.ndarray) -> Weights:
        return [part.reshape(shape) for part, shape in zip(np.split(state, splits), shapes, strict=True)]

    evaluations = [0]

    def rhs(_t_now: float, state: np.ndarray) -> np.ndarray:
        evaluations[0] += 1
        if max_evaluations is not None and evaluations[0] > max_evaluations:
            raise EvaluationBudgetError(f"more than {max_evaluations} gradient evaluations by t = {_t_now:.4g}")
        ws = unpack(state)
        if cov is not None:
            grads = fixed_covariance_gradients(ws, cov)
        else:
            grads = loss_and_gradients(ws, *views, **loss_kwargs)[1]
        return -np.concatenate([g.ravel() for g in grads])

    def blow_up(_t_now: float, state: np.ndarray) -> float:
        return DIVERGENCE_NORM - np.max(np.abs(state))

    blow_up.terminal = True
    state0 = np.concatenate([np.asarray(w, dtype=np.float64).ravel() for w in weights])
    t_eval = np.linspace(0.0, time, records + 1)
    sol = solve_ivp(rhs, (0.0, time), state0, method=method, t_eval=t_eval, rtol=rtol, atol=atol,
                    events=blow_up)
    if sol.status == 1 or not np.all(np.isfinite(sol.y)):
        t_hit = sol.t_events[0][0] if sol.t_events and len(sol.t_events[0]) else sol.t[-1]
        _check_finite([np.full(1, np.inf)], float(t_hit))
    if sol.status < 0:
        raise DivergenceError(f"ODE integration failed at t = {sol.t[-1]:.4g}: {sol.message}")
    snaps = [np.stack([unpack(col)[layer] for col in sol.y.T]) for layer in range(len(weights))]
    losses = np.array([])
    if views is not None:
        losses = np.array([loss_and_gradients(unpack(col), *views, **loss_kwargs)[0] for col in sol.y.T])
    return Trajectory(sol.t, snaps, losses, gradient_evaluations=int(sol.nfev), info={"method": method})


def expm_solution(w0: np.ndarray, cov: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Exact one-layer flow under fixed X: W(t) = W(0) expm(X t) (proof of Theorem 1); (T, d_out, d)."""
    from scipy.linalg import expm

    return np.stack([w0 @ expm(cov * t) for t in np.atleast_1d(times)])
