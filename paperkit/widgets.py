"""Notebook 05: compare the branch configurations of one trained PTA model, and pick one by latency budget.

Seed 000's point is that one trained MobileNetV2+PTA can be reconfigured at run time for the device it
runs on (speed, load, battery). This module measures, for every configuration of the model notebook 01
trained, what a device would trade: active parameters, MAdds (paper convention), batch-1 latency measured
now on this machine, and test quality; and it picks the most accurate configuration that fits a latency
budget. The logic is plain functions (tests drive them headlessly); `build_widget` only wires them to
ipywidgets.

Choosing vs reporting: a configuration is *chosen* by its validation ACER (the subject-disjoint val split
of the training data) and *reported* with its test metrics, so the choice never peeks at the test set.

BatchNorm: every configuration is evaluated with its own BatchNorm statistics, re-estimated on clean
training crops (`paperkit.batchnorm`; the running averages training leaves behind mix the sampled
configurations). The statistics of the layers in PTA block d and the plain layers after it depend only
on the modes of blocks 0..d (their inputs do), so they are estimated once per node of the configuration
tree (`staged_bn_states`) and loaded node by node during the staged scoring below.

Speed: every configuration's scores are computed once per split and cached. The layers before the first
PTA block are the same in every configuration, so each image goes through them once; the PTA blocks are
then evaluated as a tree (3 + 9 + 27 block runs instead of 27 x 3), for the calibration crops as for the
val/test images. A check against a plain `model(x)` (with that configuration's full statistics loaded)
guards this against any change of the model's forward.

Without notebook 01's checkpoint (a fresh clone), `prepare` falls back to the numbers the run in
`run_dir` recorded for this notebook (`tables/branch_comparison.csv`: all 27 configurations with
val/test metrics, recorded latency, MAdds, params) and says so: the widget, the tables and the budget
then work from the recorded numbers, nothing is measured or written, and there are no sample faces.
"""
from __future__ import annotations

import copy
import functools
import io
import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from paperkit import quiet
from paperkit import complexity, metrics, results  # results also shows matplotlib figures as PNG
from paperkit.batchnorm import (CALIBRATION_IMAGES, CalibrationSet, bn_buffers, bn_layers, fold_bn,
                                load_bn_buffers, training_calibration)
from paperkit.models.pta import (CONFIGS, MODES, PTA_TRAIN_PROBS, PTABlock, PTAMobileNetV2,
                                 mobilenet_v2_baseline, parse_config, pta_mobilenet_v2)
from paperkit.papers import SEED000_TABLES_3_4

__all__ = [
    "NOTEBOOK", "ALL_CONFIGS", "PAPER_CONFIGS", "REFERENCE", "MODE_NAMES", "SELECTION_SPLIT",
    "BUDGET_FRACTIONS", "RECORDED_TABLE", "checkpoint_path", "load_pta", "recorded_state", "save_outputs",
    "record_notebook", "load_nopta", "ScoreCache", "SampleFaces",
    "sample_faces", "StagedBN", "staged_bn_states", "staged_scores", "calibration_set", "complexity_by_config",
    "measure_config_latency", "config_report",
    "compare", "Pick", "best_under_budget", "BranchState", "prepare", "comparison_table",
    "budget_choices", "tradeoff_figure", "sample_grid_png", "BranchUI", "build_widget",
]

NOTEBOOK = "05_compare_branches"
#: The six configurations seed 000 reports (Tables 3 and 4).
PAPER_CONFIGS: tuple[str, ...] = CONFIGS
#: Every configuration of three PTA blocks, each Heavy / Light / Both: 27, the paper's six first.
ALL_CONFIGS: tuple[str, ...] = PAPER_CONFIGS + tuple(
    c for c in ("".join(p) for p in itertools.product(MODES, repeat=3)) if c not in PAPER_CONFIGS)
#: The No-PTA MobileNetV2 of notebook 01: another model, shown as a reference row, never chosen.
REFERENCE = "NoPTA"
MODE_NAMES: dict[str, str] = {"H": "Heavy", "L": "Light", "B": "Both"}
#: Split used to choose a configuration; the test split is only reported.
SELECTION_SPLIT = "val"
#: Budgets written to the table, as fractions of the HHH latency measured in the same run (so the
#: columns mean the same thing on every machine).
BUDGET_FRACTIONS: tuple[float, ...] = (0.85, 1.0, 1.25)
LATENCY_BACKEND = "torch eager, 1 thread, batch 1, channels_last"
METRIC_KEYS: tuple[str, ...] = ("accuracy", "apcer", "bpcer", "acer")
#: The table notebook 05 writes and, without 01's checkpoint, reads back (`tables/<name>.csv`).
RECORDED_TABLE = "branch_comparison"
#: Columns a recorded table must hold for the widget to work from it.
RECORDED_COLUMNS: tuple[str, ...] = ("config", "params_m", "madds_m", "latency_ms", *METRIC_KEYS, "val_acer")
#: Columns `comparison_table` derives (budget flags etc.): recomputed, never read back.
_DERIVED_PREFIXES: tuple[str, ...] = ("fits_", "chosen_")
_DERIVED_COLUMNS: tuple[str, ...] = ("rel_latency_hhh", "selection_split", "definition")


# --------------------------------------------------------------------------------------------------
# Loading the models notebook 01 trained
# --------------------------------------------------------------------------------------------------
def checkpoint_path(run_dir: str | Path, profile: str, model: str = "pta", seed: int = 0) -> Path:
    """Where `paperkit.studies.pta.train` keeps the best weights: `checkpoints/01_<model>_<profile>_s<seed>/best.pt`."""
    return Path(run_dir) / "checkpoints" / f"01_{model}_{profile}_s{int(seed)}" / "best.pt"


