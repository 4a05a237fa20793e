"""The training input pipeline: decode, crop (:mod:`paperkit.crop`), preprocess, FaceDataset, the crop
cache's builder and reader, samplers, loaders.

Notebooks and training take their loaders from :func:`make_loaders`; what the dataset holds (layout, labels,
problem policy) is :mod:`paperkit.celeba`, which entries are usable is :mod:`paperkit.index`, and the
training-time transforms are :mod:`paperkit.augment`. The same reader serves the real CelebA-Spoof tree
and paperkit's embedded synthetic dataset (written in the identical layout), so every number downstream
goes through one code path.

A file that passes the index-time check and still fails to decode later (e.g. replaced on disk mid-run)
is replaced by the next sample in the dataset, a warning names it, and ``FaceDataset.runtime_failures``
counts it (across DataLoader workers).

Crop cache (:mod:`paperkit.cache`): :func:`make_loaders` also builds the crop caches (every face at the
input size, and the train split's wider context crops that training items jitter; each one memory-mapped
uint8 array) when they fit ``PAPERKIT_CROP_CACHE_GB``; augmentation runs on the cached crop, so items are
identical to the JPEG path. ``PAPERKIT_CROP_CACHE=0`` turns it off.

Long because decoding, the dataset with its crop-cache reader and the loaders are one input pipeline
whose parts every study uses together; the sections are marked below. The crop geometry is in
:mod:`paperkit.crop`.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from paperkit import device as devices
from paperkit import index
from paperkit.augment import augment
from paperkit.celeba import (BB_FRAME, PROBLEM_KEYS, SPLITS, DatasetError, bb_path, box_to_pixels, check_root,
                             read_box, read_labels)
from paperkit.crop import (CONTEXT_SCALE, CROP_SCALE, Valid, context_size, context_valid, crop_face, jitter_box,
                           resize)
from paperkit.index import (MAX_PIXELS, Sample, load_index, pool_map, probe_image, seed_u32, split_by_subject,
                            worker_init)

# OpenCV's own thread pool does not survive fork(): a DataLoader worker forked from a process whose pool
# has run deadlocks in its first cv2 call. DataLoader workers give the parallelism, so keep OpenCV serial.
cv2.setNumThreads(1)

log = logging.getLogger("paperkit.data")   # the dataset reader's one logger (shared with paperkit.index)

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


class ImageError(DatasetError):
    """One image file cannot be used (missing, does not decode, or too large)."""


def resolve_root(data_root: str | os.PathLike | None, profile: Any = "default", seed: int = 0) -> Path:
    """The dataset root a notebook should use: "" or None -> the embedded synthetic dataset for this
    profile and seed (built once, cached); anything else is validated as a CelebA-Spoof tree."""
    if data_root is None or str(data_root).strip() == "":
        from paperkit import synth  # late import: synth is only needed when no real root is given
        # the Profile object itself, not its name: overridden synth_* fields must reach the generator
        return Path(synth.default_root(profile=profile, seed=seed))
    return check_root(data_root).resolve()


# --------------------------------------------------------------------------------------------------
# Images: decode, crop, preprocess
# --------------------------------------------------------------------------------------------------
def decode_image(path: str | os.PathLike, check_header: bool = True) -> np.ndarray:
    """Decode any image cv2 reads into RGB uint8 [H, W, 3]: grayscale is replicated, alpha dropped,
    16-bit scaled to 8-bit, EXIF orientation applied (as the official CelebA-Spoof loader's cv2.imread).
    The header is checked against :data:`MAX_PIXELS` first (``check_header=False`` only for files that
    :func:`probe_image` already passed). Raises ImageError naming the file."""
    path = Path(path)
    if check_header:
        _check_header(path)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR_RGB)
    if img is None:
        raise ImageError(f"image {path} does not decode with OpenCV")
    if img.dtype != np.uint8:  # IMREAD_COLOR already reduces depth; kept for exotic builds
        img = (img.astype(np.float32) * (255.0 / np.iinfo(img.dtype).max)).round().astype(np.uint8)
    return img


def _check_header(path: Path) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
    except FileNotFoundError as e:
        raise ImageError(f"image {path} does not exist") from e
    except Exception as e:
        raise ImageError(f"image {path} cannot be read: {type(e).__name__}: {e}") from e
    if w * h > MAX_PIXELS:
        raise ImageError(f"image {path} declares {w}x{h} pixels > {MAX_PIXELS}; refused (decompression-bomb guard)")


def preprocess(rgb_uint8_face_crop: np.ndarray, size: int) -> torch.Tensor:
    """RGB uint8 crop -> FloatTensor[3, size, size] normalised with MEAN/STD (shared with predict/export,
    so training and deployment see identical inputs)."""
    img = rgb_uint8_face_crop
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"preprocess expects an RGB uint8 [H,W,3] array, got {img.dtype} {img.shape}")
    img = resize(img, size)
    scale = np.array([1.0 / (255.0 * s) for s in STD], np.float32)
    shift = np.array([m / s for m, s in zip(MEAN, STD)], np.float32)
    chw = np.ascontiguousarray((img.astype(np.float32) * scale - shift).transpose(2, 0, 1))
    return torch.from_numpy(chw)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Per-sample generator keyed by (seed, epoch, index): independent of worker count and order."""
    return np.random.default_rng([seed_u32(seed), int(epoch), int(index)])


# --------------------------------------------------------------------------------------------------
# Dataset, sampler, loaders
# --------------------------------------------------------------------------------------------------
class _FailureCount:
    """A count (and the first file) of images that failed at load time, shared by the DataLoader worker
    processes and the process that reads it (a plain int in a worker would never be seen)."""

    def __init__(self) -> None:
        import multiprocessing as mp
        self._n = mp.Value("q", 0)
        self._first = mp.Array("c", 1024)

    def add(self, path: str) -> None:
        with self._n.get_lock():
            if self._n.value == 0:
                self._first.value = path.encode("utf-8", "replace")[:1023]
            self._n.value += 1

    @property
    def value(self) -> int:
        return int(self._n.value)

    @property
    def first(self) -> str:
        return self._first.value.decode("utf-8", "replace")

    def __getstate__(self) -> dict[str, Any]:
        from multiprocessing import context
        if context.get_spawning_popen() is not None:   # handed to a spawned worker: stays shared
            return {"_n": self._n, "_first": self._first}
        return {"snapshot": (self.value, self.first)}  # a copy or pickle: a new counter holding the count

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "snapshot" in state:
            self.__init__()
            self._n.value, self._first.value = state["snapshot"][0], state["snapshot"][1].encode()[:1023]
        else:
            self.__dict__.update(state)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _box_of(root: Path, s: Sample, width: int, height: int) -> tuple[float, float, float, float] | None:
    if s.box_problem != "unchecked":
        return s.box
    status, box224 = read_box(bb_path(root / s.path))
    if status != "ok":
        return None
    box, _, tiny = box_to_pixels(box224, width, height)
    return None if tiny else box


def _crop_jpeg(root: Path, s: Sample, size: int, context: bool = False) -> tuple[np.ndarray, Valid | None]:
    """Decode + crop + resize of one sample from its image file (the reference every cache reproduces):
    the deployed crop, or (``context``) the training context crop and its valid part."""
    img = decode_image(root / s.path, check_header=s.box_problem == "unchecked")
    H, W = img.shape[:2]
    box = _box_of(root, s, W, H)
    if not context:
        return crop_face(img, box, size), None
    return crop_face(img, box, size, CONTEXT_SCALE, fit=False), context_valid(box, W, H, size)


class FaceDataset(Dataset):
    """Face crops of a sample list. ``__getitem__`` takes an int (uses ``self.epoch``) or ``(index, epoch)``
    (what :class:`EpochSampler` yields, so augmentation follows the epoch even in persistent workers) and
    returns ``(FloatTensor[3,size,size], label, LongTensor[7] cues)``.

    Crops come from the crop cache of (root, size) when one has been built (:func:`ensure_crop_cache`,
    which :func:`make_loaders` calls; ``crop_cache=False`` or ``PAPERKIT_CROP_CACHE=0`` turn it off), else
    from the image files; augmentation runs on the crop either way, so items are identical. Training
    items (``box_jitter``, default ``train``) start from the wider context crop (:data:`CONTEXT_SCALE`)
    and draw their own box scale and shift (:func:`paperkit.crop.jitter_box`). An image
    that changed on disk after it was indexed (size or mtime) is probed again; one that no longer decodes,
    or vanished, is replaced by the next sample, warned about once and counted in ``runtime_failures``
    (shared across DataLoader workers; :meth:`failure_report` says it in words)."""

    def __init__(self, root: str | os.PathLike, samples: Sequence[Sample], size: int = 128, train: bool = False,
                 seed: int = 0, crop_cache: bool | None = None, box_jitter: bool | None = None,
                 tone_jitter: bool = True) -> None:
        self.root = Path(root)
        self.samples = list(samples)
        self.size = int(size)
        self.train = bool(train)
        self.box_jitter = self.train if box_jitter is None else bool(box_jitter)
        self.tone_jitter = bool(tone_jitter)
        # what load_crop returns: the deployed crop, or the context crop jitter_box draws from
        self.crop_px = context_size(self.size) if self.box_jitter else self.size
        self.seed = int(seed)
        self.epoch = 0
        self.problems = dict(getattr(samples, "problems", {k: 0 for k in PROBLEM_KEYS}))
        self.use_crop_cache = crop_cache
        self._crops: Any = None       # None: not looked up yet in this process; False: no cache
        self._failures = _FailureCount()
        self._warned: set[str] = set()

    @property
    def runtime_failures(self) -> int:
        """Images that failed to load during iteration (in any worker), each replaced by the next sample."""
        return self._failures.value

    def failure_report(self) -> str:
        n = self._failures.value
        if not n:
            return ""
        return (f"{n} image load(s) of {self.root} failed at run time and were replaced by the next sample "
                f"(e.g. {self._failures.first}); the file changed or vanished after indexing")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def box_of(self, s: Sample, width: int, height: int) -> tuple[float, float, float, float] | None:
        return _box_of(self.root, s, width, height)

    def crop_cache(self) -> Any:
        """The :class:`paperkit.cache.CropCache` this dataset reads, or None (looked up once per process)."""
        if self._crops is None:
            self._crops = False
            if self.use_crop_cache is not False:
                self._crops = open_crop_cache(self.root, self.crop_px, self.box_jitter) or False
        return self._crops or None

    def load_crop(self, index: int) -> np.ndarray:
        """Decoded, cropped, resized (not augmented) RGB uint8 face of sample ``index`` (the context crop,
        ``crop_px`` pixels, when ``box_jitter``)."""
        return self._load(index)[0]

    def _load(self, index: int) -> tuple[np.ndarray, Valid | None]:
        s = self.samples[index]
        crops = self.crop_cache()
        if crops is not None or s.stamp is not None:
            path = self.root / s.path
            now = _stamp(path)
            if now is None:
                raise ImageError(f"image {path} does not exist (removed after it was indexed)")
            if crops is not None:
                row = crops.row(s, now)
                if row is not None:
                    return row, crops.valid_of(s)
            if s.stamp is not None and now != s.stamp:   # replaced or truncated since indexing: check again
                status, _, why = probe_image(path)
                if status != "ok":
                    raise ImageError(f"image {path} changed on disk after it was indexed and no longer "
                                     f"decodes ({why})")
                s = replace(s, box=None, box_problem="unchecked")   # its size may differ: re-read the box
        return _crop_jpeg(self.root, s, self.crop_px, self.box_jitter)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int, torch.Tensor]:
        index, epoch = (int(item[0]), int(item[1])) if isinstance(item, tuple) else (int(item), self.epoch)
        n = len(self.samples)
        for attempt in range(min(n, 16)):
            i = (index + attempt) % n
            try:
                crop, valid = self._load(i)
                break
            except ImageError as e:
                self._failures.add(self.samples[i].path)
                if self.samples[i].path not in self._warned:
                    self._warned.add(self.samples[i].path)
                    log.warning("%s; using the next sample instead", e)
        else:
            raise ImageError(f"16 consecutive images failed to decode near index {index} of {self.root}")
        if self.train or self.box_jitter:
            rng = sample_rng(self.seed, epoch, i)
            if self.box_jitter:
                crop = jitter_box(crop, valid, rng, self.size)
            if self.train:
                crop = augment(crop, rng, self.tone_jitter)
        s = self.samples[i]
        return preprocess(crop, self.size), int(s.label), torch.tensor(s.cues, dtype=torch.long)

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_crops"] = None     # each process opens the memory map itself
        return d


