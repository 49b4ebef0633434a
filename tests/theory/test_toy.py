"""The paper's toy data (Sec. 4) and the a-priori collapse threshold of X at W -> 0."""

from __future__ import annotations

import numpy as np
import pytest

from theory.covariance import apriori_covariance, psd_check
from theory.toy import apriori_threshold, augmentation_mask, toy_views


def test_one_noisy_view_adds_noise_only_on_augmented_dims():
    rng = np.random.default_rng(0)
    x, xa = toy_views(rng, 4000, dim=6, augmented_dims=2, strength=1.5, noisy_views=1)
    assert x.shape == xa.shape == (4000, 6)
    np.testing.assert_array_equal(xa[:, :4], x[:, :4])
    assert np.std(xa[:, 4:] - x[:, 4:]) == pytest.approx(1.5, rel=0.03)
    assert np.std(x) == pytest.approx(1.0, rel=0.03)


def test_two_noisy_views_share_the_clean_part():
    rng = np.random.default_rng(1)
    x, xa = toy_views(rng, 4000, dim=4, augmented_dims=2, strength=2.0, noisy_views=2)
    np.testing.assert_array_equal(xa[:, :2], x[:, :2])
    # independent noise on each view: var(x' - x) = 2 s^2, var(x) = 1 + s^2
    assert np.var(xa[:, 2:] - x[:, 2:]) == pytest.approx(8.0, rel=0.05)
    assert np.var(x[:, 2:]) == pytest.approx(5.0, rel=0.05)


def test_batched_strengths():
    rng = np.random.default_rng(2)
    strengths = np.array([0.0, 3.0])
    x, xa = toy_views(rng, 3000, dim=3, augmented_dims=1, strength=strengths, batch_shape=(2,))
    assert x.shape == (2, 3000, 3)
    np.testing.assert_array_equal(xa[0], x[0])
    assert np.std(xa[1, :, 2] - x[1, :, 2]) == pytest.approx(3.0, rel=0.05)


def test_mask_and_invalid_views():
    np.testing.assert_array_equal(augmentation_mask(5, 2), [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(augmentation_mask(3, 0), [0, 0, 0])
    with pytest.raises(ValueError):
        toy_views(np.random.default_rng(0), 4, noisy_views=3)
    with pytest.raises(ValueError):
        apriori_threshold(3)


@pytest.mark.parametrize("data_std", [1.0, 0.5])
def test_apriori_threshold_one_view_is_where_x_at_zero_turns_negative(data_std):
    """Above sqrt(2) data std X(W -> 0) has negative eigenvalues along the augmented block, below it is PSD."""
    threshold = apriori_threshold(1, data_std)
    assert threshold == pytest.approx(np.sqrt(2) * data_std)
    rng = np.random.default_rng(3)
    for factor, negatives in ((0.6, 0), (1.6, 2)):
        x, xa = toy_views(rng, 3000, dim=4, augmented_dims=2, strength=factor * threshold / data_std)
        x, xa = data_std * x, data_std * xa  # rescale data and noise together: the ratio is what matters
        check = psd_check(apriori_covariance(x, xa))
        assert check.n_negative == negatives
        if negatives:
            neg = check.eigenvectors[:, check.eigenvalues < -check.tolerance]
            assert np.sum(neg[2:] ** 2) / negatives > 0.95


def test_apriori_threshold_two_views_is_infinite():
    assert apriori_threshold(2) == np.inf
    rng = np.random.default_rng(4)
    x, xa = toy_views(rng, 3000, dim=4, augmented_dims=2, strength=2.0, noisy_views=2)
    assert psd_check(apriori_covariance(x, xa)).is_psd
