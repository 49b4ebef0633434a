"""The toy's verdicts on the powered X test: each case a user met where the old answer was wrong."""

import numpy as np
import pytest

from theory.batched import sweep
from theory.covariance import contrastive_covariance, x_batches
from theory.experiment import SimConfig, run_experiment
from theory.phase import summary_line
from theory.simulate import summary
from theory.toy import apriori_threshold, toy_views

CASE_1 = dict(loss="dot", temperature=0.1, noisy_views=2, augmented_dims=8, lr=0.001, steps=10_000, samples=128,
              augment_strength=3.0)


def run(**kwargs) -> dict:
    return run_experiment(SimConfig(**kwargs))


def test_at_the_apriori_threshold_the_end_is_never_called_psd():
    """s = 1.414: X at the end is indefinite (a many-batch test finds negatives); "PSD" would be false."""
    result = run(augment_strength=1.414)
    assert result["x_verdict"]["final"] in ("not psd", "undetermined")
    assert result["is_psd"]["final"] is False


def test_case_1_counts_the_same_with_either_init_and_x_is_not_psd():
    """The official case_1 setting: the dot loss shrinks the whole spectrum, so the count is judged against
    the end's own largest variance and does not depend on the init's scale."""
    a = run(**CASE_1, init="gaussian:0.5774")
    b = run(**CASE_1, init="0.5774")
    assert a["collapsed_dims"] == b["collapsed_dims"]
    assert not a["total_collapse"] and not b["total_collapse"]
    assert a["x_verdict"]["final"] == b["x_verdict"]["final"] == "not psd"
    # the dot loss's X at W -> 0 is 2 Cov(clean x) / tau: PSD at every strength, and said so
    assert a["apriori_threshold"] is None and a["x_verdict"]["apriori"] == "psd"
    assert "none: X at W->0 is PSD at every strength for this loss" in summary(a)


def test_dot_x_at_zero_is_twice_the_clean_covariance_over_tau():
    """Independent route: p = 1/N, so X = (x^T C x' + x'^T C x) / (tau N) with C the centring matrix."""
    rng = np.random.default_rng(0)
    n, tau = 1000, 0.1
    x, xa = toy_views(rng, n, 4, 2, 3.0, noisy_views=2)
    got = contrastive_covariance(x, xa, np.zeros((1, 4)), "dot", tau)[0]
    xc, xac = x - x.mean(0), xa - xa.mean(0)
    np.testing.assert_allclose(got, (xc.T @ xac + xac.T @ xc) / (tau * n), atol=1e-9)
    # the mean over 40 batches of 1000: noise products e1 e2 have variance s^4 = 81, so an entry's std is
    # 2 / tau * 9 / sqrt(40000) = 0.9; 4.5 std allowed
    x, xa = toy_views(rng, 40 * n, 4, 2, 3.0, noisy_views=2)
    mean = x_batches(x, xa, None, "dot", tau, batch_size=n).mean(0)
    np.testing.assert_allclose(mean, 2 * (n - 1) / n * np.eye(4) / tau, atol=4.0)
    assert np.linalg.eigvalsh(mean)[0] > 10  # PSD though s = 3
    assert apriori_threshold(1, loss="dot") == apriori_threshold(2, loss="dot") == np.inf
    assert apriori_threshold(1, loss="paper") == pytest.approx(np.sqrt(2))


def test_unfinished_counts_every_pending_direction_and_its_time_suffices():
    """s = 1.6: 8 augmented directions are negative; the ones not yet collapsed are all counted, and a rerun
    with the suggested --time collapses all 8."""
    short = run(augment_strength=1.6)
    u = short["unfinished"]
    assert u is not None and short["collapsed_dims"] + u["directions"] == 8
    longer = run(augment_strength=1.6, time=u["suggested_time"])
    assert longer["collapsed_dims"] == 8 and longer["unfinished"] is None
    assert longer["overlaps"]["apriori"] > 0.99


def test_three_layers_count_all_eight_pending():
    result = run(layers=3, augment_strength=2.0)
    assert result["collapsed_dims"] + result["unfinished"]["directions"] == 8


def test_not_theorem_1_is_said_only_when_every_x_was_shown_psd():
    """Three layers at s = 2 to t = 450: 4 augmented dims collapsed, inside the W -> 0 and t = 0 predictions;
    the end's prediction alone would miss them."""
    result = run(layers=3, augment_strength=2.0, time=450.0)
    assert result["collapsed_dims"] >= 4 and not result["not_theorem1"]
    assert result["overlaps"]["apriori"] > 0.45 and result["overlaps"]["initial"] > 0.45
    assert "not Theorem 1's" not in summary(result)


def test_dot_loss_directions_that_shrink_are_not_called_collapse():
    """No augmentation, dot loss: X at t = 0 has negative directions the loss shrinks while it flattens the
    spectrum; nothing collapses and the words say so."""
    result = run(loss="dot", noisy_views=2, augment_strength=0.0, lr=0.001, steps=3000)
    text = summary(result)
    assert result["collapsed_dims"] == 0 and result["predicted_collapsed_dims"] == 0
    assert "predicted collapsed dims" not in text
    if result["x_verdict"]["initial"] == "not psd":
        assert "shrink under X" in text


def test_total_collapse_counts_every_dimension():
    """All 16 dims augmented at s = 3: every variance collapses, the largest too."""
    result = run(augmented_dims=16, augment_strength=3.0, steps=4000)
    assert result["total_collapse"] and result["collapsed_dims"] == 16
    assert "TOTAL COLLAPSE" in summary(result)


def test_sweep_judges_t0_and_the_end_as_simulate():
    """One configuration through both: a small init that grows is not collapsed at t = 0 in either."""
    base = SimConfig(layers=2, init="0.1", steps=600)
    single = run(layers=2, init="0.1", steps=600, augment_strength=0.1)
    batch = sweep([0.1], 1, base, predict=False)
    assert batch["collapsed_dims_initial"][0, 0] == single["collapsed_dims_initial"] == 0
    assert batch["collapsed_dims"][0, 0] == single["collapsed_dims"]


def test_phase_summary_reports_diverged_cells_as_diverged():
    data = {"collapsed_dims": np.array([[-1, 3]]), "collapsed_dims_initial": np.array([[0, 0]]),
            "diverged": np.array([[True, False]]), "seconds": 1.0}
    line = summary_line(data)
    assert "collapsed dims at the end: 3-3" in line and "diverged 1" in line and "-1" not in line
    data["diverged"][:] = True
    assert "all 2 diverged" in summary_line(data)


def test_case_2_end_is_not_called_psd():
    """The official case_2 setting (two layers, dot loss, both views noised, s = 0.001 on all 16 dims): X at
    the end has significantly negative directions; the earlier test printed "PSD at the end: True"."""
    result = run(layers=2, loss="dot", noisy_views=2, augmented_dims=16, augment_strength=0.001, lr=0.01,
                 steps=10_000, init="paper")
    assert result["x_verdict"]["final"] == "not psd" and result["x_negative_dims_final"] >= 1
    assert result["x_verdict"]["apriori"] == "psd"
