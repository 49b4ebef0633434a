"""One training per run folder: a lock file holding the PID and host of the process that trains into it.

The lock is an ``fcntl.flock`` on ``<folder>/train.lock``: the kernel drops it when the process ends, however
it ends, so a lock is never left held by a dead process. The PID and host written into the file name the
holder in the refusal, and a file left behind by a killed process (its PID no longer running) is reported
when it is taken over.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys

from dimcollapse.io import UserError

NAME = "train.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _read(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096).decode() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _holder(info: dict) -> str:
    pid, host = info.get("pid", "?"), info.get("host", "?")
    return f"PID {pid} on {host}"


class RunLock:
    """The lock of run folder ``folder`` (which must exist); ``flag`` names it in messages. A context manager."""

    def __init__(self, folder: str, flag: str = "--out") -> None:
        self.path = os.path.join(folder, NAME)
        self.folder, self.flag = folder, flag
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``UserError`` naming the process that holds it."""
        while self.fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                info = _read(fd)
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise UserError(
                    f"{self.flag} {self.folder} is in use by another training ({_holder(info)}, "
                    f"lock {self.path}): wait for it or choose another {self.flag}"
                ) from None
            try:  # the holder may have released (and unlinked) the file between our open and flock: retry
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self.fd = fd
        old = _read(self.fd)
        if old.get("pid") is not None:  # left behind by a process that did not release it (killed)
            state = "no longer running" if not _alive(int(old["pid"])) else "its lock no longer held"
            print(f"note: taking over the stale lock of {_holder(old)} ({state}) in {self.folder}", file=sys.stderr)
        mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.write(self.fd, mine)
        os.fsync(self.fd)

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self.fd is None:
            return
        try:
            os.remove(self.path)  # while still holding it: the next process finds no file or a fresh one
        except FileNotFoundError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