def _missing(path: Path, profile: str, run_dir: str | Path, what: str, seed: int = 0) -> FileNotFoundError:
    return FileNotFoundError(
        f"no trained {what} at {path}: notebook 05 compares the configurations of the model notebook 01 "
        f"trains (seed {seed}). Run notebook 01 first with the same profile, run_dir and seeds, e.g. "
        f"`paperkit reproduce --profile {profile} --run-dir {run_dir} --only 01`")


def _profile_name(profile: Any) -> str:
    return profile if isinstance(profile, str) else str(profile.name)


def load_pta(run_dir: str | Path, profile: Any = "default", seed: int = 0) -> PTAMobileNetV2:
    """The PTA MobileNetV2 notebook 01 trained with `seed` (best validation epoch), in eval mode, configured HHH.

    Loaded with `paperkit.train.load_weights` (weights_only=True, architecture checked). A missing
    checkpoint is an error that says to run notebook 01. Its BatchNorm statistics are those it was
    validated with (HHH, recalibrated); `prepare` re-estimates them per configuration.
    """
    from paperkit.train import load_weights

    name = _profile_name(profile)
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

    name = _profile_name(profile)
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


def recorded_state(run_dir: str | Path, profile: Any = "default", seed: int | None = None) -> BranchState:
    """A `BranchState` built from what notebook 05 recorded in `run_dir` (no model, no data, no timing).

    Reads `tables/branch_comparison.csv` (one row per configuration, the No-PTA reference optional) and,
    for provenance, the notebook's entry in `manifest.json`. The table must hold all 27 configurations
    and the columns of `RECORDED_COLUMNS`; it must come from the same profile (and seed, when given)
    as asked for. Raises FileNotFoundError when there is no such table, ValueError when it is unusable.
    """
    import json

    name = _profile_name(profile)
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
    manifest: dict[str, Any] = {}
    mpath = Path(run_dir) / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    entries = manifest.get("entries", {}) if isinstance(manifest, dict) else {}
    entry = entries.get(NOTEBOOK, {}) if isinstance(entries, dict) else {}
    entry = entry if isinstance(entry, dict) else {}
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
    reports: dict[str, dict[str, Any]] = {}
    # the 27 in the table's order (other rows, e.g. from a later model, are not this widget's)
    order = ([REFERENCE] if REFERENCE in configs else []) + [c for c in configs if c in ALL_CONFIGS]
    rows = {str(r["config"]): r for r in table.to_dict("records")}
    for c in order:
        row = {k: _plain(v) for k, v in rows[c].items()
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
        reports[c] = row
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
                       root=None, run_dir=Path(run_dir), profile=name,
                       seed=rec_seed if rec_seed is not None else int(seed or 0), bn=bn,
                       source="recorded", provenance=provenance)


def _recorded_notice(state: BranchState, checkpoint: Path) -> str:
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


def calibration_set(loaders: Mapping[str, Any], profile: Any) -> CalibrationSet:
    """The clean training crops notebook 01 recalibrates with (`paperkit.batchnorm.training_calibration`)."""
    return training_calibration(loaders, profile)


# --------------------------------------------------------------------------------------------------
# Scores of every configuration, computed once
# --------------------------------------------------------------------------------------------------
def _stages(model: PTAMobileNetV2) -> tuple[nn.Module, list[PTABlock], list[nn.Module]]:
    """Split `features` into the shared prefix, the PTA blocks, and the plain layers after each block."""
    feats = list(model.features)
    idx = [i for i, m in enumerate(feats) if isinstance(m, PTABlock)]
    if not idx:
        raise TypeError("model has no PTA blocks; pass a PTAMobileNetV2")
    ends = idx[1:] + [len(feats)]
    tails: list[nn.Module] = [nn.Sequential(*feats[i + 1:e]) for i, e in zip(idx, ends)]
    return nn.Sequential(*feats[:idx[0]]), [feats[i] for i in idx], tails


def _head(model: PTAMobileNetV2, h: Tensor) -> Tensor:
    """What `PTAMobileNetV2._forward_impl` does after `features`."""
    h = nn.functional.adaptive_avg_pool2d(h, (1, 1))
    return model.classifier(torch.flatten(h, 1))


def _spoof(logits: Tensor) -> np.ndarray:
    return torch.softmax(logits.float(), dim=1)[:, 1].numpy()


@dataclass
class StagedBN:
    """BatchNorm statistics of the configuration tree: `prefix` (layers before the first PTA block, the
    same for every configuration) and one entry per tree node, e.g. "L", "LH", "LHB": the statistics of
    PTA block d's active branch(es) and of the plain layers after it, given the modes of blocks 0..d."""

    prefix: dict[str, Tensor]
    nodes: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    n_images: int = 0
    seconds: float = 0.0

    def covers(self, config: str) -> bool:
        return all(config[:d] in self.nodes for d in range(1, len(config) + 1))

    def full(self, config: str) -> dict[str, Tensor]:
        """Every statistic `config` uses, as `recalibrate_bn(model.configure(config), calib)` would set them."""
        out = dict(self.prefix)
        for d in range(1, len(config) + 1):
            out.update(self.nodes[config[:d]])
        return out


def _names(model: nn.Module) -> dict[int, str]:
    return {id(m): n for n, m in model.named_modules()}


