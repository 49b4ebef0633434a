"""Ctrl-C and SIGTERM during training: finish the current step, write a checkpoint at it, exit 130.

``StopSignals`` installs handlers for SIGINT and SIGTERM (main thread only; elsewhere it does nothing). Until
``arm()`` (before the first step) a signal interrupts at once (``KeyboardInterrupt``: nothing to save yet);
once armed, the first signal only sets ``requested`` and the loop stops after the step in progress, saving it;
a second signal interrupts at once (the newest checkpoint on disk is kept). A repeat within ``REPEAT_S`` of the
first counts as the same request: torchrun passes a terminal's Ctrl-C on to workers that already received it.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

SIGNALS = (signal.SIGINT, signal.SIGTERM)
REPEAT_S = 1.0


class Interrupted(Exception):
    """The loop stopped on a signal after ``step`` (of ``total``), with its checkpoint at ``path`` on disk."""

    def __init__(self, signame: str, step: int, total: int, path: str) -> None:
        super().__init__(signame, step, total, path)
        self.signame, self.step, self.total, self.path = signame, step, total, path

    def message(self) -> str:
        return (
            f"interrupted ({self.signame}) after step {self.step} of {self.total}; checkpoint written to "
            f"{self.path}: the same command plus --resume continues from step {self.step}"
        )


class StopSignals:
    """Context manager: SIGINT / SIGTERM handlers for the duration of a training (previous ones restored)."""

    def __init__(self) -> None:
        self.requested: str | None = None  # the name of the first signal received while armed
        self.armed = False
        self._at = 0.0
        self._old: dict = {}

    def arm(self) -> None:
        """From now on a signal asks for a checkpointed stop after the step in progress."""
        self.armed = True

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None and time.monotonic() - self._at < REPEAT_S:
            return  # the same request, delivered twice
        if not self.armed or self.requested is not None:
            raise KeyboardInterrupt(name)
        self.requested, self._at = name, time.monotonic()
        print(
            f"\n{name}: stopping after the current step with a checkpoint (send it again to stop at once)",
            file=sys.stderr,
        )

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()
