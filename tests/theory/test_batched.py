"""Batched sweeps: the preallocated kernel equals the per-configuration route; collapse at 0 vs strong strength."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from theory.batched import sweep, train_batched
from theory.dynamics import loss_and_gradients
from theory.experiment import SimConfig, integrate
from theory.toy import toy_views

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = dict(steps=40, lr=0.01, samples=32, dim=6, augmented_dims=3)


@pytest.mark.parametrize(("loss", "layers", "noisy_views", "workers"),
                         [("dot", 1, 2, 2), ("paper", 1, 1, 1), ("paper", 2, 2, 2), ("dot", 3, 1, 1)])
def test_kernel_reproduces_each_single_run_trajectory(loss, layers, noisy_views, workers):
    """Entry (s, r) of a sweep is simulate's run with strength s and seed r: run_gd + loss_and_gradients."""
    base = SimConfig(loss=loss, layers=layers, noisy_views=noisy_views, **SMALL)
    strengths, seeds = np.array([[0.5], [2.0]]), np.array([[0, 1, 2]])
    traj, rngs = train_batched(strengths, base, record_every=10, seeds=seeds, workers=workers, config_block=2)
    assert traj.weights[0].shape == (5, 2, 3, 6, 6)
    for i, j in np.ndindex(2, 3):
        cfg = replace(base, augment_strength=float(strengths[i, 0]), seed=int(seeds[0, j]))
        ref, ref_rng, _ = integrate(cfg)  # records every steps // 200 = 1 step
        for layer in range(layers):
            np.testing.assert_allclose(traj.weights[layer][:, i, j], ref.weights[layer][::10], rtol=0, atol=1e-12)
        np.testing.assert_allclose(traj.losses[:, i, j], ref.losses[::10], rtol=1e-12)
    # the seeds' generators end where simulate's does (its analysis draws from there)
    assert rngs[2].standard_normal() == ref_rng.standard_normal()