def _node_buffers(model: nn.Module, modules: Sequence[nn.Module], names: Mapping[int, str]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for mod in modules:
        for sub in mod.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                base = names[id(sub)]
                for b in ("running_mean", "running_var", "num_batches_tracked"):
                    out[f"{base}.{b}"] = getattr(sub, b).detach().clone()
    return out


def _reset(modules: Sequence[nn.Module]) -> None:
    for mod in modules:
        for sub in mod.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                sub.reset_running_stats()


@torch.no_grad()
def staged_bn_states(model: PTAMobileNetV2, calib: Iterable[Any], configs: Sequence[str] = ALL_CONFIGS,
                     max_images: int = CALIBRATION_IMAGES, existing: StagedBN | None = None) -> StagedBN:
    """Re-estimate BatchNorm statistics for every configuration in `configs` on the calibration crops,
    walking the configuration tree depth first (the prefix once, then 3 + 9 + 27 block runs for all 27).

    Gives, per configuration, exactly what `paperkit.batchnorm.recalibrate_bn` computes for it (same
    crops, same batches, cumulative average); tests check that. The model is left as it was. `existing`
    is extended with the nodes it lacks.
    """
    t0 = time.perf_counter()
    configs = tuple(dict.fromkeys("".join(parse_config(c)) for c in configs))
    prefix, blocks, tails = _stages(model)
    names = _names(model)
    n_blocks = len(blocks)
    wanted = {c[:d] for c in configs for d in range(1, n_blocks + 1)}
    if existing is not None:
        wanted -= set(existing.nodes)
    layers = bn_layers(model)
    saved_bn, saved_cfg = bn_buffers(model), model.config
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in layers.values()}
    nodes: dict[str, dict[str, Tensor]] = {}
    try:
        model.eval()
        for m in layers.values():
            m.momentum = None
            m.train()
        _reset([prefix])
        acts0: list[Tensor] = []
        n = 0
        for batch in calib:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = x[: max_images - n]
            if len(x) < 2:
                break
            acts0.append(prefix(x))
            n += len(x)
            if n >= max_images:
                break
        if not acts0:
            raise ValueError("staged_bn_states got no calibration batch of >= 2 images")
        prefix_state = _node_buffers(model, [prefix], names)

        def visit(path: str, parent: list[Tensor]) -> None:
            d = len(path) - 1
            blocks[d].mode = path[-1]
            mods = [*blocks[d].active_branches(), tails[d]]
            _reset(mods)
            acts = [tails[d](blocks[d](a)) for a in parent]
            nodes[path] = _node_buffers(model, mods, names)
            for m in MODES:
                if path + m in wanted or any(w.startswith(path + m) for w in wanted):
                    visit(path + m, acts)

        for m in MODES:
            if any(w.startswith(m) for w in wanted):
                visit(m, acts0)
    finally:
        for m, mom in momenta.items():
            m.momentum = mom
        for m, was in modes.items():
            m.training = was
        load_bn_buffers(model, saved_bn)
        model.configure(saved_cfg)
    seconds = time.perf_counter() - t0
    if existing is not None:
        existing.nodes.update(nodes)
        existing.seconds += seconds
        return existing
    return StagedBN(prefix=prefix_state, nodes=nodes, n_images=n, seconds=seconds)


