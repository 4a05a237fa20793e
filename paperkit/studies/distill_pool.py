"""Notebook 03's unlabelled pool (seed 001's semi-supervised part: hard labels over D^L, soft targets over
all of D).

A seeded `unlabelled_fraction` of the training subjects has its labels withheld (`make_pool`, a `Pool`).
Its teacher head is trained on the labelled subjects only (`teacher_training.pool_teacher`: no withheld
label reaches the student, not even through the teacher); `student_kd_semi` gets labels on D^L and soft
targets on D, `student_kd_labelled_only` the same loss on D^L alone, same epochs (`pool_loaders`). Both read
the same cached augmented views, so the pool costs no backbone pass. `pool_table` says whether the pool
helps (tables/distill_pool.csv, predictions/distill_pool.csv.gz).

The students themselves are trained by `paperkit.studies.distillation.train_students`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import pandas as pd
from torch import nn
from torch.utils.data import DataLoader, Sampler

from paperkit import data, index, results, stats
from paperkit import device as devices
from paperkit.losses import IGNORE_LABEL
from paperkit.studies.distill_scores import BOOT_SEED, ci_cols, scored, seed_rows
from paperkit.studies.teacher_training import pool_teacher

if TYPE_CHECKING:
    from paperkit.studies.distillation import DistillRun

POOL_STUDENTS: tuple[str, ...] = ("student_kd_labelled_only", "student_kd_semi")         # the pool experiment
UNLABELLED_FRACTION = 0.5          # of the training subjects, labels withheld from the pool students
POOL_SEED_TAG = 7331               # the pool's subjects depend on (data_seed, this tag) only: fixed across seeds
POOL_TEACHER = "teacher_labelled_only"   # the pool's teacher head, trained on the labelled subjects only


# ============================================================================================ the pool
@dataclass(frozen=True)
class Pool:
    """Indices (into the training dataset) of images whose labels the pool students see, and of those they don't."""

    labelled: np.ndarray
    unlabelled: np.ndarray
    unlabelled_subjects: tuple[str, ...]
    fraction: float


def make_pool(samples: Sequence[index.Sample], fraction: float, seed: int) -> Pool | None:
    """Withhold the labels of a seeded fraction of the training *subjects* (a subject's images go together,
    like the train/val split). None when fraction is 0 or there are too few subjects."""
    if not (isinstance(fraction, (int, float)) and 0.0 <= fraction < 1.0):
        raise ValueError(f"unlabelled_fraction must be in [0, 1) (0 = no pool experiment), got {fraction!r}")
    subjects = sorted({s.subject for s in samples})
    if fraction == 0 or len(subjects) < 2:
        return None
    n_u = min(len(subjects) - 1, max(1, int(round(fraction * len(subjects)))))
    order = np.random.default_rng([int(seed) % 2**32, POOL_SEED_TAG]).permutation(len(subjects))
    hidden = {subjects[i] for i in order[:n_u]}
    mask = np.array([s.subject in hidden for s in samples])
    lab = np.flatnonzero(~mask)
    if len({samples[i].label for i in lab}) < 2:
        raise ValueError(f"the labelled part of the pool (fraction {fraction}) holds one class only; "
                         "lower unlabelled_fraction")
    return Pool(labelled=lab, unlabelled=np.flatnonzero(mask), unlabelled_subjects=tuple(sorted(hidden)),
                fraction=float(fraction))


# ============================================================================================ pool students' data
class SubsetEpochSampler(Sampler):
    """`data.EpochSampler` over a subset of a dataset's indices, yielding (index, epoch).

    The images (and their per-(seed, epoch, index) augmentation) are exactly those of the full training
    set, so the teacher features cached for it still apply."""

    def __init__(self, indices: Sequence[int], seed: int = 0) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.indices.size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        self.epoch += 1
        order = np.random.default_rng([self.seed % 2**32, epoch, 15485867]).permutation(self.indices.size)
        return iter([(int(self.indices[i]), epoch) for i in order])


