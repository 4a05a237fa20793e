"""Notebook 03's teacher: a frozen backbone whose features are cached, and its 8 heads trained on them.

Why the teacher is trained on cached features: its backbone is frozen, so an epoch costs one backbone
forward per image whatever the head does. We compute the backbone features of `teacher_epochs` augmented
views of the training set once (every view is a fresh augmentation, as an epoch would be), then train the
head for HEAD_PASSES_PER_VIEW passes over each view. The cached features also serve the cross-domain and
labelled-only teachers (a head trained on a subset's rows) and every seed's teacher, so all teachers of this
study cost the backbone passes of one. The same cache gives KD students their teacher logits.

The functions take the study's `DistillRun` (`paperkit.studies.distillation`) and fill its `teachers`,
`pool_teachers` and `cache`.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from paperkit import batchnorm as bn_tools
from paperkit import data, deploy, metrics, quiet, results
from paperkit import device as devices
from paperkit.losses import reduced_focal_loss
from paperkit.models.teacher import AuxHead, Teacher, count_params, load_teacher, save_teacher, teacher_net
from paperkit.profiles import Profile, run_name

if TYPE_CHECKING:
    from paperkit.studies.distillation import DistillRun

HEAD_PASSES_PER_VIEW = 4           # head epochs per cached augmented view (the head alone is nearly free)
TEACHER_WEIGHT_DECAY = 1e-2        # AdamW's default; seed 001 names AdamW but not its weight decay
CUE_WEIGHT = 1.0                   # cue heads weigh as much as the live/spoof head (seed 001: one loss, 8 heads)


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
                self._trunk = deploy.ort_function(_Features(folded), self.teacher.config["input_size"])
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


class _Features(nn.Module):
    """`teacher.features` as a module's forward, so the trunk exports on its own."""

    def __init__(self, t: Teacher) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.t.features(x)


def _digest(img: torch.Tensor) -> bytes:
    return hashlib.blake2b(img.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).digest()


def labels_and_cues(ds: data.FaceDataset) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.tensor([s.label for s in ds.samples], dtype=torch.long)
    c = torch.tensor([list(s.cues) for s in ds.samples], dtype=torch.long).reshape(len(ds.samples), -1)
    return y, c


def fresh_head(teacher: Teacher, seed: int) -> None:
    cfg = teacher.config
    torch.manual_seed(seed)
    teacher.head = AuxHead(teacher.backbone.out_dim, cfg["num_classes"], cfg["num_cues"], cfg["hidden"],
                           cfg["dropout"])


@torch.inference_mode()
def head_scores(teacher: Teacher, feats: torch.Tensor) -> np.ndarray:
    teacher.head.eval()
    if len(feats) == 0:
        return np.zeros(0)
    logits = teacher.head(feats.to(devices.model_device(teacher.head)))[0]
    return torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy()


def fit_head(teacher: Teacher, views: Sequence[torch.Tensor], y: torch.Tensor, cues: torch.Tensor,
             val_feats: torch.Tensor, val_y: torch.Tensor, *, epochs: int, lr: float, seed: int,
             batch_size: int, gamma: float, threshold: float, cue_weight: float = CUE_WEIGHT,
             weight_decay: float = TEACHER_WEIGHT_DECAY, loss: Callable[..., torch.Tensor] = reduced_focal_loss,
             name: str = "teacher") -> pd.DataFrame:
    """Train the 8-head classifier on cached features (`loss`, by default the Reduced Focal Loss, with
    `gamma`/`threshold` on the live/spoof head + `cue_weight` x the same on the cue heads; AdamW); keep the
    best-val-ACER head.

    Epoch e uses augmented view e mod len(views). Without validation images the last epoch is kept.
    """
    torch.manual_seed(seed)   # dropout draws from the global generator
    home = devices.model_device(teacher.head)
    head = teacher.head.cpu()  # the head is tiny and its cached features live on the CPU
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
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
            value = loss(logits, y[idx], gamma, threshold)
            value = value + cue_weight * loss(cl, cues[idx], gamma, threshold)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            total += float(value.detach()) * len(idx)
        row: dict[str, float] = {"epoch": ep + 1, "train_loss": total / n, "epoch_time_s": time.perf_counter() - t0}
        if len(val_y):
            m = metrics.evaluate(head_scores(teacher, val_feats), val_y.numpy())
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
def head_recipe(run: DistillRun) -> dict[str, Any]:
    """`fit_head`'s arguments for every teacher head of the run (seed teachers, the pool's labelled-only
    head, the cross-domain heads): what `train_teacher` was given, else the profile's values."""
    prof = run.profile
    r: dict[str, Any] = {"epochs": head_epochs(prof), "lr": prof.teacher_lr, "batch_size": prof.batch_size,
                         "gamma": prof.focal_gamma, "threshold": prof.focal_threshold, "cue_weight": CUE_WEIGHT,
                         "weight_decay": TEACHER_WEIGHT_DECAY, "loss": reduced_focal_loss}
    r.update(run.teacher_recipe)
    return r


