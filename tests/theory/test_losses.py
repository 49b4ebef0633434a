"""Losses (paper Eqn 2, Lemma 1 / Eqn 4; toy-code dot form; SimCLR NT-Xent): values and closed-form gradients.

Independent routes: a loop implementation of Eqn 2, central finite differences, and torch autograd of torch
losses written from the equations (not from theory.losses).
"""

from __future__ import annotations

import numpy as np
import pytest
from _theory_helpers import central_diff, random_views, torch_losses

from theory.losses import LOSSES, contrastive_loss, dot_loss, ntxent_loss, paper_loss, paper_weights

TAU = 0.3


def eqn2_loop(z: np.ndarray, z_aug: np.ndarray) -> float:
    """Eqn 2 written literally with loops, divided by N (the package uses the batch mean)."""
    n = len(z)
    total = 0.0
    for i in range(n):
        positive = np.exp(-np.sum((z[i] - z_aug[i]) ** 2) / 2)
        negatives = sum(np.exp(-np.sum((z[i] - z[j]) ** 2) / 2) for j in range(n) if j != i)
        total -= np.log(positive / (negatives + positive))
    return total / n


def ours(name: str):
    return lambda z, za: contrastive_loss(z, za, name, temperature=TAU)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_loss_value_equals_loop_of_eqn2(seed):
    rng = np.random.default_rng(seed)
    z, za = random_views(rng, 7, 3, noise=0.7)
    value, _, _ = paper_loss(z, za)
    assert value == pytest.approx(eqn2_loop(z, za), rel=1e-12)


def test_paper_weights_match_section_1_3():
    rng = np.random.default_rng(3)
    z, za = random_views(rng, 6, 2)
    alpha = paper_weights(z, za)
    n = len(z)
    for i in range(n):
        logits = np.array([-np.sum((z[i] - (za[i] if j == i else z[j])) ** 2) / 2 for j in range(n)])
        np.testing.assert_allclose(alpha[i], np.exp(logits) / np.exp(logits).sum(), rtol=1e-12)
    np.testing.assert_allclose(alpha.sum(axis=1), 1.0, rtol=1e-12)


