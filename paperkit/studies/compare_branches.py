"""Notebook 05 (`05_compare_branches`): compare the branch configurations of one trained PTA model, and pick one
by latency budget.

Seed 000's point is that one trained MobileNetV2+PTA can be reconfigured at run time for the device it
runs on (speed, load, battery). `prepare` measures, for every configuration of the model notebook 01
trained, what a device would trade (`paperkit.studies.branch_reports`: active parameters, MAdds, latency
measured now, val/test quality, every configuration scored with its own BatchNorm statistics through
`paperkit.config_tree`); this module then writes the comparison table, the budget choices and the
trade-off figure. The logic is plain functions (tests drive them headlessly); `paperkit.widgets` only wires
them to ipywidgets.

Without notebook 01's checkpoint (a fresh clone), `prepare` falls back to the numbers the run in
`run_dir` recorded for this notebook (`tables/branch_comparison.csv`: all 27 configurations with
val/test metrics, recorded latency, MAdds, params) and says so: the widget, the tables and the budget
then work from the recorded numbers, nothing is measured or written, and there are no sample faces.
"""
from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import pandas as pd
from torch import nn

from paperkit import results  # results also shows matplotlib figures as PNG
from paperkit.batchnorm import training_calibration
from paperkit.config_tree import ALL_CONFIGS, REFERENCE
from paperkit.models.pta import (PTA_TRAIN_PROBS, PTAMobileNetV2, mobilenet_v2_baseline, parse_config,
                                 pta_mobilenet_v2)
from paperkit.studies.branch_reports import (LATENCY_BACKEND, SELECTION_SPLIT, BranchState,
                                             ScoreCache, best_under_budget, compare, complexity_by_config,
                                             config_report, measure_config_latency, sample_faces)
from paperkit.studies.branch_records import RECORDED_TABLE, checkpoint_profile, recorded_notice, recorded_state

__all__ = [
    "NOTEBOOK", "BUDGET_FRACTIONS", "checkpoint_path", "load_pta", "load_nopta", "prepare", "comparison_table",
    "budget_choices", "tradeoff_figure", "sample_grid_png", "save_outputs",
]

NOTEBOOK = "05_compare_branches"
#: Budgets written to the table, as fractions of the HHH latency measured in the same run (so the
#: columns mean the same thing on every machine).
BUDGET_FRACTIONS: tuple[float, ...] = (0.85, 1.0, 1.25)


# --------------------------------------------------------------------------------------------------
# Loading the models notebook 01 trained
# --------------------------------------------------------------------------------------------------
def checkpoint_path(run_dir: str | Path, profile: str, model: str = "pta", seed: int = 0) -> Path:
    """Where `paperkit.studies.pta_mobilenet.train` keeps the best weights:
    `checkpoints/01_<model>_<profile>_s<seed>/best.pt`."""
    return Path(run_dir) / "checkpoints" / f"01_{model}_{profile}_s{int(seed)}" / "best.pt"


def _missing(path: Path, profile: str, run_dir: str | Path, what: str, seed: int = 0) -> FileNotFoundError:
    return FileNotFoundError(
        f"no trained {what} at {path}: notebook 05 compares the configurations of the model notebook 01 "
        f"trains (seed {seed}). Run notebook 01 first with the same profile, run_dir and seeds, e.g. "
        f"`paperkit reproduce --profile {profile} --run-dir {run_dir} --only 01`")


def load_pta(run_dir: str | Path, profile: Any = "default", seed: int = 0) -> PTAMobileNetV2:
    """The PTA MobileNetV2 notebook 01 trained with `seed` (best validation epoch), in eval mode, configured HHH.

    Loaded with `paperkit.train.load_weights` (weights_only=True, architecture checked). A missing
    checkpoint is an error that says to run notebook 01. Its BatchNorm statistics are those it was
    validated with (HHH, recalibrated); `prepare` re-estimates them per configuration.
    """
    from paperkit.train import load_weights

    name = checkpoint_profile(profile)
    path = checkpoint_path(run_dir, name, "pta", seed)
    if not path.is_file():
        raise _missing(path, name, run_dir, "PTA model", seed)
    model = pta_mobilenet_v2(num_classes=2)
    load_weights(model, path)
    return model.eval().configure("HHH")  # type: ignore[return-value]


