"""BatchNorm statistics that belong to the configuration being evaluated (issue 9, item 1).

Why: a PTA model samples a branch configuration per training step, so every BatchNorm layer after the
first PTA block ends training with running statistics averaged over the last few steps' *mixture* of
configurations. No single configuration produced those statistics (BBB's averaged outputs were never
seen by any layer), so evaluating a configuration with them measures the mixture, not the
configuration. The cure (as for slimmable networks) is cheap: reset the running statistics and
re-estimate them with the model in that configuration on a few clean training crops.

Rules this module keeps:
- Only training images, without augmentation, and no labels (never val/test images): the statistics
  are part of the model, so they may only come from what the model was trained on.
- The calibration crops are decoded once (`CalibrationSet`: a fixed, seeded subset) and reused for
  every configuration, so recalibrating a configuration costs one forward pass over ~1,000 crops.
- Re-estimation is a plain cumulative average (momentum=None) over the cached batches, with only the
  BatchNorm layers in training mode (dropout stays off), under no_grad; modes and momenta are restored.
- A BatchNorm layer that does not run in the current configuration (an unused branch) keeps the
  statistics it had, so recalibrating LLL does not wipe the heavy branches.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from . import device as devices
from . import quiet

__all__ = [
    "CALIBRATION_IMAGES", "CalibrationSet", "bn_layers", "bn_buffers", "load_bn_buffers", "recalibrate_bn",
    "recalibrated", "config_bn_states", "training_calibration", "weights_fingerprint", "SharedStatsStore", "fold_bn",
]

#: Crops used to re-estimate the statistics of one configuration (issue 9 measured with 1,024).
CALIBRATION_IMAGES = 1024
_BN = nn.modules.batchnorm._BatchNorm
_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class CalibrationSet:
    """Clean (not augmented) training crops, decoded once and batched: the data every recalibration uses.

    `batches` are float tensors [B,3,H,W] normalised as the model sees them; `indices` are the positions
    of the crops in the training dataset (a seeded subset, the same on every rerun). No labels are kept.
    """

    batches: tuple[Tensor, ...]
    indices: tuple[int, ...]
    seed: int
    source: str = ""

    @property
    def n_images(self) -> int:
        return int(sum(len(b) for b in self.batches))

    def __iter__(self) -> Iterator[Tensor]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    @classmethod
    def from_dataset(cls, dataset: Any, max_images: int = CALIBRATION_IMAGES, batch_size: int = 32,
                     seed: int = 0) -> "CalibrationSet":
        """A seeded subset of `dataset` (a `paperkit.data.FaceDataset`, normally the *train* split), read
        with `load_crop` (decode + face crop + resize, never the training augmentation).

        batch_size: use the training batch size, so each estimate averages batch statistics of the same
        size as the ones BatchNorm normalised with while training.
        """
        from paperkit.data import ImageError, preprocess

        if max_images < 1 or batch_size < 2:
            raise ValueError(f"need max_images >= 1 and batch_size >= 2 (BatchNorm), got {max_images}, {batch_size}")
        n = len(dataset)
        if n == 0:
            raise ValueError("calibration dataset is empty: BatchNorm statistics need training images")
        rng = np.random.default_rng([int(seed), 0xB17C])
        order = rng.permutation(n)
        crops: list[Tensor] = []
        kept: list[int] = []
        for i in order:  # permutation order, so a failing image is replaced by the next drawn one
            if len(crops) >= max_images:
                break
            try:
                crops.append(preprocess(dataset.load_crop(int(i)), dataset.size))
            except ImageError:
                continue
            kept.append(int(i))
        if len(crops) < 2:
            raise ValueError(f"only {len(crops)} readable calibration images in {getattr(dataset, 'root', '?')}")
        x = torch.stack(crops)
        # an equal batch size for every batch keeps the cumulative average an average over images;
        # a last batch of 1 image would be rejected by BatchNorm, so it is dropped
        batches = tuple(b for b in x.split(batch_size) if len(b) > 1)
        return cls(batches=batches, indices=tuple(kept[:sum(len(b) for b in batches)]), seed=int(seed),
                   source=str(getattr(dataset, "root", "")))

    @classmethod
    def from_loader(cls, loader: Iterable[Any], max_images: int = CALIBRATION_IMAGES) -> "CalibrationSet":
        """Cache the first `max_images` images of an (unshuffled, unaugmented) loader; labels are dropped."""
        batches: list[Tensor] = []
        n = 0
        for batch in loader:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = x[: max_images - n]
            if len(x) > 1:
                batches.append(x.detach().clone())
                n += len(x)
            if n >= max_images:
                break
        if not batches:
            raise ValueError("calibration loader gave no batch of >= 2 images")
        return cls(batches=tuple(batches), indices=tuple(range(n)), seed=-1, source="loader")


def training_calibration(loaders: Mapping[str, Any], profile: Any) -> CalibrationSet:
    """The calibration crops every study uses: a `profile.data_seed`-seeded subset of the *train* split,
    batched at the training batch size. Notebooks 01 and 05 both call this, so a configuration gets the
    same statistics in both."""
    n = int(getattr(profile, "bn_calib_images", CALIBRATION_IMAGES))
    return CalibrationSet.from_dataset(loaders["train"].dataset, n, int(profile.batch_size),
                                       int(profile.data_seed))


def bn_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every BatchNorm layer that tracks running statistics, by qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, _BN) and m.track_running_stats}


def bn_buffers(model: nn.Module) -> dict[str, Tensor]:
    """A copy of every BatchNorm running statistic (state-dict keys), e.g. to keep one per configuration."""
    out: dict[str, Tensor] = {}
    for name, m in bn_layers(model).items():
        for b in _BUFFERS:
            t = getattr(m, b)
            if t is not None:
                out[f"{name}.{b}" if name else b] = t.detach().clone()
    return out


def load_bn_buffers(model: nn.Module, buffers: Mapping[str, Tensor]) -> nn.Module:
    """Copy BatchNorm statistics from `bn_buffers` output into `model` (in place); unknown keys are an error."""
    layers = bn_layers(model)
    for key, value in buffers.items():
        name, _, buf = key.rpartition(".")
        m = layers.get(name)
        if m is None or buf not in _BUFFERS:
            raise KeyError(f"{key!r} is not a BatchNorm statistic of {type(model).__name__}; the stored "
                           "statistics were written for another architecture")
        getattr(m, buf).copy_(value)
    return model


def _inputs(batches: Iterable[Any], max_images: int) -> Iterator[Tensor]:
    n = 0
    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = x[: max_images - n]
        quiet.checkpoint()
        if len(x) < 2:  # a 1-image batch has no variance; BatchNorm refuses it in training mode
            if n >= max_images:
                break
            continue
        yield x
        n += len(x)
        if n >= max_images:
            break


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Any], max_images: int = CALIBRATION_IMAGES,
                   channels_last: bool = False) -> nn.Module:
    """Re-estimate BatchNorm running statistics for the model's *current* configuration (in place).

    `batches`: a `CalibrationSet`, or any iterable of image tensors / (images, ...) tuples, e.g. an
    unaugmented loader of training crops (labels are never looked at). Statistics are reset and
    re-estimated as a cumulative average over at most `max_images` images; layers that did not run
    (inactive PTA branches) keep their previous statistics. Returns `model`.
    """
    layers = bn_layers(model)
    if not layers:
        return model
    before = bn_buffers(model)
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in layers.values()}
    seen = 0
    try:
        model.eval()  # dropout off: the statistics must be those of the deterministic eval forward
        for m in layers.values():
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch weighs the same
            m.train()
        dev = devices.model_device(model)
        for x in _inputs(batches, max_images):
            x = x.to(dev, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            model(x)
            seen += len(x)
    finally:
        for m, mom in momenta.items():
            m.momentum = mom
        for m, was in modes.items():
            m.training = was
    if seen == 0:
        load_bn_buffers(model, before)
        raise ValueError("recalibrate_bn got no batch of >= 2 images; pass training crops (CalibrationSet)")
    # layers outside the active configuration saw no batch: give them back their statistics
    for name, m in layers.items():
        if int(m.num_batches_tracked) == 0:
            load_bn_buffers(model, {k: v for k, v in before.items() if k.rpartition(".")[0] == name})
    return model


@contextlib.contextmanager
def recalibrated(model: nn.Module, batches: Iterable[Any], config: str | None = None,
                 max_images: int = CALIBRATION_IMAGES) -> Iterator[nn.Module]:
    """`with recalibrated(pta, calib, "LLL") as m:` evaluates LLL with its own statistics; on exit the
    model's previous statistics and configuration come back (nothing leaks into the next evaluation)."""
    saved_bn = bn_buffers(model)
    saved_cfg = getattr(model, "config", None)
    try:
        if config is not None:
            model.configure(config)  # type: ignore[operator]
        recalibrate_bn(model, batches, max_images)
        yield model
    finally:
        load_bn_buffers(model, saved_bn)
        if saved_cfg is not None:
            model.configure(saved_cfg)  # type: ignore[operator]


