"""CelebA-Spoof reader: index, boxes, face crops, training transforms, Dataset and loaders, summary.

The same reader serves the real CelebA-Spoof tree and paperkit's embedded synthetic dataset (which is
written in the identical layout), so every number downstream goes through one code path.

Layout read (DESIGN section 3)::

    ROOT/Data/{train,test}/<subject>/{live,spoof}/<6 digits>.{jpg,png}   + sibling <stem>_BB.txt
    ROOT/metas/intra_test/{train,test}_label.json    {"Data/...": [44 ints]}
    ROOT/metas/paperkit/attack_cues.json, samples.json, ROOT/metas/protocol_domain/*   (optional, synthetic)

Problem handling (the policy the README quotes). Real CelebA-Spoof files contain all of these; each is
counted under the key of ``summary()["problems"]``, logged once per index with an example file, and never
crashes an epoch:

=====================  ========================================================================  ==========
problem                what it is                                                                at training
=====================  ========================================================================  ==========
``missing_bb``         no ``<stem>_BB.txt`` next to the image                                    centre crop
``empty_bb``           ``_BB.txt`` empty, or unparsable (fewer than 4 numbers, text, NaN/inf)    centre crop
``negative_bb``        a negative x, y, w or h; the box is clipped to the image and still used  clipped box
``tiny_bb``            after scaling to pixels and clipping, w or h below 3 px (incl. a box      centre crop
                       that lies entirely outside the image)
``missing_image``      label-file entry whose image file does not exist                          skipped
``unreadable_image``   the file exists but does not decode: zero bytes, not an image, truncated,  skipped
                       CRC error, or a header declaring more than ``MAX_PIXELS`` pixels
                       (decompression-bomb guard, checked before any pixel is decoded)
``label_conflict``     the live/spoof flag [43], the spoof type [40] (0 = live) and the folder   skipped
                       (``live/`` or ``spoof/``) do not all agree
``bad_spoof_type``     spoof type [40] outside the CelebA-Spoof codes 0-10                       skipped
``split_overlap``      the same image is listed in both ``train_label.json`` and                 dropped
                       ``test_label.json`` (train/test leakage; a loud warning of its own)       from train
=====================  ========================================================================  ==========

Each entry is counted once, under its first problem in this order: ``bad_spoof_type``,
``label_conflict``, ``split_overlap``, then the image (``missing_image``, ``unreadable_image``), then the
box. Box problems are only counted for images that are kept (an absent or undecodable image has no box to
miss). The label rules, and why:

* ``label_conflict`` -> skipped, not repaired: with two of three signals disagreeing there is no safe
  guess (a folder saying spoof with type 0 leaves the attack type unknown, and per-type APCER needs it),
  and training or testing on a guessed label would put label noise into every number downstream.
* ``bad_spoof_type`` -> skipped and counted rather than refused: one odd entry should not stop a
  600k-image run, and the summary shows how many there are.
* ``split_overlap`` -> the image is dropped from *train* and kept in test, so the test split stays the
  official one (results remain comparable) and no test image is ever trained on.

In ``summary()``, ``images`` counts every label-file entry; ``live``, ``spoof`` and ``spoof_types`` count
the entries that pass the label checks (so ``images - live - spoof`` = that split's ``label_conflict`` +
``bad_spoof_type`` + ``split_overlap``); ``examples`` names one file per problem kind.

"Centre crop" is the largest centred square of the image (a box-free guess that keeps the face of a
portrait-style capture); "skipped" means the sample is left out of the index at load time, so an epoch
never meets it. A file that passes the index-time check and still fails to decode later (e.g. replaced on
disk mid-run) is replaced by the next sample in the dataset, a warning names it, and
``FaceDataset.runtime_failures`` counts it (across DataLoader workers).

Caches (:mod:`paperkit.cache`). The index (every image probed, every box read) is built once per data
root and label-file state, over all cores, and kept under the paperkit cache folder: a warm
``load_index`` or ``summary`` reads no image. Each indexed image's size and mtime are kept with it, so an
image replaced or truncated after indexing is noticed when it is loaded (probed again; counted as above
if broken). :func:`make_loaders` also builds the crop cache (every face at the input size, one
memory-mapped uint8 array) when it fits ``PAPERKIT_CROP_CACHE_GB``; augmentation runs on the cached
crop, so items are identical to the JPEG path. ``PAPERKIT_INDEX_CACHE=0`` / ``PAPERKIT_CROP_CACHE=0``
turn them off.

Structural errors are *not* skipped, they stop with a :class:`DatasetError` naming the file and the fix:
a root that is not a CelebA-Spoof tree, malformed JSON, a label that is not 44 integers, a key that is not
a relative ``Data/...`` path inside the root (``../`` escapes, absolute paths).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from paperkit import device as devices
from paperkit.cues import CUE_NAMES

# OpenCV's own thread pool does not survive fork(): a DataLoader worker forked from a process whose pool
# has run deadlocks in its first cv2 call. DataLoader workers give the parallelism, so keep OpenCV serial.
cv2.setNumThreads(1)

log = logging.getLogger("paperkit.data")

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
BB_FRAME = 224                 # _BB.txt coordinates live in a 224x224 frame
CROP_SCALE = 1.5               # square side = 1.5 * max(w, h) around the box centre
TINY_BB_PX = 3                 # w or h below this (pixels, after clipping) -> tiny_bb
MAX_PIXELS = 50_000_000        # header-declared pixel limit (decompression-bomb guard)
READER_VERSION = 1             # bump when what the index or a crop holds changes: every cache is rebuilt
POOL_MIN = 256                 # fewer entries than this are probed / cropped in-process (no pool start-up)
NUM_LABELS = 44
SPLITS = ("train", "test")
PROBLEM_KEYS = ("missing_bb", "empty_bb", "negative_bb", "tiny_bb", "unreadable_image", "missing_image",
                "label_conflict", "bad_spoof_type", "split_overlap")
LABEL_PROBLEM_KEYS = ("bad_spoof_type", "label_conflict", "split_overlap")   # decided from the label files
SPOOF_TYPE_NAMES = {0: "Live", 1: "Photo", 2: "Poster", 3: "A4", 4: "Face Mask", 5: "Upper Body Mask",
                    6: "Region Mask", 7: "PC", 8: "Pad", 9: "Phone", 10: "3D Mask"}
PRINT_TYPES = frozenset({1, 2, 3})   # CelebA-Spoof codes that are prints -> cue "print" on real data
SCREEN_TYPES = frozenset({7, 8, 9})  # replay on PC / pad / phone -> cue "screen" on real data
MASK_TYPES = frozenset({4, 5, 6})    # face / upper-body / region paper masks -> cue "cutout"
DARK = 4                             # CelebA-Spoof illumination code for dark scenes

# Training-time augmentation (seed 000: "colour jitter and ISO-noise"; the paper gives no strengths, these
# are moderate values that keep medium cues such as moire and halftone visible).
JITTER = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.02}
ISO_NOISE_P = 0.5
ISO_INTENSITY = (0.1, 0.5)     # scales luminance (shot + read) noise
ISO_COLOR_SHIFT = (0.01, 0.05)  # scales chroma noise, as a fraction of full scale
FLIP_P = 0.5

EXPECTED_LAYOUT = (
    "expected a CelebA-Spoof tree: ROOT/Data/{train,test}/<subject>/{live,spoof}/<id>.jpg|png with "
    "sibling <id>_BB.txt, and ROOT/metas/intra_test/{train,test}_label.json "
    "(or leave data_root empty to use the embedded synthetic dataset)"
)


class DatasetError(ValueError):
    """The dataset (root, label file, key or image) is not what the reader needs; the message says why."""


class ImageError(DatasetError):
    """One image file cannot be used (missing, does not decode, or too large)."""


# --------------------------------------------------------------------------------------------------
# Samples and the index
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """One labelled image. ``box`` (pixels, clipped) and ``box_problem`` are filled by :func:`load_index`;
    a Sample built by hand keeps ``box_problem="unchecked"`` and its box is read when the image is."""

    path: str
    split: str
    subject: str
    label: int
    spoof_type: int = 0
    illumination: int = 0
    environment: int = 0
    domain: str = ""
    video: str = ""
    cues: tuple[int, ...] = (-1,) * len(CUE_NAMES)
    box: tuple[float, float, float, float] | None = None
    box_problem: str = "unchecked"   # "" ok, "negative_bb" (clipped, used), "missing_bb", "empty_bb", "tiny_bb"
    # image (size, mtime_ns) when indexed: a later change is caught at load time
    stamp: tuple[int, int] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.video:
            kind = "spoof" if self.label else "live"
            object.__setattr__(self, "video", f"{self.split}/{self.subject}/{kind}/{self.spoof_type}")


class Index(list):
    """``list[Sample]`` plus what was found wrong while building it.

    ``problems``: counts under :data:`PROBLEM_KEYS`; ``examples``: one example file per problem;
    ``entries``: label-file entries read (before skipping and capping)."""

    def __init__(self, samples: Iterable[Sample] = (), problems: dict[str, int] | None = None,
                 examples: dict[str, str] | None = None, entries: int = 0) -> None:
        super().__init__(samples)
        self.problems = dict(problems) if problems else {k: 0 for k in PROBLEM_KEYS}
        self.examples = dict(examples or {})
        self.entries = entries


def check_root(root: str | os.PathLike) -> Path:
    """Return ``root`` as a Path if it looks like a CelebA-Spoof tree, else raise DatasetError naming
    everything that is missing."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"dataset root {root} does not exist; {EXPECTED_LAYOUT}")
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a directory; {EXPECTED_LAYOUT}")
    needed = ["Data", "metas/intra_test/train_label.json", "metas/intra_test/test_label.json"]
    missing = [n for n in needed if not (root / n).exists()]
    if missing:
        raise DatasetError(f"{root} is not a CelebA-Spoof tree: missing {', '.join(missing)}; {EXPECTED_LAYOUT}")
    return root


