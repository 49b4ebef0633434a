"""The empirical tests need torch (each module skips without it); one CPU thread for speed and determinism."""

try:
    import torch
except ImportError:  # the modules skip themselves through pytest.importorskip
    torch = None
else:
    torch.set_num_threads(1)
