"""Notebook 03: teacher with auxiliary heads (seed 001), distillation into a < 1 M student (seeds 001, 003),
SWAP metrics (seed 003), cross-domain HTER at frame and video level (seed 001).

Flow (each step is one notebook cell; the module that holds it in brackets):
  run = setup(profile, data_root, run_dir, seeds, overrides, kd_tau, kd_alpha, kd_grid, kd_grid_epochs,
              unlabelled_fraction, student)                        a common.Study; profile + overrides resolved once
  method_table(run)         what is trained how, and which seed says so (or is silent)
  train_teacher(run)        [teacher_training] per seed: frozen EfficientNet-Lite0 + 8-head classifier, Reduced
                            Focal Loss, AdamW, trained on cached backbone features
  select_kd(run)            tau/alpha of seed 001's printed KD loss chosen on validation ACER (tables/kd_selection.csv)
  train_students(run)       per seed, one student architecture/init/budget: alone / seed-001 KD / Hinton KD, and
                            the unlabelled-pool pair: seed-001 KD on the labelled subjects only / + the pool
  swap_table(run)           [swap] tables/swap.csv (fixed 0.5) + tables/distill_quality.csv (both operating points)
  swap_targets(swap)        [swap] seed 003's targets against the SWAP table
  pool_table(run)           [distill_pool] tables/distill_pool.csv: does the unlabelled pool help? (paired
                            subject bootstrap)
  cross_domain_table(run)   [cross_domain] tables/cross_domain_hter.csv
  tradeoff_figure(run)      [swap] figures/distill_tradeoff.png
  history_table(run)        tables/distill_history.csv
  common.record(run)        the manifest entry (run.record_parameters(): parameters, choices, timings)

Why tau/alpha are tuned for seed 001's form: its soft term as printed has no tau^2 factor, so at the
profile's tau=4, alpha=0.7 its gradient is ~16x weaker than Hinton's and the "distilled" student learns
almost only from labels (`paperkit.losses.soft_weight`). We keep the printed form and pick tau/alpha on
validation data from a small grid of short runs; the winner's short run is resumed to the full budget
(the learning-rate schedule is laid over the full budget even in the short runs, so resuming is identical
to training from scratch), so the grid costs its losers only.
Seed 003's claims are judged on the Hinton student (`judged_for` column), the KD seed 003 cites.

Unlabelled pool (seed 001's semi-supervised part, `paperkit.studies.distill_pool`): a seeded
`unlabelled_fraction` of the training subjects has its labels withheld; `student_kd_semi` and
`student_kd_labelled_only` are trained here beside the SWAP students, on the pool's loaders.
Models are scored, and per-seed rows summarised, by `paperkit.studies.distill_scores`.

Outputs per image (`results.write_predictions`): `swap` (teacher + SWAP students, torch and INT8, val and
test), `distill_pool` (the pool pair, its teacher and student_kd), `cross_domain` (config "A->B": val rows
are domain A's validation split, test rows domain B's test split; frame level, video id per row).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from paperkit import registry, results, train
from paperkit.losses import check_kd_params, kd_loss_fn, soft_weight
from paperkit.models.students import STUDENT_WIDTH
from paperkit.models.teacher import Teacher, check_cues_agree, count_params
from paperkit.profiles import Profile, run_name
from paperkit.studies import common
from paperkit.studies.distill_pool import POOL_STUDENTS, UNLABELLED_FRACTION, Pool, make_pool, pool_loaders
from paperkit.studies.teacher_training import (
    CUE_WEIGHT,
    TEACHER_WEIGHT_DECAY,
    FeatureCache,
    head_passes,
    pool_teacher,
    require_teacher,
)

NOTEBOOK = "03_distillation"
STUDENTS: tuple[str, ...] = ("student_alone", "student_kd", "student_kd_hinton")          # the SWAP students
ALL_STUDENTS: tuple[str, ...] = STUDENTS + POOL_STUDENTS
KD_KIND: dict[str, str | None] = {"student_alone": None, "student_kd": "weighted", "student_kd_hinton": "hinton",
                                  "student_kd_labelled_only": "weighted", "student_kd_semi": "weighted"}
#: whose claims a row of swap.csv is judged for (the claims module picks rows by this column)
JUDGED_FOR: dict[str, str] = {"student_kd": "seed 001", "student_kd_hinton": "seed 003"}
#: (tau, alpha) candidates for seed 001's printed loss; soft/hard weight ~ alpha/((1-alpha) tau^2) = 0.15, 2.2, 9
KD_GRID: tuple[tuple[float, float], ...] = ((4.0, 0.7), (2.0, 0.9), (1.0, 0.9))
KD_GRID_EPOCHS = 1                 # short runs; the winner is resumed to the full budget


# ============================================================================================ setup
@dataclass
class DistillRun(common.Study):
    """Everything the notebook's cells share (on top of `common.Study`): KD parameters, the pool, trained
    models per seed."""

    tau: float = 4.0                # seed 003 / Hinton student (setup: the profile's kd_tau unless given)
    alpha: float = 0.7
    student: str = "pta_mobilenet_v2"
    cue_counts: dict[str, Any] = field(default_factory=dict)
    kd_grid: tuple[tuple[float, float], ...] = KD_GRID
    kd_grid_epochs: int = KD_GRID_EPOCHS
    unlabelled_fraction: float = UNLABELLED_FRACTION
    pool: Pool | None = None
    kd_pair: tuple[float, float] | None = None     # seed 001's (tau, alpha): set by select_kd
    selection: pd.DataFrame | None = None
    teachers: dict[int, Teacher] = field(default_factory=dict)
    pool_teachers: dict[int, Teacher] = field(default_factory=dict)
    cache: FeatureCache | None = None
    students: dict[int, dict[str, nn.Module]] = field(default_factory=dict)
    histories: dict[tuple[int, str], pd.DataFrame] = field(default_factory=dict)
    teacher_recipe: dict[str, Any] = field(default_factory=dict)   # fit_head's arguments: set by train_teacher
    student_builder: Callable[[str, int], nn.Module] | None = None  # None: build_student
    student_epochs: int | None = None                              # None: the profile's student_epochs
    student_lr: float | None = None                                # None: the profile's student_lr

    @property
    def ck_root(self) -> str:
        """`distill`, or `distill_<run_name>` for an overridden profile, whose checkpoints must not resume the
        plain profile's (`profiles.run_name`)."""
        name = run_name(self.profile)
        return "distill" if name == self.profile.name else f"distill_{name}"

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints" / self.ck_root

    @property
    def epochs(self) -> int:
        """The students' full budget (the learning-rate schedule of every student run spans it)."""
        return int(self.profile.student_epochs if self.student_epochs is None else self.student_epochs)

    @property
    def lr(self) -> float:
        return float(self.profile.student_lr if self.student_lr is None else self.student_lr)

    @property
    def data_seed(self) -> int:
        return int(self.profile.data_seed)

    @property
    def teacher(self) -> Teacher | None:
        """The first seed's teacher (the one whose backbone the feature cache uses)."""
        return self.teachers.get(self.seeds[0])

    def kd_params(self, name: str) -> tuple[float, float]:
        """(tau, alpha) of a KD student: Hinton's from the parameters, seed 001's from select_kd."""
        if KD_KIND[name] == "hinton":
            return self.tau, self.alpha
        if self.kd_pair is None:
            raise RuntimeError("seed 001's tau/alpha are not chosen yet: run select_kd(run) before training "
                               "the seed-001 students (an empty kd_grid keeps kd_tau/kd_alpha)")
        return self.kd_pair

    def params(self) -> dict[str, Any]:
        return {"profile": self.profile.name, "seeds": list(self.seeds), "kd_tau": self.tau, "kd_alpha": self.alpha,
                "kd_grid": [list(p) for p in self.kd_grid], "kd_grid_epochs": self.kd_grid_epochs,
                "kd_selected": list(self.kd_pair) if self.kd_pair else None,
                "unlabelled_fraction": self.unlabelled_fraction,
                "student": f"{self.student}(width={STUDENT_WIDTH})" if self.student == "pta_mobilenet_v2"
                else self.student}

    def record_parameters(self) -> dict[str, Any]:
        """The notebook's parameters, this run's KD choices (`params`) and its step timings."""
        return {**self.parameters, **self.params(), "timings_s": {k: round(v, 1) for k, v in self.timings.items()}}


