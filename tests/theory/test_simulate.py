"""`python -m theory.simulate`: each documented behaviour on a small, fast run, the JSON report, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from theory import simulate as cli_module
from theory.covariance import contrastive_covariance, psd_check
from theory.dynamics import end_to_end, forward, loss_and_gradients
from theory.experiment import SimConfig, analyse, initial_weights, integrate, run_experiment, time_to_collapse
from theory.predict import gd_conservation_increment
from theory.simulate import main
from theory.spectrum import singular_values
from theory.toy import toy_views

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REQUIRED_KEYS = {
    "config", "weight_singular_values", "embedding_singular_values", "embedding_singular_values_initial",
    "collapsed_dims", "collapsed_dims_initial", "collapsed_by_training", "collapse_reference",
    "predicted_collapsed_dims", "predicted_collapsed_dims_initial", "contrastive_covariance_eigenvalues",
    "is_psd", "unfinished", "alignment", "alignment_matrix", "conservation", "trajectory",
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


def run_text(argv: list[str], capsys) -> str:
    assert run_main(argv) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def strong_one_layer():
    """The README example: --augment-strength 2.0, one layer, defaults (run once, ~2 s)."""
    cfg = SimConfig(augment_strength=2.0)
    cfg.validate()
    traj, rng, fixed = integrate(cfg)
    return cfg, traj, analyse(cfg, traj, rng, fixed)


def test_strong_augmentation_collapses_exactly_the_augmented_block(strong_one_layer):
    cfg, traj, result = strong_one_layer
    assert result["collapsed_dims_initial"] == 0 and result["collapsed_dims"] == 8
    assert result["collapsed_by_training"] == 8
    assert result["predicted_collapsed_dims"] == 8
    assert result["collapsed_subspace_overlap"] > 0.99
    assert result["unfinished"] is None
    spectrum = np.array(result["embedding_singular_values"])
    assert np.log10(spectrum[7]) - np.log10(spectrum[8]) >= 3.0
    # independent reading of the final weight: the augmented coordinates are the ones it kills
    w = end_to_end(traj.final)
    gain = np.linalg.norm(w, axis=0)  # |W e_k| per input coordinate
    assert gain[8:].max() < 1e-2 * gain[:8].min()
    # and X measured here on fresh batches has its negative eigen-directions in the augmented block
    rng = np.random.default_rng(123)
    samples = np.stack([contrastive_covariance(*toy_views(rng, 128, 16, 8, 2.0), w)[0] for _ in range(64)])
    check = psd_check(samples.mean(0), samples=samples)
    assert check.n_negative == 8
    assert np.sum(check.basis[8:] ** 2) / 8 > 0.95


def test_strong_augmentation_apriori_prediction(strong_one_layer):
    """One noisy view, strength 2 > sqrt(2): X at W -> 0 already has the 8 negative eigenvalues."""
    _, _, result = strong_one_layer
    assert result["apriori_threshold"] == pytest.approx(np.sqrt(2.0))
    assert result["predicted_collapsed_dims_apriori"] == 8
    assert result["predicted_collapsed_dims_initial"] == 8


@pytest.mark.parametrize(("argv", "dim"), [
    (["--augmented-dims", "16", "--augment-strength", "2"], 16),
    (["--dim", "1", "--augmented-dims", "1", "--augment-strength", "2"], 1),
])
def test_total_collapse_counts_every_dimension(tmp_path, argv, dim):
    """Every variance falls ~70 decades: relative to the largest nothing would look collapsed."""
    result = run_json(tmp_path, argv)
    assert result["collapsed_dims"] == dim and result["collapsed_dims_initial"] == 0
    assert result["collapsed_by_training"] == dim
    assert max(result["embedding_log10_spectrum"]) < -30
    assert result["collapse_reference"] == pytest.approx(max(result["embedding_singular_values_initial"]))


@pytest.mark.parametrize("dim", [16, 32, 64])
def test_no_augmentation_nothing_collapsed_at_start_or_end(tmp_path, dim):
    result = run_json(tmp_path, ["--augment-strength", "0", "--dim", str(dim), "--augmented-dims", str(dim // 2),
                                 "--steps", "500"])
    assert result["collapsed_dims_initial"] == 0 and result["collapsed_dims"] == 0
    assert result["predicted_collapsed_dims"] == 0 and result["is_psd"]["initial"] is True
    assert result["collapsed_subspace_overlap"] is None  # nothing predicted, nothing observed: n/a


@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_default_init_starts_with_nothing_collapsed_at_any_depth(layers):
    cfg = SimConfig(dim=64, layers=layers)
    weights = initial_weights(cfg, np.random.default_rng(layers))
    end = end_to_end(weights)
    variances = np.linalg.svd(end, compute_uv=False) ** 2  # embedding covariance of isotropic data
    assert variances.min() >= 0.1 * variances.max()
    sv = np.linalg.svd(weights[0], compute_uv=False)
    assert np.all(np.diff(sv) < 0), "distinct singular values (Theorem 2's premise)"


@pytest.mark.parametrize("dim", [16, 64])
def test_paper_init_keeps_its_span_at_every_width(dim):
    """exp(-0.35 k) at width 16; the decay is rescaled so that sigma_min / sigma_max = exp(-5.25) at any width."""
    w = initial_weights(SimConfig(dim=dim, init="paper"), np.random.default_rng(0))[0]
    sv = np.linalg.svd(w, compute_uv=False)
    assert sv[0] == pytest.approx(1.0) and sv[-1] == pytest.approx(np.exp(-0.35 * 15))
    if dim == 16:
        np.testing.assert_allclose(sv, np.exp(-0.35 * np.arange(16)), rtol=1e-10)


def test_paper_init_says_it_starts_collapsed(capsys):
    out = run_text(["--layers", "2", "--init", "paper", "--steps", "1", "--augment-strength", "0.1"], capsys)
    assert "the init starts collapsed: ranks 6-16" in out
    assert "at t=0 11 of 16" in out


def test_two_layer_example_collapse_is_caused_by_training(tmp_path, capsys):
    """The README's implicit-regularization run: X stays PSD, modes grow one by one (Theorem 3)."""
    argv = ["--layers", "2", "--augment-strength", "0.1", "--init", "0.1"]
    start = run_json(tmp_path, [*argv, "--steps", "1"])
    assert start["collapsed_dims"] == 0, "one step of training collapses nothing"
    result = run_json(tmp_path, [*argv, "--steps", "3000"])
    assert result["collapsed_dims_initial"] == 0
    assert 3 <= result["collapsed_by_training"] == result["collapsed_dims"] < 16
    assert result["predicted_collapsed_dims"] == 0 and result["x_verdict"]["final"] != "not psd"
    assert result["x_verdict"]["initial"] == "psd" and result["x_verdict"]["apriori"] == "psd"
    sv0, sv1 = (np.array(v) for v in (result["weight_singular_values_initial"][0], result["weight_singular_values"][0]))
    growth = sv1 / sv0
    assert growth[0] > 10 and growth[-1] < 3, "the leading modes grew, the trailing ones lagged"
    a = result["alignment"][0]
    assert a["score"] > 0.95 and a["chance"] < 0.5
    assert set(REQUIRED_KEYS) <= set(result)
    (row,) = result["conservation"]
    assert row["unexplained"] < 1e-10 and row["gd_second_order"] == pytest.approx(row["drift"], rel=1e-6)
    out = run_text([*argv, "--steps", "3000"], capsys)
    assert f"at t=0 0 of 16, at the end {result['collapsed_dims']} of 16" in out


