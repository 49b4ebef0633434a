"""Contrastive covariance X (Lemma 1-2, Eqn 5-7 with the sign of App. B.2) and the PSD check."""

from __future__ import annotations

import numpy as np
import pytest
from _theory_helpers import central_diff, random_orthogonal, random_views, torch_losses
from scipy.special import logsumexp, softmax

from theory.covariance import apriori_covariance, contrastive_covariance, contrastive_x, holm, psd_check
from theory.dynamics import loss_and_gradients
from theory.predict import negative_subspace
from theory.toy import toy_views

TAU = 0.5


def problem(seed: int, n: int = 9, d: int = 4, d_out: int = 3, noise: float = 0.7):
    rng = np.random.default_rng(seed)
    x, xa = random_views(rng, n, d, noise)
    w = 0.6 * rng.standard_normal((d_out, d))
    return x, xa, w


def eqn2_alpha(z: np.ndarray, za: np.ndarray) -> np.ndarray:
    """alpha of Eqn 2 written from the equation: row softmax of -|z_i - z_j|^2/2 (j != i), -|z_i - z_i'|^2/2
    on the diagonal; independent of the package's kernel."""
    logits = -0.5 * np.sum((z[:, None, :] - z[None, :, :]) ** 2, axis=-1)
    np.fill_diagonal(logits, -0.5 * np.sum((z - za) ** 2, axis=-1))
    return softmax(logits, axis=1)


def eqn2_loss(w: np.ndarray, x: np.ndarray, xa: np.ndarray) -> float:
    """Batch-mean Eqn 2: -log alpha_ii."""
    return float(-np.mean(np.log(np.diagonal(eqn2_alpha(x @ w.T, xa @ w.T)))))


def dot_loss_value(w: np.ndarray, x: np.ndarray, xa: np.ndarray) -> float:
    """Batch-mean cross-entropy of z_i . z_j' / tau with the positive on the diagonal (official toy code)."""
    logits = (x @ w.T) @ (xa @ w.T).T / TAU
    return float(np.mean(logsumexp(logits, axis=1) - np.diagonal(logits)))