def _check_grid(grid: Any) -> tuple[tuple[float, float], ...]:
    if grid is None:
        return KD_GRID
    try:
        pairs = tuple((float(t), float(a)) for t, a in grid)
    except (TypeError, ValueError) as e:
        raise ValueError("kd_grid must be a list of [tau, alpha] pairs, e.g. [[4.0, 0.7], [2.0, 0.9]]; "
                         f"got {grid!r}") from e
    for t, a in pairs:
        check_kd_params(t, a)
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"kd_grid {grid!r} repeats a candidate")
    return pairs


def setup(profile: str | Profile = "default", data_root: str | None = "", run_dir: str = "../results",
          seeds: Any = None, overrides: dict[str, Any] | None = None, kd_tau: float | None = None,
          kd_alpha: float | None = None, kd_grid: Any = None, kd_grid_epochs: int = KD_GRID_EPOCHS,
          unlabelled_fraction: float = UNLABELLED_FRACTION, student: str = "pta_mobilenet_v2") -> DistillRun:
    """Validate parameters, resolve the profile (+ `overrides`) and the dataset, build loaders and the
    unlabelled pool, check the cue side file.

    kd_tau/kd_alpha: Hinton's student (None: the profile's). kd_grid: [tau, alpha] candidates for seed 001's
    printed loss (None: KD_GRID; [] keeps kd_tau/kd_alpha). seeds: None = the profile's seeds.
    student: the student architecture's name in `paperkit.registry.STUDENTS`."""
    for v in (kd_tau, kd_alpha):
        if v is not None and not isinstance(v, (int, float)):
            raise ValueError(f"kd_tau and kd_alpha must be numbers or None, got {v!r}")
    if kd_tau is not None and kd_alpha is not None:
        check_kd_params(float(kd_tau), float(kd_alpha))
    grid = _check_grid(kd_grid)
    if isinstance(kd_grid_epochs, bool) or not isinstance(kd_grid_epochs, int) or kd_grid_epochs < 1:
        raise ValueError(f"kd_grid_epochs must be an int >= 1, got {kd_grid_epochs!r}")
    if student not in registry.STUDENTS:
        raise ValueError(f"unknown student {student!r}; choose one of {registry.STUDENTS.names()}")
    run = common.setup(DistillRun, NOTEBOOK, profile, data_root, run_dir, seeds, overrides, student=student,
                       kd_grid=grid, kd_grid_epochs=kd_grid_epochs)
    prof, loaders = run.profile, run.loaders
    run.tau = prof.kd_tau if kd_tau is None else float(kd_tau)
    run.alpha = prof.kd_alpha if kd_alpha is None else float(kd_alpha)
    check_kd_params(run.tau, run.alpha)
    run.kd_pair = None if grid else (run.tau, run.alpha)
    assert run.root is not None
    cue_file = run.root / "metas" / "paperkit" / "attack_cues.json"
    source = str(cue_file) if cue_file.is_file() else \
        "derived from CelebA-Spoof labels (paperkit.celeba.derived_cues)"
    all_samples = [s for k in ("train", "val", "test") for s in loaders[k].dataset.samples]
    counts = check_cues_agree(all_samples, source=source)
    counts["source"] = source  # type: ignore[assignment]
    run.cue_counts = counts
    run.pool = pool = make_pool(loaders["train"].dataset.samples, unlabelled_fraction, prof.data_seed)
    run.unlabelled_fraction = float(unlabelled_fraction)
    pool_txt = (f"{len(pool.unlabelled_subjects)} of {len({s.subject for s in loaders['train'].dataset.samples})} "
                f"training subjects ({len(pool.unlabelled)} images) unlabelled" if pool else "no unlabelled pool")
    print(f"dataset: {run.dataset}\n  train {len(loaders['train'].dataset)}  val {len(loaders['val'].dataset)}  "
          f"test {len(loaders['test'].dataset)} images; cues: {source} "
          f"({counts['unknown_cue_entries']} unknown cue entries, ignored by the loss)\n"
          f"  profile {run_name(prof)}; seeds {list(run.seeds)} (data seed {prof.data_seed}); Hinton KD "
          f"tau={run.tau} alpha={run.alpha}; seed-001 KD grid {[list(p) for p in grid] or 'none'} "
          f"({kd_grid_epochs} epoch(s) each)\n"
          f"  pool: {pool_txt}; student {run.params()['student']}")
    return run