# --------------------------------------------------------------------------------------------------
# Crop cache (paperkit.cache.CropCache): every indexed face of a root at one size, memory-mapped
# --------------------------------------------------------------------------------------------------
_OPEN_CROPS: dict[tuple[str, int, str], Any] = {}


def crop_key(root: str | os.PathLike, size: int, context: bool = False) -> str:
    from paperkit import cache
    table = cache.ProbeTable(root, index.READER_VERSION)
    crop = ({"context": CONTEXT_SCALE, "fit": False, "splits": ["train"]} if context
            else {"scale": CROP_SCALE, "fit": True})
    return cache._sha({"index": table.key, "size": int(size), **crop, "frame": BB_FRAME,
                       "reader": index.READER_VERSION}, 16)


def open_crop_cache(root: str | os.PathLike, size: int, context: bool = False) -> Any:
    """The built crop cache of (root, size, deployed or context crops), or None (not built, turned off,
    or stale)."""
    from paperkit import cache
    if not cache.enabled(cache.CROP_ENV):
        return None
    root = Path(root).resolve()
    key = crop_key(root, size, context)
    memo = (str(root), int(size), key)
    if memo not in _OPEN_CROPS:
        c = cache.CropCache.open(root, key)
        if c is None:
            return None
        if len(_OPEN_CROPS) >= 2:   # a root's deployed + context crops is the common case: do not pin old maps
            _OPEN_CROPS.pop(next(iter(_OPEN_CROPS)))
        _OPEN_CROPS[memo] = c
    return _OPEN_CROPS[memo]


