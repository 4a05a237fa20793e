"""CelebA-Spoof facts in one place: folder layout, label positions and codes, the data-problem kinds, and
the readers of label files and ``_BB.txt`` boxes (with the errors that name the file and the fix).

paperkit's embedded synthetic dataset is written in the identical layout, so everything downstream goes
through these readers whichever dataset is used. Light on purpose (no torch, no OpenCV): the results
summary and the CLI read the names without starting the training stack.

Layout read (docs/design.md section 2)::

    ROOT/Data/{train,test}/<subject>/{live,spoof}/<6 digits>.{jpg,png}   + sibling <stem>_BB.txt
    ROOT/metas/intra_test/{train,test}_label.json    {"Data/...": [44 ints]}
    ROOT/metas/paperkit/attack_cues.json, samples.json, ROOT/metas/protocol_domain/*   (optional, synthetic)

Problem handling (the policy the README quotes). Real CelebA-Spoof files contain all of these; each is
counted under the key of ``summary()["problems"]`` (:mod:`paperkit.index`), logged once per index with an
example file, and never crashes an epoch:

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

"Centre crop" is the largest centred square of the image (a box-free guess that keeps the face of a
portrait-style capture); "skipped" means the sample is left out of the index at load time, so an epoch
never meets it.

Structural errors are *not* skipped, they stop with a :class:`DatasetError` naming the file and the fix:
a root that is not a CelebA-Spoof tree, malformed JSON, a label that is not 44 integers, a key that is not
a relative ``Data/...`` path inside the root (``../`` escapes, absolute paths).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path, PurePosixPath
from typing import Any

from paperkit.cues import CUE_NAMES   # attack cues of the distillation study (metas/paperkit/attack_cues.json)

# ---------------------------------------------------------------------------------------- label vector
# Positions in the 44-integer label of ``*_label.json`` (0-39 are the CelebA face attributes, unused here).
SPOOF_TYPE = 40                # 0 = live, 1-10 = attack type (SPOOF_TYPE_NAMES)
ILLUMINATION = 41              # ILLUMINATION_NAMES
ENVIRONMENT = 42               # ENVIRONMENT_NAMES
LIVE_SPOOF = 43                # 0 = live, 1 = spoof
NUM_LABELS = 44

SPOOF_TYPE_NAMES = {0: "Live", 1: "Photo", 2: "Poster", 3: "A4", 4: "Face Mask", 5: "Upper Body Mask",
                    6: "Region Mask", 7: "PC", 8: "Pad", 9: "Phone", 10: "3D Mask"}
ILLUMINATION_NAMES = {0: "Live", 1: "Normal", 2: "Strong", 3: "Back", 4: "Dark"}
ENVIRONMENT_NAMES = {0: "Live", 1: "Indoor", 2: "Outdoor"}
PRINT_TYPES = frozenset({1, 2, 3})   # CelebA-Spoof codes that are prints -> cue "print" on real data
SCREEN_TYPES = frozenset({7, 8, 9})  # replay on PC / pad / phone -> cue "screen" on real data
MASK_TYPES = frozenset({4, 5, 6})    # face / upper-body / region paper masks -> cue "cutout"
DARK = 4                             # CelebA-Spoof illumination code for dark scenes

# ---------------------------------------------------------------------------------------- layout
SPLITS = ("train", "test")
# A label-file key is Data/<split>/<subject>/<live|spoof>/<image>: these are its parts' positions.
KEY_SUBJECT = 2
KEY_FOLDER = 3
BB_FRAME = 224                 # _BB.txt coordinates live in a 224x224 frame
TINY_BB_PX = 3                 # w or h below this (pixels, after clipping) -> tiny_bb

# ---------------------------------------------------------------------------------------- problem kinds
PROBLEM_KEYS = ("missing_bb", "empty_bb", "negative_bb", "tiny_bb", "unreadable_image", "missing_image",
                "label_conflict", "bad_spoof_type", "split_overlap")
LABEL_PROBLEM_KEYS = ("bad_spoof_type", "label_conflict", "split_overlap")   # decided from the label files

EXPECTED_LAYOUT = (
    "expected a CelebA-Spoof tree: ROOT/Data/{train,test}/<subject>/{live,spoof}/<id>.jpg|png with "
    "sibling <id>_BB.txt, and ROOT/metas/intra_test/{train,test}_label.json "
    "(or leave data_root empty to use the embedded synthetic dataset)"
)


class DatasetError(ValueError):
    """The dataset (root, label file, key or image) is not what the reader needs; the message says why."""


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



def read_json(path: Path) -> Any:
    """A metas JSON file, or a DatasetError naming the file (unreadable, or not JSON: re-extract it)."""
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
    if value[LIVE_SPOOF] not in (0, 1):
        raise DatasetError(f"{file}: label for key {key!r} has live/spoof flag [{LIVE_SPOOF}] = {value[LIVE_SPOOF]}, "
                           "expected 0 or 1")
    return value


def label_file(root: Path, split: str, protocol: str = "intra_test", domain: str | None = None) -> Path:
    """Where a split's labels live: ``metas/<protocol>/<split>_label.json``, or the cross-domain file."""
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
    data = read_json(file)
    if not isinstance(data, dict):
        raise DatasetError(f"{file}: expected a JSON object mapping image paths to 44-integer labels, "
                           f"got {type(data).__name__}")
    out = {}
    for key, value in data.items():
        _check_key(key, file)
        out[key] = _check_label(key, value, file)
    if filter_domain is not None:
        side = side_samples(root)
        if not side:
            raise DatasetError(f"domain {domain!r} requested but neither "
                               f"{label_file(root, split, protocol, domain)} nor metas/paperkit/samples.json exists")
        out = {k: v for k, v in out.items() if side.get(k, {}).get("domain") == filter_domain}
    return out


def side_samples(root: Path) -> dict[str, dict[str, str]]:
    """``metas/paperkit/samples.json`` (capture domain and video per key; synthetic data only), or {}."""
    f = root / "metas" / "paperkit" / "samples.json"
    if not f.is_file():
        return {}
    data = read_json(f)
    if not isinstance(data, dict):
        raise DatasetError(f"{f}: expected an object {{path: {{'domain': .., 'video': ..}}}}")
    return data


def side_cues(root: Path) -> dict[str, tuple[int, ...]]:
    """``metas/paperkit/attack_cues.json`` (labelled cues per key; synthetic data only), or {}."""
    f = root / "metas" / "paperkit" / "attack_cues.json"
    if not f.is_file():
        return {}
    data = read_json(f)
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
    """The ``<stem>_BB.txt`` box file beside an image."""
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



def key_subject(key: str) -> str:
    """The subject folder of a label-file key (``Data/<split>/<subject>/...``)."""
    return PurePosixPath(key).parts[KEY_SUBJECT]


def key_folder(key: str) -> str:
    """The ``live`` or ``spoof`` folder of a label-file key."""
    return PurePosixPath(key).parts[KEY_FOLDER]
