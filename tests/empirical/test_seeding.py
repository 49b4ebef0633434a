"""empirical.seeding: keyed streams are reproducible and distinct where seed arithmetic collides."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from empirical.seeding import keyed_rng, keyed_torch_generator  # noqa: E402


def test_same_key_same_stream_and_no_arithmetic_collisions():
    np.testing.assert_array_equal(keyed_rng(3, 1).random(5), keyed_rng(3, 1).random(5))
    # seed + key would give (0, 1) and (1, 0) one stream, and (2,) that of (1, 1); trailing zeros count
    draws = [keyed_rng(*k).random(5) for k in ((0, 1), (1, 0), (1, 1), (2,), (1,), (1, 0, 0), (0,))]
    assert len({d.tobytes() for d in draws}) == len(draws)


def test_torch_generator_is_keyed_the_same_way():
    a = torch.rand(5, generator=keyed_torch_generator(7, 2))
    assert torch.equal(a, torch.rand(5, generator=keyed_torch_generator(7, 2)))
    assert not torch.equal(a, torch.rand(5, generator=keyed_torch_generator(7, 3)))
    assert not torch.equal(a, torch.rand(5, generator=keyed_torch_generator(2, 7)))
