"""Scoring notebook 03's models (teacher heads on cached features, students through their loaders) and the
per-seed table rows every table of the study ends with (swap, pool, cross-domain)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
from torch import nn
from torch.utils.data import DataLoader

from paperkit import data, stats, train
from paperkit.models.teacher import Teacher
from paperkit.studies.teacher_training import head_scores, require_teacher

if TYPE_CHECKING:
    from paperkit.studies.distillation import DistillRun

BOOT_SEED = 0                      # one bootstrap seed: every interval of a run resamples the same subjects


def teacher_test_scores(run: DistillRun, ds: data.FaceDataset, teacher: Teacher | None = None) -> np.ndarray:
    teacher = teacher or require_teacher(run)
    assert run.cache is not None
    return head_scores(teacher, run.cache.features(ds, None))


def model_scores(run: DistillRun, name: str, model: nn.Module, loader: DataLoader,
            teacher: Teacher | None = None) -> tuple[np.ndarray, np.ndarray]:
    if name.startswith("teacher"):
        s = teacher_test_scores(run, loader.dataset, teacher or model)  # type: ignore[arg-type]
        return s, np.array([x.label for x in loader.dataset.samples])
    return train.predict_scores(model, loader, channels_last=run.profile.channels_last)


def scored(run: DistillRun, name: str, model: nn.Module, loader: DataLoader,
            teacher: Teacher | None = None) -> stats.Scored:
    s, y = model_scores(run, name, model, loader, teacher)
    return stats.Scored.from_dataset(s, y, loader.dataset)


def ci_cols(name: str, iv: stats.Interval) -> dict[str, float]:
    return {name: iv.value, f"{name}_ci_low": iv.low, f"{name}_ci_high": iv.high}


def seed_rows(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per-seed rows + stats.across_seeds mean/std rows over the numeric columns (unchanged for one seed).

    Interval bounds are left empty in the mean/std rows: the mean of per-seed bounds is no interval."""
    num = [c for c in df.columns if c != "seed" and pd.api.types.is_numeric_dtype(df[c])
           and not pd.api.types.is_bool_dtype(df[c]) and not c.endswith(("_ci_low", "_ci_high"))]
    return stats.across_seeds(df, by=list(by), metrics_=num)
