"""The four seeds' claims, one `@claim` function each, grouped by seed: what the paper says, the quantity
tested, its threshold (from :mod:`paperkit.papers`) and the rule, and how it is measured from a run.

Importing this module registers them in :data:`paperkit.studies.claim_record.CLAIMS`, in this order (the
order of notebook 04's table).
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import pandas as pd

from paperkit import stats
from paperkit.papers import (SEED000_BBB_MAX_REL_LATENCY, SEED000_LLL_MAX_REL_LATENCY, SEED000_MADDS_TOLERANCE_M,
                             SEED002, SEED002_INT8_ACER_TOLERANCE, SEED003)
from paperkit.studies.claim_record import (_PAIRED, BOOT_SEED, S000, S001, S002, S003, Measured, Run, Unmeasurable,
                                          _aligned, _exact, _iv, _measured, _one, _pair, _point, _row_of, _scored,
                                          _table_interval, claim)

PAPER_CONFIGS = ("HHH", "LHH", "HLH", "HHL", "LLL", "BBB")   # seed 000's PTA configurations (Tables 3-4)


# ================================================================================ seed 000: PTA MobileNetV2
def _t3(run: Run, config: str, bn: str) -> pd.DataFrame:
    """One Table 3 variant's test predictions; No-PTA has no PTA statistics to recalibrate (bn "" or shared)."""
    p = run.preds("table3_quality")
    if config == "NoPTA":
        return _one(p, "No-PTA", {"bn": ("", "shared", "none"), "fmt": ("torch", "fp32")}, config="NoPTA")
    if "bn" not in p:
        raise Unmeasurable("predictions/table3_quality.csv.gz has no 'bn' column (shared / recalibrated)")
    return _one(p, f"{config} ({bn} BN)", {"fmt": ("torch", "fp32")}, config=config, bn=bn)


def _hhh_vs_nopta(run: Run, bn: str) -> Measured:
    h, n = _aligned([_t3(run, "HHH", bn), _t3(run, "NoPTA", bn)], f"HHH ({bn} BN) vs No-PTA")
    d = _pair(run, h, n)
    ph, pn = _point(h), _point(n)
    return _measured(d, f"ΔACER {_iv(d)} pts; ACER {ph['acer']:.2f} vs {pn['acer']:.2f}, acc {ph['accuracy']:.2f} vs "
                        f"{pn['accuracy']:.2f}, APCER {ph['apcer']:.2f} vs {pn['apcer']:.2f}, BPCER {ph['bpcer']:.2f} "
                        f"vs {pn['bpcer']:.2f} ({d.n} subjects)")


_HHH_RULE = ("Δ = ACER(HHH, {bn} BN) − ACER(No-PTA), test split, threshold 0.5, percent points; " + _PAIRED +
             "; holds if the CI is wholly < 0, does not hold if wholly >= 0")


@claim("000_hhh_vs_nopta_recalibrated", S000, "PTA-HHH has a lower test ACER than No-PTA (Table 3; BN statistics "
       "recalibrated per configuration)", "ACER 2.42 vs 2.63 (acc 96.89 vs 96.74)", "ΔACER HHH − NoPTA (pts)",
       0.0, "below", _HHH_RULE.format(bn="recalibrated"), "predictions/table3_quality", "HHH < NoPTA (recal. BN)")
def hhh_beats_nopta(run: Run) -> Measured:
    return _hhh_vs_nopta(run, "recalibrated")


@claim("000_hhh_vs_nopta_shared", S000, "PTA-HHH has a lower test ACER than No-PTA (Table 3; shared BN "
       "statistics, the paper-literal evaluation)", "ACER 2.42 vs 2.63 (acc 96.89 vs 96.74)",
       "ΔACER HHH − NoPTA (pts)", 0.0, "below", _HHH_RULE.format(bn="shared"), "predictions/table3_quality",
       "HHH < NoPTA (shared BN)")
def hhh_beats_nopta_shared(run: Run) -> Measured:
    return _hhh_vs_nopta(run, "shared")


