"""Building the dataset on disk: rendering the planned jobs (in-process or in a spawn pool), writing the
CelebA-Spoof tree and its label files atomically, the per-profile cache folder, the generation benchmark
and ``paperkit data synth``.

Named ``builder`` rather than ``build`` so that ``paperkit.synth.build`` (the function every caller uses)
never shadows a module of the same name.
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import cv2

from paperkit import __version__ as _pkg_version
from paperkit.celeba import SPOOF_TYPE_NAMES
from paperkit.cues import CUE_NAMES
from paperkit.profiles import Profile, get_profile

from . import backgrounds
from .frame import BOX_ATTEMPTS, BOX_MIN_INSIDE, BOX_MIN_SIDE, FACE_MIN_SNR, FACE_MIN_STD, render_frame
from .photos import PhotoFace, load_face_photos
from .plan import Job, plan_jobs
from .scene import in_process, init_worker

VERSION = "6"  # bump whenever the output changes: it keys the cache folder
GENERATOR = "paperkit.synth"
MARKER = "PAPERKIT_SYNTHETIC.json"  # == paperkit.results.SYNTH_MARKER
WORKERS = 2                 # processes for build(); PAPERKIT_SYNTH_WORKERS overrides; 1 = in-process
MIN_IMAGES_FOR_POOL = 400   # below this a pool's start-up costs more than it saves


# ----------------------------------------------------------------------------------------------
# Rendering the jobs

def _work(args: tuple[Job, int, int]) -> dict:
    job, seed, n = args
    return render_frame(job, seed, n)


def _run(jobs: list[Job], seed: int, n: int, photos: list[list[PhotoFace]] | None, workers: int) -> Iterator[dict]:
    """Rendered jobs, in job order."""
    if workers <= 1 or len(jobs) < MIN_IMAGES_FOR_POOL:
        with in_process(photos):
            for j in jobs:
                yield render_frame(j, seed, n)
        return
    with _pool_context().Pool(workers, initializer=init_worker, initargs=(photos,)) as pool:
        yield from pool.imap(_work, ((j, seed, n) for j in jobs), chunksize=16)


def _pool_context() -> Any:
    """spawn, never fork: a forked child inherits OpenCV's (and torch's) thread pools mid-state and can
    hang on its first parallel call (seen here). Scripts that call build() must therefore use the
    `if __name__ == "__main__":` guard; the console script, `python -m paperkit` and notebooks are fine."""
    return mp.get_context("spawn")


def _n_workers() -> int:
    env = os.environ.get("PAPERKIT_SYNTH_WORKERS")
    if env:
        return max(1, int(env))
    return max(1, min(WORKERS, os.cpu_count() or 1))


# ----------------------------------------------------------------------------------------------
# Writing the tree

def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=None, sort_keys=True, separators=(",", ":")) + "\n")


def _write_images(tmp: Path, jobs: list[Job], rendered: Iterable[dict]) -> dict[str, dict]:
    """Each image and its ``_BB.txt`` in job order; returns the label maps the metas are written from."""
    labels: dict[str, dict[str, list[int]]] = {"train": {}, "test": {}}
    cue_labels: dict[str, list[int]] = {}
    samples: dict[str, dict[str, str]] = {}
    dom_labels: dict[str, dict[str, list[int]]] = {f"{d}_{s}": {} for d in "AB" for s in ("train", "test")}
    made = set()
    box_check = {"regenerated": 0, "dropped": 0, "dropped_files": []}
    for job, res in zip(jobs, rendered):
        box_check["regenerated"] += int(res.get("attempts", 1) > 1)
        if res.get("dropped"):
            box_check["dropped"] += 1
            box_check["dropped_files"].append(f"{job.split}/{job.subject_id}/{job.stem}")
            continue
        rel_dir = f"Data/{job.split}/{job.subject_id}/{'live' if job.live else 'spoof'}"
        if rel_dir not in made:
            (tmp / rel_dir).mkdir(parents=True, exist_ok=True)
            made.add(rel_dir)
        rel = f"{rel_dir}/{job.stem}.jpg"
        (tmp / rel).write_bytes(res["jpeg"])
        (tmp / f"{rel_dir}/{job.stem}_BB.txt").write_text(res["bb"])
        labels[job.split][rel] = res["label"]
        cue_labels[rel] = res["cues"]
        dom = job.session["domain"]
        samples[rel] = {"domain": dom, "video": f"{job.split}/{job.subject_id}/{job.session['video']}"}
        dom_labels[f"{dom}_{job.split}"][rel] = res["label"]
    return {"labels": labels, "cues": cue_labels, "samples": samples, "domains": dom_labels, "box_check": box_check}


def _write_metas(tmp: Path, maps: dict[str, dict]) -> None:
    """The CelebA-Spoof label files, the cross-domain protocol and paperkit's side files (cues, samples)."""
    for split in ("train", "test"):
        _write_json(tmp / "metas" / "intra_test" / f"{split}_label.json", maps["labels"][split])
    for k, v in maps["domains"].items():
        _write_json(tmp / "metas" / "protocol_domain" / f"{k}_label.json", v)
    _write_json(tmp / "metas" / "paperkit" / "attack_cues.json", {"cues": CUE_NAMES, "labels": maps["cues"]})
    _write_json(tmp / "metas" / "paperkit" / "samples.json", maps["samples"])


