"""Incremental `paperkit reproduce`: a notebook reruns only when its inputs changed, an output is gone or a
notebook it depends on reran; the manifest says why. Tiny notebooks in a tmp folder, executed in-process by
a stand-in for papermill (the real papermill path is covered by tests/test_reproduce_faults.py and one test
here)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest
from tiny_notebooks import write_notebook

from paperkit import cli, incremental, reproduce, results, summary

PARAMS = 'profile = "smoke"\ndata_root = ""\nrun_dir = ""\nseeds = None'
BODY = ("import pathlib, time\nimport pandas as pd\nfrom paperkit import results\nt0 = time.time()\n"
        "pathlib.Path(run_dir, 'runs.log').open('a').write(NAME + '\\n')\n"
        "t = results.write_table(run_dir, NAME, pd.DataFrame({'x': [X], 'dataset': ['none']}))\n"
        "results.record_notebook(run_dir, NAME, {'profile': profile}, None, t0, [t])\n")
DAG = {"00": (), "01": ("00",), "02": ("00",), "03": ("01",)}   # 00 -> 01 -> 03, 00 -> 02


def _notebook(path: Path, extra_params: str = "", x: int = 1) -> None:
    write_notebook(path, PARAMS + extra_params, f"NAME = {path.stem!r}\nX = {x}\n" + BODY)


@pytest.fixture
def nbs(tmp_path: Path) -> Path:
    d = tmp_path / "notebooks"
    d.mkdir()
    _notebook(d / "00_base.ipynb")
    _notebook(d / "01_model.ipynb", "\nlr = 0.1")
    _notebook(d / "02_other.ipynb")
    _notebook(d / "03_after.ipynb")
    return d


def _fake_execute(input_path, output_path, parameters=None, **_):
    """papermill.execute_notebook in-process: parameters cell, then injected parameters, then the body."""
    nb = nbformat.read(input_path, as_version=4)
    env: dict = {}
    for cell in nb.cells:
        exec(cell.source, env)
        if "parameters" in cell.metadata.get("tags", []):
            env.update(parameters or {})
    nbformat.write(nb, output_path)


@pytest.fixture(autouse=True)
def in_process(monkeypatch, tmp_path):
    import papermill
    monkeypatch.setattr(papermill, "execute_notebook", _fake_execute)
    monkeypatch.setenv("PAPERKIT_CACHE", str(tmp_path / "cache"))


def _run(nbs: Path, run_dir: Path, **kw) -> dict:
    return reproduce.run("smoke", run_dir, data_root=str(run_dir.parent / "no_data"), notebook_dir=nbs,
                         log_output=False, dag=DAG, **kw)


def _ran(run_dir: Path) -> list[str]:
    log = run_dir / "runs.log"
    names = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return names


def _why(run_dir: Path) -> dict[str, tuple[str, list[str]]]:
    m = json.loads((run_dir / "manifest.json").read_text())
    entries = m["entries"]
    assert entries["reproduce"]["notebooks"] == {k: v["run"] for k, v in entries.items() if k != "reproduce"}
    return {k: (v["run"]["action"], tuple(v["run"]["why"])) for k, v in entries.items() if k != "reproduce"}


def test_second_run_reuses_everything_and_force_reruns_all(nbs, tmp_path):
    run_dir = tmp_path / "run"
    r = _run(nbs, run_dir)
    assert r["ran"] == ["00_base", "01_model", "02_other", "03_after"] and r["reused"] == []
    assert _ran(run_dir) == r["ran"]
    assert {a for a, _ in _why(run_dir).values()} == {"ran"}
    assert _why(run_dir)["00_base"][1] == ("no previous run",)
    r = _run(nbs, run_dir)
    assert r["ran"] == [] and _ran(run_dir) == []
    assert set(_why(run_dir).values()) == {("reused", ("inputs unchanged, outputs present",))}
    rep = json.loads((run_dir / "manifest.json").read_text())["entries"]["reproduce"]
    assert rep["notebook_wall_time_s"] == {} and sorted(rep["last_run_wall_time_s"]) == r["reused"]
    r = _run(nbs, run_dir, force=True)
    assert _ran(run_dir) == ["00_base", "01_model", "02_other", "03_after"]
    assert set(_why(run_dir).values()) == {("ran", ("forced (--force)",))}


def test_changed_parameters_make_a_notebook_and_its_dependants_stale(nbs, tmp_path):
    run_dir = tmp_path / "run"
    _run(nbs, run_dir)
    _ran(run_dir)
    _run(nbs, run_dir, extra={"lr": 0.01})        # only 01 declares lr
    assert _ran(run_dir) == ["01_model", "03_after"]
    why = _why(run_dir)
    assert why["01_model"] == ("ran", ("parameters changed",))
    assert why["03_after"] == ("ran", ("dependency 01 reran",))
    assert why["00_base"][0] == why["02_other"][0] == "reused"
    _run(nbs, run_dir, extra={"lr": 0.01})
    assert _ran(run_dir) == []


def test_a_moved_run_folder_is_reused(nbs, tmp_path):
    """The run folder's own path is not an input: a clone at another path, or a moved folder, reuses it."""
    import shutil
    def run(run_dir: Path) -> dict:   # the same data_root for both runs: only the folder's path differs
        return reproduce.run("smoke", run_dir, data_root=str(tmp_path / "no_data"), notebook_dir=nbs,
                             log_output=False, dag=DAG)
    first = tmp_path / "run"
    run(first)
    _ran(first)
    moved = tmp_path / "elsewhere" / "results"
    moved.parent.mkdir()
    shutil.move(str(first), str(moved))
    r = run(moved)
    assert r["ran"] == [] and _ran(moved) == []


