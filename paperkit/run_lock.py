"""One `paperkit reproduce` per run folder: an ``flock`` on ``<run_dir>/.reproduce.lock`` that names its
holder, and is taken over (with a message) when the process that left it is gone."""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

LOCK_NAME = ".reproduce.lock"


def _error(message: str) -> Exception:
    from .reproduce import ReproduceError   # late: reproduce imports this module
    return ReproduceError(message)


class RunLock:
    """Exclusive use of a run folder by one process: ``flock`` on ``<run_dir>/.reproduce.lock``.

    The kernel drops a flock when its holder dies, so a lock left by a dead process is free by
    construction; the pid written into the file is only there to say who holds it (and whose lock is
    taken over). The file is removed on release."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(_read_lock(fd))
                os.close(fd)
                raise _error(f"{self.path.parent} is in use by another paperkit reproduce ({holder}; lock "
                                     f"{self.path}); wait for it to finish, stop it, or choose another --run-dir"
                                     ) from None
            except OSError as e:
                os.close(fd)
                raise _error(f"cannot lock {self.path} ({e}); use a --run-dir on a local filesystem") from e
            try:   # a finishing holder may have unlinked the file between our open and flock: retry
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            old = _read_lock(fd)
            if old.get("pid") not in (None, os.getpid()):
                state = "no longer running" if not _alive(old) else "not holding the lock any more"
                print(f"paperkit reproduce: taking over the lock {self.path} left by {_describe(old)} ({state})",
                      file=sys.stderr, flush=True)
            info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            self.fd = fd
            return
        raise _error(f"could not lock {self.path}: it keeps being replaced; is another run starting?")

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)   # while still holding the flock (see the inode check above)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_lock(fd: int) -> dict[str, Any]:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return info if isinstance(info, dict) else {}
    except (ValueError, OSError):
        return {}


def _alive(info: dict[str, Any]) -> bool:
    if info.get("host") not in (None, socket.gethostname()):
        return True   # another machine's pid cannot be checked from here
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError, OverflowError):
        return True
    return True


def _describe(info: dict[str, Any]) -> str:
    if not info.get("pid"):
        return "pid unknown"
    return f"pid {info['pid']} on {info.get('host', '?')}, started {info.get('started', '?')}"
