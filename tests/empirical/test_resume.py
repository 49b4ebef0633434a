"""Kill-and-resume: a CPU run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run, with
the same log rows (none twice), also when the newest checkpoint is truncated; runs in chunks (--stop-at); a
finished run is left alone; every file is written atomically; rank 0 alone picks the checkpoint."""

import json
import os
import shutil
import signal

import pytest

torch = pytest.importorskip("torch")

from _emp_helpers import TINY_RUN, popen_cli  # noqa: E402
from test_train_faults import popen_faulty  # noqa: E402

from empirical import checkpoint  # noqa: E402
from empirical.train import main  # noqa: E402

ARGS = [
    *TINY_RUN,
    *["--checkpoint-every-steps", "5", "--spectrum-every", "10", "--projector", "mlp", "--log-every", "3"],
    *["--optimizer", "lars", "--lr", "2.0", "--warmup-epochs", "0.2", "--backbone", "tiny"],
]


def _log(run, name="metrics.jsonl", keys=("step", "loss", "probe_acc", "erank_z", "collapsed_r")):
    rows = [json.loads(line) for line in open(run / name)]
    return [tuple(r.get(k) for k in keys) for r in rows]


def _same_weights(a, b):
    sa, sb = torch.load(a), torch.load(b)
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    pytest.importorskip("sklearn")
    full, killed = tmp_path / "full", tmp_path / "killed"
    # In parallel: the uninterrupted run, and one that SIGKILLs itself after step 12 (checkpoints at 5, 10).
    p_full = popen_cli([*ARGS, "--out", str(full)])
    p_kill = popen_faulty(["--kill-at", "13"], [*ARGS, "--out", str(killed)])
    assert p_kill.wait(timeout=600) == -signal.SIGKILL
    assert p_full.wait(timeout=600) == 0, p_full.stderr.read()
    assert not (killed / "final.pt").exists()
    steps = [int(p[-12:-3]) for p in checkpoint.list_checkpoints(str(killed))]
    assert steps == [10, 5]
    assert [r[0] for r in _log(killed)] == [3, 6, 9, 10, 12]  # row 12 lies after the checkpoint: replayed

    truncated = tmp_path / "truncated"
    shutil.copytree(killed, truncated)
    newest = checkpoint.list_checkpoints(str(truncated))[0]
    with open(newest, "r+b") as f:  # a crash or a full disk mid-write
        f.truncate(os.path.getsize(newest) // 2)

    p1 = popen_cli([*ARGS, "--out", str(killed), "--resume"])
    p2 = popen_cli([*ARGS, "--out", str(truncated), "--resume"])
    err1, err2 = p1.communicate(timeout=600)[1], p2.communicate(timeout=600)[1]
    assert p1.returncode == 0, err1
    assert "resumed from" in err1 and "ckpt-000000010.pt" in err1
    assert _same_weights(full / "final.pt", killed / "final.pt")
    # each step's row once, with the uninterrupted run's numbers (losses and spectra included)
    assert _log(killed) == _log(full) and [r[0] for r in _log(full)] == [3, 6, 9, 10, 12, 15, 18, 20]
    assert _log(killed, "spectra.jsonl", ("step", "log10_z")) == _log(full, "spectra.jsonl", ("step", "log10_z"))
    assert p2.returncode == 0, err2
    assert "skipping unreadable checkpoint" in err2 and "ckpt-000000005.pt" in err2
    assert _same_weights(full / "final.pt", truncated / "final.pt")


def test_resume_refuses_changed_settings(tmp_path, capsys):
    pytest.importorskip("sklearn")
    args = [*ARGS, "--max-steps", "3", "--out", str(tmp_path), "--no-progress", "--threads", "1"]
    assert main([*args, "--stop-at", "2"]) == 0
    config = (tmp_path / "config.json").read_bytes()
    assert main([*args, "--resume", "--lr", "1.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: --resume with different settings") and "lr 2.0 -> 1.0" in err
    # the resolved schedule is compared, not the raw flags: --max-steps 4 changes it, --epochs 3 does not
    assert main([*args, "--resume", "--max-steps", "4"]) == 2
    assert "total-steps 3 -> 4" in capsys.readouterr().err
    assert main([*args, "--resume", "--epochs", "3", "--data-dir", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "config.json").read_bytes() == config  # the checked record is not rewritten


def test_stop_at_chunks_equal_one_run_and_finished_run_is_left_alone(tmp_path, capsys):
    pytest.importorskip("sklearn")
    base = [*ARGS, "--max-steps", "8", "--no-progress", "--threads", "1", "--no-tensorboard"]
    one, chunks = tmp_path / "one", tmp_path / "chunks"
    assert main([*base, "--out", str(one)]) == 0
    assert main([*base, "--out", str(chunks), "--stop-at", "3"]) == 0
    assert not (chunks / "final.pt").exists() and "stopped at --stop-at 3" in capsys.readouterr().out
    assert main([*base, "--out", str(chunks), "--resume", "--stop-at", "6"]) == 0
    assert main([*base, "--out", str(chunks), "--resume"]) == 0
    assert _same_weights(one / "final.pt", chunks / "final.pt")
    assert _log(one) == _log(chunks)
    capsys.readouterr()
    stamps = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in chunks.iterdir()}
    assert main([*base, "--out", str(chunks), "--resume"]) == 0
    assert "already finished (step 8 of 8): nothing to do" in capsys.readouterr().out
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in chunks.iterdir()} == stamps
    assert main([*base, "--out", str(chunks)]) == 2  # without --resume: refuses to start over it
    assert "already holds a run" in capsys.readouterr().err
    for p in chunks.glob("ckpt-*.pt"):  # checkpoints removed by hand: final.pt is still not overwritten
        p.unlink()
    final = (chunks / "final.pt").stat().st_mtime_ns
    assert main([*base, "--out", str(chunks), "--resume"]) == 0
    assert "finished run" in capsys.readouterr().out and (chunks / "final.pt").stat().st_mtime_ns == final


def test_truncate_log_keeps_rows_up_to_the_step_and_drops_a_torn_line(tmp_path):
    from empirical.checkpoint import truncate_log

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 2}\n{"step": 4}\n{"step": 6}\n{"step": 8, "lo')
    assert truncate_log(str(path), 4) == 2
    assert path.read_text() == '{"step": 2}\n{"step": 4}\n'
    assert truncate_log(str(path), 4) == 0 and not list(tmp_path.glob("*.tmp*"))


def test_truncate_log_gives_a_last_row_its_newline_back(tmp_path):
    """A crash between a row and its newline: the row is kept, and the next one appended starts a new line."""
    from empirical.checkpoint import truncate_log

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 2}\n{"step": 4}')
    assert truncate_log(str(path), 4) == 0
    assert path.read_text() == '{"step": 2}\n{"step": 4}\n' and not list(tmp_path.glob("*.tmp*"))


