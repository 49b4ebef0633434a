"""Atomic checkpoints and exact resume.

A checkpoint holds the model, optimizer, grad scaler, the step (which fixes epoch, schedule position and data
order, see ``data``), every RNG state (python, numpy, torch CPU, CUDA) and the config. It is written through
``dimcollapse.io.atomic_path`` and fsync'ed before the rename, so a reader never sees a half file under a final name,
even after a power loss (``atomic_save``, also used for final.pt). ``AsyncSaver`` copies the state to CPU on the
training thread and writes it in a background thread, so a save costs the copy, not the disk. The last ``KEEP``
are kept; ``latest`` walks them newest first and skips any that
fails to load (truncated by a crash or a full disk), renaming it to ``*.broken``.

Checkpoints are pickles (``weights_only=False``, they contain RNG states): load only your own.
"""

from __future__ import annotations

import glob
import json
import os
import random
import re
import sys
import threading

import numpy as np
import torch

from dimcollapse.io import atomic_path

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


def atomic_save(obj: object, path: str) -> None:
    """``torch.save`` through ``atomic_path``: ``path`` is either the old file or the new one."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename: a power loss leaves no renamed, empty checkpoint


def save(out_dir: str, step: int, payload: dict) -> str:
    """Write ``payload`` atomically as the checkpoint of ``step``; prune to the last ``KEEP``."""
    final = path_for(out_dir, step)
    atomic_save({**payload, "step": step, "complete": True}, final)
    for old in list_checkpoints(out_dir)[KEEP:]:
        os.remove(old)
    return final


def cpu_copy(obj):
    """A snapshot of ``obj`` with every tensor copied to CPU (the training may change the originals next step)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj


class AsyncSaver:
    """Checkpoints written in a background thread, one at a time; ``wait`` re-raises a failed write."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, out_dir: str, step: int, payload: dict) -> None:
        self.wait()
        snapshot = cpu_copy(payload)

        def work() -> None:
            try:
                save(out_dir, step, snapshot)
            except BaseException as e:  # handed to the training thread by wait()
                self._error = e

        self._thread = threading.Thread(target=work, name=f"checkpoint-{step}")
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err


def load(path: str, map_location: str | torch.device = "cpu") -> dict:
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or not ckpt.get("complete"):
        raise ValueError(f"{path} is not a complete checkpoint")
    return ckpt


def latest(out_dir: str, map_location: str | torch.device = "cpu") -> tuple[str, dict] | None:
    """The newest checkpoint in ``out_dir`` that loads; broken ones are reported on stderr and skipped."""
    for path in list_checkpoints(out_dir):
        try:
            return path, load(path, map_location)
        except Exception as e:  # a truncated zip raises RuntimeError, a garbled pickle several other types
            print(
                f"warning: skipping unreadable checkpoint {path} ({type(e).__name__}: {e})", file=sys.stderr
            )
            # Out of the list, so that the next saves (at lower steps) are not pruned in its favour.
            try:
                os.replace(path, path + ".broken")
            except OSError:
                pass
    return None


def truncate_log(path: str, step: int) -> int:
    """Keep the rows of a .jsonl log with ``step`` <= ``step`` (a resume replays the rest), rewritten through
    ``atomic_path``; returns the number of rows dropped.

    A torn last line (a crash mid-write) is dropped too, and a last row that lost only its newline gets it back,
    so that the next row appended starts a line of its own.
    """
    if not os.path.exists(path):
        return 0
    keep, dropped, mended = [], 0, False
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                continue
            if row.get("step", 0) > step:
                dropped += 1
            elif line.endswith("\n"):
                keep.append(line)
            else:
                keep.append(line + "\n")
                mended = True
    if dropped or mended:
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            f.writelines(keep)
    return dropped
