"""The training as a library: a frozen RunConfig from argv, build_run, train_loop with hooks, the same weights as
the command line; the throughput bench runs the same step through build_run; the help states its defaults."""

import dataclasses
import os
import sys

import pytest

torch = pytest.importorskip("torch")

from _emp_helpers import REPO, TINY_RUN  # noqa: E402

from dimcollapse.io import UserError  # noqa: E402
from empirical.config import RunConfig, build_parser  # noqa: E402
from empirical.hooks import Hook  # noqa: E402
from empirical.train import build_run, main, train, train_loop  # noqa: E402

ARGS = [*TINY_RUN, "--max-steps", "4", "--spectrum-every", "0", "--backbone", "tiny", "--threads", "1",
        "--no-progress", "--no-tensorboard", "--device", "cpu"]  # fmt: skip


def test_run_config_is_frozen_and_mirrors_the_parser():
    config = RunConfig.from_argv([*ARGS, "--out", "somewhere"])
    dests = [a.dest for a in build_parser()._actions if a.dest != "help"]
    assert [f.name for f in dataclasses.fields(RunConfig)] == dests  # config.json keeps the parser's order
    assert config.max_steps == 4 and config.device == "cpu" and config.warmup_epochs == 10.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0
    assert config.record(n_train=3)["n_train"] == 3 and config.record()["seed"] == 0
    old = {**config.record(), "lr": 9.0, "loss": "infonce"}  # an earlier spelling is the same loss
    assert config.trajectory_changes(old, {}) == [f"lr 9.0 -> {config.lr}"]
    with pytest.raises(UserError, match="--device 'foo'"):
        RunConfig.from_argv(["--device", "foo"])


class Steps(Hook):
    """Counts the points of the loop it is called at."""

    def __init__(self):
        self.calls = []

    def start(self, run, state):
        self.calls.append(("start", state.done))

    def after_step(self, run, state):
        self.calls.append(("step", state.done))

    def end(self, run, state):
        self.calls.append(("end", state.done))


def test_build_run_and_loop_reach_the_command_lines_weights(tmp_path):
    """No files, no hooks but a counter: the weights of the command line's run, bit for bit."""
    assert main([*ARGS, "--out", str(tmp_path / "cli")]) == 0
    run = build_run(RunConfig.from_argv([*ARGS, "--out", str(tmp_path / "lib")]))
    assert (run.start, run.schedule.total, run.schedule.stop, run.finished) == (0, 4, 4, None)
    counter = Steps()
    state = train_loop(run, [counter])
    assert counter.calls == [("start", 0), ("step", 1), ("step", 2), ("step", 3), ("step", 4), ("end", 4)]
    assert state.done == 4 and not (tmp_path / "lib").exists()
    cli = torch.load(tmp_path / "cli" / "final.pt", weights_only=True)
    lib = run.model.state_dict()
    assert cli.keys() == lib.keys() and all(torch.equal(cli[k], lib[k]) for k in cli)
    # the command line's whole training from a RunConfig (lock, hooks, summary): the same weights and files
    assert train(RunConfig.from_argv([*ARGS, "--out", str(tmp_path / "cfg")])) == 0
    cfg = torch.load(tmp_path / "cfg" / "final.pt", weights_only=True)
    assert all(torch.equal(cli[k], cfg[k]) for k in cli)
    assert {p.name for p in (tmp_path / "cli").iterdir()} == {p.name for p in (tmp_path / "cfg").iterdir()}


def test_throughput_bench_runs_the_training_step(tmp_path, capsys):
    sys.path.insert(0, os.path.join(REPO, "bench"))
    try:
        import train_throughput
    finally:
        sys.path.remove(os.path.join(REPO, "bench"))
    out = tmp_path / "bench.json"
    argv = ["--device", "cpu", "--threads", "1", "--batch-size", "8", "--image-size", "16", "--steps", "1",
            "--warmup", "0", "--opt-steps", "1", "--peak-tflops", "1", "--json", str(out)]  # fmt: skip
    assert train_throughput.main(argv) == 0
    import json

    result = json.loads(out.read_text())
    assert result["full_img_per_s"] > 0 and result["model_img_per_s"] > 0 and result["optimizer_params"] > 0
    assert "full " in capsys.readouterr().out


def test_help_states_defaults_and_the_examples_read_as_commands():
    parser = build_parser()
    helps = {a.option_strings[0]: a.help for a in parser._actions if a.option_strings}
    wanted = {"--temperature": "default 0.1", "--optimizer": "default lars", "--seed": "default 0",
              "--log-every": "default 10", "--spectrum-every": "default 100"}  # fmt: skip
    for flag, default in wanted.items():
        assert default in (helps[flag] or ""), flag
    lines = parser.format_help().splitlines()
    train = [ln for ln in lines if "python -m empirical.train --dataset mnist5k --loss paper" in ln]
    bridge = [ln for ln in lines if ln.strip() == "python -m empirical.bridge runs/b --out results/b"]
    assert len(train) == 1 and len(bridge) == 1  # two commands, each starting its own line
