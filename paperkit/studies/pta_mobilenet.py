"""Notebook 01 (seed 000): No-PTA vs PTA MobileNetV2: training, Table 3 (quality) and Figure 2.

The notebook is thin: `setup` -> `recipe` -> `train` -> `table3` -> `pta_costs.table4` / `pta_costs.table5`
-> `figure2` -> `pta_summary.summary`. This module holds the study, its training, the scoring of every
configuration (Table 3) and the validation curves (Figure 2); what the configurations cost (Table 4:
params, MAdds, latency and `export_config`; Table 5: training time) is in `paperkit.studies.pta_costs`,
and the run's ratios beside the paper's in `paperkit.studies.pta_summary`.

Every table is written through `paperkit.results` with the dataset it was measured on and the paper's
numbers in `paper_*` columns beside ours (the paper's are CelebA-Spoof on a GTX 1050Ti and two phones).

BatchNorm (issue 9): training samples a configuration per step, so the running statistics it leaves
mix configurations. Every PTA configuration is therefore evaluated twice: with those `shared`
statistics (what the paper's evaluation does) and with statistics re-estimated for that
configuration on clean training crops (`recalibrated`, `paperkit.batchnorm`). Validation during
training (and so the choice of the best epoch) uses HHH with recalibrated statistics; the shared
ones are kept beside the checkpoint (`bn_stats.pt`), because `fit` saves the state it validated
(`paperkit.studies.pta_training.PTAFitHooks`). Every configuration is scored in one pass per split through
the configuration tree (`paperkit.config_tree`).

Seeds: every training seed trains its own pair of models (`01_<model>_<profile>_s<seed>`) on the same
data (`profile.data_seed`); tables have a `seed` column and, with more than one seed, mean/std rows.

Why the two models are trained epoch by epoch in alternation: the machine is shared, so its load
drifts; training No-PTA fully and then PTA would fold that drift into the epoch-time ratio (Table 5).
`fit` resumes exactly from its last checkpoint, so alternating 1-epoch calls trains the same models
as two uninterrupted runs while both see the same load. Table 5 (`paperkit.studies.pta_costs`) adds a short
interleaved (ABBA) train-step benchmark, whose rounds give the time ratio a confidence interval.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from paperkit import results, stats
from paperkit.batchnorm import (CALIBRATION_IMAGES, CalibrationSet, SharedStatsStore, bn_buffers, load_bn_buffers,
                                recalibrate_bn, training_calibration, weights_fingerprint)
from paperkit.config_tree import staged_bn_states, staged_scores
from paperkit.models.pta import CONFIGS, PTA_TRAIN_PROBS, mobilenet_v2_baseline, pta_mobilenet_v2
from paperkit.losses import LossFn, cross_entropy_loss
from paperkit.papers import SEED000_TABLES_3_4
from paperkit.profiles import Profile, get_profile, run_name
from paperkit.studies import common
from paperkit.studies.pta_training import VALIDATION_CONFIG, PTAFitHooks, warm_up

NOTEBOOK = "01_pta_mobilenet"
DEFINITION = ("ISO/IEC 30107-3 (attack = positive, score = P(attack), attack when score >= threshold); "
              "apcer pooled over attack types as seed 000 prints it, apcer_worst_type = worst attack "
              "instrument species (ISO), acer = (apcer + bpcer) / 2, acer_iso = (apcer_worst_type + bpcer) / 2; "
              "CIs: 95% subject bootstrap")
PAPER_DATASET = "CelebA-Spoof intra-test (seed 000)"
MODEL_NAMES = {"nopta": "MobileNetV2", "pta": "MobileNetV2+PTA"}
BN_SHARED, BN_RECALIBRATED, BN_NONE = "shared", "recalibrated", "n/a"


def checkpoint_name(key: str, profile: str, seed: int) -> str:
    """Checkpoint folder of one model and seed, e.g. `01_pta_default_s0` (notebook 05 loads it)."""
    return f"01_{key}_{profile}_s{int(seed)}"


# --------------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------------
@dataclass
class SeedRun:
    """One training seed: its two models, histories, BatchNorm statistics and scores."""

    seed: int
    models: dict[str, nn.Module] = field(default_factory=dict)
    histories: dict[str, Any] = field(default_factory=dict)
    hooks: PTAFitHooks | None = None
    shared_bn: dict[str, Tensor] | None = None              # training running statistics of the best epoch
    bn_states: dict[str, dict[str, Tensor]] = field(default_factory=dict)  # config -> recalibrated stats
    scored: dict[tuple[str, str], dict[str, stats.Scored]] = field(default_factory=dict)  # (config, bn) -> split
    control: dict[str, float] = field(default_factory=dict)


@dataclass
class Study(common.Study):
    """Everything one run of notebook 01 shares between its cells (on top of `common.Study`)."""

    runs: dict[int, SeedRun] = field(default_factory=dict)
    _calib: CalibrationSet | None = None

    @property
    def models(self) -> dict[str, nn.Module]:
        run = self.runs.get(self.seed)
        return run.models if run is not None else {}

    @property
    def calib(self) -> CalibrationSet:
        """Clean training crops (no augmentation, no labels), decoded once for every recalibration."""
        if self._calib is None:
            t0 = time.perf_counter()
            self._calib = training_calibration(self.loaders, self.profile)
            self.timings["calibration_set_s"] = time.perf_counter() - t0
        return self._calib


def setup(profile: str | Profile = "default", data_root: str = "", run_dir: str = "../results",
          seeds: Any = None, overrides: dict[str, Any] | None = None) -> Study:
    """Resolve the profile (+ `overrides`), the seeds (None: the profile's) and the dataset (embedded
    synthetic one when `data_root` is empty; built with `profile.data_seed`, the same for every training
    seed), build loaders."""
    study = common.setup(Study, NOTEBOOK, profile, data_root, run_dir, seeds, overrides)
    print(f"profile {study.profile.name}; seeds {list(study.seeds)}; dataset: {study.dataset}; images "
          f"{ {k: len(v.dataset) for k, v in study.loaders.items()} }; input {study.profile.input_size}px")
    return study


def recipe(study: Study) -> dict[str, Any]:
    """What `train` will run, in one place the notebook shows: builders, sampler, budget, validation."""
    prof = study.profile
    return {
        "models": {MODEL_NAMES["nopta"]: f"paperkit.models.pta.{mobilenet_v2_baseline.__name__}",
                   MODEL_NAMES["pta"]: f"paperkit.models.pta.{pta_mobilenet_v2.__name__}"},
        "per-step configuration sampler (seed 000 Table 2; B never trained)": dict(PTA_TRAIN_PROBS),
        "budget": {"epochs": prof.pta_epochs, "optimizer": "adam", "lr": prof.pta_lr,
                   "batch_size": prof.batch_size, "input_size": prof.input_size, "seeds": list(study.seeds)},
        "validation": f"PTA in {VALIDATION_CONFIG}, BatchNorm recalibrated on {CALIBRATION_IMAGES} clean "
                      "training crops (at most); best epoch by validation ACER",
        "bootstrap_samples": prof.bootstrap_samples,
    }


def _variant(builders: Mapping[str, Callable[..., nn.Module]], sampler: Mapping[str, float] | None,
             loss_fn: LossFn | None) -> dict[str, str]:
    """Checkpoint-name suffix per model for a recipe other than seed 000's ("" for the default recipe)."""
    out: dict[str, str] = {}
    for key in ("nopta", "pta"):
        parts = []
        if builders[key] is not BUILDERS[key]:
            parts.append(getattr(builders[key], "__name__", "builder"))
        if key == "pta" and sampler is not None and dict(sampler) != PTA_TRAIN_PROBS:
            parts.append("sampler" + hashlib.sha256(json.dumps(dict(sampler), sort_keys=True).encode()
                                                    ).hexdigest()[:6])
        if loss_fn is not None and loss_fn is not cross_entropy_loss:
            parts.append(getattr(loss_fn, "__name__", "loss"))
        out[key] = "".join(f"-{p}" for p in parts)
    return out


