"""The robustness card of a deployed model, as notebooks 02 (texture INT8) and 03 (distilled student INT8)
show it, and the table notebook 04 joins (`tables/robustness.csv`).

The card is measured on the notebook's own test split through `paperkit.robustness` (perturbation before
the deployed crop, subject-bootstrap intervals). Beside the rows, each model gets the number a user of a
different face detector cares about: the largest ACER change over face-box scales 0.9-1.2x against the
unperturbed box, with a paired interval, judged against 2 ACER points (the target issue 11 sets).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from paperkit import results, robustness, stats

STABLE_SCALES: tuple[float, ...] = (0.9, 1.0, 1.1, 1.2)
STABLE_POINTS = 2.0      # max |ΔACER| over STABLE_SCALES, in points, for the card to call the box stable
TABLE_PREFIX = "robustness_"


def card(study: Any, model_path: str | Path, name: str, threshold: float = 0.5) -> pd.DataFrame:
    """Measure, write `tables/robustness_<name>.csv` and `figures/robustness_<name>.png`, print the
    box-scale verdict; returns the table (one row per perturbation and level)."""
    prof = study.profile
    print(f"robustness card of {name} ({Path(model_path).name}) on {study.dataset}: "
          f"{prof.robustness_images} test images (whole subjects), threshold {threshold}")
    df, scored = robustness.card(model_path, study.loaders["test"].dataset, name, threshold=threshold,
                                 limit=prof.robustness_images, seed=prof.data_seed,
                                 n_boot=prof.bootstrap_samples)
    iv = robustness.stability(scored, "box_scale", STABLE_SCALES, 1.0, threshold, n_boot=prof.bootstrap_samples,
                              seed=prof.data_seed)
    verdict = stats.verdict(iv.low, iv.high, STABLE_POINTS, "at_most")
    df["box_scale_max_abs_delta_acer"] = iv.value
    df["box_scale_max_abs_delta_acer_ci_low"] = iv.low
    df["box_scale_max_abs_delta_acer_ci_high"] = iv.high
    df["box_scale_stable_verdict"] = verdict
    df["dataset"] = study.dataset
    print(f"box scale {STABLE_SCALES[0]}-{STABLE_SCALES[-1]}x: max |ΔACER| {iv.value:.2f} [{iv.low:.2f}, "
          f"{iv.high:.2f}] points vs the detector's box; <= {STABLE_POINTS:g} points: {verdict}")
    study.outputs.append(results.write_table(study.run_dir, TABLE_PREFIX + name, df))
    study.outputs.append(results.save_figure(study.run_dir, TABLE_PREFIX + name, robustness.figure(df)))
    return df


def joined(run_dir: str | Path, names: Sequence[str] = ("texture_int8", "student_kd_int8")) -> pd.DataFrame:
    """Every model's card in one table, the columns issue 11 names first (notebook 04 writes it as
    `tables/robustness.csv`); a model whose notebook did not run is left out and said."""
    frames = []
    for n in names:
        path = Path(run_dir) / "tables" / f"{TABLE_PREFIX}{n}.csv"
        if path.is_file():
            frames.append(pd.read_csv(path))
        else:
            print(f"no robustness card for {n} ({path} missing: run its notebook)")
    if not frames:
        raise FileNotFoundError(f"no robustness_*.csv in {Path(run_dir) / 'tables'}: run notebooks 02 and 03")
    df = pd.concat(frames, ignore_index=True)
    return df[list(robustness.COLUMNS) + [c for c in df.columns if c not in robustness.COLUMNS]]