def resolve_root(data_root: str | os.PathLike | None, profile: Any = "default", seed: int = 0) -> Path:
    """The dataset root a notebook should use: "" or None -> the embedded synthetic dataset for this
    profile and seed (built once, cached); anything else is validated as a CelebA-Spoof tree."""
    if data_root is None or str(data_root).strip() == "":
        from paperkit import synth  # late import: synth is only needed when no real root is given
        name = getattr(profile, "name", profile)
        return Path(synth.default_root(profile=name, seed=seed))
    return check_root(data_root).resolve()


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read {path}: {e}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                           "re-extract or regenerate this file") from e


def _check_key(key: Any, file: Path) -> PurePosixPath:
    """Keys must be relative POSIX paths under ``Data/`` that cannot climb out of the root."""
    if not isinstance(key, str) or not key:
        raise DatasetError(f"{file}: key {key!r} is not a path string")
    p = PurePosixPath(key)
    if p.is_absolute() or "\\" in key or ".." in p.parts or (len(key) > 1 and key[1] == ":"):
        raise DatasetError(f"{file}: key {key!r} points outside the dataset root; keys must be relative "
                           "paths starting 'Data/' without '..'")
    if p.parts[0] != "Data" or len(p.parts) < 4:
        raise DatasetError(f"{file}: key {key!r} is not of the form Data/<split>/<subject>/.../<image>")
    return p


def _check_label(key: str, value: Any, file: Path) -> list[int]:
    ok = (isinstance(value, list) and len(value) == NUM_LABELS
          and all(isinstance(v, int) and not isinstance(v, bool) for v in value))
    if not ok:
        got = f"{type(value).__name__} of length {len(value)}" if isinstance(value, list) else repr(value)[:60]
        raise DatasetError(f"{file}: label for key {key!r} must be a list of {NUM_LABELS} integers, got {got}")
    if value[43] not in (0, 1):
        raise DatasetError(f"{file}: label for key {key!r} has live/spoof flag [43] = {value[43]}, expected 0 or 1")
    return value


def label_file(root: Path, split: str, protocol: str = "intra_test", domain: str | None = None) -> Path:
    if domain:
        return root / "metas" / "protocol_domain" / f"{domain}_{split}_label.json"
    return root / "metas" / protocol / f"{split}_label.json"


