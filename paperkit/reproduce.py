"""Run the numbered notebooks in order through papermill: the one command that regenerates results/.

Executed copies land in `<run_dir>/executed/`; the first failure stops the chain with a non-zero exit
and keeps the failed notebook for inspection; per-notebook wall time goes to `<run_dir>/manifest.json`.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import results

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
COMMON_PARAMETERS = ("profile", "data_root", "run_dir", "seed")


class ReproduceError(RuntimeError):
    pass


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


def check_parameters(nb: Path, params: dict[str, Any]) -> None:
    """papermill only warns about parameters a notebook does not declare; we refuse them."""
    import papermill as pm
    declared = pm.inspect_notebook(str(nb))
    if not declared:
        raise ReproduceError(f"{nb.name} has no cell tagged 'parameters'; tag its first code cell")
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ReproduceError(f"{nb.name} does not declare parameter(s) {unknown}; it declares {sorted(declared)}")


def run(profile: str = "default", run_dir: str | os.PathLike = "results", data_root: str = "",
        seed: int = 0, only: Sequence[str] | None = None, extra: dict[str, Any] | None = None,
        notebook_dir: Path = NOTEBOOK_DIR, kernel: str = "python3", log_output: bool = True) -> dict[str, Any]:
    import papermill as pm
    from . import profiles
    profiles.get_profile(profile)  # unknown profile: fail before any notebook runs
    run_dir = Path(run_dir).resolve()
    data_root = str(Path(data_root).resolve()) if data_root else ""
    nbs = list_notebooks(notebook_dir, only)
    extra = dict(extra or {})
    plan = []
    for nb in nbs:
        params: dict[str, Any] = {"profile": profile, "data_root": data_root, "run_dir": str(run_dir), "seed": seed}
        declared = set(pm.inspect_notebook(str(nb)))
        params.update({k: v for k, v in extra.items() if k in declared})
        check_parameters(nb, params)
        plan.append((nb, params))
    orphan = sorted(k for k in extra if not any(k in p for _, p in plan))
    if orphan:
        raise ReproduceError(f"parameter(s) {orphan} are declared by none of {[n.stem for n, _ in plan]}")

    if log_output:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
        logging.getLogger("papermill").setLevel(logging.INFO)
    timings: dict[str, float] = {}
    out_dir = run_dir / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    for i, (nb, params) in enumerate(plan, 1):
        out = out_dir / nb.name
        print(f"\n=== [{i}/{len(plan)}] {nb.stem}  (profile={profile}, run_dir={run_dir}) ===", flush=True)
        t0 = time.time()
        try:
            pm.execute_notebook(str(nb), str(out), parameters=params, kernel_name=kernel,
                                cwd=str(nb.parent), progress_bar=False, log_output=log_output)
        except pm.PapermillExecutionError as e:
            timings[nb.stem] = round(time.time() - t0, 1)
            _write_manifest(run_dir, profile, seed, data_root, timings, failed=nb.stem)
            raise ReproduceError(f"{nb.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                                 f"the executed notebook with the traceback is kept at {out}") from e
        timings[nb.stem] = round(time.time() - t0, 1)
        print(f"=== {nb.stem} done in {timings[nb.stem]:.0f}s ===", flush=True)
    total = round(time.time() - t_all, 1)
    _write_manifest(run_dir, profile, seed, data_root, timings, failed=None)
    print(f"\nall {len(plan)} notebooks done in {total / 60:.1f} min; results in {run_dir}", flush=True)
    return {"timings": timings, "total_s": total}


def _write_manifest(run_dir: Path, profile: str, seed: int, data_root: str, timings: dict[str, float],
                    failed: str | None) -> None:
    root: str | None = data_root or None
    if root is None:  # the embedded dataset the notebooks used (cached by then; built if 00 never ran)
        from . import data
        try:
            root = str(data.resolve_root("", profile, seed))
        except Exception as e:  # the manifest must still be written when the failure was the dataset
            print(f"reproduce: could not fingerprint the dataset: {e}", file=sys.stderr)
    results.update_manifest(run_dir, "reproduce", {
        "profile": profile, "seed": seed, "data_root": data_root or "(embedded synthetic default)",
        "dataset": results.dataset_info(root), "notebook_wall_time_s": timings,
        "total_wall_time_s": round(sum(timings.values()), 1), "failed": failed,
        "packages": results.package_versions(), "git_revision": results.git_revision(),
    })
