"""Run the numbered notebooks in order through papermill: the one command that regenerates results/.

Executed copies land in `<run_dir>/executed/`; the first failure stops the chain with a non-zero exit
and keeps the failed notebook for inspection; per-notebook wall time goes to `<run_dir>/manifest.json`.

Fault tolerance (so an interrupted run never leaves results that look finished):

* One run per run folder (:mod:`paperkit.run_lock`): `<run_dir>/.reproduce.lock` is held with ``flock``
  for the whole run and names the holder's pid. A second run into the same folder refuses with that pid;
  a lock file left by a process that is gone (killed with SIGKILL, machine reset) no longer holds the
  flock and is taken over, with a message.
* Before a notebook runs, its manifest entry is replaced by ``{"status": "running"}``, so the manifest
  never vouches for the previous run's outputs while this run may be rewriting them; the notebook's
  ``record_notebook`` cell replaces it with the complete entry (``"status": "complete"``, outputs that
  exist). Tables, predictions and the manifest are written by temp file + rename (``results``).
* SIGINT and SIGTERM during a notebook stop it: papermill shuts the kernel down, the notebook's entry
  becomes ``"interrupted"`` (or ``"failed"``), the ``reproduce`` entry records where and by which
  signal, the lock is released, and the exit code is 128 + the signal number. A rerun starts over and
  completes (training notebooks resume from their checkpoints).

Incremental runs. The notebooks form a DAG (:data:`DAG`: 00 -> 01 -> 05; 00 -> 02; 00 -> 03;
01, 02, 03 -> 04). A notebook that completed is keyed in its manifest entry (``"inputs"``) by hashes of
its source (outputs, execution counts and metadata other than cell tags stripped), its parameters, the
paperkit source (every ``paperkit/**/*.py``), the dataset fingerprint and the installed package
versions, plus the run id of each notebook it depends on. ``paperkit reproduce`` reruns a notebook only
when one of these changed, when one of the outputs its entry lists (or its executed copy) is gone, when
its previous run did not complete, or when a notebook it depends on reran; ``--force`` reruns all.
Every notebook's entry says what happened in ``"run"``: ``{"action": "ran" | "reused", "why": [...]}``
(e.g. ``"source changed"``, ``"parameters changed"``, ``"paperkit changed"``, ``"output missing:
tables/x.csv"``, ``"dependency 01 reran"``), and the ``reproduce`` entry collects them.

The keys and staleness rules live in :mod:`paperkit.incremental`, the run-folder lock in
:mod:`paperkit.run_lock`.

Long because the serial and the parallel runner share the signal and manifest helpers defined here (one
interrupted or failed run must leave one consistent manifest either way); the sections are marked below.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from . import incremental, profiles, results
from .run_lock import RunLock

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
COMMON_PARAMETERS = ("profile", "data_root", "run_dir", "seeds")


PACKAGE_DIR = Path(__file__).resolve().parent
# notebook number -> the numbers whose results it reads (a number missing here depends on every earlier one)
DAG: dict[str, tuple[str, ...]] = {"00": (), "01": ("00",), "02": ("00",), "03": ("00",),
                                   "04": ("01", "02", "03"), "05": ("01",)}


class ReproduceError(RuntimeError):
    pass


class Interrupted(ReproduceError):
    """The run was stopped by a signal; ``signum`` gives the exit code 128 + signum."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class _Signalled(BaseException):
    """Raised by our handler in the main thread; a BaseException so no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Signals:
    """Turn SIGINT/SIGTERM into :class:`_Signalled` in the main thread while a run is in progress, so
    papermill's cleanup (kernel shutdown) and ours run; restored on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> "_Signals":
        self.saved: dict[int, Any] = {}
        import threading
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self.saved[s] = signal.signal(s, self._raise)
        return self

    @staticmethod
    def _raise(signum: int, _frame: Any) -> None:
        for s in _Signals.SIGNALS:   # one signal is enough: a second one must not break the cleanup
            signal.signal(s, signal.SIG_IGN)
        raise _Signalled(signum)

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.saved.items():
            signal.signal(s, handler)


def check_run_dir(run_dir: str | os.PathLike) -> Path:
    """The run folder as an absolute Path, created if missing; a clear error if it cannot be a folder."""
    path = Path(run_dir).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ReproduceError(f"--run-dir {path} is a file, not a folder; pass a folder (created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReproduceError(f"--run-dir {path} cannot be created ({e.strerror or e}); pass a folder you can write"
                             ) from e
    return path


