"""Never lose work: Ctrl-C / SIGTERM mid-run write a checkpoint at the current step and exit 130, and --resume
reaches the uninterrupted run's weights bit for bit; one training per run folder (a lock, exit 2 for a second
one, a stale lock from a killed process taken over).

Fault injection lives here, as hooks the tests install (``train.main(argv, hooks=...)``, see
``empirical.hooks``); as a script, ``python tests/empirical/test_train_faults.py --kill-at N | --signal-at N:SIG
-- TRAIN_ARGS`` trains with them.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _emp_helpers import REPO, TINY_RUN, cli_env  # noqa: E402

from empirical import checkpoint  # noqa: E402
from empirical.hooks import Hook  # noqa: E402
from empirical.train import main  # noqa: E402

FAST = ["--backbone", "tiny", "--no-progress", "--threads", "1", "--no-tensorboard"]
ARGS = [*TINY_RUN, "--max-steps", "12", "--log-every", "2", "--spectrum-every", "6", "--lr", "2.0",
        "--warmup-epochs", "0.2", *FAST]  # fmt: skip


class SigkillAt(Hook):
    """A crash: SIGKILL right after step ``step`` (once the checkpoints written so far are on disk)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def after_step(self, run, state) -> None:
        if state.done == self.step:
            state.settle()
            os.kill(os.getpid(), signal.SIGKILL)


class SignalAt(Hook):
    """Ctrl-C (or SIGTERM) as a user sends it, arriving during step ``step``."""

    def __init__(self, step: int, sig: int = signal.SIGINT) -> None:
        self.step, self.sig = step, sig

    def after_step(self, run, state) -> None:
        if state.done == self.step:
            os.kill(os.getpid(), self.sig)