def load_nopta(run_dir: str | Path, profile: Any = "default", required: bool = False,
               seed: int = 0) -> nn.Module | None:
    """The No-PTA reference of notebook 01, or None (with a printed note) when it was not trained."""
    from paperkit.train import load_weights

    name = checkpoint_profile(profile)
    path = checkpoint_path(run_dir, name, "nopta", seed)
    if not path.is_file():
        if required:
            raise _missing(path, name, run_dir, "No-PTA model", seed)
        print(f"note: no No-PTA checkpoint at {path}; the reference row is left out")
        return None
    model = mobilenet_v2_baseline(num_classes=2)
    load_weights(model, path)
    return model.eval()


# --------------------------------------------------------------------------------------------------
# Notebook 05's state: live from 01's checkpoint, or recorded
# --------------------------------------------------------------------------------------------------
def prepare(profile: Any = "default", data_root: str = "", run_dir: str | Path = "../results",
            seeds: Any = None, overrides: Mapping[str, Any] | None = None, configs: Sequence[str] = ALL_CONFIGS,
            n_samples: int = 8, progress: bool = True, recalibrate: bool = True, fallback: bool = True
            ) -> BranchState:
    """Load 01's PTA model (and No-PTA reference) of the first of `seeds`, re-estimate BatchNorm
    statistics per configuration on clean training crops, score every configuration on val and test
    once, count params/MAdds, measure latency now, and build a report per configuration.

    Without 01's checkpoint (a fresh clone) and with `fallback`, the state comes from what this notebook
    recorded in `run_dir` (`recorded_state`), and the first thing printed says so, which run it was and
    how to retrain; with neither, a FileNotFoundError says to run notebook 01.

    `recalibrate=False` scores every configuration with the statistics the checkpoint holds (what the
    paper's evaluation does with the shared running averages), for comparison only.
    """
    from paperkit.profiles import resolve, resolve_seeds
    from paperkit.studies.common import open_data

    started = time.time()
    prof = resolve(profile, overrides)   # the one place the notebook's profile parameters become a Profile
    seed = resolve_seeds(prof, seeds)[0]
    params = {"profile": prof.name, "data_root": data_root or "", "run_dir": str(run_dir), "seeds": seeds,
              **({"overrides": dict(overrides)} if overrides else {})}
    ckpt = checkpoint_path(run_dir, checkpoint_profile(prof), "pta", seed)
    if fallback and not ckpt.is_file():
        try:
            st = recorded_state(run_dir, prof.name, seed)
        except (FileNotFoundError, ValueError) as e:
            raise FileNotFoundError(f"{_missing(ckpt, prof.name, run_dir, 'PTA model', seed)}; and no recorded "
                                    f"numbers to show instead: {e}") from None
        st.started = started
        st.parameters = params
        print(recorded_notice(st, ckpt), flush=True)
        return st
    model = load_pta(run_dir, prof, seed)  # fail fast, before building any data
    ref = load_nopta(run_dir, prof, seed=seed)
    d = open_data(prof, data_root)
    configs = [c for c in dict.fromkeys("".join(parse_config(c)) for c in configs)]
    m = _measure(model, ref, d.loaders, prof, configs, recalibrate, n_samples, d.dataset)
    if progress:
        _print_measured(m, prof, seed, d.dataset, configs, ref is not None)
    _check_table3(m.reports, run_dir, seed, m.cache.bn_mode)
    return BranchState(model=model, reports=m.reports, samples=m.samples, dataset=d.dataset, root=Path(d.root),
                       run_dir=Path(run_dir), profile=prof, seeds=(seed,), started=started,
                       bn=m.cache.bn_mode, timings=m.timings, parameters=params)


class _Measured(NamedTuple):
    reports: dict[str, dict[str, Any]]
    samples: Any
    timings: dict[str, float]
    cache: ScoreCache
    calib: Any
    rounds: int
    iters: int


def _measure(model: PTAMobileNetV2, ref: nn.Module | None, loaders: Mapping[str, Any], prof: Any,
             configs: list[str], recalibrate: bool, n_samples: int, dataset: str) -> _Measured:
    """Score every configuration on val and test once (BatchNorm per configuration), count params/MAdds,
    time them now, and build one report per configuration."""
    t0 = time.time()
    calib = training_calibration(loaders, prof) if recalibrate else None
    cache = ScoreCache({k: loaders[k] for k in ("val", "test")}, calib=calib)
    cache.fill(model, configs, reference=ref)
    t1 = time.time()
    cost = complexity_by_config(model, configs, prof.input_size, reference=ref)
    t2 = time.time()
    rounds, iters = min(3, prof.latency_rounds), min(10, prof.latency_iters)
    lat = measure_config_latency(model, configs, prof.input_size, reference=ref, rounds=rounds, iters=iters)
    t3 = time.time()
    samples = sample_faces(loaders["test"].dataset, n_samples, prof.data_seed)
    reports = {c: config_report(model, c, cache, samples, latency_ms=lat[c], cost=cost[c],
                                input_size=prof.input_size, dataset=dataset)
               for c in ([REFERENCE] if ref is not None else []) + configs}
    timings = {"scores_s": t1 - t0, "bn_calibration_s": cache.bn.seconds if cache.bn is not None else 0.0,
               "complexity_s": t2 - t1, "latency_s": t3 - t2}
    return _Measured(reports, samples, timings, cache, calib, rounds, iters)