def config_bn_states(model: nn.Module, batches: Iterable[Any], configs: Sequence[str],
                     max_images: int = CALIBRATION_IMAGES) -> dict[str, dict[str, Tensor]]:
    """BatchNorm statistics of each configuration (state-dict keys -> tensors), the model left unchanged.

    Load one with `load_bn_buffers(model.configure(c), states[c])`, e.g. before exporting `c` to ONNX.
    """
    out: dict[str, dict[str, Tensor]] = {}
    for c in configs:
        with recalibrated(model, batches, c, max_images) as m:
            out[c] = bn_buffers(m)
    return out


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-1 of every learnable parameter: identifies 'these weights' independently of BN statistics."""
    h = hashlib.sha1()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class SharedStatsStore:
    """The *training* (shared, paper-literal) running statistics of every validated epoch, kept beside
    the checkpoint as `bn_stats.pt`, keyed by the weights' fingerprint.

    Why it exists: `paperkit.train.fit` saves the model's state as it was validated, so once validation
    recalibrates BN, best.pt carries the recalibrated HHH statistics; the shared statistics that the
    paper evaluates with would be lost. The store keeps them (about 0.2 MB per epoch), and the
    recalibrated ones too, so a rerun that only reloads the best epoch does not recalibrate again.
    """

    FILE = "bn_stats.pt"

    def __init__(self, ck_dir: str | os.PathLike) -> None:
        self.path = Path(ck_dir) / self.FILE
        self.entries: dict[str, dict[str, dict[str, Tensor]]] = {}
        if self.path.is_file():
            try:
                self.entries = torch.load(self.path, map_location="cpu", weights_only=True)
            except Exception as e:  # a damaged side file must not stop a study: say so, start afresh
                print(f"warning: {self.path} cannot be read ({type(e).__name__}); shared BN statistics of "
                      "earlier epochs are lost (delete the checkpoint folder to retrain)")
                self.entries = {}

    def get(self, fingerprint: str, kind: str) -> dict[str, Tensor] | None:
        return self.entries.get(fingerprint, {}).get(kind)

    def put(self, fingerprint: str, kind: str, buffers: Mapping[str, Tensor]) -> None:
        from paperkit.results import atomic_write_bytes

        self.entries.setdefault(fingerprint, {})[kind] = {k: v.detach().clone() for k, v in buffers.items()}
        buf = io.BytesIO()
        torch.save(self.entries, buf)
        atomic_write_bytes(self.path, buf.getvalue())


def fold_bn(model: nn.Module, pairs: Sequence[tuple[str, str]] = ()) -> tuple[nn.Module, int]:
    """An inference copy with each Conv2d -> BatchNorm2d pair folded into one Conv2d.

    Why: on CPU a depthwise network spends a large share of its inference time in BatchNorm passes over
    the activations; folding the (eval-mode) statistics into the convolution weights makes MobileNetV2
    at 128 px 1.3-2x faster to evaluate, with the same outputs up to float rounding. The original model
    is untouched (its statistics may be recalibrated later). Pairs are a Conv2d directly followed by a
    BatchNorm2d inside a Sequential, plus `pairs` of attribute names (conv, bn) for modules whose forward
    is known to feed the conv's output only to that BN (the model's metadata says so, e.g. EfficientNet's
    `("_expand_conv", "_bn0")`). Returns (copy, number of pairs folded).
    """
    import copy
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def foldable(conv: Any, bn: Any) -> bool:
        return (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
                and bn.running_mean is not None and conv.padding_mode == "zeros")

    out = copy.deepcopy(model).eval()
    folded = 0
    for mod in list(out.modules()):
        links = list(zip(mod._modules, list(mod._modules)[1:])) if isinstance(mod, nn.Sequential) else []
        links += [(a, b) for a, b in pairs if a in mod._modules and b in mod._modules]
        for a, b in links:
            conv, bn = mod._modules[a], mod._modules[b]
            if foldable(conv, bn):
                mod._modules[a] = fuse_conv_bn_eval(conv, bn)
                mod._modules[b] = nn.Identity()
                folded += 1
    return out, folded
