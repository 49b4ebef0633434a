"""Kill-and-resume (issue 4 "Checkpoints"): a CPU run killed with SIGKILL and resumed ends bit-identical to an
uninterrupted run, also when the newest checkpoint is truncated; checkpoint files are written atomically."""

import os
import shutil
import signal

import pytest

torch = pytest.importorskip("torch")

from _emp_helpers import TINY_RUN, popen_cli  # noqa: E402

from empirical import checkpoint  # noqa: E402
from empirical.train import main  # noqa: E402

ARGS = [
    *TINY_RUN,
    *["--ckpt-every", "5", "--spectrum-every", "10", "--spectrum-samples", "128", "--projector", "mlp"],
    *["--optimizer", "lars", "--lr", "2.0", "--warmup-epochs", "0.2", "--backbone", "tiny"],
]


def _same_weights(a, b):
    sa, sb = torch.load(a), torch.load(b)
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    pytest.importorskip("sklearn")
    full, killed = tmp_path / "full", tmp_path / "killed"
    # In parallel: the uninterrupted run, and one that SIGKILLs itself after step 12 (checkpoints at 5, 10).
    p_full = popen_cli([*ARGS, "--out", str(full)])
    p_kill = popen_cli([*ARGS, "--out", str(killed)], DIMCOLLAPSE_SIGKILL_AT_STEP="12")
    assert p_kill.wait(timeout=600) == -signal.SIGKILL
    assert p_full.wait(timeout=600) == 0, p_full.stderr.read()
    assert not (killed / "final.pt").exists()
    steps = [int(p[-12:-3]) for p in checkpoint.list_checkpoints(str(killed))]
    assert steps == [10, 5]

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
    assert p2.returncode == 0, err2
    assert "skipping unreadable checkpoint" in err2 and "ckpt-000000005.pt" in err2
    assert _same_weights(full / "final.pt", truncated / "final.pt")


def test_resume_refuses_changed_settings(tmp_path, capsys):
    pytest.importorskip("sklearn")
    args = [*ARGS, "--max-steps", "3", "--out", str(tmp_path), "--no-progress", "--threads", "1"]
    assert main(args) == 0
    assert main([*args, "--resume", "--lr", "1.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: --resume with different settings") and "--lr 2.0 -> 1.0" in err


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
