"""Keyed random streams: one generator per (seed, key, ...) tuple, independent of every other tuple.

``numpy.random.SeedSequence`` hashes the whole key tuple, so streams for (seed, 1) and (seed + 1, 0) are
unrelated; ``seed + key`` arithmetic would make them the same stream. The key count goes first because
SeedSequence ignores trailing zero words: (1,) and (1, 0) would otherwise be one stream.
"""

from __future__ import annotations

import numpy as np
import torch


def _sequence(seed: int, keys: tuple[int, ...]) -> np.random.SeedSequence:
    return np.random.SeedSequence([len(keys), seed, *keys])


def keyed_rng(seed: int, *keys: int) -> np.random.Generator:
    """numpy Generator for the stream named by ``(seed, *keys)`` (non-negative integers)."""
    return np.random.default_rng(_sequence(seed, keys))


def keyed_torch_generator(seed: int, *keys: int) -> torch.Generator:
    """torch CPU Generator for the stream named by ``(seed, *keys)``, seeded from the same hash."""
    state = _sequence(seed, keys).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