def method_table(run: DistillRun) -> pd.DataFrame:
    """What is trained how in this run, and what the seeds state (or leave open) for each choice."""
    p = run.profile
    w = f"tau={run.kd_pair[0]:g}, alpha={run.kd_pair[1]:g}" if run.kd_pair else "chosen by select_kd"
    rows = [
        ("teacher", "teacher_net(backbone='efficientnet_lite0'): frozen ImageNet backbone + AuxHead (7 cue heads + "
         "live/spoof)", "seed 001: frozen RegNet-32g (SEER) + 8 binary heads; not available offline"),
        ("teacher loss", f"reduced_focal_loss(gamma={p.focal_gamma:g}, threshold={p.focal_threshold:g}) on "
         f"live/spoof + {CUE_WEIGHT:g} x on the known cues", "seed 001: Reduced Focal Loss; silent on gamma, "
         "threshold and head weights"),
        ("teacher optimiser", f"AdamW lr={p.teacher_lr:g}, weight decay {TEACHER_WEIGHT_DECAY:g}, "
         f"{p.teacher_epochs} augmented view(s) x {head_passes(p)} head passes, batch {p.batch_size}",
         "seed 001: AdamW, lr 1e-6, 3 epochs; silent on batch size and weight decay"),
        ("student", f"build_student: {run.params()['student']}, Adam lr={run.lr:g}, {run.epochs} epochs, "
         f"batch {p.batch_size}, same init per seed", "seed 001: EfficientNet-B3; seed 003: < 1 M parameters; "
         "both silent on the student's optimiser and budget"),
        ("student_kd (seed 001)", f"kd_weighted_loss, (1-alpha) CE + alpha soft CE (no tau^2), {w}; grid "
         f"{[list(g) for g in run.kd_grid]} on val ACER, {run.kd_grid_epochs}-epoch runs",
         "seed 001: the printed loss; silent on tau and alpha"),
        ("student_kd_hinton (seed 003)", f"kd_hinton_loss, (1-alpha) CE + alpha tau^2 KL, tau={run.tau:g}, "
         f"alpha={run.alpha:g}", "seed 003: cites Hinton's KD; silent on tau, alpha"),
        ("unlabelled pool", f"{run.unlabelled_fraction:g} of the training subjects without labels; teacher head "
         "trained on the labelled subjects; student_kd_semi vs student_kd_labelled_only (same loss, epochs)",
         "seed 001: CE over labelled D^L, soft term over all of D; silent on the split"),
        ("evaluation", f"test split, thresholds 0.5 and val EER, subject bootstrap ({p.bootstrap_samples} "
         f"resamples), latency {p.latency_rounds} interleaved rounds x {p.latency_iters}", "paperkit"),
    ]
    return pd.DataFrame(rows, columns=["component", "this run", "seeds say"])


