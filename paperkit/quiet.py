"""A quiet machine for timing while notebooks run side by side (``paperkit reproduce --jobs N``).

Why: on a 2-core box, running the independent notebooks 01, 02 and 03 at once uses the cores better than
one notebook with two threads, but a latency or step-time measurement taken while another notebook trains
measures the contention, not the model. So measurements take the machine for themselves:

* compute loops (training steps, evaluation batches, feature passes) call :func:`checkpoint` once per
  batch; it blocks while a measurement is in progress somewhere and otherwise costs two ``flock`` calls;
* a measurement runs inside ``with quiet.timing():``, which waits until every other process of the run has
  reached its next checkpoint and keeps them there until it ends.

Two lock files in the run folder implement it: a *gate* that a measurement holds exclusively (checkpoints
pass it shared, so they stop at it) and a *work* lock that compute holds shared between checkpoints (the
measurement takes it exclusively, so it starts only once in-flight batches have finished). Nothing is
switched on unless ``PAPERKIT_QUIET_DIR`` names the folder (``reproduce`` sets it when it runs notebooks in
parallel); a lone notebook or a test pays nothing. A process that dies releases its locks (``flock``).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from pathlib import Path
from typing import Iterator

ENV = "PAPERKIT_QUIET_DIR"
GATE, WORK = ".quiet.gate", ".quiet.work"
SLOW_WAIT_S = 120.0   # a measurement that waited longer than this says so (a neighbour in a long section)

_fds: dict[str, int] = {}
_owner: tuple[int, str] = (0, "")   # (pid, folder) the open lock files belong to
_holding_work = False
_in_timing = 0


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def _fd(name: str) -> int:
    """One open file per lock, process and folder (a forked DataLoader worker opens its own)."""
    global _owner, _holding_work
    owner = (os.getpid(), os.environ[ENV])
    if _owner != owner:
        if _owner[0] == owner[0]:          # same process, another run folder: let go of the old locks
            for fd in _fds.values():
                os.close(fd)
        _fds.clear()
        _owner, _holding_work = owner, False
    if name not in _fds:
        folder = Path(owner[1])
        folder.mkdir(parents=True, exist_ok=True)
        _fds[name] = os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o644)
    return _fds[name]


def checkpoint() -> None:
    """Call once per batch of heavy work: waits here while another process measures."""
    global _holding_work
    if not enabled() or _in_timing:
        return
    work, gate = _fd(WORK), _fd(GATE)
    if _holding_work:
        fcntl.flock(work, fcntl.LOCK_UN)
        _holding_work = False
    fcntl.flock(gate, fcntl.LOCK_SH)     # blocks while a measurement holds the gate
    fcntl.flock(gate, fcntl.LOCK_UN)
    fcntl.flock(work, fcntl.LOCK_SH)
    _holding_work = True


def release() -> None:
    """Stop counting as busy (end of a compute phase): a measurement elsewhere need not wait for us."""
    global _holding_work
    if enabled() and _holding_work:
        fcntl.flock(_fd(WORK), fcntl.LOCK_UN)
        _holding_work = False


@contextlib.contextmanager
def timing(what: str = "measurement") -> Iterator[float]:
    """Hold the machine for a measurement; yields the seconds spent waiting for it (0 when off)."""
    global _in_timing
    if not enabled() or _in_timing:
        _in_timing += 1
        try:
            yield 0.0
        finally:
            _in_timing -= 1
        return
    release()
    gate, work = _fd(GATE), _fd(WORK)
    t0 = time.perf_counter()
    fcntl.flock(gate, fcntl.LOCK_EX)
    fcntl.flock(work, fcntl.LOCK_EX)
    waited = time.perf_counter() - t0
    if waited > SLOW_WAIT_S:
        print(f"[quiet] {what}: waited {waited:.0f}s for the notebooks running beside this one",
              file=sys.stderr, flush=True)
    _in_timing += 1
    try:
        yield waited
    finally:
        _in_timing -= 1
        fcntl.flock(work, fcntl.LOCK_UN)
        fcntl.flock(gate, fcntl.LOCK_UN)
