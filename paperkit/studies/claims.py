"""Notebook 04: the four seeds' claims checked against the tables notebooks 00-03 wrote.

Every verdict is computed here from those tables by an explicit rule (kept in the `rule` column), never
typed by hand: "holds", "does not hold", or "not measurable here" (a table is missing, or the claim is
an absolute number on a dataset we do not have, e.g. CelebA-Spoof accuracy measured on synthetic data).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from paperkit import results

HOLDS, FAILS, NA = "holds", "does not hold", "not measurable here"
S000, S001, S002, S003 = "000 PTA", "001 generalization", "002 texture INT8", "003 SWAP distillation"
TABLES = ("table3_quality", "table4_complexity", "table5_training", "figure2_val_acer", "texture_deploy",
          "texture_int8_agreement", "swap", "cross_domain_hter")


@dataclass
class Tables:
    run_dir: Path
    t: dict[str, pd.DataFrame | None]

    def get(self, name: str) -> pd.DataFrame | None:
        return self.t.get(name)

    @property
    def dataset(self) -> str:
        for df in self.t.values():
            if df is not None and "dataset" in df:
                return str(df["dataset"].iloc[0])
        return "none"

    @property
    def synthetic(self) -> bool:
        return self.dataset.startswith("synthetic")


def load_tables(run_dir: str | Path) -> Tables:
    return Tables(Path(run_dir), {n: results.read_table(run_dir, n) for n in TABLES})


def _verdict(ok: bool | None) -> str:
    return NA if ok is None else (HOLDS if ok else FAILS)


def _fmt(x: float, unit: str = "") -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.4g}{unit}"


Row = dict[str, Any]
CLAIMS: list[Callable[[Tables], Row]] = []


def claim(fn: Callable[[Tables], Row]) -> Callable[[Tables], Row]:
    CLAIMS.append(fn)
    return fn


def _missing(seed: str, text: str, paper: str, rule: str, table: str) -> Row:
    return {"seed": seed, "claim": text, "paper": paper, "ours": f"table {table} missing", "verdict": NA,
            "rule": rule, "source": table}


def _row(seed: str, text: str, paper: str, ours: str, ok: bool | None, rule: str, source: str) -> Row:
    return {"seed": seed, "claim": text, "paper": paper, "ours": ours, "verdict": _verdict(ok), "rule": rule,
            "source": source}


# --- seed 000: PTA MobileNetV2 --------------------------------------------------------------------
@claim
def hhh_beats_nopta(t: Tables) -> Row:
    text, paper = "PTA-HHH beats No-PTA on every metric (Table 3)", "acc 96.89 vs 96.74, ACER 2.42 vs 2.63"
    rule = "HHH accuracy >= No-PTA and APCER, BPCER, ACER <= No-PTA, ACER strictly lower"
    t3 = t.get("table3_quality")
    if t3 is None:
        return _missing(S000, text, paper, rule, "table3_quality")
    r = t3.set_index("config")
    h, n = r.loc["HHH"], r.loc["NoPTA"]
    ok = (h.accuracy >= n.accuracy and h.apcer <= n.apcer and h.bpcer <= n.bpcer and h.acer < n.acer)
    ours = (f"acc {h.accuracy:.2f} vs {n.accuracy:.2f}, APCER {h.apcer:.2f} vs {n.apcer:.2f}, "
            f"BPCER {h.bpcer:.2f} vs {n.bpcer:.2f}, ACER {h.acer:.2f} vs {n.acer:.2f}")
    return _row(S000, text, paper, ours, ok, rule, "table3_quality")


@claim
def every_config_beats_nopta(t: Tables) -> Row:
    text, paper = "Every PTA configuration has a lower test ACER than No-PTA (Table 3)", "2.13-2.45 vs 2.63"
    rule = "max ACER over HHH, LHH, HLH, HHL, LLL, BBB < No-PTA ACER"
    t3 = t.get("table3_quality")
    if t3 is None:
        return _missing(S000, text, paper, rule, "table3_quality")
    r = t3.set_index("config")["acer"]
    worst = r.drop("NoPTA").max()
    return _row(S000, text, paper, f"worst PTA ACER {worst:.2f} ({r.drop('NoPTA').idxmax()}) vs "
                f"No-PTA {r['NoPTA']:.2f}", bool(worst < r["NoPTA"]), rule, "table3_quality")


@claim
def bbb_best_acer(t: Tables) -> Row:
    text, paper = "PTA-BBB (both branches averaged) has the best ACER (Table 3)", "BBB 2.13, best of all"
    rule = "BBB ACER <= every other configuration's ACER"
    t3 = t.get("table3_quality")
    if t3 is None:
        return _missing(S000, text, paper, rule, "table3_quality")
    r = t3.set_index("config")["acer"]
    return _row(S000, text, paper, f"BBB {r['BBB']:.2f}, best {r.min():.2f} ({r.idxmin()})",
                bool(r["BBB"] <= r.min()), rule, "table3_quality")


@claim
def madds_reproduce(t: Tables) -> Row:
    text, paper = "Table 4 complexity reproduces (MAdds at 128x128)", "104.15 / 100.63 / 96.50 / 99.00 / 87.84 / 120.47 M"
    rule = "max |ours - paper| MAdds <= 0.05 M over all configurations (params: BBB prints 2.73, counts 2.719)"
    t4 = t.get("table4_complexity")
    if t4 is None:
        return _missing(S000, text, paper, rule, "table4_complexity")
    d = (t4["madds_m"] - t4["paper_madds_m"]).abs().max()
    return _row(S000, text, paper, f"max MAdds difference {d:.3f} M", bool(d <= 0.05), rule, "table4_complexity")


@claim
def lll_fastest(t: Tables) -> Row:
    text, paper = "PTA-LLL is the fastest configuration (Table 4)", "LLL 0.80x No-PTA on SD845"
    rule = "LLL has the lowest ONNX Runtime FP32 median latency of all rows, measured in one run"
    t4 = t.get("table4_complexity")
    if t4 is None:
        return _missing(S000, text, paper, rule, "table4_complexity")
    r = t4.set_index("config")["latency_ms_ort"]
    return _row(S000, text, paper, f"fastest {r.idxmin()} ({r.min():.3g} ms); LLL {r['LLL']:.3g} ms",
                bool(r.idxmin() == "LLL"), rule, "table4_complexity")


@claim
def lll_speedup(t: Tables) -> Row:
    text, paper = "PTA-LLL takes <= 0.85x the No-PTA latency (Table 4)", "0.80x (SD845), 0.80x (SD800)"
    rule = "LLL/No-PTA ONNX Runtime FP32 median latency <= 0.85 (batch 1, 1 thread, same run)"
    t4 = t.get("table4_complexity")
    if t4 is None:
        return _missing(S000, text, paper, rule, "table4_complexity")
    x = float(t4.set_index("config").loc["LLL", "rel_latency"])
    return _row(S000, text, paper, f"{x:.3f}x", x <= 0.85, rule, "table4_complexity")


@claim
def bbb_cost(t: Tables) -> Row:
    text, paper = "PTA-BBB costs <= 1.2x the No-PTA latency (Table 4)", "1.07x (SD845)"
    rule = "BBB/No-PTA ONNX Runtime FP32 median latency <= 1.2"
    t4 = t.get("table4_complexity")
    if t4 is None:
        return _missing(S000, text, paper, rule, "table4_complexity")
    x = float(t4.set_index("config").loc["BBB", "rel_latency"])
    return _row(S000, text, paper, f"{x:.3f}x", x <= 1.2, rule, "table4_complexity")


@claim
def pta_trains_faster(t: Tables) -> Row:
    text, paper = "Training with PTA blocks is faster per epoch (Table 5)", "43.11 vs 49.28 min (0.875x, GTX 1050Ti)"
    rule = "PTA/No-PTA mean epoch wall time < 1 (same machine, interleaved epochs)"
    t5 = t.get("table5_training")
    if t5 is None:
        return _missing(S000, text, paper, rule, "table5_training")
    x = float(t5["epoch_time_min"].iloc[1] / t5["epoch_time_min"].iloc[0])
    return _row(S000, text, paper, f"{x:.3f}x ({t5['epoch_time_min'].iloc[1]:.2f} vs "
                f"{t5['epoch_time_min'].iloc[0]:.2f} min, CPU)", x < 1, rule, "table5_training")


@claim
def pta_better_val_curve(t: Tables) -> Row:
    text, paper = "PTA-HHH has a lower validation ACER than No-PTA throughout training (Figure 2)", \
        "lower at every epoch; final 0.53% vs 1.0%"
    rule = "PTA val ACER <= No-PTA val ACER at every epoch"
    f2 = t.get("figure2_val_acer")
    if f2 is None:
        return _missing(S000, text, paper, rule, "figure2_val_acer")
    w = f2.pivot_table(index="epoch", columns="model", values="val_acer")
    pta_col = [c for c in w.columns if "PTA" in c][0]
    base_col = [c for c in w.columns if c != pta_col][0]
    wins = int((w[pta_col] <= w[base_col]).sum())
    return _row(S000, text, paper, f"lower or equal at {wins}/{len(w)} epochs; final {w[pta_col].iloc[-1]:.2f}% "
                f"vs {w[base_col].iloc[-1]:.2f}%", wins == len(w), rule, "figure2_val_acer")


# --- seed 002: Fourier texture model, INT8 --------------------------------------------------------
def _deploy(t: Tables, model: str, fmt: str) -> pd.Series | None:
    d = t.get("texture_deploy")
    if d is None:
        return None
    sel = d[(d["model"] == model) & (d["format"] == fmt)]
    return None if sel.empty else sel.iloc[0]


@claim
def int8_size(t: Tables) -> Row:
    text, paper, rule = "The INT8 ONNX model is about 600 KB", "600 KB", "INT8 file size <= 600 KB"
    r = _deploy(t, "texture", "int8")
    if r is None:
        return _missing(S002, text, paper, rule, "texture_deploy")
    return _row(S002, text, paper, f"{r.size_kb:.0f} KB", bool(r.size_kb <= 600), rule, "texture_deploy")


@claim
def int8_no_accuracy_cost(t: Tables) -> Row:
    text, paper = "INT8 quantization costs no accuracy", "98% accuracy after INT8"
    rule = "|ACER(INT8) - ACER(FP32)| <= 0.5 points on the test split"
    a, b = _deploy(t, "texture", "fp32"), _deploy(t, "texture", "int8")
    if a is None or b is None:
        return _missing(S002, text, paper, rule, "texture_deploy")
    d = abs(b.acer - a.acer)
    return _row(S002, text, paper, f"ACER {a.acer:.2f} (FP32) vs {b.acer:.2f} (INT8), delta {d:.2f}",
                bool(d <= 0.5), rule, "texture_deploy")


@claim
def int8_under_20ms(t: Tables) -> Row:
    text, paper = "The INT8 model runs in under 20 ms on an old CPU", "< 20 ms, Core i7 2nd gen"
    rule = "INT8 median latency < 20 ms (batch 1, 1 thread, this machine)"
    r = _deploy(t, "texture", "int8")
    if r is None:
        return _missing(S002, text, paper, rule, "texture_deploy")
    return _row(S002, text, paper, f"{r.latency_ms:.2f} ms", bool(r.latency_ms < 20), rule, "texture_deploy")


@claim
def fourier_helps(t: Tables) -> Row:
    text, paper = "The Fourier-spectrum auxiliary loss improves the texture model", "motivates the method (no ablation printed)"
    rule = "FP32 test ACER with Fourier loss < without (same seed, data, budget)"
    a, b = _deploy(t, "texture", "fp32"), _deploy(t, "texture_no_fourier", "fp32")
    if a is None or b is None:
        return _missing(S002, text, paper, rule, "texture_deploy")
    return _row(S002, text, paper, f"ACER {a.acer:.2f} with vs {b.acer:.2f} without", bool(a.acer < b.acer),
                rule, "texture_deploy")


@claim
def texture_98_accuracy(t: Tables) -> Row:
    text, paper = "98% accuracy on the CelebA-Spoof benchmark", "98%"
    rule = "only measurable on CelebA-Spoof: INT8 test accuracy >= 98%"
    r = _deploy(t, "texture", "int8")
    if r is None:
        return _missing(S002, text, paper, rule, "texture_deploy")
    if t.synthetic:
        return _row(S002, text, paper, f"{r.accuracy:.2f}% on synthetic data (not comparable)", None, rule,
                    "texture_deploy")
    return _row(S002, text, paper, f"{r.accuracy:.2f}%", bool(r.accuracy >= 98), rule, "texture_deploy")


# --- seed 003: SWAP ---------------------------------------------------------------------------------
def _swap(t: Tables, model: str) -> pd.Series | None:
    s = t.get("swap")
    if s is None:
        return None
    sel = s[s["model"] == model]
    return None if sel.empty else sel.iloc[0]


@claim
def student_small(t: Tables) -> Row:
    text, paper, rule = "The distilled student has under 1 M parameters", "< 1 M", "student_kd params < 1 M"
    r = _swap(t, "student_kd")
    if r is None:
        return _missing(S003, text, paper, rule, "swap")
    return _row(S003, text, paper, f"{r.params_m:.3f} M", bool(r.params_m < 1), rule, "swap")


@claim
def student_7x(t: Tables) -> Row:
    text, paper = "The student is about 7x faster than the teacher", "nearly 7x"
    rule = "teacher/student_kd ONNX Runtime FP32 latency >= 7 (batch 1, 1 thread, same run)"
    r, te = _swap(t, "student_kd"), _swap(t, "teacher")
    if r is None or te is None:
        return _missing(S003, text, paper, rule, "swap")
    x = te.latency_ms / r.latency_ms
    extra = f"; INT8 student vs FP32 teacher {te.latency_ms / r.latency_ms_int8:.2f}x" if "latency_ms_int8" in r else ""
    return _row(S003, text, paper, f"{x:.2f}x FP32{extra}", bool(x >= 7), rule, "swap")


@claim
def student_99pct(t: Tables) -> Row:
    text, paper = "The student keeps about 99% of the teacher's accuracy", "~99%"
    rule = "student_kd accuracy / teacher accuracy >= 0.99"
    r, te = _swap(t, "student_kd"), _swap(t, "teacher")
    if r is None or te is None:
        return _missing(S003, text, paper, rule, "swap")
    x = r.accuracy / te.accuracy if te.accuracy else float("nan")
    return _row(S003, text, paper, f"{100 * x:.1f}% ({r.accuracy:.2f} vs {te.accuracy:.2f})", bool(x >= 0.99),
                rule, "swap")


@claim
def kd_helps(t: Tables) -> Row:
    text, paper = "Distillation gives a better student than training it alone", "KD students match the teacher"
    rule = "student_kd test ACER <= student_alone test ACER (same seed and budget)"
    a, b = _swap(t, "student_kd"), _swap(t, "student_alone")
    if a is None or b is None:
        return _missing(S003, text, paper, rule, "swap")
    return _row(S003, text, paper, f"ACER {a.acer:.2f} (KD) vs {b.acer:.2f} (alone)", bool(a.acer <= b.acer),
                rule, "swap")


# --- seed 001: generalization -----------------------------------------------------------------------
def _cross(t: Tables) -> pd.DataFrame | None:
    c = t.get("cross_domain_hter")
    if c is None:
        return None
    c = c[c["train_domain"] != c["test_domain"]].dropna(subset=["hter"])
    return c if not c.empty else None


@claim
def teacher_generalizes(t: Tables) -> Row:
    text, paper = ("A large frozen pretrained backbone generalizes across domains better than a small "
                   "model trained from scratch"), "cross-dataset HTER 0-5.6%"
    rule = "mean cross-domain frame HTER: teacher <= best student trained the same way"
    c = _cross(t)
    if c is None:
        return _missing(S001, text, paper, rule, "cross_domain_hter")
    f = c[c["level"] == "frame"].groupby("model")["hter"].mean()
    students = f.drop("teacher", errors="ignore")
    if "teacher" not in f or students.empty:
        return _row(S001, text, paper, "teacher or students missing from the table", None, rule, "cross_domain_hter")
    return _row(S001, text, paper, f"teacher {f['teacher']:.2f}% vs best student {students.min():.2f}% "
                f"({students.idxmin()})", bool(f["teacher"] <= students.min()), rule, "cross_domain_hter")


@claim
def video_level_helps(t: Tables) -> Row:
    text, paper = "Aggregating frame scores per video lowers the error", "session score = mean of frame scores"
    rule = "mean cross-domain HTER at video level <= at frame level (all models)"
    c = _cross(t)
    if c is None:
        return _missing(S001, text, paper, rule, "cross_domain_hter")
    lv = c.groupby("level")["hter"].mean()
    if not {"frame", "video"} <= set(lv.index):
        return _row(S001, text, paper, "no video-level rows", None, rule, "cross_domain_hter")
    return _row(S001, text, paper, f"video {lv['video']:.2f}% vs frame {lv['frame']:.2f}%",
                bool(lv["video"] <= lv["frame"]), rule, "cross_domain_hter")


@claim
def celeba_cross_dataset(t: Tables) -> Row:
    text, paper = "HTER 0% cross-dataset on MSU-MFSD and Replay-Attack", "0% (Entry-V2)"
    rule = "needs MSU-MFSD / Replay-Attack / OULU-NPU, which cannot be obtained here"
    return _row(S001, text, paper, "those datasets are not available offline", None, rule, "-")


def claims_table(run_dir: str | Path) -> pd.DataFrame:
    """One row per claim with the paper's figure, ours, the dataset, and the computed verdict."""
    t = load_tables(run_dir)
    rows = []
    for fn in CLAIMS:
        try:
            rows.append(fn(t))
        except (KeyError, IndexError) as e:  # a table with an unexpected shape: say so, don't guess
            rows.append({"seed": "unknown", "claim": fn.__name__, "paper": "", "ours": f"cannot read: {e!r}",
                         "verdict": NA, "rule": "", "source": ""})
    df = pd.DataFrame(rows)
    df.insert(4, "dataset", t.dataset)
    return df