def _crop_rows(args: tuple[str, str, int, int, bool, list[Sample]]
               ) -> list[tuple[tuple[int, int] | None, Valid | None]]:
    """Pool job: crop ``samples`` into rows ``start..`` of the temp array; per row the image's stamp (None
    when the image fails or changed since indexing: that row is never served) and the crop's valid part."""
    root, npy, start, size, context, samples = args
    arr = np.load(npy, mmap_mode="r+")
    out: list[tuple[tuple[int, int] | None, Valid | None]] = []
    for j, s in enumerate(samples):
        path = Path(root) / s.path
        before = _stamp(path)
        try:
            same = before is not None and before == (s.stamp or before)
            crop, valid = _crop_jpeg(Path(root), s, size, context) if same else (None, None)
        except ImageError:
            crop = None
        if crop is None or _stamp(path) != before:
            out.append((None, None))
            continue
        arr[start + j] = crop
        out.append((before, valid))
    arr.flush()
    del arr
    return out


def _other_kind(path: Path, context: bool) -> bool:
    """Whether cache file ``path`` belongs to the other kind of crop cache (a build sweeps only its own
    kind's stale caches: the deployed and the context crops of a root live side by side)."""
    side = path.with_name(path.name.split(".")[0] + ".json")
    try:
        other = bool(json.loads(side.read_text()).get("context", False))
    except (OSError, ValueError, AttributeError):
        return False
    return other != bool(context)


