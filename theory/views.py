"""The sweep's views: where one step's draws lie in a seed's random stream, and streams drawn ahead.

``Layout`` maps a seed's raw normal draws to ``toy.toy_views``'s (x, x') bitwise; ``Streams`` draws the views
of many steps ahead per seed, packed for the numpy kernel (``theory.batched``) or plain for the torch one
(``theory.torch_kernel``). Both kernels import it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STREAM_BYTES = 32 * 2**20  # views drawn ahead, per buffer


@dataclass
class Layout:
    """Where the views of one step lie in a seed's stream (the order of ``toy.toy_views``).

    Per step the stream holds ``clean`` (N, d), then the noise of x' (N, k), then, with two noisy views,
    the noise of x (N, k).
    """

    samples: int
    dim: int
    augmented_dims: int
    noisy_views: int

    @property
    def per_step(self) -> int:
        return self.samples * (self.dim + self.noisy_views * self.augmented_dims)

    def split(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(clean, noise of x', noise of x or None) as views of raw (..., per_step)."""
        n, d, k = self.samples, self.dim, self.augmented_dims
        lead = raw.shape[:-1]
        clean = raw[..., : n * d].reshape(*lead, n, d)
        first = raw[..., n * d : n * (d + k)].reshape(*lead, n, k)
        second = raw[..., n * (d + k) :].reshape(*lead, n, k) if self.noisy_views == 2 else None
        return clean, first, second

    def pack(self, raw: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Rearrange raw (G, T, per_step) into out (G, T, 2, 2N, d + 1): ``out[..., 0, :, :]`` = [clean, 1;
        clean, 1] and ``out[..., 1, :, :]`` = [noise of x, 0; noise of x', 0], zero on the clean dimensions (and
        for a clean x), so that [x, 1; x', 1] = out[..., 0] + strength * out[..., 1] in two whole-array passes
        per configuration; the column of ones turns a product e [x', 1] into [e x', row sums]."""
        clean, first, second = self.split(raw)
        n, lo, d = self.samples, self.dim - self.augmented_dims, self.dim
        out[..., 0, :, d] = 1.0
        out[..., 1, :, d] = 0.0
        np.copyto(out[..., 0, :n, :d], clean, casting="same_kind")
        np.copyto(out[..., 0, n:, :d], clean, casting="same_kind")
        out[..., 1, :, :lo] = 0.0
        if second is None:
            out[..., 1, :n, lo:d] = 0.0
        else:
            np.copyto(out[..., 1, :n, lo:d], second, casting="same_kind")
        np.copyto(out[..., 1, n:, lo:d], first, casting="same_kind")
        return out

    def views(self, raw: np.ndarray, strengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x, x') for raw (C, per_step) and one strength per row; bitwise ``toy.toy_views``."""
        clean, first, second = self.split(raw)
        scale = np.asarray(strengths, dtype=np.float64)[:, None, None]
        lo = self.dim - self.augmented_dims
        x_aug = clean.copy()
        x_aug[..., lo:] += scale * first
        x = clean.copy()
        if second is not None:
            x[..., lo:] += scale * second
        return x, x_aug


class Streams:
    """One generator per seed, drawing the raw views of ``block`` steps at a time: (G, block, per_step).

    The draws are always float64 (the stream ``simulate`` sees). With ``packed`` (the numpy kernel's input),
    ``fill`` returns them rearranged by ``Layout.pack`` in ``dtype``, once per seed instead of once per
    configuration.
    """

    def __init__(self, rngs: list[np.random.Generator], layout: Layout, total_steps: int, packed: bool = False,
                 dtype: str = "float64", alloc=np.empty):
        self.rngs, self.layout = rngs, layout
        per = 8 * layout.per_step * len(rngs)
        self.block = int(max(1, min(256, total_steps, STREAM_BYTES // per)))
        self.buffers = [np.empty((len(rngs), self.block, layout.per_step)) for _ in range(2)]
        shape = (len(rngs), self.block, 2, 2 * layout.samples, layout.dim + 1)
        self.packed = [alloc(shape, dtype) for _ in range(2)] if packed else None

    def fill(self, which: int, count: int, seeds: list[int] | None = None) -> np.ndarray:
        """Draw the next ``count`` steps of the given seeds (default all) into buffer ``which``; returns it."""
        buf = self.buffers[which]
        for g in range(len(self.rngs)) if seeds is None else seeds:
            self.rngs[g].standard_normal(out=buf[g, :count])
            if self.packed is not None:
                self.layout.pack(buf[g, :count], self.packed[which][g, :count])
        return self.output(which)

    def output(self, which: int) -> np.ndarray:
        return self.buffers[which] if self.packed is None else self.packed[which]
