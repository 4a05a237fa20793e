"""Notebook 03: teacher with auxiliary heads (seed 001), distillation into a < 1 M student (seeds 001, 003),
SWAP metrics (seed 003), cross-domain HTER at frame and video level (seed 001).

Flow (each step is one notebook cell):
  run = setup(profile, data_root, run_dir, seeds, kd_tau, kd_alpha, kd_grid, kd_grid_epochs, unlabelled_fraction)
  method_table(run)         what is trained how, and which seed says so (or is silent)
  train_teacher(run)        per seed: frozen EfficientNet-Lite0 + 8-head classifier, Reduced Focal Loss, AdamW
  select_kd(run)            tau/alpha of seed 001's printed KD loss chosen on validation ACER (tables/kd_selection.csv)
  train_students(run)       per seed, one student architecture/init/budget: alone / seed-001 KD / Hinton KD, and
                            the unlabelled-pool pair: seed-001 KD on the labelled subjects only / + the pool
  swap_table(run)           tables/swap.csv (fixed 0.5) + tables/distill_quality.csv (both operating points)
  pool_table(run)           tables/distill_pool.csv: does the unlabelled pool help? (paired subject bootstrap)
  cross_domain_table(run)   tables/cross_domain_hter.csv
  tradeoff_figure(run)      figures/distill_tradeoff.png

Why the teacher is trained on cached features: its backbone is frozen, so an epoch costs one backbone
forward per image whatever the head does. We compute the backbone features of `teacher_epochs` augmented
views of the training set once (every view is a fresh augmentation, as an epoch would be), then train the
head for HEAD_PASSES_PER_VIEW passes over each view. The cached features also serve the cross-domain and
labelled-only teachers (a head trained on a subset's rows) and every seed's teacher, so all teachers of this
study cost the backbone passes of one.

Why tau/alpha are tuned for seed 001's form: its soft term as printed has no tau^2 factor, so at the
profile's tau=4, alpha=0.7 its gradient is ~16x weaker than Hinton's and the "distilled" student learns
almost only from labels (`paperkit.losses.soft_weight`). We keep the printed form and pick tau/alpha on
validation data from a small grid of short runs; the winner's short run is resumed to the full budget
(the learning-rate schedule is laid over the full budget even in the short runs, so resuming is identical
to training from scratch), so the grid costs its losers only.
Seed 003's claims are judged on the Hinton student (`judged_for` column), the KD seed 003 cites.

Unlabelled pool (seed 001's semi-supervised part: hard labels over D^L, soft targets over all of D): a
seeded `unlabelled_fraction` of the training subjects has its labels withheld. Its teacher head is trained
on the labelled subjects only (no withheld label reaches the student, not even through the teacher);
`student_kd_semi` gets labels on D^L and soft targets on D, `student_kd_labelled_only` the same loss on D^L
alone (same epochs). Both read the same cached augmented views, so the pool costs no backbone pass.

Outputs per image (`results.write_predictions`): `swap` (teacher + SWAP students, torch and INT8, val and
test), `distill_pool` (the pool pair, its teacher and student_kd), `cross_domain` (config "A->B": val rows
are domain A's validation split, test rows domain B's test split; frame level, video id per row).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import io
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from paperkit import quiet
from paperkit import data, index, metrics, results, stats, train
from paperkit import batchnorm as bn_tools
from paperkit import device as devices
from paperkit.losses import IGNORE_LABEL, check_kd_params, kd_loss_fn, reduced_focal_loss, soft_weight
from paperkit.models.teacher import (
    AuxHead,
    Teacher,
    check_cues_agree,
    count_params,
    load_teacher,
    save_teacher,
    teacher_net,
)
from paperkit.papers import SEED003
from paperkit.profiles import Profile, get_profile, resolve_seeds
from paperkit.studies.common import open_data

NOTEBOOK = "03_distillation"
STUDENTS: tuple[str, ...] = ("student_alone", "student_kd", "student_kd_hinton")          # the SWAP students
POOL_STUDENTS: tuple[str, ...] = ("student_kd_labelled_only", "student_kd_semi")         # the pool experiment
ALL_STUDENTS: tuple[str, ...] = STUDENTS + POOL_STUDENTS
KD_KIND: dict[str, str | None] = {"student_alone": None, "student_kd": "weighted", "student_kd_hinton": "hinton",
                                  "student_kd_labelled_only": "weighted", "student_kd_semi": "weighted"}
#: whose claims a row of swap.csv is judged for (the claims module picks rows by this column)
JUDGED_FOR: dict[str, str] = {"student_kd": "seed 001", "student_kd_hinton": "seed 003"}
#: (tau, alpha) candidates for seed 001's printed loss; soft/hard weight ~ alpha/((1-alpha) tau^2) = 0.15, 2.2, 9
KD_GRID: tuple[tuple[float, float], ...] = ((4.0, 0.7), (2.0, 0.9), (1.0, 0.9))
KD_GRID_EPOCHS = 1                 # short runs; the winner is resumed to the full budget
UNLABELLED_FRACTION = 0.5          # of the training subjects, labels withheld from the pool students
POOL_SEED_TAG = 7331               # the pool's subjects depend on (data_seed, this tag) only: fixed across seeds
BOOT_SEED = 0                      # one bootstrap seed: every interval of a run resamples the same subjects
HEAD_PASSES_PER_VIEW = 4           # head epochs per cached augmented view (the head alone is nearly free)
TEACHER_WEIGHT_DECAY = 1e-2        # AdamW's default; seed 001 names AdamW but not its weight decay
CUE_WEIGHT = 1.0                   # cue heads weigh as much as the live/spoof head (seed 001: one loss, 8 heads)
STUDENT_WIDTH = 0.35               # narrow PTA-MobileNetV2: 0.46 M parameters
PER_CORE_WATTS = 5.0               # assumed power of one busy core when no RAPL counter is readable
THROUGHPUT_BATCH = 32
RAPL_GLOB = "/sys/class/powercap/intel-rapl*"
CROSS_DOMAIN_MODELS: tuple[str, ...] = ("teacher", "student_alone", "student_kd")


# ============================================================================================ setup
@dataclass(frozen=True)
class Pool:
    """Indices (into the training dataset) of images whose labels the pool students see, and of those they don't."""

    labelled: np.ndarray
    unlabelled: np.ndarray
    unlabelled_subjects: tuple[str, ...]
    fraction: float