BUILDERS: dict[str, Callable[..., nn.Module]] = {"nopta": mobilenet_v2_baseline, "pta": pta_mobilenet_v2}


def _budget(study: Study, epochs: int | None, lr: float | None) -> Profile:
    """The profile with the budget the notebook passed; a budget other than the profile's becomes part of
    the profile (and so of `run_name`), so its checkpoints never resume the profile's own."""
    prof = study.profile
    epochs = prof.pta_epochs if epochs is None else int(epochs)
    lr = prof.pta_lr if lr is None else float(lr)
    if (epochs, lr) != (prof.pta_epochs, prof.pta_lr):
        prof = get_profile(prof, pta_epochs=epochs, pta_lr=lr)
        study.profile = prof
        print(f"budget {epochs} epochs, lr {lr} differs from profile {prof.name}'s: checkpoints under "
              f"{run_name(prof)}")
    return prof


def train(study: Study, builders: Mapping[str, Callable[..., nn.Module]] | None = None,
          sampler: Mapping[str, float] | None = None, loss_fn: LossFn | None = None, epochs: int | None = None,
          lr: float | None = None, progress: bool = True, interleave: bool = True) -> pd.DataFrame:
    """Train No-PTA and PTA (per-step configuration sampling, seed 000 Table 2) per seed with the shared loop.

    `builders` ({"nopta": ..., "pta": ...}, called with num_classes=2), `sampler` (configuration ->
    probability per training step), `loss_fn` (paperkit.losses; None: cross-entropy) and the budget
    (`epochs`, `lr`; None: the profile's) are what the notebook shows; the defaults are seed 000's.
    A builder, sampler or loss other than the defaults gets its own checkpoint folder.

    PTA is validated in HHH with BatchNorm recalibrated on clean training crops (`PTAFitHooks`), so the
    best epoch is chosen with statistics that belong to HHH. Checkpoints live in
    `run_dir/checkpoints/01_<model>_<profile>_s<seed>/`; a rerun resumes (or, when done, just reloads the
    best weights). Returns the per-epoch history of every model and seed (rates in percent), with
    `val_acer_shared_bn`: PTA's validation ACER with the training (shared) statistics.

    Long because the interleaved epoch schedule and the PTA hooks are one recipe; split, it reads worse.
    """
    from paperkit.train import fit

    builders = dict(BUILDERS if builders is None else builders)
    if sorted(builders) != ["nopta", "pta"]:
        raise ValueError(f"builders needs exactly the keys 'nopta' and 'pta', got {sorted(builders)}")
    variant = _variant(builders, sampler, loss_fn)
    prof = _budget(study, epochs, lr)
    ck_root = study.run_dir / "checkpoints"
    warmed = False
    for seed in study.seeds:
        run = study.runs.setdefault(seed, SeedRun(seed))
        torch.manual_seed(seed)  # same initial weights on every rerun (fit reseeds only the loop)
        run.models = {"nopta": builders["nopta"](num_classes=2), "pta": builders["pta"](num_classes=2)}
        ck = {k: checkpoint_name(k, run_name(prof), seed) + variant.get(k, "") for k in ("nopta", "pta")}
        run.hooks = PTAFitHooks(study.calib, SharedStatsStore(ck_root / ck["pta"]), study.loaders["val"],
                                prof.channels_last, probs=None if sampler is None else dict(sampler))
        hooks = {"nopta": {}, "pta": {"before_step": run.hooks.before_step, "eval_config": run.hooks.eval_config}}
        if interleave:
            # Alternate who goes first each epoch (ABBA...), and warm both up, so neither model's epoch
            # time carries the process's one-off start-up costs (allocator, oneDNN kernel selection).
            if not warmed:
                warm_up(run.models, study.loaders["train"], prof.channels_last)
                warmed = True
            order = ("nopta", "pta")
            schedule = [(e, k) for e in range(1, prof.pta_epochs + 1) for k in (order if e % 2 else order[::-1])]
        else:
            schedule = [(prof.pta_epochs, k) for k in ("nopta", "pta")]
        for n_epochs, key in schedule:
            run.histories[key] = fit(
                run.models[key], study.loaders, run_dir=study.run_dir, name=ck[key], epochs=n_epochs,
                lr=prof.pta_lr, seed=seed, loss_fn=loss_fn, channels_last=prof.channels_last,
                lr_schedule=prof.lr_schedule, schedule_epochs=prof.pta_epochs, progress=progress, **hooks[key])
        run.shared_bn = run.hooks.store.get(weights_fingerprint(run.models["pta"]), "shared")
    study.timings["bn_recalibration_validation_s"] = [s for r in study.runs.values() if r.hooks
                                                      for s in r.hooks.recalibration_s]
    out = _history_frame(study)
    study.tables["history"] = out
    study.outputs.append(results.write_table(study.run_dir, "figure2_val_acer", out))
    return out


