"""The batched gd kernel of ``theory.batched`` in torch, for sweeps of thousands of configurations on a GPU.

Imported only when ``train_batched(..., backend="torch")`` is asked for: ``import theory`` never needs torch.
Same math and the same preallocated buffers as the numpy ``Kernel``, with two differences made for a GPU,
where a host sync per step would cost more than the step: every softmax row is shifted by its maximum
(as ``losses.dot_loss``) instead of testing a bound, and diverged networks are found and zeroed on the
device.

Views: ``views="numpy"`` (the default on a CPU) takes them from the seeds' numpy streams, so the
trajectories equal the numpy backend's; ``views="torch"`` (the default on CUDA) draws them on the device
from one torch generator seeded with the smallest seed: the same distribution, not the same numbers.
"""

from __future__ import annotations

import numpy as np
import torch

from .dynamics import DIVERGENCE_NORM
from .views import Streams


def check_device(name: str | None, flag: str = "--device") -> None:
    """ValueError naming ``flag`` unless torch can run on ``name`` here (None, cpu, cuda, cuda:N or mps); the one
    device check of the project (``empirical.config.check_device`` raises it as a user error)."""
    if name is None:
        return
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"{flag} {name!r} is not a device (cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{flag} {name}: CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{flag} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{flag} {name}: MPS is not available on this machine (use --device cpu)")
    elif dev.type != "cpu":
        raise ValueError(f"{flag} {name!r}: runs are on cpu, cuda, cuda:N or mps")


def _t(a: torch.Tensor) -> torch.Tensor:
    return a.transpose(-1, -2)