def test_unfinished_run_is_flagged_and_its_time_estimate_suffices(tmp_path, capsys):
    short = run_json(tmp_path, ["--steps", "100"])
    u = short["unfinished"]
    assert u is not None and u["directions"] >= 1 and u["suggested_time"] > short["time"]
    longer = run_json(tmp_path, ["--time", str(u["suggested_time"])])
    assert longer["unfinished"] is None and longer["collapsed_dims"] == 8


def test_unfinished_reproducer_wide(tmp_path, capsys):
    argv = ["--dim", "64", "--augmented-dims", "32", "--augment-strength", "2", "--init", "1"]
    result = run_json(tmp_path, argv)
    u = result["unfinished"]
    assert result["predicted_collapsed_dims_initial"] == 32
    assert u["directions"] >= 20 and u["decades_to_go"][0] > 0.5 and u["suggested_time"] > 10 * result["time"]
    assert max(u["x_eigenvalues"]) < 0
    out = run_text(argv, capsys)
    assert "UNFINISHED" in out and f"--time {u['suggested_time']:g}" in out


def test_time_to_collapse_matches_the_fixed_x_flows():
    # one layer: variance v e^(2 lam t)
    assert time_to_collapse(np.array(1.0), 1e-4, np.array(-0.5), 1) == pytest.approx(np.log(1e4))
    # two balanced layers: sigma' = lam sigma^3, variance sigma^4; integrate the ODE numerically
    from scipy.integrate import solve_ivp

    t = float(time_to_collapse(np.array(1.0), 1e-4, np.array(-0.5), 2))
    sol = solve_ivp(lambda _, s: -0.5 * s**3, (0, t), [1.0], rtol=1e-10, atol=1e-14)
    assert sol.y[0, -1] ** 4 == pytest.approx(1e-4, rel=1e-6)