def write_claims(run_dir: str | Path) -> tuple[pd.DataFrame, Path]:
    df = claims_table(run_dir)
    return df, results.write_table(run_dir, "claims", df)


def side_by_side(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """The seeds' tables with the paper's columns next to ours, for display in notebook 04."""
    t = load_tables(run_dir)
    out: dict[str, pd.DataFrame] = {}
    if (t3 := t.get("table3_quality")) is not None:
        out["Seed 000 Table 3 (quality, %)"] = t3[["config", "accuracy", "paper_accuracy", "apcer", "paper_apcer",
                                                   "bpcer", "paper_bpcer", "acer", "paper_acer"]]
    if (t4 := t.get("table4_complexity")) is not None:
        out["Seed 000 Table 4 (complexity, latency)"] = t4[["config", "params_m", "paper_params_m", "madds_m",
                                                             "paper_madds_m", "latency_ms_ort", "rel_latency",
                                                             "paper_rel_latency"]]
    if (t5 := t.get("table5_training")) is not None:
        out["Seed 000 Table 5 (training)"] = t5[[c for c in t5.columns if c != "dataset"]]
    if (d := t.get("texture_deploy")) is not None:
        out["Seed 002 (size, accuracy, CPU latency)"] = d[[c for c in d.columns if c != "dataset"]]
    if (s := t.get("swap")) is not None:
        keep = [c for c in ("model", "params_m", "size_kb_fp32", "size_kb_int8", "latency_ms", "speedup_vs_teacher",
                            "accuracy", "accuracy_vs_teacher", "acer", "energy_mj", "energy_method") if c in s]
        out["Seed 003 SWAP"] = s[keep]
    if (c := t.get("cross_domain_hter")) is not None:
        out["Seed 001 cross-domain HTER (%)"] = c[[x for x in c.columns if x not in ("dataset", "threshold_rule")]]
    return out


def verdict_figure(claims: pd.DataFrame) -> Any:
    """A one-glance chart: how many claims of each seed hold, fail, or cannot be measured here."""
    from matplotlib.figure import Figure

    counts = claims.groupby(["seed", "verdict"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=[HOLDS, FAILS, NA], fill_value=0)
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    counts.plot.barh(stacked=True, ax=ax, color=["#4caf50", "#e53935", "#9e9e9e"])
    ax.set_xlabel("claims")
    ax.set_ylabel("seed")
    ax.set_title(f"Claims checked on {claims['dataset'].iloc[0]}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    return fig