def train_torch(weights, strengths, lrs, groups, rngs, layout, base, times, record_every, dtype, device,
                progress, seed: int = 0, views: str | None = None) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Run ``train_batched``'s configurations; returns (weight snapshots, losses, step of divergence or -1)."""
    from tqdm.auto import tqdm

    dev = torch.device(device or "cpu")
    views = views or ("numpy" if dev.type == "cpu" else "torch")
    if views not in ("numpy", "torch"):
        raise ValueError(f"views must be numpy or torch, got {views!r}")
    f = {"float64": torch.float64, "float32": torch.float32}[dtype]
    c, n, d, k = len(strengths), layout.samples, layout.dim, layout.augmented_dims
    lo, loss, tau, steps = d - k, base.loss, float(base.temperature), base.steps
    w = [torch.as_tensor(a, dtype=f, device=dev).contiguous() for a in weights]
    scale = 1.0 / (tau * n) if loss == "dot" else 1.0 / n
    step_scale = torch.as_tensor(lrs * scale, dtype=f, device=dev)[:, None, None]
    strength = torch.as_tensor(strengths, dtype=f, device=dev)[:, None, None]
    index = torch.as_tensor(groups, dtype=torch.long, device=dev)
    raw = torch.empty((c, layout.per_step), dtype=f, device=dev)
    noise = torch.empty((c, n, k), dtype=f, device=dev)
    h = [torch.empty((c, 2 * n, d), dtype=f, device=dev) for _ in range(len(w) + 1)]
    s = torch.empty((c, n, n), dtype=f, device=dev)
    top = torch.empty((c, n, 1), dtype=f, device=dev)
    one = torch.ones((c, n, d + 1), dtype=f, device=dev)
    rhs = torch.empty((c, n, d + 1), dtype=f, device=dev)
    prod = torch.empty((c, n, d + 1), dtype=f, device=dev)
    prod_t = torch.empty((c, n, d + 1), dtype=f, device=dev)
    tmp = torch.empty((c, n, d), dtype=f, device=dev)
    delta = [torch.empty((c, 2 * n, d), dtype=f, device=dev) for _ in range(2)]
    grads = [torch.empty_like(a) for a in w]
    wmax = torch.empty((c,), dtype=f, device=dev)
    bad = torch.zeros((c,), dtype=torch.bool, device=dev)
    diverged = torch.full((c,), -1, dtype=torch.long, device=dev)
    snaps = [np.empty((len(times), *a.shape)) for a in weights]
    losses = np.empty((len(times), c))
    where = {t: i for i, t in enumerate(times)}

    def load(raw_step: torch.Tensor) -> None:
        torch.index_select(raw_step, 0, index, out=raw)
        clean = raw[:, : n * d].view(c, n, d)
        first = raw[:, n * d : n * (d + k)].view(c, n, k)
        x, x_aug = h[0][:, :n], h[0][:, n:]
        x_aug.copy_(clean)
        torch.mul(first, strength, out=noise)
        x_aug[..., lo:].add_(noise)
        x.copy_(clean)
        if layout.noisy_views == 2:
            torch.mul(raw[:, n * (d + k) :].view(c, n, k), strength, out=noise)
            x[..., lo:].add_(noise)

    def dot_logits() -> None:
        """s = exp(z z'^T / tau - row maxima) in place, the maxima in ``top``."""
        z1, z2 = h[-1][:, :n], h[-1][:, n:]
        torch.bmm(z1, _t(z2), out=s)
        s.mul_(1.0 / tau)
        torch.amax(s, dim=-1, keepdim=True, out=top)
        s.sub_(top).exp_()

    def paper_logits() -> tuple[torch.Tensor, torch.Tensor]:
        """s = exp of Eqn 2's logits (rows shifted) in place; returns (|z_i|^2 / 2, the positives' log-weights)."""
        z1, z2 = h[-1][:, :n], h[-1][:, n:]
        half = 0.5 * (z1 * z1).sum(-1)
        pos = -0.5 * ((z1 - z2) ** 2).sum(-1)
        one[..., :d].copy_(z1)
        rhs[..., :d].copy_(z1)
        rhs[..., d].copy_(-half)
        torch.bmm(one, _t(rhs), out=s)
        s.diagonal(dim1=-2, dim2=-1).copy_(pos + half)
        torch.amax(s, dim=-1, keepdim=True, out=top)
        s.sub_(top).exp_()
        return half, pos

    def loss_gradient() -> torch.Tensor:
        """delta = [g_z; g_z'] (up to step_scale); returns the per-configuration batch-mean loss."""
        z = h[-1]
        z1, z2 = z[:, :n], z[:, n:]
        dl = delta[0]
        if loss == "dot":
            dot_logits()
            one[..., :d].copy_(z2)
            torch.bmm(s, one, out=prod)
            inv = prod[..., d:].reciprocal()
            torch.mul(prod[..., :d], inv, out=dl[:, :n])
            dl[:, :n].sub_(z2)
            torch.mul(z1, inv, out=tmp)
            torch.bmm(_t(s), tmp, out=dl[:, n:])
            dl[:, n:].sub_(z1)
            lse = prod[..., d].log() + top[..., 0]
            return (lse - (z1 * z2).sum(-1) / tau).mean(-1)
        half, pos = paper_logits()  # leaves one = [z, 1]
        torch.bmm(s, one, out=prod)
        inv = prod[..., d:].reciprocal()
        a_pos = s.diagonal(dim1=-2, dim2=-1)[..., None] * inv
        torch.mul(one, inv, out=rhs)
        torch.bmm(_t(s), rhs, out=prod_t)
        g, g_aug = dl[:, :n], dl[:, n:]
        torch.mul(prod[..., :d], inv, out=g)
        g.add_(prod_t[..., :d]).sub_(z1 * (prod_t[..., d:] + a_pos)).sub_(z2 * (1.0 - a_pos))
        torch.sub(z2, z1, out=g_aug)
        g_aug.mul_(1.0 - a_pos)
        return (prod[..., d].log() + top[..., 0] - half - pos).mean(-1)

    def symmetric_gradient(left: torch.Tensor, right: torch.Tensor) -> None:
        """grads[0] = W (M + M^T) with M = left^T right (numpy ``Kernel._symmetric_gradient``)."""
        m = torch.bmm(_t(left), right)
        torch.bmm(w[0], m + _t(m), out=grads[0])

    def dot_one_layer() -> torch.Tensor:
        """dL/dW = W (M + M^T), M = (p x' - x')^T x (numpy ``Kernel._dot_one_layer``) into grads[0]."""
        x1, x2 = h[0][:, :n], h[0][:, n:]
        z1, z2 = h[1][:, :n], h[1][:, n:]
        dot_logits()
        one[..., :d].copy_(x2)
        torch.bmm(s, one, out=prod)
        torch.mul(prod[..., :d], prod[..., d:].reciprocal(), out=tmp)
        symmetric_gradient(tmp.sub_(x2), x1)
        lse = prod[..., d].log() + top[..., 0]
        return (lse - (z1 * z2).sum(-1) / tau).mean(-1)

    def paper_one_layer() -> torch.Tensor:
        """dL/dW = W (K + K^T), K = F^T [x; x'], F = [alpha x - r x' - c x / 2; r x' / 2] (numpy
        ``Kernel._paper_one_layer``) into grads[0]."""
        x1, x2 = h[0][:, :n], h[0][:, n:]
        half, pos = paper_logits()
        one[..., :d].copy_(x1)
        torch.bmm(s, one, out=prod)  # [e x, t]
        inv = prod[..., d:].reciprocal()
        a_pos = s.diagonal(dim1=-2, dim2=-1)[..., None] * inv
        half_c = 0.5 * (torch.bmm(_t(s), inv) + a_pos)
        f = delta[0]
        top_rows, bottom = f[:, :n], f[:, n:]
        torch.mul(x2, 0.5 * (1.0 - a_pos), out=bottom)
        torch.mul(prod[..., :d], inv, out=top_rows)
        top_rows.sub_(x1 * half_c).sub_(bottom).sub_(bottom)
        symmetric_gradient(f, h[0])
        return (prod[..., d].log() + top[..., 0] - half - pos).mean(-1)

    def step(raw_step: torch.Tensor, number: int) -> None:
        load(raw_step)
        for layer, a in enumerate(w):
            torch.matmul(h[layer], _t(a), out=h[layer + 1])
        one_layer = len(w) == 1
        value = (dot_one_layer() if loss == "dot" else paper_one_layer()) if one_layer else loss_gradient()
        if number == steps or number % record_every == 0:
            record(number, value)
        if number == steps:
            return
        dl, spare = delta
        for layer in range(len(w) - 1, -1, -1) if not one_layer else ():
            torch.bmm(_t(dl), h[layer], out=grads[layer])
            if layer > 0:
                torch.bmm(dl, w[layer], out=spare)
                dl, spare = spare, dl
        bad.zero_()
        for a, g in zip(w, grads, strict=True):
            a.sub_(g.mul_(step_scale))
            torch.amax(a.abs(), dim=(-2, -1), out=wmax)
            bad.logical_or_(~(wmax <= DIVERGENCE_NORM))
        diverged.copy_(torch.where(bad & (diverged < 0), number + 1, diverged))
        for a in w:
            a.masked_fill_(bad[:, None, None], 0.0)

    def record(number: int, value: torch.Tensor) -> None:
        i = where[number]
        losses[i] = value.double().cpu().numpy()
        for snap, a in zip(snaps, w, strict=True):
            snap[i] = a.double().cpu().numpy()

    streams = Streams(rngs, layout, steps + 1) if views == "numpy" else None
    gen = torch.Generator(device=dev).manual_seed(seed) if views == "torch" else None
    draw = torch.empty((len(rngs), layout.per_step), dtype=f, device=dev) if gen is not None else None
    bar = tqdm(total=steps, disable=not progress, desc="sweep (torch)", unit="step", delay=1.0)
    done = 0
    with torch.no_grad():
        while done <= steps:
            if streams is not None:
                count = min(streams.block, steps + 1 - done)
                chunk = torch.from_numpy(streams.fill(0, count)[:, :count]).to(dev, f)
            else:
                count = min(256, steps + 1 - done)
            for i in range(count):
                number = done + i
                if streams is not None:
                    raw_step = chunk[:, i]
                else:
                    raw_step = torch.randn(draw.shape, generator=gen, dtype=f, device=dev, out=draw)
                step(raw_step, number)
            done += count
            bar.update(min(count, steps - bar.n))
    bar.close()
    return snaps, losses, diverged.cpu().numpy()