def _configs(run: Run, configs: Sequence[str], bn: str = "recalibrated") -> dict[str, pd.DataFrame]:
    run.preds("table3_quality")  # a missing file is reported as such, not as missing configurations
    out, missing = {}, []
    for c in configs:
        try:
            out[c] = _t3(run, c, bn)
        except Unmeasurable:
            missing.append(c)
    if missing:
        raise Unmeasurable(f"predictions/table3_quality.csv.gz lacks configuration(s) {missing} ({bn} BN)")
    return out


@claim("000_every_config_vs_nopta", S000, "Every PTA configuration has a lower test ACER than No-PTA (Table 3)",
       "2.13-2.45 vs 2.63", "max over configs ΔACER c − NoPTA (pts)", 0.0, "below",
       "Δ = max over c in HHH, LHH, HLH, HHL, LLL, BBB (recalibrated BN) of ACER(c) − ACER(No-PTA), threshold 0.5, "
       "percent points; 95% CI: one joint paired subject bootstrap (the max is taken inside each replicate); "
       "holds if the CI is wholly < 0, does not hold if wholly >= 0", "predictions/table3_quality",
       "every config < NoPTA")
def every_config_beats_nopta(run: Run) -> Measured:
    frames = _configs(run, PAPER_CONFIGS)
    scored = _aligned([_t3(run, "NoPTA", ""), *frames.values()], "configurations vs No-PTA")
    i = stats.paired_statistic(scored, lambda m: np.max([x["acer"] - m[0]["acer"] for x in m[1:]], axis=0),
                               n_boot=run.n_boot, seed=BOOT_SEED)
    acer = {c: _point(s)["acer"] for c, s in zip(frames, scored[1:])}
    worst = max(acer, key=acer.get)
    return _measured(i, f"worst {worst} ACER {acer[worst]:.2f} vs No-PTA {_point(scored[0])['acer']:.2f}; "
                        f"max Δ {_iv(i)} pts ({i.n} subjects)")


@claim("000_bbb_best", S000, "PTA-BBB (both branches averaged) has the best ACER (Table 3)", "BBB 2.13, best of all",
       "max over others ΔACER BBB − c (pts)", 0.0, "below",
       "Δ = max over c in No-PTA, HHH, LHH, HLH, HHL, LLL (recalibrated BN) of ACER(BBB) − ACER(c), threshold 0.5, "
       "percent points; 95% CI: one joint paired subject bootstrap; holds if the CI is wholly < 0 (BBB beats the "
       "best other), does not hold if wholly >= 0", "predictions/table3_quality", "BBB best")
def bbb_best_acer(run: Run) -> Measured:
    others = [c for c in PAPER_CONFIGS if c != "BBB"]
    frames = _configs(run, ["BBB", *others])
    scored = _aligned([frames["BBB"], _t3(run, "NoPTA", ""), *(frames[c] for c in others)], "BBB vs the others")
    i = stats.paired_statistic(scored, lambda m: np.max([m[0]["acer"] - x["acer"] for x in m[1:]], axis=0),
                               n_boot=run.n_boot, seed=BOOT_SEED)
    acer = {c: _point(s)["acer"] for c, s in zip(["NoPTA", *others], scored[1:])}
    best = min(acer, key=acer.get)
    return _measured(i, f"BBB {_point(scored[0])['acer']:.2f}, best other {best} {acer[best]:.2f}; max Δ {_iv(i)} pts")


@claim("000_madds", S000, "Table 4 complexity reproduces (MAdds at 128x128)",
       "104.15 / 100.63 / 96.50 / 99.00 / 87.84 / 120.47 M", "max |MAdds ours − paper| (M)",
       SEED000_MADDS_TOLERANCE_M, "at_most",
       "max over configurations of |MAdds(ours) − MAdds(paper)| <= 0.05 M; an exact count, so the interval is the "
       "point (params: BBB prints 2.73, counts 2.719)", "tables/table4_complexity", "MAdds reproduce")
