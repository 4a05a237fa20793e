"""paperkit.quiet: a measurement holds the machine; compute in other processes waits at its checkpoints."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from paperkit import quiet

WORKER = """
import sys, time
from paperkit import quiet
log = open(sys.argv[1], "a", buffering=1)
log.write("ready\\n")
end = time.time() + float(sys.argv[2])
while time.time() < end:
    quiet.checkpoint()
    t0 = time.time()
    x = 0
    while time.time() - t0 < 0.02:   # a 20 ms "batch" of work
        x += 1
    log.write(f"{t0} {time.time()}\\n")
"""


def test_off_by_default_costs_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(quiet.ENV, raising=False)
    quiet.checkpoint()
    with quiet.timing() as waited:
        assert waited == 0.0
    assert not quiet.enabled()


def test_no_batch_of_another_process_overlaps_a_measurement(tmp_path, monkeypatch):
    monkeypatch.setenv(quiet.ENV, str(tmp_path))
    log = tmp_path / "work.log"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(log), "6"]) for _ in range(2)]
    try:
        t0 = time.time()
        while log.read_text().count("ready") < 2 if log.exists() else True:
            assert time.time() - t0 < 30, "workers did not start"
            time.sleep(0.05)
        time.sleep(0.5)                        # both are busy in their loops now
        windows = []
        for _ in range(3):
            with quiet.timing("test"):
                start = time.time()
                time.sleep(0.3)
                end = time.time()
            windows.append((start, end))
            time.sleep(0.2)
    finally:
        for p in procs:
            p.wait(timeout=30)
    batches = [tuple(map(float, line.split())) for line in log.read_text().splitlines() if line != "ready"]
    assert len(batches) > 50                  # the workers did run between the measurements
    for s, e in windows:
        inside = [(a, b) for a, b in batches if a < e and b > s]
        assert not inside, f"{len(inside)} batch(es) ran during a measurement"
    between = [(a, b) for a, b in batches if windows[0][1] < a < windows[1][0]]
    assert between, "compute never resumed after a measurement"


def test_a_measurement_inside_a_measurement_and_in_a_compute_process(tmp_path, monkeypatch):
    monkeypatch.setenv(quiet.ENV, str(tmp_path))
    quiet.checkpoint()                          # this process counts as busy ...
    with quiet.timing("outer"):                 # ... and may still measure (it lets go of its own lock)
        quiet.checkpoint()                      # a checkpoint inside a measurement does not block
        with quiet.timing("inner") as waited:
            assert waited == 0.0
    quiet.release()
    assert {p.name for p in Path(tmp_path).iterdir()} == {quiet.GATE, quiet.WORK}