def _history_frame(study: Study) -> pd.DataFrame:
    frames = []
    for seed, run in study.runs.items():
        for key, hist in run.histories.items():
            df = hist.to_frame()
            df.insert(0, "model", MODEL_NAMES[key])
            df.insert(1, "seed", seed)
            df.insert(2, "bn", BN_RECALIBRATED if key == "pta" else BN_NONE)
            if key == "pta" and run.hooks is not None:
                curve = run.hooks.shared_curve()
                df["val_acer_shared_bn"] = [100.0 * curve[e][0] if e in curve else np.nan for e in df["epoch"]]
                df["val_accuracy_shared_bn"] = [100.0 * curve[e][1] if e in curve else np.nan for e in df["epoch"]]
            else:
                df["val_acer_shared_bn"] = np.nan
                df["val_accuracy_shared_bn"] = np.nan
            frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    for col in ("val_acer", "val_accuracy", "val_acer_ci_low", "val_acer_ci_high"):
        if col in out:
            out[col] *= 100.0
    out["validated_in"] = [VALIDATION_CONFIG if m == MODEL_NAMES["pta"] else "" for m in out["model"]]
    out["dataset"] = study.dataset
    return out


def require_run(study: Study, seed: int | None = None) -> SeedRun:
    """The trained run of `seed` (None: the first seed); raises when `train` has not run."""
    run = study.runs.get(study.seed if seed is None else seed)
    if run is None or "nopta" not in run.models or "pta" not in run.models:
        raise RuntimeError("no trained models in this study; run paperkit.studies.pta_mobilenet.train(study) first")
    return run