@pytest.mark.parametrize("integrator", [["--steps", "1000"], ["--integrator", "ode", "--time", "20"]])
def test_dot_loss_without_augmentation_predicts_no_collapse(tmp_path, integrator):
    result = run_json(tmp_path, ["--loss", "dot", "--augment-strength", "0", *integrator])
    assert result["collapsed_dims"] == 0
    assert result["predicted_collapsed_dims"] == 0 and result["unfinished"] is None


def test_alignment_survives_degenerate_modes(tmp_path, capsys):
    argv = ["--layers", "2", "--augment-strength", "0.001", "--init", "paper"]
    result = run_json(tmp_path, argv)
    a = result["alignment"][0]
    assert a["surviving"] == 16 - result["collapsed_dims"] == 5
    assert a["score"] >= 0.95 > a["diagonal_score"] and a["chance"] < 0.2
    raw = np.array(a["matrix"])
    assert raw.shape == (16, 16) and np.all((raw >= 0) & (raw <= 1 + 1e-12))
    assert np.array_equal(raw, np.array(result["alignment_matrix"]))
    out = run_text(argv, capsys)
    assert f"{a['score']:.3f} (1 aligned, chance 0 +- {a['chance_sd']:.3f})" in out


def test_three_layers_conservation_per_pair_explained_and_shrinks_with_lr(tmp_path, capsys):
    base = ["--layers", "3", "--augment-strength", "0.1", "--init", "0.5"]
    fast = run_json(tmp_path, [*base, "--steps", "500", "--lr", "0.02"])
    slow = run_json(tmp_path, [*base, "--steps", "1000", "--lr", "0.01"])
    assert [r["pair"] for r in fast["conservation"]] == [[1, 2], [2, 3]]
    assert len(fast["alignment"]) == 2
    for a, b in zip(fast["conservation"], slow["conservation"], strict=True):
        assert a["unexplained"] < 1e-10 and a["gd_second_order"] == pytest.approx(a["drift"], rel=1e-6)
        assert a["drift"] / b["drift"] == pytest.approx(2.0, rel=0.2), "gd drift is O(lr) at fixed time"
    out = run_text([*base, "--steps", "50"], capsys)
    assert "W1W1^T - W2^TW2" in out and "W2W2^T - W3^TW3" in out and "shrinks with lr" in out


