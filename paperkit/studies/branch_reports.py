"""Notebook 05's reports: what one trained PTA model offers in each configuration, and how a budget picks one.

A report (`config_report`) holds a configuration's active parameters, MAdds (paper convention), batch-1
latency measured now on this machine, val/test metrics and the spoof scores of a few sample faces.
Scores come from `ScoreCache` (every configuration scored once per split, through the configuration tree
of `paperkit.config_tree`); `best_under_budget` picks the most accurate configuration that fits a latency
budget; `BranchState` holds the reports and the selection that notebook 05 and its widget share.

Choosing vs reporting: a configuration is *chosen* by its validation ACER (the subject-disjoint val split
of the training data) and *reported* with its test metrics, so the choice never peeks at the test set.
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from paperkit import complexity, metrics, quiet
from paperkit.profiles import Profile, get_profile
from paperkit.studies import common
from paperkit.config_tree import ALL_CONFIGS, REFERENCE, StagedBN, staged_bn_states, staged_scores
from paperkit.papers import SEED000_TABLES_3_4
from paperkit.models.pta import MODES, PTA_TRAIN_PROBS, PTAMobileNetV2, parse_config

__all__ = [
    "MODE_NAMES", "SELECTION_SPLIT", "LATENCY_BACKEND", "METRIC_KEYS", "ScoreCache", "SampleFaces",
    "sample_faces", "complexity_by_config", "measure_config_latency", "config_report", "compare", "Pick",
    "best_under_budget", "BranchState",
]

MODE_NAMES: dict[str, str] = {"H": "Heavy", "L": "Light", "B": "Both"}
#: Split used to choose a configuration; the test split is only reported.
SELECTION_SPLIT = "val"
LATENCY_BACKEND = "torch eager, 1 thread, batch 1, channels_last"
METRIC_KEYS: tuple[str, ...] = ("accuracy", "apcer", "bpcer", "acer")


# --------------------------------------------------------------------------------------------------
# Scores of every configuration, computed once
# --------------------------------------------------------------------------------------------------
@dataclass
class ScoreCache:
    """Scores per (split, config) and labels per split; each configuration is evaluated once per split.

    Filled by `fill` (all configurations in one pass) or lazily by `scores` for a single one. With
    `calib` (clean training crops, `paperkit.batchnorm.training_calibration`), every configuration is
    scored with BatchNorm statistics re-estimated for it (`bn`, grown as configurations are asked for);
    without, with the model's own statistics (the paper-literal shared ones).
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
class BranchState(common.Study):
    """One trained PTA model, its reports per configuration, sample faces, and the UI selection (on top of
    `common.Study`: profile, run_dir, seeds, dataset, parameters, outputs).

    `source` is "live" (scored and timed now from 01's checkpoint) or "recorded" (read back from the
    run's `tables/branch_comparison.csv` by `recorded_state`: no model, no samples, `provenance` says
    which run)."""

    notebook: str = "05_compare_branches"
    profile: Profile = field(default_factory=lambda: get_profile("default"))
    run_dir: Path = Path("results")
    seeds: tuple[int, ...] = (0,)
    model: PTAMobileNetV2 | None = None
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: SampleFaces | None = None
    bn: str = "recalibrated"  # BatchNorm statistics the reports were scored with ("recalibrated" | "shared")
    current: str = "HHH"
    pinned: str | None = None
    budget_ms: float | None = None
    source: str = "live"
    provenance: dict[str, Any] = field(default_factory=dict)

    def skip_record(self) -> str:
        """On the recorded path the manifest keeps the recorded run's entry (it vouches for the files shown)."""
        if not self.recorded:
            return ""
        return (f"recorded run: {Path(self.run_dir) / 'manifest.json'} keeps the entry of the run shown "
                f"(git {self.provenance.get('git_revision', '?')})")

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
