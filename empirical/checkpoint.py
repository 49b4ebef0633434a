"""Atomic checkpoints and exact resume (issue 4 "Checkpoints"; paper.md 3.1: official code saves each epoch).

A checkpoint holds the model, optimizer, grad scaler, the step (which fixes epoch, schedule position and data
order, see ``data``), every RNG state (python, numpy, torch CPU, CUDA) and the config. It is written to a
temporary file, flushed and fsync'ed, then ``os.replace``d into place, so a reader never sees a half file
under a final name. The last ``KEEP`` are kept; ``latest`` walks them newest first and skips any that
fails to load (truncated by a crash or a full disk), renaming it to ``*.broken``.

Checkpoints are pickles (``weights_only=False``, they contain RNG states): load only your own.
"""

from __future__ import annotations

import glob
import os
import random
import re
import sys

import numpy as np
import torch

KEEP = 2
_NAME = re.compile(r"ckpt-(\d{9})\.pt$")


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def path_for(out_dir: str, step: int) -> str:
    return os.path.join(out_dir, f"ckpt-{step:09d}.pt")


def list_checkpoints(out_dir: str) -> list[str]:
    """Checkpoint paths in ``out_dir``, newest (highest step) first."""
    found = [p for p in glob.glob(os.path.join(out_dir, "ckpt-*.pt")) if _NAME.search(p)]
    return sorted(found, key=lambda p: int(_NAME.search(p).group(1)), reverse=True)


def save(out_dir: str, step: int, payload: dict) -> str:
    """Write ``payload`` atomically as the checkpoint of ``step``; prune to the last ``KEEP``."""
    final = path_for(out_dir, step)
    tmp = final + f".tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save({**payload, "step": step, "complete": True}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    for old in list_checkpoints(out_dir)[KEEP:]:
        os.remove(old)
    return final


def load(path: str, map_location="cpu") -> dict:
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or not ckpt.get("complete"):
        raise ValueError(f"{path} is not a complete checkpoint")
    return ckpt


def latest(out_dir: str, map_location="cpu") -> tuple[str, dict] | None:
    """The newest checkpoint in ``out_dir`` that loads; broken ones are reported on stderr and skipped."""
    for path in list_checkpoints(out_dir):
        try:
            return path, load(path, map_location)
        except Exception as e:  # a truncated zip raises RuntimeError, a garbled pickle several other types
            print(
                f"warning: skipping unreadable checkpoint {path} ({type(e).__name__}: {e})", file=sys.stderr
            )
            # Out of the list, so that the next saves (at lower steps) are not pruned in its favour.
            os.replace(path, path + ".broken")
    return None
