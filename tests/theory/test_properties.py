"""Property tests (hypothesis, bounded by the conftest profile) on the collapse conditions of the theory."""

from __future__ import annotations

import numpy as np
import pytest
from _theory_helpers import random_orthogonal, torch_losses
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from theory.covariance import PSD_RTOL, contrastive_covariance, psd_check
from theory.dynamics import expm_solution, run_ode
from theory.predict import alignment_matrix, alignment_score, conserved_quantities, layer_alignment
from theory.spectrum import n_collapsed
from theory.toy import toy_views

seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=15)
@given(
    seed=seeds,
    n=st.integers(2, 12),
    d=st.integers(1, 5),
    d_out=st.integers(1, 5),
    noise=st.floats(0.0, 3.0),
    scale=st.floats(0.0, 2.0),
    loss=st.sampled_from(["paper", "dot"]),
)
def test_w_x_is_minus_the_autograd_weight_gradient(seed, n, d, d_out, noise, scale, loss):
    """Eqn 5, -dL/dW = W X, against torch autograd of the loss written from the equations, for any shapes,
    noise and weight scale (W = 0 included); and X is symmetric (Lemma 2)."""
    torch, reference = torch_losses(0.5)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    xa = x + noise * rng.standard_normal((n, d))
    w = scale * rng.standard_normal((d_out, d))
    cov = contrastive_covariance(x, xa, w, loss, 0.5)[0]
    tw = torch.tensor(w, requires_grad=True)
    reference[loss](torch.tensor(x) @ tw.T, torch.tensor(xa) @ tw.T).backward()
    grad = tw.grad.numpy()
    np.testing.assert_allclose(-grad, w @ cov, rtol=1e-9, atol=1e-12 * max(np.abs(grad).max(), 1.0))
    np.testing.assert_allclose(cov, cov.T, atol=1e-12 * max(np.abs(cov).max(), 1e-300))


@given(seed=seeds, d=st.integers(2, 6), data=st.data())
def test_expm_flow_leaves_exactly_m_vanishing_singular_values(seed, d, data):
    """Theorem 1: X with m negative eigenvalues, generic W(0): W(0) expm(X t) has m collapsed singular values.

    Eigenvalues: positive in [1, 1.2], negative in [-1.2, -0.5]; W(0) singular values in [0.7, 1.4]. At t = 10
    the spread of the surviving variances is below 4 e^4 < 1e3 and the collapsed ones are < 1e-12 of the top.
    """
    m = data.draw(st.integers(0, d - 1), label="m")
    rng = np.random.default_rng(seed)
    lam = np.concatenate([rng.uniform(1.0, 1.2, d - m), rng.uniform(-1.2, -0.5, m)])
    q = random_orthogonal(rng, d)
    cov = q @ np.diag(lam) @ q.T
    assert psd_check(cov).n_negative == m
    w0 = random_orthogonal(rng, d) @ np.diag(rng.uniform(0.7, 1.4, d)) @ random_orthogonal(rng, d).T
    w_t = expm_solution(w0, cov, np.array([10.0]))[0]
    variances = np.linalg.svd(w_t, compute_uv=False) ** 2  # embedding variances for isotropic data
    assert n_collapsed(variances) == m
    # and the collapsed input directions are X's negative eigen-directions
    if m:
        right = np.linalg.svd(w_t)[2][d - m :].T
        assert np.sum((right.T @ q[:, d - m :]) ** 2) / m > 1 - 1e-6


@given(seed=seeds, d=st.integers(1, 6), d_out=st.integers(1, 6))
def test_positive_definite_x_never_shrinks_a_singular_value(seed, d, d_out):
    rng = np.random.default_rng(seed)
    q = random_orthogonal(rng, d)
    cov = q @ np.diag(rng.uniform(0.01, 2.0, d)) @ q.T
    w0 = rng.standard_normal((d_out, d))
    times = np.linspace(0.0, 3.0, 13)
    sig = np.linalg.svd(expm_solution(w0, cov, times), compute_uv=False)  # (T, k), descending
    assert np.all(np.diff(sig, axis=0) >= -1e-12 * sig[:-1])
    assert np.all(sig[-1] >= sig[0])


@settings(max_examples=8)
@given(seed=seeds, scale=st.floats(0.3, 1.0), noise=st.floats(0.1, 2.0))
def test_conservation_law_under_infonce_flow(seed, scale, noise):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, 3))
    xa = x + noise * rng.standard_normal((8, 3))
    w0 = [scale * rng.standard_normal((3, 3)), scale * rng.standard_normal((3, 3))]
    traj = run_ode(w0, 2.0, views=(x, xa), records=4, rtol=1e-10, atol=1e-12)
    c0 = conserved_quantities(w0)[0]
    for k in range(1, len(traj.times)):
        w1, w2 = traj.weights[0][k], traj.weights[1][k]
        ck = conserved_quantities([w1, w2])[0]
        # each term moves, their difference does not
        moved = np.linalg.norm(w1 @ w1.T - w0[0] @ w0[0].T)
        assert moved > 1e-3 * np.linalg.norm(w0[0] @ w0[0].T)
        assert np.linalg.norm(ck - c0) <= 1e-5 * moved


