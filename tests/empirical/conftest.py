"""The empirical tests need torch (each module skips without it); one CPU thread for speed and determinism.
``tiny_run``: the trained run folder that the evaluation tests read (one per test module)."""

import pytest

try:
    import torch
except ImportError:  # the modules skip themselves through pytest.importorskip
    torch = None
else:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A DirectCLR tiny ResNet trained for 3 steps on digits (in-process, seconds)."""
    from empirical import train

    out = str(tmp_path_factory.mktemp("run"))
    argv = ["--dataset", "digits", "--projector", "directclr", "--d0", "16", "--max-steps", "3"]
    argv += ["--batch-size", "32", "--threads", "1", "--out", out]
    assert train.main([*argv, "--no-progress", "--no-tensorboard"]) == 0
    return out