def kd_losses(run: DistillRun) -> pd.DataFrame:
    """The students' losses as `train_students` will build them (`paperkit.losses.kd_loss_fn`): which loss,
    its tau and alpha, and the soft term's rough weight against the hard one (`paperkit.losses.soft_weight`)."""
    rows = []
    for name in ALL_STUDENTS if run.pool is not None else STUDENTS:
        kind = KD_KIND[name]
        if kind is None:
            rows.append({"student": name, "loss": "cross-entropy (F.cross_entropy)", "kd_tau": math.nan,
                         "kd_alpha": math.nan, "soft_weight": math.nan, "tau/alpha from": "-"})
            continue
        loss = "paperkit.losses.kd_hinton_loss" if kind == "hinton" else "paperkit.losses.kd_weighted_loss"
        if kind == "weighted" and run.kd_pair is None:
            rows.append({"student": name, "loss": loss, "kd_tau": math.nan, "kd_alpha": math.nan,
                         "soft_weight": math.nan, "tau/alpha from": f"select_kd over grid "
                         f"{[list(g) for g in run.kd_grid]} ({run.kd_grid_epochs}-epoch runs)"})
            continue
        tau, alpha = run.kd_params(name)
        rows.append({"student": name, "loss": loss, "kd_tau": tau, "kd_alpha": alpha,
                     "soft_weight": soft_weight(tau, alpha, kind),
                     "tau/alpha from": "kd_tau / kd_alpha" if kind == "hinton" or not run.kd_grid else "select_kd"})
    return pd.DataFrame(rows)


