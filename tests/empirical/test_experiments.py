"""empirical.experiments: each experiment in --quick mode (2 rows, 2 steps), resume, commands, bad input, a
half-written final.pt."""

import json
import os

import pytest

torch = pytest.importorskip("torch")

from empirical import experiments as ex  # noqa: E402


def quick(name: str, tmp, *extra: str) -> int:
    return ex.main(
        [name, "--dataset", "digits", "--quick", "--in-process", "--out", str(tmp / name),
         "--runs-dir", str(tmp / "runs"), *extra]
    )  # fmt: skip


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exp")
    assert quick("projector-ablation", tmp) == 0
    return tmp


def test_projector_ablation_quick(ablation):
    out = ablation / "projector-ablation"
    data = json.loads((out / "table.json").read_text())
    assert [r["run"] for r in data["rows"]] == ["none", "random-subset-d0_22"]
    for t in data["table"]:
        assert 0 <= t["knn_top1"] <= 1 and 0 <= t["linear_top1"] <= 1
        assert t["r_dim"] == 128 and 0 <= t["r_collapsed"] <= 128 and t["z_erank"] > 0
    assert data["table"][0]["paper_top1"] == 51.5
    md = (out / "table.md").read_text()
    assert "| none |" in md and "kNN top-1" in md and "paper ImageNet top-1" in md


def test_resume_skips_finished_rows(ablation, capsys):
    rows = ablation / "projector-ablation" / "rows"
    stamp = {p.name: p.stat().st_mtime_ns for p in rows.iterdir()}
    assert quick("projector-ablation", ablation) == 0
    assert capsys.readouterr().out.count("done earlier, skipped") == 2
    assert {p.name: p.stat().st_mtime_ns for p in rows.iterdir()} == stamp


def test_evaluation_only_when_trained_run_exists(ablation, capsys):
    """A row JSON lost after training: the run's final.pt is reused, nothing retrains."""
    row = ablation / "projector-ablation" / "rows" / "none.json"
    row.unlink()
    log = ablation / "runs" / "none" / "train.log"
    size = log.stat().st_size
    assert quick("projector-ablation", ablation) == 0
    assert row.exists() and log.stat().st_size == size


def test_table_md_is_written_whole_or_not_at_all(ablation, monkeypatch, capsys):
    """A disk that fills while table.md is written: the old table stays and no temporary file is left."""
    out = ablation / "projector-ablation"
    assert sorted(p.name for p in out.iterdir()) == ["rows", "table.json", "table.md"]
    before = (out / "table.md").read_text()

    class DiskFull:
        def __format__(self, spec: str) -> str:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(ex, "markdown", lambda name, table: DiskFull())
    assert quick("projector-ablation", ablation) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert (out / "table.md").read_text() == before
    assert sorted(p.name for p in out.iterdir()) == ["rows", "table.json", "table.md"]


def test_d0_sweep_and_augment_strength_quick(tmp_path):
    assert quick("d0-sweep", tmp_path) == 0
    data = json.loads((tmp_path / "d0-sweep" / "table.json").read_text())
    assert [t["d0"] for t in data["table"]] == [4, 128]
    assert [t["z_dim"] for t in data["table"]] == [4, 128]
    assert "r_rest" in data["rows"][0]["spectra"] and "r_rest" not in data["rows"][1]["spectra"]


def test_augment_strength_quick_apriori_x(tmp_path):
    """Each row carries the a-priori X count (trained and t = 0 backbone); one is recomputed here from
    theory.contrastive_covariance at W = 0 on explicit batches, and an older row JSON gains the fields."""
    import numpy as np

    from empirical.evaluate import load_split, load_trained
    from empirical.features import view_features
    from theory import contrastive_covariance, psd_check

    assert quick("augment-strength", tmp_path) == 0
    out = tmp_path / "augment-strength"
    data = json.loads((out / "table.json").read_text())
    assert [t["augment_strength"] for t in data["table"]] == [0.25, 1.5]
    assert all(t["z_dim"] == 128 for t in data["table"])
    for t in data["table"]:
        for key in ("x_apriori_negative", "x_apriori_negative_init"):
            assert type(t[key]) is int and 0 <= t[key] <= t["r_dim"]
    assert "a-priori X(r) negative eigenvalues" in (out / "table.md").read_text()

    row = data["rows"][-1]
    model, config = load_trained(str(tmp_path / "runs" / row["run"]))
    assert config["augment_strength"] == 1.5
    images, _ = load_split(config, "test", ex.X_IMAGES)
    f = view_features(model, images, config, ex.X_SEED)
    n = row["x_apriori_batch"]
    b = len(images) // n
    assert b >= 4
    zero = np.zeros((1, 128))
    samples = np.stack(
        [contrastive_covariance(f["r1"][i * n : (i + 1) * n], f["r2"][i * n : (i + 1) * n], zero)[0] for i in range(b)]
    )
    assert row["x_apriori_negative"] == psd_check(samples.mean(axis=0), samples=samples).n_negative

    path = out / "rows" / f"{row['run']}.json"
    old = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("x_apriori")}
    path.write_text(json.dumps(old))
    assert quick("augment-strength", tmp_path) == 0
    assert json.loads(path.read_text())["x_apriori_negative"] == row["x_apriori_negative"]


