"""A figure made twice gives the same bytes (PNG, PDF, JSON), and its JSON records no machine path."""

from __future__ import annotations

import json

import pytest

from figures import emp_results, phase_diagram, style

EXTS = ("png", "pdf", "json")


def _bytes(folder, name):
    return {ext: (folder / f"{name}.{ext}").read_bytes() for ext in EXTS}


def test_phase_diagram_rerun_is_byte_identical(tmp_path):
    """The figure whose title and JSON used to carry its run time: quick sizes, two runs, the same files."""
    first, second = tmp_path / "a", tmp_path / "b"
    phase_diagram.main(quick=True, out_dir=first)
    phase_diagram.main(quick=True, out_dir=second)
    a, b = _bytes(first, phase_diagram.NAME), _bytes(second, phase_diagram.NAME)
    for ext in EXTS:
        assert a[ext] == b[ext], f"{ext} differs between two identical runs"
    assert "seconds" not in json.loads(a["json"])


def test_results_figure_records_a_relative_recipe(tmp_path):
    """Given the results folder as an absolute path, the recipe still names it relative to the repository."""
    from figures import emp_fig2_embedding_spectrum as fig2

    folder = emp_results.RESULTS / "projector-ablation-mnist5k-cpu-10ep-corrected"
    if not (folder / "table.json").is_file():
        pytest.skip("committed results absent")
    fig2.main(out_dir=tmp_path / "a", results=folder.resolve())
    fig2.main(out_dir=tmp_path / "b", results=folder.resolve())
    assert _bytes(tmp_path / "a", fig2.NAME) == _bytes(tmp_path / "b", fig2.NAME)
    recipe = json.loads((tmp_path / "a" / f"{fig2.NAME}.json").read_text())["recipe"]
    assert recipe.startswith("results/projector-ablation-mnist5k-cpu-10ep-corrected:"), recipe
    assert str(style.REPO) not in (tmp_path / "a" / f"{fig2.NAME}.json").read_text()