def _marker(prof: Any, seed: int, diff: float, n: int, n_id: int, labels: dict[str, dict[str, list[int]]],
            splits: dict[str, str], faces_dir: str | os.PathLike | None, names: list[str], no_face: int,
            box_check: dict | None = None) -> dict:
    """The marker file's contents: what was built, from what, and how many of each."""
    counts = {s: {"images": len(labels[s]), "live": sum(1 for v in labels[s].values() if v[43] == 0),
                  "spoof": sum(1 for v in labels[s].values() if v[43] == 1),
                  "subjects": sum(1 for x in splits.values() if x == s)} for s in ("train", "test")}
    return {
        "generator": GENERATOR, "version": VERSION, "paperkit_version": _pkg_version, "seed": int(seed),
        "profile": prof.name, "difficulty": diff, "image_size": n, "identities": n_id,
        "live_per_identity": int(prof.synth_live_per_identity),
        "spoof_per_identity": int(prof.synth_spoof_per_identity),
        "counts": counts, "source": "faces_dir" if faces_dir is not None else "procedural",
        "faces_dir": str(faces_dir) if faces_dir is not None else None, "faces_without_face": no_face,
        "face_names": names, "backgrounds": backgrounds.bundled()[2], "cues": CUE_NAMES,
        "spoof_types": {str(k): v for k, v in SPOOF_TYPE_NAMES.items()},
        "domains": {"A": "phone camera: sharp, warm, JPEG 80-95; more phone/pad/photo attacks",
                    "B": "laptop webcam: soft, noisy, cool, JPEG 55-82; more PC/A4/poster attacks"},
        "opencv": cv2.__version__,
        "box_check": {"rule": f"face box >= {BOX_MIN_INSIDE:.0%} inside the frame and sides >= {BOX_MIN_SIDE:.0%} "
                              f"of it, noise-free face luma std >= {FACE_MIN_STD:g} levels and >= "
                              f"{FACE_MIN_SNR:g}x the sensor noise in the box; else re-rendered (new frame "
                              f"draws), dropped after {BOX_ATTEMPTS} tries",
                      **(box_check or {"regenerated": 0, "dropped": 0, "dropped_files": []})},
    }


# ----------------------------------------------------------------------------------------------
# Public entry points

