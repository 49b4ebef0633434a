"""The phase-diagram command line: grid parsing, one-line errors, strict JSON and the heat map."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from theory import phase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_grid_accepts_lists_and_ranges():
    assert phase.grid("0,0.5,2") == [0.0, 0.5, 2.0]
    assert phase.grid("0:4:5") == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert phase.positive_ints("1,2") == [1, 2]


@pytest.mark.parametrize(("argv", "message"), [
    (["--strengths", "0:1"], "is not a grid"),
    (["--widths", "0"], "whole number >= 1"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--strengths", "-1", "--steps", "2"], "--augment-strength must be a finite number >= 0"),
    (["--device", "cuda"], "--device needs --backend torch"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "theory.phase", *argv, "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_tiny_grid_writes_strict_json_and_heat_map(tmp_path):
    code = phase.main(["--strengths", "0,3", "--lrs", "0.02,40", "--widths", "4", "--depths", "1,2",
                       "--seeds", "2", "--steps", "60", "--samples", "16", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "phase.json").read_text())  # strict: json refuses NaN by default here too
    collapsed = np.array(data["collapsed_dims"])
    assert collapsed.shape == (1, 2, 2, 2, 2) and data["axes"] == ["width", "depth", "strength", "lr", "seed"]
    diverged = np.array(data["diverged"], dtype=bool)
    assert diverged[..., 1, :].any() and not diverged[..., 0, :].any()  # lr 40 blows up (Theorem 3), 0.02 not
    assert np.all(collapsed[diverged] == -1)
    assert np.all(collapsed[0, :, 0, 0] == 0)  # no augmentation: nothing collapses
    for ext in ("png", "pdf"):
        assert (tmp_path / f"phase.{ext}").stat().st_size > 0
    assert not list(tmp_path.glob("*.tmp*"))


def test_help_names_the_grid_axes():
    proc = subprocess.run([sys.executable, "-m", "theory.phase", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    for flag in ("--strengths", "--lrs", "--widths", "--depths", "--seeds", "--dtype", "--backend"):
        assert flag in proc.stdout