@dataclass
class DistillRun:
    """Everything the notebook's cells share: parameters, data, trained models per seed, timings."""

    profile: Profile
    root: Path
    run_dir: Path
    seeds: tuple[int, ...]
    tau: float                      # seed 003 / Hinton student (the profile's kd_tau unless overridden)
    alpha: float
    student: str
    dataset: str
    loaders: dict[str, DataLoader]
    cue_counts: dict[str, int]
    kd_grid: tuple[tuple[float, float], ...] = KD_GRID
    kd_grid_epochs: int = KD_GRID_EPOCHS
    unlabelled_fraction: float = UNLABELLED_FRACTION
    pool: Pool | None = None
    kd_pair: tuple[float, float] | None = None     # seed 001's (tau, alpha): set by select_kd
    selection: pd.DataFrame | None = None
    teachers: dict[int, Teacher] = field(default_factory=dict)
    pool_teachers: dict[int, Teacher] = field(default_factory=dict)
    cache: "FeatureCache | None" = None
    students: dict[int, dict[str, nn.Module]] = field(default_factory=dict)
    histories: dict[tuple[int, str], pd.DataFrame] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints" / "distill"

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


def setup(profile: str | Profile = "default", data_root: str | None = "", run_dir: str = "../results",
          seeds: Any = None, kd_tau: float | None = None, kd_alpha: float | None = None,
          kd_grid: Any = None, kd_grid_epochs: int = KD_GRID_EPOCHS,
          unlabelled_fraction: float = UNLABELLED_FRACTION, student: str = "pta_mobilenet_v2") -> DistillRun:
    """Validate parameters, resolve the dataset, build loaders and the unlabelled pool, check the cue side file.

    kd_tau/kd_alpha: Hinton's student (None: the profile's). kd_grid: [tau, alpha] candidates for seed 001's
    printed loss (None: KD_GRID; [] keeps kd_tau/kd_alpha). seeds: None = the profile's seeds."""
    prof = get_profile(profile) if isinstance(profile, str) else profile
    tau = prof.kd_tau if kd_tau is None else float(kd_tau)
    alpha = prof.kd_alpha if kd_alpha is None else float(kd_alpha)
    check_kd_params(tau, alpha)
    grid = _check_grid(kd_grid)
    if isinstance(kd_grid_epochs, bool) or not isinstance(kd_grid_epochs, int) or kd_grid_epochs < 1:
        raise ValueError(f"kd_grid_epochs must be an int >= 1, got {kd_grid_epochs!r}")
    if student not in STUDENT_BUILDERS:
        raise ValueError(f"unknown student {student!r}; choose one of {sorted(STUDENT_BUILDERS)}")
    seed_list = resolve_seeds(prof, seeds)
    d = open_data(prof, data_root)
    root, loaders = d.root, d.loaders
    cue_file = root / "metas" / "paperkit" / "attack_cues.json"
    source = str(cue_file) if cue_file.is_file() else \
        "derived from CelebA-Spoof labels (paperkit.celeba.derived_cues)"
    all_samples = [s for k in ("train", "val", "test") for s in loaders[k].dataset.samples]
    counts = check_cues_agree(all_samples, source=source)
    counts["source"] = source  # type: ignore[assignment]
    pool = make_pool(loaders["train"].dataset.samples, unlabelled_fraction, prof.data_seed)
    run = DistillRun(profile=prof, root=Path(root), run_dir=Path(run_dir), seeds=seed_list, tau=tau, alpha=alpha,
                     student=student, dataset=d.dataset, loaders=loaders, cue_counts=counts, kd_grid=grid,
                     kd_grid_epochs=kd_grid_epochs, unlabelled_fraction=float(unlabelled_fraction), pool=pool,
                     kd_pair=None if grid else (tau, alpha))
    pool_txt = (f"{len(pool.unlabelled_subjects)} of {len({s.subject for s in loaders['train'].dataset.samples})} "
                f"training subjects ({len(pool.unlabelled)} images) unlabelled" if pool else "no unlabelled pool")
    print(f"dataset: {run.dataset}\n  train {len(loaders['train'].dataset)}  val {len(loaders['val'].dataset)}  "
          f"test {len(loaders['test'].dataset)} images; cues: {source} "
          f"({counts['unknown_cue_entries']} unknown cue entries, ignored by the loss)\n"
          f"  seeds {list(seed_list)} (data seed {prof.data_seed}); Hinton KD tau={tau} alpha={alpha}; "
          f"seed-001 KD grid {[list(p) for p in grid] or 'none'} ({kd_grid_epochs} epoch(s) each)\n"
          f"  pool: {pool_txt}; student {run.params()['student']}")
    return run