def madds_reproduce(run: Run) -> Measured:
    t4 = run.table("table4_complexity", "madds_m", "paper_madds_m")
    d = float((t4["madds_m"] - t4["paper_madds_m"]).abs().max())
    return _exact(d, f"max MAdds difference {d:.3f} M")


def _rel(run: Run, config: str) -> tuple[float, float, float, float]:
    t4 = run.table("table4_complexity", "config")
    return _table_interval(_row_of(t4, "config", config, "table4_complexity"), "rel_latency", "table4_complexity")


@claim("000_lll_fastest", S000, "PTA-LLL is the fastest configuration (Table 4)", "LLL 0.80x No-PTA on SD845",
       "rel. latency LLL − fastest other (x No-PTA)", 0.0, "below",
       "Δ = rel_latency(LLL) − min over the other rows of rel_latency (ONNX Runtime FP32, x No-PTA); interval from "
       "the table's round-bootstrap CIs combined end to end: [LLL low − min(other high), LLL high − min(other low)] "
       "(conservative); holds if wholly < 0 (LLL's CI is below every other CI), does not hold if wholly >= 0",
       "tables/table4_complexity", "LLL fastest")
def lll_fastest(run: Run) -> Measured:
    t4 = run.table("table4_complexity", "config")
    rows = {c: _table_interval(_row_of(t4, "config", c, "table4_complexity"), "rel_latency", "table4_complexity")
            for c in t4["config"].astype(str).unique()}
    if "LLL" not in rows or len(rows) < 2:
        raise Unmeasurable("tables/table4_complexity.csv needs an LLL row and at least one other")
    lll, others = rows.pop("LLL"), rows
    fastest = min(others, key=lambda c: others[c][0])
    low = lll[1] - min(o[2] for o in others.values())
    high = lll[2] - min(o[1] for o in others.values())
    return Measured(lll[0] - others[fastest][0], low, high, lll[3],
                    f"LLL {lll[0]:.3f}x [{lll[1]:.3f}, {lll[2]:.3f}]; fastest other {fastest} "
                    f"{others[fastest][0]:.3f}x "
                    f"[{others[fastest][1]:.3f}, {others[fastest][2]:.3f}]")


def _rel_claim(run: Run, config: str) -> Measured:
    v, lo, hi, n = _rel(run, config)
    rounds = "" if np.isnan(n) else f" ({n:.0f} rounds)"
    return Measured(v, lo, hi, n, f"{v:.3f}x [{lo:.3f}, {hi:.3f}]{rounds}")


@claim("000_lll_085", S000, "PTA-LLL takes <= 0.85x the No-PTA latency (Table 4)", "0.80x (SD845), 0.80x (SD800)",
       "latency LLL / NoPTA (x)", SEED000_LLL_MAX_REL_LATENCY, "at_most",
       "LLL/No-PTA ONNX Runtime FP32 median latency ratio (batch 1, 1 thread, interleaved rounds); 95% CI: the "
       "table's paired round bootstrap; holds if the CI is wholly <= 0.85, does not hold if wholly > 0.85",
       "tables/table4_complexity", "LLL <= 0.85x")
def lll_speedup(run: Run) -> Measured:
    return _rel_claim(run, "LLL")


@claim("000_bbb_12", S000, "PTA-BBB costs <= 1.2x the No-PTA latency (Table 4)", "1.07x (SD845)",
       "latency BBB / NoPTA (x)", SEED000_BBB_MAX_REL_LATENCY, "at_most",
       "BBB/No-PTA ONNX Runtime FP32 median latency ratio; 95% CI: the table's paired round bootstrap; holds if "
       "the CI is wholly <= 1.2, does not hold if wholly > 1.2", "tables/table4_complexity", "BBB <= 1.2x")
def bbb_cost(run: Run) -> Measured:
    return _rel_claim(run, "BBB")


@claim("000_pta_trains_faster", S000, "Training with PTA blocks is faster per epoch (Table 5)",
       "43.11 vs 49.28 min (0.875x, GTX 1050Ti)", "train step time PTA / NoPTA (x)", 1.0, "below",
       "PTA/No-PTA training step time ratio (same machine, interleaved measurements); 95% CI: the table's "
       "round bootstrap of the ratio; holds if the CI is wholly < 1, does not hold if wholly >= 1",
       "tables/table5_training", "PTA trains faster")