def _paper(config: str, keys: tuple[str, ...]) -> dict[str, float]:
    return {f"paper_{k}": SEED000_TABLES_3_4[config][k] for k in keys}


# --------------------------------------------------------------------------------------------------
# Table 3: quality of every configuration, shared vs recalibrated BatchNorm, two operating points
# --------------------------------------------------------------------------------------------------
def _scored(model: nn.Module, loader: Any, channels_last: bool) -> stats.Scored:
    from paperkit.train import predict_scores

    s, y = predict_scores(model, loader, channels_last)
    return stats.Scored.from_dataset(s, y, loader.dataset)


def _splits(model: nn.Module, study: Study) -> dict[str, stats.Scored]:
    return {split: _scored(model, study.loaders[split], study.profile.channels_last) for split in ("val", "test")}


def _staged_splits(pta: nn.Module, study: Study, bn: Any) -> dict[str, dict[str, stats.Scored]]:
    """Every configuration scored on val and test in one pass per split: the layers before the first PTA
    block (most of the compute at 128 px) run once per image for all six (`paperkit.config_tree.staged_scores`,
    which checks itself against a plain forward); `bn` = per-node recalibrated statistics, None = current."""
    out: dict[str, dict[str, stats.Scored]] = {c: {} for c in CONFIGS}
    for split in ("val", "test"):
        loader = study.loaders[split]
        scores, y = staged_scores(pta, loader, CONFIGS, bn=bn)
        for c in CONFIGS:
            out[c][split] = stats.Scored.from_dataset(scores[c], y, loader.dataset)
    return out