def test_tracked_conservation_increment_matches_the_per_step_formula():
    rng = np.random.default_rng(3)
    weights = [rng.standard_normal((4, 4)) for _ in range(3)]
    x, x_aug = toy_views(rng, 16, 4, 2, 1.0)
    grads = loss_and_gradients(weights, x, x_aug)[1]
    from theory.dynamics import run_gd

    traj = run_gd(weights, 1, 0.05, (x, x_aug), track_conservation=True)
    for mine, theirs in zip(traj.info["conservation_increment"], gd_conservation_increment(grads, 0.05),
                            strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-15)


def test_relu_last_layer_prediction(tmp_path, capsys):
    argv = ["--layers", "2", "--relu", "--loss", "dot", "--augment-strength", "0.001", "--lr", "0.01",
            "--steps", "1000"]
    result = run_json(tmp_path, argv)
    r = result["relu_last_layer"]
    assert result["collapsed_dims_initial"] == 0 and result["collapsed_dims"] >= 1
    assert r["predicted_collapsed_dims"] >= 1 and r["observed_collapsed_dims"] >= 1
    assert r["most_negative_eigenvalue"]["initial"] < -1
    assert r["cosine_most_negative_with_mean_h"]["final"] > 0.9
    assert r["overlap"] > 0.9
    # independent: W_L's weakest right singular vector is the mean hidden feature
    cfg = SimConfig(layers=2, relu=True, loss="dot", augment_strength=0.001, lr=0.01, steps=1000)
    traj, _, _ = integrate(cfg)
    x = np.random.default_rng(9).standard_normal((4096, 16))
    h = np.maximum(forward(traj.final[:1], x)[0], 0.0).mean(0)
    null = np.linalg.svd(traj.final[1])[2][-1]
    assert abs(null @ h) / np.linalg.norm(h) > 0.9
    out = run_text(argv, capsys)
    assert "ReLU last layer" in out and "overlap with X(h)'s prediction" in out


