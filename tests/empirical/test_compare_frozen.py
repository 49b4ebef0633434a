"""empirical.compare_frozen: the theory's GD on (whitened) features collapses what Theorem 1 predicts."""

import numpy as np
import pytest

pytest.importorskip("torch")  # empirical.seeding

from empirical import compare_frozen as cf  # noqa: E402


def test_frozen_experiment_collapses_the_strongly_augmented_directions():
    """Isotropic features, one noisy view with std 3 > sqrt(2) on k = 3 of 8 directions: X(W -> 0) has exactly
    those 3 negative directions (Theorem 1) and one trained linear layer collapses them."""
    rng = np.random.default_rng(0)
    d, k = 8, 3
    x = rng.standard_normal((2048, d))
    noise = np.zeros((2048, d))
    noise[:, d - k :] = 3.0 * rng.standard_normal((2048, k))
    res = cf.frozen_experiment(x, x + noise, depths=(1,), steps=1500, lr=0.02)
    assert res["apriori_n_negative"] == k
    one = res["depths"]["1"]
    assert one["observed_collapsed"] == k
    assert one["overlap_apriori_vs_observed"] > 0.95
    assert one["embedding_variance_history"].shape == (len(one["times"]), d)


def test_whiten_gives_isotropic_view_one():
    rng = np.random.default_rng(3)
    r1 = rng.standard_normal((500, 10)) @ rng.standard_normal((10, 10))
    x, x_aug, lam = cf.whiten(r1, r1 + 0.1, 4)
    np.testing.assert_allclose(np.cov(x, rowvar=False), np.eye(4), atol=1e-10)
    np.testing.assert_allclose(x_aug - x, np.broadcast_to(x_aug[0] - x[0], x.shape), atol=1e-10)
    assert np.all(np.diff(lam) <= 0)