def eqn6_loop(x: np.ndarray, xa: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Eqn 6 with the App. B.2 sign, summed over i as printed (not divided by N)."""
    n, d = x.shape
    out = np.zeros((d, d))
    for i in range(n):
        inner = np.zeros(d)
        for j in range(n):
            if j != i:
                inner += alpha[i, j] * (xa[i] - x[j]) + alpha[j, i] * (x[i] - x[j])
        out += np.outer(inner, x[i])
        out -= (1 - alpha[i, i]) * np.outer(xa[i] - x[i], xa[i])
    return out


@pytest.mark.parametrize("loss", ["paper", "dot"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_x_is_fixed_by_finite_difference_gradient_of_an_independent_loss(loss, seed):
    """With W of full column rank, -dL/dW = W X determines X = -W^+ dL/dW; dL/dW by central differences of
    the loss written in this file. Catches a wrong alpha, a wrong sign or scale, and an asymmetric X."""
    x, xa, w = problem(seed, d=4, d_out=6)
    fun = eqn2_loss if loss == "paper" else dot_loss_value
    grad = central_diff(lambda v: fun(v, x, xa), w, h=1e-6)
    x_fd = -np.linalg.pinv(w) @ grad
    cov = contrastive_covariance(x, xa, w, loss, TAU)[0]
    np.testing.assert_allclose(cov, x_fd, rtol=1e-6, atol=1e-7 * np.abs(cov).max())
    np.testing.assert_allclose(contrastive_x(x, xa, w, loss, TAU), x_fd, rtol=1e-6, atol=1e-7 * np.abs(cov).max())
    np.testing.assert_allclose(x_fd, x_fd.T, atol=1e-6 * np.abs(cov).max())  # Lemma 2: X is symmetric


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_sigmas_equal_lemma2_double_sums_and_are_psd(seed):
    x, xa, w = problem(seed)
    n, d = x.shape
    alpha = eqn2_alpha(x @ w.T, xa @ w.T)
    s0_ref = np.zeros((d, d))
    s1_ref = np.zeros((d, d))
    for i in range(n):
        for j in range(n):
            s0_ref += alpha[i, j] * np.outer(x[i] - x[j], x[i] - x[j])
        s1_ref += (1 - alpha[i, i]) * np.outer(xa[i] - x[i], xa[i] - x[i])
    cov, s0, s1 = contrastive_covariance(x, xa, w)
    np.testing.assert_allclose(s0, s0_ref / n, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(s1, s1_ref / n, rtol=1e-11, atol=1e-14)
    for m in (s0, s1):
        assert np.linalg.eigvalsh(m).min() >= -1e-12 * np.abs(m).max()


@pytest.mark.parametrize("seed", [0, 1])
def test_paper_x_equals_eqn6_form_of_paper_md_1_4(seed):
    x, xa, w = problem(seed)
    alpha = eqn2_alpha(x @ w.T, xa @ w.T)
    cov = contrastive_covariance(x, xa, w)[0]
    np.testing.assert_allclose(cov, eqn6_loop(x, xa, alpha) / len(x), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("seed", [0, 1])
def test_dot_sigma0_is_psd(seed):
    x, xa, w = problem(seed)
    s0 = contrastive_covariance(x, xa, w, "dot", TAU)[1]
    assert np.linalg.eigvalsh(s0).min() >= -1e-12 * np.abs(s0).max()


@pytest.mark.parametrize("loss", ["paper", "dot"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minus_weight_gradient_equals_w_x(loss, seed):
    """-dL/dW = W X (Eqn 5) with dL/dW from the package's backprop of the closed-form embedding gradients."""
    x, xa, w = problem(seed)
    cov = contrastive_covariance(x, xa, w, loss, TAU)[0]
    _, (grad,) = loss_and_gradients([w], x, xa, loss=loss, temperature=TAU)
    np.testing.assert_allclose(-grad, w @ cov, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("loss", ["paper", "dot"])
@pytest.mark.parametrize("seed", [0, 1])
def test_minus_weight_gradient_equals_w_x_torch_autograd(loss, seed):
    torch, reference = torch_losses(TAU)
    x, xa, w = problem(seed, n=12, d=5, d_out=5)
    tw = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    tx, txa = torch.tensor(x), torch.tensor(xa)
    reference[loss](tx @ tw.T, txa @ tw.T).backward()
    cov = contrastive_covariance(x, xa, w, loss, TAU)[0]
    np.testing.assert_allclose(-tw.grad.numpy(), w @ cov, rtol=1e-9, atol=1e-13)


def test_x_at_zero_weight_exact_uniform_alpha_formula():
    """At W = 0 every alpha = 1/N: Sigma0 = 2 Cov_N(x) exactly and Sigma1 = (N-1)/N^2 sum eps eps^T."""
    rng = np.random.default_rng(3)
    x, xa = random_views(rng, 30, 4, noise=1.3)
    n = len(x)
    cov, s0, s1 = contrastive_covariance(x, xa, np.zeros((2, 4)))
    xc = x - x.mean(0)
    eps = xa - x
    np.testing.assert_allclose(s0, 2 * xc.T @ xc / n, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(s1, (n - 1) / n**2 * eps.T @ eps, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(apriori_covariance(x, xa), cov, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("strength", [1.0, np.sqrt(3.0)])
def test_x_at_zero_one_noisy_view_is_two_cov_minus_noise_cov(strength):
    """Population value: X(W -> 0) -> 2 I - diag(0, s^2) (paper Sec. 5), statistical tolerance."""
    rng = np.random.default_rng(4)
    x, xa = toy_views(rng, 2000, dim=4, augmented_dims=2, strength=strength, noisy_views=1)
    cov = apriori_covariance(x, xa)
    expected = np.diag([2.0, 2.0, 2.0 - strength**2, 2.0 - strength**2])
    np.testing.assert_allclose(cov, expected, atol=0.25)
    # and against the same statistic estimated independently from the sample
    direct = 2 * np.cov(x.T, bias=True) - np.cov((xa - x).T, bias=True)
    np.testing.assert_allclose(cov, direct, atol=0.02)
    assert psd_check(cov).is_psd == (strength**2 < 2.0)


def test_x_at_zero_two_noisy_views_is_two_cov_clean():
    """Both views noised (official toy code): the noise enters Sigma0 too, X(W -> 0) -> 2 Cov(clean), PSD."""
    rng = np.random.default_rng(5)
    n, s = 3000, 1.5
    clean = rng.standard_normal((n, 4)) @ np.diag([1.0, 0.8, 1.2, 0.9])
    mask = np.array([0.0, 0.0, 1.0, 1.0])
    x = clean + s * mask * rng.standard_normal((n, 4))
    xa = clean + s * mask * rng.standard_normal((n, 4))
    cov = apriori_covariance(x, xa)
    # sampling std of the entries is ~0.11 here
    np.testing.assert_allclose(cov, 2 * np.cov(clean.T, bias=True), atol=0.45)
    assert psd_check(cov).is_psd
    # toy_views with noisy_views=2 gives the same picture
    xt, xat = toy_views(rng, n, dim=4, augmented_dims=2, strength=s, noisy_views=2)
    np.testing.assert_allclose(apriori_covariance(xt, xat), 2 * np.eye(4), atol=0.45)


def test_ntxent_has_no_contrastive_covariance():
    x, xa, w = problem(0)
    with pytest.raises(ValueError, match="ntxent"):
        contrastive_covariance(x, xa, w, "ntxent")


def test_shape_errors():
    x, xa, w = problem(0)
    with pytest.raises(ValueError):
        contrastive_covariance(x, xa[:-1], w)
    with pytest.raises(ValueError):
        contrastive_covariance(x, xa, w[:, :-1])
    with pytest.raises(ValueError):
        psd_check(np.ones((2, 3)))


def test_batched_x_equals_per_config():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 7, 4))
    xa = x + 0.8 * rng.standard_normal(x.shape)
    w = rng.standard_normal((2, 3, 4, 4))
    for loss in ("paper", "dot"):
        batched = contrastive_covariance(x, xa, w, loss, TAU)
        for a in range(2):
            for b in range(3):
                single = contrastive_covariance(x[a, b], xa[a, b], w[a, b], loss, TAU)
                for got, want in zip(batched, single, strict=True):
                    np.testing.assert_allclose(got[a, b], want, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize(
    ("eigs", "n_negative"),
    [([3.0, 1.0, -0.01, -2.0], 1), ([3.0, 1.0, -0.01, 0.0], 0), ([2.0, -0.5, -1.0, -1.5], 3), ([0.0] * 4, 0)],
)
def test_psd_check_counts_clearly_negative_eigenvalues(eigs, n_negative):
    q = random_orthogonal(np.random.default_rng(7), 4)
    eigs = np.array(eigs)
    m = q @ np.diag(eigs) @ q.T
    check = psd_check(m, rtol=1e-2)
    np.testing.assert_allclose(check.eigenvalues, np.sort(eigs)[::-1], atol=1e-12)
    assert check.tolerance == pytest.approx(1e-2 * np.abs(eigs).max())
    assert check.n_negative == n_negative
    assert check.is_psd == (n_negative == 0)
    np.testing.assert_allclose(m @ check.eigenvectors, check.eigenvectors * check.eigenvalues, atol=1e-12)
    np.testing.assert_allclose(check.eigenvectors.T @ check.eigenvectors, np.eye(4), atol=1e-12)


def sym_noise(rng: np.random.Generator, shape: tuple, d: int) -> np.ndarray:
    a = rng.standard_normal((*shape, d, d))
    return (a + np.swapaxes(a, -1, -2)) / 2


def test_psd_check_with_samples_counts_significant_negatives():
    rng = np.random.default_rng(31)
    q = random_orthogonal(rng, 4)
    truth = q @ np.diag([1.0, 0.5, 0.0, -0.5]) @ q.T
    # noise of std 0.3 per estimate: with 400 samples the mean is within ~0.05 of the truth
    samples = truth + 0.3 * sym_noise(rng, (400,), 4)
    check = psd_check(samples.mean(0), rtol=0.0, samples=samples)
    assert check.n_negative == 1 and not check.is_psd  # the true zero eigenvalue is noise, only -0.5 counts
    assert check.n_significant == (1, 1) and check.alpha == 0.01
    assert check.statistics.shape == check.p_values.shape == check.standard_errors.shape == (2, 4)
    assert np.all(check.standard_errors < 0.05)
    assert check.basis.shape == (4, 1) and abs(check.basis[:, 0] @ q[:, 3]) > 0.99
    np.testing.assert_array_equal(check.negative, [False, False, False, True])
    np.testing.assert_array_equal(check.negative, check.eigenvalues < -check.tolerance)  # older callers' mask
    np.testing.assert_allclose(negative_subspace(samples.mean(0), 0.0, samples), check.basis)
    # the relative rule still caps the count: -0.5 is not below -0.6 * max|eig|
    assert psd_check(samples.mean(0), rtol=0.6, samples=samples).n_negative == 0


def test_psd_check_statistics_are_held_out_one_sided_t_tests():
    """Split s: directions = eigenvectors of the mean of half s, tested with scipy's one-sample t test
    (alternative 'less') on the other half."""
    from scipy.stats import ttest_1samp

    rng = np.random.default_rng(32)
    samples = np.diag([1.0, 0.2, -0.1, -0.3, 0.0]) + 0.4 * sym_noise(rng, (23,), 5)
    check = psd_check(samples.mean(0), samples=samples)
    halves = (samples[:11], samples[11:])
    for s in (0, 1):
        vecs = np.linalg.eigh(halves[s].mean(0))[1]  # ascending: tested most negative first
        np.testing.assert_allclose(np.abs(np.sum(vecs * check.directions[s], axis=0)), 1.0, atol=1e-10)
        rayleigh = np.einsum("ik,bij,jk->bk", vecs, halves[1 - s], vecs)
        ref = ttest_1samp(rayleigh, 0.0, alternative="less")
        np.testing.assert_allclose(check.statistics[s], ref.statistic, rtol=1e-9)
        np.testing.assert_allclose(check.p_values[s], ref.pvalue, rtol=1e-9, atol=1e-300)


def test_holm_equals_closed_testing_with_bonferroni():
    """Holm's step-down is the closure of Bonferroni tests: reject H_i iff every subset S containing i has
    min_{j in S} p_j <= alpha / |S| (brute force over all subsets)."""
    from itertools import combinations

    rng = np.random.default_rng(33)
    for _ in range(50):
        p = rng.uniform(0, 0.05, 6) ** rng.uniform(0.5, 2.0)
        alpha = 0.05
        brute = np.array([
            all(min(p[list(sub)]) <= alpha / size
                for size in range(1, 7) for sub in combinations(range(6), size) if i in sub)
            for i in range(6)
        ])
        np.testing.assert_array_equal(holm(p, alpha), brute)


def test_psd_check_sample_errors():
    rng = np.random.default_rng(34)
    few = np.diag([1.0, 0.5, -0.3, 0.2]) + 0.01 * sym_noise(rng, (3,), 4)
    check = psd_check(few.mean(0), samples=few)  # too few to cross-fit: nothing can be decided
    assert check.verdict == "undetermined" and check.n_negative == 0 and check.statistics is None
    assert check.samples_to_decide == 4
    with pytest.raises(ValueError, match="shape"):
        psd_check(np.eye(3), samples=sym_noise(rng, (8,), 4))
    with pytest.raises(ValueError, match="alpha"):
        psd_check(np.eye(4), samples=sym_noise(rng, (8,), 4), alpha=1.5)


def test_psd_check_identical_samples_are_exact():
    """Zero spread: a negative held-out Rayleigh quotient is certain, a non-negative one is not evidence."""
    m = np.diag([1.0, 0.0, -1.0])
    check = psd_check(m, samples=np.repeat(m[None], 6, axis=0))
    assert check.n_negative == 1
    assert check.p_values[:, 0].tolist() == [0.0, 0.0] and np.all(check.p_values[:, 1:] == 1.0)
    assert check.verdict == "not psd"


def test_psd_check_without_samples_uses_the_relative_tolerance_only():
    check = psd_check(np.diag([1.0, -0.005, -0.5]))
    assert check.n_negative == 1 and check.standard_errors is None
