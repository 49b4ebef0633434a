"""One place for each idea: the loss registry every loss list of ``theory`` comes from, and the atomic writer.

The finite-difference check of X here runs over the registry, against the registered loss function itself, so a
loss registered with an X form is checked without a new test; ``test_covariance`` checks the same identity
against losses written independently in that file.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _theory_helpers import central_diff, random_views

import theory
from dimcollapse.io import atomic_path, write_json
from theory import batched, covariance, losses, phase, simulate
from theory.experiment import SimConfig, has_covariance

TAU = 0.4


def choices(parser, flag: str) -> tuple:
    return tuple(next(a for a in parser._actions if flag in a.option_strings).choices)


def test_every_loss_list_is_derived_from_the_registry():
    reg = losses.REGISTRY
    assert all(name == spec.name for name, spec in reg.items())
    assert losses.LOSSES == tuple(reg) == theory.LOSSES
    assert losses.X_LOSSES == tuple(n for n, s in reg.items() if s.x_form is not None) == covariance.COVARIANCE_LOSSES
    assert losses.SWEEP_LOSSES == tuple(n for n, s in reg.items() if s.sweep) == batched.SWEEP_LOSSES
    assert losses.TEMPERATURE_LOSSES == tuple(n for n, s in reg.items() if s.uses_temperature)
    # the names and order the rest of the project imported before the registry
    assert losses.LOSSES == ("paper", "dot", "ntxent")
    assert covariance.COVARIANCE_LOSSES == batched.SWEEP_LOSSES == ("paper", "dot")
    assert choices(simulate.build_parser(), "--loss") == losses.LOSSES
    assert choices(phase.parser(), "--loss") == losses.SWEEP_LOSSES
    for name in losses.LOSSES:
        assert has_covariance(SimConfig(loss=name)) == (name in losses.X_LOSSES)


def test_every_registered_x_form_is_implemented():
    forms = {spec.x_form for spec in losses.REGISTRY.values()} - {None}
    assert forms == set(covariance.X_FORMS)


def test_unknown_loss_is_refused_with_the_allowed_names():
    """(Dispatch to the registered functions: ``test_losses.test_loss_dispatch_and_unknown_loss``.)"""
    z, za = random_views(np.random.default_rng(1), 4, 2)
    with pytest.raises(ValueError, match="allowed: paper, dot, ntxent"):
        losses.contrastive_loss(z, za, "cosine")
    with pytest.raises(ValueError, match="X is defined for the losses paper, dot, not 'cosine'"):
        covariance.contrastive_covariance(z, za, np.eye(2), "cosine")


@pytest.mark.parametrize("name", losses.X_LOSSES)
def test_registered_x_form_is_minus_the_weight_gradient_of_the_registered_loss(name):
    """-dL/dW = W X: dL/dW by central differences of the registry's loss function at z = W x (W of full column
    rank, so W X fixes X), X from ``contrastive_covariance`` and ``contrastive_x``."""
    rng = np.random.default_rng(5)
    x, xa = random_views(rng, 6, 3, noise=0.7)
    w = 0.6 * rng.standard_normal((4, 3))
    value = lambda v: losses.contrastive_loss(x @ v.T, xa @ v.T, name, TAU)[0]  # noqa: E731
    grad = central_diff(value, w, h=1e-6)
    cov, s0, s1 = covariance.contrastive_covariance(x, xa, w, name, TAU)
    atol = 1e-7 * np.abs(cov).max()
    np.testing.assert_allclose(w @ cov, -grad, rtol=1e-6, atol=atol)
    np.testing.assert_allclose(cov, s0 - s1, atol=1e-12 * np.abs(cov).max())
    np.testing.assert_allclose(covariance.contrastive_x(x, xa, w, name, TAU), cov, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(set(losses.LOSSES) - set(losses.X_LOSSES)))
def test_losses_without_x_are_refused_by_name(name):
    x, xa = random_views(np.random.default_rng(2), 4, 2)
    with pytest.raises(ValueError, match=name):
        covariance.contrastive_covariance(x, xa, np.eye(2), name)


@pytest.mark.parametrize("name", losses.LOSSES)
def test_the_sweep_runs_exactly_the_registered_sweep_losses(name):
    args = (SimConfig(loss=name, steps=2), np.array([1.0]), np.array([0.02]), "float64", "numpy")
    if losses.REGISTRY[name].sweep:
        batched.validate(*args)
    else:
        with pytest.raises(ValueError, match=name):
            batched.validate(*args)


# ---- the atomic writer ---------------------------------------------------------------------------------------


def test_atomic_path_renames_into_place_on_success(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with atomic_path(path) as tmp:
        assert tmp != str(path) and tmp.startswith(str(tmp_path))
        with open(tmp, "w") as f:
            f.write("new")
        assert path.read_text() == "old", "the old file stays until the block ends"
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_keeps_the_old_file_and_no_temporary_on_failure(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="half written"):
        with atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("ne")
            raise RuntimeError("half written")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with pytest.raises(RuntimeError):  # failing before anything was written is fine too
        with atomic_path(tmp_path / "new.txt"):
            raise RuntimeError("nothing written")
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_write_json_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize("ext", ["png", "pdf"])
def test_savefig_through_atomic_path_keeps_the_format_of_the_final_name(tmp_path, ext):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    path = tmp_path / f"f.{ext}"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=ext)
    plt.close(fig)
    magic = {"png": b"\x89PNG", "pdf": b"%PDF"}[ext]
    assert path.read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
