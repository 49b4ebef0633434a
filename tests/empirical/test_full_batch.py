"""--full-batch: every step is the whole training set with one fixed pair of views per image, and the monitor's
X is the step's own, so one plain-SGD step moves the linear projector by exactly lr W X (Lemma 2)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dimcollapse.io import UserError  # noqa: E402
from empirical.config import RunConfig  # noqa: E402
from empirical.hooks import monitor_features  # noqa: E402
from empirical.train import build_run, main  # noqa: E402
from empirical.xmonitor import monitor  # noqa: E402

N_DIGITS = 1437  # scikit-learn's digits after the held-out split
FULL = ["--dataset", "digits", "--image-size", "16", "--backbone", "tiny", "--full-batch", "--batch-size",
        str(N_DIGITS), "--warmup-epochs", "0", "--projector", "linear", "--loss", "paper", "--optimizer", "sgd",
        "--momentum", "0", "--weight-decay", "0", "--spectrum-every", "0", "--threads", "1", "--no-progress",
        "--no-tensorboard", "--device", "cpu"]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--monitor-images", "heldout"], "--monitor-images heldout: with --full-batch"),
        (["--monitor-pairs", "64"], "--monitor-pairs 64: with --full-batch"),
        (["--dataset", "imagefolder"], "--full-batch needs an in-memory --dataset"),
    ],
)
def test_flags_that_contradict_full_batch_are_refused(extra, message):
    with pytest.raises(UserError, match=message):
        RunConfig.from_argv([*FULL, *extra, "--out", "unused"])


def test_the_batch_size_must_be_the_training_set(tmp_path, capsys):
    args = [a if a != str(N_DIGITS) else "256" for a in FULL]
    assert main([*args, "--epochs", "1", "--out", str(tmp_path / "r")]) == 2
    assert f"--full-batch needs --batch-size {N_DIGITS} (the training images), got 256" in capsys.readouterr().err


def test_monitor_pairs_default_to_the_training_pairs():
    config = RunConfig.from_argv([*FULL, "--monitor-every", "1", "--out", "unused"])
    assert (config.monitor_images, config.monitor_pairs) == ("train", N_DIGITS)


def test_one_step_moves_the_projector_by_lr_w_x(tmp_path):
    """Plain SGD on Eqn 2: W' - W = lr W X exactly (float32 round-off), with X from the monitor on the run's
    fixed views; and the next step sees the same views (the same loss at lr 0 on the backbone)."""
    lr = 0.05
    run = build_run(RunConfig.from_argv([*FULL, "--epochs", "2", "--lr", str(lr), "--out", str(tmp_path / "r")]))
    batches = run.batches()
    r1, r2 = monitor_features(run.model, *run.fixed_views, N_DIGITS)
    (w0,) = [w.detach().double().numpy().copy() for w in run.model.projector_weights()]
    x = monitor(r1, r2, [w0], loss="paper", batch_size=N_DIGITS).x
    run.take_step(next(batches))
    (w1,) = [w.detach().double().numpy() for w in run.model.projector_weights()]
    expected = lr * w0 @ x
    err = np.linalg.norm(w1 - w0 - expected) / np.linalg.norm(expected)
    assert err < 1e-4
    # a random X of the same size is far off, so the bound above is a real test
    assert np.linalg.norm(w1 - w0 - lr * w0 @ np.diag(np.diag(x))) > 0.1 * np.linalg.norm(expected)


def test_fixed_views_are_the_same_at_every_step_and_after_a_resume(tmp_path):
    """lr 0: the weights never move, so every step's loss is the same only if the views and order are fixed;
    a resumed run rebuilds the same views from the seed (same final weights as one straight run)."""
    flat = [*FULL, "--epochs", "3", "--log-every", "1"]
    assert main([*flat, "--lr", "0", "--out", str(tmp_path / "still")]) == 0
    losses = [json.loads(line)["loss"] for line in open(tmp_path / "still" / "metrics.jsonl")]
    assert len(losses) == 3 and max(losses) - min(losses) < 1e-6 * abs(losses[0])

    assert main([*flat, "--lr", "0.05", "--out", str(tmp_path / "straight")]) == 0
    assert main([*flat, "--lr", "0.05", "--stop-at", "1", "--out", str(tmp_path / "resumed")]) == 0
    assert main([*flat, "--lr", "0.05", "--resume", "--out", str(tmp_path / "resumed")]) == 0
    a = torch.load(tmp_path / "straight" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "final.pt", weights_only=True)
    ma, mb = a.get("model", a), b.get("model", b)
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