def evaluate_seed(study: Study, seed: int) -> SeedRun:
    """Score No-PTA and every PTA configuration of one seed on val and test, with shared and with
    recalibrated BatchNorm statistics (each configuration's own, kept in `run.bn_states` for export)."""
    run = require_run(study, seed)
    base, pta = run.models["nopta"], run.models["pta"]
    cl = study.profile.channels_last
    saved_bn, saved_cfg = bn_buffers(pta), pta.config
    run.scored = {("NoPTA", BN_NONE): _splits(base, study)}
    try:
        # one walk of the configuration tree: the layers before the first PTA block run once for all six
        # configurations (what recalibrate_bn per configuration gives; tests/test_compare_branches.py checks it)
        tree = staged_bn_states(pta, study.calib, CONFIGS)
        study.timings.setdefault("bn_recalibration_s_per_config", []).append(tree.seconds / len(CONFIGS))
        for config in CONFIGS:
            run.bn_states[config] = bn_buffers(load_bn_buffers(pta, tree.full(config)))
        for config, sc in _staged_splits(pta, study, tree).items():
            run.scored[(config, BN_RECALIBRATED)] = sc
        shared = run.shared_bn
        if shared is None:
            print(f"note: no training (shared) BatchNorm statistics stored for seed {seed} "
                  f"({SharedStatsStore.FILE} missing beside the checkpoint); Table 3 has recalibrated rows only")
        else:
            load_bn_buffers(pta, shared)
            for config, sc in _staged_splits(pta, study, None).items():
                run.scored[(config, BN_SHARED)] = sc
        # control: the same re-estimation applied to No-PTA, whose statistics never mixed anything;
        # what it changes there is the clean-vs-augmented shift, not configuration mixing
        ctrl = recalibrate_bn(copy.deepcopy(base), study.calib, channels_last=cl)
        sc = _scored(ctrl, study.loaders["test"], cl)
        run.control = {"nopta_recalibrated_test_acer": _acer(sc)}
    finally:
        load_bn_buffers(pta, saved_bn)
        pta.configure(saved_cfg)
    return run


def _acer(s: stats.Scored, threshold: float = 0.5) -> float:
    from paperkit import metrics
    return 100.0 * metrics.evaluate(s.scores, s.labels, threshold)["acer"]


def _variants(run: SeedRun) -> list[tuple[str, str]]:
    """Rows in reading order: No-PTA, then per configuration shared (paper-literal) then recalibrated."""
    out = [("NoPTA", BN_NONE)]
    for c in CONFIGS:
        out += [(c, bn) for bn in (BN_SHARED, BN_RECALIBRATED) if (c, bn) in run.scored]
    return out


def table3(study: Study) -> pd.DataFrame:
    """Test quality of No-PTA and of the single PTA model in every configuration (seed 000 Table 3).

    Rows: seed x config x bn (`shared` = the training running statistics, paper-literal; `recalibrated`
    = re-estimated for that configuration; `n/a` for No-PTA) x operating_point (`fixed_0.5`, `val_eer` =
    the EER threshold of that model's own validation scores). Metrics in percent with 95% subject-bootstrap
    intervals. Per-image val and test scores go to `predictions/table3_quality.csv.gz`.
    """
    prof = study.profile
    keys = ("accuracy", "apcer", "bpcer", "acer")
    rows, preds = [], []
    for seed in study.seeds:
        run = require_run(study, seed)
        if not run.scored:
            evaluate_seed(study, seed)
        for config, bn in _variants(run):
            sc = run.scored[(config, bn)]
            model_name = MODEL_NAMES["nopta" if config == "NoPTA" else "pta"]
            for q in stats.quality_rows(sc["test"], sc["val"], n_boot=prof.bootstrap_samples, seed=seed):
                rows.append({"seed": seed, "config": config, "bn": bn, **q, **_paper(config, keys),
                             "dataset": study.dataset, "definition": DEFINITION, "paper_dataset": PAPER_DATASET})
            for split in ("val", "test"):
                preds.append(sc[split].frame(model=model_name, config=config, bn="" if bn == BN_NONE else bn,
                                             fmt="torch", seed=seed, split=split, dataset=study.dataset))
    df = pd.DataFrame(rows)
    metric_cols = [c for c in df.columns if c not in ("seed", "config", "bn", "operating_point", "dataset",
                                                      "definition", "paper_dataset")]
    df = stats.across_seeds(df, ["config", "bn", "operating_point"], metric_cols)
    study.tables["table3"] = df
    study.outputs.append(results.write_table(study.run_dir, "table3_quality", df))
    table = pd.concat(preds, ignore_index=True)
    study.outputs.append(results.write_predictions(study.run_dir, "table3_quality", table))
    return df


