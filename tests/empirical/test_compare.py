"""empirical.compare: the CLI end to end on a 4-step checkpoint (the analyses: test_compare_x, _frozen,
_alignment; the projector maps: test_linear_maps)."""

import json

import pytest

torch = pytest.importorskip("torch")

from empirical import compare as cmp  # noqa: E402
from empirical.models import SSLModel  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    pytest.importorskip("sklearn")
    from empirical.train import main as train

    out = tmp_path_factory.mktemp("run")
    args = [
        "--dataset",
        "digits",
        "--backbone",
        "tiny",
        "--projector",
        "mlp",
        "--max-steps",
        "4",
        "--batch-size",
        "32",
        "--image-size",
        "16",
        "--spectrum-every",
        "0",
        "--out",
        str(out),
        "--no-progress",
        "--threads",
        "1",
        "--no-tensorboard",
    ]
    assert train(args) == 0
    return out


def test_cli_end_to_end(tiny_run, tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = cmp.main(
        [
            "--checkpoint",
            str(tiny_run),
            "--out",
            str(out),
            "--samples",
            "96",
            "--frozen-dim",
            "4",
            "--frozen-steps",
            "30",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "[1]" in text and "[2]" in text and "[3] mlp_layer1_vs_layer2" in text
    assert "X (matched):" in text and "X (matched ):" not in text
    lines = text.strip().splitlines()
    # the verdict in words, then the one file written
    on_x = lines[-3]
    assert on_x.startswith("verdict on X: at W -> 0: ") and "; trained: " in on_x and "; matched: " in on_x
    assert lines[-2].startswith("verdict: ") and lines[-1] == f"wrote {out / 'compare.json'}"
    res = json.load(open(out / "compare.json"))
    assert res["samples"] == 96 and res["config"]["projector"] == "mlp" and res["trained_steps"] == 4
    xf = res["x_from_features"]
    assert {"trained", "matched", "apriori"} <= set(xf) and xf["batch"] == 3  # 96 samples: 32 batches
    assert xf["apriori"]["n_batches"] == 32 and xf["apriori"]["verdict"] in ("not psd", "psd", "undetermined")
    assert len(xf["trained"]["eigenvalues"]) == xf["support_dim"] <= 128
    assert set(res["frozen"]["depths"]) == {"1", "2", "3"}
    assert {"mlp_layer1_vs_layer2", "backbone_main_vs_projector"} <= set(res["alignment"])
    assert 0.0 < res["projector_map"]["r2_of_linear_map"] <= 1.0


def test_cli_bad_input_exits_2_with_one_line(tiny_run, tmp_path, capsys):
    assert cmp.main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not found" in err and "\n" not in err
    # a random-subset run has no fixed projector map for X
    cfg = json.load(open(tiny_run / "config.json"))
    bad = tmp_path / "rs"
    bad.mkdir()
    json.dump({**cfg, "projector": "random-subset"}, open(bad / "config.json", "w"))
    torch.save(SSLModel("tiny", "random-subset", cfg["d0"], cfg["cifar_stem"]).state_dict(), bad / "final.pt")
    assert cmp.main(["--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "random-subset" in err and "\n" not in err
    assert cmp.main(["--checkpoint", str(tiny_run), "--samples", "1"]) == 2
    assert "--samples 1 must be between 8 and 8192" in capsys.readouterr().err


def test_cli_missing_dataset_and_unwritable_out(tiny_run, tmp_path, capsys, monkeypatch):
    """A run whose dataset is not where its config says: one line naming the folder; --data-dir fixes it.
    --out is checked before any work, and a read error is not reported as a write error."""
    cfg = json.load(open(tiny_run / "config.json"))
    moved = tmp_path / "moved"
    moved.mkdir()
    json.dump({**cfg, "dataset": "cifar10", "data_dir": str(tmp_path / "nowhere")}, open(moved / "config.json", "w"))
    torch.save(torch.load(tiny_run / "final.pt"), moved / "final.pt")
    assert cmp.main([str(moved), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nowhere" in err and "cannot write" not in err
    assert cmp.main([str(moved), "--data-dir", str(tmp_path / "elsewhere"), "--no-progress"]) == 2
    assert "elsewhere" in capsys.readouterr().err
    monkeypatch.setattr(cmp, "compare", lambda *a, **k: pytest.fail("worked before checking --out"))
    assert cmp.main([str(tiny_run), "--out", "/proc/nope"]) == 2
    assert "--out '/proc/nope' is not writable" in capsys.readouterr().err


def _xf(verdict, n_negative=3, weight_collapsed=5):
    d = {"n_negative": n_negative, "verdict": verdict, "verdict_text": f"{verdict} (words)",
         "overlap_same_count": 0.8, "chance_overlap": 0.1}
    return {"weight_collapsed": weight_collapsed, "support_dim": 30, "apriori": d, "trained": d, "matched": d}


@pytest.mark.parametrize("verdict, words", [
    ("not psd", "is attributed to strong augmentation"),
    ("psd", "is not attributed to strong augmentation"),
    ("undetermined", "undetermined"),
])
def test_verdict_line_attributes_the_collapse(verdict, words):
    on_x, line = cmp.verdict_lines(_xf(verdict))
    assert on_x == (f"verdict on X: at W -> 0: {verdict} (words); trained: {verdict} (words); "
                    f"matched: {verdict} (words)")
    assert line.startswith("verdict: the projector's collapse (5 of 30 directions)") and words in line
    assert ("overlap W's collapsed directions 0.80, chance 0.10" in line) == (verdict == "not psd")


def test_verdict_without_collapse_or_verdict_fields():
    assert "nothing to attribute" in cmp.verdict_lines(_xf("not psd", weight_collapsed=0))[1]
    old = _xf("psd")
    old["apriori"] = {"n_negative": 2}  # a result written before the PSD verdicts
    on_x, line = cmp.verdict_lines(old)
    assert "at W -> 0: 2 negative eigenvalue(s), no PSD verdict" in on_x and "undetermined" in line