# ============================================================================================ students
def build_student(kind: str, seed: int) -> nn.Module:
    """Same seed -> same initial weights for every student variant (only the loss and the labels seen differ)."""
    torch.manual_seed(seed)
    model = registry.STUDENTS.get(kind)()
    n = count_params(model)
    if n >= 1_000_000:
        raise ValueError(f"student {kind} has {n / 1e6:.2f} M parameters; seed 003's students stay under 1 M")
    return model


def _eval_config(model: nn.Module) -> None:
    if hasattr(model, "configure"):
        model.configure("HHH")


# ============================================================================================ student training
def _student_loaders(run: DistillRun, name: str) -> dict[str, DataLoader]:
    """The SWAP students use the run's loaders; the pool pair sees the labelled subjects' labels only
    (`distill_pool.pool_loaders`)."""
    return pool_loaders(run, name) if name in POOL_STUDENTS else run.loaders


def ck_name(run: DistillRun, seed: int, name: str, pair: tuple[float, float] | None = None,
             prefix: str = "") -> str:
    base = f"{run.ck_root}/{run.student}/seed{seed}/{prefix}{name}"
    if KD_KIND[name]:
        tau, alpha = pair or run.kd_params(name)
        base += f"_t{tau:g}_a{alpha:g}"
    if name in POOL_STUDENTS:
        base += f"_u{run.unlabelled_fraction:g}"
    # a builder or budget other than the default's gets its own checkpoint (the default's names are unchanged)
    if run.student_builder is not None:
        base += f"_b{getattr(run.student_builder, '__name__', 'custom')}"
    if run.student_epochs is not None:
        base += f"_e{run.student_epochs}"
    if run.student_lr is not None:
        base += f"_lr{run.student_lr:g}"
    return base


def train_one(run: DistillRun, seed: int, name: str, loaders: dict[str, DataLoader], teacher: Teacher | None,
               ck_name: str, use_cache: bool = False, epochs: int | None = None,
               pair: tuple[float, float] | None = None) -> tuple[nn.Module, pd.DataFrame]:
    model = (run.student_builder or build_student)(run.student, seed)
    kind = KD_KIND[name]
    lookup = None
    if kind is not None and use_cache and run.cache is not None and teacher is not None:
        cache, head = run.cache, teacher.head
        lookup = lambda x: cache.teacher_logits(head, x)  # noqa: E731
    loss_fn = None
    if kind is not None:
        tau, alpha = pair or run.kd_params(name)
        loss_fn = kd_loss_fn(teacher, kind, tau, alpha, cached_logits=lookup)  # type: ignore[arg-type]
    hist = train.fit(model, loaders, run_dir=run.run_dir, name=ck_name, epochs=epochs or run.epochs,
                     lr=run.lr, seed=seed, loss_fn=loss_fn, eval_config=_eval_config,
                     channels_last=run.profile.channels_last, lr_schedule=run.profile.lr_schedule,
                     # the full budget even for a short grid run: it is then the first epoch of the
                     # full run, which the selected candidate resumes
                     schedule_epochs=run.epochs, progress=False)
    return model.eval(), hist.to_frame()