def test_atomic_save_fsyncs_before_the_rename(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), replace(a, b))[1])
    checkpoint.atomic_save({"w": torch.ones(2)}, str(tmp_path / "final.pt"))
    assert events == ["fsync", "replace"] and os.listdir(tmp_path) == ["final.pt"]


def test_atomic_save_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "final.pt"
    checkpoint.atomic_save({"w": torch.ones(2)}, str(target))

    def dies_midway(obj, f):
        f.write(b"PK\x03\x04 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", dies_midway)
    with pytest.raises(OSError):
        checkpoint.atomic_save({"w": torch.zeros(2)}, str(target))
    monkeypatch.undo()
    assert torch.equal(torch.load(target)["w"], torch.ones(2)) and os.listdir(tmp_path) == ["final.pt"]


def test_async_saver_writes_a_snapshot_and_reports_errors(tmp_path):
    saver = checkpoint.AsyncSaver()
    w = torch.zeros(3)
    saver.save(str(tmp_path), 1, {"model": {"w": w}})
    w += 5  # the training goes on changing the weights while the file is written
    saver.wait()
    assert torch.equal(checkpoint.load(checkpoint.path_for(str(tmp_path), 1))["model"]["w"], torch.zeros(3))
    saver.save(str(tmp_path / "missing-folder"), 2, {"model": {}})
    with pytest.raises(OSError):
        saver.wait()


def _choose_worker(rank, world, init_file, run_dir, out_file):
    import torch.distributed as dist

    from empirical.train import choose_checkpoint

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    found = choose_checkpoint(run_dir, rank, world)
    torch.save((found[0], found[1]["step"]), f"{out_file}.{rank}")
    dist.destroy_process_group()


def test_rank_zero_chooses_the_checkpoint_and_broadcasts_it(tmp_path):
    """Two gloo ranks, newest checkpoint broken: only rank 0 inspects (and renames) it; both resume from 4."""
    import torch.multiprocessing as mp

    run = tmp_path / "run"
    run.mkdir()
    for step in (4, 8):
        checkpoint.save(str(run), step, {"model": {}})
    (run / "ckpt-000000008.pt").write_bytes(b"PK\x03\x04 truncated")
    out = tmp_path / "chosen"
    mp.spawn(_choose_worker, args=(2, str(tmp_path / "init"), str(run), str(out)), nprocs=2, join=True)
    got = [torch.load(f"{out}.{r}") for r in (0, 1)]
    assert got[0] == got[1] and got[0][1] == 4 and got[0][0].endswith("ckpt-000000004.pt")
    assert (run / "ckpt-000000008.pt.broken").exists()


def test_checkpoint_save_is_atomic_and_keeps_two(tmp_path):
    for step in (1, 2, 3):
        checkpoint.save(str(tmp_path), step, {"model": {"w": torch.full((3,), float(step))}})
    names = sorted(os.listdir(tmp_path))
    assert names == ["ckpt-000000002.pt", "ckpt-000000003.pt"]  # no temporary files left
    path, ck = checkpoint.latest(str(tmp_path))
    assert ck["step"] == 3 and torch.equal(ck["model"]["w"], torch.full((3,), 3.0))
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04 garbage")
    path, ck = checkpoint.latest(str(tmp_path))
    assert ck["step"] == 2 and os.path.exists(str(tmp_path / "ckpt-000000003.pt.broken"))
    checkpoint.save(str(tmp_path), 3, {"model": {}})  # the re-done step is kept, not pruned
    assert [os.path.basename(p) for p in checkpoint.list_checkpoints(str(tmp_path))] == [
        "ckpt-000000003.pt",
        "ckpt-000000002.pt",
    ]


def test_rng_state_roundtrip():
    import random

    import numpy as np

    state = checkpoint.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1))
    checkpoint.set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(1))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
