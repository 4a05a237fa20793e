"""The one training loop every study uses: seeded, resumable, channels_last, optionally distributed.

A run folder keeps `checkpoints/<name>/last.pt` (written atomically after every epoch) and `best.pt`
(best validation ACER). Starting `fit` again with the same run folder resumes after the last finished
epoch, so a killed run loses at most one epoch. Under `torchrun --nproc_per_node=N -m paperkit.train`
the same loop runs with DistributedDataParallel (gloo on CPU, nccl on GPU).
"""
from __future__ import annotations

import argparse
import io
import math
import os
import pickle
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader

from . import device as devices
from . import metrics, quiet
from .losses import LossFn, cross_entropy_loss
from .results import atomic_write_bytes

CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: tampered, truncated, or written by another model."""


@dataclass
class History:
    rows: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val_acer: float = float("inf")
    resumed_from: int = 0

    @property
    def epoch_times(self) -> list[float]:
        return [r["epoch_time_s"] for r in self.rows]

    def to_frame(self):  # pandas is imported lazily: train.py is also used by torchrun workers
        import pandas as pd
        return pd.DataFrame(self.rows)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def init_distributed() -> int:
    """Join the process group torchrun describes in the environment (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not _is_dist():
        dev = devices.pick()
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(devices.backend(dev))
    return world


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _is_dist() else 0


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _signature(model: nn.Module) -> dict[str, Any]:
    """What a checkpoint must match: the architecture's class and every tensor's shape."""
    m = _unwrap(model)
    return {"arch": type(m).__name__,
            "shapes": {k: list(v.shape) for k, v in m.state_dict().items()}}


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint safely (weights_only=True): tampered or truncated files raise CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train the model first (run its notebook)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as e:
        first = (str(e).splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded safely ({type(e).__name__}: {first}); "
            "it is truncated, tampered with, or not a paperkit checkpoint. Delete it to retrain.") from e


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load best/last weights into `model`, checking that the checkpoint was written for this architecture."""
    ck = load_checkpoint(path)
    state = (ck.get("best_state") or ck.get("model")) if isinstance(ck, dict) else None
    if state is None:
        raise CheckpointError(f"checkpoint {path} holds no model weights")
    _check_signature(model, ck.get("signature"), path)
    _unwrap(model).load_state_dict(state)
    return model


def _check_signature(model: nn.Module, sig: dict[str, Any] | None, path: Path | str) -> None:
    mine = _signature(model)
    if sig is None:
        raise CheckpointError(f"checkpoint {path} has no architecture signature; it was not written by paperkit")
    if sig.get("arch") != mine["arch"] or sig.get("shapes") != mine["shapes"]:
        diff = [k for k in set(sig.get("shapes", {})) | set(mine["shapes"])
                if sig.get("shapes", {}).get(k) != mine["shapes"].get(k)][:3]
        raise CheckpointError(
            f"checkpoint {path} was written for {sig.get('arch')} and does not fit {mine['arch']} "
            f"(first differing tensors: {diff}); use another run_dir or delete that checkpoint folder")


def _data_key(loaders: dict[str, DataLoader]) -> dict[str, Any]:
    """Which data a checkpoint was trained on: resuming on another dataset would mix two experiments."""
    from .results import dataset_info
    ds = loaders["train"].dataset
    root = getattr(ds, "root", None)
    info = dataset_info(root) if root is not None else {}
    return {"dataset": info.get("name", ""), "fingerprint": info.get("fingerprint", ""), "train_size": len(ds)}


def _set_aside_if_stale(ck_dir: Path, key: dict[str, Any], name: str) -> None:
    """A checkpoint folder from other data is moved to `<name>.stale` (kept, not deleted) and training restarts."""
    last = ck_dir / "last.pt"
    if not last.is_file():
        return
    old = load_checkpoint(last).get("data")
    if old is None or old == key:
        return
    stale = ck_dir.with_name(ck_dir.name + ".stale")
    if stale.exists():
        import shutil
        shutil.rmtree(stale)
    ck_dir.rename(stale)
    print(f"[{name}] {last} was trained on {old['dataset']} ({old['train_size']} train images); this run uses "
          f"{key['dataset']} ({key['train_size']}). Moved it to {stale} and training from scratch.", flush=True)


def _save(path: Path, obj: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


@torch.inference_mode()
def predict_scores(model: nn.Module, loader: DataLoader, channels_last: bool = True
                   ) -> tuple[np.ndarray, np.ndarray]:
    """P(spoof) for every sample, in loader order (loaders for evaluation are never shuffled)."""
    from .batchnorm import fold_bn
    m, _ = fold_bn(_unwrap(model))   # an eval copy, BN folded into the convolutions: ~2x faster on CPU
    scores, labels = [], []
    with devices.on(m) as dev:
        for x, y, _ in loader:
            x = x.to(dev, non_blocking=True)
            quiet.checkpoint()
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with devices.autocast(dev):
                logits = m(x)
            scores.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy())
            labels.append(y.numpy())
    if not scores:
        raise ValueError("the evaluation loader is empty: no images in this split")
    return np.concatenate(scores), np.concatenate(labels)


def evaluate_model(model: nn.Module, loader: DataLoader, threshold: float = 0.5,
                   channels_last: bool = True) -> dict[str, float]:
    s, y = predict_scores(model, loader, channels_last)
    return metrics.evaluate(s, y, threshold)


def val_interval(scores: np.ndarray, labels: np.ndarray, dataset: Any, seed: int = 0,
                 n_boot: int = 1000) -> dict[str, float]:
    """95% subject-bootstrap interval of an epoch's validation ACER (as a fraction, like `val_acer`), so a
    claim about the validation curve (seed 000's Figure 2) can be judged per epoch. {} when the dataset
    does not name subjects (a plain TensorDataset) or the split holds one class only."""
    from . import stats
    if not hasattr(dataset, "samples"):
        return {}
    try:
        q = stats.quality(stats.Scored.from_dataset(scores, labels, dataset), 0.5, n_boot=n_boot, seed=seed)
    except ValueError:
        return {}
    return {"val_acer_ci_low": q["acer_ci_low"] / 100.0, "val_acer_ci_high": q["acer_ci_high"] / 100.0}


def _distributed_loader(loader: DataLoader, seed: int) -> DataLoader:
    from torch.utils.data.distributed import DistributedSampler
    sampler = DistributedSampler(loader.dataset, shuffle=True, seed=seed, drop_last=True)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                      num_workers=loader.num_workers, drop_last=True)


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False, mininterval=1.0)


def _place(model: nn.Module, device: str | torch.device | None, channels_last: bool
           ) -> tuple[nn.Module, torch.device, torch.device]:
    """Move `model` to the training device (channels_last if asked); returns (model, device, its old device)."""
    dev = device if isinstance(device, torch.device) else devices.pick(device)
    home = devices.model_device(model)
    model.to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, dev, home


def _set_aside_stale_once(ck_dir: Path, data_key: dict[str, Any], name: str) -> None:
    """`_set_aside_if_stale` on rank 0 only; every rank waits for it before looking for a checkpoint."""
    if _rank() == 0:
        _set_aside_if_stale(ck_dir, data_key, name)
    if _is_dist():
        dist.barrier()


def _make_optimizer(trainable: list[nn.Parameter], optimizer: str, lr: float, weight_decay: float,
                    lr_schedule: str) -> torch.optim.Optimizer:
    """The optimizer `fit` steps; also checks the schedule name (after the optimizer name, as always)."""
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(trainable, lr=lr, weight_decay=weight_decay)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay or 1e-2)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; use 'adam' or 'adamw'")
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown lr_schedule {lr_schedule!r}; use 'constant' or 'cosine'")
    return opt


def _distributed(model: nn.Module, train_loader: DataLoader, seed: int, dev: torch.device
                 ) -> tuple[nn.Module, DataLoader]:
    """(the module to step, its train loader): `model` and `train_loader` unless torch.distributed runs."""
    if not _is_dist():
        return model, train_loader
    # PTA models leave the branches they did not run without gradients: DDP must look for them.
    net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                              find_unused_parameters=hasattr(model, "sample_config"))
    return net, _distributed_loader(train_loader, seed)


def _resume(last: Path, model: nn.Module, opt: torch.optim.Optimizer, step_gen: torch.Generator,
            hist: History, name: str, epochs: int) -> tuple[dict[str, torch.Tensor] | None, int]:
    """Restore model, optimizer, RNG states and history from `last` in place; return (best_state, start epoch)."""
    ck = load_checkpoint(last)
    _check_signature(model, ck.get("signature"), last)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    step_gen.set_state(ck["rng"]["step"])
    torch.set_rng_state(ck["rng"]["torch"])
    hist.rows = list(ck["history"])
    hist.best_epoch, hist.best_val_acer = ck["best_epoch"], ck["best_val_acer"]
    start_epoch = ck["epoch"] + 1
    hist.resumed_from = start_epoch
    if _rank() == 0:
        print(f"[{name}] resuming from {last} after epoch {start_epoch} of {epochs}", flush=True)
    return ck["best_state"], start_epoch


def _seed_epoch(train_loader: DataLoader, seed: int, epoch: int) -> None:
    """Each epoch's order and augmentation depend only on (seed, epoch): a resumed run sees the same data."""
    if getattr(train_loader, "generator", None) is not None:
        train_loader.generator.manual_seed(seed * 1000 + epoch)
    if hasattr(train_loader.sampler, "set_epoch"):
        train_loader.sampler.set_epoch(epoch)
    if hasattr(train_loader.dataset, "set_epoch"):
        train_loader.dataset.set_epoch(epoch)


def _train_epoch(net: nn.Module, train_loader: DataLoader, opt: torch.optim.Optimizer, loss_fn: LossFn, *,
                 dev: torch.device, name: str, epoch: int, epochs: int, lr: float, lr_schedule: str,
                 schedule_epochs: int | None, before_step: Callable[[nn.Module, torch.Generator], None] | None,
                 step_gen: torch.Generator, channels_last: bool, progress: bool) -> tuple[float, float]:
    """One pass over the training loader; returns (mean training loss, seconds)."""
    net.train()
    t0 = time.perf_counter()
    total, n = 0.0, 0
    bar = _progress(train_loader, len(train_loader), f"{name} epoch {epoch + 1}/{epochs}",
                    progress and _rank() == 0)
    total_steps = max(1, (schedule_epochs or epochs) * len(train_loader))
    for step, (x, y, cues) in enumerate(bar):
        quiet.checkpoint()
        if lr_schedule == "cosine":
            t = min(1.0, (epoch * len(train_loader) + step) / total_steps)
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * t))
        if before_step is not None:
            before_step(_unwrap(net), step_gen)
        x, y, cues = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True), cues.to(dev, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with devices.autocast(dev):
            loss, _ = loss_fn(net, x, y, cues)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"[{name}] loss became {loss.item()} at epoch {epoch + 1}; lower the "
                                     "learning rate or check the inputs")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(y)
        n += len(y)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{total / max(n, 1):.4f}", refresh=False)
    return total / max(n, 1), time.perf_counter() - t0


