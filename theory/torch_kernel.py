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

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .dynamics import DIVERGENCE_NORM
from .views import Layout, Streams

if TYPE_CHECKING:
    from .experiment import SimConfig


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


TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class TorchSettings:
    """What a torch sweep shares across its configurations: the loss, the length, where it runs, the views."""

    loss: str
    tau: float
    steps: int
    record_every: int
    dtype: torch.dtype
    device: torch.device
    views: str  # "numpy": the seeds' numpy streams; "torch": one generator on the device
    seed: int  # seeds the device generator

    @classmethod
    def of(cls, base: SimConfig, record_every: int, dtype: str, device: str | None, views: str | None,
           seed: int) -> TorchSettings:
        """Views default to numpy on a CPU (the numpy backend's numbers) and to torch elsewhere (no host copy)."""
        dev = torch.device(device or "cpu")
        views = views or ("numpy" if dev.type == "cpu" else "torch")
        if views not in ("numpy", "torch"):
            raise ValueError(f"views must be numpy or torch, got {views!r}")
        return cls(base.loss, float(base.temperature), base.steps, record_every, TORCH_DTYPES[dtype], dev, views, seed)

    def records(self, number: int) -> bool:
        return number == self.steps or number % self.record_every == 0


class TorchKernel:
    """Preallocated gd for every configuration at once (torch): the numpy ``batched.Kernel``'s math."""

    def __init__(self, weights: list[np.ndarray], strengths: np.ndarray, lrs: np.ndarray, groups: np.ndarray,
                 layout: Layout, settings: TorchSettings):
        f, dev = settings.dtype, settings.device
        c, n, d, k = len(strengths), layout.samples, layout.dim, layout.augmented_dims
        self.layout, self.loss, self.tau = layout, settings.loss, settings.tau
        self.w = [torch.as_tensor(a, dtype=f, device=dev).contiguous() for a in weights]
        # the loss gradient's constant factor goes into the step: W -= (lr / (tau N)) delta^T h
        scale = 1.0 / (self.tau * n) if self.loss == "dot" else 1.0 / n
        self.step_scale = torch.as_tensor(lrs * scale, dtype=f, device=dev)[:, None, None]
        self.strength = torch.as_tensor(strengths, dtype=f, device=dev)[:, None, None]
        self.index = torch.as_tensor(groups, dtype=torch.long, device=dev)
        self.raw = torch.empty((c, layout.per_step), dtype=f, device=dev)
        self.noise = torch.empty((c, n, k), dtype=f, device=dev)
        self.h = [torch.empty((c, 2 * n, d), dtype=f, device=dev) for _ in range(len(self.w) + 1)]  # h[L] = z
        self.s = torch.empty((c, n, n), dtype=f, device=dev)
        self.top = torch.empty((c, n, 1), dtype=f, device=dev)
        self.one = torch.ones((c, n, d + 1), dtype=f, device=dev)  # [., 1]: the last column is never overwritten
        self.rhs = torch.empty((c, n, d + 1), dtype=f, device=dev)
        self.prod = torch.empty((c, n, d + 1), dtype=f, device=dev)
        self.prod_t = torch.empty((c, n, d + 1), dtype=f, device=dev)
        self.tmp = torch.empty((c, n, d), dtype=f, device=dev)
        self.delta = [torch.empty((c, 2 * n, d), dtype=f, device=dev) for _ in range(2)]
        self.grads = [torch.empty_like(a) for a in self.w]
        self.wmax = torch.empty((c,), dtype=f, device=dev)
        self.bad = torch.zeros((c,), dtype=torch.bool, device=dev)
        self.diverged = torch.full((c,), -1, dtype=torch.long, device=dev)

    def load(self, raw_step: torch.Tensor) -> None:
        """[x; x'] = clean + strength * noise from one step's draws of every seed (``toy.toy_views``'s order)."""
        n, d, k = self.layout.samples, self.layout.dim, self.layout.augmented_dims
        raw = self.raw
        torch.index_select(raw_step, 0, self.index, out=raw)
        clean = raw[:, : n * d].view(-1, n, d)
        first = raw[:, n * d : n * (d + k)].view(-1, n, k)
        x, x_aug = self.h[0][:, :n], self.h[0][:, n:]
        x_aug.copy_(clean)
        torch.mul(first, self.strength, out=self.noise)
        x_aug[..., d - k :].add_(self.noise)
        x.copy_(clean)
        if self.layout.noisy_views == 2:
            torch.mul(raw[:, n * (d + k) :].view(-1, n, k), self.strength, out=self.noise)
            x[..., d - k :].add_(self.noise)

    def evaluate(self, raw_step: torch.Tensor) -> torch.Tensor:
        """The batch-mean loss per configuration on one step's views; leaves the gradient's factors behind:
        grads[0] for one layer, delta = [g_z; g_z'] for more."""
        self.load(raw_step)
        for layer, a in enumerate(self.w):
            torch.matmul(self.h[layer], _t(a), out=self.h[layer + 1])
        if len(self.w) > 1:
            return self._loss_gradient()
        return self._dot_one_layer() if self.loss == "dot" else self._paper_one_layer()

    def update(self, number: int) -> None:
        """Gd step ``number``: backpropagate delta (Eqn 8-9), W_l -= lr dL/dW_l, and zero the configurations whose
        weights left the finite range, noting the step."""
        dl, spare = self.delta
        for layer in range(len(self.w) - 1, -1, -1) if len(self.w) > 1 else ():
            torch.bmm(_t(dl), self.h[layer], out=self.grads[layer])
            if layer > 0:
                torch.bmm(dl, self.w[layer], out=spare)
                dl, spare = spare, dl
        self.bad.zero_()
        for a, g in zip(self.w, self.grads, strict=True):
            a.sub_(g.mul_(self.step_scale))
            torch.amax(a.abs(), dim=(-2, -1), out=self.wmax)
            self.bad.logical_or_(~(self.wmax <= DIVERGENCE_NORM))  # NaN fails too
        self.diverged.copy_(torch.where(self.bad & (self.diverged < 0), number + 1, self.diverged))
        for a in self.w:
            a.masked_fill_(self.bad[:, None, None], 0.0)  # a zero network stays zero: its gradient vanishes

    def _dot_logits(self) -> None:
        """s = exp(z z'^T / tau - row maxima) in place, the maxima in ``top``."""
        n = self.layout.samples
        z1, z2 = self.h[-1][:, :n], self.h[-1][:, n:]
        torch.bmm(z1, _t(z2), out=self.s)
        self.s.mul_(1.0 / self.tau)
        torch.amax(self.s, dim=-1, keepdim=True, out=self.top)
        self.s.sub_(self.top).exp_()

    def _paper_logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """s = exp of Eqn 2's logits (rows shifted) in place; returns (|z_i|^2 / 2, the positives' log-weights)."""
        n, d = self.layout.samples, self.layout.dim
        z1, z2 = self.h[-1][:, :n], self.h[-1][:, n:]
        half = 0.5 * (z1 * z1).sum(-1)
        pos = -0.5 * ((z1 - z2) ** 2).sum(-1)
        self.one[..., :d].copy_(z1)
        self.rhs[..., :d].copy_(z1)
        self.rhs[..., d].copy_(-half)
        torch.bmm(self.one, _t(self.rhs), out=self.s)
        self.s.diagonal(dim1=-2, dim2=-1).copy_(pos + half)
        torch.amax(self.s, dim=-1, keepdim=True, out=self.top)
        self.s.sub_(self.top).exp_()
        return half, pos

    def _loss_gradient(self) -> torch.Tensor:
        """delta = [g_z; g_z'] (up to step_scale); returns the per-configuration batch-mean loss."""
        if self.loss == "dot":
            return self._dot_gradient()
        return self._paper_gradient()

    def _dot_gradient(self) -> torch.Tensor:
        n, d = self.layout.samples, self.layout.dim
        s, one, prod, tmp, dl = self.s, self.one, self.prod, self.tmp, self.delta[0]
        z1, z2 = self.h[-1][:, :n], self.h[-1][:, n:]
        self._dot_logits()
        one[..., :d].copy_(z2)
        torch.bmm(s, one, out=prod)
        inv = prod[..., d:].reciprocal()
        torch.mul(prod[..., :d], inv, out=dl[:, :n])
        dl[:, :n].sub_(z2)
        torch.mul(z1, inv, out=tmp)
        torch.bmm(_t(s), tmp, out=dl[:, n:])
        dl[:, n:].sub_(z1)
        lse = prod[..., d].log() + self.top[..., 0]
        return (lse - (z1 * z2).sum(-1) / self.tau).mean(-1)

    def _paper_gradient(self) -> torch.Tensor:
        n, d = self.layout.samples, self.layout.dim
        s, one, rhs, prod, prod_t = self.s, self.one, self.rhs, self.prod, self.prod_t
        z1, z2 = self.h[-1][:, :n], self.h[-1][:, n:]
        half, pos = self._paper_logits()  # leaves one = [z, 1]
        torch.bmm(s, one, out=prod)
        inv = prod[..., d:].reciprocal()
        a_pos = s.diagonal(dim1=-2, dim2=-1)[..., None] * inv
        torch.mul(one, inv, out=rhs)
        torch.bmm(_t(s), rhs, out=prod_t)
        g, g_aug = self.delta[0][:, :n], self.delta[0][:, n:]
        torch.mul(prod[..., :d], inv, out=g)
        g.add_(prod_t[..., :d]).sub_(z1 * (prod_t[..., d:] + a_pos)).sub_(z2 * (1.0 - a_pos))
        torch.sub(z2, z1, out=g_aug)
        g_aug.mul_(1.0 - a_pos)
        return (prod[..., d].log() + self.top[..., 0] - half - pos).mean(-1)

    def _symmetric_gradient(self, left: torch.Tensor, right: torch.Tensor) -> None:
        """grads[0] = W (M + M^T) with M = left^T right (numpy ``Kernel._symmetric_gradient``)."""
        m = torch.bmm(_t(left), right)
        torch.bmm(self.w[0], m + _t(m), out=self.grads[0])

    def _dot_one_layer(self) -> torch.Tensor:
        """dL/dW = W (M + M^T), M = (p x' - x')^T x (numpy ``Kernel._dot_one_layer``) into grads[0]."""
        n, d = self.layout.samples, self.layout.dim
        x1, x2 = self.h[0][:, :n], self.h[0][:, n:]
        z1, z2 = self.h[1][:, :n], self.h[1][:, n:]
        self._dot_logits()
        self.one[..., :d].copy_(x2)
        torch.bmm(self.s, self.one, out=self.prod)
        torch.mul(self.prod[..., :d], self.prod[..., d:].reciprocal(), out=self.tmp)
        self._symmetric_gradient(self.tmp.sub_(x2), x1)
        lse = self.prod[..., d].log() + self.top[..., 0]
        return (lse - (z1 * z2).sum(-1) / self.tau).mean(-1)

    def _paper_one_layer(self) -> torch.Tensor:
        """dL/dW = W (K + K^T), K = F^T [x; x'], F = [alpha x - r x' - c x / 2; r x' / 2] (numpy
        ``Kernel._paper_one_layer``) into grads[0]."""
        n, d = self.layout.samples, self.layout.dim
        s, prod = self.s, self.prod
        x1, x2 = self.h[0][:, :n], self.h[0][:, n:]
        half, pos = self._paper_logits()
        self.one[..., :d].copy_(x1)
        torch.bmm(s, self.one, out=prod)  # [e x, t]
        inv = prod[..., d:].reciprocal()
        a_pos = s.diagonal(dim1=-2, dim2=-1)[..., None] * inv
        half_c = 0.5 * (torch.bmm(_t(s), inv) + a_pos)
        f = self.delta[0]
        top_rows, bottom = f[:, :n], f[:, n:]
        torch.mul(x2, 0.5 * (1.0 - a_pos), out=bottom)
        torch.mul(prod[..., :d], inv, out=top_rows)
        top_rows.sub_(x1 * half_c).sub_(bottom).sub_(bottom)
        self._symmetric_gradient(f, self.h[0])
        return (prod[..., d].log() + self.top[..., 0] - half - pos).mean(-1)