def build(out_dir: str | os.PathLike, profile: str | Profile = "default", seed: int = 0,
          faces_dir: str | os.PathLike | None = None, difficulty: float | None = None, progress: bool = True) -> Path:
    """Write the embedded dataset in CelebA-Spoof layout under `out_dir` and return it.

    The tree is built in a temporary sibling folder and renamed into place at the end, so an
    interrupted build never looks finished. `out_dir` must not exist or be empty.
    """
    prof = get_profile(profile)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty; choose a new --out folder or delete it")
    n = int(prof.synth_image_size)
    diff = float(prof.synth_difficulty if difficulty is None else difficulty)
    if not 0.0 <= diff <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {diff}")
    photos, names, no_face = None, [], 0
    if faces_dir is not None:
        photos, names, no_face = load_face_photos(faces_dir)
    n_id = len(photos) if photos is not None else int(prof.synth_identities)
    subject_ids = [str(i + 1) for i in range(n_id)]
    n_live, n_spoof = int(prof.synth_live_per_identity), int(prof.synth_spoof_per_identity)
    jobs, splits = plan_jobs(seed, n_id, n_live, n_spoof, diff, subject_ids, float(prof.synth_test_fraction))
    if faces_dir is not None and not any(s == "test" for s in splits.values()):
        print(f"paperkit synth: only {n_id} identity in {faces_dir}; the test split is empty "
              f"(add photos of at least 2 people for a subject-disjoint test split)", file=sys.stderr)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        it = _run(jobs, seed, n, photos, _n_workers())
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(it, total=len(jobs), desc=f"synth {getattr(profile, 'name', profile)} s{seed}", unit="img")
        maps = _write_images(tmp, jobs, it)
        _write_metas(tmp, maps)
        _write_json(tmp / MARKER, _marker(prof, seed, diff, n, n_id, maps["labels"], splits, faces_dir, names, no_face,
                                                 maps["box_check"]))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def cache_dir() -> Path:
    env = os.environ.get("PAPERKIT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "paperkit"


def synth_key(prof: Any) -> str:
    """Short hash of every `synth_*` profile field: a profile edited in place gets a new cache folder."""
    import hashlib
    fields = {k: v for k, v in sorted(prof.to_dict().items()) if k.startswith("synth_")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]


def default_root(profile: str | Profile = "default", seed: int = 0) -> Path:
    """The cached embedded dataset for (profile, seed), built on first use.

    Keyed by generator version, profile and seed; a finished tree always carries the marker file
    (the build renames a complete temp folder into place), so a killed build is rebuilt next time.
    """
    prof = get_profile(profile)
    root = cache_dir() / f"synth-v{VERSION}-{prof.name}-s{seed}-{synth_key(prof)}"
    if (root / MARKER).is_file():
        return root
    if root.exists():  # not ours or incomplete (should not happen with the atomic rename): rebuild
        shutil.rmtree(root)
    try:
        return build(root, profile=prof, seed=seed, progress=True)
    except FileExistsError:
        if (root / MARKER).is_file():  # another process finished first
            return root
        raise


def bench(profile: str = "default", n: int = 200, workers: int | None = None) -> dict:
    """Generation speed: render + camera + JPEG encode of `n` images of the profile through the same
    code path as build() (file writes excluded: I/O, not generation). Pool start-up is included.

    Reports wall-clock img/s and CPU-time img/s per core (the latter is what the machine can do when
    the cores are not shared with other jobs: x cores = the unshared figure)."""
    import resource
    prof = get_profile(profile)
    size = int(prof.synth_image_size)
    per = prof.synth_live_per_identity + prof.synth_spoof_per_identity
    n_id = max(1, math.ceil(n / per))
    jobs, _ = plan_jobs(0, n_id, prof.synth_live_per_identity, prof.synth_spoof_per_identity, prof.synth_difficulty,
                        [str(i + 1) for i in range(n_id)])
    jobs = jobs[:n]
    w = _n_workers() if workers is None else workers
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    if w > 1:
        pool = _pool_context().Pool(w, initializer=init_worker, initargs=(None,))
        try:
            n_bytes = sum(len(r["jpeg"]) for r in pool.imap(_work, ((j, 0, size) for j in jobs), chunksize=8))
        finally:
            pool.close()
            pool.join()
    else:
        n_bytes = sum(len(r["jpeg"]) for r in _run(jobs, 0, size, None, 1))
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
           + (c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime))
    return {"images": len(jobs), "seconds": round(dt, 3), "img_per_s": round(len(jobs) / dt, 1), "workers": w,
            "cpu_seconds": round(cpu, 3), "img_per_cpu_s": round(len(jobs) / max(cpu, 1e-9), 1),
            "image_size": size, "mean_jpeg_kb": round(n_bytes / len(jobs) / 1024, 1), "profile": prof.name}


def cli_synth(out: str, profile: str, seed: int, faces: str | None = None) -> int:
    """`paperkit data synth --out DIR --profile P [--seed N] [--faces DIR]`; returns the exit code."""
    try:
        t0 = time.perf_counter()
        root = build(out, profile=profile, seed=seed, faces_dir=faces, progress=True)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as e:
        print(f"paperkit data synth: {e}", file=sys.stderr)
        return 2
    meta = json.loads((root / MARKER).read_text())
    c = meta["counts"]
    print(f"wrote {c['train']['images']} train + {c['test']['images']} test images "
          f"({meta['identities']} identities) to {root} in {time.perf_counter() - t0:.1f}s")
    return 0