def list_notebooks(notebook_dir: Path = NOTEBOOK_DIR, only: Sequence[str] | None = None) -> list[Path]:
    """Numbered notebooks (`NN_name.ipynb`) in order; `only` selects by number prefix ("01") or name."""
    if not notebook_dir.is_dir():
        raise ReproduceError(f"notebook folder {notebook_dir} not found; run from a paperkit checkout "
                             "(the notebooks are not part of a wheel install)")
    nbs = sorted(p for p in notebook_dir.glob("[0-9][0-9]_*.ipynb"))
    if not nbs:
        raise ReproduceError(f"no numbered notebooks (NN_name.ipynb) in {notebook_dir}")
    if only:
        wanted = [o.strip() for o in only if o.strip()]
        hit = lambda p, w: p.stem == w or p.stem[:2] == w  # noqa: E731  ("01" or "01_pta_mobilenet")
        picked = [p for p in nbs if any(hit(p, w) for w in wanted)]
        missing = [w for w in wanted if not any(hit(p, w) for p in nbs)]
        if missing:
            raise ReproduceError(f"--only {missing}: no such notebook; available: {[p.stem for p in nbs]}")
        nbs = picked
    return nbs


def declared_parameters(nb: Path) -> list[str]:
    """Names assigned in the cell tagged 'parameters' ([] if none), read without importing papermill
    (its import costs seconds, and a no-op reproduce must stay fast); papermill's own inspection is the
    fallback for a cell Python's parser does not take."""
    import ast
    try:
        cells = json.loads(Path(nb).read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError) as e:
        raise ReproduceError(f"cannot read notebook {nb}: {e}") from e
    for c in cells:
        if c.get("cell_type") == "code" and "parameters" in c.get("metadata", {}).get("tags", []):
            src = c.get("source", "")
            src = "".join(src) if isinstance(src, list) else src
            try:
                tree = ast.parse(src)
            except SyntaxError:
                import papermill as pm
                return list(pm.inspect_notebook(str(nb)))
            names: list[str] = []
            for node in tree.body:
                targets = node.targets if isinstance(node, ast.Assign) else \
                    [node.target] if isinstance(node, ast.AnnAssign) else []
                names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
            return names
    return []


def check_parameters(nb: Path, params: dict[str, Any]) -> None:
    """papermill only warns about parameters a notebook does not declare; we refuse them."""
    declared = declared_parameters(nb)
    if not declared:
        raise ReproduceError(f"{nb.name} has no cell tagged 'parameters'; tag its first code cell")
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ReproduceError(f"{nb.name} does not declare parameter(s) {unknown}; it declares {sorted(declared)}")


def run(profile: str = "default", run_dir: str | os.PathLike = "results", data_root: str = "",
        seeds: Sequence[int] | None = None, only: Sequence[str] | None = None, extra: dict[str, Any] | None = None,
        notebook_dir: Path | None = None, kernel: str = "python3", log_output: bool = True, force: bool = False,
        dag: dict[str, Sequence[str]] | None = None, jobs: int | None = 1) -> dict[str, Any]:
    """Run the notebooks of ``notebook_dir`` (default :data:`NOTEBOOK_DIR`) into ``run_dir``, holding its
    lock: only those that are stale (see the module doc) unless ``force``. ``dag`` maps a notebook number
    to the numbers it depends on (default :data:`DAG`). Raises ReproduceError (a notebook failed, bad
    arguments, run folder busy) or Interrupted.

    ``jobs`` > 1 runs notebooks whose dependencies are done side by side (None: :func:`default_jobs`), each
    kernel with ``cores // jobs`` torch threads; their latency and step-time measurements hold the machine
    for themselves (:mod:`paperkit.quiet`), so timings are taken as on an idle machine."""
    profiles.get_profile(profile)  # unknown profile: fail before any notebook runs
    jobs = default_jobs() if jobs is None else jobs
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ReproduceError(f"--jobs must be an int >= 1, got {jobs!r}")
    run_dir = check_run_dir(run_dir)
    data_root = str(Path(data_root).resolve()) if data_root else ""
    nbs = list_notebooks(Path(notebook_dir) if notebook_dir else NOTEBOOK_DIR, only)
    extra = dict(extra or {})
    plan = []
    for nb in nbs:
        params: dict[str, Any] = {"profile": profile, "data_root": data_root, "run_dir": str(run_dir),
                                  "seeds": list(seeds) if seeds else None}
        declared = set(declared_parameters(nb))
        params.update({k: v for k, v in extra.items() if k in declared})
        check_parameters(nb, params)
        plan.append((nb, params))
    orphan = sorted(k for k in extra if not any(k in p for _, p in plan))
    if orphan:
        raise ReproduceError(f"parameter(s) {orphan} are declared by none of {[n.stem for n, _ in plan]}")

    if log_output:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
        logging.getLogger("papermill").setLevel(logging.INFO)
    with RunLock(run_dir), _Signals():
        try:
            if jobs == 1:
                out = _run_plan(None, plan, run_dir, profile, seeds, data_root, kernel, log_output, force,
                                DAG if dag is None else dag)
            else:
                out = _run_parallel(plan, run_dir, profile, seeds, data_root, kernel, log_output, force,
                                    DAG if dag is None else dag, jobs)
            _refresh_readme(run_dir)
            return out
        except _Signalled as e:   # between notebooks (no notebook was mid-way)
            name = signal.Signals(e.signum).name
            raise Interrupted(f"interrupted by {name} between notebooks; the results written so far are intact; "
                              "run the same command again to finish", e.signum) from None


