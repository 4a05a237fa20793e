"""Notebook 03's SWAP table (seed 003: speed, weight, accuracy, power), its targets and the trade-off figure.

Every model is deployed the way `paperkit.deploy` ships one (FP32 ONNX + static INT8 QDQ calibrated on clean
training crops); latency, CPU time, energy and throughput are measured there, on a quiet machine.
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn
from torch.utils.data import DataLoader

from paperkit import data, deploy, results, stats
from paperkit.models.teacher import Teacher, count_params
from paperkit.papers import SEED003
from paperkit.studies.distill_scores import BOOT_SEED, ci_cols, scored, seed_rows
from paperkit.studies.distillation import JUDGED_FOR, KD_KIND, STUDENTS, DistillRun
from paperkit.studies.teacher_training import require_teacher

THROUGHPUT_BATCH = 32


def _clean_train_loader(run: DistillRun) -> DataLoader:
    ds = run.loaders["train"].dataset
    clean = data.FaceDataset(ds.root, ds.samples, ds.size, train=False, seed=run.data_seed)
    return DataLoader(clean, batch_size=run.profile.batch_size, shuffle=False, num_workers=0)


def deploy_params(model: nn.Module) -> int:
    """Parameters that run at inference: the teacher without its cue heads, the texture model without its
    Fourier head, a PTA model's active branches only."""
    from paperkit import complexity
    if isinstance(model, Teacher):
        return count_params(model) - count_params(model.head.cues)
    if hasattr(model, "deploy_parameters"):
        return int(model.deploy_parameters())
    return complexity.active_params(model)


def _madds(model: nn.Module, size: int) -> float:
    from paperkit import complexity
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the teacher's padding/std/LayerNorm are outside the paper convention
        return complexity.madds(model, size)


def swap_table(run: DistillRun, threshold: float = 0.5) -> pd.DataFrame:
    """SWAP (seed 003): speed, weight, accuracy, power for the teacher and the three students, per seed.

    Quality: test split at the fixed threshold 0.5 (FP32 torch; INT8 ONNX beside it), subject-bootstrap 95%
    intervals; both operating points (0.5 and the validation EER) of every model and format go to
    tables/distill_quality.csv. accuracy_vs_teacher = 100 x student/teacher accuracy with a paired subject
    bootstrap (both models' per-subject counts resampled together, `stats.paired_statistic`);
    acer_minus_alone = paired difference to student_alone. Latency: ONNX Runtime CPU, batch 1, 1 thread,
    FP32 and INT8 of every model interleaved in `deploy.interleaved_latency` rounds (first seed's models: the
    architectures, hence the latencies, are the same for every seed); speedups are ratios of per-round
    medians with a paired bootstrap over rounds. Energy: RAPL when readable, else CPU time per inference x
    deploy.PER_CORE_WATTS (named in deploy.energy_method). Writes predictions/swap.csv.gz (val + test, torch + int8).
    Read top to bottom: export every model (`_export_models`), one shared measurement run (`_latencies`,
    `_power`), scoring per seed (`_score_seed`), then one row per model (`_swap_row`, which needs all three).
    """
    t0 = time.perf_counter()
    if not run.students:
        raise RuntimeError("no students trained yet: run train_students(run) first")
    first = run.seeds[0]
    models, paths = _export_models(run)
    lat = _latencies(run, {f"{n}/{k}": p for (s, n), d in paths.items() if s == first for k, p in d.items()})
    method, rapl = deploy.energy_method()
    power = _power(run, {n: paths[(first, n)] for n in models[first]}, rapl)
    rows, qrows, preds = [], [], []
    for seed in run.seeds:
        sc, q, pr = _score_seed(run, seed, models[seed], paths)
        qrows += q
        preds += pr
        rows += [_swap_row(run, seed, name, m, sc, paths[(seed, name)], lat, {**power[name], "energy_method": method},
                           threshold) for name, m in models[seed].items()]
    df = _write_tables(run, rows, qrows, preds)
    run.timings["swap_s"] = time.perf_counter() - t0
    return df


def _export_models(run: DistillRun) -> tuple[dict[int, dict[str, nn.Module]], dict[tuple[int, str], dict[str, Path]]]:
    """Per seed, the teacher and the trained SWAP students, each exported as FP32 ONNX + static INT8 QDQ
    (calibrated on clean training crops). The first seed's student_kd is the shipped model (run_dir/models);
    the rest go under the checkpoints."""
    prof = run.profile
    calib = _clean_train_loader(run)
    first = run.seeds[0]
    paths: dict[tuple[int, str], dict[str, Path]] = {}
    models: dict[int, dict[str, nn.Module]] = {}
    for seed in run.seeds:
        models[seed] = {"teacher": require_teacher(run, seed),
                        **{n: run.students[seed][n] for n in STUDENTS if n in run.students.get(seed, {})}}
        for name, m in models[seed].items():
            shipped = name == "student_kd" and seed == first   # the deployable model goes to run_dir/models (< 5 MB)
            base = (run.run_dir / "models" / "distill_student_kd") if shipped else \
                (run.ckpt_dir / "onnx" / f"seed{seed}" / name)
            paths[(seed, name)] = deploy.export_int8_pair(m, base, calib, input_size=prof.input_size,
                                                          max_images=prof.calib_images, name=name)
            if shipped:
                run.outputs += list(paths[(seed, name)].values())
    return models, paths