def _validate_and_save(model: nn.Module, val_loader: DataLoader, opt: torch.optim.Optimizer, *,
                       hist: History, best_state: dict[str, torch.Tensor] | None, ck_dir: Path,
                       data_key: dict[str, Any], step_gen: torch.Generator, name: str, epoch: int, epochs: int,
                       train_loss: float, epoch_time: float, seed: int, channels_last: bool,
                       eval_config: Callable[[nn.Module], None] | None) -> dict[str, torch.Tensor] | None:
    """Score the epoch on validation, append its history row, keep the best weights (best.pt) and write
    last.pt; returns the (possibly new) best state."""
    if eval_config is not None:
        eval_config(model)
    vs, vy = predict_scores(model, val_loader, channels_last=channels_last)
    m = metrics.evaluate(vs, vy, 0.5)
    row = {"epoch": epoch + 1, "train_loss": train_loss, "val_acer": m["acer"],
           "val_accuracy": m["accuracy"], "val_auc": m["auc"], "epoch_time_s": epoch_time,
           **val_interval(vs, vy, val_loader.dataset, seed)}
    hist.rows.append(row)
    if m["acer"] < hist.best_val_acer or best_state is None:
        hist.best_val_acer, hist.best_epoch = m["acer"], epoch + 1
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        _save(ck_dir / "best.pt", {"format": CHECKPOINT_FORMAT, "signature": _signature(model),
                                   "best_state": best_state, "epoch": epoch, "data": data_key})
    _save(ck_dir / "last.pt", {"format": CHECKPOINT_FORMAT, "signature": _signature(model), "epoch": epoch,
                               "data": data_key, "model": model.state_dict(), "optimizer": opt.state_dict(),
                               "rng": {"step": step_gen.get_state(), "torch": torch.get_rng_state()},
                               "history": hist.rows, "best_epoch": hist.best_epoch,
                               "best_val_acer": hist.best_val_acer, "best_state": best_state})
    print(f"[{name}] epoch {epoch + 1}/{epochs}  loss {row['train_loss']:.4f}  "
          f"val ACER {100 * m['acer']:.2f}%  val acc {100 * m['accuracy']:.2f}%  "
          f"{epoch_time:.1f}s", flush=True)
    return best_state