def pool_loaders(run: DistillRun, name: str) -> dict[str, DataLoader]:
    """The run's loaders with the training loader a pool student sees: the labelled subjects' images only
    (`student_kd_labelled_only`), or every image with the withheld labels replaced by IGNORE_LABEL
    (`student_kd_semi`)."""
    if name not in POOL_STUDENTS:
        raise ValueError(f"{name!r} is not a pool student; choose one of {POOL_STUDENTS}")
    if run.pool is None:
        raise RuntimeError(f"{name} needs the unlabelled pool; this run has none (unlabelled_fraction=0)")
    tr = run.loaders["train"].dataset
    prof = run.profile
    nw = devices.workers(prof.num_workers)
    if name == "student_kd_labelled_only":
        idx = run.pool.labelled
        loader = data._loader(tr, prof.batch_size, nw, SubsetEpochSampler(idx, tr.seed),
                              drop_last=len(idx) > prof.batch_size)
    else:   # semi: every image, withheld labels (and cues) replaced by IGNORE_LABEL; same order and augmentation
        hidden = set(run.pool.unlabelled.tolist())
        samples = [dataclasses.replace(s, label=IGNORE_LABEL, cues=(-1,) * len(s.cues)) if i in hidden else s
                   for i, s in enumerate(tr.samples)]
        ds = data.FaceDataset(tr.root, samples, tr.size, train=True, seed=tr.seed, box_jitter=tr.box_jitter,
                              tone_jitter=tr.tone_jitter)
        loader = data._loader(ds, prof.batch_size, nw, data.EpochSampler(len(samples), tr.seed),
                              drop_last=len(samples) > prof.batch_size)
    return {**run.loaders, "train": loader}


# ============================================================================================ does the pool help?
def pool_table(run: DistillRun) -> pd.DataFrame | None:
    """Does seed 001's unlabelled pool help? student_kd_semi (labels on D^L, soft targets on all of D) vs
    student_kd_labelled_only (the same loss, teacher, init and epochs on D^L only), per operating point,
    with a paired subject-bootstrap interval of the test ACER difference (semi - labelled only; negative =
    the pool helps). student_kd (every label) and the labelled-only teacher are shown for reference.
    Writes tables/distill_pool.csv and predictions/distill_pool.csv.gz."""
    if run.pool is None:
        print("pool table skipped: unlabelled_fraction=0 (no unlabelled pool)")
        return None
    n_boot = run.profile.bootstrap_samples
    n_lab, n_unl = len(run.pool.labelled), len(run.pool.unlabelled)
    seen = {POOL_TEACHER: (n_lab, n_lab), "student_kd_labelled_only": (n_lab, n_lab),
            "student_kd_semi": (n_lab, n_lab + n_unl), "student_kd": (n_lab + n_unl, n_lab + n_unl)}
    rows, preds = [], []
    for seed in run.seeds:
        got = run.students.get(seed, {})
        missing = [n for n in POOL_STUDENTS if n not in got]
        if missing:
            raise RuntimeError(f"pool students {missing} of seed {seed} are not trained: run train_students(run)")
        models: dict[str, nn.Module] = {POOL_TEACHER: pool_teacher(run, seed),
                                        **{n: got[n] for n in ("student_kd",) + POOL_STUDENTS if n in got}}
        sc = {n: {sp: scored(run, n, m, run.loaders[sp]) for sp in ("val", "test")} for n, m in models.items()}
        for n, d in sc.items():
            for sp, s in d.items():
                preds.append(s.frame(model=n, config=f"unlabelled_fraction={run.pool.fraction:g}", bn="",
                                     fmt="torch", seed=seed, split=sp, dataset=run.dataset))
        thr = {n: stats.thresholds(d["val"]) for n, d in sc.items()}
        base = sc["student_kd_labelled_only"]["test"]
        for n, d in sc.items():
            tau, alpha = (math.nan, math.nan) if n == POOL_TEACHER else run.kd_params(n)
            for op, t in thr[n].items():
                row: dict[str, Any] = {"model": n, "seed": seed, "operating_point": op, "threshold": t,
                                       "kd_tau": tau, "kd_alpha": alpha, "labelled_images": seen[n][0],
                                       "images_seen": seen[n][1], **stats.quality(d["test"], t, n_boot, BOOT_SEED)}
                if n in ("student_kd_semi", "student_kd") and op in thr["student_kd_labelled_only"]:
                    iv = stats.paired_difference(d["test"], base, "acer", t, thr["student_kd_labelled_only"][op],
                                                 n_boot, BOOT_SEED)
                    row.update(ci_cols("acer_minus_labelled_only", iv))
                    row["pool_helps"] = stats.verdict(iv.low, iv.high, 0.0, "below") if n == "student_kd_semi" else ""
                rows.append(row)
    df = pd.DataFrame(rows)
    df["unlabelled_fraction"] = run.pool.fraction
    df["unlabelled_subjects"] = len(run.pool.unlabelled_subjects)
    df["dataset"] = run.dataset
    df = seed_rows(df, ["model", "operating_point"])
    run.outputs.append(results.write_table(run.run_dir, "distill_pool", df))
    run.outputs.append(results.write_predictions(run.run_dir, "distill_pool", pd.concat(preds, ignore_index=True)))
    return df
