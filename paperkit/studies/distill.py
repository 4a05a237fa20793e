"""Notebook 03: teacher with auxiliary heads (seed 001), distillation into a < 1 M student (seeds 001, 003),
SWAP metrics (seed 003), cross-domain HTER at frame and video level (seed 001).

Flow (each step is one notebook cell):
  run = setup(profile, data_root, run_dir, seed, kd_tau, kd_alpha)
  train_teacher(run)        frozen EfficientNet-Lite0 + 8-head classifier, Reduced Focal Loss, AdamW
  train_students(run)       the same student, seed and budget three ways: alone / seed-001 KD / Hinton KD
  swap_table(run)           tables/swap.csv
  cross_domain_table(run)   tables/cross_domain_hter.csv
  tradeoff_figure(run)      figures/distill_tradeoff.png

Why the teacher is trained on cached features: its backbone is frozen, so an epoch costs one backbone
forward per image whatever the head does. We compute the backbone features of `teacher_epochs` augmented
views of the training set once (every view is a fresh augmentation, as an epoch would be), then train the
head for HEAD_PASSES_PER_VIEW passes over each view. The cached features also serve the cross-domain
teachers (a domain's head is trained on that domain's rows), so the six teachers of this study cost the
backbone passes of one.
"""
from __future__ import annotations

import contextlib
import copy
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
from torch.utils.data import DataLoader

from paperkit import data, metrics, results, train
from paperkit.losses import check_kd_params, kd_loss_fn, reduced_focal_loss
from paperkit.models.teacher import (
    AuxHead,
    Teacher,
    check_cues_agree,
    count_params,
    load_teacher,
    save_teacher,
    teacher_net,
)
from paperkit.profiles import Profile, get_profile
from paperkit.studies.common import open_data

NOTEBOOK = "03_distillation"
STUDENTS: tuple[str, ...] = ("student_alone", "student_kd", "student_kd_hinton")
KD_KIND: dict[str, str | None] = {"student_alone": None, "student_kd": "weighted", "student_kd_hinton": "hinton"}
HEAD_PASSES_PER_VIEW = 4           # head epochs per cached augmented view (the head alone is nearly free)
TEACHER_WEIGHT_DECAY = 1e-2        # AdamW, as seed 001
CUE_WEIGHT = 1.0                   # cue heads weigh as much as the live/spoof head (seed 001: one loss, 8 heads)
STUDENT_WIDTH = 0.35               # narrow PTA-MobileNetV2: 0.46 M parameters
PER_CORE_WATTS = 5.0               # assumed power of one busy core when no RAPL counter is readable
THROUGHPUT_BATCH = 32
RAPL_GLOB = "/sys/class/powercap/intel-rapl*"
CROSS_DOMAIN_MODELS: tuple[str, ...] = ("teacher", "student_alone", "student_kd")


# ============================================================================================ setup
@dataclass
class DistillRun:
    """Everything the notebook's cells share: parameters, data, trained models, timings."""

    profile: Profile
    root: Path
    run_dir: Path
    seed: int
    tau: float
    alpha: float
    student: str
    dataset: str
    loaders: dict[str, DataLoader]
    cue_counts: dict[str, int]
    teacher: Teacher | None = None
    cache: "FeatureCache | None" = None
    students: dict[str, nn.Module] = field(default_factory=dict)
    histories: dict[str, pd.DataFrame] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints" / "distill"

    def params(self) -> dict[str, Any]:
        return {"profile": self.profile.name, "seed": self.seed, "kd_tau": self.tau, "kd_alpha": self.alpha,
                "student": f"{self.student}(width={STUDENT_WIDTH})" if self.student == "pta_mobilenet_v2"
                else self.student}


