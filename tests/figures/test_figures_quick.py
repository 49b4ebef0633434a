"""Every figure script in quick mode: it runs, writes PNG/PDF/JSON to a temp dir, and its data show its claim.

Quick sizes are tiny (seconds each); the assertions are the figure's claim, so that a figure that silently
stops showing it fails CI.
"""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest

from figures import make_all, style


def run_quick(name: str, tmp_path) -> dict:
    importlib.import_module(f"figures.{name}").main(quick=True, out_dir=tmp_path)
    for ext in ("png", "pdf", "json"):
        path = tmp_path / f"{name}.{ext}"
        assert path.is_file() and path.stat().st_size > 0, path
    assert not list(tmp_path.glob(".*.tmp")), "atomic write left a temp file"
    return json.loads((tmp_path / f"{name}.json").read_text())


def test_fig3_strong_augmentation(tmp_path):
    d = run_quick("fig3_strong_augmentation", tmp_path)
    s = np.asarray(d["strengths"])
    assert s[0] == 0 and s[-1] > d["apriori_threshold"]
    assert d["collapsed_dims"][0] == 0, "no collapse without augmentation"
    assert max(d["collapsed_dims_initial"]) == 0, "the default init starts with nothing collapsed"
    assert d["collapsed_augmented"][-1] == 8, "all 8 augmented dims collapse at the top strength"
    assert d["collapsed_clean"][-1] == 0, "no clean dim collapses"
    assert d["log10_sigma_augmented_mean"][-1] < d["log10_sigma_clean_mean"][-1] - 2


def test_phase_diagram(tmp_path):
    d = run_quick("phase_diagram", tmp_path)
    s = np.asarray(d["strengths"])
    one = d["views"]["1"]
    thr = one["apriori_threshold"]
    assert math.isclose(thr, math.sqrt(2))
    observed = np.asarray(one["collapsed_dims"])
    assert np.all(observed[s < 0.5 * thr] == 0), "no collapse well below the threshold"
    assert np.all(observed[s > 2 * thr] == 8), "all 8 augmented dims collapse well above it"
    apriori = np.asarray(one["predicted_apriori"])
    assert np.all(apriori[s < 0.5 * thr] == 0) and np.all(apriori[s > 2 * thr] == 8)
    assert d["views"]["2"]["apriori_threshold"] is None, "two noisy views: no a-priori threshold (inf)"


def test_fig5_alignment(tmp_path):
    d = run_quick("fig5_alignment", tmp_path)
    for run in d["runs"].values():
        assert run["score_surviving_final"] > run["score_surviving_init"] + 0.2, "surviving modes align"
        assert run["score_surviving_final"] > run["chance"] + 3 * run["chance_sd"], "well above chance"
        assert run["bound_holds"], "every |A_kk| respects the Davis-Kahan bound"
        a = np.asarray(run["alignment_final"])
        assert a.shape == (16, 16) and np.all((a >= 0) & (a <= 1 + 1e-9))


def test_fig6_singular_values(tmp_path):
    d = run_quick("fig6_singular_values", tmp_path)
    fx = d["fixed_x"]
    assert fx["max_relative_error"] < 1e-6, "Theorem 3's closed form matches the aligned fixed-X flow"
    assert np.allclose(fx["simulated"], fx["closed_form"], rtol=1e-6)
    inf = d["infonce"]
    assert inf["x_verdict"]["initial"] == "psd", "weak augmentation: X is shown PSD at t = 0"
    assert inf["x_verdict"]["final"] != "not psd"
    assert inf["collapsed_dims_final"] > 0, "yet the two-layer embedding stays low-rank (Corollary 2)"
    assert inf["collapsed_dims_initial"] == 11, "the paper init starts with 11 of 16 under the rule"
    sv1 = np.asarray(inf["sigma_w1"])
    assert sv1[-1, 0] > sv1[0, 0], "the leading singular value grows"


def test_fig11_depth(tmp_path):
    d = run_quick("fig11_depth", tmp_path)
    for kind in ("linear", "linear_paper_loss"):
        counts = [r["collapsed_dims"] for r in d["runs"][kind]]
        assert [r["layers"] for r in d["runs"][kind]][0] == 1 and counts[0] == 0, (
            "one layer does not collapse"
        )
        assert all(a <= b for a, b in zip(counts, counts[1:], strict=False)), (
            f"{kind}: non-decreasing in depth"
        )
        assert counts[-1] > 0
    relu = [r["collapsed_dims"] for r in d["runs"]["relu"]]
    assert relu[0] >= 1
    for r in d["runs"]["relu"]:
        last = r["last_layer"]
        assert last["predicted"] >= 1 and last["observed"] >= 1, "X(h) predicts W_L's collapsed direction"
        assert last["inside_observed"] > 0.9 and last["cosine_with_mean_h"] > 0.9
    assert all(r["collapsed_dims_init"] <= r["collapsed_dims"] + r["layers"] * 16 for r in d["runs"]["linear"])


def test_x_over_time(tmp_path):
    d = run_quick("x_over_time", tmp_path)
    strong = d["runs"]["strong"]
    assert strong["n_negative"][-1] == 8 and strong["negative_in_augmented_block"][-1] == 8
    assert strong["n_collapsed"][-1] == 8 and strong["collapsed_in_augmented_block"][-1] == 8
    assert strong["overlap_negative_vs_weakest"][-1] > 0.9, "negative directions of X = collapsed directions"
    weak = d["runs"]["weak"]
    assert weak["n_collapsed"][-1] == 0, "below the threshold nothing collapses"


def test_save_is_atomic_and_strict_json(tmp_path):
    fig, ax = style.plt.subplots()
    ax.plot([0, 1], [0, 1])
    png = style.save(fig, "probe", {"a": np.arange(3), "inf": float("inf"), "flag": np.bool_(True)}, tmp_path)
    assert png == tmp_path / "probe.png"
    assert json.loads((tmp_path / "probe.json").read_text()) == {"a": [0, 1, 2], "inf": None, "flag": True}
    first = (tmp_path / "probe.pdf").read_bytes()
    fig, ax = style.plt.subplots()
    ax.plot([0, 1], [0, 1])
    style.save(fig, "probe", {}, tmp_path)
    assert (tmp_path / "probe.pdf").read_bytes() == first, "PDF output is reproducible (no timestamps)"


def test_make_all_rejects_unknown_names(capsys):
    with pytest.raises(SystemExit):
        make_all.main(["no_such_figure"])
    assert "unknown figure" in capsys.readouterr().err


def test_make_all_lists_every_script():
    from pathlib import Path

    scripts = {p.stem for p in Path(make_all.__file__).parent.glob("*.py")} - {
        "__init__",
        "style",
        "common",
        "make_all",
        "emp_results",
    }
    assert scripts == set(make_all.FIGURES), "every figure script is driven by make_all"
