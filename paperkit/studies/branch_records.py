"""What notebook 05 recorded, read back: without notebook 01's checkpoint (a fresh clone), the widget,
the tables and the budget work from `tables/branch_comparison.csv` (all 27 configurations with val/test
metrics, recorded latency, MAdds, params), and the notice says which run they come from and how to retrain.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from paperkit.config_tree import ALL_CONFIGS, REFERENCE
from paperkit.models.pta import PTA_TRAIN_PROBS
from paperkit.papers import SEED000_TABLES_3_4
from paperkit.profiles import Profile
from paperkit.studies.branch_reports import LATENCY_BACKEND, METRIC_KEYS, MODE_NAMES, BranchState

NOTEBOOK = "05_compare_branches"


def checkpoint_profile(profile: Any) -> str:
    """A profile as checkpoint folders spell it (`profiles.run_name`: overridden profiles apart)."""
    from paperkit.profiles import run_name
    return profile if isinstance(profile, str) else run_name(profile)

#: The table notebook 05 writes and, without 01's checkpoint, reads back (`tables/<name>.csv`).
RECORDED_TABLE = "branch_comparison"
#: Columns a recorded table must hold for the widget to work from it.
RECORDED_COLUMNS: tuple[str, ...] = ("config", "params_m", "madds_m", "latency_ms", *METRIC_KEYS, "val_acer")
#: Columns `comparison_table` derives (budget flags etc.): recomputed, never read back.
_DERIVED_PREFIXES: tuple[str, ...] = ("fits_", "chosen_")
_DERIVED_COLUMNS: tuple[str, ...] = ("rel_latency_hhh", "selection_split", "definition")


# --------------------------------------------------------------------------------------------------
# Without 01's checkpoint: the numbers the run recorded
# --------------------------------------------------------------------------------------------------
def _retrain_hint(run_dir: str | Path, profile: str) -> str:
    return (f"run notebook 01 first, e.g. `paperkit reproduce --profile {profile} "
            f"--run-dir {Path(run_dir).resolve()} --only 01,05`")


def _plain(v: Any) -> Any:
    """A CSV cell as a plain Python value (numpy scalars out, NaN kept as float)."""
    if isinstance(v, np.generic):
        return v.item()
    return v


def _recorded_seed(table: pd.DataFrame, entry: Mapping[str, Any]) -> int | None:
    if "seed" in table.columns and table["seed"].notna().any():
        return int(table["seed"].dropna().iloc[0])
    params = entry.get("parameters", {}) if isinstance(entry, Mapping) else {}
    if params.get("seed") is not None:
        return int(params["seed"])
    seeds = params.get("seeds")
    if isinstance(seeds, (list, tuple)) and seeds:
        return int(seeds[0])
    if isinstance(seeds, (int, str)) and str(seeds).strip().lstrip("-").isdigit():
        return int(seeds)
    return None


def _recorded_table(run_dir: str | Path, name: str) -> tuple[Path, pd.DataFrame, list[str]]:
    """`tables/branch_comparison.csv`, its path and its configurations, refused unless notebook 05 wrote it."""
    path = Path(run_dir) / "tables" / f"{RECORDED_TABLE}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no recorded comparison at {path}")
    table = pd.read_csv(path)
    lacking = [c for c in RECORDED_COLUMNS if c not in table.columns]
    if lacking:
        raise ValueError(f"{path} lacks column(s) {lacking}: it was not written by notebook 05; "
                         f"{_retrain_hint(run_dir, name)}")
    configs = [str(c) for c in table["config"]]
    absent = [c for c in ALL_CONFIGS if c not in configs]
    if absent or len(set(configs)) != len(configs):
        raise ValueError(f"{path} must hold each of the 27 configurations once (absent: {absent}); "
                         f"{_retrain_hint(run_dir, name)}")
    return path, table, configs


def _recorded_manifest(run_dir: str | Path) -> tuple[Path, Any, Any, dict[str, Any]]:
    """`manifest.json`'s path, content, entries and notebook 05's entry ({} where absent or unreadable)."""
    import json

    manifest: dict[str, Any] = {}
    mpath = Path(run_dir) / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    entries = manifest.get("entries", {}) if isinstance(manifest, dict) else {}
    entry = entries.get(NOTEBOOK, {}) if isinstance(entries, dict) else {}
    entry = entry if isinstance(entry, dict) else {}
    return mpath, manifest, entries, entry


def _recorded_report(record: Mapping[str, Any], c: str, path: Path, run_dir: str | Path, name: str,
                     bn_recorded: bool) -> dict[str, Any]:
    """One recorded table row as the report `config_report` would have built (derived columns dropped)."""
    row = {k: _plain(v) for k, v in record.items()
           if k not in _DERIVED_COLUMNS and not k.startswith(_DERIVED_PREFIXES)}
    row["config"] = c
    for k in RECORDED_COLUMNS[1:]:
        row[k] = float(row[k])
    if not math.isfinite(row["latency_ms"]) or row["latency_ms"] <= 0:
        raise ValueError(f"{path}: {c} has no recorded latency ({row['latency_ms']}); "
                         f"{_retrain_hint(run_dir, name)}")
    is_ref = c == REFERENCE
    row.setdefault("blocks", "reference model" if is_ref else " / ".join(MODE_NAMES[m] for m in c))
    if not bn_recorded or not isinstance(row.get("bn"), str):
        row["bn"] = "n/a" if is_ref else "shared"
    row.setdefault("latency_backend", LATENCY_BACKEND)
    row.setdefault("dataset", "")
    row.setdefault("paper_config", c in SEED000_TABLES_3_4)
    row.setdefault("trained_config", bool(is_ref or c in PTA_TRAIN_PROBS))
    row["samples"] = []
    return row


def _as_profile(profile: Any) -> Profile:
    """The Profile a recorded state describes: the one given, or the named one."""
    from paperkit.profiles import get_profile
    return profile if isinstance(profile, Profile) else get_profile(str(profile))


def recorded_state(run_dir: str | Path, profile: Any = "default", seed: int | None = None) -> BranchState:
    """A `BranchState` built from what notebook 05 recorded in `run_dir` (no model, no data, no timing).

    Reads `tables/branch_comparison.csv` (one row per configuration, the No-PTA reference optional) and,
    for provenance, the notebook's entry in `manifest.json`. The table must hold all 27 configurations
    and the columns of `RECORDED_COLUMNS`; it must come from the same profile (and seed, when given)
    as asked for. Raises FileNotFoundError when there is no such table, ValueError when it is unusable.
    """
    name = checkpoint_profile(profile)
    path, table, configs = _recorded_table(run_dir, name)
    mpath, manifest, entries, entry = _recorded_manifest(run_dir)
    if entry.get("status") == "running":  # `paperkit reproduce` marks the notebook it is running so
        raise ValueError(f"{mpath} says {NOTEBOOK} is being rerun (by `paperkit reproduce`): a reproduction "
                         "scores the model it trained, so include notebook 01 in the same run (--only 01,05)")
    rec_profile = (entry.get("parameters") or {}).get("profile")
    if rec_profile is not None and str(rec_profile) != name:
        raise ValueError(f"{path} was recorded with profile {rec_profile!r}, not {name!r}; "
                         f"{_retrain_hint(run_dir, name)}")
    rec_seed = _recorded_seed(table, entry)
    if seed is not None and rec_seed is not None and int(seed) != rec_seed:
        raise ValueError(f"{path} was recorded with seed {rec_seed}, not {seed}; {_retrain_hint(run_dir, name)}")
    bn_recorded = "bn" in table.columns
    # the 27 in the table's order (other rows, e.g. from a later model, are not this widget's)
    order = ([REFERENCE] if REFERENCE in configs else []) + [c for c in configs if c in ALL_CONFIGS]
    rows = {str(r["config"]): r for r in table.to_dict("records")}
    reports = {c: _recorded_report(rows[c], c, path, run_dir, name, bn_recorded) for c in order}
    datasets = sorted({str(r["dataset"]) for r in reports.values() if str(r["dataset"]) not in ("", "nan")})
    prior = entries.get("01_pta_mobilenet", {}) if isinstance(entries, dict) else {}
    provenance = {
        "table": str(path), "run_dir": str(Path(run_dir).resolve()), "profile": name, "seed": rec_seed,
        "git_revision": str(entry.get("git_revision", "unknown")), "status": str(entry.get("status", "unknown")),
        "manifest_updated": str(manifest.get("updated", "unknown")) if isinstance(manifest, dict) else "unknown",
        "python": str((entry.get("packages") or {}).get("python", "unknown")),
        "torch": str((entry.get("packages") or {}).get("torch", "unknown")),
        "bn_recorded": bn_recorded,
        "train_wall_time_s": prior.get("wall_time_s") if isinstance(prior, dict) else None,
        "latency_backend": str(reports["HHH"].get("latency_backend", LATENCY_BACKEND)),
    }
    bn = str(reports["HHH"]["bn"])
    return BranchState(model=None, reports=reports, samples=None, dataset="; ".join(datasets) or "unknown dataset",
                       root=None, run_dir=Path(run_dir), profile=_as_profile(profile),
                       seeds=(rec_seed if rec_seed is not None else int(seed or 0),), bn=bn,
                       source="recorded", provenance=provenance)


def recorded_notice(state: BranchState, checkpoint: Path) -> str:
    """The first thing notebook 05 prints on the recorded path: which run, what that means, how to go live."""
    p = state.provenance
    n_pta = len(state.configs)
    ref = " + No-PTA reference" if REFERENCE in state.reports else ""
    bn = (f"BatchNorm: {state.bn}" if p.get("bn_recorded") else
          "BatchNorm: shared (the checkpoint's statistics; this table predates per-configuration recalibration)")
    took = p.get("train_wall_time_s")
    took_s = f" (it took {float(took) / 60:.0f} min in that run)" if isinstance(took, (int, float)) else ""
    return "\n".join([
        f"RECORDED RUN, not a live one: notebook 01's checkpoint {checkpoint} is not here, so this notebook "
        "shows what the run in run_dir recorded for it and retrains, rescores and measures nothing.",
        f"  run: {p['run_dir']} (profile {p['profile']}, seed {p['seed'] if p['seed'] is not None else 'unknown'}, "
        f"git {p['git_revision']}, manifest updated {p['manifest_updated']}, torch {p['torch']}); "
        f"table: {p['table']}; dataset: {state.dataset}; {n_pta} configurations{ref}",
        f"  latencies are the RECORDED ones ({p['latency_backend']}, measured on the machine of that run), "
        "not measured on this machine; val/test metrics are the recorded ones; " + bn,
        "  sample-face previews are absent (they need the model); nothing is written to run_dir",
        f"  for live scores, latencies and sample faces: {_retrain_hint(p['run_dir'], p['profile'])}{took_s}, "
        "or run notebook 01 with the same parameters, then rerun this notebook",
    ])
