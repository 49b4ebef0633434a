"""Plumbing every command line and report of the project shares: strict JSON, atomic writes, one-line errors.

Outside ``theory`` and ``empirical`` because it belongs to neither: both, the figures and the benchmarks import
it (numpy only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import sys
from collections.abc import Iterator

import numpy as np


def jsonable(obj):
    """numpy arrays and scalars -> lists, ints, floats; non-finite floats -> None (JSON has no inf or NaN)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """The one atomic writer: yields a temporary path in ``path``'s folder to write to, renamed onto ``path`` when
    the block succeeds, removed when it raises (``path`` is then left as it was). A reader never sees half a file.

    The temporary name (``.<name>.<random>.tmp``) is unique, so two writers never share it, and it keeps no
    suffix of ``path``: a writer that picks its format from the name must be told it (``savefig(tmp, format=ext)``).
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_json(path: str | os.PathLike, obj, indent: int = 1) -> None:
    """Strict JSON, written through ``atomic_path``: a reader never sees half a file. A typed result (one with
    ``to_json()``) is written as its JSON."""
    obj = obj.to_json() if hasattr(obj, "to_json") else obj
    text = json.dumps(jsonable(obj), indent=indent, allow_nan=False) + "\n"
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit status 2 (the usage stays behind --help)."""

    def error(self, message: str) -> None:
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


# ---- one error type and one exit-code mapping for every command line ------------------------------------------

EXIT_CODES = {
    0: "done",
    1: "finished, but some rows of an experiment failed (listed in its table)",
    2: "bad input or a missing / unreadable / unwritable file: one line on stderr, nothing trained",
    3: "the run diverged (non-finite loss or weights); the last good checkpoint is kept",
    130: "interrupted (Ctrl-C); rerun with the same flags (training: add --resume) to continue",
}


class UserError(Exception):
    """Anything the user can fix (a bad flag, a missing dataset, an unwritable folder). The message is the one
    line they see; ``run_cli`` maps it to exit status 2."""


class NonFiniteError(Exception):
    """A run diverged (NaN / inf loss or weights); ``run_cli`` maps it to exit status 3."""


def run_cli(fn, argv: list[str] | None = None, resume_hint: str = "rerun the same command to continue") -> int:
    """``fn(argv)`` with every user-causable failure as one ``error:`` line and its exit status (``EXIT_CODES``).

    ``UserError`` -> 2, ``NonFiniteError`` -> 3, ``OSError`` (a file the user named cannot be read or written) -> 2,
    Ctrl-C -> 130, argparse's ``SystemExit`` passes its own status through. Anything else is a bug: traceback.
    """
    try:
        return int(fn(argv) or 0)
    except SystemExit as e:  # argparse: --help (0) or a one-line usage error (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except OSError as e:
        where = f" {e.filename!r}" if e.filename else ""
        print(f"error: cannot access{where} ({e.strerror or e})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; {resume_hint}", file=sys.stderr)
        return 130


def check_finite(name: str, value: float, low: float | None = None, high: float | None = None) -> float:
    """``value`` unless it is NaN / inf or outside [low, high]: then ``UserError`` naming the flag."""
    if not math.isfinite(value):
        raise UserError(f"{name} {value} is not a finite number")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise UserError(f"{name} {value:g} is outside the allowed range [{lo}, {hi}]")
    return value


# ---- sizes that cannot run: refused before any work -------------------------------------------------------

DAY_SECONDS = 86_400.0


def machine_memory() -> int:
    """This machine's physical memory in bytes (24 GiB where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return 24 * 2**30


def _duration(seconds: float) -> str:
    for unit, size in (("years", 365 * DAY_SECONDS), ("days", DAY_SECONDS), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def check_budget(what: str, nbytes: float, seconds: float, advice: str) -> None:
    """``UserError`` (with both estimates) when ``what`` needs more than this machine's memory or more than a day.

    ``nbytes`` / ``seconds``: the caller's rough model of the peak memory and the run time (stated where it is
    computed); ``advice``: which flags make it smaller.
    """
    memory = machine_memory()
    if nbytes > memory or seconds > DAY_SECONDS:
        raise UserError(
            f"{what} would need about {nbytes / 2**30:.3g} GiB of memory (this machine has {memory / 2**30:.0f} GiB) "
            f"and about {_duration(seconds)} (at most a day is run): {advice}"
        )