def read_labels(root: str | os.PathLike, split: str, protocol: str = "intra_test",
                domain: str | None = None) -> dict[str, list[int]]:
    """Validated ``{key: 44 ints}`` of one split. With ``domain``, the cross-domain protocol file
    ``metas/protocol_domain/<domain>_<split>_label.json`` if present, else the protocol's file filtered by
    the domain recorded in ``metas/paperkit/samples.json``."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    file = label_file(root, split, protocol, domain)
    filter_domain = None
    if domain and not file.is_file():
        file, filter_domain = label_file(root, split, protocol), domain
    if not file.is_file():
        raise DatasetError(f"label file {file} not found; {EXPECTED_LAYOUT}")
    data = _read_json(file)
    if not isinstance(data, dict):
        raise DatasetError(f"{file}: expected a JSON object mapping image paths to 44-integer labels, "
                           f"got {type(data).__name__}")
    out = {}
    for key, value in data.items():
        _check_key(key, file)
        out[key] = _check_label(key, value, file)
    if filter_domain is not None:
        side = _side_samples(root)
        if not side:
            raise DatasetError(f"domain {domain!r} requested but neither "
                               f"{label_file(root, split, protocol, domain)} nor metas/paperkit/samples.json exists")
        out = {k: v for k, v in out.items() if side.get(k, {}).get("domain") == filter_domain}
    return out


def _side_samples(root: Path) -> dict[str, dict[str, str]]:
    f = root / "metas" / "paperkit" / "samples.json"
    if not f.is_file():
        return {}
    data = _read_json(f)
    if not isinstance(data, dict):
        raise DatasetError(f"{f}: expected an object {{path: {{'domain': .., 'video': ..}}}}")
    return data


def _side_cues(root: Path) -> dict[str, tuple[int, ...]]:
    f = root / "metas" / "paperkit" / "attack_cues.json"
    if not f.is_file():
        return {}
    data = _read_json(f)
    if not isinstance(data, dict) or not isinstance(data.get("labels"), dict):
        raise DatasetError(f"{f}: expected {{'cues': [...], 'labels': {{path: [7 ints]}}}}")
    names = tuple(data.get("cues", CUE_NAMES))
    if names != CUE_NAMES:
        raise DatasetError(f"{f}: cue names {list(names)} differ from the expected {list(CUE_NAMES)}")
    out = {}
    for key, v in data["labels"].items():
        if not (isinstance(v, list) and len(v) == len(CUE_NAMES) and all(x in (-1, 0, 1) for x in v)):
            raise DatasetError(f"{f}: cues for key {key!r} must be {len(CUE_NAMES)} values in {{-1, 0, 1}}")
        out[key] = tuple(int(x) for x in v)
    return out


def derived_cues(label: int, spoof_type: int, illumination: int = 0) -> tuple[int, ...]:
    """Cues for data without a cue side file (real CelebA-Spoof), derived from its labels alone.

    1 = present, 0 = absent, -1 = unknown (ignored by the loss, never counted as 0):
      live: the six medium cues 0; low_quality -1 (a live capture can be of low quality).
      print = Photo/Poster/A4; screen = PC/Pad/Phone; cutout = Face/Upper-body/Region mask;
      paper_texture = every paper medium (prints and masks); moire -1 for screens (depends on distance
      and angle, not labelled), else 0; glare -1 for prints and screens (not labelled), else 0;
      low_quality 1 under Dark illumination, else -1 (blur and compression are not labelled).
    """
    if label == 0:
        return (0,) * (len(CUE_NAMES) - 1) + (-1,)
    paper = PRINT_TYPES | MASK_TYPES
    return (int(spoof_type in PRINT_TYPES), int(spoof_type in SCREEN_TYPES),
            -1 if spoof_type in SCREEN_TYPES else 0,
            -1 if spoof_type in PRINT_TYPES | SCREEN_TYPES else 0,
            int(spoof_type in MASK_TYPES), int(spoof_type in paper),
            1 if illumination == DARK else -1)


def bb_path(image: Path) -> Path:
    return image.with_name(image.stem + "_BB.txt")


def read_box(path: Path) -> tuple[str, tuple[float, float, float, float] | None]:
    """Parse ``x y w h [score]`` (224 frame) from the first non-empty line.
    Returns ``("ok", box)``, ``("missing_bb", None)`` or ``("empty_bb", None)`` (empty or malformed)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "missing_bb", None
    except OSError:
        return "empty_bb", None
    for line in text.splitlines():
        parts = line.replace(",", " ").split()
        if not parts:
            continue
        try:
            nums = [float(v) for v in parts[:4]]
        except ValueError:
            return "empty_bb", None
        if len(nums) < 4 or not all(math.isfinite(v) for v in nums):
            return "empty_bb", None
        return "ok", (nums[0], nums[1], nums[2], nums[3])
    return "empty_bb", None


def box_to_pixels(box224: tuple[float, float, float, float], width: int, height: int
                  ) -> tuple[tuple[float, float, float, float], bool, bool]:
    """Scale a 224-frame box to the image (x, w by width/224; y, h by height/224) and clip it.
    Returns (clipped box, had a negative value, is tiny)."""
    x, y, w, h = box224
    negative = min(x, y, w, h) < 0
    sx, sy = width / BB_FRAME, height / BB_FRAME
    x0, y0, x1, y1 = x * sx, y * sy, (x + w) * sx, (y + h) * sy
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    x0, y0 = max(0.0, x0), max(0.0, y0)
    x1, y1 = min(float(width), x1), min(float(height), y1)
    cw, ch = max(0.0, x1 - x0), max(0.0, y1 - y0)
    tiny = cw < TINY_BB_PX or ch < TINY_BB_PX
    return (x0, y0, cw, ch), negative, tiny