@torch.inference_mode()
def staged_scores(model: PTAMobileNetV2, loader: Iterable[Any], configs: Sequence[str] = ALL_CONFIGS,
                  reference: nn.Module | None = None, check: bool = True, bn: StagedBN | None = None
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """P(spoof) of every configuration in `configs` for every sample of `loader`, in loader order.

    One pass over the data: the shared prefix runs once per image, the PTA blocks as a tree. With `bn`
    (from `staged_bn_states`) each tree node runs with its own BatchNorm statistics, i.e. every
    configuration with the statistics re-estimated for it; without, with the model's current ones.
    When `reference` (the No-PTA model) is given its scores come from the same pass under `REFERENCE`.
    `check` compares the staged scores of two configurations on the first batch with a plain
    `model(x)` (that configuration's full statistics loaded) and raises if they differ.
    """
    configs = tuple(dict.fromkeys("".join(parse_config(c)) for c in configs))
    if not configs:
        raise ValueError("no configurations to score")
    if bn is not None:
        lacking = [c for c in configs if not bn.covers(c)]
        if lacking:
            raise KeyError(f"no BatchNorm statistics for {lacking}; run staged_bn_states for them first")
    saved, was_training = model.config, model.training
    saved_bn = bn_buffers(model) if bn is not None else None
    model.eval()
    if reference is not None:
        reference.eval()
    prefix, blocks, tails = _stages(model)
    n_blocks = len(blocks)
    wanted = {c[:d] for c in configs for d in range(1, n_blocks + 1)}
    out: dict[str, list[np.ndarray]] = {c: [] for c in configs}
    if reference is not None:
        out[REFERENCE] = []
    labels: list[np.ndarray] = []
    first: Tensor | None = None
    try:
        # every tree node as an inference copy with its own statistics folded into the convolutions
        # (paperkit.batchnorm.fold_bn): built once, so a batch costs no buffer swaps and no BN passes
        if bn is not None:
            load_bn_buffers(model, bn.prefix)
        run_prefix = fold_bn(prefix)[0]
        run_ref = fold_bn(reference)[0] if reference is not None else None
        run_node: dict[str, nn.Module] = {}
        for path in sorted(wanted, key=len):
            depth = len(path) - 1
            blocks[depth].mode = path[-1]
            if bn is not None:
                load_bn_buffers(model, bn.nodes[path])
            run_node[path] = fold_bn(nn.Sequential(blocks[depth], tails[depth]))[0]
        for batch in loader:
            x, y = batch[0], batch[1]
            quiet.checkpoint()
            if first is None:
                first = x[:4].clone()
            labels.append(np.asarray(y))
            if run_ref is not None:
                out[REFERENCE].append(_spoof(run_ref(x)))
            acts: dict[str, Tensor] = {"": run_prefix(x)}
            for depth in range(n_blocks):
                for path in sorted(p for p in wanted if len(p) == depth + 1):
                    acts[path] = run_node[path](acts[path[:-1]])
            for c in configs:
                out[c].append(_spoof(_head(model, acts[c])))
        if first is None:
            raise ValueError("the evaluation loader is empty: no images in this split")
        if check:
            for c in {configs[0], configs[-1]}:
                if bn is not None:
                    load_bn_buffers(model, bn.full(c))
                direct = _spoof(model.configure(c)(first))
                staged = out[c][0][:len(direct)]
                if not np.allclose(direct, staged, atol=1e-4):
                    raise RuntimeError(
                        f"staged evaluation of {c} differs from model(x) by {np.abs(direct - staged).max():.2e}; "
                        "PTAMobileNetV2's forward changed: update paperkit.widgets._stages/_head")
    finally:
        if saved_bn is not None:
            load_bn_buffers(model, saved_bn)
        model.configure(saved)
        model.train(was_training)
    return {k: np.concatenate(v) for k, v in out.items()}, np.concatenate(labels)


@dataclass
class ScoreCache:
    """Scores per (split, config) and labels per split; each configuration is evaluated once per split.

    Filled by `fill` (all configurations in one pass) or lazily by `scores` for a single one. With
    `calib` (clean training crops, `calibration_set`), every configuration is scored with BatchNorm
    statistics re-estimated for it (`bn`, grown as configurations are asked for); without, with the
    model's own statistics (the paper-literal shared ones).
    """

    loaders: Mapping[str, Any]
    calib: Any = None
    scores_by: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    passes: int = 0  # data passes so far (tests check that a cached configuration costs none)
    bn: StagedBN | None = None
    calibrations: int = 0  # staged calibration walks so far

    @property
    def bn_mode(self) -> str:
        return "recalibrated" if self.calib is not None else "shared"

    def _ensure_bn(self, model: PTAMobileNetV2, configs: Sequence[str]) -> StagedBN | None:
        if self.calib is None:
            return None
        lacking = [c for c in configs if self.bn is None or not self.bn.covers(c)]
        if lacking:
            self.bn = staged_bn_states(model, self.calib, lacking, existing=self.bn)
            self.calibrations += 1
        return self.bn

    def fill(self, model: PTAMobileNetV2, configs: Sequence[str] = ALL_CONFIGS,
             reference: nn.Module | None = None, splits: Sequence[str] = ("val", "test")) -> "ScoreCache":
        configs = [c for c in dict.fromkeys("".join(parse_config(c)) for c in configs)]
        for split in splits:
            todo = [c for c in configs if (split, c) not in self.scores_by]
            ref = reference if reference is not None and (split, REFERENCE) not in self.scores_by else None
            if not todo and ref is None:
                continue
            run = todo or configs[:1]
            got, y = staged_scores(model, self.loaders[split], run, reference=ref, bn=self._ensure_bn(model, run))
            self.passes += 1
            self.labels[split] = y
            for k, v in got.items():
                self.scores_by.setdefault((split, k), v)
        return self

    def has(self, split: str, config: str) -> bool:
        return (split, config) in self.scores_by

    def scores(self, model: PTAMobileNetV2, split: str, config: str) -> tuple[np.ndarray, np.ndarray]:
        """Scores and labels of one PTA configuration on one split (computed now if not cached)."""
        config = config if config == REFERENCE else "".join(parse_config(config))
        if not self.has(split, config):
            if config == REFERENCE:
                raise KeyError(f"no {REFERENCE} scores cached for {split}; fill(..., reference=model) first")
            self.fill(model, [config], splits=(split,))
        return self.scores_by[(split, config)], self.labels[split]

    def metrics(self, model: PTAMobileNetV2, split: str, config: str) -> dict[str, float]:
        """ISO/IEC 30107-3 metrics in percent (accuracy, APCER, BPCER, ACER, EER; AUC as a fraction)."""
        s, y = self.scores(model, split, config)
        return metrics.as_percent(metrics.evaluate(s, y))


# --------------------------------------------------------------------------------------------------
# Sample faces
# --------------------------------------------------------------------------------------------------
@dataclass
class SampleFaces:
    """A few test faces to show: indices into the test split (= positions in its cached scores)."""

    indices: list[int]
    crops: list[np.ndarray]  # RGB uint8, as the model sees them before normalisation
    labels: list[int]
    paths: list[str]


def sample_faces(dataset: Any, n: int = 8, seed: int = 0) -> SampleFaces:
    """`n` test faces, half bona fide and half attack when the split has both, chosen reproducibly.

    `dataset` is a `paperkit.data.FaceDataset` (its `.samples` and `load_crop` are used).
    """
    labels = np.asarray([int(s.label) for s in dataset.samples])
    rng = np.random.default_rng(seed)
    live, spoof = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    k_spoof = min(len(spoof), max(n // 2, n - len(live)))  # fill up with attacks when bona fide run short
    k_live = min(len(live), n - k_spoof)
    picked = sorted(rng.choice(live, k_live, replace=False).tolist()
                    + rng.choice(spoof, k_spoof, replace=False).tolist())
    return SampleFaces(indices=[int(i) for i in picked], crops=[dataset.load_crop(i) for i in picked],
                       labels=[int(labels[i]) for i in picked], paths=[dataset.samples[i].path for i in picked])


# --------------------------------------------------------------------------------------------------
# Complexity and latency
# --------------------------------------------------------------------------------------------------
def complexity_by_config(model: PTAMobileNetV2, configs: Sequence[str] = ALL_CONFIGS, input_size: int = 128,
                         reference: nn.Module | None = None) -> dict[str, dict[str, float]]:
    """Active params (M) and MAdds (M, seed 000's convention via `paperkit.complexity`) per configuration.

    Why not trace all 27: a PTA block's cost does not depend on the other blocks' modes (every branch
    keeps the shape), so MAdds(config) = MAdds(HHH) + sum of per-block deltas. We trace HHH and the 6
    one-block variants, add up the rest, and check the sum against a direct trace of LLL and BBB.
    """
    saved = model.config
    try:
        n = len(model.pta_blocks)
        base_cfg = "H" * n
        base = _traced_madds(model, input_size, base_cfg)
        delta = {(i, m): (_traced_madds(model, input_size, base_cfg[:i] + m + base_cfg[i + 1:]) - base
                          if m != "H" else 0.0) for i in range(n) for m in MODES}
        out: dict[str, dict[str, float]] = {}
        for cfg in configs:
            cfg = "".join(parse_config(cfg, n))
            model.configure(cfg)
            out[cfg] = {"params_m": complexity.active_params(model) / 1e6,
                        "madds_m": base + sum(delta[(i, m)] for i, m in enumerate(cfg))}
        for cfg in ("L" * n, "B" * n):
            direct = _traced_madds(model, input_size, cfg)
            summed = base + sum(delta[(i, m)] for i, m in enumerate(cfg))
            if abs(direct - summed) > 1e-6:
                raise RuntimeError(f"MAdds of {cfg} are not additive over PTA blocks ({direct} vs {summed})")
    finally:
        model.configure(saved)
    if reference is not None:
        out[REFERENCE] = {"params_m": complexity.active_params(reference) / 1e6,
                          "madds_m": complexity.madds(reference, input_size)}
    return out


def _traced_madds(model: PTAMobileNetV2, input_size: int, config: str) -> float:
    return complexity.madds(model.configure(config), input_size)


def _run_config(model: PTAMobileNetV2, config: str, x: Tensor) -> Tensor:
    """One timed inference: switching the branch flags is part of it (it costs microseconds)."""
    with torch.inference_mode():
        return model.configure(config)(x)


def _run_plain(model: nn.Module, x: Tensor) -> Tensor:
    with torch.inference_mode():
        return model(x)


@quiet.timing("configuration latency (notebook 05)")
def measure_config_latency(model: PTAMobileNetV2, configs: Sequence[str] = ALL_CONFIGS, input_size: int = 128,
                           reference: nn.Module | None = None, rounds: int = 3, iters: int = 10,
                           threads: int = 1) -> dict[str, float]:
    """Median batch-1 latency (ms) of each configuration on this machine, now, torch eager, 1 thread.

    One copy of the model serves every configuration (27 copies would cost ~0.4 GB); the rounds are
    interleaved by `paperkit.complexity.measure_latency`, so load drift hits every configuration alike.
    Kept short on purpose (3 rounds x 10 iterations): it runs inside a notebook on a shared machine.
    """
    m = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)
    cands: dict[str, Any] = {c: functools.partial(_run_config, m, "".join(parse_config(c)), x) for c in configs}
    if reference is not None:
        ref = copy.deepcopy(reference).eval().to(memory_format=torch.channels_last)
        cands[REFERENCE] = functools.partial(_run_plain, ref, x)
    df = complexity.measure_latency(cands, rounds=rounds, iters=iters, warmup=2, input_size=input_size,
                                    threads=threads)
    return {str(r.candidate): float(r.median_ms) for r in df.itertuples()}


# --------------------------------------------------------------------------------------------------
# Reports, comparison, budget
# --------------------------------------------------------------------------------------------------
def config_report(model: PTAMobileNetV2, config: str, cache: ScoreCache, samples: SampleFaces | None = None,
                  *, latency_ms: float | None = None, cost: Mapping[str, float] | None = None,
                  input_size: int = 128, dataset: str = "") -> dict[str, Any]:
    """Everything the widget shows for one configuration (rates in percent).

    `latency_ms` and `cost` (params_m, madds_m) are measured now when not given; test and validation
    scores come from `cache` (evaluated once per configuration). `config` may be `REFERENCE` for the
    No-PTA row (its scores must be in the cache and its latency/cost given).
    """
    is_ref = config == REFERENCE
    cfg = REFERENCE if is_ref else "".join(parse_config(config))
    if cost is None:
        if is_ref:
            raise ValueError("the No-PTA reference row needs its cost passed in (complexity_by_config)")
        saved = model.config
        model.configure(cfg)
        cost = {"params_m": complexity.active_params(model) / 1e6, "madds_m": complexity.madds(model, input_size)}
        model.configure(saved)
    if latency_ms is None:
        if is_ref:
            raise ValueError("the No-PTA reference row needs its latency passed in (measure_config_latency)")
        latency_ms = measure_config_latency(model, [cfg], input_size)[cfg]
    test = cache.metrics(model, "test", cfg)
    val = cache.metrics(model, "val", cfg) if "val" in cache.loaders or cache.has("val", cfg) else {}
    paper = SEED000_TABLES_3_4.get(cfg, {})
    report: dict[str, Any] = {
        "config": cfg, "model": "MobileNetV2 (No-PTA)" if is_ref else "MobileNetV2+PTA",
        "blocks": "reference model" if is_ref else " / ".join(MODE_NAMES[m] for m in cfg),
        "bn": "n/a" if is_ref else cache.bn_mode,
        "dataset": dataset, "params_m": float(cost["params_m"]), "madds_m": float(cost["madds_m"]),
        "input_size": int(input_size), "latency_ms": float(latency_ms), "latency_backend": LATENCY_BACKEND,
        **{k: float(test[k]) for k in METRIC_KEYS}, "auc": float(test["auc"]),
        "val_accuracy": float(val.get("accuracy", math.nan)), "val_acer": float(val.get("acer", math.nan)),
        "n_test": int(len(cache.labels["test"])), "n_val": int(len(cache.labels.get("val", []))),
        "trained_config": bool(is_ref or cfg in PTA_TRAIN_PROBS), "paper_config": cfg in SEED000_TABLES_3_4,
        "paper_acer": float(paper.get("acer", math.nan)), "paper_madds_m": float(paper.get("madds_m", math.nan)),
        "samples": [],
    }
    if samples is not None:
        s, _ = cache.scores(model, "test", cfg)
        report["samples"] = [
            {"path": p, "label": int(lab), "score": float(s[i]), "pred": int(s[i] >= 0.5),
             "correct": bool(int(s[i] >= 0.5) == lab)}
            for i, lab, p in zip(samples.indices, samples.labels, samples.paths)]
    return report


def compare(reports: Mapping[str, Mapping[str, Any]], configs: Sequence[str] | None = None) -> pd.DataFrame:
    """Side-by-side table of the given configurations (default: all reports), one row each."""
    keys = list(reports) if configs is None else [c if c == REFERENCE else "".join(parse_config(c)) for c in configs]
    unknown = [k for k in keys if k not in reports]
    if unknown:
        raise KeyError(f"no report for {unknown}; available: {sorted(reports)}")
    rows = [{k: v for k, v in reports[c].items() if k != "samples"} for c in keys]
    return pd.DataFrame(rows)


class Pick(NamedTuple):
    """The configuration a budget selects (None when nothing fits) and why, in words."""

    config: str | None
    reason: str


def _rank_key(r: Mapping[str, Any], by: str) -> tuple[float, float, float, str]:
    v = float(r.get(by, math.nan))
    return (math.inf if math.isnan(v) else v, float(r["latency_ms"]), float(r["madds_m"]), str(r["config"]))


def best_under_budget(reports: Mapping[str, Mapping[str, Any]], budget_ms: float, by: str = "val_acer",
                      include_reference: bool = False, machine: str = "on this machine") -> Pick:
    """The most accurate PTA configuration whose measured latency fits `budget_ms` on this machine.

    Most accurate = lowest `by` (validation ACER: choosing on the test split would overfit the report);
    ties go to the faster, then the cheaper configuration. The No-PTA reference is another model, so it
    is not a candidate unless `include_reference`. Returns Pick(None, reason) when nothing fits.
    """
    if not math.isfinite(budget_ms) or budget_ms <= 0:
        return Pick(None, f"budget {budget_ms} ms is not a positive latency")
    pool = [r for k, r in reports.items() if include_reference or k != REFERENCE]
    if not pool:
        return Pick(None, "no configurations to choose from")
    fits = [r for r in pool if float(r["latency_ms"]) <= budget_ms]
    if not fits:
        fastest = min(pool, key=lambda r: float(r["latency_ms"]))
        return Pick(None, f"no configuration fits {budget_ms:.2f} ms {machine}: the fastest, "
                          f"{fastest['config']}, takes {float(fastest['latency_ms']):.2f} ms")
    best = min(fits, key=lambda r: _rank_key(r, by))
    score = float(best.get(by, math.nan))
    split = "validation" if by.startswith("val_") else "test"
    why = (f"{best['config']}: lowest {split} {by.replace('val_', '').upper()} "
           f"({score:.2f}%) of the {len(fits)}/{len(pool)} configurations within {budget_ms:.2f} ms "
           f"(it takes {float(best['latency_ms']):.2f} ms; test ACER {float(best['acer']):.2f}%)")
    if math.isnan(score):
        why = (f"{best['config']}: {split} {by} is undefined (a class is missing from that split), so the "
               f"fastest of the {len(fits)} fitting configurations was taken")
    return Pick(str(best["config"]), why)


# --------------------------------------------------------------------------------------------------
# The state a notebook builds once
# --------------------------------------------------------------------------------------------------
@dataclass
class BranchState:
    """One trained PTA model, its reports per configuration, sample faces, and the UI selection.

    `source` is "live" (scored and timed now from 01's checkpoint) or "recorded" (read back from the
    run's `tables/branch_comparison.csv` by `recorded_state`: no model, no samples, `provenance` says
    which run)."""

    model: PTAMobileNetV2 | None
    reports: dict[str, dict[str, Any]]
    samples: SampleFaces | None = None
    dataset: str = ""
    root: Path | None = None
    run_dir: Path | None = None
    profile: str = "default"
    seed: int = 0
    started: float = field(default_factory=time.time)
    bn: str = "recalibrated"  # BatchNorm statistics the reports were scored with ("recalibrated" | "shared")
    timings: dict[str, float] = field(default_factory=dict)
    current: str = "HHH"
    pinned: str | None = None
    budget_ms: float | None = None
    outputs: list[Path] = field(default_factory=list)
    source: str = "live"
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def recorded(self) -> bool:
        return self.source == "recorded"

    @property
    def machine(self) -> str:
        """Where the latencies were measured, in words."""
        return "on the recorded run's machine" if self.recorded else "on this machine"

    @property
    def configs(self) -> list[str]:
        """PTA configurations with a report (the reference excluded)."""
        return [k for k in self.reports if k != REFERENCE]

    def select(self, config: str) -> str:
        cfg = "".join(parse_config(config))
        if cfg not in self.reports:
            raise KeyError(f"no report for {cfg}; available: {self.configs}")
        self.current = cfg
        return cfg

    def pin(self, config: str | None = None) -> str:
        """Pin `config` (default: the current one) for side-by-side comparison."""
        self.pinned = self.current if config is None else "".join(parse_config(config))
        return self.pinned

    def unpin(self) -> None:
        self.pinned = None

    def shown(self) -> list[str]:
        """Configurations on screen: the current one, then the pinned one if different."""
        return [self.current] + ([self.pinned] if self.pinned and self.pinned != self.current else [])

    def apply_budget(self, budget_ms: float) -> Pick:
        """Select the best configuration within `budget_ms` (the selection stays when nothing fits)."""
        self.budget_ms = float(budget_ms)
        pick = best_under_budget(self.reports, budget_ms, machine=self.machine)
        if pick.config is not None:
            self.current = pick.config
        return pick


def prepare(profile: Any = "default", data_root: str = "", run_dir: str | Path = "../results",
            seeds: Any = None, configs: Sequence[str] = ALL_CONFIGS, n_samples: int = 8,
            progress: bool = True, recalibrate: bool = True, fallback: bool = True) -> BranchState:
    """Load 01's PTA model (and No-PTA reference) of the first of `seeds`, re-estimate BatchNorm
    statistics per configuration on clean training crops, score every configuration on val and test
    once, count params/MAdds, measure latency now, and build a report per configuration.

    Without 01's checkpoint (a fresh clone) and with `fallback`, the state comes from what this notebook
    recorded in `run_dir` (`recorded_state`), and the first thing printed says so, which run it was and
    how to retrain; with neither, a FileNotFoundError says to run notebook 01.

    `recalibrate=False` scores every configuration with the statistics the checkpoint holds (what the
    paper's evaluation does with the shared running averages), for comparison only.
    """
    from paperkit.profiles import get_profile, resolve_seeds
    from paperkit.studies.common import open_data

    started = time.time()
    prof = get_profile(profile)
    seed = resolve_seeds(prof, seeds)[0]
    ckpt = checkpoint_path(run_dir, prof.name, "pta", seed)
    if fallback and not ckpt.is_file():
        try:
            st = recorded_state(run_dir, prof.name, seed)
        except (FileNotFoundError, ValueError) as e:
            raise FileNotFoundError(f"{_missing(ckpt, prof.name, run_dir, 'PTA model', seed)}; and no recorded "
                                    f"numbers to show instead: {e}") from None
        st.started = started
        print(_recorded_notice(st, ckpt), flush=True)
        return st
    model = load_pta(run_dir, prof.name, seed)  # fail fast, before building any data
    ref = load_nopta(run_dir, prof.name, seed=seed)
    d = open_data(prof, data_root)
    root, loaders, dataset = d.root, d.loaders, d.dataset
    configs = [c for c in dict.fromkeys("".join(parse_config(c)) for c in configs)]
    t0 = time.time()
    calib = calibration_set(loaders, prof) if recalibrate else None
    cache = ScoreCache({k: loaders[k] for k in ("val", "test")}, calib=calib)
    cache.fill(model, configs, reference=ref)
    t1 = time.time()
    cost = complexity_by_config(model, configs, prof.input_size, reference=ref)
    t2 = time.time()
    rounds, iters = min(3, prof.latency_rounds), min(10, prof.latency_iters)
    lat = measure_config_latency(model, configs, prof.input_size, reference=ref, rounds=rounds, iters=iters)
    t3 = time.time()
    samples = sample_faces(loaders["test"].dataset, n_samples, prof.data_seed)
    reports: dict[str, dict[str, Any]] = {}
    for c in ([REFERENCE] if ref is not None else []) + configs:
        reports[c] = config_report(model, c, cache, samples, latency_ms=lat[c], cost=cost[c],
                                   input_size=prof.input_size, dataset=dataset)
    timings = {"scores_s": t1 - t0, "bn_calibration_s": cache.bn.seconds if cache.bn is not None else 0.0,
               "complexity_s": t2 - t1, "latency_s": t3 - t2}
    if progress:
        print(f"profile {prof.name}; seed {seed}; dataset: {dataset}; {len(configs)} configurations"
              f"{' + No-PTA reference' if ref is not None else ''}; val {len(cache.labels['val'])} / "
              f"test {len(cache.labels['test'])} images; input {prof.input_size}px")
        bn_note = (f"BatchNorm re-estimated per configuration on {calib.n_images} clean training crops in "
                   f"{timings['bn_calibration_s']:.1f}s (one staged walk of the configuration tree)"
                   if calib is not None else "BatchNorm: the checkpoint's statistics (not recalibrated)")
        print(f"{bn_note}; scores {t1 - t0:.1f}s in total (one data pass per split), params/MAdds "
              f"{t2 - t1:.1f}s, latency {t3 - t2:.1f}s ({rounds} interleaved rounds x {iters}, {LATENCY_BACKEND})")
    _check_table3(reports, run_dir, seed, cache.bn_mode)
    return BranchState(model=model, reports=reports, samples=samples, dataset=dataset, root=Path(root),
                       run_dir=Path(run_dir), profile=prof.name, seed=seed, started=started,
                       bn=cache.bn_mode, timings=timings)


def _check_table3(reports: Mapping[str, Mapping[str, Any]], run_dir: str | Path, seed: int = 0,
                  bn: str = "recalibrated") -> float | None:
    """Our test ACER should match notebook 01's Table 3 (same model, same test split, same BatchNorm
    statistics, threshold 0.5); say if not."""
    t3 = results.read_table(run_dir, "table3_quality")
    if t3 is None or "config" not in t3:
        return None
    from paperkit.studies.pta import table3_rows
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
    return [results.write_table(run_dir, RECORDED_TABLE, table),
            results.write_table(run_dir, "branch_budget_choice", choices),
            results.save_figure(run_dir, "branch_tradeoff", figure)]


def record_notebook(state: BranchState, run_dir: str | Path, params: Mapping[str, Any],
                    outputs: Sequence[Path]) -> Path | None:
    """This notebook's manifest entry through `paperkit.results.record_notebook` (live path). On the
    recorded path the manifest keeps the recorded run's entry (it vouches for the files shown) and None
    is returned."""
    if state.recorded:
        print(f"recorded run: {Path(run_dir) / 'manifest.json'} keeps the entry of the run shown "
              f"(git {state.provenance.get('git_revision', '?')})")
        return None
    return results.record_notebook(run_dir, NOTEBOOK, dict(params), state.root, state.started, outputs)


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


# --------------------------------------------------------------------------------------------------
# The widget: wiring only
# --------------------------------------------------------------------------------------------------
@dataclass
class BranchUI:
    """The widgets of `build_widget`, kept addressable so tests (and users) can drive them."""

    state: BranchState
    root: Any
    toggles: list[Any]
    pin_button: Any
    unpin_button: Any
    budget: Any
    budget_label: Any
    table: Any
    grid: Any
    _syncing: bool = False
    note: Any = None  # what is missing on the recorded path (sample faces), None when live
    log: Any = None  # ipywidgets.Output: a callback's traceback shows here, in the notebook (not a hidden log)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.root._repr_mimebundle_(**kwargs)

    @property
    def config(self) -> str:
        return "".join(t.value for t in self.toggles)

    def refresh(self) -> None:
        """Redraw the comparison table and the face grid for the shown configurations."""
        shown = self.state.shown()
        df = compare(self.state.reports, shown + ([REFERENCE] if REFERENCE in self.state.reports else []))
        cols = ["config", "blocks", "params_m", "madds_m", "latency_ms", *METRIC_KEYS, "val_acer"]
        self.table.value = (f"<b>shown: {', '.join(shown)}</b>"
                            + (f" (pinned: {self.state.pinned})" if self.state.pinned else "")
                            + df[cols].to_html(index=False, float_format=lambda v: f"{v:.2f}",
                                               classes="paperkit-shown"))
        if self.state.samples is not None or not self.state.recorded:
            self.grid.value = sample_grid_png(self.state, shown)

    def set_config(self, config: str) -> None:
        """Move the toggles to `config` and redraw once."""
        cfg = self.state.select(config)
        self._syncing = True
        try:
            for t, m in zip(self.toggles, cfg):
                t.value = m
        finally:
            self._syncing = False
        self.refresh()

    def _shown_errors(self) -> Any:
        """Context for a callback: in a kernel, an exception is shown as a traceback in `log` (inside the
        widget) instead of going to JupyterLab's log console; without one (tests) it propagates."""
        import contextlib

        return self.log if self.log is not None else contextlib.nullcontext()

    def on_toggle(self, _change: Any = None) -> None:
        if self._syncing:
            return
        with self._shown_errors():
            self.state.select(self.config)
            self.refresh()

    def on_pin(self, _button: Any = None) -> None:
        with self._shown_errors():
            self.state.pin()
            self.refresh()

    def on_unpin(self, _button: Any = None) -> None:
        with self._shown_errors():
            self.state.unpin()
            self.refresh()

    def on_budget(self, change: Any = None) -> None:
        with self._shown_errors():
            value = float(change["new"]) if isinstance(change, Mapping) else float(self.budget.value)
            pick = self.state.apply_budget(value)
            self.budget_label.value = f"<i>budget {value:.2f} ms: {pick.reason}</i>"
            if pick.config is not None:
                self.set_config(pick.config)


def build_widget(state: BranchState) -> BranchUI:
    """ToggleButtons per PTA block (Heavy / Light / Both), Pin / Unpin, a latency-budget slider, and an
    output area (comparison table + sample faces). Works without a browser (papermill, tests)."""
    import ipywidgets as w

    n = len(state.model.pta_blocks) if state.model is not None else len(state.current)
    options = [(MODE_NAMES[m], m) for m in MODES]
    toggles = [w.ToggleButtons(options=options, value=state.current[i], description=f"PTA block {i + 1}",
                               style={"button_width": "70px"}) for i in range(n)]
    lat = [float(r["latency_ms"]) for c, r in state.reports.items() if c != REFERENCE]
    lo, hi = min(lat), max(lat)
    span = max(hi - lo, 0.05 * hi, 1e-3)
    budget = w.FloatSlider(value=round(hi + 0.05 * span, 3), min=round(max(lo - 0.25 * span, 0.0), 3),
                           max=round(hi + 0.25 * span, 3), step=round(span / 100, 4) or 1e-3,
                           description="budget (ms)", continuous_update=False, readout_format=".2f",
                           style={"description_width": "initial"}, layout=w.Layout(width="520px"))
    ui = BranchUI(state=state, root=None, toggles=toggles,
                  pin_button=w.Button(description="Pin", tooltip="keep this configuration for comparison"),
                  unpin_button=w.Button(description="Unpin"), budget=budget,
                  budget_label=w.HTML("<i>move the budget to pick the most accurate (validation ACER) "
                                      f"configuration that fits {state.machine}</i>"),
                  table=w.HTML(), grid=w.Image(format="png"), log=w.Output())
    for t in toggles:
        t.observe(ui.on_toggle, names="value")
    ui.pin_button.on_click(ui.on_pin)
    ui.unpin_button.on_click(ui.on_unpin)
    budget.observe(ui.on_budget, names="value")
    if state.recorded:
        p = state.provenance
        where = (f"<b>recorded</b> in run {p.get('git_revision', '?')} of {p.get('run_dir', '?')} "
                 f"({LATENCY_BACKEND}), <b>not measured on this machine</b>")
        ui.note = w.HTML("<i>recorded run: no sample faces (they need notebook 01's checkpoint); "
                         "retrain with notebook 01 or <code>paperkit reproduce --only 01,05</code> for live "
                         "latencies and sample faces</i>")
        ui.note.add_class("paperkit-note")
        ui.grid.layout.display = "none"
    else:
        where = f"{LATENCY_BACKEND}, measured on this machine"
    header = w.HTML(f"<b>MobileNetV2+PTA branch configurations</b> ({state.dataset}); latency: {where}")
    for widget, cls in [(header, "paperkit-header"), (ui.pin_button, "paperkit-pin"),
                        (ui.unpin_button, "paperkit-unpin"), (budget, "paperkit-budget"),
                        (ui.budget_label, "paperkit-budget-label"), (ui.table, "paperkit-table"),
                        (ui.grid, "paperkit-grid"), (ui.log, "paperkit-log"),
                        *[(t, f"paperkit-block-{i + 1}") for i, t in enumerate(toggles)]]:
        widget.add_class(cls)
    ui.root = w.VBox([header, *toggles, w.HBox([ui.pin_button, ui.unpin_button]), budget, ui.budget_label,
                      ui.log, ui.table, *([ui.note] if ui.note is not None else []), ui.grid])
    ui.root.add_class("paperkit-branches")
    ui.refresh()
    return ui