def pta_trains_faster(run: Run) -> Measured:
    t5 = run.table("table5_training", "model")
    pta = t5[t5["model"].astype(str).str.contains("PTA")]
    if pta.empty:
        raise Unmeasurable("tables/table5_training.csv has no PTA row")
    v, lo, hi, n = _table_interval(pta, "rel_step_time", "table5_training")
    return Measured(v, lo, hi, n, f"step time {v:.3f}x [{lo:.3f}, {hi:.3f}] No-PTA (CPU)")


@claim("000_val_curve", S000, "PTA-HHH has a lower validation ACER than No-PTA throughout training (Figure 2)",
       "lower at every epoch; final 0.53% vs 1.0%", "max over epochs Δ val ACER PTA − NoPTA (pts)", 0.0, "below",
       "Δ = max over epochs (and seeds) of val ACER(PTA) − val ACER(No-PTA); interval from the table's per-epoch "
       "CIs combined end to end: [max(PTA low − NoPTA high), max(PTA high − NoPTA low)]; holds if wholly < 0 (lower "
       "at every epoch), does not hold if wholly >= 0 (higher at some epoch)", "tables/figure2_val_acer",
       "PTA lower val curve")
def pta_better_val_curve(run: Run) -> Measured:
    f2 = run.table("figure2_val_acer", "model", "epoch", "val_acer")
    pta_models = [m for m in f2["model"].astype(str).unique() if "PTA" in m]
    base_models = [m for m in f2["model"].astype(str).unique() if "PTA" not in m]
    if not pta_models or not base_models:
        raise Unmeasurable("tables/figure2_val_acer.csv needs a PTA and a No-PTA model")
    points = f2.pivot_table(index=[c for c in ("seed", "epoch") if c in f2], columns="model", values="val_acer")
    d = points[pta_models[0]] - points[base_models[0]]
    wins = int((d <= 0).sum())
    summary = f"lower or equal at {wins}/{len(d)} epochs; final {points[pta_models[0]].iloc[-1]:.2f}% vs " \
              f"{points[base_models[0]].iloc[-1]:.2f}%"
    if "val_acer_ci_low" not in f2 or "val_acer_ci_high" not in f2:
        raise Unmeasurable(f"{summary}; tables/figure2_val_acer.csv has no val_acer_ci_low/high, and a verdict "
                           "needs an interval")
    idx = [c for c in ("seed", "epoch") if c in f2]
    lo = f2.pivot_table(index=idx, columns="model", values="val_acer_ci_low")
    hi = f2.pivot_table(index=idx, columns="model", values="val_acer_ci_high")
    p, b = pta_models[0], base_models[0]
    return Measured(float(d.max()), float((lo[p] - hi[b]).max()), float((hi[p] - lo[b]).max()), float("nan"), summary)


# ================================================================================ seed 002: Fourier texture, INT8
def _deploy_row(run: Run, model: str, fmt: str) -> pd.DataFrame:
    d = run.table("texture_deploy", "model", "format")
    sel = d[(d["model"].astype(str) == model) & (d["format"].astype(str) == fmt)]
    if sel.empty:
        raise Unmeasurable(f"tables/texture_deploy.csv has no {model} {fmt} row")
    return sel


def _texture(run: Run, model: str, fmt: str) -> pd.DataFrame:
    return _one(run.preds("texture"), f"{model} {fmt}", model=model, fmt=fmt)


@claim("002_int8_size", S002, "The INT8 ONNX model is about 600 KB", "600 KB", "INT8 file size (KB)",
       SEED002["size_kb"], "at_most",
       "INT8 ONNX file size of the texture model <= 600 KB (largest over seeds); exact, so the interval is the point",
       "tables/texture_deploy", "INT8 <= 600 KB")