@settings(max_examples=8)
@given(seed=seeds)
def test_conservation_law_under_fixed_x_flow_three_layers(seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((3, 3))
    cov = (a + a.T) / 4
    w0 = [0.25 * rng.standard_normal((3, 3)) for _ in range(3)]  # far from the blow-up of sigma' = l sigma^5
    traj = run_ode(w0, 0.3, cov=cov, records=2, rtol=1e-10, atol=1e-12)
    pairs = zip(conserved_quantities(w0), conserved_quantities(traj.final), w0[:2], traj.final[:2], strict=True)
    for before, after, w_start, w_end in pairs:
        moved = np.linalg.norm(w_end @ w_end.T - w_start @ w_start.T)
        assert moved > 1e-3 * np.linalg.norm(w_start @ w_start.T)
        assert np.linalg.norm(after - before) <= 1e-5 * moved


def grow_fixed_x_flow(weights, cov, growth):
    """Run the fixed-X two-layer flow in chunks of a quarter of the leading mode's remaining blow-up time
    (Theorem 3), until the end-to-end leading singular value has grown by ``growth``: long, but before blow-up."""
    start = np.linalg.svd(weights[1] @ weights[0], compute_uv=False)[0]
    lam_max = np.linalg.eigvalsh(cov)[-1]
    for _ in range(200):
        top = np.linalg.svd(weights[1] @ weights[0], compute_uv=False)[0]
        if top >= growth * start:
            return weights
        weights = run_ode(weights, 0.25 / (2 * lam_max * top), cov=cov, records=1, rtol=1e-10, atol=1e-13).final
    raise AssertionError("the flow did not grow")


@settings(max_examples=10)
@given(seed=seeds)
def test_alignment_tends_to_identity_for_positive_definite_x(seed):
    """Theorem 2: X > 0, non-degenerate singular values: |V2^T U1| -> I on the modes that grow."""
    rng = np.random.default_rng(seed)
    d = 4
    q = random_orthogonal(rng, d)
    cov = q @ np.diag([1.0, 0.7, 0.45, 0.25]) @ q.T
    s0 = 0.1 * np.exp(-0.35 * np.arange(d))  # distinct, as the paper's init
    weights = [random_orthogonal(rng, d) @ np.diag(s0) @ random_orthogonal(rng, d).T for _ in range(2)]
    before = alignment_matrix(*weights)
    after = alignment_matrix(*grow_fixed_x_flow(weights, cov, 1e3))
    assert after[0, 0] > 0.999
    assert after[0, 0] >= before[0, 0]
    assert alignment_score(after, 2) > 0.7
    assert alignment_score(after, 2) > alignment_score(before, 2)


@given(
    seed=seeds,
    eigs=st.lists(st.floats(-5.0, 5.0, allow_nan=False), min_size=1, max_size=6),
)
def test_psd_check_invariant_under_orthogonal_change_of_basis(seed, eigs):
    eigs = np.array(eigs)
    tol = PSD_RTOL * np.abs(eigs).max()
    assume(np.all(np.abs(eigs + tol) > 1e-6 * max(tol, 1e-300)) or tol == 0)
    rng = np.random.default_rng(seed)
    q1, q2 = random_orthogonal(rng, len(eigs)), random_orthogonal(rng, len(eigs))
    m = q1 @ np.diag(eigs) @ q1.T
    a, b = psd_check(m), psd_check(q2 @ m @ q2.T)
    assert a.is_psd == b.is_psd
    assert a.n_negative == b.n_negative == int(np.sum(eigs < -tol))
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, atol=1e-12 * max(np.abs(eigs).max(), 1.0))


# Calibration of the cross-fitted PSD test (alpha = 0.01): d = 16, 64 batches, as the CLI measures X.
D, BATCHES, TRIALS = 16, 64, 150


def sym_noise(rng: np.random.Generator, shape: tuple, d: int) -> np.ndarray:
    a = rng.standard_normal((*shape, d, d))
    return (a + np.swapaxes(a, -1, -2)) / 2


def not_psd_rate(make_samples, rng: np.random.Generator) -> float:
    hits = 0
    for _ in range(TRIALS):
        samples = make_samples(rng)
        hits += psd_check(samples.mean(0), samples=samples).verdict == "not psd"
    return hits / TRIALS


