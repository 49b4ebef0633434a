"""The collapse monitor inside the trainer: strict-JSON rows that xmonitor.monitor reproduces from the saved
weights and pairs, exact resume, guarded failures, and the monitor leaving no trace on the run."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _emp_helpers import TINY_RUN  # noqa: E402

from empirical import xmonitor  # noqa: E402
from empirical.augment import recipe  # noqa: E402
from empirical.data import load_memory_dataset  # noqa: E402
from empirical.evaluate import load_trained  # noqa: E402
from empirical.hooks import monitor_features, monitor_pairs  # noqa: E402
from empirical.train import main  # noqa: E402

FAST = ["--backbone", "tiny", "--no-progress", "--threads", "1", "--no-tensorboard"]
MONITORED = [
    *TINY_RUN,
    *FAST,
    "--loss", "paper", "--projector", "linear", "--projector-layers", "2", "--optimizer", "lars",
    "--momentum", "0.5", "--monitor-every", "5", "--monitor-pairs", "128", "--spectrum-every", "0",
    "--checkpoint-every-steps", "10",
]  # fmt: skip


def _strict_rows(path):
    fail = lambda c: pytest.fail(f"non-strict JSON {c}")  # noqa: E731
    return [json.loads(line, parse_constant=fail) for line in open(path)]


@pytest.fixture(scope="module")
def monitored_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mon") / "run"
    assert main([*MONITORED, "--out", str(out)]) == 0
    return out


def test_rows_config_and_a_row_recomputed_from_the_saved_weights_and_pairs(monitored_run):
    out = monitored_run
    rows = _strict_rows(out / "monitor.jsonl")
    assert [r["step"] for r in rows] == [0, 5, 10, 15, 20]
    assert all(r["loss"] == "paper" and not r["symmetric"] for r in rows)
    assert all(r["pairs"] == 128 and r["batch_size"] == 32 for r in rows)
    assert all(len(r["layers"]) == 2 and (out / r["arrays"]).exists() for r in rows)
    assert "trust_ratio" not in rows[0] and all(len(r["trust_ratio"]) == 2 for r in rows[1:])
    cfg = json.load(open(out / "config.json"))
    assert (cfg["momentum"], cfg["eta"], cfg["projector_layers"]) == (0.5, 0.001, 2)
    assert (cfg["monitor_every"], cfg["monitor_pairs"]) == (5, 128)

    # the last row (step 20 = final.pt), recomputed by calling xmonitor.monitor directly
    model, _ = load_trained(str(out))
    _, test, _ = load_memory_dataset("digits", "data", 16)
    pairs = monitor_pairs(test.images, recipe("paper", 1.0, 16), 16, 128)
    r1, r2 = monitor_features(model, *pairs, 32)
    weights = [w.detach() for w in model.projector_weights()]
    res = xmonitor.monitor(r1, r2, weights, loss="paper", temperature=0.1, batch_size=32, symmetric=False)
    row = rows[-1]
    np.testing.assert_allclose(res.x_eigenvalues, row["x"]["eigenvalues"], rtol=1e-9, atol=1e-12)
    assert res.x_n_negative == row["x"]["n_negative"]
    for mine, logged in zip(res.to_json()["layers"], row["layers"], strict=True):
        np.testing.assert_allclose(mine["sigma"], logged["sigma"], rtol=1e-9)
        np.testing.assert_allclose(mine["rate"], logged["rate"], rtol=1e-7, atol=1e-12)
    with np.load(out / row["arrays"]) as f:
        np.testing.assert_allclose(f["w1"], weights[1].numpy(), rtol=1e-6)


def test_resume_drops_rows_after_the_checkpoint_and_rewrites_them_identically(monitored_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(monitored_run, out)
    before = _strict_rows(out / "monitor.jsonl")
    os.remove(out / "final.pt")
    (last,) = out.glob("ckpt-*20.pt")
    last.unlink()  # as if the run died after step 15: the newest checkpoint is step 10's
    assert main([*MONITORED, "--out", str(out), "--resume"]) == 0
    after = _strict_rows(out / "monitor.jsonl")
    assert [r["step"] for r in after] == [0, 5, 10, 15, 20]  # rows 15 and 20 dropped, then written again
    for a, b in zip(before, after, strict=True):
        np.testing.assert_allclose(a["layers"][1]["sigma"], b["layers"][1]["sigma"], rtol=1e-6)


def test_resume_refuses_changed_monitor_or_momentum(monitored_run, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(monitored_run, out)
    os.remove(out / "final.pt")
    args = [a if a != "0.5" else "0.9" for a in MONITORED]
    assert main([*args, "--out", str(out), "--resume"]) == 2
    assert "momentum 0.5 -> 0.9" in capsys.readouterr().err


def test_monitor_failure_is_logged_and_the_run_finishes(tmp_path, capsys, monkeypatch):
    import empirical.hooks as hooks

    def broken(*a, **k):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(hooks, "monitor", broken)
    out = tmp_path / "run"
    args = [*TINY_RUN, *FAST, "--max-steps", "4", "--loss", "dot", "--projector", "linear",
            "--monitor-every", "2", "--monitor-pairs", "64", "--spectrum-every", "0", "--out", str(out)]  # fmt: skip
    assert main(args) == 0 and (out / "final.pt").exists()
    errors = [r["step"] for r in _strict_rows(out / "metrics.jsonl") if "monitor_error" in r]
    assert errors == [0, 2, 4]
    assert "warning: monitor at step 4 failed (LinAlgError: SVD did not converge)" in capsys.readouterr().err


def test_monitor_features_leave_the_model_untouched_and_match_a_training_forward():
    """Train-mode BatchNorm on chunks of the batch: the features of one chunk are the training forward's, and
    the running statistics and the train/eval mode are restored."""
    from empirical.models import SSLModel

    torch.manual_seed(0)
    model = SSLModel("tiny", "linear", None, True, num_classes=3).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    v1, v2 = torch.randn(16, 3, 16, 16), torch.randn(16, 3, 16, 16)
    r1, r2 = monitor_features(model, v1, v2, 8)
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    model.train()
    with torch.no_grad():
        torch.testing.assert_close(r2[8:], model.backbone(v2[8:]), rtol=1e-6, atol=1e-6)


def test_the_monitor_leaves_no_trace_on_the_run(monitored_run, tmp_path):
    """Same flags without --monitor-every: the same weights and BatchNorm statistics, bit for bit."""
    args = list(MONITORED)
    i = args.index("--monitor-every")
    del args[i : i + 2]
    out = tmp_path / "plain"
    assert main([*args, "--out", str(out)]) == 0
    plain = torch.load(out / "final.pt", weights_only=True)
    monitored = torch.load(monitored_run / "final.pt", weights_only=True)
    assert all(torch.equal(plain[k], monitored[k]) for k in plain)
    assert not (out / "monitor.jsonl").exists()