class NanAt(Hook):
    """Non-finite input from step ``step`` on (0-based, as the error message counts): the loss goes NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def after_step(self, run, state) -> None:
        if state.done == self.step:
            run.model.backbone.register_forward_pre_hook(lambda m, a: (a[0] * float("nan"), *a[1:]))


def popen_faulty(hook_args: list[str], train_args: list[str]) -> subprocess.Popen:
    """``empirical.train`` in a subprocess with the fault hooks of ``hook_args`` installed."""
    cmd = [sys.executable, os.path.abspath(__file__), *hook_args, "--", *train_args]
    return subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _final(out):
    return torch.load(out / "final.pt", weights_only=True)


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _rows(out, name="metrics.jsonl"):
    return [json.loads(line) for line in open(out / name)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run_checkpoints_and_resume_is_bit_identical(tmp_path, capsys, sig):
    full, cut = tmp_path / "full", tmp_path / "cut"
    p_cut = popen_faulty(["--signal-at", f"7:{int(sig)}"], [*ARGS, "--out", str(cut)])
    assert main([*ARGS, "--out", str(full)]) == 0  # meanwhile, the uninterrupted run
    err = p_cut.communicate(timeout=300)[1]
    assert p_cut.returncode == 130, err
    last = err.strip().splitlines()[-1]
    name = signal.Signals(sig).name
    assert last == (
        f"interrupted ({name}) after step 7 of 12; checkpoint written to {cut / 'ckpt-000000007.pt'}: "
        "the same command plus --resume continues from step 7"
    ), err
    assert checkpoint.list_checkpoints(str(cut))[0].endswith("ckpt-000000007.pt")
    assert not (cut / "final.pt").exists() and not (cut / "train.lock").exists()
    capsys.readouterr()
    assert main([*ARGS, "--out", str(cut), "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().err
    assert _same(_final(full), _final(cut))
    assert _numbers(full) == _numbers(cut)  # each step's row once, with the same numbers


def _numbers(out):
    timing = ("img_per_s", "views_per_s", "peak_mem_mb")
    return [{k: v for k, v in r.items() if k not in timing} for r in _rows(out)]


def test_nonfinite_loss_stops_with_step_and_keeps_checkpoint(tmp_path, capsys):
    out = tmp_path / "nan"
    args = [*TINY_RUN, "--checkpoint-every-steps", "4", "--spectrum-every", "0", "--out", str(out), *FAST]
    assert main(args, hooks=(NanAt(7),)) == 3
    err = capsys.readouterr().err
    assert "non-finite loss at step 7" in err and "ckpt-000000004.pt" in err
    ckpts = checkpoint.list_checkpoints(str(out))
    assert [p.rsplit("-", 1)[1] for p in ckpts] == ["000000004.pt"]  # nothing saved after the bad step
    ck = checkpoint.load(ckpts[0])
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert not (out / "final.pt").exists() and not (out / "train.lock").exists()


def test_second_training_into_a_locked_folder_exits_2_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    holder = popen_faulty(["--hold-at", "1"], [*ARGS, "--out", str(out)])
    lock = out / "train.lock"
    deadline = time.time() + 120
    while not (out / "held").exists():  # the first training has taken the lock and is mid-run
        assert holder.poll() is None and time.time() < deadline, holder.stderr.read()
        time.sleep(0.1)
    info = json.loads(lock.read_text())
    assert info["pid"] == holder.pid
    second = subprocess.run([sys.executable, "-m", "empirical.train", *ARGS, "--seed", "1", "--out", str(out)],
                            cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    holder.send_signal(signal.SIGINT)
    assert second.returncode == 2
    err = second.stderr.strip()
    assert err.count("\n") == 0 and err.startswith(f"error: --out {out} is in use by another training")
    assert f"PID {holder.pid} on" in err
    assert holder.wait(timeout=300) == 130 and not lock.exists()  # released on exit
    assert json.load(open(out / "config.json"))["seed"] == 0  # the second training touched nothing


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    p = popen_faulty(["--kill-at", "3"], [*ARGS, "--out", str(out)])
    assert p.wait(timeout=300) == -signal.SIGKILL
    assert json.loads((out / "train.lock").read_text())["pid"] == p.pid  # left behind by the crash
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"note: taking over the stale lock of PID {p.pid} on" in err and "no longer running" in err
    assert not (out / "train.lock").exists() and (out / "final.pt").exists()


def test_stop_signals_first_asks_a_repeat_is_the_same_a_second_stops_at_once(monkeypatch, capsys):
    from empirical import interrupt

    with interrupt.StopSignals() as signals:
        with pytest.raises(KeyboardInterrupt):  # before the first step: nothing to save, stop at once
            signal.raise_signal(signal.SIGTERM)
        signals.arm()
        signal.raise_signal(signal.SIGINT)
        assert signals.requested == "SIGINT"
        signal.raise_signal(signal.SIGINT)  # the same Ctrl-C passed on (torchrun): still a request
        monkeypatch.setattr(interrupt, "REPEAT_S", 0.0)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the previous handler is back
    assert capsys.readouterr().err.count("stopping after the current step") == 1


class HoldAt(Hook):
    """Mark ``held`` in the run folder after step ``step`` and wait there for a signal (at most 2 minutes)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def after_step(self, run, state) -> None:
        if state.done == self.step:
            open(os.path.join(run.config.out, "held"), "w").close()
            deadline = time.time() + 120
            while time.time() < deadline and not state.signals.requested:
                time.sleep(0.05)


def _script(argv: list[str]) -> int:
    from empirical import train

    p = argparse.ArgumentParser()
    p.add_argument("--kill-at", type=int)
    p.add_argument("--signal-at")
    p.add_argument("--hold-at", type=int)
    p.add_argument("--nan-at", type=int)
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    hooks = []
    if a.kill_at is not None:
        hooks.append(SigkillAt(a.kill_at))
    if a.signal_at is not None:
        step, sig = a.signal_at.split(":")
        hooks.append(SignalAt(int(step), int(sig)))
    if a.hold_at is not None:
        hooks.append(HoldAt(a.hold_at))
    if a.nan_at is not None:
        hooks.append(NanAt(a.nan_at))
    rest = a.train_args[1:] if a.train_args[:1] == ["--"] else a.train_args
    return train.main(rest, hooks=tuple(hooks))


if __name__ == "__main__":
    sys.exit(_script(sys.argv[1:]))