class Records:
    """Weights and losses at the recorded steps, on the host."""

    def __init__(self, weights: list[np.ndarray], times: list[int]):
        self.snaps = [np.empty((len(times), *a.shape)) for a in weights]
        self.losses = np.empty((len(times), len(weights[0])))
        self.where = {t: i for i, t in enumerate(times)}

    def add(self, number: int, value: torch.Tensor, weights: list[torch.Tensor]) -> None:
        i = self.where[number]
        self.losses[i] = value.double().cpu().numpy()
        for snap, a in zip(self.snaps, weights, strict=True):
            snap[i] = a.double().cpu().numpy()


def _view_blocks(rngs: list[np.random.Generator], layout: Layout, settings: TorchSettings
                 ) -> Iterator[tuple[int, Iterator[torch.Tensor]]]:
    """The draws of steps 0 .. steps (the last one only evaluates the final loss) in blocks: (length, each step's
    (seeds, per_step) draws)."""
    total, f, dev = settings.steps + 1, settings.dtype, settings.device
    if settings.views == "numpy":
        streams = Streams(rngs, layout, total)
        for done in range(0, total, streams.block):
            count = min(streams.block, total - done)
            chunk = torch.from_numpy(streams.fill(0, count)[:, :count]).to(dev, f)
            yield count, (chunk[:, i] for i in range(count))
        return
    gen = torch.Generator(device=dev).manual_seed(settings.seed)
    draw = torch.empty((len(rngs), layout.per_step), dtype=f, device=dev)  # reused: each step's draws overwrite it
    for done in range(0, total, 256):
        count = min(256, total - done)
        yield count, (torch.randn(draw.shape, generator=gen, dtype=f, device=dev, out=draw) for _ in range(count))


def train_torch(weights: list[np.ndarray], strengths: np.ndarray, lrs: np.ndarray, groups: np.ndarray,
                rngs: list[np.random.Generator], layout: Layout, base: SimConfig, times: list[int],
                record_every: int, dtype: str, device: str | None, progress: bool, seed: int = 0,
                views: str | None = None) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Run ``train_batched``'s configurations; returns (weight snapshots, losses, step of divergence or -1)."""
    from tqdm.auto import tqdm

    settings = TorchSettings.of(base, record_every, dtype, device, views, seed)
    kernel = TorchKernel(weights, strengths, lrs, groups, layout, settings)
    records = Records(weights, times)
    bar = tqdm(total=settings.steps, disable=not progress, desc="sweep (torch)", unit="step", delay=1.0)
    number = 0
    with torch.no_grad():
        for count, raw_steps in _view_blocks(rngs, layout, settings):
            for raw_step in raw_steps:
                value = kernel.evaluate(raw_step)
                if settings.records(number):
                    records.add(number, value, kernel.w)
                if number < settings.steps:
                    kernel.update(number)
                number += 1
            bar.update(min(count, settings.steps - bar.n))
    bar.close()
    return records.snaps, records.losses, kernel.diverged.cpu().numpy()
