"""`python -m theory.simulate`: the issue's expected behaviour on small, fast runs, the JSON report, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from theory.covariance import contrastive_covariance, psd_check
from theory.dynamics import end_to_end
from theory.experiment import SimConfig, analyse, integrate, simulate
from theory.simulate import main
from theory.toy import toy_views

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REQUIRED_KEYS = {
    "config", "weight_singular_values", "embedding_singular_values", "collapsed_dims", "predicted_collapsed_dims",
    "predicted_collapsed_dims_initial", "contrastive_covariance_eigenvalues", "is_psd", "alignment_matrix",
    "conservation_drift", "trajectory",
}


def run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def run_json(tmp_path, argv: list[str]) -> dict:
    path = tmp_path / "out.json"
    assert run_main([*argv, "--json", str(path), "--quiet"]) == 0
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def strong_one_layer():
    """The README example: --augment-strength 2.0, one layer, defaults (run once, ~3 s)."""
    cfg = SimConfig(augment_strength=2.0)
    cfg.validate()
    traj, rng, fixed = integrate(cfg)
    return cfg, traj, analyse(cfg, traj, rng, fixed)


def test_strong_augmentation_collapses_exactly_the_augmented_block(strong_one_layer):
    cfg, traj, result = strong_one_layer
    assert result["collapsed_dims"] == 8
    assert result["predicted_collapsed_dims"] == 8
    assert result["collapsed_subspace_overlap"] > 0.99
    spectrum = np.array(result["embedding_singular_values"])
    assert np.all(np.diff(spectrum) <= 0)
    assert np.log10(spectrum[7]) - np.log10(spectrum[8]) >= 3.0
    late = np.array(result["contrastive_covariance_eigenvalues"]["final"])
    assert np.sum(late < -1e-2 * np.abs(late).max()) == 8
    assert result["is_psd"]["final"] is False
    # independent reading of the final weight: the augmented coordinates are the ones it kills
    w = end_to_end(traj.final)
    gain = np.linalg.norm(w, axis=0)  # |W e_k| per input coordinate
    assert gain[8:].max() < 1e-2 * gain[:8].min()
    # and X measured here on fresh batches has its negative eigen-directions in the augmented block
    rng = np.random.default_rng(123)
    cov = np.mean([contrastive_covariance(*toy_views(rng, 128, 16, 8, 2.0), w)[0] for _ in range(8)], axis=0)
    check = psd_check(cov)
    assert check.n_negative == 8
    negative = check.eigenvectors[:, check.eigenvalues < -check.tolerance]
    assert np.sum(negative[8:] ** 2) / 8 > 0.95
    d = result["directions"]
    assert d["predicted_collapsed"] == d["observed_collapsed"]


def test_strong_augmentation_apriori_prediction(strong_one_layer):
    """One noisy view, strength 2 > sqrt(2): X at W -> 0 already has the 8 negative eigenvalues."""
    _, _, result = strong_one_layer
    assert result["apriori_threshold"] == pytest.approx(np.sqrt(2.0))
    assert result["predicted_collapsed_dims_apriori"] == 8
    assert result["predicted_collapsed_dims_initial"] == 8


def test_no_augmentation_no_collapse(tmp_path):
    result = run_json(tmp_path, ["--augment-strength", "0", "--steps", "1000"])
    assert result["collapsed_dims"] == 0
    assert result["predicted_collapsed_dims"] == 0
    assert result["is_psd"]["initial"] is True
    assert result["config"]["augment_strength"] == 0.0


def test_two_layers_weak_augmentation_implicit_regularization(tmp_path):
    result = run_json(tmp_path, ["--layers", "2", "--augment-strength", "0.1", "--steps", "3000", "--lr", "0.01"])
    assert result["config"]["init"] == "paper"
    assert result["is_psd"]["initial"] and result["is_psd"]["final"]
    assert result["predicted_collapsed_dims"] == 0  # X PSD, yet ...
    assert 3 <= result["collapsed_dims"] < 16  # ... several dimensions collapse
    assert result["alignment_score_surviving"] > 0.7
    assert result["conservation_drift"] < 1e-2
    assert set(REQUIRED_KEYS) <= set(result)
    a = np.array(result["alignment_matrix"])
    assert a.shape == (16, 16) and np.all(a >= 0) and np.all(a <= 1 + 1e-12)
    assert result["theorem3"]["max_relative_error"] < 1e-4
    assert len(result["weight_singular_values"]) == 2
    for sv in result["weight_singular_values"]:
        assert np.all(np.diff(sv) <= 0)


def test_json_report_and_plot(tmp_path):
    plot = tmp_path / "spectrum.png"
    result = run_json(tmp_path, ["--layers", "2", "--dim", "6", "--augmented-dims", "3", "--steps", "50",
                                 "--samples", "32", "--plot", str(plot)])
    assert set(REQUIRED_KEYS) <= set(result)
    assert set(result["contrastive_covariance_eigenvalues"]) >= {"initial", "final"}
    assert set(result["is_psd"]) >= {"initial", "final"}
    traj = result["trajectory"]
    assert traj["times"][0] == 0.0 and traj["times"][-1] == pytest.approx(50 * 0.02)
    assert len(traj["weight_singular_values"]) == 2
    assert np.array(traj["weight_singular_values"][0]).shape == (len(traj["times"]), 6)
    assert len(result["embedding_singular_values"]) == 6
    # the population embedding covariance over time (isotropic x) is W W^T: bounded by the layers' product
    emb = np.array(traj["embedding_singular_values"])
    sv1, sv2 = (np.array(v) for v in traj["weight_singular_values"])
    assert emb.shape == sv1.shape
    np.testing.assert_allclose(emb[:, 0], emb.max(1))
    assert np.all(emb[:, 0] <= (sv1[:, 0] * sv2[:, 0]) ** 2 * (1 + 1e-12))
    # the sampled final spectrum (4096 clean inputs) agrees with the population one to sampling accuracy
    np.testing.assert_allclose(result["embedding_singular_values"][0], emb[-1, 0], rtol=0.15)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_human_summary_is_printed(capsys):
    assert run_main(["--dim", "4", "--augmented-dims", "2", "--steps", "20", "--samples", "16"]) == 0
    out = capsys.readouterr().out
    assert "observed collapsed dims" in out and "predicted collapsed dims" in out


def test_ode_integrator_runs(tmp_path):
    result = run_json(tmp_path, ["--integrator", "ode", "--time", "0.5", "--dim", "4", "--augmented-dims", "2",
                                 "--samples", "24"])
    assert result["config"]["integrator"] == "ode"
    assert result["time"] == pytest.approx(0.5)
    assert result["gradient_evaluations"] > 0
    assert set(REQUIRED_KEYS - {"alignment_matrix", "conservation_drift"}) <= set(result)


def test_simulate_function_matches_cli_config():
    result = simulate(SimConfig(dim=4, augmented_dims=2, steps=10, samples=16))
    assert result["config"]["steps"] == 10 and len(result["embedding_singular_values"]) == 4


BAD_INPUT = [
    (["--augment-strength=-1"], "-1"),
    (["--augment-strength", "nan"], "nan"),
    (["--augment-strength", "inf"], "inf"),
    (["--augmented-dims", "20"], "20"),
    (["--samples", "0"], "0"),
    (["--json", "/nonexistent-dimcollapse/out.json"], "/nonexistent-dimcollapse/out.json"),
    (["--plot", "/nonexistent-dimcollapse/out.png"], "/nonexistent-dimcollapse/out.png"),
    (["--integrator", "euler"], "euler"),
    (["--noisy-views", "3"], "3"),
    (["--layers", "0"], "0"),
    (["--lr", "0"], "0"),
    (["--init", "-1"], "-1"),
    (["--ode-method", "LSODA"], "LSODA"),
]


@pytest.mark.parametrize(("argv", "value"), BAD_INPUT)
def test_bad_input_exits_2_with_one_line(argv, value, capsys):
    assert run_main([*argv, "--steps", "5", "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert value in lines[0] and "Traceback" not in err


def test_unknown_loss_exits_2_with_one_line(capsys):
    """Was a bug: argparse choices= printed the multi-line usage block before the error line."""
    assert run_main(["--loss", "bogus", "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "bogus" in lines[0] and "paper" in lines[0] and "Traceback" not in err


def test_json_path_that_is_a_directory_exits_2(tmp_path, capsys):
    """Was a bug: a folder passed _writable and crashed in os.replace with IsADirectoryError."""
    assert run_main(["--json", str(tmp_path), "--steps", "5", "--dim", "4", "--augmented-dims", "2",
                     "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path) in lines[0]


def test_divergence_exits_1_with_one_line(capsys):
    assert run_main(["--layers", "2", "--init", "5", "--lr", "0.1", "--steps", "200", "--quiet"]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "diverged" in lines[0] and "Traceback" not in err


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "theory.simulate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_cli_subprocess_bad_strength_exits_2():
    proc = cli("--augment-strength=nan", "--quiet")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "nan" in proc.stderr.strip().splitlines()[-1]


def test_cli_subprocess_stderr_is_exactly_one_line():
    """No runpy RuntimeWarning (theory must not import theory.simulate itself) and no usage block."""
    proc = cli("--augment-strength=nan", "--quiet")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_cli_subprocess_divergence_exits_1():
    proc = cli("--layers", "2", "--init", "5", "--lr", "0.1", "--steps", "200", "--quiet")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "diverged" in proc.stderr.strip().splitlines()[-1]
    assert proc.stdout == ""


def test_two_noisy_views_report_no_threshold_in_strict_json(tmp_path, capsys):
    path = tmp_path / "nv2.json"
    assert run_main(["--noisy-views", "2", "--dim", "4", "--augmented-dims", "2", "--steps", "20",
                     "--samples", "16", "--json", str(path)]) == 0
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text)["apriori_threshold"] is None
    assert "a-priori threshold (X at W->0 stops being PSD): none" in capsys.readouterr().out