def _print_measured(m: _Measured, prof: Any, seed: int, dataset: str, configs: list[str], has_ref: bool) -> None:
    t = m.timings
    print(f"profile {prof.name}; seed {seed}; dataset: {dataset}; {len(configs)} configurations"
          f"{' + No-PTA reference' if has_ref else ''}; val {len(m.cache.labels['val'])} / "
          f"test {len(m.cache.labels['test'])} images; input {prof.input_size}px")
    bn_note = (f"BatchNorm re-estimated per configuration on {m.calib.n_images} clean training crops in "
               f"{t['bn_calibration_s']:.1f}s (one staged walk of the configuration tree)"
               if m.calib is not None else "BatchNorm: the checkpoint's statistics (not recalibrated)")
    print(f"{bn_note}; scores {t['scores_s']:.1f}s in total (one data pass per split), params/MAdds "
          f"{t['complexity_s']:.1f}s, latency {t['latency_s']:.1f}s ({m.rounds} interleaved rounds x {m.iters}, "
          f"{LATENCY_BACKEND})")


def _check_table3(reports: Mapping[str, Mapping[str, Any]], run_dir: str | Path, seed: int = 0,
                  bn: str = "recalibrated") -> float | None:
    """Our test ACER should match notebook 01's Table 3 (same model, same test split, same BatchNorm
    statistics, threshold 0.5); say if not."""
    t3 = results.read_table(run_dir, "table3_quality")
    if t3 is None or "config" not in t3:
        return None
    from paperkit.studies.pta_mobilenet import table3_rows
    t3 = table3_rows(t3, seed, bn)
    diffs = [abs(float(r["acer"]) - float(reports[c]["acer"])) for c, r in t3.set_index("config").iterrows()
             if c in reports]
    worst = max(diffs, default=0.0)
    if worst > 0.01:
        print(f"warning: test ACER differs from notebook 01's table3_quality ({bn} BN) by up to {worst:.3f} "
              "points (scores on the 0.5 threshold can flip with float rounding; larger gaps mean another model)")
    return worst


# --------------------------------------------------------------------------------------------------
# Tables and figures for the notebook
# --------------------------------------------------------------------------------------------------
def _budget_tag(fraction: float) -> str:
    return f"{int(round(fraction * 100))}pct_hhh"


def budget_choices(state: BranchState, fractions: Sequence[float] = BUDGET_FRACTIONS) -> pd.DataFrame:
    """The configuration each budget picks, budgets as fractions of HHH's latency measured in this run."""
    hhh = float(state.reports["HHH"]["latency_ms"])
    rows = []
    for f in list(fractions) + [0.0]:
        budget = hhh * f if f > 0 else min(float(r["latency_ms"]) for r in state.reports.values()) * 0.5
        pick = best_under_budget(state.reports, budget, machine=state.machine)
        r = state.reports.get(pick.config or "", {})
        rows.append({"budget": _budget_tag(f) if f > 0 else "half_fastest", "budget_ms": budget,
                     "chosen": pick.config or "none", "latency_ms": r.get("latency_ms", math.nan),
                     "val_acer": r.get("val_acer", math.nan), "acer": r.get("acer", math.nan),
                     "selection_split": SELECTION_SPLIT, "reason": pick.reason, "dataset": state.dataset})
    return pd.DataFrame(rows)


def comparison_table(state: BranchState, fractions: Sequence[float] = BUDGET_FRACTIONS) -> pd.DataFrame:
    """`tables/branch_comparison.csv`: every configuration (No-PTA reference first) with its cost,
    latency measured now, test metrics, validation ACER, and fits/chosen flags for a few budgets."""
    order = ([REFERENCE] if REFERENCE in state.reports else []) + state.configs
    df = compare(state.reports, order)
    hhh = float(state.reports["HHH"]["latency_ms"])
    for f in fractions:
        tag = _budget_tag(f)
        pick = best_under_budget(state.reports, hhh * f, machine=state.machine)
        df[f"fits_{tag}"] = (df["latency_ms"] <= hhh * f) & (df["config"] != REFERENCE)
        df[f"chosen_{tag}"] = df["config"] == pick.config
    df["rel_latency_hhh"] = df["latency_ms"] / hhh
    df["selection_split"] = SELECTION_SPLIT
    df["definition"] = ("ISO/IEC 30107-3 (attack = positive), threshold 0.5; rates in percent; apcer pooled "
                        "over attack types; PTA rows scored with BatchNorm statistics of the `bn` column")
    return df