def probe_image(path: Path) -> tuple[str, tuple[int, int] | None, str]:
    """Check that an image will decode, without decoding it at full size.

    Returns ``(status, (width, height) after EXIF orientation, reason)``, status in
    ``ok | missing_image | unreadable_image``. The header is read first and an image declaring more than
    :data:`MAX_PIXELS` is refused before any pixel data is touched. JPEGs are then decoded at 1/8 scale
    (libjpeg DCT scaling: cheap, but still reads every byte, so truncation is caught, which cv2 would
    silently paint grey); PNGs are CRC-verified chunk by chunk; anything else is decoded fully."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing_image", None, "no such file"
    except OSError as e:
        return "unreadable_image", None, str(e)
    if size == 0:
        return "unreadable_image", None, "zero-byte file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    return "unreadable_image", None, (f"header declares {w}x{h} = {w * h} pixels > {MAX_PIXELS} "
                                                      "(decompression-bomb guard)")
                fmt, orient = im.format, 1
                if fmt == "PNG":
                    im.verify()   # must come first: any other access consumes the chunk stream
                else:
                    orient = im.getexif().get(0x0112, 1)
                    if fmt in ("JPEG", "MPO"):
                        im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
                    im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return "unreadable_image", None, f"decompression-bomb guard: {e}"
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, struct.error ...)
        return "unreadable_image", None, f"{type(e).__name__}: {e}"
    if orient in (5, 6, 7, 8):   # cv2.imread applies EXIF rotation, so report the rotated size
        w, h = h, w
    return "ok", (w, h), ""


def _subject(key: str) -> str:
    return PurePosixPath(key).parts[2]


@dataclass
class LabelScreen:
    """Label-file entries that pass the label checks, plus what the checks counted (see the module doc)."""

    labels: dict[str, list[int]]
    problems: dict[str, int]
    examples: dict[str, str]
    reasons: dict[str, str]


def _test_keys(root: Path, protocol: str, domain: str | None) -> set[str]:
    """Normalised keys of the test split(s) a train split must not share an image with."""
    keys = set(read_labels(root, "test", protocol))
    if domain and label_file(root, "test", protocol, domain).is_file():
        keys |= set(read_labels(root, "test", protocol, domain))
    return {str(PurePosixPath(k)) for k in keys}


def screen_labels(root: str | os.PathLike, split: str, labels: dict[str, list[int]],
                  protocol: str = "intra_test", domain: str | None = None) -> LabelScreen:
    """Apply the label rules of the module docstring: drop entries with a spoof type outside 0-10 or
    contradicting live/spoof signals, and (train only) entries also listed in the test label file."""
    root = Path(root)
    problems = {k: 0 for k in LABEL_PROBLEM_KEYS}
    examples: dict[str, str] = {}
    reasons: dict[str, str] = {}
    kept: dict[str, list[int]] = {}

    def note(kind: str, key: str, why: str) -> None:
        problems[kind] += 1
        examples.setdefault(kind, key)
        reasons.setdefault(kind, why)

    test_keys = _test_keys(root, protocol, domain) if split == "train" else set()
    for key, v in labels.items():
        stype, flag = v[40], v[43]
        folder = PurePosixPath(key).parts[3]
        if not 0 <= stype < len(SPOOF_TYPE_NAMES):
            note("bad_spoof_type", key, f"spoof type [40] = {stype}, expected 0-{len(SPOOF_TYPE_NAMES) - 1}")
            continue
        folder_flag = {"live": 0, "spoof": 1}.get(folder)
        if (stype == 0) != (flag == 0) or (folder_flag is not None and folder_flag != flag):
            note("label_conflict", key, f"folder {folder}/, live/spoof flag [43] = {flag}, spoof type [40] = {stype}")
            continue
        if str(PurePosixPath(key)) in test_keys:
            note("split_overlap", key, "also listed in the test label file")
            continue
        kept[key] = v
    if problems["split_overlap"]:
        log.warning("TRAIN/TEST OVERLAP in %s: %d image(s) of %s are also listed in the test label file "
                    "(e.g. %s); they are dropped from train so no test image is trained on. Fix the label files.",
                    root, problems["split_overlap"], label_file(root, split, protocol, domain),
                    examples["split_overlap"])
    return LabelScreen(kept, problems, examples, reasons)


def _samples_from_labels(root: Path, split: str, labels: dict[str, list[int]]) -> list[Sample]:
    side = _side_samples(root)
    cues = _side_cues(root)
    out = []
    for key in sorted(labels):
        v = labels[key]
        meta = side.get(key, {})
        label, stype, illum = int(v[43]), int(v[40]), int(v[41])
        out.append(Sample(path=key, split=split, subject=_subject(key), label=label, spoof_type=stype,
                          illumination=illum, environment=int(v[42]), domain=str(meta.get("domain", "")),
                          video=str(meta.get("video", "")), cues=cues.get(key, derived_cues(label, stype, illum))))
    return out


def check_samples(root: str | os.PathLike, samples: Sequence[Sample], screen: LabelScreen | None = None,
                  use_cache: bool | None = None) -> Index:
    """Probe every sample's image and box: drop missing/unreadable images, attach pixel boxes (``None`` ->
    centre-crop fallback), count every problem (plus the label problems of ``screen``, already dropped)
    and log one warning with an example file per kind."""
    root = Path(root)
    problems = {k: 0 for k in PROBLEM_KEYS}
    examples: dict[str, str] = {}
    reasons: dict[str, str] = {}
    affected: set[str] = set()
    kept = []
    dropped = 0   # entries the label checks already removed (each counted once, disjoint from samples)
    if screen is not None:
        for k, n in screen.problems.items():
            problems[k] += n
        examples.update(screen.examples)
        reasons.update(screen.reasons)
        dropped = sum(screen.problems.values())
    n_entries = len(samples) + dropped

    def note(kind: str, key: str, why: str = "") -> None:
        problems[kind] += 1
        affected.add(key)
        examples.setdefault(kind, key)
        if why:
            reasons.setdefault(kind, why)

    probed = probe_samples(root, [s.path for s in samples], use_cache)
    for s, ((status, dims, why), (bstatus, box224), stamp) in zip(samples, probed):
        if status != "ok":   # counted once: a skipped image has no box problem worth reporting
            note(status, s.path, why)
            continue
        w, h = dims if dims else (BB_FRAME, BB_FRAME)
        box, bproblem = None, bstatus
        if bstatus == "ok":
            box, negative, tiny = box_to_pixels(box224, w, h)
            bproblem = ""
            if negative:
                note("negative_bb", s.path)
                bproblem = "negative_bb"
            if tiny:
                box, bproblem = None, "tiny_bb"
                note("tiny_bb", s.path)
        else:
            note(bstatus, s.path)
        kept.append(replace(s, box=box, box_problem=bproblem, stamp=stamp))
    index = Index(kept, problems, examples, entries=n_entries)
    if any(problems.values()):
        parts = []
        for k in PROBLEM_KEYS:
            if problems[k]:
                extra = f": {reasons[k]}" if k in reasons else ""
                parts.append(f"{k}={problems[k]} (e.g. {root / examples[k]}{extra})")
        log.warning("dataset %s: %d of %d entries have problems: %s. Policy: missing/empty/tiny box -> centre "
                    "crop, negative box -> clipped, missing/unreadable image, label conflict, bad spoof type -> "
                    "skipped, train/test overlap -> dropped from train (see paperkit.data)",
                    root, len(affected) + dropped, n_entries, "; ".join(parts))
    return index


def _probe_entry(root: Path, key: str) -> tuple[tuple[str, tuple[int, int] | None, str], tuple[str, Any],
                                                 tuple[int, int] | None]:
    """What the index needs of one entry: image probe, box file, and the image's (size, mtime_ns)."""
    img = root / key
    try:
        st = img.stat()
        stamp: tuple[int, int] | None = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = None
    return probe_image(img), read_box(bb_path(img)), stamp


