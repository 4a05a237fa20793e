"""The index of a CelebA-Spoof split: which label-file entries are usable, with their boxes and problem counts.

:func:`load_index` reads a split's labels (:mod:`paperkit.celeba`), applies the label rules
(:func:`screen_labels`), probes every image and ``_BB.txt`` (:func:`check_samples`) and returns an
:class:`Index` of :class:`Sample`; :func:`summary` counts the same for ``paperkit data summary``.

In ``summary()``, ``images`` counts every label-file entry; ``live``, ``spoof`` and ``spoof_types`` count
the entries that pass the label checks (so ``images - live - spoof`` = that split's ``label_conflict`` +
``bad_spoof_type`` + ``split_overlap``); ``examples`` names one file per problem kind.

Index cache (:mod:`paperkit.cache`): the index (every image probed, every box read) is built once per data
root and label-file state, over all cores, and kept under the paperkit cache folder: a warm
``load_index`` or ``summary`` reads no image. Each indexed image's size and mtime are kept with it, so an
image replaced or truncated after indexing is noticed when it is loaded (probed again by
:class:`paperkit.data.FaceDataset`). ``PAPERKIT_INDEX_CACHE=0`` turns it off.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from paperkit.cues import CUE_NAMES
from paperkit.celeba import (BB_FRAME, ENVIRONMENT, ILLUMINATION, LABEL_PROBLEM_KEYS, LIVE_SPOOF,
                             PROBLEM_KEYS, SPLITS, SPOOF_TYPE, SPOOF_TYPE_NAMES, DatasetError, bb_path, box_to_pixels,
                             check_root, derived_cues, key_folder, key_subject, label_file, read_box, read_labels,
                             side_cues, side_samples)

# The dataset reader's one logger (index, loaders): callers silence or capture it by this name.
log = logging.getLogger("paperkit.data")

MAX_PIXELS = 50_000_000        # header-declared pixel limit (decompression-bomb guard)
READER_VERSION = 2             # bump when what the index or a crop holds changes: every cache is rebuilt
                               # (2: Sample moved from paperkit.data to paperkit.index; old pickles name it)
POOL_MIN = 256                 # fewer entries than this are probed / cropped in-process (no pool start-up)


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
        stype, flag = v[SPOOF_TYPE], v[LIVE_SPOOF]
        folder = key_folder(key)
        if not 0 <= stype < len(SPOOF_TYPE_NAMES):
            note("bad_spoof_type", key, f"spoof type [{SPOOF_TYPE}] = {stype}, expected 0-{len(SPOOF_TYPE_NAMES) - 1}")
            continue
        folder_flag = {"live": 0, "spoof": 1}.get(folder)
        if (stype == 0) != (flag == 0) or (folder_flag is not None and folder_flag != flag):
            note("label_conflict", key, f"folder {folder}/, live/spoof flag [{LIVE_SPOOF}] = {flag}, "
                                        f"spoof type [{SPOOF_TYPE}] = {stype}")
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
    side = side_samples(root)
    cues = side_cues(root)
    out = []
    for key in sorted(labels):
        v = labels[key]
        meta = side.get(key, {})
        label, stype, illum = int(v[LIVE_SPOOF]), int(v[SPOOF_TYPE]), int(v[ILLUMINATION])
        out.append(Sample(path=key, split=split, subject=key_subject(key), label=label, spoof_type=stype,
                          illumination=illum, environment=int(v[ENVIRONMENT]), domain=str(meta.get("domain", "")),
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
                    "skipped, train/test overlap -> dropped from train (see paperkit.celeba)",
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


def worker_init(_: int) -> None:
    """One torch thread per worker process: workers are the parallelism; nested pools oversubscribe 2 cores
    (OpenCV is kept single-threaded by :mod:`paperkit.data`)."""
    torch.set_num_threads(1)


def pool_map(fn: Any, jobs: list[Any], workers: int | None = None) -> list[Any]:
    """``[fn(j) for j in jobs]``, in order, over a fork process pool using every core (CPU-bound decoding
    holds the GIL; threads would not scale). Serial inside a daemonic process (a DataLoader worker) or
    where fork is unavailable."""
    import multiprocessing as mp
    workers = workers or os.cpu_count() or 1
    if workers < 2 or len(jobs) < 2 or mp.current_process().daemon or "fork" not in mp.get_all_start_methods():
        return [fn(j) for j in jobs]
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("fork"),
                             initializer=worker_init, initargs=(0,)) as pool:
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
            parts = pool_map(_probe_chunk, [(str(root), c) for c in _chunks(todo, size)])
            new = dict(zip(todo, (r for part in parts for r in part)))
        else:
            new = {k: _probe_entry(root, k) for k in todo}
        if table is not None:
            table.add(new)
    if table is None:
        return [new[k] for k in keys]
    return [new[k] if k in new else table[k] for k in keys]


def seed_u32(seed: int) -> int:
    """Seeds as SeedSequence entries (non-negative): negative user seeds map to distinct valid ones."""
    return int(seed) & 0xFFFFFFFF


def subsample(samples: Sequence[Sample], limit: int | None, seed: int) -> list[Sample]:
    """A deterministic seeded subset of at most ``limit`` samples, in the original order."""
    if limit is None or limit >= len(samples):
        return list(samples)
    keep = np.sort(np.random.default_rng([seed_u32(seed), 7919]).permutation(len(samples))[:max(0, int(limit))])
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
    order = np.random.default_rng([seed_u32(seed), 104729]).permutation(len(subjects))
    val_subjects = {subjects[i] for i in order[:n_val]}
    return ([s for s in samples if s.subject not in val_subjects],
            [s for s in samples if s.subject in val_subjects])




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
            live += v[LIVE_SPOOF] == 0
            types[v[SPOOF_TYPE]] = types.get(v[SPOOF_TYPE], 0) + 1
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