def _cache_student_views(run: DistillRun) -> None:
    """The student's loader augments epoch e exactly like cached view e: cache one view per student epoch so
    KD students need no backbone pass (the teacher's head runs on the cached features)."""
    assert run.cache is not None
    tr = run.loaders["train"].dataset
    for v in range(run.epochs):
        run.cache.features(tr, v)


def set_student_recipe(run: DistillRun, builder: Callable[[str, int], nn.Module] | None = None,
                       epochs: int | None = None, lr: float | None = None) -> None:
    """Keep the students' builder and budget on the run (None: as chosen before; at first build_student and
    the profile's student_epochs / student_lr), so that every later student (grid, SWAP, pool, cross-domain)
    is built and trained alike. A budget other than the profile's is better set through `overrides`, which
    also keeps its checkpoints apart (`profiles.run_name`)."""
    if builder is not None:
        if not callable(builder):
            raise TypeError(f"builder must be callable(kind, seed) -> nn.Module, got {builder!r}")
        run.student_builder = None if builder is build_student else builder
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
        run.student_epochs = None if epochs == run.profile.student_epochs else epochs
    if lr is not None:
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        run.student_lr = None if float(lr) == float(run.profile.student_lr) else float(lr)


def select_kd(run: DistillRun, builder: Callable[[str, int], nn.Module] | None = None,
              epochs: int | None = None, lr: float | None = None) -> pd.DataFrame:
    """Choose seed 001's (tau, alpha) on validation ACER: one short run per grid candidate (first seed).

    builder / epochs (the full student budget the schedule spans) / lr: see `set_student_recipe`.

    Selection: lowest best-epoch validation ACER within the short run, ties to the higher validation AUC.
    The chosen candidate's checkpoint is resumed to the full budget by train_students. Writes
    tables/kd_selection.csv (every candidate, its val ACER, soft/hard weight, and which one was chosen)."""
    t0 = time.perf_counter()
    set_student_recipe(run, builder, epochs, lr)
    seed = run.seeds[0]
    if not run.kd_grid:
        run.kd_pair = (run.tau, run.alpha)
        df = pd.DataFrame([{"kd_kind": "weighted", "kd_tau": run.tau, "kd_alpha": run.alpha,
                            "soft_weight": soft_weight(run.tau, run.alpha), "selected": True,
                            "rule": "no grid: kd_tau/kd_alpha kept", "seed": seed, "dataset": run.dataset}])
        run.selection = df
        run.outputs.append(results.write_table(run.run_dir, "kd_selection", df))
        return df
    teacher = require_teacher(run, seed)
    _cache_student_views(run)
    rows = []
    for pair in run.kd_grid:
        _, hist = train_one(run, seed, "student_kd", run.loaders, teacher,
                             ck_name(run, seed, "student_kd", pair), use_cache=True, epochs=run.kd_grid_epochs,
                             pair=pair)
        h = hist.iloc[:run.kd_grid_epochs]   # a checkpoint resumed further by an earlier run: judge its short run
        best = h.loc[h.val_acer.idxmin()] if h.val_acer.notna().any() else h.iloc[-1]
        rows.append({"kd_kind": "weighted", "kd_tau": pair[0], "kd_alpha": pair[1],
                     "soft_weight": soft_weight(*pair), "epochs": run.kd_grid_epochs,
                     "best_epoch": int(best.epoch), "val_acer": 100 * float(best.val_acer),
                     "val_accuracy": 100 * float(best.val_accuracy), "val_auc": float(best.val_auc),
                     "epoch_time_s": float(h.epoch_time_s.mean())})
    df = pd.DataFrame(rows)
    order = df.assign(_a=df.val_acer.fillna(math.inf), _u=-df.val_auc.fillna(-math.inf)).sort_values(
        ["_a", "_u"], kind="stable").index
    df["selected"] = False
    df.loc[order[0], "selected"] = True
    win = df.loc[order[0]]
    run.kd_pair = (float(win.kd_tau), float(win.kd_alpha))
    df["rule"] = (f"lowest val ACER in {run.kd_grid_epochs}-epoch runs (ties: higher val AUC); "
                  "the winner is resumed to the full budget")
    df["seed"] = seed
    df["dataset"] = run.dataset
    run.selection = df
    run.outputs.append(results.write_table(run.run_dir, "kd_selection", df))
    run.timings["select_kd_s"] = time.perf_counter() - t0
    print(f"[select_kd] seed 001's loss: tau={run.kd_pair[0]:g}, alpha={run.kd_pair[1]:g} "
          f"(val ACER {win.val_acer:.2f}%; soft/hard weight {win.soft_weight:.2f}) in {time.perf_counter() - t0:.0f}s")
    return df