def test_gd_step_size_instability_is_named(capsys):
    assert run_main(["--layers", "2", "--init", "5", "--lr", "0.1", "--steps", "200", "--quiet"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step-size instability" in err[0] and "--lr" in err[0] and "Theorem 3" not in err[0]


def test_stiff_divergence_is_named_a_step_size_instability(monkeypatch, capsys):
    """A strength of 1000 makes the flow stiff: the diagnosing ODE gives up within its budget."""
    from theory import experiment

    monkeypatch.setattr(experiment, "DIAGNOSIS_EVALUATIONS", 2000)
    argv = ["--layers", "2", "--augment-strength", "1000", "--dim", "4", "--augmented-dims", "2", "--samples", "16"]
    assert run_main([*argv, "--quiet"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stiff" in err[0] and "step-size instability" in err[0]
    assert run_main([*argv, "--integrator", "ode", "--quiet"]) == 2  # refused: RK45 would need ~1e7 steps
    assert "--ode-method" in capsys.readouterr().err


def test_same_init_stays_bounded_under_the_flow(tmp_path):
    result = run_json(tmp_path, ["--layers", "2", "--init", "5", "--integrator", "ode", "--time", "20"])
    assert result["time"] == pytest.approx(20)
    assert max(result["embedding_singular_values"]) < 1e4


def test_unstable_first_step_is_refused(capsys):
    assert run_main(["--augment-strength", "100", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unstable" in err and "--lr" in err and len(err.strip().splitlines()) == 1


def test_record_interval_follows_the_real_step_count(tmp_path):
    result = run_json(tmp_path, ["--time", "2", "--lr", "0.001", "--steps", "10", "--dim", "4",
                                 "--augmented-dims", "2", "--samples", "16"])
    assert result["config"]["steps"] == 2000
    assert len(result["trajectory"]["times"]) <= 202
    assert result["time"] == pytest.approx(2.0)


def test_json_report_and_plot(tmp_path):
    plot = tmp_path / "spectrum.png"
    result = run_json(tmp_path, ["--layers", "2", "--dim", "6", "--augmented-dims", "3", "--steps", "50",
                                 "--samples", "32", "--plot", str(plot)])
    assert set(REQUIRED_KEYS) <= set(result)
    traj = result["trajectory"]
    assert traj["times"][0] == 0.0 and traj["times"][-1] == pytest.approx(50 * 0.02)
    assert np.array(traj["weight_singular_values"][0]).shape == (len(traj["times"]), 6)
    # the population embedding covariance over time (isotropic x) is W W^T
    emb = np.array(traj["embedding_singular_values"])
    sv1, sv2 = (np.array(v) for v in traj["weight_singular_values"])
    assert np.all(emb[:, 0] <= (sv1[:, 0] * sv2[:, 0]) ** 2 * (1 + 1e-12))
    np.testing.assert_allclose(result["embedding_singular_values"][0], emb[-1, 0], rtol=0.15)
    np.testing.assert_allclose(result["embedding_singular_values_initial"][0], emb[0, 0], rtol=0.15)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_is_printed_before_plotting(monkeypatch, tmp_path, capsys):
    def broken(*_):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(cli_module, "plot_trajectory", broken)
    with pytest.raises(RuntimeError):
        main(["--dim", "4", "--augmented-dims", "2", "--steps", "20", "--samples", "16",
              "--plot", str(tmp_path / "a.png")])
    assert "collapsed dims" in capsys.readouterr().out


def test_overlap_is_na_when_nothing_predicted_or_observed(capsys):
    out = run_text(["--augment-strength", "0", "--dim", "4", "--augmented-dims", "2", "--steps", "50"], capsys)
    assert "with X's prediction at W->0 / t=0 / end: n/a / n/a / n/a (nothing predicted, nothing collapsed)" in out


def test_ode_integrator_runs(tmp_path):
    result = run_json(tmp_path, ["--integrator", "ode", "--time", "0.5", "--dim", "4", "--augmented-dims", "2",
                                 "--samples", "24"])
    assert result["config"]["integrator"] == "ode"
    assert result["time"] == pytest.approx(0.5) and result["gradient_evaluations"] > 0


def test_run_experiment_matches_cli_config():
    result = run_experiment(SimConfig(dim=4, augmented_dims=2, steps=10, samples=16))
    assert result["config"]["steps"] == 10 and len(result["embedding_singular_values"]) == 4
    z = forward(initial_weights(SimConfig(dim=4, augmented_dims=2), np.random.default_rng(0)),
                np.random.default_rng(1_000_003).standard_normal((4096, 4)))[0]
    np.testing.assert_allclose(result["embedding_singular_values_initial"], singular_values(z), rtol=1e-12)


def test_cli_json_is_the_report_to_json(tmp_path):
    report = run_experiment(SimConfig(layers=2, dim=4, augmented_dims=2, steps=20, samples=16))
    argv = ["--layers", "2", "--dim", "4", "--augmented-dims", "2", "--steps", "20", "--samples", "16"]
    assert run_json(tmp_path, argv) == report.to_json()
    assert report.alignment_matrix == report.alignment[0].matrix == report["alignment_matrix"]
    assert report.conservation_drift == max(row.drift for row in report.conservation) == report["conservation_drift"]


@pytest.mark.parametrize(("kwargs", "parts"), [
    ({}, {"x_predictions"}),
    ({"layers": 2, "relu": True}, {"relu_last_layer", "alignment"}),
    ({"loss": "ntxent"}, set()),
    ({"layers": 2, "integrator": "ode", "time": 0.2}, {"x_predictions", "alignment", "conservation"}),
])
def test_report_parts_exist_only_where_the_run_has_them(kwargs, parts):
    """The optional parts are None where the run has none, and their keys are absent from the JSON."""
    report = run_experiment(SimConfig(dim=4, augmented_dims=2, steps=20, samples=16, **kwargs))
    optional = ("x_predictions", "relu_last_layer", "alignment", "conservation")
    assert {name for name in optional if getattr(report, name) is not None} == parts
    data = report.to_json()
    assert dict(report) == data and list(report) == list(data)
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert ("predicted_collapsed_dims" in data) == ("x_predictions" in parts)
    assert ("relu_last_layer" in data) == ("relu_last_layer" in parts)
    assert ("alignment_matrix" in data) == ("alignment" in parts)
    assert ("conservation_drift" in data) == ("conservation" in parts)
    assert ("embedding_singular_values" in data["trajectory"]) == (not report.config["relu"])
    for row in report.conservation or []:
        assert ("gd_second_order" in row.to_json()) == (report.config["integrator"] == "gd")
    text = cli_module.summary(report)
    assert ("X's verdicts" in text) == ("x_predictions" in parts)
    assert ("ReLU last layer" in text) == ("relu_last_layer" in parts)
    assert ("not available" in text) == (not parts & {"x_predictions", "relu_last_layer"})


def test_package_function_is_never_shadowed_by_the_cli_module():
    code = ("import theory.simulate, types; from theory import simulate, run_experiment; "
            "assert isinstance(simulate, types.ModuleType) and callable(run_experiment)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


BAD_INPUT = [
    (["--augment-strength=-1"], "-1"),
    (["--augment-strength", "nan"], "nan"),
    (["--augment-strength", "inf"], "inf"),
    (["--augment-strength", "1e10"], "1e+10"),
    (["--augment-strength", "1e308"], "1e+308"),
    (["--augmented-dims", "20"], "20"),
    (["--samples", "0"], "0"),
    (["--json", "/nonexistent-dimcollapse/out.json"], "/nonexistent-dimcollapse/out.json"),
    (["--plot", "/nonexistent-dimcollapse/out.png"], "/nonexistent-dimcollapse/out.png"),
    (["--plot", "out.xyz"], "out.xyz"),
    (["--plot", "noext"], "noext"),
    (["--integrator", "euler"], "euler"),
    (["--noisy-views", "3"], "3"),
    (["--layers", "0"], "0"),
    (["--lr", "0"], "0"),
    (["--init", "-1"], "-1"),
    (["--init", "bogus"], "bogus"),
    (["--seed", "-1"], "--seed"),
    (["--ode-method", "LSODA"], "LSODA"),
]


@pytest.mark.parametrize(("argv", "value"), BAD_INPUT)
def test_bad_input_exits_2_with_one_line(argv, value, capsys):
    assert run_main([*argv, "--steps", "5", "--quiet"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert value in lines[0] and "Traceback" not in captured.err
    assert captured.out == "", "rejected before the run"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "theory.simulate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("strength", ["nan", "1e10", "1e308"])
def test_cli_subprocess_absurd_strength_is_one_line_without_warnings(strength):
    """No runpy RuntimeWarning, no numpy overflow warning, no usage block: one line."""
    proc = cli(f"--augment-strength={strength}", "--quiet")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Warning" not in proc.stderr


def test_cli_subprocess_divergence_exits_3():
    proc = cli("--layers", "2", "--init", "5", "--lr", "0.1", "--steps", "200", "--quiet")
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr and "step-size" in proc.stderr.strip().splitlines()[-1]
    assert proc.stdout == ""


def test_two_noisy_views_report_no_threshold_in_strict_json(tmp_path, capsys):
    path = tmp_path / "nv2.json"
    assert run_main(["--noisy-views", "2", "--dim", "4", "--augmented-dims", "2", "--steps", "20",
                     "--samples", "16", "--json", str(path)]) == 0
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text)["apriori_threshold"] is None
    assert "a-priori threshold (X at W->0 stops being PSD): none" in capsys.readouterr().out