@pytest.mark.parametrize(("loss", "layers"), [("dot", 1), ("paper", 1), ("dot", 2), ("paper", 2)])
def test_row_shifted_exponentials_give_the_same_trajectory(loss, layers, monkeypatch):
    """With the overflow limit at 1e-3 every step takes the shifted route (rows minus their maxima)."""
    import theory.batched

    base = SimConfig(loss=loss, layers=layers, noisy_views=2, **SMALL)
    plain, _ = train_batched(np.array([1.0, 3.0]), base, record_every=20)
    monkeypatch.setitem(theory.batched.EXP_LIMIT, "float64", 1e-3)
    shifted, _ = train_batched(np.array([1.0, 3.0]), base, record_every=20)
    for a, b in zip(plain.weights, shifted.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(plain.losses, shifted.losses, rtol=1e-12)


def test_kernel_matches_run_gd_with_per_step_draws_at_the_benchmark_size():
    """N = 128, d = 16, dot loss, two noisy views: kernel vs run_gd on toy_views for one seed."""
    from theory.dynamics import run_gd
    from theory.experiment import initial_weights

    base = SimConfig(loss="dot", noisy_views=2, lr=0.001, steps=30, init="0.5774", augment_strength=1.5, seed=4)
    traj, _ = train_batched(np.array([1.5]), base, seeds=np.array([4]))
    rng = np.random.default_rng(4)
    w0 = initial_weights(base, rng)
    ref = run_gd(w0, 30, 0.001, lambda r: toy_views(r, 128, 16, 8, 1.5, 2), rng, record_every=30, loss="dot")
    np.testing.assert_allclose(traj.final[0][0], ref.final[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("start_methods", [["fork", "spawn"], ["spawn"]])
def test_workers_equal_one_worker_and_a_failing_worker_raises(start_methods, monkeypatch):
    """Forked workers (Linux) or threads (elsewhere) give one worker's trajectories bitwise; an error in one
    worker stops the others and reaches the caller instead of hanging."""
    import multiprocessing

    import theory.batched

    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: start_methods)
    base = SimConfig(loss="dot", noisy_views=2, **SMALL)
    args = (np.array([[0.5], [1.0], [2.0]]), base)
    one, rng_one = train_batched(*args, record_every=10, seeds=np.array([[0, 1, 2]]), workers=1)
    two, rng_two = train_batched(*args, record_every=10, seeds=np.array([[0, 1, 2]]), workers=2, config_block=2)
    np.testing.assert_array_equal(two.weights[0], one.weights[0])
    np.testing.assert_array_equal(two.losses, one.losses)
    assert [r.standard_normal() for r in rng_two.values()] == [r.standard_normal() for r in rng_one.values()]

    run = theory.batched.Kernel.run

    def failing(self, raw, first, *rest):
        if self.lo == 0:
            raise FloatingPointError("injected")
        return run(self, raw, first, *rest)

    monkeypatch.setattr(theory.batched.Kernel, "run", failing)
    with pytest.raises((RuntimeError, FloatingPointError), match="injected"):
        train_batched(*args, seeds=np.array([[0, 1, 2]]), workers=2, config_block=2)


def test_diverging_configuration_is_flagged_and_the_others_are_untouched():
    base = SimConfig(loss="dot", **{**SMALL, "steps": 60})
    traj, _ = train_batched(np.array([1.0, 1.0]), base, lrs=np.array([0.01, 50.0]))
    at = traj.info["diverged_at"]
    assert np.isnan(at[0]) and np.isfinite(at[1])
    alone, _ = train_batched(np.array([1.0]), base, lrs=np.array([0.01]))
    np.testing.assert_array_equal(traj.final[0][0], alone.final[0][0])
    assert np.all(traj.final[0][1] == 0.0)


def test_torch_backend_equals_numpy_on_cpu():
    pytest.importorskip("torch")
    for loss, layers, views in (("dot", 1, 2), ("paper", 1, 1), ("paper", 2, 1), ("dot", 2, 2)):
        base = SimConfig(loss=loss, layers=layers, noisy_views=views, init="paper", **SMALL)
        args = (np.array([[0.5], [2.5]]), base)
        a, _ = train_batched(*args, record_every=10, seeds=np.array([[0, 3]]))
        b, _ = train_batched(*args, record_every=10, seeds=np.array([[0, 3]]), backend="torch", device="cpu")
        for wa, wb in zip(a.weights, b.weights, strict=True):
            np.testing.assert_allclose(wb, wa, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b.losses, a.losses, rtol=1e-10)


def test_float32_verdicts_equal_float64_on_the_phase_diagram_grid():
    """The figure's strengths, seeds and both noise conventions, at fewer steps (a test must take seconds)."""
    from figures.phase_diagram import SEEDS, STRENGTHS

    for views in (1, 2):
        base = SimConfig(steps=150, noisy_views=views, lr=0.05)
        f64 = sweep(STRENGTHS, SEEDS, base, predict=False)
        f32 = sweep(STRENGTHS, SEEDS, base, predict=False, dtype="float32")
        assert f64["collapsed_dims"].max() > 0 and f64["collapsed_dims"].min() == 0  # both verdicts occur
        np.testing.assert_array_equal(f32["collapsed_dims"], f64["collapsed_dims"])


def test_sweep_no_collapse_at_zero_full_collapse_at_three():
    out = sweep(np.array([0.0, 3.0]), 2, SimConfig(steps=300, noisy_views=1))
    np.testing.assert_array_equal(out["collapsed_dims"], [[0, 0], [8, 8]])
    # the baseline at t = 0: one init per seed, shared by every strength
    np.testing.assert_array_equal(out["collapsed_dims_initial"][0], out["collapsed_dims_initial"][1])
    np.testing.assert_array_equal(out["predicted_apriori"], [[0, 0], [8, 8]])
    np.testing.assert_array_equal(out["predicted_late"], [[0, 0], [8, 8]])
    spectra = np.asarray(out["embedding_singular_values"])
    assert spectra.shape == (2, 2, 16)
    # strength 3: 8 clean values at least 3 decades above the 8 augmented ones
    assert np.all(np.log10(spectra[1, :, 7]) - np.log10(spectra[1, :, 8]) >= 3)
    assert out["apriori_threshold"] == pytest.approx(np.sqrt(2))


def test_sweep_configurations_are_independent_seeds():
    out = sweep(np.array([0.5]), 2, SimConfig(steps=20, dim=4, augmented_dims=2, samples=16), predict=False)
    spectra = np.asarray(out["embedding_singular_values"])
    assert spectra.shape == (1, 2, 4)
    assert not np.allclose(spectra[0, 0], spectra[0, 1])


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("loss", ["paper", "dot", "ntxent"])
def test_batched_gradient_kernel_equals_per_config(layers, loss):
    rng = np.random.default_rng(layers)
    shape = (2, 3)
    strengths = np.array([[0.0, 1.0, 2.0], [0.5, 1.5, 3.0]])
    x, xa = toy_views(rng, 12, 5, 2, strengths, 1, shape)
    weights = [0.7 * rng.standard_normal((*shape, 5, 5)) for _ in range(layers)]
    value, grads = loss_and_gradients(weights, x, xa, loss=loss, temperature=0.2)
    assert value.shape == shape
    for a in range(shape[0]):
        for b in range(shape[1]):
            v1, g1 = loss_and_gradients([w[a, b] for w in weights], x[a, b], xa[a, b], loss=loss,
                                        temperature=0.2)
            assert value[a, b] == pytest.approx(float(v1), rel=1e-12)
            for gb, gs in zip(grads, g1, strict=True):
                np.testing.assert_allclose(gb[a, b], gs, rtol=1e-10, atol=1e-14)


def test_sweep_rejects_what_it_cannot_run():
    with pytest.raises(ValueError, match="augment-strength"):
        sweep(np.array([-1.0]), 1, SimConfig(steps=2))
    with pytest.raises(ValueError, match="ntxent"):
        sweep(np.array([1.0]), 1, SimConfig(steps=2, loss="ntxent"))
    with pytest.raises(ValueError, match="ReLU"):
        sweep(np.array([1.0]), 1, SimConfig(steps=2, layers=2, relu=True))
    with pytest.raises(ValueError, match="dtype"):
        sweep(np.array([1.0]), 1, SimConfig(steps=2), dtype="float16")
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        sweep(np.array([1.0]), 1, SimConfig(steps=2), workers=0)


def test_importing_theory_does_not_import_torch_and_sweep_stays_the_function():
    code = ("import theory, theory.simulate, theory.batched, theory.phase, sys; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "from theory import sweep; assert callable(sweep) and theory.sweep is sweep, theory.sweep")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_train_batched_shapes_and_strength_order():
    base = SimConfig(dim=4, augmented_dims=2, samples=16, steps=150, lr=0.05, init="0.5")
    traj, _ = train_batched(np.array([[0.0], [4.0]]), base)
    assert traj.weights[0].shape == (2, 2, 1, 4, 4)  # (records, strengths..., d, d)
    final = traj.final[0]
    # the strongly augmented network shrinks its augmented columns, the unaugmented one does not
    weak, strong = (np.linalg.norm(final[i, 0][:, 2:]) / np.linalg.norm(final[i, 0][:, :2]) for i in (0, 1))
    assert strong < 0.5 * weak