def int8_size(run: Run) -> Measured:
    r = _deploy_row(run, "texture", "int8")
    if "size_kb" not in r:
        raise Unmeasurable("tables/texture_deploy.csv has no size_kb column")
    s = float(r["size_kb"].max())
    return _exact(s, f"{s:.0f} KB")


@claim("002_int8_no_cost", S002, "INT8 quantization costs no accuracy", "98% accuracy after INT8",
       "ΔACER INT8 − FP32 (pts)", SEED002_INT8_ACER_TOLERANCE, "within",
       "Δ = ACER(INT8) − ACER(FP32) of the texture model on the same test images, threshold 0.5, percent points; "
       + _PAIRED + "; holds if the CI lies inside [−0.5, 0.5], does not hold if wholly outside, else inconclusive",
       "predictions/texture", "INT8 costs no ACER")
def int8_no_accuracy_cost(run: Run) -> Measured:
    q, f = _aligned([_texture(run, "texture", "int8"), _texture(run, "texture", "fp32")], "INT8 vs FP32")
    d = _pair(run, q, f)
    return _measured(d, f"ACER {_point(f)['acer']:.2f} (FP32) vs {_point(q)['acer']:.2f} (INT8), Δ {_iv(d)} pts "
                        f"({d.n} subjects)")


@claim("002_int8_20ms", S002, "The INT8 model runs in under 20 ms on an old CPU", "< 20 ms, Core i7 2nd gen",
       "INT8 median latency (ms)", SEED002["latency_ms"], "below",
       "INT8 ONNX Runtime median latency (batch 1, 1 thread, this machine); 95% CI: the table's round bootstrap; "
       "holds if the CI is wholly < 20 ms, does not hold if wholly >= 20 ms", "tables/texture_deploy", "INT8 < 20 ms")
def int8_under_20ms(run: Run) -> Measured:
    v, lo, hi, n = _table_interval(_deploy_row(run, "texture", "int8"), "latency_ms", "texture_deploy")
    return Measured(v, lo, hi, n, f"{v:.2f} ms [{lo:.2f}, {hi:.2f}]")


@claim("002_fourier_helps", S002, "The Fourier-spectrum auxiliary loss improves the texture model",
       "motivates the method (no ablation printed)", "ΔACER with − without Fourier (pts)", 0.0, "below",
       "Δ = ACER(texture, FP32) − ACER(texture_no_fourier, FP32), same seed, data and budget, threshold 0.5, "
       "percent points; " + _PAIRED + "; holds if the CI is wholly < 0, does not hold if wholly >= 0",
       "predictions/texture", "Fourier loss helps")
def fourier_helps(run: Run) -> Measured:
    a, b = _aligned([_texture(run, "texture", "fp32"), _texture(run, "texture_no_fourier", "fp32")],
                    "with vs without the Fourier loss")
    d = _pair(run, a, b)
    return _measured(d, f"ACER {_point(a)['acer']:.2f} with vs {_point(b)['acer']:.2f} without, Δ {_iv(d)} pts")


@claim("002_celeba_98", S002, "98% accuracy on the CelebA-Spoof benchmark", "98%", "INT8 test accuracy (%)",
       SEED002["accuracy"], "at_least",
       "only measurable on CelebA-Spoof: INT8 test accuracy (threshold 0.5) with its subject-bootstrap CI >= 98%",
       "tables/texture_deploy", "98% on CelebA-Spoof")
def texture_98_accuracy(run: Run) -> Measured:
    r = _deploy_row(run, "texture", "int8")
    v, lo, hi, n = _table_interval(r, "accuracy", "texture_deploy")
    if run.synthetic:
        raise Unmeasurable(f"{v:.2f}% [{lo:.2f}, {hi:.2f}] on synthetic data: not a CelebA-Spoof number")
    return Measured(v, lo, hi, n, f"{v:.2f}% [{lo:.2f}, {hi:.2f}]")


# ================================================================================ seed 003 / 001: distillation
_DEFAULT_STUDENT = {"seed 003": "student_kd_hinton", "seed 001": "student_kd"}