def _latencies(run: DistillRun, cands: dict[str, Path]) -> dict[str, Any]:
    """Per-round median latencies of every "<model>/<fmt>" ONNX file, all interleaved in one run."""
    prof = run.profile
    return deploy.round_medians(deploy.interleaved_latency(
        cands, max(1, prof.latency_rounds), max(1, prof.latency_iters), max(3, prof.latency_iters // 5),
        prof.input_size))


def _power(run: DistillRun, files: dict[str, dict[str, Path]], rapl: Any) -> dict[str, dict[str, float]]:
    """Per model: CPU time and energy per inference (FP32; energy also INT8) and FP32 batch throughput."""
    prof, size = run.profile, run.profile.input_size
    iters = prof.latency_rounds * prof.latency_iters
    power: dict[str, dict[str, float]] = {}
    for name, f in files.items():
        s1 = deploy.ort_session(f["fp32"], threads=1)
        s8 = deploy.ort_session(f["int8"], threads=1)
        cpu_ms, energy = deploy.cpu_and_energy(s1, size, iters, rapl)
        _, energy8 = deploy.cpu_and_energy(s8, size, iters, rapl)
        power[name] = {"cpu_ms": cpu_ms, "energy_mj": energy, "energy_mj_int8": energy8,
                       "throughput_img_s": deploy.throughput(s1, size, THROUGHPUT_BATCH, max(3, prof.latency_rounds))}
    return power


def _score_seed(run: DistillRun, seed: int, models: dict[str, nn.Module],
                paths: dict[tuple[int, str], dict[str, Path]]
                ) -> tuple[dict[str, dict[str, stats.Scored]], list[dict[str, Any]], list[pd.DataFrame]]:
    """One seed's models scored on val and test, torch and INT8 ("<fmt>/<split>" per model), with their
    distill_quality rows (both operating points) and prediction frames."""
    n_boot = run.profile.bootstrap_samples
    sc: dict[str, dict[str, stats.Scored]] = {}
    qrows, preds = [], []
    for name, m in models.items():
        sc[name] = {f"{fmt}/{split}": (scored(run, name, m, run.loaders[split]) if fmt == "torch" else
                                       deploy.onnx_scored(paths[(seed, name)]["int8"], run.loaders[split]))
                    for fmt in ("torch", "int8") for split in ("val", "test")}
        for key, s in sc[name].items():
            fmt, split = key.split("/")
            preds.append(s.frame(model=name, config="", bn="", fmt=fmt, seed=seed, split=split,
                                 dataset=run.dataset))
            if split == "test":
                for q in stats.quality_rows(s, sc[name][f"{fmt}/val"], n_boot, BOOT_SEED):
                    qrows.append({"model": name, "seed": seed, "fmt": fmt, "judged_for": JUDGED_FOR.get(name, ""),
                                  **q, "dataset": run.dataset})
    return sc, qrows, preds


def _swap_row(run: DistillRun, seed: int, name: str, m: nn.Module, sc: dict[str, dict[str, stats.Scored]],
              files: dict[str, Path], lat: dict[str, Any], power: dict[str, Any], threshold: float) -> dict[str, Any]:
    """One model's swap.csv row: what it is, its weight, latency, quality (FP32, INT8), power, and the
    paired comparisons with the teacher and with student_alone."""
    n_boot = run.profile.bootstrap_samples
    test, test8 = sc[name]["torch/test"], sc[name]["int8/test"]
    q = stats.quality(test, threshold, n_boot, BOOT_SEED)
    q8 = stats.quality(test8, threshold, n_boot, BOOT_SEED)
    kind = KD_KIND.get(name)
    tau, alpha = run.kd_params(name) if kind else (math.nan, math.nan)
    row: dict[str, Any] = {
        "model": name, "seed": seed, "judged_for": JUDGED_FOR.get(name, ""), "dataset": run.dataset,
        "operating_point": "fixed_0.5", "threshold": threshold,
        "architecture": "efficientnet_lite0 (frozen, ImageNet) + 8 heads" if name == "teacher" else
        run.params()["student"],
        "kd_kind": kind or "", "kd_tau": tau, "kd_alpha": alpha,
        **_weight_cols(m, files, run.profile.input_size),
        **ci_cols("latency_ms", stats.median_interval(lat[f"{name}/fp32"])),
        **ci_cols("latency_ms_int8", stats.median_interval(lat[f"{name}/int8"])),
        **q,
        **{f"{k}_int8{e}": q8[f"{k}{e}"] for k in ("acer", "accuracy") for e in ("", "_ci_low", "_ci_high")},
        **power,
        **_vs_teacher_cols(name, lat, test, sc["teacher"]["torch/test"], threshold, n_boot),
    }
    if kind and "student_alone" in sc:
        row.update(ci_cols("acer_minus_alone", stats.paired_difference(
            test, sc["student_alone"]["torch/test"], "acer", threshold, threshold, n_boot, BOOT_SEED)))
    return row


def _weight_cols(m: nn.Module, files: dict[str, Path], size: int) -> dict[str, float]:
    """Parameters that run at inference (millions), ONNX file sizes (FP32, INT8) and multiply-adds."""
    return {"params_m": deploy_params(m) / 1e6,
            "size_kb_fp32": deploy.file_size_kb(files["fp32"]),
            "size_kb_int8": deploy.file_size_kb(files["int8"]),
            "madds_m": _madds(copy.deepcopy(m).cpu(), size)}


def _vs_teacher_cols(name: str, lat: dict[str, Any], test: stats.Scored, t_test: stats.Scored, threshold: float,
                     n_boot: int) -> dict[str, float]:
    """Speed-ups over the teacher's FP32 latency (FP32 and INT8; bootstrap over rounds) and the accuracy as
    a percentage of the teacher's (paired subject bootstrap)."""
    return {
        **ci_cols("speedup_vs_teacher", stats.ratio_interval(lat["teacher/fp32"], lat[f"{name}/fp32"])),
        **ci_cols("speedup_int8_vs_teacher_fp32", stats.ratio_interval(lat["teacher/fp32"], lat[f"{name}/int8"])),
        **ci_cols("accuracy_vs_teacher", stats.paired_statistic(
            [test, t_test], lambda r: 100 * r[0]["accuracy"] / r[1]["accuracy"], [threshold, threshold],
            n_boot, BOOT_SEED)),
    }


def _write_tables(run: DistillRun, rows: list[dict[str, Any]], qrows: list[dict[str, Any]],
                  preds: list[pd.DataFrame]) -> pd.DataFrame:
    """tables/swap.csv (with the latency protocol and per-seed summary rows), tables/distill_quality.csv
    and predictions/swap.csv.gz; returns the swap table."""
    prof = run.profile
    df = pd.DataFrame(rows)
    df["latency_rounds"] = prof.latency_rounds
    df["latency_note"] = ("ORT CPU, batch 1, 1 thread, FP32 and INT8 of all models interleaved in "
                          f"{prof.latency_rounds} rounds x {prof.latency_iters}; median of round medians "
                          f"(seed {run.seeds[0]}'s models)")
    df = seed_rows(df, ["model", "judged_for", "operating_point"])
    run.outputs.append(results.write_table(run.run_dir, "swap", df))
    run.outputs.append(results.write_table(run.run_dir, "distill_quality",
                                           seed_rows(pd.DataFrame(qrows), ["model", "fmt", "judged_for",
                                                                            "operating_point"])))
    run.outputs.append(results.write_predictions(run.run_dir, "swap", pd.concat(preds, ignore_index=True)))
    return df


def _firstseed_rows(df: pd.DataFrame) -> pd.DataFrame:
    seeds = [s for s in df["seed"].astype(str).unique() if s not in ("mean", "std")]
    return df[df["seed"].astype(str) == seeds[0]] if seeds else df


def swap_targets(swap: pd.DataFrame) -> pd.DataFrame:
    """Seed 003's targets against the SWAP table, for each student a seed is judged on (first seed's rows).

    Three-valued verdicts (`stats.verdict`): holds only when the whole 95% interval is on the holding side."""
    t = _firstseed_rows(swap).set_index("model")
    rows = []
    judged = [m for m in ("student_kd_hinton", "student_kd") if m in t.index]
    for m in judged:
        r = t.loc[m]
        who = r.get("judged_for", "")
        rows.append(("student < 1 M parameters", m, who, f"{r.params_m:.3f} M", math.nan, math.nan,
                     stats.HOLDS if r.params_m < SEED003["student_params_m"] else stats.FAILS))
        for col, label in (("speedup_vs_teacher", ">= 7x faster than the teacher (ORT FP32)"),
                           ("speedup_int8_vs_teacher_fp32", ">= 7x faster (student INT8 vs teacher FP32)")):
            rows.append((label, m, who, f"{r[col]:.2f}x", r[f"{col}_ci_low"], r[f"{col}_ci_high"],
                         stats.verdict(r[f"{col}_ci_low"], r[f"{col}_ci_high"], SEED003["speedup"], "at_least")))
        rows.append((">= 99% of the teacher's accuracy", m, who, f"{r.accuracy_vs_teacher:.2f}%",
                     r.accuracy_vs_teacher_ci_low, r.accuracy_vs_teacher_ci_high,
                     stats.verdict(r.accuracy_vs_teacher_ci_low, r.accuracy_vs_teacher_ci_high,
                                   100 * SEED003["accuracy_ratio"], "at_least")))
        if "acer_minus_alone" in r and pd.notna(r.acer_minus_alone):
            rows.append(("distilled ACER <= student-alone ACER", m, who, f"{r.acer_minus_alone:+.2f} points",
                         r.acer_minus_alone_ci_low, r.acer_minus_alone_ci_high,
                         stats.verdict(r.acer_minus_alone_ci_low, r.acer_minus_alone_ci_high, 0.0, "at_most")))
    return pd.DataFrame(rows, columns=["target", "model", "judged_for", "measured", "ci_low", "ci_high", "verdict"])


# ============================================================================================ figure
def _pta_points(run_dir: Path) -> pd.DataFrame | None:
    """PTA configurations from notebook 01's tables (its own latency run), if present."""
    t4, t3 = results.read_table(run_dir, "table4_complexity"), results.read_table(run_dir, "table3_quality")
    if t4 is None or t3 is None or "config" not in t4 or "config" not in t3 or "acer" not in t3:
        return None
    lat_col = next((c for c in ("latency_ms_ort", "latency_ms", "latency_ms_torch") if c in t4), None)
    if lat_col is None:
        return None
    from paperkit.studies.pta_mobilenet import table3_rows
    t3 = table3_rows(t3)
    t3 = t3[t3["config"] != "NoPTA"]
    df = t4[["config", lat_col]].merge(t3[["config", "acer"]], on="config")
    return df.rename(columns={lat_col: "latency_ms"}).dropna()



def tradeoff_figure(run: DistillRun, swap: pd.DataFrame | None = None) -> Any:
    """Latency (ORT, batch 1, 1 thread) vs test ACER with its 95% interval: teacher, students (FP32 and INT8),
    PTA configurations. With several seeds the mean rows are drawn."""
    import matplotlib
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    swap = swap if swap is not None else results.read_table(run.run_dir, "swap")
    if swap is None:
        raise FileNotFoundError(f"{run.run_dir}/tables/swap.csv not found: run swap_table(run) first")
    seeds = swap["seed"].astype(str)
    view = swap[seeds == "mean"] if (seeds == "mean").any() else _firstseed_rows(swap)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"teacher": "tab:red", "student_alone": "tab:gray", "student_kd": "tab:blue",
              "student_kd_hinton": "tab:green"}
    for r in view.itertuples():
        c = colors.get(r.model, "k")
        err = None
        if hasattr(r, "acer_ci_low") and pd.notna(r.acer_ci_low):
            err = [[max(0.0, r.acer - r.acer_ci_low)], [max(0.0, r.acer_ci_high - r.acer)]]
        ax.errorbar(r.latency_ms, r.acer, yerr=err, fmt="o", color=c, ms=5 + 4 * r.params_m, capsize=3,
                    label=f"{r.model} FP32", zorder=3)
        ax.scatter(r.latency_ms_int8, r.acer_int8, facecolors="none", edgecolors=c, s=60, marker="s",
                   label=f"{r.model} INT8", zorder=3)
        ax.annotate(f"{r.params_m:.2f}M", (r.latency_ms, r.acer), textcoords="offset points", xytext=(5, 4),
                    fontsize=7)
    pta = _pta_points(run.run_dir)
    if pta is not None and len(pta):
        ax.scatter(pta.latency_ms, pta.acer, marker="^", color="tab:purple",
                   label="PTA-MobileNetV2 configs (notebook 01, its own latency run)")
        for r in pta.itertuples():
            ax.annotate(str(r.config), (r.latency_ms, r.acer), textcoords="offset points", xytext=(4, -8),
                        fontsize=7, color="tab:purple")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("latency per image, ms (ONNX Runtime, batch 1, 1 thread; log scale)")
    ax.set_ylabel("test ACER, % (threshold 0.5; bars: 95% subject bootstrap)")
    ax.set_title(f"Speed / accuracy trade-off\n{run.dataset}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    run.outputs.append(results.save_figure(run.run_dir, "distill_tradeoff", fig))
    return fig
