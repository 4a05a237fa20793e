"""Notebook 01 (seed 000): what the PTA configurations cost, Tables 4 and 5.

Table 4 (`table4`): params and MAdds of every configuration (paperkit.complexity, the paper's counting
convention) and measured batch-1 CPU latency; `export_config` writes one configuration to ONNX with its
own recalibrated BatchNorm statistics. Table 5 (`table5`): best quality per trained model and what
training cost, epoch wall time and an interleaved (ABBA) train-step benchmark with a 95% interval over
its rounds. The study these read (trained models, Table 3) is `paperkit.studies.pta_mobilenet`'s.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import pandas as pd

from paperkit import complexity, results, stats
from paperkit.batchnorm import load_bn_buffers
from paperkit.models.pta import parse_config
from paperkit.papers import SEED000_TABLE5, SEED000_TABLES_3_4
from paperkit.profiles import Profile, get_profile
from paperkit.studies.pta_mobilenet import (BN_NONE, BN_RECALIBRATED, BN_SHARED, MODEL_NAMES, Study, evaluate_seed,
                                            require_run, table3, table3_rows)
from paperkit.studies.pta_training import STEP_TIMING_STEPS, step_timing


# --------------------------------------------------------------------------------------------------
# One configuration as a deployable file
# --------------------------------------------------------------------------------------------------
def export_config(study: Study, config: str, path: str | Path, seed: int | None = None) -> Path:
    """Export one PTA configuration to ONNX with *its own* (recalibrated) BatchNorm statistics, check parity."""
    from paperkit import deploy

    run = require_run(study, seed)
    if not run.bn_states:
        evaluate_seed(study, run.seed)
    cfg = "".join(parse_config(config))
    if cfg not in run.bn_states:
        raise KeyError(f"no recalibrated statistics for {config!r}; Table 3 configurations: {list(run.bn_states)}")
    m = copy.deepcopy(run.models["pta"]).cpu().eval().configure(cfg)
    load_bn_buffers(m, run.bn_states[cfg])
    out = deploy.export_onnx(m, path, input_size=study.profile.input_size)
    x = study.calib.batches[0][:4]
    gap = deploy.parity(m, out, x)
    if gap > 1e-3:
        raise RuntimeError(f"{out}: ONNX and torch disagree by {gap:.2e} on training crops")
    return out


# --------------------------------------------------------------------------------------------------
# Table 4: complexity and latency
# --------------------------------------------------------------------------------------------------
def table4(study: Study | None = None, profile: str | Profile = "default") -> pd.DataFrame:
    """Params and MAdds at 1x3x128x128 (paper convention) plus measured batch-1 CPU latency.

    Latency uses the first seed's trained models when a study with models is given (fresh ones
    otherwise; weights do not change latency), torch eager and ONNX Runtime FP32, 1 thread, interleaved
    rounds, rel_latency vs No-PTA in the same run (ORT, the deployable runtime; torch in
    rel_latency_torch) with a 95% interval over rounds paired by round. Each exported configuration
    carries its own recalibrated BatchNorm statistics.
    """
    prof = study.profile if study is not None else get_profile(profile)
    base = pta = None
    bn_states = None
    if study is not None and study.models:
        run = require_run(study)
        base, pta = run.models["nopta"], run.models["pta"]
        bn_states = run.bn_states or None
    comp = pd.DataFrame(complexity.table4(128))
    # smoke checks wiring: the legacy exporter saves ~40 s there; every other profile exports with
    # paperkit.deploy (dynamo), i.e. measures the graphs we ship
    exporter = "torchscript" if prof.name == "smoke" else "dynamo"
    lat = complexity.latency_wide(complexity.bench_latency(prof, baseline=base, pta=pta, extras=False,
                                                           exporter=exporter, bn_states=bn_states))
    df = comp.merge(lat, on="config", how="left")
    for k in ("params_m", "madds_m", "latency_sd845_ms", "latency_sd800_ms", "rel_latency"):
        df[f"paper_{k}"] = [SEED000_TABLES_3_4[c][k] for c in df["config"]]
    df["input_size"] = 128
    df["threads"] = 1
    df["onnx_exporter"] = exporter
    df["bn"] = [BN_NONE if c == "NoPTA" else (BN_RECALIBRATED if bn_states else BN_SHARED) for c in df["config"]]
    df["seed"] = study.seed if study is not None and study.models else ""
    df["dataset"] = study.dataset if study is not None else "none (untrained models)"
    if study is not None:
        study.tables["table4"] = df
        study.outputs.append(results.write_table(study.run_dir, "table4_complexity", df))
    return df


# --------------------------------------------------------------------------------------------------
# Table 5: best quality and training time
# --------------------------------------------------------------------------------------------------
def table5(study: Study) -> pd.DataFrame:
    """Best test quality over configurations and training time per model (seed 000 Table 5).

    Like the paper: best accuracy and best ACER over the configurations one trained model offers
    (No-PTA has one), from Table 3's recalibrated rows at threshold 0.5; epoch time = mean wall time
    of a training epoch here (CPU, shared machine), `rel_epoch_time` its PTA/No-PTA ratio (one number
    per seed, no interval), and `rel_step_time` the ratio of train-step times from an interleaved
    benchmark (`step_timing`, rounds = profile.latency_rounds) with a 95% interval over rounds.
    """
    if "table3" not in study.tables:
        table3(study)
    prof = study.profile
    t3 = study.tables["table3"]
    t0 = time.perf_counter()
    run0 = require_run(study)
    rounds = max(2, prof.latency_rounds)
    times = step_timing(run0.models, study.loaders["train"], rounds, STEP_TIMING_STEPS, prof.channels_last,
                        prof.pta_lr, study.seed)
    study.timings["step_timing_s"] = time.perf_counter() - t0
    step_iv = stats.ratio_interval(times["pta"], times["nopta"], paired=True, seed=study.seed)
    rows = []
    for seed in study.seeds:
        run = require_run(study, seed)
        sel = table3_rows(t3, seed, BN_RECALIBRATED)
        shared = table3_rows(t3, seed, BN_SHARED)
        shared = shared[shared["config"] != "NoPTA"]
        epoch_ref = None
        for key, name in MODEL_NAMES.items():
            hist = run.histories[key]
            sub = sel[sel["config"] == "NoPTA"] if key == "nopta" else sel[sel["config"] != "NoPTA"]
            best = sub.loc[sub["acer"].idxmin()]
            epoch_min = sum(hist.epoch_times) / len(hist.epoch_times) / 60.0
            epoch_ref = epoch_min if key == "nopta" else epoch_ref
            is_ref = key == "nopta"
            rows.append({
                "model": name, "seed": seed, "bn": BN_NONE if is_ref else BN_RECALIBRATED,
                "best_accuracy": float(sub["accuracy"].max()), "best_acer": float(best["acer"]),
                "best_acer_ci_low": float(best["acer_ci_low"]), "best_acer_ci_high": float(best["acer_ci_high"]),
                "best_acer_config": str(best["config"]),
                "best_acer_shared_bn": float(shared["acer"].min()) if not is_ref and len(shared) else np.nan,
                "epoch_time_min": epoch_min, "total_time_h": sum(hist.epoch_times) / 3600.0,
                "epochs": len(hist.epoch_times), "best_val_epoch": hist.best_epoch,
                "rel_epoch_time": epoch_min / epoch_ref if epoch_ref else np.nan,
                "step_time_ms": 1e3 * float(np.median(times[key])),
                "rel_step_time": 1.0 if is_ref else step_iv.value,
                "rel_step_time_ci_low": np.nan if is_ref else step_iv.low,
                "rel_step_time_ci_high": np.nan if is_ref else step_iv.high,
                "timing_rounds": rounds, "timing_steps_per_round": STEP_TIMING_STEPS,
                "dataset": study.dataset,
                **{f"paper_{k}": v for k, v in SEED000_TABLE5[name].items()},
                "paper_rel_epoch_time": SEED000_TABLE5[name]["epoch_time_min"]
                / SEED000_TABLE5["MobileNetV2"]["epoch_time_min"]})
    df = pd.DataFrame(rows)
    metric_cols = [c for c in df.columns if c not in ("model", "seed", "bn", "best_acer_config", "dataset")]
    df = stats.across_seeds(df, ["model"], metric_cols)
    study.tables["table5"] = df
    study.outputs.append(results.write_table(study.run_dir, "table5_training", df))
    return df