def fit(model: nn.Module, loaders: dict[str, DataLoader], *, run_dir: str | os.PathLike, name: str,
        epochs: int, lr: float, seed: int, loss_fn: LossFn | None = None, optimizer: str = "adam",
        weight_decay: float = 0.0, before_step: Callable[[nn.Module, torch.Generator], None] | None = None,
        eval_config: Callable[[nn.Module], None] | None = None, channels_last: bool = True,
        progress: bool = True, params: list[nn.Parameter] | None = None, lr_schedule: str = "constant",
        schedule_epochs: int | None = None, device: str | torch.device | None = None) -> History:
    """Train `model` on loaders["train"], validate on loaders["val"] (ACER), keep the best weights.

    lr_schedule "cosine" decays the learning rate per step to 0 over `schedule_epochs` (default
    `epochs`; pass the full budget when training in 1-epoch slices): the rate is a function of the
    step index alone, so a resumed run follows the same schedule without saving scheduler state.

    `device` (default :func:`paperkit.device.pick`: CUDA when present) is where the steps run, with bf16
    autocast on CUDA; the model is back on the CPU when `fit` returns (paperkit.device's convention).

    Resumes from `run_dir/checkpoints/<name>/last.pt` when present. Returns the per-epoch history;
    the model ends holding the weights of its best validation epoch.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    loss_fn = loss_fn or cross_entropy_loss
    init_distributed()
    ck_dir = Path(run_dir) / "checkpoints" / name
    seed_everything(seed)
    model, dev, home = _place(model, device, channels_last)
    trainable = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    opt = _make_optimizer(trainable, optimizer, lr, weight_decay, lr_schedule)
    step_gen = torch.Generator().manual_seed(seed)
    hist = History()
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch = 0
    last = ck_dir / "last.pt"
    data_key = _data_key(loaders)
    _set_aside_stale_once(ck_dir, data_key, name)
    if last.is_file():
        best_state, start_epoch = _resume(last, model, opt, step_gen, hist, name, epochs)

    net, train_loader = _distributed(model, loaders["train"], seed, dev)
    for epoch in range(start_epoch, epochs):
        _seed_epoch(train_loader, seed, epoch)
        train_loss, epoch_time = _train_epoch(
            net, train_loader, opt, loss_fn, dev=dev, name=name, epoch=epoch, epochs=epochs, lr=lr,
            lr_schedule=lr_schedule, schedule_epochs=schedule_epochs, before_step=before_step,
            step_gen=step_gen, channels_last=channels_last, progress=progress)
        if _is_dist():
            dist.barrier()
        if _rank() == 0:
            best_state = _validate_and_save(
                model, loaders["val"], opt, hist=hist, best_state=best_state, ck_dir=ck_dir, data_key=data_key,
                step_gen=step_gen, name=name, epoch=epoch, epochs=epochs, train_loss=train_loss,
                epoch_time=epoch_time, seed=seed, channels_last=channels_last, eval_config=eval_config)
        if _is_dist():
            dist.barrier()
    if best_state is not None:
        model.load_state_dict(best_state)
    if eval_config is not None:
        eval_config(model)
    model.to(home)
    return hist


def main(argv: list[str] | None = None) -> int:
    """Train a registered model from the command line; the entry point for torchrun/DDP users."""
    from . import data, profiles
    from .registry import MODELS

    ap = argparse.ArgumentParser(prog="python -m paperkit.train", description=main.__doc__)
    ap.add_argument("--model", default="pta_mobilenet_v2", help="registered model name")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--data-root", default="")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--name", default=None, help="checkpoint folder name (default: the model name)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    prof = profiles.get_profile(a.profile)
    world = init_distributed()
    try:
        root = data.resolve_root(a.data_root, prof, a.seed)
        loaders = data.make_loaders(root, prof, a.seed)
        model = MODELS.get(a.model)(num_classes=2)
        before = None
        eval_cfg = None
        if hasattr(model, "sample_config"):
            before = lambda m, g: m.sample_config(g)  # noqa: E731
            eval_cfg = lambda m: m.configure("HHH")  # noqa: E731
        hist = fit(model, loaders, run_dir=a.run_dir, name=a.name or a.model, epochs=a.epochs or prof.pta_epochs,
                   lr=prof.pta_lr, seed=a.seed, before_step=before, eval_config=eval_cfg,
                   channels_last=prof.channels_last)
        if _rank() == 0:
            print(f"best epoch {hist.best_epoch}: val ACER {100 * hist.best_val_acer:.2f}% "
                  f"(world size {world})", flush=True)
    finally:
        if _is_dist():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