def test_rows_share_runs_between_experiments():
    ablation = dict(ex.rows_for("projector-ablation", 128))
    sweep = dict(ex.rows_for("d0-sweep", 128))
    strength = dict(ex.rows_for("augment-strength", 128))
    assert ablation["directclr-d0_22"] == sweep["directclr-d0_22"]
    assert ablation["mlp"] == strength["mlp"]
    assert ablation["none"] == sweep["none"]  # d0 = width is SimCLR without a projector
    assert len(ablation) == 8 and list(sweep) == [
        "directclr-d0_4",
        "directclr-d0_22",
        "directclr-d0_64",
        "none",
    ]


def test_gpu_commands(capsys):
    assert ex.main(["projector-ablation", "--dataset", "cifar10", "--scale", "gpu", "--print-commands"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 8 and all("--backbone resnet18" in c and "--dataset cifar10" in c for c in lines)
    assert ex.main(["d0-sweep", "--dataset", "imagefolder", "--scale", "gpu", "--print-commands"]) == 0
    out = capsys.readouterr().out
    assert "--backbone resnet50" in out and "--d0 360" in out


def test_bad_input_exit_2(tmp_path, capsys):
    assert ex.main(["no-such-experiment", "--out", str(tmp_path)]) == 2
    assert ex.main(["d0-sweep", "--scale", "tpu"]) == 2
    n = 2
    if not torch.cuda.is_available():
        assert ex.main(["d0-sweep", "--scale", "gpu", "--dataset", "cifar10", "--out", str(tmp_path)]) == 2
        n += 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == n and all(line.startswith("error:") for line in err)
    assert not os.path.exists(tmp_path / "rows")


FIGURES = (
    "emp_fig2_embedding_spectrum",
    "emp_fig7b_representation_spectra",
    "emp_fig9_directclr",
    "emp_fig12_d0_sweep",
)


@pytest.mark.parametrize("name", FIGURES)
def test_figures_draw_from_committed_results(name, tmp_path):
    """Each empirical figure renders from the committed results/ (or says they are missing)."""
    import importlib

    from figures import style

    mod = importlib.import_module(f"figures.{name}")
    try:
        data = mod.main(out_dir=tmp_path)
    except style.MissingResults:
        pytest.skip("results/ not committed yet")
    assert (tmp_path / f"{name}.png").exists() and (tmp_path / f"{name}.json").exists()
    assert data["recipe"]


def test_half_written_final_pt_is_not_a_trained_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert not ex.trained(str(run))
    torch.save({"w": torch.ones(3)}, run / "final.pt")
    assert ex.trained(str(run))
    data = (run / "final.pt").read_bytes()
    (run / "final.pt").write_bytes(data[: len(data) // 2])  # a crash mid-write (before atomic writes)
    assert not ex.trained(str(run))
    assert not (run / "final.pt").exists() and (run / "final.pt.broken").exists()  # resumed or retrained


def test_figures_take_a_results_folder(tmp_path, capsys):
    """An empirical figure draws the folder it is given (here the committed GPU table), or says it is missing."""
    import subprocess
    import sys

    from figures import emp_fig2_embedding_spectrum as fig2

    gpu = os.path.join(os.path.dirname(ex.__file__), "..", "results", "projector-ablation-mnist5k-gpu-60ep")
    if not os.path.isdir(gpu):
        pytest.skip("GPU results not committed")
    data = fig2.main(out_dir=tmp_path, results=gpu)
    assert data["mlp_z"]["dim"] == 128 and "resnet18" in data["recipe"]
    assert (tmp_path / "emp_fig2_embedding_spectrum.png").exists()
    cmd = [sys.executable, "-m", "figures.emp_fig2_embedding_spectrum", str(tmp_path / "nowhere")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(gpu) + "/..")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no table.json" in r.stderr