def _refresh_readme(run_dir: Path) -> None:
    """A run into this checkout's own results/ rewrites README.md's results block (paperkit.summary), so the
    README never quotes numbers the tables no longer hold; any other run folder leaves the README alone."""
    from . import summary
    readme = PACKAGE_DIR.parent / "README.md"
    if run_dir.resolve() != (PACKAGE_DIR.parent / "results").resolve() or not readme.is_file():
        return
    try:
        changed = summary.write_readme(readme, run_dir)
    except summary.SummaryError as e:
        print(f"README.md not updated: {e}", flush=True)
        return
    print(f"README.md results block {'rewritten from' if changed else 'already matches'} {run_dir}", flush=True)


def _run_plan(pm: Any, plan: list[tuple[Path, dict[str, Any]]], run_dir: Path, profile: str,
              seeds: Sequence[int] | None, data_root: str, kernel: str, log_output: bool, force: bool = False,
              dag: dict[str, Sequence[str]] | None = None) -> dict[str, Any]:
    timings: dict[str, float] = {}
    out_dir = run_dir / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    shared = incremental.shared_inputs(profile, data_root)
    ran: set[str] = set()
    actions: dict[str, dict[str, Any]] = {}
    stems = [nb.stem for nb, _ in plan]
    for i, (nb, params) in enumerate(plan, 1):
        out = out_dir / nb.name
        deps = incremental.dependencies(nb.stem, stems, dag if dag is not None else DAG, nb.parent)
        inputs = incremental.notebook_inputs(nb, params, shared, deps, run_dir)
        why = ["forced (--force)"] if force else incremental.stale_reasons(run_dir, nb, inputs, deps, ran)
        if not why:
            actions[nb.stem] = {"action": "reused", "why": ["inputs unchanged, outputs present"]}
            _mark(run_dir, nb.stem, actions[nb.stem])
            print(f"=== [{i}/{len(plan)}] {nb.stem}: reused (inputs unchanged, outputs present) ===", flush=True)
            continue
        print(f"\n=== [{i}/{len(plan)}] {nb.stem}  (profile={profile}, run_dir={run_dir}; runs: "
              f"{'; '.join(why)}) ===", flush=True)
        actions[nb.stem] = {"action": "ran", "why": why}
        ran.add(nb.stem)
        if pm is None:   # imported only when a notebook has to run
            import papermill as pm
        t0 = time.time()
        results.update_manifest(run_dir, nb.stem, {"status": "running", "parameters": params,
                                                   "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        try:
            pm.execute_notebook(str(nb), str(out), parameters=params, kernel_name=kernel,
                                cwd=str(nb.parent), progress_bar=False, log_output=log_output)
        except (_Signalled, KeyboardInterrupt) as e:
            signum = e.signum if isinstance(e, _Signalled) else signal.SIGINT
            raise _interrupted(run_dir, nb, profile, seeds, data_root, timings, t0, signum) from None
        except pm.PapermillExecutionError as e:
            if e.ename == "KeyboardInterrupt":   # Ctrl-C in a terminal reaches the kernel too
                raise _interrupted(run_dir, nb, profile, seeds, data_root, timings, t0, signal.SIGINT) from None
            timings[nb.stem] = round(time.time() - t0, 1)
            _finish_entry(run_dir, nb.stem, "failed")
            _write_manifest(run_dir, profile, seeds, data_root, timings, failed=nb.stem)
            raise ReproduceError(f"{nb.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                                 f"the executed notebook with the traceback is kept at {out}") from e
        timings[nb.stem] = round(time.time() - t0, 1)
        _finish_entry(run_dir, nb.stem, "unrecorded", why="it ran without calling results.record_notebook")
        # the dataset exists now (00 may just have built it): key the entry with what was actually used
        shared = incremental.shared_inputs(profile, data_root)
        _mark(run_dir, nb.stem, actions[nb.stem], incremental.notebook_inputs(nb, params, shared, deps, run_dir))
        print(f"=== {nb.stem} done in {timings[nb.stem]:.0f}s ===", flush=True)
    total = round(time.time() - t_all, 1)
    _write_manifest(run_dir, profile, seeds, data_root, timings, failed=None, actions=actions)
    reused = sorted(set(stems) - ran)
    print(f"\n{len(ran)} of {len(plan)} notebooks ran in {total / 60:.1f} min"
          + (f", {len(reused)} reused ({', '.join(reused)})" if reused else "") + f"; results in {run_dir}", flush=True)
    return {"timings": timings, "total_s": total, "ran": sorted(ran), "reused": reused, "actions": actions}


# --------------------------------------------------------------------------------------------------
# Parallel runs: independent notebooks side by side, measurements on a quiet machine
# --------------------------------------------------------------------------------------------------
def default_jobs() -> int:
    """Two notebooks at once when there are two cores or more: on 2 cores two 1-thread kernels train
    1.3-1.6x faster in total than one 2-thread kernel (small depthwise networks scale poorly over threads).
    Not three, though the DAG is three wide: measured cold on 2 cores, 3 jobs took 26.4 min against 22.9
    for 2 (three kernels and their loader workers on two cores slow every notebook, the 01 -> 05 chain most)."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def _kernel_children() -> list[int]:
    """Pids of this process's children (the notebook kernels papermill started)."""
    me, out = os.getpid(), []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me:
            out.append(int(d.name))
    return out


def _stop_kernels(sig: int = signal.SIGINT) -> None:
    for pid in _kernel_children():
        try:
            os.kill(pid, sig)
        except OSError:
            pass


class _Parallel:
    """One parallel run's state (pending, running, done, timings) and the steps of its scheduling loop."""

    def __init__(self, plan: list[tuple[Path, dict[str, Any]]], run_dir: Path, profile: str, data_root: str,
                 kernel: str, log_output: bool, force: bool, dag: dict[str, Sequence[str]], jobs: int) -> None:
        self.run_dir, self.profile, self.data_root, self.force, self.jobs = run_dir, profile, data_root, force, jobs
        self.kernel, self.log_output = kernel, log_output
        self.out_dir = run_dir / "executed"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shared = incremental.shared_inputs(profile, data_root)
        self.stems = [nb.stem for nb, _ in plan]
        self.deps_of = {nb.stem: incremental.dependencies(nb.stem, self.stems, dag, nb.parent) for nb, _ in plan}
        self.ran: set[str] = set()
        self.done: set[str] = set()
        self.actions: dict[str, dict[str, Any]] = {}
        self.timings: dict[str, float] = {}
        # longest first (the wall time each notebook took when it last ran, as the manifest recorded it): the
        # longest notebook is the critical path, so it must not wait behind short ones; plan order breaks ties
        last = {k: v.get("wall_time_s") for k, v in incremental.manifest_entries(run_dir).items()
                if isinstance(v, dict)}
        self.pending = sorted(plan, key=lambda item: -float(last.get(item[0].stem) or 0.0))
        self.running: dict[Any, tuple[Path, dict[str, Any], float]] = {}
        self.failures: list[tuple[Path, BaseException]] = []

    def execute(self, nb: Path, params: dict[str, Any]) -> None:
        import papermill as pm   # only when a notebook has to run: a no-op reproduce stays fast
        pm.execute_notebook(str(nb), str(self.out_dir / nb.name), parameters=params, kernel_name=self.kernel,
                            cwd=str(nb.parent), progress_bar=False, log_output=self.log_output)

    def _start(self, pool: Any, nb: Path, params: dict[str, Any]) -> None:
        """Reuse ``nb`` when its inputs are unchanged, else submit it to the pool."""
        deps = self.deps_of[nb.stem]
        inputs = incremental.notebook_inputs(nb, params, self.shared, deps, self.run_dir)
        why = ["forced (--force)"] if self.force else incremental.stale_reasons(self.run_dir, nb, inputs, deps,
                                                                                self.ran)
        if not why:
            self.actions[nb.stem] = {"action": "reused", "why": ["inputs unchanged, outputs present"]}
            _mark(self.run_dir, nb.stem, self.actions[nb.stem])
            self.done.add(nb.stem)
            print(f"=== {nb.stem}: reused (inputs unchanged, outputs present) ===", flush=True)
            return
        print(f"\n=== {nb.stem} starts (profile={self.profile}; runs: {'; '.join(why)}) ===", flush=True)
        self.actions[nb.stem] = {"action": "ran", "why": why}
        self.ran.add(nb.stem)
        results.update_manifest(self.run_dir, nb.stem, {"status": "running", "parameters": params,
                                                        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        self.running[pool.submit(self.execute, nb, params)] = (nb, params, time.time())

    def start_ready(self, pool: Any) -> bool:
        """Start every pending notebook whose dependencies are done, up to `jobs` running; True if any left
        the pending list (a reused one may make others ready at once)."""
        progressed = False
        for item in list(self.pending):
            if self.failures or len(self.running) >= self.jobs:
                break
            nb, params = item
            if any(d in self.stems and d not in self.done for d in self.deps_of[nb.stem]):
                continue
            self.pending.remove(item)
            progressed = True
            self._start(pool, nb, params)
        if self.failures:
            self.pending.clear()
        return progressed

    def collect(self, finished: Any) -> None:
        for fut in finished:
            nb, params, t0 = self.running.pop(fut)
            self.timings[nb.stem] = round(time.time() - t0, 1)
            err = fut.exception()
            if err is not None:
                _finish_entry(self.run_dir, nb.stem, "failed")
                self.failures.append((nb, err))
                print(f"=== {nb.stem} FAILED after {self.timings[nb.stem]:.0f}s; running notebooks finish, "
                      "no new one starts ===", flush=True)
                continue
            _finish_entry(self.run_dir, nb.stem, "unrecorded", why="it ran without calling results.record_notebook")
            self.shared = incremental.shared_inputs(self.profile, self.data_root)
            inputs = incremental.notebook_inputs(nb, params, self.shared, self.deps_of[nb.stem], self.run_dir)
            _mark(self.run_dir, nb.stem, self.actions[nb.stem], inputs)
            self.done.add(nb.stem)
            print(f"=== {nb.stem} done in {self.timings[nb.stem]:.0f}s ===", flush=True)

    def loop(self, pool: Any) -> None:
        import concurrent.futures as cf

        while self.pending or self.running:
            progressed = self.start_ready(pool)
            if not self.running:
                if self.pending and progressed:   # a reused notebook made others ready: look again
                    continue
                if self.pending:   # cannot happen with a DAG over the plan; never spin
                    raise ReproduceError(f"no notebook can start: {[nb.stem for nb, _ in self.pending]} wait on "
                                         "each other")
                break
            finished, _ = cf.wait(list(self.running), timeout=0.5, return_when=cf.FIRST_COMPLETED)
            self.collect(finished)

    def stop(self, signum: int) -> list[str]:
        """Stop every kernel of this run, also one that a notebook thread is still starting (papermill then
        raises in that thread and it ends; SIGKILL for a kernel that ignores SIGTERM); mark them interrupted."""
        import concurrent.futures as cf

        t_stop = time.time()
        while self.running and not all(f.done() for f in self.running):
            _stop_kernels(signal.SIGTERM if time.time() - t_stop < 10 else signal.SIGKILL)
            cf.wait(list(self.running), timeout=0.5)
            if time.time() - t_stop > 60:
                break
        name = signal.Signals(signum).name
        for nb, _, t0 in list(self.running.values()):
            self.timings[nb.stem] = round(time.time() - t0, 1)
            _finish_entry(self.run_dir, nb.stem, "interrupted", why=f"stopped by {name}")
        return sorted(nb.stem for nb, _, _ in self.running.values())


def _run_parallel(plan: list[tuple[Path, dict[str, Any]]], run_dir: Path, profile: str,
                  seeds: Sequence[int] | None, data_root: str, kernel: str, log_output: bool, force: bool,
                  dag: dict[str, Sequence[str]], jobs: int) -> dict[str, Any]:
    """Like :func:`_run_plan`, but a notebook starts as soon as the notebooks it depends on are done, up to
    ``jobs`` at a time, the one that took longest last time first. A failure lets the running notebooks
    finish and starts no new one; a signal stops every running kernel and marks those notebooks
    interrupted."""
    import concurrent.futures as cf

    from . import quiet

    threads = max(1, (os.cpu_count() or 1) // jobs)
    parallel = {"jobs": jobs, "threads": threads}
    saved_env = {k: os.environ.get(k) for k in (quiet.ENV, "PAPERKIT_THREADS")}
    os.environ[quiet.ENV] = str(run_dir)               # the kernels inherit both
    os.environ["PAPERKIT_THREADS"] = str(threads)
    t_all = time.time()
    st = _Parallel(plan, run_dir, profile, data_root, kernel, log_output, force, dag, jobs)
    print(f"reproduce: up to {jobs} notebooks at a time, {threads} torch thread(s) each; latency and "
          "step-time measurements wait for a quiet machine (paperkit.quiet)", flush=True)
    pool = cf.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="notebook")
    try:
        st.loop(pool)
    except (_Signalled, KeyboardInterrupt) as e:
        signum = e.signum if isinstance(e, _Signalled) else signal.SIGINT
        stopped, name = st.stop(signum), signal.Signals(signum).name
        _write_manifest(run_dir, profile, seeds, data_root, st.timings, failed=None,
                        interrupted=(",".join(stopped) or "(between notebooks)", name), actions=st.actions,
                        parallel=parallel)
        raise Interrupted(f"interrupted by {name} during {', '.join(stopped) or 'the run'}; those manifest entries "
                          "are marked 'interrupted' and the other results are intact; run the same command again "
                          "to finish", signum) from None
    finally:
        pool.shutdown(wait=True)
        for name in (quiet.GATE, quiet.WORK):   # the kernels are gone: nothing holds these any more
            (run_dir / name).unlink(missing_ok=True)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    total = round(time.time() - t_all, 1)
    failed = st.failures[0] if st.failures else None
    _write_manifest(run_dir, profile, seeds, data_root, st.timings, failed=failed[0].stem if failed else None,
                    actions=st.actions, parallel=parallel, wall_s=total)
    if failed:
        _raise_failure(*failed, st.out_dir)
    reused = sorted(set(st.stems) - st.ran)
    print(f"\n{len(st.ran)} of {len(plan)} notebooks ran in {total / 60:.1f} min wall ({jobs} at a time)"
          + (f", {len(reused)} reused ({', '.join(reused)})" if reused else "") + f"; results in {run_dir}", flush=True)
    return {"timings": st.timings, "total_s": total, "ran": sorted(st.ran), "reused": reused, "actions": st.actions}


def _raise_failure(nb: Path, err: BaseException, out_dir: Path) -> None:
    if type(err).__name__ == "PapermillExecutionError":
        raise ReproduceError(f"{nb.name} failed in cell {err.exec_count}: {err.ename}: "  # type: ignore[attr-defined]
                             f"{err.evalue}\nthe executed notebook with the traceback is kept at "  # type: ignore[attr-defined]
                             f"{out_dir / nb.name}") from err
    raise ReproduceError(f"{nb.name} failed: {type(err).__name__}: {err}") from err


# --------------------------------------------------------------------------------------------------
# Manifest bookkeeping of a run (what counts as stale is paperkit.incremental)
# --------------------------------------------------------------------------------------------------
def _mark(run_dir: Path, stem: str, action: dict[str, Any], inputs: dict[str, Any] | None = None) -> None:
    """Record in a notebook's entry what this run did with it (and, after a complete run, its inputs)."""
    entry = incremental.manifest_entries(run_dir).get(stem, {})
    entry = {**entry, "run": action}
    if inputs is not None and entry.get("status") == "complete":   # only a complete run can be reused later
        entry["inputs"] = inputs
        entry["run_id"] = uuid.uuid4().hex[:16]   # new at every run: dependants compare it
    results.update_manifest(run_dir, stem, entry)


def _interrupted(run_dir: Path, nb: Path, profile: str, seeds: Sequence[int] | None, data_root: str,
                 timings: dict[str, float], t0: float, signum: int) -> Interrupted:
    """Record where the run stopped (the kernel is already shut down by papermill) and build the error."""
    name = signal.Signals(signum).name
    timings[nb.stem] = round(time.time() - t0, 1)
    _finish_entry(run_dir, nb.stem, "interrupted", why=f"stopped by {name}")
    _write_manifest(run_dir, profile, seeds, data_root, timings, failed=None, interrupted=(nb.stem, name))
    return Interrupted(f"interrupted by {name} during {nb.stem}; its manifest entry is marked 'interrupted' "
                       f"and the other results are intact; run the same command again to finish", signum)


def _finish_entry(run_dir: Path, stem: str, status: str, why: str = "") -> None:
    """Mark a notebook's entry that is still 'running' (it never reached record_notebook) as ``status``."""
    try:
        entry = json.loads((run_dir / "manifest.json").read_text())["entries"].get(stem, {})
    except (OSError, ValueError, KeyError, TypeError):
        entry = {}
    if entry.get("status") == "running":
        results.update_manifest(run_dir, stem, {**entry, "status": status, **({"reason": why} if why else {})})
        if status == "unrecorded":
            print(f"reproduce: warning: {stem} {why}; its manifest entry lists no outputs", file=sys.stderr)


def _produced_by(run_dir: Path, actions: dict[str, dict[str, Any]], total: float,
                 parallel: dict[str, int] | None) -> dict[str, Any] | None:
    """The run that produced every notebook's outputs (its wall time and jobs, for the README header): this
    one when it ran them all, the previous one's when this one reused them all, else None (a partial rerun)."""
    ran = [k for k, v in actions.items() if v.get("action") == "ran"]
    if actions and len(ran) == len(actions):
        return {"total_wall_time_s": total, "jobs": (parallel or {}).get("jobs", 1),
                "git_revision": results.git_revision(), "notebooks": sorted(ran)}
    if actions and not ran:
        prev = incremental.manifest_entries(run_dir).get("reproduce", {})
        if isinstance(prev, dict):
            return prev.get("produced_by")
    return None


def _write_manifest(run_dir: Path, profile: str, seeds: Sequence[int] | None, data_root: str, timings: dict[str, float],
                    failed: str | None, interrupted: tuple[str, str] | None = None,
                    actions: dict[str, dict[str, Any]] | None = None, parallel: dict[str, int] | None = None,
                    wall_s: float | None = None) -> None:
    root: str | None = data_root or None
    if root is None:
        try:
            built = incremental.embedded_root(profile)
        except Exception:
            built = None
        root = str(built) if built is not None else None
    if root is None:  # the embedded dataset the notebooks used (cached by then; built if 00 never ran)
        from . import data
        try:
            root = str(data.resolve_root("", profile, profiles.get_profile(profile).data_seed))
        except Exception as e:  # the manifest must still be written when the failure was the dataset
            print(f"reproduce: could not fingerprint the dataset: {e}", file=sys.stderr)
    total = round(sum(timings.values()) if wall_s is None else wall_s, 1)
    results.update_manifest(run_dir, "reproduce", {
        "profile": profile,
        "seeds": list(profiles.resolve_seeds(profiles.get_profile(profile), seeds)),
        "data_root": data_root or "(embedded synthetic default)",
        "dataset": results.dataset_info(root), "notebook_wall_time_s": timings,
        # notebooks side by side overlap: the wall time of the whole run is then less than their sum
        "total_wall_time_s": total,
        "produced_by": _produced_by(run_dir, actions or {}, total, parallel),
        "parallel": parallel or {"jobs": 1, "threads": None}, "failed": failed,
        "status": "interrupted" if interrupted else "failed" if failed else "complete",
        "interrupted": {"notebook": interrupted[0], "signal": interrupted[1]} if interrupted else None,
        "notebooks": actions or {},
        # each notebook's wall time when it last ran (this run's, or the run whose results were reused)
        "last_run_wall_time_s": {k: v.get("wall_time_s")
                                 for k, v in sorted(incremental.manifest_entries(run_dir).items())
                                 if k in (actions or {}) and isinstance(v, dict)},
        "packages": results.package_versions(), "machine": results.machine_info(),
        "git_revision": results.git_revision(),
    })