def _judged(run: Run, who: str) -> tuple[str, str]:
    """The student judged for a seed: the swap table's `judged_for` column names it; without that column,
    the model that notebook 03 trains the way that seed describes (named in the note)."""
    s = run.tables.get("swap")
    if s is not None and "judged_for" in s and "model" in s:
        sel = s[s["judged_for"].fillna("").astype(str).str.contains(who.split()[-1])]
        if not sel.empty:
            return str(sel["model"].iloc[0]), ""
    return _DEFAULT_STUDENT[who], " (by name: swap.csv has no judged_for)"


def _swap(run: Run, model: str) -> pd.DataFrame:
    return _one(run.preds("swap"), model, {"fmt": ("fp32", "torch", "")}, model=model)


def _kd_vs_alone(run: Run, who: str) -> Measured:
    student, note = _judged(run, who)
    a, b = _aligned([_swap(run, student), _swap(run, "student_alone")], f"{student} vs student_alone")
    d = _pair(run, a, b)
    return _measured(d, f"{student}{note}: ACER {_point(a)['acer']:.2f} vs {_point(b)['acer']:.2f} alone, "
                        f"Δ {_iv(d)} pts ({d.n} subjects)")


_KD_RULE = ("Δ = ACER({s}) − ACER(student_alone), same architecture, seed and budget, threshold 0.5, percent points; "
            + _PAIRED + "; holds if the CI is wholly < 0, does not hold if wholly >= 0")


@claim("003_student_small", S003, "The distilled student has under 1 M parameters", "< 1 M", "student params (M)",
       SEED003["student_params_m"], "below",
       "parameters of the student judged for seed 003 (swap.csv judged_for) < 1 M; exact",
       "tables/swap", "student < 1 M params")
def student_small(run: Run) -> Measured:
    student, note = _judged(run, "seed 003")
    r = _row_of(run.table("swap", "model", "params_m"), "model", student, "swap")
    p = float(r["params_m"].iloc[0])
    return _exact(p, f"{student}{note}: {p:.3f} M")


@claim("003_student_7x", S003, "The student is about 7x faster than the teacher", "nearly 7x",
       "speed-up teacher / student (x)", SEED003["speedup"], "at_least",
       "teacher/student ONNX Runtime FP32 latency ratio (batch 1, 1 thread, interleaved rounds), student judged for "
       "seed 003; 95% CI: the table's round bootstrap (speedup_vs_teacher_ci_low/high, or 1/rel_latency CI); "
       "holds if the CI is wholly >= 7, does not hold if wholly < 7", "tables/swap", "student 7x faster")
def student_7x(run: Run) -> Measured:
    student, note = _judged(run, "seed 003")
    r = _row_of(run.table("swap", "model"), "model", student, "swap")
    if "speedup_vs_teacher_ci_low" in r:
        v, lo, hi, n = _table_interval(r, "speedup_vs_teacher", "swap")
    elif "rel_latency_ci_low" in r:
        rv, rlo, rhi, n = _table_interval(r, "rel_latency", "swap")  # student / teacher
        v, lo, hi = 1 / rv, 1 / rhi, 1 / rlo
    else:
        raise Unmeasurable("tables/swap.csv has no speedup_vs_teacher_ci_low/high (or rel_latency_ci_low/high): "
                           "a timing verdict needs the ratio's interval")
    return Measured(v, lo, hi, n, f"{student}{note}: {v:.2f}x [{lo:.2f}, {hi:.2f}] FP32")


@claim("003_student_99pct", S003, "The student keeps about 99% of the teacher's accuracy", "~99%",
       "accuracy student / teacher", SEED003["accuracy_ratio"], "at_least",
       "accuracy(student judged for seed 003) / accuracy(teacher), test split, threshold 0.5; 95% CI: one joint "
       "paired subject bootstrap of the ratio; holds if the CI is wholly >= 0.99, does not hold if wholly < 0.99",
       "predictions/swap", "student keeps 99%")