def table3_rows(t3: pd.DataFrame, seed: int | str | None = None, bn: str = BN_RECALIBRATED,
                operating_point: str = "fixed_0.5") -> pd.DataFrame:
    """The slice of Table 3 that readers of it (Table 5, the summary, notebooks 03 and 05) compare:
    one operating point, one seed (the first when None), No-PTA plus the PTA rows with statistics `bn`.
    A table from before those columns existed is returned as it is."""
    out = t3
    if "operating_point" in out:
        out = out[out["operating_point"] == operating_point]
    if "seed" in out and len(out):
        pick = str(out["seed"].iloc[0]) if seed is None else str(seed)
        out = out[out["seed"].astype(str) == pick]
    if "bn" in out:
        out = out[(out["config"] == "NoPTA") | (out["bn"] == bn)]
    return out


def table3_view(study: Study, operating_point: str = "fixed_0.5") -> pd.DataFrame:
    """Table 3 as the paper prints it (one operating point), ours with CIs beside the paper's numbers."""
    t3 = study.tables.get("table3")
    if t3 is None:
        t3 = table3(study)
    cols = ["seed", "config", "bn", "accuracy", "apcer", "bpcer", "acer", "acer_ci_low", "acer_ci_high",
            "apcer_worst_type", "apcer_worst_type_code", "acer_iso", "paper_acer"]
    return t3.loc[t3["operating_point"] == operating_point, [c for c in cols if c in t3]].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Figure 2: validation ACER per epoch (the training history)
# --------------------------------------------------------------------------------------------------
def figure2(study: Study) -> Any:
    """Validation ACER per epoch for both models (PTA validated in HHH, as seed 000's Figure 2), PTA with
    recalibrated BatchNorm and, dashed, with the shared training statistics the paper evaluates with.
    With one seed, bands are each epoch's 95% subject-bootstrap interval; with several, lines are means
    and bands 95% intervals over seeds."""
    import seaborn as sns
    from matplotlib.figure import Figure

    hist = study.tables.get("history")
    if hist is None:
        raise RuntimeError("no training history; run paperkit.studies.pta_mobilenet.train(study) first")
    pta_name = MODEL_NAMES["pta"]
    long = [hist.assign(series=[f"{m} (BN recalibrated)" if m == pta_name else m for m in hist["model"]])]
    shared = hist[(hist["model"] == pta_name) & hist["val_acer_shared_bn"].notna()]
    if len(shared):
        long.append(shared.assign(val_acer=shared["val_acer_shared_bn"], series=f"{pta_name} (shared BN)",
                                  val_acer_ci_low=np.nan, val_acer_ci_high=np.nan))  # no interval kept for it
    data = pd.concat(long, ignore_index=True)
    order = list(dict.fromkeys(data["series"]))
    fig = Figure(figsize=(6.4, 3.8))  # not pyplot: the notebook shows it once, as the cell's value
    ax = fig.subplots()
    palette = dict(zip(order, sns.color_palette(n_colors=len(order))))
    sns.lineplot(data=data, x="epoch", y="val_acer", hue="series", style="series", markers=True, ax=ax,
                 hue_order=order, style_order=order, palette=palette)
    if "val_acer_ci_low" in data and len(study.seeds) == 1:   # one seed: shade each epoch's subject-bootstrap CI
        for name, g in data[data["val_acer_ci_low"].notna()].groupby("series", sort=False):
            g = g.sort_values("epoch")
            ax.fill_between(g["epoch"], g["val_acer_ci_low"], g["val_acer_ci_high"], color=palette[name],
                            alpha=0.15, linewidth=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation ACER (%)")
    ax.set_title(f"Validation ACER (PTA in HHH), seeds {list(study.seeds)}\n{study.dataset}", fontsize=9)
    ax.set_xticks(sorted(int(e) for e in data["epoch"].unique()))
    ax.legend(fontsize=7)
    study.outputs.append(results.save_figure(study.run_dir, "figure2_val_acer", fig))
    return fig