def _teacher_meta(run: DistillRun, seed: int, backbone: str = "efficientnet_lite0") -> dict[str, Any]:
    info = results.dataset_info(run.root)
    r = head_recipe(run)
    meta = {"profile": run_name(run.profile), "seed": seed, "data_seed": run.data_seed, "dataset": info["name"],
            "fingerprint": info["fingerprint"], "input_size": run.profile.input_size,
            "epochs": run.profile.teacher_epochs, "lr": r["lr"], "gamma": r["gamma"], "threshold": r["threshold"],
            "head_passes_per_view": head_passes(run.profile), "cue_weight": r["cue_weight"]}
    # recorded only when they differ from the default, so the default's checkpoints stay valid
    if r["weight_decay"] != TEACHER_WEIGHT_DECAY:
        meta["weight_decay"] = r["weight_decay"]
    if r["loss"] is not reduced_focal_loss:
        meta["loss"] = getattr(r["loss"], "__name__", repr(r["loss"]))
    if r["batch_size"] != run.profile.batch_size:
        meta["batch_size"] = r["batch_size"]
    if backbone != "efficientnet_lite0":
        meta["backbone"] = backbone
    return meta


def head_passes(prof: Profile) -> int:
    """Head epochs per cached view: the profile's `teacher_head_passes_per_view` when it has one (the paper
    profile should say 1, so that teacher_epochs are seed 001's epochs), else HEAD_PASSES_PER_VIEW."""
    return max(1, int(getattr(prof, "teacher_head_passes_per_view", HEAD_PASSES_PER_VIEW)))


def head_epochs(prof: Profile) -> int:
    return max(1, prof.teacher_epochs) * head_passes(prof)


def train_views(run: DistillRun, ds: data.FaceDataset) -> list[torch.Tensor]:
    assert run.cache is not None
    return [run.cache.features(ds, v) for v in range(max(1, run.profile.teacher_epochs))]


def _teacher_ckpt(run: DistillRun, seed: int) -> Path:
    return run.ckpt_dir / f"teacher_seed{seed}.pt"


def train_teacher(run: DistillRun, backbone: str = "efficientnet_lite0", retrain: bool = False, *,
                  loss: Callable[..., torch.Tensor] = reduced_focal_loss, gamma: float | None = None,
                  threshold: float | None = None, cue_weight: float = CUE_WEIGHT, lr: float | None = None,
                  weight_decay: float = TEACHER_WEIGHT_DECAY, batch_size: int | None = None) -> pd.DataFrame:
    """Per seed: build the teacher (`teacher_net(backbone=...)`: frozen pretrained backbone + AuxHead), train
    its 8 heads on cached features, save it.

    The heads' loss: `loss` (Reduced Focal Loss) with `gamma` and `threshold` (None: the profile's
    focal_gamma / focal_threshold) on the live/spoof head plus `cue_weight` x the same on the 7 cue heads;
    AdamW with `lr` (None: the profile's teacher_lr) and `weight_decay`; `batch_size` None: the profile's.
    The same recipe trains the pool's and the cross-domain teacher heads (`head_recipe`).

    The backbone is the same for every seed (frozen ImageNet weights), so its features are computed once;
    the seed draws the head's initialisation, dropout and batch order. A checkpoint
    `run_dir/checkpoints/distill/teacher_seed<k>.pt` written for the same profile, seed and dataset is
    reused unless `retrain`.
    """
    t0 = time.perf_counter()
    prof = run.profile
    run.teacher_recipe = _given_recipe(loss, gamma, threshold, cue_weight, lr, weight_decay, batch_size)
    recipe = head_recipe(run)
    frames = []
    for seed in run.seeds:
        ck = _teacher_ckpt(run, seed)
        meta = _teacher_meta(run, seed, backbone)
        torch.manual_seed(seed)
        teacher = teacher_net(backbone=backbone, input_size=prof.input_size)
        if run.cache is None:
            run.cache = FeatureCache(teacher, prof.batch_size, devices.workers(prof.num_workers),
                                     run.loaders["train"].dataset)
        hist = None if retrain else _reuse_teacher(run, seed, ck, meta)
        if hist is None:
            hist = _fit_teacher(run, seed, teacher, recipe, t0)
            _store_teacher(run, seed, teacher, hist, ck, meta, backbone)
        frames.append(hist.assign(model="teacher", seed=seed))
    run.timings["teacher_s"] = time.perf_counter() - t0
    return pd.concat(frames, ignore_index=True)


