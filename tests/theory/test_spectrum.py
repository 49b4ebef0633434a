"""Embedding spectrum (Eqn 1), collapse rule, effective rank (Roy & Vetterli) and RankMe."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _theory_helpers import random_orthogonal

from theory.spectrum import (
    COLLAPSE_RTOL,
    collapsed_mask,
    covariance,
    effective_rank,
    embedding_spectrum,
    n_collapsed,
    rankme,
    singular_values,
)


def cloud_with_covariance(rng: np.random.Generator, n: int, eigenvalues: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """N points whose 1/N covariance is exactly R diag(eigenvalues) R^T (orthogonal design), and R."""
    d = len(eigenvalues)
    a = rng.standard_normal((n, d))
    a -= a.mean(axis=0)
    design = np.linalg.qr(a)[0]  # centered, orthonormal columns
    r = random_orthogonal(rng, d)
    z = np.sqrt(n) * design * np.sqrt(eigenvalues) @ r.T + rng.standard_normal(d)  # any mean
    return z, r


def test_singular_values_of_known_covariance():
    rng = np.random.default_rng(0)
    eig = np.array([5.0, 2.0, 1.0, 0.3, 1e-4, 0.0])
    z, r = cloud_with_covariance(rng, 50, eig)
    np.testing.assert_allclose(covariance(z), r @ np.diag(eig) @ r.T, atol=1e-12)
    np.testing.assert_allclose(singular_values(z), eig, atol=1e-12)
    np.testing.assert_allclose(covariance(z), np.cov(z.T, bias=True), atol=1e-12)
    spec = embedding_spectrum(z)
    assert spec.n_collapsed == 2  # 1e-4 <= 1e-3 * 5 and the exact zero
    np.testing.assert_allclose(spec.log10[:4], np.log10(eig[:4]), atol=1e-10)


def test_batched_singular_values():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((3, 20, 4)) * np.array([3.0, 1.0, 0.5, 0.1])
    batched = singular_values(z)
    for k in range(3):
        np.testing.assert_allclose(batched[k], singular_values(z[k]), rtol=1e-12)


def test_isotropic_cloud_has_full_effective_rank():
    rng = np.random.default_rng(2)
    d = 8
    spec = embedding_spectrum(rng.standard_normal((4000, d)))
    assert spec.n_collapsed == 0
    assert spec.effective_rank == pytest.approx(d, rel=0.02)
    assert spec.rankme == pytest.approx(d, rel=0.02)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_rank_k_cloud(k):
    rng = np.random.default_rng(3 + k)
    d = 8
    z = rng.standard_normal((500, k)) @ rng.standard_normal((k, d))
    spec = embedding_spectrum(z)
    assert spec.n_collapsed == d - k
    assert spec.effective_rank <= k + 1e-6
    assert spec.effective_rank > 0.5 * k
    assert spec.rankme <= k + 1e-3


def test_effective_rank_closed_forms():
    assert effective_rank(np.ones(7)) == pytest.approx(7.0)
    assert effective_rank(np.full(4, 3.5)) == pytest.approx(4.0)
    assert effective_rank(np.zeros(5)) == 0.0
    assert effective_rank(np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    # p = (1/2, 1/4, 1/4): H = 1.5 ln 2
    assert effective_rank(np.array([2.0, 1.0, 1.0])) == pytest.approx(2**1.5)
    batched = effective_rank(np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(batched, [2.0, 1.0, 0.0])


def test_rankme_matches_its_formula():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((30, 6)) * np.array([4.0, 2.0, 1.0, 0.5, 0.01, 0.0]) + 0.3
    s = np.linalg.svd(z, compute_uv=False)
    p = s / np.sum(np.abs(s)) + 1e-7
    assert rankme(z) == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-12)


def test_normalize_divides_rows_by_norms():
    rng = np.random.default_rng(5)
    z = rng.standard_normal((40, 5)) * np.array([5.0, 1.0, 1.0, 0.2, 0.1]) + 1.0
    manual = z / np.linalg.norm(z, axis=1, keepdims=True)
    np.testing.assert_allclose(singular_values(z, normalize=True), singular_values(manual), rtol=1e-12)
    spec = embedding_spectrum(z, normalize=True)
    np.testing.assert_allclose(spec.singular_values, singular_values(manual), rtol=1e-12)
    assert spec.rankme == pytest.approx(rankme(manual), rel=1e-12)
    assert not np.allclose(singular_values(z), singular_values(manual))


def test_collapse_rule():
    values = np.array([2.0, 2e-3 * 1.01, 1e-3, 0.0])
    np.testing.assert_array_equal(collapsed_mask(values), [False, False, True, True])
    assert n_collapsed(values) == 2
    assert n_collapsed(values, rtol=1e-2) == 3
    np.testing.assert_array_equal(n_collapsed(np.stack([values, np.ones(4)])), [2, 0])
    assert n_collapsed(np.zeros(4)) == 4  # all-zero spectrum: fully collapsed
    assert COLLAPSE_RTOL == pytest.approx(1e-3)


def test_collapse_rule_against_a_reference_counts_total_collapse():
    """Every variance fell from 1 to ~1e-70: relative to its own largest value nothing looks collapsed,
    against the t = 0 scale everything is."""
    final = np.array([3e-70, 2e-70, 1e-71])
    assert n_collapsed(final) == 0
    assert n_collapsed(final, 1.0) == 3
    # the reference only ever raises the scale: a spectrum that grew past it keeps its own largest value
    grown = np.array([100.0, 0.5, 1e-3])
    assert n_collapsed(grown, 1.0) == n_collapsed(grown) == 1
    # one reference per spectrum broadcasts over leading axes
    batch = np.stack([final, grown])
    np.testing.assert_array_equal(n_collapsed(batch, np.array([1.0, 1.0])), [3, 1])
    np.testing.assert_array_equal(collapsed_mask(batch, 1.0)[0], [True, True, True])
    assert n_collapsed(final, 2.5e-68, rtol=1e-2) == 2


def test_embedding_spectrum_input_checks_and_json():
    with pytest.raises(ValueError):
        embedding_spectrum(np.ones((1, 3)))
    with pytest.raises(ValueError):
        embedding_spectrum(np.array([[1.0, np.nan], [0.0, 1.0]]))
    z = np.array([[1.0, 0.0], [-1.0, 0.0], [2.0, 0.0]])
    out = embedding_spectrum(z).to_json()
    json.dumps(out)
    assert out["log10"][1] is None and out["n_collapsed"] == 1


def test_singular_values_resolve_far_below_double_precision_of_the_largest():
    # variances 1 and 1e-24: eigenvalues of C itself would round the small one to ~1e-16 noise
    rng = np.random.default_rng(21)
    base = random_orthogonal(rng, 2)
    z = rng.standard_normal((4000, 2)) * np.array([1.0, 1e-12]) @ base.T
    values = singular_values(z)
    expected = np.linalg.svd(np.cov(z.T, bias=True) / 1.0, compute_uv=False)  # the naive route
    assert values[0] == pytest.approx(expected[0], rel=1e-12)
    assert values[1] == pytest.approx(np.var(z @ base[:, 1]), rel=1e-6)
    assert values[1] < 1e-20


def test_singular_values_pad_when_fewer_samples_than_dims():
    z = np.random.default_rng(22).standard_normal((3, 5))
    values = singular_values(z)
    assert values.shape == (5,)
    np.testing.assert_allclose(values[:3], np.linalg.eigvalsh(np.cov(z.T, bias=True))[::-1][:3], atol=1e-12)
    np.testing.assert_array_equal(values[3:], 0.0)  # padded
    assert values[2] < 1e-25 * values[0]  # centering 3 samples leaves rank 2