def tradeoff_figure(state: BranchState) -> Any:
    """Latency (measured now) vs test ACER of every configuration, labelled; the paper's six, the
    trained five and the No-PTA reference marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5))
    ax = fig.subplots()
    groups = [("trained (Table 2)", "o", "tab:blue"), ("untrained mix", "^", "tab:gray"),
              ("Both branches", "s", "tab:orange")]
    for name, marker, color in groups:
        rs = [r for c, r in state.reports.items() if c != REFERENCE and _group(c) == name]
        if rs:
            ax.scatter([r["latency_ms"] for r in rs], [r["acer"] for r in rs], marker=marker, color=color,
                       label=name, s=[60 if r["paper_config"] else 25 for r in rs], alpha=0.85)
    if REFERENCE in state.reports:
        r = state.reports[REFERENCE]
        ax.scatter([r["latency_ms"]], [r["acer"]], marker="*", s=160, color="tab:red", label="No-PTA (reference)")
    for c, r in state.reports.items():
        bold = r["paper_config"] or c == REFERENCE
        ax.annotate(c, (r["latency_ms"], r["acer"]), xytext=(3, 3), textcoords="offset points",
                    fontsize=8 if bold else 6, fontweight="bold" if bold else "normal")
    when = (f"recorded (run {state.provenance.get('git_revision', '?')}), not measured here" if state.recorded
            else "measured now")
    ax.set_xlabel(f"latency (ms), {LATENCY_BACKEND}, {when}")
    ax.set_ylabel("test ACER (%)")
    ax.set_title(f"PTA configurations: latency vs test ACER (large markers: the paper's six)\n{state.dataset}",
                 fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return fig


def _group(config: str) -> str:
    if "B" in config:
        return "Both branches"
    return "trained (Table 2)" if config in PTA_TRAIN_PROBS else "untrained mix"


def save_outputs(state: BranchState, run_dir: str | Path, table: pd.DataFrame, choices: pd.DataFrame,
                 figure: Any) -> list[Path]:
    """Write `tables/branch_comparison.csv`, `tables/branch_budget_choice.csv` and
    `figures/branch_tradeoff.png` (live path). On the recorded path nothing is written: the recorded
    files stay as the run left them (a fresh clone stays clean), and an empty list is returned."""
    if state.recorded:
        print(f"recorded run: nothing written; {Path(run_dir) / 'tables'} keeps the recorded tables")
        return []
    written = [results.write_table(run_dir, RECORDED_TABLE, table),
               results.write_table(run_dir, "branch_budget_choice", choices),
               results.save_figure(run_dir, "branch_tradeoff", figure)]
    state.outputs.extend(written)   # what common.record(state) lists in the manifest
    return written


def sample_grid_png(state: BranchState, configs: Sequence[str] | None = None) -> bytes:
    """PNG of the sample faces, each titled with its true label and the spoof score per shown configuration."""
    from matplotlib.figure import Figure

    configs = list(configs) if configs is not None else state.shown()
    samples = state.samples
    if samples is None or not samples.indices:
        fig = Figure(figsize=(3, 1))
        fig.text(0.5, 0.5, "no sample faces (recorded run: they need notebook 01's checkpoint)"
                 if state.recorded else "no sample faces", ha="center")
    else:
        n = len(samples.indices)
        cols = min(n, 4)
        rows = math.ceil(n / cols)
        fig = Figure(figsize=(2.1 * cols, 2.3 * rows + 0.1 * len(configs)))
        axes = fig.subplots(rows, cols, squeeze=False)
        for k, ax in enumerate(axes.ravel()):
            ax.axis("off")
            if k >= n:
                continue
            ax.imshow(samples.crops[k])
            truth = "attack" if samples.labels[k] else "bona fide"
            lines = [truth]
            ok_all = True
            for c in configs:
                s = state.reports[c]["samples"][k]
                ok_all &= s["correct"]
                lines.append(f"{c}: {s['score']:.2f} {'ok' if s['correct'] else 'WRONG'}")
            ax.set_title("\n".join(lines), fontsize=7, color="tab:green" if ok_all else "tab:red")
        fig.suptitle("P(attack) per configuration (threshold 0.5)", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return buf.getvalue()

