"""Dynamics of z = W_L ... W_1 x: chain-rule gradients, fixed-X flow, integrators, divergence."""

from __future__ import annotations

import numpy as np
import pytest
from _theory_helpers import central_diff, random_orthogonal, random_views, torch_losses

from theory.covariance import contrastive_covariance
from theory.dynamics import (
    ODE_METHODS,
    DivergenceError,
    end_to_end,
    expm_solution,
    fixed_covariance_gradients,
    forward,
    haar_orthogonal,
    loss_and_gradients,
    paper_init,
    run_gd,
    run_ode,
)
from theory.predict import aligned_balanced_init, blowup_time

TAU = 0.5
SHAPES = {1: [(3, 4)], 2: [(5, 4), (3, 5)], 3: [(5, 4), (4, 5), (3, 4)]}


def network(seed: int, layers: int, n: int = 7, scale: float = 0.7):
    rng = np.random.default_rng(seed)
    d = SHAPES[layers][0][1]
    x, xa = random_views(rng, n, d, noise=0.6)
    weights = [scale * rng.standard_normal(shape) for shape in SHAPES[layers]]
    return x, xa, weights


def replace(weights, layer, value):
    out = list(weights)
    out[layer] = value
    return out


ARCHITECTURES = [(1, False), (2, False), (3, False), (2, True), (3, True)]  # ReLU acts between layers only


@pytest.mark.parametrize(("layers", "relu"), ARCHITECTURES)
@pytest.mark.parametrize("loss", ["paper", "dot", "ntxent"])
def test_layer_gradients_match_central_differences(layers, relu, loss):
    x, xa, weights = network(layers + 10 * relu, layers)
    kwargs = dict(loss=loss, temperature=TAU, relu=relu)
    _, grads = loss_and_gradients(weights, x, xa, **kwargs)
    for layer in range(layers):
        fd = central_diff(lambda w, k=layer: loss_and_gradients(replace(weights, k, w), x, xa, **kwargs)[0],
                          weights[layer])
        np.testing.assert_allclose(grads[layer], fd, atol=1e-7 * np.abs(fd).max() + 1e-10)