def _given_recipe(loss: Callable[..., torch.Tensor], gamma: float | None, threshold: float | None,
                  cue_weight: float, lr: float | None, weight_decay: float, batch_size: int | None) -> dict[str, Any]:
    """`train_teacher`'s head arguments as `run.teacher_recipe` keeps them: None leaves the profile's value
    to `head_recipe`."""
    return {"loss": loss, "cue_weight": float(cue_weight), "weight_decay": float(weight_decay),
            **({"gamma": float(gamma)} if gamma is not None else {}),
            **({"threshold": float(threshold)} if threshold is not None else {}),
            **({"lr": float(lr)} if lr is not None else {}),
            **({"batch_size": int(batch_size)} if batch_size is not None else {})}


def _reuse_teacher(run: DistillRun, seed: int, ck: Path, meta: dict[str, Any]) -> pd.DataFrame | None:
    """Load the seed's saved teacher (and its history) when its checkpoint was written with the same `meta`
    (profile, seed, dataset, recipe); None when there is none to reuse."""
    meta_file = ck.with_suffix(".json")
    if not (ck.is_file() and meta_file.is_file()):
        return None
    saved = json.loads(meta_file.read_text())
    if saved.get("meta") != meta:
        return None
    run.teachers[seed] = load_teacher(ck, num_classes=2)
    hist = pd.DataFrame(saved.get("history", []))
    run.histories[(seed, "teacher")] = hist
    print(f"[teacher seed {seed}] reusing {ck} (same profile, seed and dataset); pass retrain=True "
          "to train again")
    return hist


def _fit_teacher(run: DistillRun, seed: int, teacher: Teacher, recipe: dict[str, Any], t0: float) -> pd.DataFrame:
    """Cache the backbone features (augmented training views, clean validation crops) and train the
    teacher's heads on them (`fit_head`); t0 times the progress message."""
    assert run.cache is not None
    tr, va = run.loaders["train"].dataset, run.loaders["val"].dataset
    views = train_views(run, tr)
    y, cues = labels_and_cues(tr)
    val_f = run.cache.features(va, None)
    val_y, _ = labels_and_cues(va)
    print(f"[teacher seed {seed}] backbone features: {run.cache.images_computed} images computed so far "
          f"({len(views)} augmented view(s) of train + val) at {time.perf_counter() - t0:.1f}s")
    return fit_head(teacher, views, y, cues, val_f, val_y, seed=seed, name=f"teacher seed {seed}", **recipe)


def _store_teacher(run: DistillRun, seed: int, teacher: Teacher, hist: pd.DataFrame, ck: Path,
                   meta: dict[str, Any], backbone: str) -> None:
    """Save a freshly trained teacher with its meta and history (what `_reuse_teacher` checks) and keep it
    on the run."""
    save_teacher(teacher, ck)
    results.atomic_write_bytes(ck.with_suffix(".json"), json.dumps({"meta": meta, "history": hist.to_dict("records")},
                                                                   indent=1).encode())
    run.teachers[seed] = teacher
    run.histories[(seed, "teacher")] = hist
    n_all, n_train = count_params(teacher), count_params(teacher, trainable_only=True)
    print(f"[teacher seed {seed}] {backbone}: {n_all / 1e6:.2f} M parameters, {n_train / 1e6:.3f} M trained "
          f"(the heads); saved {ck}")


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
    t = copy.deepcopy(require_teacher(run, seed))
    fresh_head(t, seed)
    tr, va = run.loaders["train"].dataset, run.loaders["val"].dataset
    lab = torch.as_tensor(run.pool.labelled)
    y, cues = labels_and_cues(tr)
    vy, _ = labels_and_cues(va)
    assert run.cache is not None
    hist = fit_head(t, [v[lab] for v in train_views(run, tr)], y[lab], cues[lab], run.cache.features(va, None), vy,
                    seed=seed, name=f"teacher_labelled_only seed {seed}", **head_recipe(run))
    run.pool_teachers[seed] = t
    run.histories[(seed, "teacher_labelled_only")] = hist
    return t