def _probe_chunk(args: tuple[str, list[str]]) -> list[Any]:
    root, keys = args
    return [_probe_entry(Path(root), k) for k in keys]


def _pool_map(fn: Any, jobs: list[Any], workers: int | None = None) -> list[Any]:
    """``[fn(j) for j in jobs]``, in order, over a fork process pool using every core (CPU-bound decoding
    holds the GIL; threads would not scale). Serial inside a daemonic process (a DataLoader worker) or
    where fork is unavailable."""
    import multiprocessing as mp
    workers = workers or os.cpu_count() or 1
    if workers < 2 or len(jobs) < 2 or mp.current_process().daemon or "fork" not in mp.get_all_start_methods():
        return [fn(j) for j in jobs]
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("fork"),
                             initializer=_worker_init, initargs=(0,)) as pool:
        return list(pool.map(fn, jobs))


def _chunks(items: Sequence[Any], n: int) -> list[list[Any]]:
    return [list(items[i:i + n]) for i in range(0, len(items), n)]


def probe_samples(root: str | os.PathLike, keys: Sequence[str], use_cache: bool | None = None) -> list[Any]:
    """Probe results of ``keys`` (see :func:`_probe_entry`), from the index cache where present; the rest
    are probed over all cores and added to the cache (``paperkit.cache``)."""
    from paperkit import cache
    root = Path(root)
    use_cache = cache.enabled(cache.INDEX_ENV) if use_cache is None else use_cache
    table = cache.ProbeTable(root, READER_VERSION) if use_cache else None
    todo = [k for k in dict.fromkeys(keys) if table is None or k not in table]
    new: dict[str, Any] = {}
    if todo:
        if len(todo) >= POOL_MIN:
            size = max(32, min(512, len(todo) // (4 * (os.cpu_count() or 1)) + 1))
            parts = _pool_map(_probe_chunk, [(str(root), c) for c in _chunks(todo, size)])
            new = dict(zip(todo, (r for part in parts for r in part)))
        else:
            new = {k: _probe_entry(root, k) for k in todo}
        if table is not None:
            table.add(new)
    if table is None:
        return [new[k] for k in keys]
    return [new[k] if k in new else table[k] for k in keys]


def _u32(seed: int) -> int:
    """Seeds as SeedSequence entries (non-negative): negative user seeds map to distinct valid ones."""
    return int(seed) & 0xFFFFFFFF


def subsample(samples: Sequence[Sample], limit: int | None, seed: int) -> list[Sample]:
    """A deterministic seeded subset of at most ``limit`` samples, in the original order."""
    if limit is None or limit >= len(samples):
        return list(samples)
    keep = np.sort(np.random.default_rng([_u32(seed), 7919]).permutation(len(samples))[:max(0, int(limit))])
    return [samples[i] for i in keep]


def load_index(root: str | os.PathLike, split: str, protocol: str = "intra_test", domain: str | None = None,
               limit: int | None = None, seed: int = 0) -> Index:
    """All usable samples of a split (sorted by path) with box information and problem counts.

    ``limit`` caps the number of label entries (seeded, deterministic) *before* the images are probed, so a
    small run on the 600k-image real dataset does not stat every file."""
    from paperkit import cache
    root = Path(root)
    table = cache.ProbeTable(root, READER_VERSION) if cache.enabled(cache.INDEX_ENV) else None
    what = ("load_index", split, protocol, domain, None if limit is None else int(limit), int(seed))
    hit = table.result(what) if table is not None else None
    if hit is not None:
        for msg in hit["warnings"]:   # the warnings the build logged: a warm index says the same
            log.warning("%s", msg)
        return Index(hit["samples"], hit["problems"], hit["examples"], hit["entries"])
    with _capture_warnings() as said:
        labels = read_labels(root, split, protocol, domain)
        screen = screen_labels(root, split, labels, protocol, domain)
        samples = subsample(_samples_from_labels(root, split, screen.labels), limit, seed)
        index = check_samples(root, samples, screen, use_cache=table is not None)
        index.entries = len(labels)
    if table is not None:
        table.store_result(what, {"samples": list(index), "problems": index.problems, "examples": index.examples,
                                  "entries": index.entries, "warnings": said})
    return index


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _capture_warnings() -> Iterator[list[str]]:
    """Collect the warnings this module logs (they are still logged), to replay them from the cache."""
    h = _Capture()
    old, propagate = log.level, log.propagate
    if log.getEffectiveLevel() > logging.WARNING:   # the caller silenced them: capture, but show nothing
        log.setLevel(logging.WARNING)
        log.propagate = False
    log.addHandler(h)
    try:
        yield h.messages
    finally:
        log.removeHandler(h)
        log.setLevel(old)
        log.propagate = propagate


def split_by_subject(samples: Sequence[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Seeded subject-disjoint train/val split (a per-image split leaks identities into validation)."""
    subjects = sorted({s.subject for s in samples})
    if len(subjects) < 2 or val_fraction <= 0:
        if val_fraction > 0:
            log.warning("only %d subject(s): validation split is empty", len(subjects))
        return list(samples), []
    n_val = min(len(subjects) - 1, max(1, int(round(len(subjects) * val_fraction))))
    order = np.random.default_rng([_u32(seed), 104729]).permutation(len(subjects))
    val_subjects = {subjects[i] for i in order[:n_val]}
    return ([s for s in samples if s.subject not in val_subjects],
            [s for s in samples if s.subject in val_subjects])


# --------------------------------------------------------------------------------------------------
# Images: decode, crop, augment, preprocess
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


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] == size and img.shape[1] == size:
        return img
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def _window(lo: int, side: int, n: int) -> tuple[int, int, int, int, int]:
    """Source range [a, b) and pads so that pad_lo + (b - a) + pad_hi covers [lo, lo + side) with exact
    reflect-101 of the full image (the source is widened so reflected pixels come from the image, not
    from the crop's own edge)."""
    hi = lo + side
    pad_lo, pad_hi = max(0, -lo), max(0, hi - n)
    a = max(0, min(lo, n - 1 - pad_hi))
    b = min(n, max(hi, pad_lo + 1))
    return a, b, pad_lo, pad_hi, lo - (a - pad_lo)


def crop_face(image_rgb: np.ndarray, box_xywh_pixels: Sequence[float] | None, size: int) -> np.ndarray:
    """Square face crop: side 1.5 x max(w, h) around the box centre, reflect-101 padding where the square
    leaves the image, resized to ``size`` (INTER_AREA when shrinking, bilinear when enlarging).
    ``box=None`` (or a degenerate box) -> the largest centred square (the problem-box fallback)."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"crop_face expects an RGB uint8 [H,W,3] array, got {image_rgb.dtype} {image_rgb.shape}")
    H, W = image_rgb.shape[:2]
    if box_xywh_pixels is None or min(box_xywh_pixels[2], box_xywh_pixels[3]) <= 0:
        side = min(H, W)
        y0, x0 = (H - side) // 2, (W - side) // 2
        return _resize(image_rgb[y0:y0 + side, x0:x0 + side], size)
    x, y, w, h = (float(v) for v in box_xywh_pixels)
    side = max(1, int(round(CROP_SCALE * max(w, h))))
    x0 = int(math.floor(x + w / 2 - side / 2))
    y0 = int(math.floor(y + h / 2 - side / 2))
    if x0 >= 0 and y0 >= 0 and x0 + side <= W and y0 + side <= H:
        return _resize(image_rgb[y0:y0 + side, x0:x0 + side], size)
    ax, bx, pl, pr, ox = _window(x0, side, W)
    ay, by, pt, pb, oy = _window(y0, side, H)
    padded = cv2.copyMakeBorder(image_rgb[ay:by, ax:bx], pt, pb, pl, pr, cv2.BORDER_REFLECT_101)
    return _resize(padded[oy:oy + side, ox:ox + side], size)


def preprocess(rgb_uint8_face_crop: np.ndarray, size: int) -> torch.Tensor:
    """RGB uint8 crop -> FloatTensor[3, size, size] normalised with MEAN/STD (shared with predict/export,
    so training and deployment see identical inputs)."""
    img = rgb_uint8_face_crop
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"preprocess expects an RGB uint8 [H,W,3] array, got {img.dtype} {img.shape}")
    img = _resize(img, size)
    scale = np.array([1.0 / (255.0 * s) for s in STD], np.float32)
    shift = np.array([m / s for m, s in zip(MEAN, STD)], np.float32)
    chw = np.ascontiguousarray((img.astype(np.float32) * scale - shift).transpose(2, 0, 1))
    return torch.from_numpy(chw)


def _adjust_hue(img: np.ndarray, shift: float) -> np.ndarray:
    """Hue rotation by ``shift`` turns (|shift| <= 0.5) in OpenCV's 8-bit full-range HSV: ~20x faster
    than torchvision's float HSV round trip on uint8 crops, and within one hue step of it."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL)
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(round(shift * 256))).astype(np.uint8)  # wraps mod 256
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)


def color_jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness/contrast/saturation/hue jitter in random order (as torchvision's ColorJitter).

    Brightness, contrast and saturation use torchvision.transforms.v2's maintained functional ops on a
    uint8 tensor; hue uses OpenCV's HSV (torchvision's hue op costs ~3 ms per 128 px crop, more than the
    rest of the pipeline). Factors come from our per-sample generator so an augmented sample is
    reproducible from (seed, epoch, index) whatever the worker layout."""
    from torchvision.transforms.v2 import functional as TF
    ops = [(name, float(rng.uniform(1 - JITTER[name], 1 + JITTER[name])))
           for name in ("brightness", "contrast", "saturation") if JITTER[name] > 0]
    if JITTER["hue"] > 0:
        ops.append(("hue", float(rng.uniform(-JITTER["hue"], JITTER["hue"]))))
    fns = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast, "saturation": TF.adjust_saturation}
    out = np.ascontiguousarray(img)
    t = None   # tensor view while consecutive torchvision ops run, converted back only for hue
    for i in rng.permutation(len(ops)):
        name, f = ops[i]
        if name == "hue":
            if t is not None:
                out, t = t.permute(1, 2, 0).contiguous().numpy(), None
            out = _adjust_hue(out, f)
        else:
            if t is None:
                t = torch.from_numpy(out).permute(2, 0, 1)
            t = fns[name](t, f)
    if t is not None:
        out = t.permute(1, 2, 0).contiguous().numpy()
    return out


_SHOT_SIGMA = (2.0 + 0.6 * np.sqrt(np.arange(256, dtype=np.float32))).astype(np.float32)  # per luma level


def iso_noise(img: np.ndarray, rng: np.random.Generator, intensity: float, color_shift: float) -> np.ndarray:
    """Camera sensor (ISO) noise, written here because no maintained implementation is installed.

    Luminance noise = read-noise floor + photon shot noise whose std grows with sqrt(signal) (a lookup on
    the pixel's luma, in 8-bit levels, times ``intensity``), identical in the three channels; chroma noise
    = independent per-channel noise of std ``color_shift`` x 127.5 generated at half resolution and
    upsampled, because demosaicing makes real colour noise blotchy rather than per-pixel."""
    h, w = img.shape[:2]
    lum = rng.standard_normal((h, w), dtype=np.float32)
    lum *= _SHOT_SIGMA[cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)]
    lum *= intensity
    chroma = rng.standard_normal(((h + 1) // 2, (w + 1) // 2, 3), dtype=np.float32)
    x = cv2.resize(chroma, (w, h), interpolation=cv2.INTER_LINEAR)
    x *= color_shift * 127.5
    x += lum[..., None]
    x += img
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def augment(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Training transforms of seed 000 on a face crop: colour jitter, ISO noise (p=0.5), horizontal flip."""
    out = color_jitter(crop, rng)
    if rng.random() < ISO_NOISE_P:
        out = iso_noise(out, rng, float(rng.uniform(*ISO_INTENSITY)), float(rng.uniform(*ISO_COLOR_SHIFT)))
    if rng.random() < FLIP_P:
        out = np.ascontiguousarray(out[:, ::-1])
    return out


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Per-sample generator keyed by (seed, epoch, index): independent of worker count and order."""
    return np.random.default_rng([_u32(seed), int(epoch), int(index)])


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


def _crop_jpeg(root: Path, s: Sample, size: int) -> np.ndarray:
    """Decode + crop + resize of one sample from its image file (the reference every cache reproduces)."""
    img = decode_image(root / s.path, check_header=s.box_problem == "unchecked")
    return crop_face(img, _box_of(root, s, img.shape[1], img.shape[0]), size)


class FaceDataset(Dataset):
    """Face crops of a sample list. ``__getitem__`` takes an int (uses ``self.epoch``) or ``(index, epoch)``
    (what :class:`EpochSampler` yields, so augmentation follows the epoch even in persistent workers) and
    returns ``(FloatTensor[3,size,size], label, LongTensor[7] cues)``.

    Crops come from the crop cache of (root, size) when one has been built (:func:`ensure_crop_cache`,
    which :func:`make_loaders` calls; ``crop_cache=False`` or ``PAPERKIT_CROP_CACHE=0`` turn it off), else
    from the image files; augmentation runs on the crop either way, so items are identical. An image
    that changed on disk after it was indexed (size or mtime) is probed again; one that no longer decodes,
    or vanished, is replaced by the next sample, warned about once and counted in ``runtime_failures``
    (shared across DataLoader workers; :meth:`failure_report` says it in words)."""

    def __init__(self, root: str | os.PathLike, samples: Sequence[Sample], size: int = 128, train: bool = False,
                 seed: int = 0, crop_cache: bool | None = None) -> None:
        self.root = Path(root)
        self.samples = list(samples)
        self.size = int(size)
        self.train = bool(train)
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
                self._crops = open_crop_cache(self.root, self.size) or False
        return self._crops or None

    def load_crop(self, index: int) -> np.ndarray:
        """Decoded, cropped, resized (not augmented) RGB uint8 face of sample ``index``."""
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
                    return row
            if s.stamp is not None and now != s.stamp:   # replaced or truncated since indexing: check again
                status, _, why = probe_image(path)
                if status != "ok":
                    raise ImageError(f"image {path} changed on disk after it was indexed and no longer "
                                     f"decodes ({why})")
                s = replace(s, box=None, box_problem="unchecked")   # its size may differ: re-read the box
        return _crop_jpeg(self.root, s, self.size)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int, torch.Tensor]:
        index, epoch = (int(item[0]), int(item[1])) if isinstance(item, tuple) else (int(item), self.epoch)
        n = len(self.samples)
        for attempt in range(min(n, 16)):
            i = (index + attempt) % n
            try:
                crop = self.load_crop(i)
                break
            except ImageError as e:
                self._failures.add(self.samples[i].path)
                if self.samples[i].path not in self._warned:
                    self._warned.add(self.samples[i].path)
                    log.warning("%s; using the next sample instead", e)
        else:
            raise ImageError(f"16 consecutive images failed to decode near index {index} of {self.root}")
        if self.train:
            crop = augment(crop, sample_rng(self.seed, epoch, i))
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


def crop_key(root: str | os.PathLike, size: int) -> str:
    from paperkit import cache
    table = cache.ProbeTable(root, READER_VERSION)
    return cache._sha({"index": table.key, "size": int(size), "scale": CROP_SCALE, "frame": BB_FRAME,
                       "reader": READER_VERSION}, 16)


def open_crop_cache(root: str | os.PathLike, size: int) -> Any:
    """The built crop cache of (root, size), or None (not built, turned off, or stale)."""
    from paperkit import cache
    if not cache.enabled(cache.CROP_ENV):
        return None
    root = Path(root).resolve()
    key = crop_key(root, size)
    memo = (str(root), int(size), key)
    if memo not in _OPEN_CROPS:
        c = cache.CropCache.open(root, key)
        if c is None:
            return None
        _OPEN_CROPS.clear()   # one root/size at a time is the common case; do not pin old maps
        _OPEN_CROPS[memo] = c
    return _OPEN_CROPS[memo]


def _crop_rows(args: tuple[str, str, int, int, list[Sample]]) -> list[tuple[int, int] | None]:
    """Pool job: crop ``samples`` into rows ``start..`` of the temp array; per row the image's stamp, or
    None when the image fails or changed since indexing (that row is never served)."""
    root, npy, start, size, samples = args
    arr = np.load(npy, mmap_mode="r+")
    out: list[tuple[int, int] | None] = []
    for j, s in enumerate(samples):
        path = Path(root) / s.path
        before = _stamp(path)
        try:
            crop = _crop_jpeg(Path(root), s, size) if before is not None and before == (s.stamp or before) else None
        except ImageError:
            crop = None
        if crop is None or _stamp(path) != before:
            out.append(None)
            continue
        arr[start + j] = crop
        out.append(before)
    arr.flush()
    del arr
    return out


def ensure_crop_cache(root: str | os.PathLike, size: int, protocol: str = "intra_test",
                      limit_bytes: int | None = None) -> Any:
    """Open, or build once, the crop cache of every indexed image of ``root`` (both splits) at ``size``.

    Returns None (the JPEG path is used) when turned off (``PAPERKIT_CROP_CACHE=0``) or when the array
    would exceed ``limit_bytes`` (default ``PAPERKIT_CROP_CACHE_GB``, 8 GB: 600k CelebA-Spoof crops at
    128 px take 29 GB). The build decodes over all cores into temp files renamed when complete."""
    from paperkit import cache
    if not cache.enabled(cache.CROP_ENV):
        return None
    root = Path(root).resolve()
    c = open_crop_cache(root, size)
    if c is not None:
        return c
    limit = cache.crop_limit_bytes() if limit_bytes is None else int(limit_bytes)
    row_bytes = int(size) * int(size) * 3
    entries = sum(len(read_labels(root, sp, protocol)) for sp in SPLITS)
    if entries * row_bytes > limit:
        log.info("crop cache of %s at %d px would take %.1f GB > %.1f GB (%s); reading the image files",
                 root, size, entries * row_bytes / 1024 ** 3, limit / 1024 ** 3, cache.CROP_LIMIT_ENV)
        return None
    key = crop_key(root, size)
    folder, npy, side = cache.CropCache.paths_for(root, key)
    with cache.folder_lock(folder):   # a concurrent builder finished meanwhile: use its cache
        c = cache.CropCache.open(root, key)
        if c is not None:
            return c
        samples = sorted({s.path: s for sp in SPLITS for s in load_index(root, sp, protocol)}.items())
        samples = [s for _, s in samples]
        n = len(samples)
        t0 = time.perf_counter()
        with cache.atomic_path(npy) as tmp:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(max(1, n), size, size, 3))
            arr.flush()
            del arr
            per = max(16, min(256, n // (4 * (os.cpu_count() or 1)) + 1))
            jobs = [(str(root), str(tmp), i, int(size), samples[i:i + per]) for i in range(0, n, per)]
            stamps = [st for part in (_pool_map(_crop_rows, jobs) if n >= POOL_MIN else map(_crop_rows, jobs))
                      for st in part]
        meta = {"key": key, "root": str(root), "size": int(size), "reader": READER_VERSION,
                "paths": [s.path for s in samples], "stamps": stamps,
                "boxes": [[list(s.box) if s.box is not None else None, s.box_problem] for s in samples],
                "built_s": round(time.perf_counter() - t0, 1)}
        payload = json.dumps(meta).encode()
        cache.atomic_write(side, lambda f: f.write(payload))   # the sidecar last: it makes the array valid
        cache.sweep(folder, keep=lambda p: key in p.name or p.name == "root.txt")
    cache.prune_roots("crops")
    log.info("crop cache: %d faces of %s at %d px in %.1f s (%s)", n, root, size, meta["built_s"], npy)
    return open_crop_cache(root, size)


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
        order = (np.random.default_rng([_u32(self.seed), epoch, 15485863]).permutation(self.n)
                 if self.shuffle else np.arange(self.n))
        return iter([(int(i), epoch) for i in order])


def _worker_init(_: int) -> None:
    # one thread per worker: workers are the parallelism; nested thread pools oversubscribe 2 cores
    torch.set_num_threads(1)  # (OpenCV is already single-threaded: see the import block)


def _loader(ds: FaceDataset, batch_size: int, workers: int, sampler: Sampler | None = None,
            drop_last: bool = False) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                      persistent_workers=workers > 0, worker_init_fn=_worker_init if workers > 0 else None,
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
    ds_train = FaceDataset(root, train, size, train=True, seed=seed)
    ds_train.problems = dict(pool.problems)
    ds_val = FaceDataset(root, val, size, train=False, seed=seed)
    ds_test = FaceDataset(root, test, size, train=False, seed=seed)
    ds_test.problems = dict(test.problems)
    if prof.max_train_images is None and prof.max_test_images is None:   # a capped run reads only its images
        ensure_crop_cache(root, size, protocol)
    return {
        "train": _loader(ds_train, bs, nw, EpochSampler(len(train), seed), drop_last=len(train) > bs),
        "val": _loader(ds_val, bs, nw),
        "test": _loader(ds_test, bs, nw),
    }


# --------------------------------------------------------------------------------------------------
# Summary, CLI helpers, benchmark
# --------------------------------------------------------------------------------------------------
def summary_by_split(root: str | os.PathLike, protocol: str = "intra_test") -> dict[str, dict[str, Any]]:
    """Per split: label-file counts (images, live, spoof, spoof_types) plus that split's problem counts
    under ``"problems"``. Raises DatasetError if ``root`` is not a CelebA-Spoof tree."""
    from paperkit import cache
    root = check_root(root)
    table = cache.ProbeTable(root, READER_VERSION) if cache.enabled(cache.INDEX_ENV) else None
    if table is not None:
        cached = table.summary(protocol)
        if cached is not None:
            return cached
    out: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        labels = read_labels(root, split, protocol)
        screen = screen_labels(root, split, labels, protocol)
        types: dict[int, int] = {}
        live = 0
        for v in screen.labels.values():
            live += v[43] == 0
            types[v[40]] = types.get(v[40], 0) + 1
        index = check_samples(root, _samples_from_labels(root, split, screen.labels), screen)
        out[split] = {"images": len(labels), "live": int(live), "spoof": len(screen.labels) - int(live),
                      "spoof_types": {str(k): types[k] for k in sorted(types)},
                      "problems": dict(index.problems), "examples": dict(index.examples)}
    if table is not None:
        table.store_summary(protocol, out)
    return out


def summary(root: str | os.PathLike, protocol: str = "intra_test") -> dict[str, Any]:
    """Counts of label-file entries per split and problem counts, exactly the shape of
    ``paperkit data summary --json``. Raises DatasetError if ``root`` is not a CelebA-Spoof tree."""
    per = summary_by_split(root, protocol)
    problems = {k: sum(d["problems"][k] for d in per.values()) for k in PROBLEM_KEYS}
    examples = {k: next(d["examples"][k] for d in per.values() if k in d["examples"])
                for k in PROBLEM_KEYS if problems[k]}
    return {"splits": {split: {k: v for k, v in d.items() if k not in ("problems", "examples")}
                       for split, d in per.items()},
            "problems": problems, "examples": examples}


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"{'split':<6} {'images':>8} {'live':>8} {'spoof':>8}  spoof types"]
    for split, d in s["splits"].items():
        types = ", ".join(f"{SPOOF_TYPE_NAMES.get(int(k), k)}={n}" for k, n in d["spoof_types"].items())
        lines.append(f"{split:<6} {d['images']:>8} {d['live']:>8} {d['spoof']:>8}  {types}")
    lines.append("problems: " + ", ".join(f"{k}={v}" for k, v in s["problems"].items()))
    for k, example in s.get("examples", {}).items():
        lines.append(f"  {k}: e.g. {example}")
    if s["problems"].get("split_overlap"):
        lines.append(f"WARNING: {s['problems']['split_overlap']} image(s) are listed in both train and test "
                     f"(train/test leakage, e.g. {s['examples']['split_overlap']}); they are dropped from train. "
                     "Fix the label files.")
    return "\n".join(lines)


def cli_summary(root: str | os.PathLike, as_json: bool = False) -> int:
    """`paperkit data summary --root ROOT [--json]`: 0 on success, 2 (message on stderr) on a bad root."""
    level = log.level
    log.setLevel(logging.ERROR)  # the problem counts are the output; no duplicate warning on stderr
    try:
        s = summary(root)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        log.setLevel(level)
    print(json.dumps(s, indent=2) if as_json else format_summary(s))
    return 0


def bench_loading(root: str | os.PathLike | None = None, size: int = 128, n: int = 512, workers: int = 2,
                  batch_size: int = 32, seed: int = 0) -> dict[str, Any]:
    """Throughput of the training input pipeline (decode + crop + augment + normalise) in images/s:
    single process (with a per-stage breakdown) and through a DataLoader with ``workers`` processes."""
    root = resolve_root(root, "default", seed) if (root is None or str(root) == "") else check_root(root)
    index = load_index(root, "train", limit=n, seed=seed)
    ds = FaceDataset(root, index, size, train=True, seed=seed)
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