@pytest.mark.parametrize(("layers", "relu"), ARCHITECTURES)
def test_layer_gradients_match_torch_autograd(layers, relu):
    torch, reference = torch_losses(TAU)
    x, xa, weights = network(20 + layers + 10 * relu, layers, n=10)
    tws = [torch.tensor(w, requires_grad=True) for w in weights]

    def embed(v):
        h = torch.tensor(v)
        for k, w in enumerate(tws):
            h = h @ w.T
            if relu and k < len(tws) - 1:
                h = torch.relu(h)
        return h

    for loss in ("paper", "dot", "ntxent"):
        for w in tws:
            w.grad = None
        t_value = reference[loss](embed(x), embed(xa))
        t_value.backward()
        value, grads = loss_and_gradients(weights, x, xa, loss=loss, temperature=TAU, relu=relu)
        assert float(value) == pytest.approx(t_value.item(), rel=1e-11)
        for g, w in zip(grads, tws, strict=True):
            np.testing.assert_allclose(g, w.grad.numpy(), rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("loss", ["paper", "dot"])
@pytest.mark.parametrize("seed", [0, 1])
def test_two_layer_gradients_are_eqn9(loss, seed):
    """W1' = W2^T W2 W1 X and W2' = W2 W1 X W1^T (Lemma 3, Eqn 9) with W' = -dL/dW."""
    rng = np.random.default_rng(seed)
    x, xa = random_views(rng, 9, 4)
    w1, w2 = 0.7 * rng.standard_normal((4, 4)), 0.7 * rng.standard_normal((4, 4))
    cov = contrastive_covariance(x, xa, w2 @ w1, loss, TAU)[0]
    _, (g1, g2) = loss_and_gradients([w1, w2], x, xa, loss=loss, temperature=TAU)
    np.testing.assert_allclose(-g1, w2.T @ w2 @ w1 @ cov, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(-g2, w2 @ w1 @ cov @ w1.T, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_fixed_covariance_gradients_are_gradient_of_trace_form(layers):
    rng = np.random.default_rng(layers)
    _, _, weights = network(layers, layers)
    a = rng.standard_normal((4, 4))
    cov = a + a.T
    grads = fixed_covariance_gradients(weights, cov)

    def energy(ws):
        w = end_to_end(ws)
        return -0.5 * np.trace(w @ cov @ w.T)

    for layer in range(layers):
        fd = central_diff(lambda w, k=layer: energy(replace(weights, k, w)), weights[layer])
        np.testing.assert_allclose(grads[layer], fd, atol=1e-8 * np.abs(fd).max())


def test_forward_and_end_to_end():
    x, _, weights = network(3, 3)
    z, cache = forward(weights, x)
    np.testing.assert_allclose(z, x @ end_to_end(weights).T, rtol=1e-12)
    assert len(cache) == 3
    zr, _ = forward(weights, x, relu=True)
    h = x
    for k, w in enumerate(weights):
        h = h @ w.T
        h = np.maximum(h, 0) if k < 2 else h
    np.testing.assert_allclose(zr, h, rtol=1e-12)


def test_expm_solution_is_eigendecomposition_flow():
    rng = np.random.default_rng(4)
    q = random_orthogonal(rng, 4)
    lam = np.array([0.9, 0.3, -0.2, -1.1])
    cov = q @ np.diag(lam) @ q.T
    w0 = rng.standard_normal((3, 4))
    times = np.array([0.0, 0.5, 2.0])
    got = expm_solution(w0, cov, times)
    assert got.shape == (3, 3, 4)
    for k, t in enumerate(times):
        np.testing.assert_allclose(got[k], w0 @ q @ np.diag(np.exp(lam * t)) @ q.T, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("method", ["RK45", "DOP853", "Radau"])
def test_run_ode_fixed_x_one_layer_equals_expm(method):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((4, 4))
    cov = (a + a.T) / 2
    w0 = rng.standard_normal((4, 4))
    traj = run_ode([w0], 1.5, cov=cov, records=15, method=method, rtol=1e-11, atol=1e-13)
    assert traj.times[0] == 0.0 and traj.times[-1] == pytest.approx(1.5)
    assert traj.weights[0].shape == (16, 4, 4)
    exact = expm_solution(w0, cov, traj.times)
    np.testing.assert_allclose(traj.weights[0], exact, rtol=0, atol=1e-8 * np.abs(exact).max())


def test_run_gd_on_fixed_sample_converges_to_run_ode_linearly_in_lr():
    """Fixed-sample gd is Euler's method for the gradient flow: the error at time T shrinks like lr."""
    rng = np.random.default_rng(6)
    x, xa = random_views(rng, 8, 3)
    w0 = [0.8 * rng.standard_normal((3, 3)), 0.8 * rng.standard_normal((3, 3))]
    total = 0.8
    ref = run_ode(w0, total, views=(x, xa), records=1, rtol=1e-11, atol=1e-13).final
    errors = []
    for lr in (4e-3, 2e-3, 1e-3):
        traj = run_gd(w0, round(total / lr), lr, (x, xa), record_every=10**6)
        assert traj.times[-1] == pytest.approx(total)
        errors.append(max(np.abs(a - b).max() for a, b in zip(traj.final, ref, strict=True)))
    assert errors[-1] < 1e-2 * max(np.abs(w).max() for w in ref)
    for coarse, fine in zip(errors[:-1], errors[1:], strict=True):
        assert 1.6 < coarse / fine < 2.4


def test_run_gd_does_not_modify_inputs_and_records():
    rng = np.random.default_rng(7)
    x, xa = random_views(rng, 6, 3)
    w0 = [rng.standard_normal((3, 3))]
    keep = w0[0].copy()
    traj = run_gd(w0, 25, 0.01, (x, xa), record_every=10)
    np.testing.assert_array_equal(w0[0], keep)
    np.testing.assert_allclose(traj.times, [0.0, 0.1, 0.2, 0.25])
    np.testing.assert_array_equal(traj.weights[0][0], keep)
    assert traj.gradient_evaluations == 25


def test_run_gd_with_sampler_uses_fresh_views():
    rng = np.random.default_rng(8)
    calls = []

    def sampler(r):
        calls.append(1)
        return random_views(r, 6, 3)

    run_gd([rng.standard_normal((3, 3))], 7, 0.01, sampler, rng=np.random.default_rng(0))
    assert len(calls) == 8  # a fresh batch per step, and one for the loss at the final weights
    with pytest.raises(ValueError, match="explicit rng"):
        run_gd([rng.standard_normal((3, 3))], 1, 0.01, sampler)  # no hidden random state


def fixed_x_blowup_setup():
    cov = np.diag([1.0, 0.5, 0.2])
    sigma0 = np.array([0.5, 0.4, 0.3])
    weights = aligned_balanced_init(cov, sigma0, 2)
    t_star = float(np.min(blowup_time(sigma0, np.array([1.0, 0.5, 0.2]), 2)))
    assert t_star == pytest.approx(1 / (2 * 1.0 * 0.25))
    return cov, weights, t_star


def test_run_ode_fixed_x_past_blowup_raises_divergence():
    cov, weights, t_star = fixed_x_blowup_setup()
    with pytest.raises(DivergenceError, match="t ="):
        run_ode(weights, 1.5 * t_star, cov=cov)
    # just before the blow-up the flow is finite
    traj = run_ode(weights, 0.9 * t_star, cov=cov, records=5)
    assert all(np.all(np.isfinite(w)) for w in traj.weights)


def test_run_gd_infonce_unstable_step_raises_divergence():
    """Large init and step: gd leaves the finite range within a few steps; it must stop, not return NaN."""
    rng = np.random.default_rng(9)
    x, xa = random_views(rng, 16, 4, noise=0.3)
    weights = [2.5 * rng.standard_normal((4, 4)), 2.5 * rng.standard_normal((4, 4))]
    with pytest.raises(DivergenceError, match="diverged at t"):
        run_gd(weights, 300, 0.5, (x, xa))


def test_run_gd_huge_step_raises_instead_of_nan():
    rng = np.random.default_rng(10)
    x, xa = random_views(rng, 8, 3)
    with pytest.raises(DivergenceError):
        run_gd([rng.standard_normal((3, 3)), rng.standard_normal((3, 3))], 50, 1e6, (x, xa))


def test_ode_methods_exclude_lsoda_and_argument_checks():
    assert "LSODA" not in ODE_METHODS
    rng = np.random.default_rng(11)
    x, xa = random_views(rng, 5, 2)
    w = [rng.standard_normal((2, 2))]
    with pytest.raises(ValueError, match="LSODA"):
        run_ode(w, 1.0, views=(x, xa), method="LSODA")
    with pytest.raises(ValueError):
        run_ode(w, 1.0)
    with pytest.raises(ValueError):
        run_ode(w, 1.0, views=(x, xa), cov=np.eye(2))


def test_paper_init_singular_values():
    weights = paper_init(6, 2, np.random.default_rng(12))
    assert len(weights) == 2
    for w in weights:
        np.testing.assert_allclose(np.linalg.svd(w, compute_uv=False), np.exp(-0.35 * np.arange(6)), rtol=1e-12)
    assert not np.allclose(weights[0], weights[1])
    batched = paper_init(5, 3, np.random.default_rng(13), batch_shape=(2, 4))
    assert len(batched) == 3 and batched[0].shape == (2, 4, 5, 5)
    np.testing.assert_allclose(np.linalg.svd(batched[2], compute_uv=False),
                               np.broadcast_to(np.exp(-0.35 * np.arange(5)), (2, 4, 5)), rtol=1e-12)


def test_run_gd_losses_are_the_loss_at_the_recorded_times():
    rng = np.random.default_rng(14)
    x, xa = random_views(rng, 6, 3)
    traj = run_gd([rng.standard_normal((3, 3))], 5, 0.1, (x, xa), record_every=1)
    at_times = [float(loss_and_gradients([w], x, xa)[0]) for w in traj.weights[0]]
    np.testing.assert_allclose(traj.losses, at_times, rtol=1e-12)


def test_run_ode_stops_at_its_evaluation_budget():
    from theory.dynamics import EvaluationBudgetError

    rng = np.random.default_rng(30)
    x, xa = random_views(rng, 8, 3)
    with pytest.raises(EvaluationBudgetError):
        run_ode([rng.standard_normal((3, 3))], 50.0, views=(x, xa), max_evaluations=10)


@pytest.mark.parametrize("dim,count", [(2, 1), (5, 3), (16, 4)])
def test_haar_orthogonal_is_scipys_ortho_group_draw(dim, count):
    from scipy.stats import ortho_group

    ours = haar_orthogonal(dim, count, np.random.default_rng(7))
    theirs = ortho_group.rvs(dim, size=count, random_state=np.random.default_rng(7)).reshape(count, dim, dim)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_allclose(ours @ np.swapaxes(ours, -1, -2), np.broadcast_to(np.eye(dim), ours.shape),
                               atol=1e-12)
