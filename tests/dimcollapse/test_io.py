"""The shared plumbing: strict JSON and one-line usage errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dimcollapse.io import OneLineParser, jsonable, write_json


def test_jsonable_turns_numpy_into_strict_json():
    data = {"a": np.arange(3), 1: np.float32(0.5), "inf": np.inf, "nan": float("nan"), "flag": np.bool_(True),
            "nested": (np.int64(4), [np.array([[1.0, -np.inf]])])}
    out = jsonable(data)
    assert out == {"a": [0, 1, 2], "1": 0.5, "inf": None, "nan": None, "flag": True, "nested": [4, [[[1.0, None]]]]}
    json.dumps(out, allow_nan=False)  # raises if anything non-finite slipped through


def test_write_json_replaces_atomically_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("old")
    write_json(path, {"x": np.array([1.5, np.nan])})
    assert json.loads(path.read_text()) == {"x": [1.5, None]}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_one_line_parser_exits_2_with_one_line(capsys):
    p = OneLineParser(prog="demo")
    p.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as exit_info:
        p.parse_args(["--n", "abc"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and "abc" in err


def test_write_json_takes_a_typed_report_through_its_to_json(tmp_path):
    import json

    from dimcollapse.io import write_json
    from theory import SimConfig, run_experiment

    report = run_experiment(SimConfig(augment_strength=2.0, steps=200, x_budget=64))
    write_json(tmp_path / "r.json", report)
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(report.to_json()))