def student_99pct(run: Run) -> Measured:
    student, note = _judged(run, "seed 003")
    s, t = _aligned([_swap(run, student), _swap(run, "teacher")], f"{student} vs teacher")
    i = stats.paired_statistic([s, t], lambda m: m[0]["accuracy"] / m[1]["accuracy"], n_boot=run.n_boot,
                               seed=BOOT_SEED)
    return _measured(i, f"{student}{note}: {100 * i.value:.1f}% [{100 * i.low:.1f}, {100 * i.high:.1f}] "
                        f"({_point(s)['accuracy']:.2f} vs {_point(t)['accuracy']:.2f})")


@claim("003_kd_helps", S003, "Distillation gives a better student than training it alone",
       "KD students match the teacher",
       "ΔACER KD − alone (pts)", 0.0, "below", _KD_RULE.format(s="student judged for seed 003: Hinton KD"),
       "predictions/swap", "KD beats alone (003)")
def kd_helps(run: Run) -> Measured:
    return _kd_vs_alone(run, "seed 003")


@claim("001_weighted_kd_helps", S001, "Seed 001's weighted distillation gives a better student than training it alone",
       "distillation keeps the accuracy", "ΔACER KD − alone (pts)", 0.0, "below",
       _KD_RULE.format(s="student judged for seed 001: weighted KD"), "predictions/swap",
       "weighted KD beats alone (001)")
def weighted_kd_helps(run: Run) -> Measured:
    return _kd_vs_alone(run, "seed 001")


# ---------------------------------------------------------------------------- seed 001: cross-domain
_ARROW = re.compile(r"([^\s>]+?)\s*-+>\s*([^\s]+)")


def _directions(df: pd.DataFrame) -> pd.DataFrame:
    """Add train_domain / test_domain / phase (val or test) to cross-domain predictions. Accepted encodings:
    columns train_domain and test_domain; or "A->B" in `config` with `split` val/test; or `split` "A->B test"."""
    df = df.copy()
    if "train_domain" in df and "test_domain" in df:
        df["train_domain"], df["test_domain"] = df["train_domain"].astype(str), df["test_domain"].astype(str)
        df["phase"] = df["split"].str.extract(r"(val|test)", expand=False)
        return df
    for col in ("config", "split"):
        m = df[col].str.extract(_ARROW) if col in df else None
        if m is not None and m.notna().all().all():
            df["train_domain"], df["test_domain"] = m[0], m[1]
            df["phase"] = df["split"].str.extract(r"(val|test)", expand=False)
            return df
    raise Unmeasurable("predictions/cross_domain.csv.gz: cannot tell the train/test domains (expected columns "
                       "train_domain/test_domain, or 'A->B' in config or split)")


def _cross_decisions(run: Run, level: str) -> dict[str, pd.DataFrame]:
    """Per model, its cross-domain test images (train domain != test domain) with score replaced by the
    decision at the training domain's validation-EER threshold (per model, seed, direction and level), so
    that directions with different thresholds pool into one paired comparison at 0.5. Video level gives
    each frame its video's mean score (a video weighs as many frames as it has)."""
    df = _directions(run.preds("cross_domain", split=""))
    if df["phase"].isna().any():
        raise Unmeasurable("predictions/cross_domain.csv.gz: split must say val or test")
    table = run.tables.get("cross_domain_hter")
    out: dict[str, list[pd.DataFrame]] = {}
    for (model, seed, a), g in df.groupby(["model", "seed", "train_domain"], sort=True):
        if level == "video":
            if "video" not in g or (g["video"] == "").any():
                raise Unmeasurable("predictions/cross_domain.csv.gz has no video ids: no video-level scores")
            g = g.assign(score=g.groupby(["phase", "test_domain", "video"])["score"].transform("mean"))
        val = g[(g["phase"] == "val")]
        if val["test_domain"].eq(a).any():
            val = val[val["test_domain"] == a]
        thr = stats.thresholds(_scored(val) if len(val) else None).get("val_eer")
        if thr is None and table is not None and {"threshold", "level", "model", "train_domain"} <= set(table):
            t = table[(table["model"] == model) & (table["train_domain"].astype(str) == a) & (table["level"] == level)]
            if "seed" in t:
                t = t[t["seed"].astype(str) == str(seed)]
            thr = float(t["threshold"].iloc[0]) if len(t) else None
        if thr is None:
            raise Unmeasurable(f"cross-domain {model} trained on {a}: no validation scores and no table threshold")
        test = g[(g["phase"] == "test") & (g["test_domain"] != a)]
        out.setdefault(str(model), []).append(test.assign(score=(test["score"] >= thr).astype(float)))
    if not out:
        raise Unmeasurable("predictions/cross_domain.csv.gz has no cross-domain test rows")
    return {m: pd.concat(v, ignore_index=True) for m, v in out.items()}


