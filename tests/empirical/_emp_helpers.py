"""Helpers for the empirical tests: CLI runs in subprocesses with one CPU thread."""

import os
import subprocess
import sys

# a few steps of the tiny backbone on 16-px digits: the smallest real training run
TINY_RUN = ["--dataset", "digits", "--batch-size", "32", "--max-steps", "20", "--log-every", "5", "--image-size", "16"]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli_env(**extra: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": REPO}
    env.update(extra)
    return env


def run_cli(args: list[str], **env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "empirical.train", "--no-progress", "--threads", "1", *args]
    return subprocess.run(cmd, cwd=REPO, env=cli_env(**env), capture_output=True, text=True, timeout=600)


def popen_cli(args: list[str], **env) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "empirical.train", "--no-progress", "--threads", "1", *args]
    return subprocess.Popen(
        cmd, cwd=REPO, env=cli_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