def test_editing_one_notebook_reruns_it_and_reuses_the_others(nbs, tmp_path):
    run_dir = tmp_path / "run"
    _run(nbs, run_dir)
    _ran(run_dir)
    _notebook(nbs / "02_other.ipynb", x=2)        # an unrelated notebook edited
    _run(nbs, run_dir)
    assert _ran(run_dir) == ["02_other"]
    assert _why(run_dir)["02_other"] == ("ran", ("source changed",))
    # an executed copy saved over the source (outputs, execution counts) is not an edit
    nb = json.loads((nbs / "01_model.ipynb").read_text())
    for c in nb["cells"]:
        c["outputs"], c["execution_count"] = [{"output_type": "stream", "name": "stdout", "text": "hi"}], 7
        c["metadata"]["collapsed"] = True
    (nbs / "01_model.ipynb").write_text(json.dumps(nb))
    _run(nbs, run_dir)
    assert _ran(run_dir) == []
    _notebook(nbs / "00_base.ipynb", x=3)         # the root of the DAG: everything below reruns
    _run(nbs, run_dir)
    assert _ran(run_dir) == ["00_base", "01_model", "02_other", "03_after"]
    assert _why(run_dir)["02_other"] == ("ran", ("dependency 00 reran",))


def test_a_deleted_output_makes_its_notebook_stale(nbs, tmp_path):
    run_dir = tmp_path / "run"
    _run(nbs, run_dir)
    _ran(run_dir)
    (run_dir / "tables" / "02_other.csv").unlink()
    _run(nbs, run_dir)
    assert _ran(run_dir) == ["02_other"]
    assert _why(run_dir)["02_other"] == ("ran", ("output missing: tables/02_other.csv",))
    (run_dir / "executed" / "00_base.ipynb").unlink()
    _run(nbs, run_dir)
    assert _ran(run_dir) == ["00_base", "01_model", "02_other", "03_after"]
    assert _why(run_dir)["00_base"] == ("ran", ("output missing: executed/00_base.ipynb",))


