"""empirical.experiments' command line: bad training flags, devices and datasets refused before the first row
trains (one line, exit 2, nothing written); the printed and recorded commands name every flag once and no
machine path; --help gives the defaults and the experiments."""

import os
import sys

import pytest

pytest.importorskip("torch")

from empirical import experiments as ex  # noqa: E402


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(ex, "_train", lambda *a, **k: pytest.fail("trained before checking the input"))
    monkeypatch.setattr(ex, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking the input"))


@pytest.mark.parametrize("extra, message", [
    (["--train-args", "--lr 'oops"], "No closing quotation"),
    (["--train-args", "--epochs nan"], "argument --epochs: invalid int value: 'nan'"),
    (["--train-args", "--lr nan"], "--lr nan"),
    (["--train-args", "--no-such-flag 3"], "unrecognized arguments: --no-such-flag 3"),
    (["--train-args", "--out elsewhere"], "--train-args --out: set it with the experiment's own --runs-dir"),
    (["--device", "foo"], "--device 'foo' is not a device"),
    (["--dataset", "cifar10", "--data-dir", "NOWHERE"], "cifar10 not found under --data-dir"),
    (["--dataset", "imagefolder", "--data-dir", "NOWHERE"], "put images under"),
])
def test_bad_input_refused_before_the_first_row(extra, message, tmp_path, capsys, no_training):
    extra = [str(tmp_path / "nowhere") if a == "NOWHERE" else a for a in extra]
    argv = ["projector-ablation", "--dataset", "digits", "--out", str(tmp_path / "out"), "--runs-dir",
            str(tmp_path / "runs"), "--in-process", "--no-progress", *extra]
    assert ex.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_dedupe_flags_later_value_wins():
    flags = ["--batch-size", "256", "--epochs", "10", "--channels-last", "--threads", "2", "--lr=0.1",
             "--batch-size", "32", "--threads", "1", "--no-channels-last", "--lr", "0.2"]
    assert ex.dedupe_flags(flags) == ["--epochs", "10", "--batch-size", "32", "--threads", "1",
                                      "--no-channels-last", "--lr", "0.2"]


def test_printed_commands_once_each_flag_and_no_machine_paths(capsys):
    runs = os.path.join(ex.REPO, "runs", "experiments", "printed")  # absolute, inside the repository
    assert ex.main(["projector-ablation", "--quick", "--print-commands", "--runs-dir", runs,
                    "--train-args", "--threads 2 --batch-size 64 --epochs 3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        words = line.split()
        assert line.startswith("python -m empirical.train ") and sys.executable not in line
        assert ex.REPO not in line and "--out runs/experiments/printed/" in line
        flags = [w for w in words if w.startswith("--")]
        assert len(flags) == len(set(flags)), line
        assert "--batch-size 32" in line and "--threads 1" in line and "--epochs 3" in line  # later wins
    assert not os.path.exists(runs)


def test_portable_tokens():
    assert ex.portable(sys.executable) == "python"
    assert ex.portable(os.path.join(ex.REPO, "runs", "a")) == os.path.join("runs", "a")
    assert ex.portable("/elsewhere/b") == "/elsewhere/b" and ex.portable("--lr") == "--lr"


def test_help_gives_defaults_and_describes_each_experiment(capsys):
    assert ex.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "default: mnist5k" in text and "default: cpu" in text
    for name in ex.EXPERIMENTS:
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(name + " "))
        assert len(line.split(name, 1)[1].strip()) > 20 and len(line) <= 100
