"""Batched sweeps: the vectorized kernel equals per-configuration calls; collapse at 0 vs strong strength."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from theory.dynamics import loss_and_gradients
from theory.experiment import SimConfig
from theory.sweep import sweep
from theory.toy import toy_views

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_sweep_no_collapse_at_zero_full_collapse_at_three():
    out = sweep(np.array([0.0, 3.0]), 2, SimConfig(steps=300, noisy_views=1))
    np.testing.assert_array_equal(out["collapsed_dims"], [[0, 0], [8, 8]])
    np.testing.assert_array_equal(out["predicted_apriori"], [[0, 0], [8, 8]])
    np.testing.assert_array_equal(out["predicted_late"], [[0, 0], [8, 8]])
    spectra = np.asarray(out["embedding_singular_values"])
    assert spectra.shape == (2, 2, 16)
    # strength 3: 8 clean values at least 3 decades above the 8 augmented ones
    assert np.all(np.log10(spectra[1, :, 7]) - np.log10(spectra[1, :, 8]) >= 3)
    assert out["apriori_threshold"] == pytest.approx(np.sqrt(2))


def test_sweep_configurations_are_independent_seeds():
    out = sweep(np.array([0.5]), 2, SimConfig(steps=20, dim=4, augmented_dims=2, samples=16))
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
    with pytest.raises(ValueError):
        sweep(np.array([-1.0]), 1, SimConfig(steps=2))
    with pytest.raises(ValueError):
        sweep(np.array([1.0]), 1, SimConfig(steps=2, loss="ntxent"))
    with pytest.raises(ValueError):
        sweep(np.array([1.0]), 1, SimConfig(steps=2, layers=2, relu=True))


def test_importing_theory_does_not_import_torch():
    code = "import theory, theory.simulate, theory.sweep, sys; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_train_batched_matches_independent_single_runs_in_shape_and_strength_order():
    from theory.sweep import train_batched

    base = SimConfig(dim=4, augmented_dims=2, samples=16, steps=150, lr=0.05, init="0.5")
    traj, _ = train_batched(np.array([[0.0], [4.0]]), base)
    assert traj.weights[0].shape == (2, 2, 1, 4, 4)  # (records, strengths..., d, d)
    final = traj.final[0]
    # the strongly augmented network shrinks its augmented columns, the unaugmented one does not
    weak, strong = (np.linalg.norm(final[i, 0][:, 2:]) / np.linalg.norm(final[i, 0][:, :2]) for i in (0, 1))
    assert strong < 0.5 * weak