def test_paperkit_dataset_packages_and_unfinished_runs(nbs, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    _run(nbs, run_dir)
    _ran(run_dir)
    real = incremental.paperkit_hash
    monkeypatch.setattr(incremental, "paperkit_hash", lambda *a: real(*a) + "x")
    _run(nbs, run_dir)
    assert len(_ran(run_dir)) == 4 and _why(run_dir)["02_other"][1][0] == "paperkit changed"
    from paperkit import results
    versions = results.package_versions
    monkeypatch.setattr(results, "package_versions", lambda *a: {**versions(*a), "torch": "0.0"})
    _run(nbs, run_dir)
    assert _why(run_dir)["00_base"] == ("ran", ("package versions changed",))
    _ran(run_dir)
    entry = json.loads((run_dir / "manifest.json").read_text())["entries"]["02_other"]
    results.update_manifest(run_dir, "02_other", {**entry, "status": "interrupted"})
    _run(nbs, run_dir)
    assert _ran(run_dir) == ["02_other"] and _why(run_dir)["02_other"] == ("ran", ("previous run interrupted",))


def test_only_with_a_dependency_rerun_in_between(nbs, tmp_path):
    run_dir = tmp_path / "run"
    _run(nbs, run_dir)
    _ran(run_dir)
    _run(nbs, run_dir, only=["01"], force=True)    # 01 reran alone: 03 read the old 01
    assert _ran(run_dir) == ["01_model"]
    _run(nbs, run_dir)
    assert _ran(run_dir) == ["03_after"]
    assert _why(run_dir)["03_after"] == ("ran", ("dependency 01 changed since",))


def test_default_dag_of_the_shipped_notebooks():
    d = reproduce.NOTEBOOK_DIR
    stems = [p.stem for p in reproduce.list_notebooks(d)]
    deps = {s[:2]: [x[:2] for x in incremental.dependencies(s, stems, reproduce.DAG, d)] for s in stems}
    assert deps == {"00": [], "01": ["00"], "02": ["00"], "03": ["00"], "04": ["01", "02", "03"], "05": ["01"]}


def test_noop_through_the_cli_with_real_papermill_is_fast(nbs, tmp_path, monkeypatch, capsys):
    monkeypatch.undo()             # the real papermill for the first run
    run_dir = tmp_path / "run"
    for f in ("01_model", "02_other", "03_after"):
        (nbs / f"{f}.ipynb").unlink()
    monkeypatch.setattr(reproduce, "NOTEBOOK_DIR", nbs)
    args = ["reproduce", "--profile", "smoke", "--run-dir", str(run_dir), "--data-root", str(tmp_path / "no_data")]
    assert cli.main(args) == 0
    t0 = time.perf_counter()
    assert cli.main(args) == 0
    assert time.perf_counter() - t0 < 10
    assert "reused (inputs unchanged, outputs present)" in capsys.readouterr().out
    assert cli.main(args + ["--force"]) == 0
    assert _why(run_dir)["00_base"] == ("ran", ("forced (--force)",))


SPANS = ("import pathlib, time\nimport pandas as pd\nfrom paperkit import results\nt0 = time.time()\n"
         "assert not FAIL, 'this notebook fails'\ntime.sleep(0.6)\n"
         "pathlib.Path(run_dir, 'spans.log').open('a').write(f'{NAME} {t0} {time.time()}\\n')\n"
         "t = results.write_table(run_dir, NAME, pd.DataFrame({'x': [1], 'dataset': ['none']}))\n"
         "results.record_notebook(run_dir, NAME, {'profile': profile}, None, t0, [t])\n")


def _spans(run_dir: Path) -> dict[str, tuple[float, float]]:
    out = {}
    for line in (run_dir / "spans.log").read_text().splitlines():
        name, a, b = line.split()
        out[name] = (float(a), float(b))
    return out


def _par(tmp_path: Path, fail: str = "", dag: dict | None = None) -> dict:
    """Four SPANS notebooks (``fail`` raises) and the run() keywords for them, two jobs."""
    d = tmp_path / "par"
    d.mkdir()
    for stem in ("00_base", "01_model", "02_other", "03_after"):
        write_notebook(d / f"{stem}.ipynb", PARAMS, f"NAME = {stem!r}\nFAIL = {stem == fail}\n" + SPANS)
    return dict(data_root=str(tmp_path / "no_data"), notebook_dir=d, log_output=False, dag=dag or DAG, jobs=2)


def test_jobs_run_independent_notebooks_side_by_side_and_dependants_after(tmp_path):
    kw = _par(tmp_path)
    run_dir = tmp_path / "run"
    r = reproduce.run("smoke", run_dir, **kw)
    assert r["ran"] == ["00_base", "01_model", "02_other", "03_after"]
    s = _spans(run_dir)
    assert s["01_model"][0] >= s["00_base"][1] and s["02_other"][0] >= s["00_base"][1]   # after their dependency
    assert s["01_model"][0] < s["02_other"][1] and s["02_other"][0] < s["01_model"][1]  # side by side
    assert s["03_after"][0] >= s["01_model"][1]
    rep = json.loads((run_dir / "manifest.json").read_text())["entries"]["reproduce"]
    assert rep["parallel"]["jobs"] == 2 and rep["status"] == "complete"
    assert rep["total_wall_time_s"] < sum(rep["notebook_wall_time_s"].values())   # wall, not the sum
    assert rep["machine"]["cores"] >= 1 and rep["machine"]["cpu"]   # which CPU trained (README: another CPU)
    prod = rep["produced_by"]
    assert prod["jobs"] == 2 and prod["total_wall_time_s"] == rep["total_wall_time_s"]
    r = reproduce.run("smoke", run_dir, **kw)
    assert r["ran"] == [] and r["reused"] == ["00_base", "01_model", "02_other", "03_after"]
    rep = json.loads((run_dir / "manifest.json").read_text())["entries"]["reproduce"]
    assert rep["produced_by"] == prod        # the no-op run keeps the record of the run that produced them
    stems = {"00_base", "01_model", "02_other", "03_after"}
    assert "minutes wall with 2 notebooks at a time" in summary._times(99.0, "...", rep, stems)  # README header
    (run_dir / "tables" / "02_other.csv").unlink()
    reproduce.run("smoke", run_dir, **kw)     # a partial rerun: no single run produced them all
    assert json.loads((run_dir / "manifest.json").read_text())["entries"]["reproduce"]["produced_by"] is None


def test_a_failure_with_jobs_lets_the_running_notebook_finish_and_starts_no_other(tmp_path):
    kw = _par(tmp_path, fail="02_other")
    run_dir = tmp_path / "run"
    with pytest.raises(reproduce.ReproduceError, match="02_other.ipynb failed"):
        reproduce.run("smoke", run_dir, **kw)
    s = _spans(run_dir)
    assert "01_model" in s and "03_after" not in s     # 01 finished beside the failure; 03 never started
    entries = json.loads((run_dir / "manifest.json").read_text())["entries"]
    assert entries["02_other"]["status"] == "failed" and entries["01_model"]["status"] == "complete"
    assert entries["reproduce"]["failed"] == "02_other" and "03_after" not in entries


def test_jobs_must_be_a_positive_int(tmp_path):
    with pytest.raises(reproduce.ReproduceError, match="--jobs"):
        reproduce.run("smoke", tmp_path / "run", jobs=0)


def test_jobs_start_the_notebook_that_took_longest_last_time_first(tmp_path, capsys):
    kw = _par(tmp_path, dag={"00": (), "01": ("00",), "02": ("00",), "03": ("00",)})
    run_dir = tmp_path / "run"
    reproduce.run("smoke", run_dir, **{**kw, "jobs": 1})
    for stem, wall in (("01_model", 5.0), ("02_other", 1.0), ("03_after", 50.0)):   # as if 03 took longest
        entry = json.loads((run_dir / "manifest.json").read_text())["entries"][stem]
        results.update_manifest(run_dir, stem, {**entry, "wall_time_s": wall})
    capsys.readouterr()
    reproduce.run("smoke", run_dir, force=True, **kw)
    starts = [line.split()[1] for line in capsys.readouterr().out.splitlines()
              if line.startswith("=== ") and " starts " in line]
    assert starts[0] == "00_base" and starts[1:3] == ["03_after", "01_model"] and starts[3] == "02_other"


def test_jobs_a_noop_rerun_reuses_everything_whatever_the_start_order(tmp_path):
    """Reused notebooks make their dependants ready within the same scheduling pass (no false deadlock)."""
    kw = _par(tmp_path)
    run_dir = tmp_path / "run"
    reproduce.run("smoke", run_dir, **kw)
    entry = json.loads((run_dir / "manifest.json").read_text())["entries"]["00_base"]
    results.update_manifest(run_dir, "00_base", {**entry, "wall_time_s": 0.0})   # 00 sorts last
    r = reproduce.run("smoke", run_dir, **kw)
    assert r["ran"] == [] and r["reused"] == ["00_base", "01_model", "02_other", "03_after"]