def method_table(run: DistillRun) -> pd.DataFrame:
    """What is trained how in this run, and what the seeds state (or leave open) for each choice."""
    p = run.profile
    w = f"tau={run.kd_pair[0]:g}, alpha={run.kd_pair[1]:g}" if run.kd_pair else "chosen by select_kd"
    rows = [
        ("teacher", "teacher_net('efficientnet_lite0'): frozen ImageNet backbone + AuxHead (7 cue heads + "
         "live/spoof)", "seed 001: frozen RegNet-32g (SEER) + 8 binary heads; not available offline"),
        ("teacher loss", f"reduced_focal_loss(gamma={p.focal_gamma:g}, threshold={p.focal_threshold:g}) on "
         f"live/spoof + {CUE_WEIGHT:g} x on the known cues", "seed 001: Reduced Focal Loss; silent on gamma, "
         "threshold and head weights"),
        ("teacher optimiser", f"AdamW lr={p.teacher_lr:g}, weight decay {TEACHER_WEIGHT_DECAY:g}, "
         f"{p.teacher_epochs} augmented view(s) x {_head_passes(p)} head passes, batch {p.batch_size}",
         "seed 001: AdamW, lr 1e-6, 3 epochs; silent on batch size and weight decay"),
        ("student", f"{run.params()['student']}, Adam lr={p.student_lr:g}, {p.student_epochs} epochs, "
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


# ============================================================================================ students
def _pta_student() -> nn.Module:
    from paperkit.models.pta import pta_mobilenet_v2
    return pta_mobilenet_v2(num_classes=2, width_mult=STUDENT_WIDTH).configure("HHH")


def _texture_student() -> nn.Module:
    from paperkit.models.texture import texture_net
    return texture_net(num_classes=2)


STUDENT_BUILDERS: dict[str, Callable[[], nn.Module]] = {"pta_mobilenet_v2": _pta_student,
                                                        "texture_net": _texture_student}


def build_student(kind: str, seed: int) -> nn.Module:
    """Same seed -> same initial weights for every student variant (only the loss and the labels seen differ)."""
    torch.manual_seed(seed)
    model = STUDENT_BUILDERS[kind]()
    n = count_params(model)
    if n >= 1_000_000:
        raise ValueError(f"student {kind} has {n / 1e6:.2f} M parameters; seed 003's students stay under 1 M")
    return model


def _eval_config(model: nn.Module) -> None:
    if hasattr(model, "configure"):
        model.configure("HHH")


# ============================================================================================ feature cache
class FeatureCache:
    """Teacher backbone features keyed by (image path, view); view -1 = the clean (un-augmented) crop.

    View v of a training dataset is its augmentation of epoch v, so each view is a fresh augmented epoch.
    paperkit.data draws a sample's augmentation from (seed, epoch, index in its dataset), so an image is
    always augmented as in the `canonical` dataset (the intra-test train split) when it belongs to it:
    features never depend on which dataset asked first, and reruns reproduce.
    """

    def __init__(self, teacher: Teacher, batch_size: int, workers: int,
                 canonical: data.FaceDataset | None = None) -> None:
        self.teacher = teacher
        self.batch_size = batch_size
        self.workers = workers
        self.canonical = canonical
        self._canon_index = {s.path: i for i, s in enumerate(canonical.samples)} if canonical else {}
        self.store: dict[tuple[str, int], torch.Tensor] = {}
        self.by_digest: dict[bytes, tuple[str, int]] = {}
        self.images_computed = 0
        self.lookups = {"hit": 0, "miss": 0}
        self._trunk: Callable[[torch.Tensor], torch.Tensor] | None = None

    def trunk(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """Backbone features of a batch, made once (the trunk is frozen): on the CPU an ONNX Runtime session
        of the trunk with BatchNorm folded into its convolutions (EfficientNet-Lite0 at 128 px, 1 thread:
        206 img/s vs 73 for torch eager, features equal to 1e-5); on CUDA the folded torch module."""
        if self._trunk is None:
            pairs = getattr(type(self.teacher.backbone), "BN_FOLD_PAIRS", ())
            folded = bn_tools.fold_bn(self.teacher, pairs)[0]
            dev = devices.pick()
            if dev.type == "cpu":
                self._trunk = _ort_trunk(folded, self.teacher.config["input_size"])
            else:
                folded.to(dev)

                def run(x: torch.Tensor) -> torch.Tensor:
                    with devices.autocast(dev):
                        xd = x.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
                        return folded.features(xd).float().cpu()
                self._trunk = run
        return self._trunk

    def _compute(self, ds: data.FaceDataset, items: list[tuple[int, int]], v: int) -> None:
        loader = DataLoader(ds, batch_size=self.batch_size, sampler=items, num_workers=self.workers)
        trunk = self.trunk()
        k = 0
        for x, _, _ in loader:
            quiet.checkpoint()
            f = trunk(x)
            for img, row in zip(x, f):
                key = (ds.samples[items[k][0]].path, v)
                self.store[key] = row.clone()
                self.by_digest[_digest(img)] = key
                k += 1
        self.images_computed += len(items)

    @torch.inference_mode()
    def teacher_logits(self, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Teacher logits (frozen trunk + `head`) for a student's batch: from the cached features when every
        image was cached bit for bit (an augmented view the student's loader reproduces exactly), else from
        the fast trunk now (a batch of another split or augmentation, e.g. a cross-domain student's)."""
        keys = [self.by_digest.get(_digest(img)) for img in x]
        head.eval()
        if any(k is None for k in keys):
            self.lookups["miss"] += 1
            feats = self.trunk()(x.detach().cpu())
        else:
            self.lookups["hit"] += 1
            feats = torch.stack([self.store[k] for k in keys])  # type: ignore[index]
        return head(feats.to(devices.model_device(head)))[0].to(x.device)

    @torch.inference_mode()
    def features(self, ds: data.FaceDataset, view: int | None) -> torch.Tensor:
        v = -1 if view is None or not ds.train else int(view)
        missing = [i for i, s in enumerate(ds.samples) if (s.path, v) not in self.store]
        if missing and v < 0:
            clean = data.FaceDataset(ds.root, ds.samples, ds.size, train=False, seed=ds.seed)
            self._compute(clean, [(i, 0) for i in missing], v)
        elif missing:
            canon = [self._canon_index[ds.samples[i].path] for i in missing
                     if ds.samples[i].path in self._canon_index]
            other = [i for i in missing if ds.samples[i].path not in self._canon_index]
            if canon:
                assert self.canonical is not None
                self._compute(self.canonical, [(i, v) for i in canon], v)
            if other:
                self._compute(ds, [(i, v) for i in other], v)
        if not ds.samples:
            return torch.zeros(0, self.teacher.backbone.out_dim)
        return torch.stack([self.store[(s.path, v)] for s in ds.samples])


def _ort_trunk(teacher: Teacher, input_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """`teacher.features` as an ONNX Runtime session (CPU, torch's thread count), batch size free."""
    import tempfile

    from paperkit import export

    class _Features(nn.Module):
        def __init__(self, t: Teacher) -> None:
            super().__init__()
            self.t = t

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.t.features(x)

    with tempfile.TemporaryDirectory() as td, _quiet():
        path = export.export_onnx(_Features(teacher).eval(), Path(td) / "trunk.onnx", input_size)
        session = export.ort_session(path, threads=torch.get_num_threads())
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: np.ascontiguousarray(x.float().numpy())})[0])
    return run


def _digest(img: torch.Tensor) -> bytes:
    return hashlib.blake2b(img.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).digest()


def _targets(ds: data.FaceDataset) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.tensor([s.label for s in ds.samples], dtype=torch.long)
    c = torch.tensor([list(s.cues) for s in ds.samples], dtype=torch.long).reshape(len(ds.samples), -1)
    return y, c


def _fresh_head(teacher: Teacher, seed: int) -> None:
    cfg = teacher.config
    torch.manual_seed(seed)
    teacher.head = AuxHead(teacher.backbone.out_dim, cfg["num_classes"], cfg["num_cues"], cfg["hidden"],
                           cfg["dropout"])


@torch.inference_mode()
def _head_scores(teacher: Teacher, feats: torch.Tensor) -> np.ndarray:
    teacher.head.eval()
    if len(feats) == 0:
        return np.zeros(0)
    logits = teacher.head(feats.to(devices.model_device(teacher.head)))[0]
    return torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy()


def fit_head(teacher: Teacher, views: Sequence[torch.Tensor], y: torch.Tensor, cues: torch.Tensor,
             val_feats: torch.Tensor, val_y: torch.Tensor, *, epochs: int, lr: float, seed: int,
             batch_size: int, gamma: float, threshold: float, cue_weight: float = CUE_WEIGHT,
             name: str = "teacher") -> pd.DataFrame:
    """Train the 8-head classifier on cached features (Reduced Focal Loss, AdamW); keep the best-val-ACER head.

    Epoch e uses augmented view e mod len(views). Without validation images the last epoch is kept.
    """
    torch.manual_seed(seed)   # dropout draws from the global generator
    home = devices.model_device(teacher.head)
    head = teacher.head.cpu()  # the head is tiny and its cached features live on the CPU
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=TEACHER_WEIGHT_DECAY)
    gen = torch.Generator().manual_seed(seed)
    n = len(y)
    if n == 0:
        raise ValueError(f"[{name}] no training images")
    rows, best, best_state = [], math.inf, None
    for ep in range(epochs):
        t0 = time.perf_counter()
        f = views[ep % len(views)]
        head.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            if len(idx) < 2 and n > 1:
                continue
            logits, cl = head(f[idx])
            loss = reduced_focal_loss(logits, y[idx], gamma, threshold)
            loss = loss + cue_weight * reduced_focal_loss(cl, cues[idx], gamma, threshold)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        row: dict[str, float] = {"epoch": ep + 1, "train_loss": total / n, "epoch_time_s": time.perf_counter() - t0}
        if len(val_y):
            m = metrics.evaluate(_head_scores(teacher, val_feats), val_y.numpy())
            row.update(val_acer=m["acer"], val_accuracy=m["accuracy"], val_auc=m["auc"])
            if math.isfinite(m["acer"]) and m["acer"] < best:   # NaN when val holds one class only
                best, best_state = m["acer"], copy.deepcopy(head.state_dict())
        rows.append(row)
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval().to(home)
    hist = pd.DataFrame(rows)
    last = hist.iloc[-1]
    why = "no validation images" if not len(val_y) else "validation ACER undefined (one class only)"
    print(f"[{name}] {epochs} head epochs on {len(views)} cached view(s) of {n} images; "
          f"best val ACER {100 * best:.2f}%" if best_state is not None else
          f"[{name}] {epochs} head epochs; {why}: last epoch kept (loss {last.train_loss:.4f})")
    return hist



# ============================================================================================ teacher
def _teacher_meta(run: DistillRun, seed: int) -> dict[str, Any]:
    info = results.dataset_info(run.root)
    return {"profile": run.profile.name, "seed": seed, "data_seed": run.data_seed, "dataset": info["name"],
            "fingerprint": info["fingerprint"], "input_size": run.profile.input_size,
            "epochs": run.profile.teacher_epochs, "lr": run.profile.teacher_lr,
            "gamma": run.profile.focal_gamma, "threshold": run.profile.focal_threshold,
            "head_passes_per_view": _head_passes(run.profile), "cue_weight": CUE_WEIGHT}


def _head_passes(prof: Profile) -> int:
    """Head epochs per cached view: the profile's `teacher_head_passes_per_view` when it has one (the paper
    profile should say 1, so that teacher_epochs are seed 001's epochs), else HEAD_PASSES_PER_VIEW."""
    return max(1, int(getattr(prof, "teacher_head_passes_per_view", HEAD_PASSES_PER_VIEW)))


def _head_epochs(prof: Profile) -> int:
    return max(1, prof.teacher_epochs) * _head_passes(prof)


def _train_views(run: DistillRun, ds: data.FaceDataset) -> list[torch.Tensor]:
    assert run.cache is not None
    return [run.cache.features(ds, v) for v in range(max(1, run.profile.teacher_epochs))]


def _teacher_ckpt(run: DistillRun, seed: int) -> Path:
    return run.ckpt_dir / f"teacher_seed{seed}.pt"


def train_teacher(run: DistillRun, backbone: str = "efficientnet_lite0", retrain: bool = False) -> pd.DataFrame:
    """Per seed: build the teacher (frozen pretrained backbone), train its 8 heads on cached features, save it.

    The backbone is the same for every seed (frozen ImageNet weights), so its features are computed once;
    the seed draws the head's initialisation, dropout and batch order. A checkpoint
    `run_dir/checkpoints/distill/teacher_seed<k>.pt` written for the same profile, seed and dataset is
    reused unless `retrain`.
    """
    t0 = time.perf_counter()
    prof = run.profile
    frames = []
    for seed in run.seeds:
        ck = _teacher_ckpt(run, seed)
        meta_file = ck.with_suffix(".json")
        meta = _teacher_meta(run, seed)
        torch.manual_seed(seed)
        teacher = teacher_net(backbone=backbone, input_size=prof.input_size)
        if run.cache is None:
            run.cache = FeatureCache(teacher, prof.batch_size, devices.workers(prof.num_workers),
                                     run.loaders["train"].dataset)
        if not retrain and ck.is_file() and meta_file.is_file():
            saved = json.loads(meta_file.read_text())
            if saved.get("meta") == meta:
                run.teachers[seed] = load_teacher(ck, num_classes=2)
                hist = pd.DataFrame(saved.get("history", []))
                run.histories[(seed, "teacher")] = hist
                frames.append(hist.assign(model="teacher", seed=seed))
                print(f"[teacher seed {seed}] reusing {ck} (same profile, seed and dataset); pass retrain=True "
                      "to train again")
                continue
        tr, va = run.loaders["train"].dataset, run.loaders["val"].dataset
        views = _train_views(run, tr)
        y, cues = _targets(tr)
        val_f = run.cache.features(va, None)
        val_y, _ = _targets(va)
        print(f"[teacher seed {seed}] backbone features: {run.cache.images_computed} images computed so far "
              f"({len(views)} augmented view(s) of train + val) at {time.perf_counter() - t0:.1f}s")
        hist = fit_head(teacher, views, y, cues, val_f, val_y,
                        epochs=_head_epochs(prof), lr=prof.teacher_lr, seed=seed,
                        batch_size=prof.batch_size, gamma=prof.focal_gamma, threshold=prof.focal_threshold,
                        name=f"teacher seed {seed}")
        save_teacher(teacher, ck)
        results.atomic_write_bytes(meta_file, json.dumps({"meta": meta, "history": hist.to_dict("records")},
                                                         indent=1).encode())
        run.teachers[seed] = teacher
        run.histories[(seed, "teacher")] = hist
        frames.append(hist.assign(model="teacher", seed=seed))
        n_all, n_train = count_params(teacher), count_params(teacher, trainable_only=True)
        print(f"[teacher seed {seed}] {backbone}: {n_all / 1e6:.2f} M parameters, {n_train / 1e6:.3f} M trained "
              f"(the heads); saved {ck}")
    run.timings["teacher_s"] = time.perf_counter() - t0
    return pd.concat(frames, ignore_index=True)


def require_teacher(run: DistillRun, seed: int | None = None) -> Teacher:
    """A seed's trained teacher: in memory, else loaded from the run folder (clear error when never trained)."""
    seed = run.seeds[0] if seed is None else seed
    if seed not in run.teachers:
        run.teachers[seed] = load_teacher(_teacher_ckpt(run, seed), num_classes=2)
    t = run.teachers[seed]
    if t.num_classes != 2:
        raise ValueError(f"the teacher predicts {t.num_classes} classes; live/spoof needs 2")
    if run.cache is None:
        run.cache = FeatureCache(t, run.profile.batch_size, devices.workers(run.profile.num_workers),
                                 run.loaders["train"].dataset)
    return t


def pool_teacher(run: DistillRun, seed: int) -> Teacher:
    """The teacher of the pool experiment: the seed's backbone with a fresh head trained on the labelled
    subjects' cached features only (a few seconds), so no withheld label reaches a pool student."""
    if seed in run.pool_teachers:
        return run.pool_teachers[seed]
    if run.pool is None:
        raise RuntimeError("this run has no unlabelled pool (unlabelled_fraction=0)")
    prof = run.profile
    t = copy.deepcopy(require_teacher(run, seed))
    _fresh_head(t, seed)
    tr, va = run.loaders["train"].dataset, run.loaders["val"].dataset
    lab = torch.as_tensor(run.pool.labelled)
    y, cues = _targets(tr)
    vy, _ = _targets(va)
    assert run.cache is not None
    hist = fit_head(t, [v[lab] for v in _train_views(run, tr)], y[lab], cues[lab], run.cache.features(va, None), vy,
                    epochs=_head_epochs(prof), lr=prof.teacher_lr, seed=seed,
                    batch_size=prof.batch_size, gamma=prof.focal_gamma, threshold=prof.focal_threshold,
                    name=f"teacher_labelled_only seed {seed}")
    run.pool_teachers[seed] = t
    run.histories[(seed, "teacher_labelled_only")] = hist
    return t


# ============================================================================================ students
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


def _student_loaders(run: DistillRun, name: str) -> dict[str, DataLoader]:
    """The SWAP students use the run's loaders; the pool pair sees the labelled subjects' labels only."""
    if name not in POOL_STUDENTS:
        return run.loaders
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
        ds = data.FaceDataset(tr.root, samples, tr.size, train=True, seed=tr.seed)
        loader = data._loader(ds, prof.batch_size, nw, data.EpochSampler(len(samples), tr.seed),
                              drop_last=len(samples) > prof.batch_size)
    return {**run.loaders, "train": loader}


def _ck_name(run: DistillRun, seed: int, name: str, pair: tuple[float, float] | None = None,
             prefix: str = "") -> str:
    base = f"distill/{run.student}/seed{seed}/{prefix}{name}"
    if KD_KIND[name]:
        tau, alpha = pair or run.kd_params(name)
        base += f"_t{tau:g}_a{alpha:g}"
    if name in POOL_STUDENTS:
        base += f"_u{run.unlabelled_fraction:g}"
    return base


def _train_one(run: DistillRun, seed: int, name: str, loaders: dict[str, DataLoader], teacher: Teacher | None,
               ck_name: str, use_cache: bool = False, epochs: int | None = None,
               pair: tuple[float, float] | None = None) -> tuple[nn.Module, pd.DataFrame]:
    model = build_student(run.student, seed)
    kind = KD_KIND[name]
    lookup = None
    if kind is not None and use_cache and run.cache is not None and teacher is not None:
        cache, head = run.cache, teacher.head
        lookup = lambda x: cache.teacher_logits(head, x)  # noqa: E731
    loss_fn = None
    if kind is not None:
        tau, alpha = pair or run.kd_params(name)
        loss_fn = kd_loss_fn(teacher, kind, tau, alpha, cached_logits=lookup)  # type: ignore[arg-type]
    hist = train.fit(model, loaders, run_dir=run.run_dir, name=ck_name, epochs=epochs or run.profile.student_epochs,
                     lr=run.profile.student_lr, seed=seed, loss_fn=loss_fn, eval_config=_eval_config,
                     channels_last=run.profile.channels_last, lr_schedule=run.profile.lr_schedule,
                     # the full budget even for a short grid run: it is then the first epoch of the
                     # full run, which the selected candidate resumes
                     schedule_epochs=run.profile.student_epochs, progress=False)
    return model.eval(), hist.to_frame()


def _cache_student_views(run: DistillRun) -> None:
    """The student's loader augments epoch e exactly like cached view e: cache one view per student epoch so
    KD students need no backbone pass (the teacher's head runs on the cached features)."""
    assert run.cache is not None
    tr = run.loaders["train"].dataset
    for v in range(run.profile.student_epochs):
        run.cache.features(tr, v)


def select_kd(run: DistillRun) -> pd.DataFrame:
    """Choose seed 001's (tau, alpha) on validation ACER: one short run per grid candidate (first seed).

    Selection: lowest best-epoch validation ACER within the short run, ties to the higher validation AUC.
    The chosen candidate's checkpoint is resumed to the full budget by train_students. Writes
    tables/kd_selection.csv (every candidate, its val ACER, soft/hard weight, and which one was chosen)."""
    t0 = time.perf_counter()
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
        _, hist = _train_one(run, seed, "student_kd", run.loaders, teacher,
                             _ck_name(run, seed, "student_kd", pair), use_cache=True, epochs=run.kd_grid_epochs,
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


def train_students(run: DistillRun, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Per seed, the same student (architecture, initial weights, data order, epochs, lr) trained alone, with
    seed 001's and Hinton's KD, and (with a pool) seed 001's KD on the labelled subjects with / without the
    unlabelled images."""
    t0 = time.perf_counter()
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
            model, hist = _train_one(run, seed, name, _student_loaders(run, name), t, _ck_name(run, seed, name),
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


# ============================================================================================ scores
def teacher_test_scores(run: DistillRun, ds: data.FaceDataset, teacher: Teacher | None = None) -> np.ndarray:
    teacher = teacher or require_teacher(run)
    assert run.cache is not None
    return _head_scores(teacher, run.cache.features(ds, None))


def _scores(run: DistillRun, name: str, model: nn.Module, loader: DataLoader,
            teacher: Teacher | None = None) -> tuple[np.ndarray, np.ndarray]:
    if name.startswith("teacher"):
        s = teacher_test_scores(run, loader.dataset, teacher or model)  # type: ignore[arg-type]
        return s, np.array([x.label for x in loader.dataset.samples])
    return train.predict_scores(model, loader, channels_last=run.profile.channels_last)


def _scored(run: DistillRun, name: str, model: nn.Module, loader: DataLoader,
            teacher: Teacher | None = None) -> stats.Scored:
    s, y = _scores(run, name, model, loader, teacher)
    return stats.Scored.from_dataset(s, y, loader.dataset)


def energy_method() -> tuple[str, Callable[[], float] | None]:
    """('rapl:<zone>', reader of microjoules) where a RAPL counter is readable, else the CPU-time model."""
    import glob
    for zone in sorted(glob.glob(RAPL_GLOB)):
        f = Path(zone) / "energy_uj"
        try:
            float(f.read_text())
        except (OSError, ValueError):
            continue
        name = (Path(zone) / "name").read_text().strip() if (Path(zone) / "name").is_file() else Path(zone).name
        return f"rapl:{name} (package counter; includes any other load)", lambda f=f: float(f.read_text())
    return f"cpu_time x {PER_CORE_WATTS:g} W/core (assumed; no readable RAPL counter)", None


@quiet.timing("SWAP CPU time and energy")
def _cpu_and_energy(session: Any, input_size: int, iters: int, rapl: Callable[[], float] | None
                    ) -> tuple[float, float]:
    """CPU ms per batch-1 inference (process CPU time, 1 ORT thread) and energy per inference in mJ."""
    x = np.random.default_rng(0).standard_normal((1, 3, input_size, input_size)).astype(np.float32)
    name = session.get_inputs()[0].name
    for _ in range(3):
        session.run(None, {name: x})
    e0 = rapl() if rapl else 0.0
    c0 = time.process_time()
    for _ in range(iters):
        session.run(None, {name: x})
    cpu_ms = (time.process_time() - c0) * 1e3 / iters
    if rapl:
        return cpu_ms, (rapl() - e0) / 1e3 / iters
    return cpu_ms, cpu_ms * PER_CORE_WATTS   # ms x W = mJ


@quiet.timing("SWAP throughput")
def _throughput(session: Any, input_size: int, batch: int, reps: int) -> float:
    x = np.random.default_rng(1).standard_normal((batch, 3, input_size, input_size)).astype(np.float32)
    name = session.get_inputs()[0].name
    session.run(None, {name: x})
    times = []
    for _ in range(max(1, reps)):
        t0 = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return batch / float(np.median(times))


def _clean_train_loader(run: DistillRun) -> DataLoader:
    ds = run.loaders["train"].dataset
    clean = data.FaceDataset(ds.root, ds.samples, ds.size, train=False, seed=run.data_seed)
    return DataLoader(clean, batch_size=run.profile.batch_size, shuffle=False, num_workers=0)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    import logging
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


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



@quiet.timing("SWAP latency rounds")
def latency_rounds(paths: dict[str, Path], rounds: int, iters: int, warmup: int, input_size: int
                   ) -> dict[str, list[float]]:
    """Per-round median batch-1 latency (ms) of each ONNX model, ONNX Runtime CPU, 1 thread.

    Every round runs every model `iters` times, the starting model rotating between rounds, so round i of
    two models ran back to back: their per-round medians are paired (`stats.ratio_interval`)."""
    from paperkit import export
    sessions = {k: export.ort_session(p, threads=1) for k, p in paths.items()}
    x = np.random.default_rng(0).standard_normal((1, 3, input_size, input_size)).astype(np.float32)
    names = list(sessions)
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for k in names:
        for _ in range(max(0, warmup)):
            sessions[k].run(None, feeds[k])
    out: dict[str, list[float]] = {k: [] for k in names}
    for r in range(max(1, rounds)):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t = []
            for _ in range(max(1, iters)):
                t0 = time.perf_counter()
                sessions[k].run(None, feeds[k])
                t.append((time.perf_counter() - t0) * 1e3)
            out[k].append(float(np.median(t)))
    return out


def _ci_cols(name: str, iv: stats.Interval) -> dict[str, float]:
    return {name: iv.value, f"{name}_ci_low": iv.low, f"{name}_ci_high": iv.high}


def _export(run: DistillRun, name: str, m: nn.Module, base: Path, calib: DataLoader) -> dict[str, Path]:
    from paperkit import export
    fp32, int8 = base.with_name(base.name + ".onnx"), base.with_name(base.name + "_int8.onnx")
    with _quiet():   # the exporter's progress lines and quantizer warnings would flood the notebook
        export.export_onnx(copy.deepcopy(m).cpu().eval(), fp32, input_size=run.profile.input_size, dynamic_batch=True)
        export.quantize_int8(fp32, int8, calib, max_images=run.profile.calib_images)
    x = next(iter(calib))[0][:2]
    gap = export.parity(copy.deepcopy(m).cpu().eval(), fp32, x)
    if gap > 1e-3:
        raise RuntimeError(f"ONNX export of {name} disagrees with torch (max logit gap {gap:.2e})")
    return {"fp32": fp32, "int8": int8}


def _int8_scored(path: Path, loader: DataLoader) -> stats.Scored:
    from paperkit import export
    s, y = export.onnx_scores(export.ort_session(path, threads=1), loader)
    return stats.Scored.from_dataset(s, y, loader.dataset)


def _seed_rows(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per-seed rows + stats.across_seeds mean/std rows over the numeric columns (unchanged for one seed).

    Interval bounds are left empty in the mean/std rows: the mean of per-seed bounds is no interval."""
    num = [c for c in df.columns if c != "seed" and pd.api.types.is_numeric_dtype(df[c])
           and not pd.api.types.is_bool_dtype(df[c]) and not c.endswith(("_ci_low", "_ci_high"))]
    return stats.across_seeds(df, by=list(by), metrics_=num)


def swap_table(run: DistillRun, threshold: float = 0.5) -> pd.DataFrame:
    """SWAP (seed 003): speed, weight, accuracy, power for the teacher and the three students, per seed.

    Quality: test split at the fixed threshold 0.5 (FP32 torch; INT8 ONNX beside it), subject-bootstrap 95%
    intervals; both operating points (0.5 and the validation EER) of every model and format go to
    tables/distill_quality.csv. accuracy_vs_teacher = 100 x student/teacher accuracy with a paired subject
    bootstrap (both models' per-subject counts resampled together, `stats.paired_statistic`);
    acer_minus_alone = paired difference to student_alone. Latency: ONNX Runtime CPU, batch 1, 1 thread,
    FP32 and INT8 of every model interleaved in `latency_rounds` rounds (first seed's models: the
    architectures, hence the latencies, are the same for every seed); speedups are ratios of per-round
    medians with a paired bootstrap over rounds. Energy: RAPL when readable, else CPU time per inference x
    PER_CORE_WATTS (named in energy_method). Writes predictions/swap.csv.gz (val + test, torch + int8).
    """
    t0 = time.perf_counter()
    if not run.students:
        raise RuntimeError("no students trained yet: run train_students(run) first")
    prof, size, n_boot = run.profile, run.profile.input_size, run.profile.bootstrap_samples
    calib = _clean_train_loader(run)
    first = run.seeds[0]
    paths: dict[tuple[int, str], dict[str, Path]] = {}
    models: dict[int, dict[str, nn.Module]] = {}
    for seed in run.seeds:
        models[seed] = {"teacher": require_teacher(run, seed),
                        **{n: run.students[seed][n] for n in STUDENTS if n in run.students.get(seed, {})}}
        for name, m in models[seed].items():
            deploy = name == "student_kd" and seed == first   # the deployable model goes to run_dir/models (< 5 MB)
            base = (run.run_dir / "models" / "distill_student_kd") if deploy else \
                (run.ckpt_dir / "onnx" / f"seed{seed}" / name)
            paths[(seed, name)] = _export(run, name, m, base, calib)
            if deploy:
                run.outputs += list(paths[(seed, name)].values())
    cands = {f"{n}/{k}": p for (s, n), d in paths.items() if s == first for k, p in d.items()}
    lat = latency_rounds(cands, prof.latency_rounds, prof.latency_iters, max(3, prof.latency_iters // 5), size)
    from paperkit import export
    method, rapl = energy_method()
    iters = prof.latency_rounds * prof.latency_iters
    power: dict[str, dict[str, float]] = {}
    for name in models[first]:
        s1 = export.ort_session(paths[(first, name)]["fp32"], threads=1)
        s8 = export.ort_session(paths[(first, name)]["int8"], threads=1)
        cpu_ms, energy = _cpu_and_energy(s1, size, iters, rapl)
        _, energy8 = _cpu_and_energy(s8, size, iters, rapl)
        power[name] = {"cpu_ms": cpu_ms, "energy_mj": energy, "energy_mj_int8": energy8,
                       "throughput_img_s": _throughput(s1, size, THROUGHPUT_BATCH, max(3, prof.latency_rounds))}
    rows, qrows, preds = [], [], []
    for seed in run.seeds:
        sc: dict[str, dict[str, stats.Scored]] = {}
        for name, m in models[seed].items():
            sc[name] = {f"{fmt}/{split}": (_scored(run, name, m, run.loaders[split]) if fmt == "torch" else
                                           _int8_scored(paths[(seed, name)]["int8"], run.loaders[split]))
                        for fmt in ("torch", "int8") for split in ("val", "test")}
            for key, s in sc[name].items():
                fmt, split = key.split("/")
                preds.append(s.frame(model=name, config="", bn="", fmt=fmt, seed=seed, split=split,
                                     dataset=run.dataset))
                if split == "test":
                    for q in stats.quality_rows(s, sc[name][f"{fmt}/val"], n_boot, BOOT_SEED):
                        qrows.append({"model": name, "seed": seed, "fmt": fmt, "judged_for": JUDGED_FOR.get(name, ""),
                                      **q, "dataset": run.dataset})
        t_test = sc["teacher"]["torch/test"]
        for name, m in models[seed].items():
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
                "params_m": deploy_params(m) / 1e6,
                "size_kb_fp32": export.file_size_kb(paths[(seed, name)]["fp32"]),
                "size_kb_int8": export.file_size_kb(paths[(seed, name)]["int8"]),
                "madds_m": _madds(copy.deepcopy(m).cpu(), size),
                **_ci_cols("latency_ms", stats.median_interval(lat[f"{name}/fp32"])),
                **_ci_cols("latency_ms_int8", stats.median_interval(lat[f"{name}/int8"])),
                **q,
                "acer_int8": q8["acer"], "acer_int8_ci_low": q8["acer_ci_low"], "acer_int8_ci_high": q8["acer_ci_high"],
                "accuracy_int8": q8["accuracy"], "accuracy_int8_ci_low": q8["accuracy_ci_low"],
                "accuracy_int8_ci_high": q8["accuracy_ci_high"],
                **power[name], "energy_method": method,
                **_ci_cols("speedup_vs_teacher", stats.ratio_interval(lat["teacher/fp32"], lat[f"{name}/fp32"])),
                **_ci_cols("speedup_int8_vs_teacher_fp32",
                           stats.ratio_interval(lat["teacher/fp32"], lat[f"{name}/int8"])),
                **_ci_cols("accuracy_vs_teacher", stats.paired_statistic(
                    [test, t_test], lambda r: 100 * r[0]["accuracy"] / r[1]["accuracy"], [threshold, threshold],
                    n_boot, BOOT_SEED)),
            }
            if KD_KIND.get(name) and "student_alone" in sc:
                row.update(_ci_cols("acer_minus_alone", stats.paired_difference(
                    test, sc["student_alone"]["torch/test"], "acer", threshold, threshold, n_boot, BOOT_SEED)))
            rows.append(row)
    df = pd.DataFrame(rows)
    df["latency_rounds"] = prof.latency_rounds
    df["latency_note"] = ("ORT CPU, batch 1, 1 thread, FP32 and INT8 of all models interleaved in "
                          f"{prof.latency_rounds} rounds x {prof.latency_iters}; median of round medians "
                          f"(seed {first}'s models)")
    df = _seed_rows(df, ["model", "judged_for", "operating_point"])
    run.outputs.append(results.write_table(run.run_dir, "swap", df))
    run.outputs.append(results.write_table(run.run_dir, "distill_quality",
                                           _seed_rows(pd.DataFrame(qrows), ["model", "fmt", "judged_for",
                                                                            "operating_point"])))
    run.outputs.append(results.write_predictions(run.run_dir, "swap", pd.concat(preds, ignore_index=True)))
    run.timings["swap_s"] = time.perf_counter() - t0
    return df


def _first_seed_rows(df: pd.DataFrame) -> pd.DataFrame:
    seeds = [s for s in df["seed"].astype(str).unique() if s not in ("mean", "std")]
    return df[df["seed"].astype(str) == seeds[0]] if seeds else df


def swap_targets(swap: pd.DataFrame) -> pd.DataFrame:
    """Seed 003's targets against the SWAP table, for each student a seed is judged on (first seed's rows).

    Three-valued verdicts (`stats.verdict`): holds only when the whole 95% interval is on the holding side."""
    t = _first_seed_rows(swap).set_index("model")
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


# ============================================================================================ pool
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
    seen = {"teacher_labelled_only": (n_lab, n_lab), "student_kd_labelled_only": (n_lab, n_lab),
            "student_kd_semi": (n_lab, n_lab + n_unl), "student_kd": (n_lab + n_unl, n_lab + n_unl)}
    rows, preds = [], []
    for seed in run.seeds:
        got = run.students.get(seed, {})
        missing = [n for n in POOL_STUDENTS if n not in got]
        if missing:
            raise RuntimeError(f"pool students {missing} of seed {seed} are not trained: run train_students(run)")
        models: dict[str, nn.Module] = {"teacher_labelled_only": pool_teacher(run, seed),
                                        **{n: got[n] for n in ("student_kd",) + POOL_STUDENTS if n in got}}
        sc = {n: {sp: _scored(run, n, m, run.loaders[sp]) for sp in ("val", "test")} for n, m in models.items()}
        for n, d in sc.items():
            for sp, s in d.items():
                preds.append(s.frame(model=n, config=f"unlabelled_fraction={run.pool.fraction:g}", bn="",
                                     fmt="torch", seed=seed, split=sp, dataset=run.dataset))
        thr = {n: stats.thresholds(d["val"]) for n, d in sc.items()}
        base = sc["student_kd_labelled_only"]["test"]
        for n, d in sc.items():
            tau, alpha = run.kd_params(n) if n in KD_KIND else (math.nan, math.nan)
            for op, t in thr[n].items():
                row: dict[str, Any] = {"model": n, "seed": seed, "operating_point": op, "threshold": t,
                                       "kd_tau": tau, "kd_alpha": alpha, "labelled_images": seen[n][0],
                                       "images_seen": seen[n][1], **stats.quality(d["test"], t, n_boot, BOOT_SEED)}
                if n in ("student_kd_semi", "student_kd") and op in thr["student_kd_labelled_only"]:
                    iv = stats.paired_difference(d["test"], base, "acer", t, thr["student_kd_labelled_only"][op],
                                                 n_boot, BOOT_SEED)
                    row.update(_ci_cols("acer_minus_labelled_only", iv))
                    row["pool_helps"] = stats.verdict(iv.low, iv.high, 0.0, "below") if n == "student_kd_semi" else ""
                rows.append(row)
    df = pd.DataFrame(rows)
    df["unlabelled_fraction"] = run.pool.fraction
    df["unlabelled_subjects"] = len(run.pool.unlabelled_subjects)
    df["dataset"] = run.dataset
    df = _seed_rows(df, ["model", "operating_point"])
    run.outputs.append(results.write_table(run.run_dir, "distill_pool", df))
    run.outputs.append(results.write_predictions(run.run_dir, "distill_pool", pd.concat(preds, ignore_index=True)))
    return df


# ============================================================================================ cross-domain
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
                     "operating_point": "val_eer", **_ci_cols("hter", iv), "apcer": 100 * metrics.apcer(c),
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
            _fresh_head(t_a, seed)
            y, cues = _targets(tr)
            vy, _ = _targets(va)
            assert run.cache is not None
            fit_head(t_a, _train_views(run, tr), y, cues, run.cache.features(va, None), vy,
                     epochs=_head_epochs(prof), lr=prof.teacher_lr, seed=seed,
                     batch_size=prof.batch_size, gamma=prof.focal_gamma, threshold=prof.focal_threshold,
                     name=f"teacher[{a}] seed {seed}")
            trained: dict[str, nn.Module] = {"teacher": t_a}
            for name in models:
                if name != "teacher":
                    trained[name], _ = _train_one(run, seed, name, loaders, t_a,
                                                  _ck_name(run, seed, name, prefix=f"cross_{a}/"), use_cache=True)
            for name in models:
                m = trained[name]
                val = _scored(run, name, m, loaders["val"], t_a)
                for b in domains:
                    test = _scored(run, name, m, per_test[a][b]["test"], t_a)
                    rows += _level_rows(run, seed, name, a, b, val, test)
                    for split, s in (("val", val), ("test", test)):
                        preds.append(s.frame(model=name, config=f"{a}->{b}", bn="", fmt="torch", seed=seed,
                                             split=split, dataset=run.dataset))
    df = pd.DataFrame(rows)
    df["protocol"] = np.where(df.train_domain == df.test_domain, "in-domain", "cross-domain")
    df["threshold_rule"] = "EER on the training domain's validation data (per level)"
    df = _seed_rows(df, ["train_domain", "test_domain", "model", "level", "protocol", "operating_point"])
    run.outputs.append(results.write_table(run.run_dir, "cross_domain_hter", df))
    run.outputs.append(results.write_predictions(run.run_dir, "cross_domain", pd.concat(preds, ignore_index=True)))
    run.timings["cross_domain_s"] = time.perf_counter() - t0
    return df


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
    view = swap[seeds == "mean"] if (seeds == "mean").any() else _first_seed_rows(swap)
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


def history_table(run: DistillRun) -> pd.DataFrame:
    """Per-epoch training history of every model and seed, written as tables/distill_history.csv."""
    frames = [h.assign(model=n, seed=s) for (s, n), h in run.histories.items()]
    df = pd.concat(frames, ignore_index=True).assign(dataset=run.dataset)
    run.outputs.append(results.write_table(run.run_dir, "distill_history", df))
    return df
