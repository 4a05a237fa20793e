"""Notebook 03's cross-domain protocol (seed 001): train on one capture domain, test on the other, HTER at
frame and video level with subject-bootstrap intervals (tables/cross_domain_hter.csv)."""
from __future__ import annotations

import copy
import time
from typing import Any, Sequence

import numpy as np
import pandas as pd
from torch import nn

from paperkit import data, metrics, results, stats
from paperkit.studies.distill_scores import BOOT_SEED, ci_cols, scored, seed_rows
from paperkit.studies.distillation import STUDENTS, DistillRun, ck_name, train_one
from paperkit.studies.teacher_training import (
    fit_head,
    fresh_head,
    head_recipe,
    labels_and_cues,
    require_teacher,
    train_views,
)

CROSS_DOMAIN_MODELS: tuple[str, ...] = ("teacher", "student_alone", "student_kd")


def video_level(s: stats.Scored) -> stats.Scored:
    """Mean frame score per video (seed 001's session score); a video keeps its subject, label and type."""
    if s.videos is None:
        raise ValueError("video-level scores need video ids per image")
    df = pd.DataFrame({"v": s.videos, "s": s.scores, "y": s.labels, "subj": s.subjects, "t": s.spoof_types})
    g = df.groupby("v", sort=True)
    if (g["y"].nunique() > 1).any() or (g["subj"].nunique() > 1).any():
        raise ValueError("a video mixes labels or subjects; check the video ids in metas/paperkit/samples.json")
    a = g.agg(s=("s", "mean"), y=("y", "first"), subj=("subj", "first"), t=("t", "first"))
    return stats.Scored(a["s"].to_numpy(), a["y"].to_numpy(), a["subj"].to_numpy(), a["t"].to_numpy(),
                        a.index.to_numpy().astype(str))


def _level_rows(run: DistillRun, seed: int, name: str, a: str, b: str, val: stats.Scored, test: stats.Scored
                ) -> list[dict[str, Any]]:
    """HTER (= ACER at the fixed threshold) with a subject-bootstrap interval, frame and video level."""
    rows = []
    for level in ("frame", "video"):
        v, t = (val, test) if level == "frame" else (video_level(val), video_level(test))
        thr = metrics.threshold_at_eer(v.scores, v.labels) if len(np.unique(v.labels)) == 2 else 0.5
        # HTER = ACER at the fixed threshold; only its interval is bootstrapped (an AUC interval per row would
        # cost a sort per replicate for a number no claim tests)
        iv = stats.paired_statistic([t], lambda r: r[0]["acer"], [thr], run.profile.bootstrap_samples, BOOT_SEED)
        c = metrics.confusion(t.scores, t.labels, thr)
        rows.append({"train_domain": a, "test_domain": b, "model": name, "level": level, "seed": seed,
                     "operating_point": "val_eer", **ci_cols("hter", iv), "apcer": 100 * metrics.apcer(c),
                     "bpcer": 100 * metrics.bpcer(c), "auc": metrics.roc_auc(t.scores, t.labels),
                     "threshold": thr, "n_test": len(t), "n_subjects": iv.n, "dataset": run.dataset})
    return rows


def cross_domain_table(run: DistillRun, models: Sequence[str] = CROSS_DOMAIN_MODELS) -> pd.DataFrame | None:
    """Train on one capture domain, test on the other (and on its own, for the gap); HTER at frame and video level.

    The decision threshold is fixed at the EER of the training domain's validation data (per level: video
    scores are mean frame scores per capture session); the HTER interval resamples test subjects at that
    fixed threshold. Per seed, each domain gets its own teacher head (cached backbone features of that
    domain's rows) and its own students with the seed and the run's budget (student_kd: seed 001's
    selected tau/alpha). Returns None (and says why) when the dataset has no domain information (real
    CelebA-Spoof). Writes predictions/cross_domain.csv.gz (frame level; config "A->B").
    """
    t0 = time.perf_counter()
    bad = sorted(set(models) - {"teacher", *STUDENTS})
    if bad:
        raise ValueError(f"unknown cross-domain model(s) {bad}; choose from {('teacher',) + STUDENTS}")
    pool = run.loaders["train"].dataset.samples + run.loaders["val"].dataset.samples
    domains = sorted({s.domain for s in pool} - {""})
    if len(domains) < 2:
        print("cross-domain table skipped: the dataset records fewer than two capture domains "
              "(metas/paperkit/samples.json); real CelebA-Spoof has none")
        return None
    prof = run.profile
    per_test = {a: {b: data.make_loaders(run.root, prof, run.data_seed, domain=a, test_domain=b) for b in domains}
                for a in domains}
    rows: list[dict[str, Any]] = []
    preds = []
    for seed in run.seeds:
        teacher = require_teacher(run, seed)
        for a in domains:
            loaders = per_test[a][a]
            tr, va = loaders["train"].dataset, loaders["val"].dataset
            # teacher of domain a: same frozen backbone, fresh head trained on a's cached features only
            t_a = copy.deepcopy(teacher)
            fresh_head(t_a, seed)
            y, cues = labels_and_cues(tr)
            vy, _ = labels_and_cues(va)
            assert run.cache is not None
            fit_head(t_a, train_views(run, tr), y, cues, run.cache.features(va, None), vy,
                     seed=seed, name=f"teacher[{a}] seed {seed}", **head_recipe(run))
            trained: dict[str, nn.Module] = {"teacher": t_a}
            for name in models:
                if name != "teacher":
                    trained[name], _ = train_one(run, seed, name, loaders, t_a,
                                                  ck_name(run, seed, name, prefix=f"cross_{a}/"), use_cache=True)
            for name in models:
                m = trained[name]
                val = scored(run, name, m, loaders["val"], t_a)
                for b in domains:
                    test = scored(run, name, m, per_test[a][b]["test"], t_a)
                    rows += _level_rows(run, seed, name, a, b, val, test)
                    for split, s in (("val", val), ("test", test)):
                        preds.append(s.frame(model=name, config=f"{a}->{b}", bn="", fmt="torch", seed=seed,
                                             split=split, dataset=run.dataset))
    df = pd.DataFrame(rows)
    df["protocol"] = np.where(df.train_domain == df.test_domain, "in-domain", "cross-domain")
    df["threshold_rule"] = "EER on the training domain's validation data (per level)"
    df = seed_rows(df, ["train_domain", "test_domain", "model", "level", "protocol", "operating_point"])
    run.outputs.append(results.write_table(run.run_dir, "cross_domain_hter", df))
    run.outputs.append(results.write_predictions(run.run_dir, "cross_domain", pd.concat(preds, ignore_index=True)))
    run.timings["cross_domain_s"] = time.perf_counter() - t0
    return df
