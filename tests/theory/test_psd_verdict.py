"""The three-outcome PSD verdict: calibration on planted spiked models, the bound, the sampling API.

Spiked model: X_b = E[X] + E_b, E_b = (G + G^T) / sqrt(2) with G i.i.d. N(0, s^2), so every off-diagonal
entry of E_b has std s. The noise edge of the selection half's mean (B / 2 samples) is 2 sqrt(d) s / sqrt(B / 2).
"""

import numpy as np
import pytest

from theory.covariance import (
    contrastive_covariance,
    fixed_sequence,
    psd_check,
    psd_lower_bound,
    significant_negatives,
    x_batches,
    x_verdict,
)
from theory.toy import toy_views


def noise(rng: np.random.Generator, batches: int, d: int) -> np.ndarray:
    g = rng.standard_normal((batches, d, d))
    return (g + np.swapaxes(g, 1, 2)) / np.sqrt(2)


def edge(d: int, batches: int) -> float:
    return 2 * np.sqrt(d) / np.sqrt(batches // 2)


def spiked(rng: np.random.Generator, d: int, k: int, size: float) -> np.ndarray:
    """E[X] = -size on k random orthonormal directions, 0 elsewhere."""
    u = np.linalg.qr(rng.standard_normal((d, k)))[0]
    return -size * u @ u.T


def count(samples: np.ndarray, alpha: float = 0.01) -> int:
    return max(significant_negatives(samples, alpha)[-1])


def test_fixed_sequence_stops_at_the_first_failure():
    assert fixed_sequence(np.array([0.001, 0.002, 0.5, 0.0001]), 0.01) == 2
    assert fixed_sequence(np.array([0.5, 0.0]), 0.01) == 0
    assert fixed_sequence(np.array([0.0, 0.0]), 0.01) == 2


@pytest.mark.parametrize(("d", "batches", "trials"), [(16, 8, 2000), (16, 64, 600), (128, 8, 300)])
def test_null_x_is_rarely_called_not_psd(d, batches, trials):
    """E[X] = 0 (PSD, every eigenvalue zero): family-wise error <= 1 %. If calibrated, the bound 1 % plus
    3 binomial standard errors fails with probability < 0.2 %; Holm-free selection and testing on the same
    samples would call nearly every trial not PSD."""
    rng = np.random.default_rng(d + batches)
    hits = sum(count(noise(rng, batches, d)) > 0 for _ in range(trials))
    assert hits / trials <= 0.01 + 3 * np.sqrt(0.01 * 0.99 / trials)


@pytest.mark.parametrize("batches", [8, 32])
def test_power_at_one_noise_edge_at_d_128(batches):
    """One planted eigenvalue the size of the selection half's noise edge is counted in >= 90 % of trials."""
    rng = np.random.default_rng(batches)
    d, trials = 128, 60
    found = sum(count(spiked(rng, d, 1, edge(d, batches)) + noise(rng, batches, d)) >= 1 for _ in range(trials))
    assert found / trials >= 0.9


def test_the_count_stays_below_the_planted_number():
    """k = 4 planted at 2 edges: all four found, and no fifth (the rest of E[X] is zero)."""
    rng = np.random.default_rng(3)
    d, batches = 32, 32
    counts = [count(spiked(rng, d, 4, 2 * edge(d, batches)) + noise(rng, batches, d)) for _ in range(40)]
    assert np.mean(np.array(counts) == 4) >= 0.9 and max(counts) <= 5


def planted_psd_bound(rng, d, batches, lowest, s=0.1):
    u = np.linalg.qr(rng.standard_normal((d, d)))[0]
    lam = np.r_[lowest, rng.uniform(0.5, 2.0, d - 1)]
    return (u * lam) @ u.T + s * noise(rng, batches, d)


@pytest.mark.parametrize(("d", "batches"), [(8, 16), (16, 64)])
def test_psd_bound_covers_the_lowest_eigenvalue(d, batches):
    """The (1 - alpha) lower bound lies below the true lowest eigenvalue in >= 99 % of trials (allowing 3
    binomial standard errors), and its width shrinks like 1 / sqrt(B)."""
    rng = np.random.default_rng(d)
    trials, lowest = 200, 0.3
    bounds = np.array([psd_lower_bound(planted_psd_bound(rng, d, batches, lowest), 0.01) for _ in range(trials)])
    assert np.mean(bounds > lowest) <= 0.01 + 3 * np.sqrt(0.01 * 0.99 / trials)
    wide = np.median([lowest - psd_lower_bound(planted_psd_bound(rng, d, batches // 4, lowest)) for _ in range(50)])
    assert 1.4 < wide / np.median(lowest - bounds) < 3.0  # 4x fewer samples: about 2x wider


def test_psd_bound_matches_the_true_noise_quantile():
    """Independent route: the 99 % quantile of lambda_max(mean - E[X]) by Monte Carlo over fresh noise."""
    rng = np.random.default_rng(5)
    d, batches = 16, 32
    truth = np.quantile([np.linalg.eigvalsh(noise(rng, batches, d).mean(0))[-1] for _ in range(2000)], 0.99)
    widths = []
    for _ in range(30):
        samples = noise(rng, batches, d)
        widths.append(np.linalg.eigvalsh(samples.mean(0))[0] - psd_lower_bound(samples))
    assert 0.8 < np.median(widths) / truth < 1.25


def test_three_verdicts():
    rng = np.random.default_rng(6)
    d, batches = 8, 64
    clearly_psd = planted_psd_bound(rng, d, batches, 1.0)
    check = psd_check(clearly_psd.mean(0), samples=clearly_psd)
    assert check.verdict == "psd" and check.is_psd and check.lower_bound > 0.5
    assert check.describe().startswith("PSD: every eigenvalue above")
    negative = planted_psd_bound(rng, d, batches, -1.0)
    check = psd_check(negative.mean(0), samples=negative)
    assert check.verdict == "not psd" and check.n_negative == 1 and not check.is_psd
    assert check.describe().startswith("not PSD: 1 significantly negative")
    # on the boundary (lowest eigenvalue 0, noise 0.1): neither, and more samples are asked for
    boundary = planted_psd_bound(rng, d, batches, 0.0)
    check = psd_check(boundary.mean(0), samples=boundary)
    assert check.verdict == "undetermined" and not check.is_psd and check.n_negative == 0
    assert check.samples_to_decide is None or check.samples_to_decide > batches
    assert check.describe().startswith("undetermined")


def test_psd_verdict_is_wrong_rarely_when_an_eigenvalue_is_below_minus_delta():
    """lambda_min(E[X]) = -2 delta: "psd" is the wrong answer, given in <= 1 % (+3 SE) of trials."""
    rng = np.random.default_rng(7)
    d, batches, trials, delta = 8, 16, 200, 0.02
    wrong = 0
    for _ in range(trials):
        samples = planted_psd_bound(rng, d, batches, -2 * delta)
        wrong += psd_check(samples.mean(0), samples=samples, delta=delta).verdict == "psd"
    assert wrong / trials <= 0.01 + 3 * np.sqrt(0.01 * 0.99 / trials)


def test_x_batches_equals_x_of_each_batch():
    rng = np.random.default_rng(8)
    x, xa = toy_views(rng, 70, 6, 3, 2.0)
    w = rng.standard_normal((6, 6)) / 3
    for loss in ("paper", "dot"):
        got = x_batches(x, xa, w, loss, 0.5, batch_size=16)
        assert got.shape == (4, 6, 6)  # the last 6 pairs do not fill a batch
        for b in range(4):
            want = contrastive_covariance(x[16 * b : 16 * b + 16], xa[16 * b : 16 * b + 16], w, loss, 0.5)[0]
            np.testing.assert_allclose(got[b], want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(x_batches(x, xa, None, batch_size=70)[0],
                               contrastive_covariance(x, xa, np.zeros((1, 6)))[0], atol=1e-14)
    with pytest.raises(ValueError, match="batch size"):
        x_batches(x, xa, w, batch_size=1)


def test_x_verdict_draws_until_decided():
    """s = 2 on 8 of 16 coordinates, one noisy view, W -> 0: 8 negative directions (paper Sec. 5), found
    from the first 32 batches; at s = 1.414 (the boundary) the sampler spends its whole budget."""
    def sampler(strength):
        return lambda r: toy_views(r, 128, 16, 8, strength)

    check, samples = x_verdict(sampler(2.0), rng=np.random.default_rng(9), batches=32, budget=128)
    assert check.verdict == "not psd" and check.n_negative == 8 and len(samples) == 32
    check, samples = x_verdict(sampler(0.5), rng=np.random.default_rng(10), batches=32, budget=128)
    assert check.verdict == "psd" and len(samples) == 32
    check, samples = x_verdict(sampler(np.sqrt(2.0)), rng=np.random.default_rng(11), batches=8, budget=64)
    assert len(samples) in (8, 16, 32, 64) and (check.verdict != "undetermined" or len(samples) == 64)
    # pairs instead of a sampler: disjoint batches of the given size
    x, xa = toy_views(np.random.default_rng(12), 128 * 32, 16, 8, 2.0)
    check, samples = x_verdict((x, xa), batch_size=128)
    assert len(samples) == 32 and check.verdict == "not psd" and check.n_negative == 8