def train_students(run: DistillRun, names: Sequence[str] | None = None,
                   builder: Callable[[str, int], nn.Module] | None = None, epochs: int | None = None,
                   lr: float | None = None) -> pd.DataFrame:
    """Per seed, the same student (architecture, initial weights, data order, epochs, lr) trained alone, with
    seed 001's and Hinton's KD, and (with a pool) seed 001's KD on the labelled subjects with / without the
    unlabelled images. builder (default `build_student`), epochs, lr: see `set_student_recipe`."""
    t0 = time.perf_counter()
    set_student_recipe(run, builder, epochs, lr)
    names = tuple(names) if names is not None else STUDENTS + (POOL_STUDENTS if run.pool is not None else ())
    bad = sorted(set(names) - set(KD_KIND))
    if bad:
        raise ValueError(f"unknown student variant(s) {bad}; choose from {ALL_STUDENTS}")
    if any(KD_KIND[n] == "weighted" for n in names) and run.kd_pair is None:
        select_kd(run)
    rows = []
    for seed in run.seeds:
        teacher = require_teacher(run, seed) if any(KD_KIND[n] for n in names) else None
        if teacher is not None:
            _cache_student_views(run)
        run.students.setdefault(seed, {})
        for name in names:
            t1 = time.perf_counter()
            t = pool_teacher(run, seed) if name in POOL_STUDENTS else teacher
            model, hist = train_one(run, seed, name, _student_loaders(run, name), t, ck_name(run, seed, name),
                                     use_cache=True)
            run.students[seed][name] = model
            run.histories[(seed, name)] = hist
            run.timings[f"{name}_seed{seed}_s"] = time.perf_counter() - t1
            rows.append(hist.assign(model=name, seed=seed))
    run.timings["students_s"] = time.perf_counter() - t0
    if run.cache is not None and sum(run.cache.lookups.values()):
        print(f"teacher logits from cached features for {run.cache.lookups['hit']} of "
              f"{sum(run.cache.lookups.values())} KD batches (the rest ran the frozen trunk on the batch)")
    return pd.concat(rows, ignore_index=True)


def history_table(run: DistillRun) -> pd.DataFrame:
    """Per-epoch training history of every model and seed, written as tables/distill_history.csv."""
    frames = [h.assign(model=n, seed=s) for (s, n), h in run.histories.items()]
    df = pd.concat(frames, ignore_index=True).assign(dataset=run.dataset)
    run.outputs.append(results.write_table(run.run_dir, "distill_history", df))
    return df