@settings(max_examples=4)
@given(seed=seeds, noise=st.floats(0.01, 10.0))
def test_psd_check_pure_noise_is_rarely_called_not_psd(seed, noise):
    """E[X] = 0 is PSD (on the boundary): 'not PSD' has probability <= alpha = 1%. 150 trials: the bound
    5% fails with probability < 1e-3 if calibrated, and catches a test choosing and testing on the same data
    (it calls this 100% not PSD)."""
    rate = not_psd_rate(lambda r: noise * sym_noise(r, (BATCHES,), D), np.random.default_rng(seed))
    assert rate <= 0.05


@settings(max_examples=4)
@given(seed=seeds, noise=st.floats(0.05, 2.0))
def test_psd_check_psd_mean_with_zero_eigenvalues_is_rarely_called_not_psd(seed, noise):
    rng = np.random.default_rng(seed)

    def make(r):
        q = random_orthogonal(r, D)
        mean = q @ np.diag(np.r_[r.uniform(0.5, 2.0, D // 2), np.zeros(D // 2)]) @ q.T
        return mean + noise * sym_noise(r, (BATCHES,), D)

    assert not_psd_rate(make, rng) <= 0.05


@settings(max_examples=6)
@given(seed=seeds, at_zero=st.booleans())
def test_psd_check_finds_the_one_noisy_view_collapse(seed, at_zero):
    """s = 2 on the last 8 of 16 coordinates, one noisy view: E X(W -> 0) = (N-1)/N (2 I - diag(0, 4 I)),
    8 eigenvalues near -2 (and still 8 negative at a random W); 64 batches of N = 128."""
    rng = np.random.default_rng(seed)
    x, xa = toy_views(rng, 128, D, 8, 2.0, noisy_views=1, batch_shape=(BATCHES,))
    w = np.zeros((1, D)) if at_zero else rng.standard_normal((D, D)) / 4
    samples = contrastive_covariance(x, xa, w)[0]
    check = psd_check(samples.mean(0), samples=samples)
    assert check.verdict == "not psd" and check.n_negative == 8 and check.n_significant == (8, 8)
    # the basis spans the augmented coordinates
    assert np.sum(check.basis[D - 8 :] ** 2) / 8 > 0.9


@settings(max_examples=10)
@given(seed=seeds, d=st.integers(2, 8), shift=st.floats(-1.0, 1.0))
def test_psd_check_with_samples_invariant_under_orthogonal_change_of_basis(seed, d, shift):
    rng = np.random.default_rng(seed)
    samples = shift * np.diag(np.linspace(-1.0, 1.0, d)) + 0.5 * sym_noise(rng, (12,), d)
    q = random_orthogonal(rng, d)
    rotated = q @ samples @ q.T
    a = psd_check(samples.mean(0), samples=samples)
    b = psd_check(rotated.mean(0), samples=rotated)
    assert (a.n_negative, a.verdict, a.n_significant) == (b.n_negative, b.verdict, b.n_significant)
    np.testing.assert_allclose(a.statistics, b.statistics, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, atol=1e-12)
    np.testing.assert_allclose(q @ a.basis @ a.basis.T @ q.T, b.basis @ b.basis.T, atol=1e-8)


@settings(max_examples=15)
@given(seed=seeds, h=st.integers(2, 7), d_in=st.integers(2, 7), d_out=st.integers(2, 7), data=st.data())
def test_layer_alignment_invariant_to_rotations_and_bounded(seed, h, d_in, d_out, data):
    """A common rotation R of the hidden space (W1 -> R W1, W2 -> W2 R^T) and rotations of the input and
    output spaces leave the layers' alignment unchanged; 0 <= score <= 1."""
    rng = np.random.default_rng(seed)
    w1, w2 = rng.standard_normal((h, d_in)), rng.standard_normal((d_out, h))
    modes = min(h, d_in, d_out)
    surviving = data.draw(st.integers(1, modes), label="surviving")
    r, p, q = random_orthogonal(rng, h), random_orthogonal(rng, d_in), random_orthogonal(rng, d_out)
    a = layer_alignment(w1, w2, surviving)
    b = layer_alignment(r @ w1 @ p, q @ w2 @ r.T, surviving)
    assert a.groups == b.groups
    assert a.score == pytest.approx(b.score, abs=1e-8) and a.chance == pytest.approx(b.chance, abs=1e-12)
    assert a.score <= 1 + 1e-9 and -1e-12 <= a.grouped_score <= 1 + 1e-12
    # the gap-grouped chance lies between singletons (1/h) and one group of every surviving mode (surviving/h)
    assert 1 / h - 1e-12 <= a.grouped_chance <= surviving / h + 1e-12 and a.chance in (0.0, 1.0)