def ensure_crop_cache(root: str | os.PathLike, size: int, protocol: str = "intra_test",
                      limit_bytes: int | None = None, context: bool = False) -> Any:
    """Open, or build once, the crop cache of every indexed image of ``root`` at ``size`` pixels: the
    deployed crops of both splits, or (``context``) the context crops of the train split, which only
    training items read, with their valid parts.

    Returns None (the JPEG path is used) when turned off (``PAPERKIT_CROP_CACHE=0``) or when the array
    would exceed ``limit_bytes`` (default ``PAPERKIT_CROP_CACHE_GB``, 8 GB: 600k CelebA-Spoof crops at
    128 px take 29 GB). The build decodes over all cores into temp files renamed when complete."""
    from paperkit import cache
    if not cache.enabled(cache.CROP_ENV):
        return None
    root = Path(root).resolve()
    c = open_crop_cache(root, size, context)
    if c is not None:
        return c
    limit = cache.crop_limit_bytes() if limit_bytes is None else int(limit_bytes)
    row_bytes = int(size) * int(size) * 3
    splits = ("train",) if context else SPLITS
    entries = sum(len(read_labels(root, sp, protocol)) for sp in splits)
    if entries * row_bytes > limit:
        log.info("crop cache of %s at %d px would take %.1f GB > %.1f GB (%s); reading the image files",
                 root, size, entries * row_bytes / 1024 ** 3, limit / 1024 ** 3, cache.CROP_LIMIT_ENV)
        return None
    key = crop_key(root, size, context)
    folder, npy, side = cache.CropCache.paths_for(root, key)
    with cache.folder_lock(folder):   # a concurrent builder finished meanwhile: use its cache
        c = cache.CropCache.open(root, key)
        if c is not None:
            return c
        samples = sorted({s.path: s for sp in splits for s in load_index(root, sp, protocol)}.items())
        samples = [s for _, s in samples]
        n = len(samples)
        t0 = time.perf_counter()
        with cache.atomic_path(npy) as tmp:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(max(1, n), size, size, 3))
            arr.flush()
            del arr
            per = max(16, min(256, n // (4 * (os.cpu_count() or 1)) + 1))
            jobs = [(str(root), str(tmp), i, int(size), bool(context), samples[i:i + per]) for i in range(0, n, per)]
            rows = [st for part in (pool_map(_crop_rows, jobs) if n >= index.POOL_MIN else map(_crop_rows, jobs))
                    for st in part]
        meta = {"key": key, "root": str(root), "size": int(size), "context": bool(context),
                "reader": index.READER_VERSION, "paths": [s.path for s in samples], "stamps": [r[0] for r in rows],
                "valid": [r[1] for r in rows],
                "boxes": [[list(s.box) if s.box is not None else None, s.box_problem] for s in samples],
                "built_s": round(time.perf_counter() - t0, 1)}
        payload = json.dumps(meta).encode()
        cache.atomic_write(side, lambda f: f.write(payload))   # the sidecar last: it makes the array valid
        cache.sweep(folder, keep=lambda p: key in p.name or p.name == "root.txt" or _other_kind(p, context))
    cache.prune_roots("crops")
    log.info("crop cache: %d %s of %s at %d px in %.1f s (%s)", n, "context crops" if context else "faces", root,
             size, meta["built_s"], npy)
    return open_crop_cache(root, size, context)


class EpochSampler(Sampler):
    """Seeded shuffling sampler that yields ``(index, epoch)``: the order of epoch e is a permutation seeded
    by (seed, e), and the epoch travels with each index to the workers. Each ``iter()`` starts the next
    epoch; ``set_epoch(e)`` pins the next one (e.g. after resuming a checkpoint)."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = int(n), int(seed), bool(shuffle), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        self.epoch += 1
        order = (np.random.default_rng([seed_u32(self.seed), epoch, 15485863]).permutation(self.n)
                 if self.shuffle else np.arange(self.n))
        return iter([(int(i), epoch) for i in order])


def _loader(ds: FaceDataset, batch_size: int, workers: int, sampler: Sampler | None = None,
            drop_last: bool = False) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                      persistent_workers=workers > 0, worker_init_fn=worker_init if workers > 0 else None,
                      drop_last=drop_last)


def make_loaders(root: str | os.PathLike | None, profile: Any, seed: int, protocol: str = "intra_test",
                 domain: str | None = None, test_domain: str | None = None) -> dict[str, DataLoader]:
    """Train/val/test DataLoaders.

    train/val: the official train split, capped to ``profile.max_train_images`` (seeded), split by subject
    (``profile.val_fraction``, seeded). test: the official test split, capped to ``max_test_images``.
    ``domain`` restricts all three to one capture domain; ``test_domain`` (default: ``domain``) lets the
    cross-domain protocol train on A and test on B. Train batches are shuffled by :class:`EpochSampler`
    and augmented reproducibly; the last incomplete train batch is dropped (BatchNorm needs > 1 sample)."""
    from paperkit.profiles import get_profile
    prof = get_profile(profile) if isinstance(profile, str) else profile
    root = resolve_root(root, prof, seed) if (root is None or str(root) == "") else check_root(root)
    test_domain = domain if test_domain is None else test_domain
    pool = load_index(root, "train", protocol, domain, limit=prof.max_train_images, seed=seed)
    test = load_index(root, "test", protocol, test_domain, limit=prof.max_test_images, seed=seed)
    if not pool:
        raise DatasetError(f"no usable training images under {root} (protocol {protocol}, domain {domain})")
    train, val = split_by_subject(pool, prof.val_fraction, seed)
    size, bs, nw = prof.input_size, prof.batch_size, devices.workers(prof.num_workers)
    ds_train = FaceDataset(root, train, size, train=True, seed=seed, box_jitter=prof.box_jitter,
                           tone_jitter=prof.tone_jitter)
    ds_train.problems = dict(pool.problems)
    ds_val = FaceDataset(root, val, size, train=False, seed=seed)
    ds_test = FaceDataset(root, test, size, train=False, seed=seed)
    ds_test.problems = dict(test.problems)
    if prof.max_train_images is None and prof.max_test_images is None:   # a capped run reads only its images
        ensure_crop_cache(root, size, protocol)
        ensure_crop_cache(root, ds_train.crop_px, protocol, context=ds_train.box_jitter)
    return {
        "train": _loader(ds_train, bs, nw, EpochSampler(len(train), seed), drop_last=len(train) > bs),
        "val": _loader(ds_val, bs, nw),
        "test": _loader(ds_test, bs, nw),
    }


# --------------------------------------------------------------------------------------------------
# Loading benchmark
# --------------------------------------------------------------------------------------------------
def bench_loading(root: str | os.PathLike | None = None, size: int = 128, n: int = 512, workers: int = 2,
                  batch_size: int = 32, seed: int = 0) -> dict[str, Any]:
    """Throughput of the training input pipeline (decode + crop + augment + normalise) in images/s:
    single process (with a per-stage breakdown) and through a DataLoader with ``workers`` processes."""
    root = resolve_root(root, "default", seed) if (root is None or str(root) == "") else check_root(root)
    samples = load_index(root, "train", limit=n, seed=seed)
    ds = FaceDataset(root, samples, size, train=True, seed=seed)
    m = len(ds)
    if m == 0:
        raise DatasetError(f"no usable training images under {root}")
    stages = {"decode": 0.0, "crop": 0.0, "augment": 0.0, "preprocess": 0.0}
    augment(np.zeros((size, size, 3), np.uint8), sample_rng(seed, 0, 0))  # warm-up: lazy torchvision import
    t_all, c_all = time.perf_counter(), time.process_time()
    for i in range(m):
        s = ds.samples[i]
        t0 = time.perf_counter()
        img = decode_image(root / s.path, check_header=False)
        t1 = time.perf_counter()
        crop = crop_face(img, ds.box_of(s, img.shape[1], img.shape[0]), size)
        t2 = time.perf_counter()
        crop = augment(crop, sample_rng(seed, 0, i))
        t3 = time.perf_counter()
        preprocess(crop, size)
        t4 = time.perf_counter()
        stages["decode"] += t1 - t0
        stages["crop"] += t2 - t1
        stages["augment"] += t3 - t2
        stages["preprocess"] += t4 - t3
    single = m / (time.perf_counter() - t_all)
    cpu = m / max(1e-9, time.process_time() - c_all)
    # img per CPU-second: what one idle core achieves, robust to other users' load on a shared machine
    result: dict[str, Any] = {"images": m, "size": size, "img_per_s_single": round(single, 1),
                              "img_per_cpu_s_single": round(cpu, 1),
                              "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
                              "ms_per_image": {k: round(v / m * 1e3, 3) for k, v in stages.items()}}
    if workers > 0:
        loader = _loader(ds, batch_size, workers, EpochSampler(m, seed))
        it = iter(loader)
        next(it)  # the first batch includes worker start-up, which is not throughput
        t0 = time.perf_counter()
        count = 0
        for x, _, _ in it:
            count += x.shape[0]
        dt = time.perf_counter() - t0
        result.update({"workers": workers, "img_per_s_workers": round(count / dt, 1) if count else None})
        del it, loader
    return result


def cli_bench_loading(root: str | os.PathLike | None = None, size: int = 128, n: int = 512, workers: int = 2,
                      as_json: bool = False) -> int:
    """`paperkit bench data`: prints the loading throughput (target >= 300 img/s at 128 px on 2 cores)."""
    try:
        r = bench_loading(root, size=size, n=n, workers=workers)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(r, indent=2))
    else:
        print(f"loading (decode + crop + augment + normalise) at {size}x{size}, {r['images']} images:")
        print(f"  single process: {r['img_per_s_single']:.0f} img/s wall, {r['img_per_cpu_s_single']:.0f} img per "
              f"CPU-second (load average {r['load_avg_1min']})  "
              + ", ".join(f"{k} {v:.2f} ms" for k, v in r["ms_per_image"].items()))
        if "workers" in r:
            print(f"  DataLoader, {r['workers']} workers: {r['img_per_s_workers']:.0f} img/s")
    return 0
