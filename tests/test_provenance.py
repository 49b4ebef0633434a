"""No committed file records a path of the machine that made it.

Results, figures and their JSON name files relative to the repository (or a run folder), so that a clone
elsewhere reads the same provenance and a rerun in another checkout gives the same bytes. Checked on every
text file git tracks:

* nowhere: this checkout's absolute path, or a path under /work/, /root/ or /home/;
* in recorded data (JSON, logs, tables under results/ and figures/out): also a path under /tmp/. Elsewhere
  /tmp/ may appear as a scratch folder a documented command writes to.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# a path starts at a quote, a space, '=' or the line start: "/work/x", --out /tmp/x, but not "runs/work/x"
MACHINE = re.compile(r"(?:^|[\s\"'=(:,\[])(/(?:work|root|home)/[^\s\"']*)", re.MULTILINE)
SCRATCH = re.compile(r"(?:^|[\s\"'=(:,\[])(/tmp/[^\s\"']*)", re.MULTILINE)
DATA_SUFFIXES = {".json", ".jsonl", ".log", ".csv"}


def tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = []
    for name in out.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file() or path == Path(__file__).resolve():
            continue  # this file names the patterns it looks for
        raw = path.read_bytes()[:2_000_000]
        if b"\0" in raw[:8192]:
            continue  # binary (PNG, PDF, checkpoints)
        files.append(path)
    return files


def is_data(path: Path) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return path.suffix in DATA_SUFFIXES or rel.startswith(("results/", "figures/out/"))


def machine_paths(path: Path) -> list[str]:
    text = path.read_text(errors="replace")
    found = [m for m in MACHINE.findall(text)]
    found += [str(ROOT)] if str(ROOT) in text and str(ROOT) not in ("/", "") else []
    if is_data(path):
        found += SCRATCH.findall(text)
    return found


def test_no_committed_file_holds_a_machine_path():
    offenders = {}
    for path in tracked_text_files():
        found = machine_paths(path)
        if found:
            offenders[path.relative_to(ROOT).as_posix()] = sorted(set(found))[:3]
    assert not offenders, f"{len(offenders)} committed file(s) hold absolute machine paths: " + "; ".join(
        f"{name}: {', '.join(paths)}" for name, paths in sorted(offenders.items())[:20]
    )


def test_the_check_finds_a_path(tmp_path):
    """The patterns themselves: a recorded checkpoint path and a scratch path in data are found, relative ones not."""
    sample = tmp_path / "row.json"
    sample.write_text('{"checkpoint": "/work/x/runs/a/final.pt", "cmd": "python -m t --out /tmp/r", "ok": "runs/b"}')
    assert MACHINE.findall(sample.read_text()) == ["/work/x/runs/a/final.pt"]
    assert SCRATCH.findall(sample.read_text()) == ["/tmp/r"]
    assert not MACHINE.findall('"out": "runs/work/home/x"')