def setup(profile: str | Profile = "default", data_root: str | None = "", run_dir: str = "../results",
          seed: int = 0, kd_tau: float | None = None, kd_alpha: float | None = None,
          student: str = "pta_mobilenet_v2") -> DistillRun:
    """Validate parameters, resolve the dataset, build loaders, and check the cue side file against labels."""
    prof = get_profile(profile) if isinstance(profile, str) else profile
    tau = prof.kd_tau if kd_tau is None else float(kd_tau)
    alpha = prof.kd_alpha if kd_alpha is None else float(kd_alpha)
    check_kd_params(tau, alpha)
    if student not in STUDENT_BUILDERS:
        raise ValueError(f"unknown student {student!r}; choose one of {sorted(STUDENT_BUILDERS)}")
    d = open_data(prof, data_root, seed)
    root, loaders = d.root, d.loaders
    cue_file = root / "metas" / "paperkit" / "attack_cues.json"
    source = str(cue_file) if cue_file.is_file() else \
        "derived from CelebA-Spoof labels (paperkit.data.derived_cues)"
    all_samples = [s for k in ("train", "val", "test") for s in loaders[k].dataset.samples]
    counts = check_cues_agree(all_samples, source=source)
    counts["source"] = source  # type: ignore[assignment]
    run = DistillRun(profile=prof, root=Path(root), run_dir=Path(run_dir), seed=int(seed), tau=tau, alpha=alpha,
                     student=student, dataset=d.dataset, loaders=loaders, cue_counts=counts)
    print(f"dataset: {run.dataset}\n  train {len(loaders['train'].dataset)}  val {len(loaders['val'].dataset)}  "
          f"test {len(loaders['test'].dataset)} images; cues: {source} "
          f"({counts['unknown_cue_entries']} unknown cue entries, ignored by the loss)\n"
          f"  distillation: tau={tau} alpha={alpha}; student {run.params()['student']}")
    return run


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
    """Same seed -> same initial weights for all three students (only the loss differs)."""
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

    def _compute(self, ds: data.FaceDataset, items: list[tuple[int, int]], v: int) -> None:
        loader = DataLoader(ds, batch_size=self.batch_size, sampler=items, num_workers=self.workers)
        self.teacher.eval()
        k = 0
        for x, _, _ in loader:
            f = self.teacher.features(x.contiguous(memory_format=torch.channels_last)).float()
            for img, row in zip(x, f):
                key = (ds.samples[items[k][0]].path, v)
                self.store[key] = row.clone()
                self.by_digest[_digest(img)] = key
                k += 1
        self.images_computed += len(items)

    @torch.inference_mode()
    def teacher_logits(self, head: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        """Teacher logits for a batch whose every image was cached bit for bit (an augmented view the
        student's loader reproduces exactly); None if any image is new, so the caller runs the teacher."""
        keys = [self.by_digest.get(_digest(img)) for img in x]
        if any(k is None for k in keys):
            self.lookups["miss"] += 1
            return None
        self.lookups["hit"] += 1
        head.eval()
        return head(torch.stack([self.store[k] for k in keys]))[0]  # type: ignore[index]

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


def _digest(img: torch.Tensor) -> bytes:
    return hashlib.blake2b(img.detach().contiguous().numpy().tobytes(), digest_size=16).digest()


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
    return torch.softmax(teacher.head(feats)[0], dim=1)[:, 1].numpy()


def fit_head(teacher: Teacher, views: Sequence[torch.Tensor], y: torch.Tensor, cues: torch.Tensor,
             val_feats: torch.Tensor, val_y: torch.Tensor, *, epochs: int, lr: float, seed: int,
             batch_size: int, gamma: float, threshold: float, cue_weight: float = CUE_WEIGHT,
             name: str = "teacher") -> pd.DataFrame:
    """Train the 8-head classifier on cached features (Reduced Focal Loss, AdamW); keep the best-val-ACER head.

    Epoch e uses augmented view e mod len(views). Without validation images the last epoch is kept.
    """
    torch.manual_seed(seed)   # dropout draws from the global generator
    head = teacher.head
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
    head.eval()
    hist = pd.DataFrame(rows)
    last = hist.iloc[-1]
    why = "no validation images" if not len(val_y) else "validation ACER undefined (one class only)"
    print(f"[{name}] {epochs} head epochs on {len(views)} cached view(s) of {n} images; "
          f"best val ACER {100 * best:.2f}%" if best_state is not None else
          f"[{name}] {epochs} head epochs; {why}: last epoch kept (loss {last.train_loss:.4f})")
    return hist


# ============================================================================================ teacher
def _teacher_meta(run: DistillRun) -> dict[str, Any]:
    info = results.dataset_info(run.root)
    return {"profile": run.profile.name, "seed": run.seed, "dataset": info["name"],
            "fingerprint": info["fingerprint"], "input_size": run.profile.input_size,
            "epochs": run.profile.teacher_epochs, "lr": run.profile.teacher_lr,
            "gamma": run.profile.focal_gamma, "threshold": run.profile.focal_threshold,
            "head_passes_per_view": HEAD_PASSES_PER_VIEW, "cue_weight": CUE_WEIGHT}


def _train_views(run: DistillRun, ds: data.FaceDataset) -> list[torch.Tensor]:
    assert run.cache is not None
    return [run.cache.features(ds, v) for v in range(max(1, run.profile.teacher_epochs))]


def train_teacher(run: DistillRun, backbone: str = "efficientnet_lite0", retrain: bool = False) -> pd.DataFrame:
    """Build the teacher (frozen pretrained backbone), train its 8 heads on cached features, save it.

    A checkpoint in `run_dir/checkpoints/distill/teacher.pt` written for the same profile, seed and dataset
    is reused unless `retrain`.
    """
    t0 = time.perf_counter()
    prof = run.profile
    ck, meta_file = run.ckpt_dir / "teacher.pt", run.ckpt_dir / "teacher.json"
    meta = _teacher_meta(run)
    torch.manual_seed(run.seed)
    teacher = teacher_net(backbone=backbone, input_size=prof.input_size)
    run.cache = FeatureCache(teacher, prof.batch_size, prof.num_workers, run.loaders["train"].dataset)
    if not retrain and ck.is_file() and meta_file.is_file():
        saved = json.loads(meta_file.read_text())
        if saved.get("meta") == meta:
            run.teacher = load_teacher(ck, num_classes=2)
            run.cache.teacher = run.teacher
            hist = pd.DataFrame(saved.get("history", []))
            run.histories["teacher"] = hist
            print(f"[teacher] reusing {ck} (same profile, seed and dataset); pass retrain=True to train again")
            run.timings["teacher_s"] = time.perf_counter() - t0
            return hist
    tr, va = run.loaders["train"].dataset, run.loaders["val"].dataset
    views = _train_views(run, tr)
    y, cues = _targets(tr)
    val_f = run.cache.features(va, None)
    val_y, _ = _targets(va)
    print(f"[teacher] backbone features: {run.cache.images_computed} images "
          f"({len(views)} augmented view(s) of train + val) in {time.perf_counter() - t0:.1f}s")
    hist = fit_head(teacher, views, y, cues, val_f, val_y, epochs=max(1, prof.teacher_epochs) * HEAD_PASSES_PER_VIEW,
                    lr=prof.teacher_lr, seed=run.seed, batch_size=prof.batch_size, gamma=prof.focal_gamma,
                    threshold=prof.focal_threshold)
    save_teacher(teacher, ck)
    results.atomic_write_bytes(meta_file, json.dumps({"meta": meta, "history": hist.to_dict("records")},
                                                     indent=1).encode())
    run.teacher = teacher
    run.histories["teacher"] = hist
    n_all, n_train = count_params(teacher), count_params(teacher, trainable_only=True)
    print(f"[teacher] {backbone}: {n_all / 1e6:.2f} M parameters, {n_train / 1e6:.3f} M trained (the heads); "
          f"saved {ck}")
    run.timings["teacher_s"] = time.perf_counter() - t0
    return hist


def require_teacher(run: DistillRun) -> Teacher:
    """The trained teacher: in memory, else loaded from the run folder (clear error when it was never trained)."""
    if run.teacher is None:
        run.teacher = load_teacher(run.ckpt_dir / "teacher.pt", num_classes=2)
    if run.teacher.num_classes != 2:
        raise ValueError(f"the teacher predicts {run.teacher.num_classes} classes; live/spoof needs 2")
    if run.cache is None:
        run.cache = FeatureCache(run.teacher, run.profile.batch_size, run.profile.num_workers,
                                 run.loaders["train"].dataset)
    return run.teacher


# ============================================================================================ students
def _train_one(run: DistillRun, name: str, loaders: dict[str, DataLoader], teacher: Teacher | None,
               ck_name: str, use_cache: bool = False) -> tuple[nn.Module, pd.DataFrame]:
    model = build_student(run.student, run.seed)
    kind = KD_KIND[name]
    lookup = None
    if kind is not None and use_cache and run.cache is not None and teacher is not None:
        cache, head = run.cache, teacher.head
        lookup = lambda x: cache.teacher_logits(head, x)  # noqa: E731
    loss_fn = None if kind is None else kd_loss_fn(teacher, kind, run.tau, run.alpha,  # type: ignore[arg-type]
                                                   cached_logits=lookup)
    hist = train.fit(model, loaders, run_dir=run.run_dir, name=ck_name, epochs=run.profile.student_epochs,
                     lr=run.profile.student_lr, seed=run.seed, loss_fn=loss_fn, eval_config=_eval_config,
                     channels_last=run.profile.channels_last, progress=False)
    return model.eval(), hist.to_frame()


def train_students(run: DistillRun, names: Sequence[str] = STUDENTS) -> pd.DataFrame:
    """The same student (architecture, initial weights, data order, epochs, lr) trained alone and with KD."""
    t0 = time.perf_counter()
    teacher = require_teacher(run) if any(KD_KIND[n] for n in names) else None
    tag = f"t{run.tau:g}_a{run.alpha:g}"
    if teacher is not None and run.cache is not None:
        # The student's loader augments epoch e exactly like cached view e: cache one view per student epoch
        # so the KD students need no backbone pass (the teacher's head runs on the cached features).
        tr = run.loaders["train"].dataset
        for v in range(run.profile.student_epochs):
            run.cache.features(tr, v)
    rows = []
    for name in names:
        if name not in KD_KIND:
            raise ValueError(f"unknown student variant {name!r}; choose from {STUDENTS}")
        ck_name = f"distill/{run.student}/{name}" + (f"_{tag}" if KD_KIND[name] else "")
        model, hist = _train_one(run, name, run.loaders, teacher, ck_name, use_cache=True)
        run.students[name] = model
        run.histories[name] = hist
        rows.append(hist.assign(model=name))
    run.timings["students_s"] = time.perf_counter() - t0
    if run.cache is not None and sum(run.cache.lookups.values()):
        print(f"teacher logits from cached features for {run.cache.lookups['hit']} of "
              f"{sum(run.cache.lookups.values())} KD batches (the rest ran the teacher)")
    return pd.concat(rows, ignore_index=True)


# ============================================================================================ scores
def teacher_test_scores(run: DistillRun, ds: data.FaceDataset, teacher: Teacher | None = None) -> np.ndarray:
    teacher = teacher or require_teacher(run)
    assert run.cache is not None
    return _head_scores(teacher, run.cache.features(ds, None))


def _scores(run: DistillRun, name: str, model: nn.Module, loader: DataLoader,
            teacher: Teacher | None = None) -> tuple[np.ndarray, np.ndarray]:
    if name == "teacher":
        s = teacher_test_scores(run, loader.dataset, teacher)
        return s, np.array([x.label for x in loader.dataset.samples])
    return train.predict_scores(model, loader, channels_last=run.profile.channels_last)


# ============================================================================================ SWAP
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
        return f"rapl:{name} (package counter; includes any other load)", lambda: float(f.read_text())
    return f"cpu_time x {PER_CORE_WATTS:g} W/core (assumed; no readable RAPL counter)", None


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
    clean = data.FaceDataset(ds.root, ds.samples, ds.size, train=False, seed=run.seed)
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


def swap_table(run: DistillRun, threshold: float = 0.5) -> pd.DataFrame:
    """SWAP (seed 003): speed, weight, accuracy, power for the teacher and the three students, one run.

    Latency: batch 1, ONNX Runtime CPU, 1 thread, all eight models (FP32 and INT8) interleaved in the same
    measurement. Accuracy/APCER/BPCER/ACER: test split, threshold 0.5, FP32 (INT8 ACER beside it).
    Energy: RAPL when readable, else CPU time per inference x PER_CORE_WATTS (named in energy_method).
    """
    from paperkit import complexity, export

    t0 = time.perf_counter()
    teacher = require_teacher(run)
    if not run.students:
        raise RuntimeError("no students trained yet: run train_students(run) first")
    prof, size = run.profile, run.profile.input_size
    models: dict[str, nn.Module] = {"teacher": teacher, **run.students}
    onnx_dir = run.ckpt_dir / "onnx"
    calib = _clean_train_loader(run)
    paths: dict[str, dict[str, Path]] = {}
    for name, m in models.items():
        deploy = name == "student_kd"       # the deployable model goes to run_dir/models (< 5 MB)
        base = (run.run_dir / "models" / "distill_student_kd") if deploy else (onnx_dir / name)
        fp32, int8 = base.with_name(base.name + ".onnx"), base.with_name(base.name + "_int8.onnx")
        with _quiet():   # the exporter's progress lines and quantizer warnings would flood the notebook
            export.export_onnx(copy.deepcopy(m).cpu().eval(), fp32, input_size=size, dynamic_batch=True)
            export.quantize_int8(fp32, int8, calib, max_images=prof.calib_images)
        x = next(iter(calib))[0][:2]
        gap = export.parity(copy.deepcopy(m).cpu().eval(), fp32, x)
        if gap > 1e-3:
            raise RuntimeError(f"ONNX export of {name} disagrees with torch (max logit gap {gap:.2e})")
        paths[name] = {"fp32": fp32, "int8": int8}
        if deploy:
            run.outputs += [fp32, int8]
    cands = {f"{n}/{k}": p for n, d in paths.items() for k, p in d.items()}
    lat = complexity.measure_latency(cands, rounds=prof.latency_rounds, iters=prof.latency_iters,
                                     warmup=max(3, prof.latency_iters // 5), input_size=size, threads=1)
    lat = lat.set_index("candidate")["median_ms"]
    method, rapl = energy_method()
    iters = prof.latency_rounds * prof.latency_iters
    test = run.loaders["test"]
    rows = []
    for name, m in models.items():
        s1 = export.ort_session(paths[name]["fp32"], threads=1)
        s8 = export.ort_session(paths[name]["int8"], threads=1)
        cpu_ms, energy = _cpu_and_energy(s1, size, iters, rapl)
        _, energy8 = _cpu_and_energy(s8, size, iters, rapl)
        scores, labels = _scores(run, name, m, test)
        ev = metrics.evaluate(scores, labels, threshold)
        s_int8, l_int8 = export.onnx_scores(s8, test)
        ev8 = metrics.evaluate(s_int8, l_int8, threshold)
        rows.append({
            "model": name, "dataset": run.dataset,
            "architecture": "efficientnet_lite0 (frozen, ImageNet) + 8 heads" if name == "teacher" else
            run.params()["student"],
            "params_m": deploy_params(m) / 1e6,
            "size_kb_fp32": export.file_size_kb(paths[name]["fp32"]),
            "size_kb_int8": export.file_size_kb(paths[name]["int8"]),
            "madds_m": _madds(copy.deepcopy(m).cpu(), size),
            "latency_ms": float(lat[f"{name}/fp32"]), "latency_ms_int8": float(lat[f"{name}/int8"]),
            "throughput_img_s": _throughput(s1, size, THROUGHPUT_BATCH, max(3, prof.latency_rounds)),
            "accuracy": 100 * ev["accuracy"], "apcer": 100 * ev["apcer"], "bpcer": 100 * ev["bpcer"],
            "acer": 100 * ev["acer"], "auc": ev["auc"], "acer_int8": 100 * ev8["acer"],
            "accuracy_int8": 100 * ev8["accuracy"],
            "cpu_ms": cpu_ms, "energy_mj": energy, "energy_mj_int8": energy8, "energy_method": method,
        })
    df = pd.DataFrame(rows)
    t_lat = df.loc[df.model == "teacher", "latency_ms"].iloc[0]
    t_acc = df.loc[df.model == "teacher", "accuracy"].iloc[0]
    df["speedup_vs_teacher"] = t_lat / df["latency_ms"]
    df["speedup_int8_vs_teacher_fp32"] = t_lat / df["latency_ms_int8"]
    df["accuracy_vs_teacher"] = 100 * df["accuracy"] / t_acc
    df["latency_note"] = "ORT CPU, batch 1, 1 thread, FP32 and INT8 of all models interleaved in one run"
    run.outputs.append(results.write_table(run.run_dir, "swap", df))
    run.timings["swap_s"] = time.perf_counter() - t0
    return df


def swap_targets(swap: pd.DataFrame) -> pd.DataFrame:
    """Seed 003's targets checked against the SWAP table (benchmark: student_kd vs teacher and student_alone)."""
    t = swap.set_index("model")
    kd, alone = t.loc["student_kd"], t.loc["student_alone"]
    checks = [
        ("student < 1 M parameters", f"{kd.params_m:.3f} M", kd.params_m < 1.0),
        (">= 7x faster than the teacher (ORT FP32)", f"{kd.speedup_vs_teacher:.2f}x", kd.speedup_vs_teacher >= 7),
        (">= 7x faster (student INT8 vs teacher FP32)", f"{kd.speedup_int8_vs_teacher_fp32:.2f}x",
         kd.speedup_int8_vs_teacher_fp32 >= 7),
        (">= 99% of the teacher's accuracy", f"{kd.accuracy_vs_teacher:.2f}%", kd.accuracy_vs_teacher >= 99),
        ("distilled ACER <= student-alone ACER", f"{kd.acer:.2f}% vs {alone.acer:.2f}%", kd.acer <= alone.acer),
    ]
    if "student_kd_hinton" in t.index:
        h = t.loc["student_kd_hinton"]
        checks.append(("Hinton-KD ACER <= student-alone ACER", f"{h.acer:.2f}% vs {alone.acer:.2f}%",
                       h.acer <= alone.acer))
    return pd.DataFrame(checks, columns=["target", "measured", "met"])


# ============================================================================================ cross-domain
def _level_rows(run: DistillRun, name: str, a: str, b: str, val: tuple[np.ndarray, np.ndarray, list[str]],
                test: tuple[np.ndarray, np.ndarray, list[str]]) -> list[dict[str, Any]]:
    rows = []
    for level in ("frame", "video"):
        (vs, vy, vv), (ts, ty, tv) = val, test
        if level == "video":
            vs, vy = metrics.video_scores(vs, vy, vv)
            ts, ty = metrics.video_scores(ts, ty, tv)
        thr = metrics.threshold_at_eer(vs, vy) if len(vy) and len(set(vy.tolist())) == 2 else 0.5
        rows.append({"train_domain": a, "test_domain": b, "model": name, "level": level,
                     "hter": 100 * metrics.hter(ts, ty, thr), "auc": metrics.roc_auc(ts, ty),
                     "threshold": thr, "n_test": len(ty), "dataset": run.dataset})
    return rows


def cross_domain_table(run: DistillRun, models: Sequence[str] = CROSS_DOMAIN_MODELS) -> pd.DataFrame | None:
    """Train on one capture domain, test on the other (and on its own, for the gap); HTER at frame and video level.

    The decision threshold is fixed at the EER of the training domain's validation data (per level: video
    scores are mean frame scores per capture session). Each domain gets its own teacher head (cached
    backbone features of that domain's rows) and its own students with the run's seed and budget.
    Returns None (and says why) when the dataset has no domain information (real CelebA-Spoof).
    """
    t0 = time.perf_counter()
    teacher = require_teacher(run)
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
    rows: list[dict[str, Any]] = []
    for a in domains:
        per_test = {b: data.make_loaders(run.root, prof, run.seed, domain=a, test_domain=b) for b in domains}
        loaders = per_test[a]
        tr, va = loaders["train"].dataset, loaders["val"].dataset
        # teacher of domain a: same frozen backbone, fresh head trained on a's cached features only
        t_a = copy.deepcopy(teacher)
        _fresh_head(t_a, run.seed)
        y, cues = _targets(tr)
        vy, _ = _targets(va)
        fit_head(t_a, _train_views(run, tr), y, cues, run.cache.features(va, None), vy,
                 epochs=max(1, prof.teacher_epochs) * HEAD_PASSES_PER_VIEW, lr=prof.teacher_lr, seed=run.seed,
                 batch_size=prof.batch_size, gamma=prof.focal_gamma, threshold=prof.focal_threshold,
                 name=f"teacher[{a}]")
        trained: dict[str, nn.Module] = {"teacher": t_a}
        for name in models:
            if name == "teacher":
                continue
            tag = f"_t{run.tau:g}_a{run.alpha:g}" if KD_KIND[name] else ""
            trained[name], _ = _train_one(run, name, loaders, t_a, f"distill/cross_{a}/{run.student}/{name}{tag}")
        for name in models:
            m = trained[name]
            vs, vyy = _scores(run, name, m, loaders["val"], t_a)
            val = (vs, vyy, [s.video for s in va.samples])
            for b in domains:
                te = per_test[b]["test"]
                ts, ty = _scores(run, name, m, te, t_a)
                rows += _level_rows(run, name, a, b, val, (ts, ty, [s.video for s in te.dataset.samples]))
    df = pd.DataFrame(rows)
    df["protocol"] = np.where(df.train_domain == df.test_domain, "in-domain", "cross-domain")
    df["threshold_rule"] = "EER on the training domain's validation data (per level)"
    run.outputs.append(results.write_table(run.run_dir, "cross_domain_hter", df))
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
    df = t4[["config", lat_col]].merge(t3[["config", "acer"]], on="config")
    return df.rename(columns={lat_col: "latency_ms"}).dropna()


def tradeoff_figure(run: DistillRun, swap: pd.DataFrame | None = None) -> Any:
    """Latency (ORT, batch 1, 1 thread) vs test ACER: teacher, students (FP32 and INT8), PTA configurations."""
    import matplotlib
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    swap = swap if swap is not None else results.read_table(run.run_dir, "swap")
    if swap is None:
        raise FileNotFoundError(f"{run.run_dir}/tables/swap.csv not found: run swap_table(run) first")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"teacher": "tab:red", "student_alone": "tab:gray", "student_kd": "tab:blue",
              "student_kd_hinton": "tab:green"}
    for r in swap.itertuples():
        c = colors.get(r.model, "k")
        ax.scatter(r.latency_ms, r.acer, color=c, s=30 + 4 * r.params_m * 10, label=f"{r.model} FP32", zorder=3)
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
    ax.set_ylabel("test ACER, % (threshold 0.5)")
    ax.set_title(f"Speed / accuracy trade-off\n{run.dataset}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    run.outputs.append(results.save_figure(run.run_dir, "distill_tradeoff", fig))
    return fig


def history_table(run: DistillRun) -> pd.DataFrame:
    """Per-epoch training history of every model, written as tables/distill_history.csv."""
    frames = [h.assign(model=n) for n, h in run.histories.items()]
    df = pd.concat(frames, ignore_index=True).assign(dataset=run.dataset)
    run.outputs.append(results.write_table(run.run_dir, "distill_history", df))
    return df