@claim("001_teacher_generalizes", S001, "A large frozen pretrained backbone generalizes across domains better than a "
       "small model trained from scratch", "cross-dataset HTER 0-5.6%", "max over students ΔHTER teacher − s (pts)",
       0.0, "below",
       "Δ = max over students s of HTER(teacher) − HTER(s), cross-domain test images of both directions pooled, each "
       "model at its training domain's validation-EER threshold, frame level, percent points; 95% CI: one joint "
       "paired subject bootstrap; holds if the CI is wholly < 0 (teacher beats every student), does not hold if "
       "wholly >= 0", "predictions/cross_domain", "teacher generalizes")
def teacher_generalizes(run: Run) -> Measured:
    dec = _cross_decisions(run, "frame")
    if "teacher" not in dec or len(dec) < 2:
        raise Unmeasurable("predictions/cross_domain.csv.gz needs the teacher and at least one student")
    students = [m for m in dec if m != "teacher"]
    extra = ["train_domain", "test_domain"]
    scored = _aligned([dec["teacher"], *(dec[m] for m in students)], "teacher vs students", extra)
    i = stats.paired_statistic(scored, lambda m: np.max([m[0]["acer"] - x["acer"] for x in m[1:]], axis=0),
                               n_boot=run.n_boot, seed=BOOT_SEED)
    h = {m: _point(s)["acer"] for m, s in zip(["teacher", *students], scored)}
    best = min(students, key=h.get)
    return _measured(i, f"HTER teacher {h['teacher']:.2f}% vs best student {best} {h[best]:.2f}%; max Δ {_iv(i)} pts "
                        f"({i.n} subjects)")


@claim("001_video_level", S001, "Aggregating frame scores per video lowers the error",
       "session score = mean of frame scores", "ΔHTER video − frame (pts)", 0.0, "below",
       "Δ = HTER(video level: mean frame score per video) − HTER(frame level), cross-domain test images of every "
       "model and both directions pooled, each at its own validation-EER threshold, percent points; " + _PAIRED +
       "; holds if the CI is wholly < 0, does not hold if wholly >= 0", "predictions/cross_domain", "video level helps")
def video_level_helps(run: Run) -> Measured:
    frame, video = _cross_decisions(run, "frame"), _cross_decisions(run, "video")
    models = sorted(frame)
    a = pd.concat([video[m].assign(model=m) for m in models], ignore_index=True)
    b = pd.concat([frame[m].assign(model=m) for m in models], ignore_index=True)
    v, f = _aligned([a, b], "video vs frame level", ["model", "train_domain", "test_domain"])
    d = _pair(run, v, f)
    return _measured(d, f"HTER video {_point(v)['acer']:.2f}% vs frame {_point(f)['acer']:.2f}%, Δ {_iv(d)} pts "
                        f"({len(models)} models pooled)")


@claim("001_cross_dataset_0", S001, "HTER 0% cross-dataset on MSU-MFSD and Replay-Attack", "0% (Entry-V2)",
       "cross-dataset HTER (%)", 0.0, "at_most", "needs MSU-MFSD / Replay-Attack / OULU-NPU, which cannot be obtained "
       "here", "-", "0% HTER cross-dataset")
def celeba_cross_dataset(run: Run) -> Measured:
    raise Unmeasurable("those datasets are not available offline")