def test_paper_gradient_is_eqn4_divided_by_n():
    """Eqn 4 written with explicit sums over j != i (the package writes it in matrix form)."""
    rng = np.random.default_rng(4)
    z, za = random_views(rng, 6, 3)
    alpha = paper_weights(z, za)
    n = len(z)
    g_ref = np.zeros_like(z)
    ga_ref = np.zeros_like(z)
    for i in range(n):
        for j in range(n):
            if j != i:
                g_ref[i] += alpha[i, j] * (z[j] - za[i]) + alpha[j, i] * (z[j] - z[i])
                ga_ref[i] += alpha[i, j] * (za[i] - z[i])
    _, g, ga = paper_loss(z, za)
    np.testing.assert_allclose(g, g_ref / n, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(ga, ga_ref / n, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("seed", [0, 1])
def test_gradients_match_central_differences(name, seed):
    rng = np.random.default_rng(10 + seed)
    z, za = random_views(rng, 5, 3, noise=0.6)
    fun = ours(name)
    _, g, ga = fun(z, za)
    g_fd = central_diff(lambda v: fun(v, za)[0], z)
    ga_fd = central_diff(lambda v: fun(z, v)[0], za)
    scale = max(np.abs(g_fd).max(), np.abs(ga_fd).max())
    np.testing.assert_allclose(g, g_fd, atol=1e-7 * scale + 1e-9)
    np.testing.assert_allclose(ga, ga_fd, atol=1e-7 * scale + 1e-9)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("shape", [(8, 4), (16, 3)])
def test_values_and_gradients_match_torch_autograd(name, shape):
    torch, reference = torch_losses(TAU)
    rng = np.random.default_rng([LOSSES.index(name), *shape])
    z, za = random_views(rng, *shape, noise=0.8)
    value, g, ga = ours(name)(z, za)
    tz = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    tza = torch.tensor(za, dtype=torch.float64, requires_grad=True)
    t_value = reference[name](tz, tza)
    t_value.backward()
    assert float(value) == pytest.approx(t_value.item(), rel=1e-12)
    np.testing.assert_allclose(g, tz.grad.numpy(), rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(ga, tza.grad.numpy(), rtol=1e-9, atol=1e-13)


def test_paper_loss_far_apart_points_stay_finite_and_match_torch():
    """Rows whose every logit is below -700 (exp underflows) take the shifted path; it must agree."""
    torch, reference = torch_losses(TAU)
    rng = np.random.default_rng(5)
    z = 60.0 * rng.standard_normal((6, 2))
    za = z + 45.0 * rng.standard_normal((6, 2))
    value, g, ga = paper_loss(z, za)
    assert np.isfinite(value) and np.all(np.isfinite(g)) and np.all(np.isfinite(ga))
    tz = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    tza = torch.tensor(za, dtype=torch.float64, requires_grad=True)
    t_value = reference["paper"](tz, tza)
    t_value.backward()
    assert float(value) == pytest.approx(t_value.item(), rel=1e-10)
    np.testing.assert_allclose(g, tz.grad.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ga, tza.grad.numpy(), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("fun", [paper_loss, dot_loss, ntxent_loss])
def test_batched_leading_axes_equal_per_config_calls(fun):
    rng = np.random.default_rng(6)
    z = rng.standard_normal((3, 2, 9, 4))
    za = z + 0.5 * rng.standard_normal(z.shape)
    value, g, ga = fun(z, za)
    assert value.shape == (3, 2) and g.shape == z.shape and ga.shape == z.shape
    for a in range(3):
        for b in range(2):
            v1, g1, ga1 = fun(z[a, b], za[a, b])
            assert value[a, b] == pytest.approx(float(v1), rel=1e-12)
            np.testing.assert_allclose(g[a, b], g1, rtol=1e-11, atol=1e-14)
            np.testing.assert_allclose(ga[a, b], ga1, rtol=1e-11, atol=1e-14)


def test_loss_dispatch_and_unknown_loss():
    rng = np.random.default_rng(7)
    z, za = random_views(rng, 5, 2)
    for name, fun in (("paper", paper_loss), ("dot", dot_loss), ("ntxent", ntxent_loss)):
        expected = fun(z, za) if name == "paper" else fun(z, za, TAU)
        for got, want in zip(ours(name)(z, za), expected, strict=True):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="bogus"):
        contrastive_loss(z, za, "bogus")


def test_pulling_the_positive_pair_together_lowers_the_paper_loss():
    """Sanity of the sign convention: pulling the positive pair together lowers the loss (Eqn 2)."""
    rng = np.random.default_rng(8)
    z, _ = random_views(rng, 6, 3)
    near = paper_loss(z, z + 0.01)[0]
    far = paper_loss(z, z + 1.0)[0]
    assert near < far


@pytest.mark.parametrize("tau", [1e-4, 1e-3, 0.02])
def test_ntxent_small_temperature_matches_torch(tau):
    """Tiny tau underflows exp((cos - 1) / tau) for a whole row: the fallback path must agree with torch."""
    torch, reference = torch_losses(tau)
    rng = np.random.default_rng(9)
    z, za = random_views(rng, 6, 3, noise=3.0)  # positives far apart: every logit of a row is << 1/tau
    u = np.concatenate([z, za]) / np.linalg.norm(np.concatenate([z, za]), axis=1, keepdims=True)
    cos = u @ u.T - 3.0 * np.eye(12)
    underflow = np.exp((cos - 1.0) / tau).sum(axis=1).min() < 1e-300
    assert underflow == (tau == 1e-4)  # tau = 1e-4 exercises the row-max fallback
    value, g, ga = ntxent_loss(z, za, tau)
    assert np.isfinite(value) and np.all(np.isfinite(g)) and np.all(np.isfinite(ga))
    tz = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    tza = torch.tensor(za, dtype=torch.float64, requires_grad=True)
    t_value = reference["ntxent"](tz, tza)
    t_value.backward()
    assert float(value) == pytest.approx(t_value.item(), rel=1e-10)
    assert np.abs(g).max() > 1.0  # a non-trivial gradient, of order 1/tau
    np.testing.assert_allclose(g, tz.grad.numpy(), rtol=1e-8, atol=1e-12 / tau)
    np.testing.assert_allclose(ga, tza.grad.numpy(), rtol=1e-8, atol=1e-12 / tau)


@pytest.mark.parametrize("n", [600, 1100])
def test_row_blocked_paper_loss_equals_the_full_alpha_formula(n):
    # N > 512 takes the row-blocked path; check it against Eqn 4 written with the whole alpha matrix
    rng = np.random.default_rng(n)
    z = 0.4 * rng.standard_normal((n, 5))
    z_aug = z + 0.3 * rng.standard_normal((n, 5))
    alpha = paper_weights(z, z_aug)
    off = alpha - np.diag(np.diag(alpha))
    g_z = off @ z - off.sum(1, keepdims=True) * z_aug + off.T @ z - off.sum(0)[:, None] * z
    g_aug = off.sum(1, keepdims=True) * (z_aug - z)
    loss = np.mean(-np.log(np.diag(alpha)))
    got = paper_loss(z, z_aug)
    np.testing.assert_allclose(got[0], loss, rtol=1e-12)
    np.testing.assert_allclose(got[1], g_z / n, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(got[2], g_aug / n, rtol=1e-9, atol=1e-15)
