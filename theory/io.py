"""Plumbing every command line and report of the project shares: strict JSON, atomic writes, one-line errors.

Lives in ``theory`` because it is the one package everything else already imports (numpy only).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

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


def write_json(path: str | os.PathLike, obj, indent: int = 1) -> None:
    """Strict JSON, written to a temporary file and renamed into place: a reader never sees half a file."""
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(jsonable(obj), f, indent=indent, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit status 2 (the usage stays behind --help)."""

    def error(self, message: str) -> None:
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)
