"""A whole `paperkit reproduce` under faults: SIGTERM/SIGINT mid-notebook, two runs into one folder, stale
locks, a corrupt manifest. One tiny notebook (writes a table, sleeps, writes another, records) keeps each
test to one or two kernel start-ups."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_notebooks import write_notebook

from paperkit import cli, reproduce, results, run_lock

# `paperkit reproduce` with the notebook folder swapped for the tiny one (argv[1])
DRIVER = ("import sys; from pathlib import Path; from paperkit import cli, reproduce; "
          "reproduce.NOTEBOOK_DIR = Path(sys.argv[1]); sys.exit(cli.main(sys.argv[2:]))")
PARAMS = 'profile = "smoke"\ndata_root = ""\nrun_dir = ""\nseeds = None'


_notebook = write_notebook


@pytest.fixture
def tiny_notebooks(tmp_path: Path) -> Path:
    d = tmp_path / "notebooks"
    d.mkdir()
    _notebook(d / "01_sleep.ipynb", PARAMS + "\nsleep_s = 120",
              "import os, pathlib, time\nimport pandas as pd\nfrom paperkit import results\nt0 = time.time()\n"
              "df = pd.DataFrame({'x': [1], 'dataset': ['none']})\n"
              "first = results.write_table(run_dir, 'first', df)\n"
              "pathlib.Path(run_dir, 'kernel.pid').write_text(str(os.getpid()))\n"
              "time.sleep(sleep_s)\n"
              "slept = results.write_table(run_dir, 'slept', df)\n"
              "results.record_notebook(run_dir, '01_sleep', {'profile': profile}, None, t0, [first, slept])\n")
    return d


def _previous_run(run_dir: Path) -> None:
    """What an earlier complete run left: an entry of another notebook and one of 01_sleep itself."""
    import pandas as pd
    df = pd.DataFrame({"x": [0], "dataset": ["none"]})
    results.record_notebook(run_dir, "00_earlier", {}, None, time.time(), [results.write_table(run_dir, "earlier", df)])
    results.record_notebook(run_dir, "01_sleep", {}, None, time.time(), [results.write_table(run_dir, "old", df)])


def _start(nb_dir: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-c", DRIVER, str(nb_dir), "reproduce", "--profile", "smoke", "--run-dir",
            str(run_dir), "--data-root", str(run_dir.parent / "no_data"), *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 25.0) -> None:
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"reproduce exited early ({proc.returncode}): {proc.communicate()[1][-2000:]}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.1)


def _gone(pid: int, timeout: float = 10.0) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _consistent_manifest(run_dir: Path) -> dict:
    """Valid JSON, and every output any entry names exists."""
    m = json.loads((run_dir / "manifest.json").read_text())
    for name, entry in m["entries"].items():
        for out in entry.get("outputs", []):
            assert (run_dir / out).is_file(), f"{name} names {out}, which is not there"
    return m


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_notebook_leaves_results_consistent_and_a_rerun_completes(tiny_notebooks, tmp_path, sig,
                                                                                 monkeypatch, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _previous_run(run_dir)
    proc = _start(tiny_notebooks, run_dir)
    _wait_for(run_dir / "kernel.pid", proc)
    kernel_pid = int((run_dir / "kernel.pid").read_text())
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=25)
    assert proc.returncode == 128 + sig, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("paperkit reproduce: interrupted by") and "01_sleep" in last
    assert "paperkit/reproduce.py" not in err and "_Signalled" not in err   # (the kernel may log its shutdown)
    assert _gone(kernel_pid), "the notebook's kernel outlived the interrupted run (it could still write results)"
    m = _consistent_manifest(run_dir)
    assert m["entries"]["00_earlier"]["status"] == "complete"          # other notebooks' entries untouched
    assert m["entries"]["00_earlier"]["outputs"] == ["tables/earlier.csv"]
    # the earlier run's 01_sleep entry no longer vouches for files this run had started to rewrite
    assert m["entries"]["01_sleep"]["status"] == "interrupted" and "outputs" not in m["entries"]["01_sleep"]
    rep = m["entries"]["reproduce"]
    assert rep["status"] == "interrupted" and rep["interrupted"] == {"notebook": "01_sleep",
                                                                     "signal": signal.Signals(sig).name}
    assert not (run_dir / "tables" / "slept.csv").exists()
    assert not (run_dir / run_lock.LOCK_NAME).exists()
    assert not [p for p in run_dir.rglob(".*") if p.name.startswith((".manifest", ".first", ".slept"))]

    monkeypatch.setattr(reproduce, "NOTEBOOK_DIR", tiny_notebooks)   # rerun in-process: one start-up less
    assert cli.main(["reproduce", "--profile", "smoke", "--run-dir", str(run_dir), "--data-root",
                     str(tmp_path / "no_data"), "--param", "sleep_s=0"]) == 0, capsys.readouterr().err[-2000:]
    m = _consistent_manifest(run_dir)
    assert {e["status"] for e in m["entries"].values()} == {"complete"}
    assert m["entries"]["01_sleep"]["outputs"] == ["tables/first.csv", "tables/slept.csv"]
    assert m["entries"]["reproduce"]["interrupted"] is None


def test_second_run_into_the_same_folder_refuses_while_the_first_holds_it(tiny_notebooks, tmp_path, capsys,
                                                                         monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setattr(reproduce, "NOTEBOOK_DIR", tiny_notebooks)
    first = _start(tiny_notebooks, run_dir)
    try:
        _wait_for(run_dir / "manifest.json", first)   # written after the lock is taken, before the kernel starts
        rc = cli.main(["reproduce", "--profile", "smoke", "--run-dir", str(run_dir),
                       "--data-root", str(tmp_path / "no_data")])
        err = capsys.readouterr().err
        assert rc == 1 and len(err.strip().splitlines()) == 1, err
        assert f"{run_dir} is in use by another paperkit reproduce (pid {first.pid} " in err
        assert "choose another --run-dir" in err
    finally:
        first.send_signal(signal.SIGTERM)
        # the signal can land while papermill is still starting the kernel, which it finishes first: on a
        # loaded 2-core machine that once took over 25 s (14 s on a quiet one)
        first.communicate(timeout=90)
    assert first.returncode == 128 + signal.SIGTERM
    m = _consistent_manifest(run_dir)
    assert m["entries"]["01_sleep"]["status"] == "interrupted" and m["entries"]["reproduce"]["interrupted"]


def test_lock_names_the_holder_and_stale_locks_are_taken_over(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from pathlib import Path; from paperkit import run_lock\n"
                               "with run_lock.RunLock(Path(sys.argv[1])):\n"
                               "    print('held', flush=True); time.sleep(60)", str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = rf"in use by another paperkit reproduce \(pid {holder.pid} "
        with pytest.raises(reproduce.ReproduceError, match=busy):
            run_lock.RunLock(tmp_path).acquire()
    finally:
        holder.kill()      # SIGKILL: no cleanup, the lock file stays with the dead pid in it
        holder.wait()
    assert str(holder.pid) in (tmp_path / run_lock.LOCK_NAME).read_text()
    with run_lock.RunLock(tmp_path):
        assert json.loads((tmp_path / run_lock.LOCK_NAME).read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert f"taking over the lock {tmp_path / run_lock.LOCK_NAME} left by pid {holder.pid}" in err
    assert "no longer running" in err
    assert not (tmp_path / run_lock.LOCK_NAME).exists()


def test_manifest_is_never_half_written_and_a_corrupt_one_is_kept_aside(tmp_path):
    (tmp_path / "manifest.json").write_text('{"entries": {"00_data": {"outputs": [')   # e.g. an old crash
    with pytest.warns(UserWarning, match="not a valid manifest"):
        results.update_manifest(tmp_path, "reproduce", {"x": 1})
    assert json.loads((tmp_path / "manifest.json").read_text())["entries"] == {"reproduce": {"x": 1}}
    assert (tmp_path / "manifest.json.corrupt").read_text().startswith('{"entries"')
    # a failure while writing leaves the previous manifest intact (temp file + rename)
    before = (tmp_path / "manifest.json").read_bytes()
    with pytest.raises(TypeError):
        results.update_manifest(tmp_path, "bad", {1j: 1})  # not JSON-serialisable
    assert (tmp_path / "manifest.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".manifest")] == []


def test_record_notebook_refuses_an_output_that_is_not_there(tmp_path, monkeypatch):
    t = results.write_table(tmp_path, "t", __import__("pandas").DataFrame({"dataset": ["none"]}))
    with pytest.raises(FileNotFoundError, match=r"record_notebook\('01_x'\).*tables/nope\.csv"):
        results.record_notebook(tmp_path, "01_x", {}, None, time.time(), [t, tmp_path / "tables" / "nope.csv"])
    assert not (tmp_path / "manifest.json").exists()
    # relative run dir (as notebooks use "../results"): outputs are still recorded relative to the run dir
    monkeypatch.chdir(tmp_path.parent)
    rel = Path(tmp_path.name)
    t2 = results.write_table(rel, "t2", __import__("pandas").DataFrame({"dataset": ["none"]}))
    results.record_notebook(rel, "01_x", {}, None, time.time(), [t2, "tables/t.csv"])
    entry = json.loads((tmp_path / "manifest.json").read_text())["entries"]["01_x"]
    assert entry["outputs"] == ["tables/t2.csv", "tables/t.csv"] and entry["status"] == "complete"
