"""Notebook 01 (seed 000): the run's summary, the ratios the paper reports measured here beside its own.

Reads the tables the other cells left in the study (Table 3 from `paperkit.studies.pta_mobilenet`,
Tables 4 and 5 from `paperkit.studies.pta_costs`), plus what BatchNorm recalibration cost and changed.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from paperkit.models.pta import CONFIGS
from paperkit.studies.pta_mobilenet import BN_RECALIBRATED, BN_SHARED, MODEL_NAMES, Study


def _row(t: pd.DataFrame, **match: Any) -> pd.Series | None:
    sel = t
    for k, v in match.items():
        sel = sel[sel[k].astype(str) == str(v)]
    return sel.iloc[0] if len(sel) else None


def _fmt_ci(v: float, lo: float, hi: float, nd: int = 2) -> str:
    return f"{v:.{nd}f} [{lo:.{nd}f}, {hi:.{nd}f}]"


def summary(study: Study) -> dict[str, Any]:
    """The ratios the issue asks for, measured in this run (first seed; 95% intervals in brackets), beside
    the paper's, plus what BatchNorm recalibration costs and changes."""
    out: dict[str, Any] = {"dataset": study.dataset, "profile": study.profile.name, "seeds": list(study.seeds)}
    t3, t4, t5 = (study.tables.get(k) for k in ("table3", "table4", "table5"))
    if t4 is not None:
        r = t4.set_index("config")
        for cfg in ("LLL", "BBB", "LHH", "HLH", "HHL", "HHH"):
            out[f"{cfg}/NoPTA latency (ORT) [95% CI]"] = _fmt_ci(
                float(r.loc[cfg, "rel_latency"]), float(r.loc[cfg, "rel_latency_ci_low"]),
                float(r.loc[cfg, "rel_latency_ci_high"]), 3)
            out[f"{cfg}/NoPTA latency (ORT, p10)"] = round(float(r.loc[cfg, "rel_latency_p10"]), 3)
            out[f"{cfg}/NoPTA latency (torch)"] = round(float(r.loc[cfg, "rel_latency_torch"]), 3)
        out["paper LLL/NoPTA, BBB/NoPTA (SD845)"] = (0.80, 1.07)
    if t5 is not None:
        p = _row(t5, model=MODEL_NAMES["pta"], seed=study.seed)
        if p is not None:
            out["PTA/NoPTA epoch time"] = round(float(p["rel_epoch_time"]), 3)
            out["PTA/NoPTA train-step time [95% CI]"] = _fmt_ci(
                float(p["rel_step_time"]), float(p["rel_step_time_ci_low"]), float(p["rel_step_time_ci_high"]), 3)
            out["paper PTA/NoPTA epoch time"] = round(float(p["paper_rel_epoch_time"]), 3)
    if t3 is not None:
        fx = t3[(t3["operating_point"] == "fixed_0.5") & (t3["seed"].astype(str) == str(study.seed))]
        n = _row(fx, config="NoPTA")
        for bn in (BN_RECALIBRATED, BN_SHARED):
            h = _row(fx, config="HHH", bn=bn)
            if n is None or h is None:
                continue
            out[f"test ACER % NoPTA vs PTA-HHH ({bn} BN) [95% CI]"] = (
                _fmt_ci(n["acer"], n["acer_ci_low"], n["acer_ci_high"]),
                _fmt_ci(h["acer"], h["acer_ci_low"], h["acer_ci_high"]))
        for cfg in CONFIGS:
            s, r = _row(fx, config=cfg, bn=BN_SHARED), _row(fx, config=cfg, bn=BN_RECALIBRATED)
            if s is not None and r is not None:
                out[f"test ACER % {cfg}: shared -> recalibrated BN"] = (round(float(s["acer"]), 2),
                                                                       round(float(r["acer"]), 2))
        run = study.runs.get(study.seed)
        if run is not None and run.control:
            out["control: NoPTA test ACER % with BN re-estimated the same way"] = round(
                run.control["nopta_recalibrated_test_acer"], 2)
    per_cfg = study.timings.get("bn_recalibration_s_per_config")
    if per_cfg:
        out["BN calibration crops"] = study.calib.n_images
        out["BN recalibration s per configuration (Table 3: one tree walk for all six / 6)"] = round(
            float(np.median(per_cfg)), 2)
    val_s = study.timings.get("bn_recalibration_validation_s")
    if val_s:
        out["BN recalibration s for HHH alone (validation, per epoch, median)"] = round(float(np.median(val_s)), 2)
    return out
