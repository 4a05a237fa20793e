"""Caches that stop paperkit redoing work: the index of a data root and its face crops.

Both live under the paperkit cache folder (``PAPERKIT_CACHE``, default ``~/.cache/paperkit``, the folder
of the embedded dataset) and follow one rule: a cache file is written under a temp name in its final
folder and renamed into place only when complete, so a killed run leaves at most a ``.tmp`` file that no
later run reads (stale temp files are swept). A cache file that does not load (foreign, corrupt) is
ignored and rebuilt, never trusted.

Index cache (``index/<root tag>/``): for every image probed, the result of
:func:`paperkit.index.probe_image` and :func:`paperkit.celeba.read_box` plus the image's size and mtime.
Keyed by the root's absolute path, the size and mtime of every ``metas/**/*.json`` (label and side files)
and :data:`paperkit.index.READER_VERSION`; a changed label file or reader starts a new table. Images are
not re-examined on a warm run (that is the point: 600k stat + decode calls cost minutes); an image
replaced or truncated after it was probed is caught when it is loaded (its size/mtime no longer match,
so it is probed again and, if broken, counted in ``FaceDataset.runtime_failures``). The summary of a root
(``paperkit data summary``) is stored beside the table under the same key.

Crop cache (``crops/<root tag>/``): see :class:`CropCache`.

Knobs (environment, no profile needed): ``PAPERKIT_INDEX_CACHE=0`` and ``PAPERKIT_CROP_CACHE=0`` turn a
cache off; ``PAPERKIT_CROP_CACHE_GB`` (default 8) is the largest crop array built.

Long because its last third benchmarks the two caches defined above against the uncached path, with the
helpers those measurements need.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from paperkit import device as devices

log = logging.getLogger("paperkit.cache")

INDEX_ENV = "PAPERKIT_INDEX_CACHE"
CROP_ENV = "PAPERKIT_CROP_CACHE"
CROP_LIMIT_ENV = "PAPERKIT_CROP_CACHE_GB"
DEFAULT_CROP_LIMIT_GB = 8.0     # 24 GB RAM: leaves room for the model, workers and the page cache
TMP_SUFFIX = ".tmp"
STALE_TMP_S = 6 * 3600          # temp files older than this were left by a killed run: swept


def cache_root() -> Path:
    env = os.environ.get("PAPERKIT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "paperkit"


def enabled(env: str) -> bool:
    return os.environ.get(env, "1").strip().lower() not in ("0", "false", "no", "off", "")


def crop_limit_bytes() -> int:
    try:
        gb = float(os.environ.get(CROP_LIMIT_ENV, DEFAULT_CROP_LIMIT_GB))
    except ValueError:
        gb = DEFAULT_CROP_LIMIT_GB
    return int(gb * 1024 ** 3)


def _sha(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def root_tag(root: str | os.PathLike) -> str:
    """Folder name for one data root: its last path component plus a hash of the absolute path."""
    p = Path(root).expanduser().resolve()
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in p.name)[:40] or "root"
    return f"{name}-{_sha(str(p), 12)}"


def label_state(root: str | os.PathLike) -> dict[str, list[int]]:
    """Size and mtime (ns) of every JSON file under ``ROOT/metas``: the label files and side files the
    index is built from."""
    metas = Path(root) / "metas"
    out: dict[str, list[int]] = {}
    if metas.is_dir():
        for f in sorted(metas.rglob("*.json")):
            try:
                st = f.stat()
            except OSError:
                continue
            out[f.relative_to(root).as_posix()] = [st.st_size, st.st_mtime_ns]
    return out


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is fsynced and renamed to ``path``, on any error
    (or a kill) ``path`` is untouched and no later run reads the temp file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}{TMP_SUFFIX}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Exclusive flock on ``folder/.lock`` (read-merge-write of a table by concurrent processes)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def sweep(folder: Path, keep: Callable[[Path], bool] = lambda p: True) -> None:
    """Remove temp files left by killed runs (older than :data:`STALE_TMP_S`) and files ``keep`` rejects."""
    if not folder.is_dir():
        return
    now = time.time()
    for p in folder.iterdir():
        try:
            if p.name.endswith(TMP_SUFFIX):
                if now - p.stat().st_mtime > STALE_TMP_S:
                    p.unlink()
            elif p.is_file() and not p.name.startswith(".") and not keep(p):
                p.unlink()
        except OSError:
            pass


def prune_roots(kind: str) -> None:
    """Drop the cache folders of data roots that no longer exist (test trees, moved datasets)."""
    base = cache_root() / kind
    if not base.is_dir():
        return
    import shutil
    for d in base.iterdir():
        f = d / "root.txt"
        try:
            if f.is_file() and not Path(f.read_text().strip()).exists():
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def _folder(kind: str, root: str | os.PathLike) -> Path:
    d = cache_root() / kind / root_tag(root)
    if not (d / "root.txt").is_file():
        d.mkdir(parents=True, exist_ok=True)
        (d / "root.txt").write_text(str(Path(root).expanduser().resolve()) + "\n")
    return d


def _load_pickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception as e:   # truncated or foreign file: never trusted, rebuilt
        log.warning("ignoring unreadable cache file %s (%s: %s); it is rebuilt", path, type(e).__name__, e)
        return None


# --------------------------------------------------------------------------------------------------
# Index cache
# --------------------------------------------------------------------------------------------------
class ProbeTable:
    """``{image key: probe result}`` of one data root under one label-file state (see the module doc).

    ``get(keys)`` returns what is cached, ``add(results)`` merges new probes and writes the table
    atomically (merged under a lock with what other processes wrote meanwhile)."""

    def __init__(self, root: str | os.PathLike, version: int) -> None:
        self.root = Path(root).expanduser().resolve()
        self.version = int(version)
        self.key = _sha({"root": str(self.root), "reader": self.version, "labels": label_state(self.root)})
        self.folder = _folder("index", self.root)
        self.path = self.folder / f"probes-{self.key}.pkl"
        self._probes: dict[str, Any] | None = None   # loaded on first use (a cached summary needs only the key)

    @property
    def probes(self) -> dict[str, Any]:
        if self._probes is None:
            data = _load_pickle(self.path)
            ok = isinstance(data, dict) and data.get("key") == self.key and isinstance(data.get("probes"), dict)
            self._probes = data["probes"] if ok else {}
        return self._probes

    def __contains__(self, key: str) -> bool:
        return key in self.probes

    def __getitem__(self, key: str) -> Any:
        return self.probes[key]

    def __len__(self) -> int:
        return len(self.probes)

    def add(self, results: dict[str, Any]) -> None:
        if not results:
            return
        with folder_lock(self.folder):
            data = _load_pickle(self.path)
            if isinstance(data, dict) and data.get("key") == self.key and isinstance(data.get("probes"), dict):
                merged = data["probes"]
                merged.update(results)
            else:
                merged = {**self.probes, **results}
            payload = {"key": self.key, "reader": self.version, "root": str(self.root), "probes": merged}
            atomic_write(self.path, lambda f: pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL))
            self._probes = merged
            sweep(self.folder, keep=lambda p: self.key in p.name or p.name == "root.txt")
        prune_roots("index")

    # finished results (an Index, a summary) under the same key, so a warm call skips the label files too
    def _result_path(self, what: Any) -> Path:
        return self.folder / f"result-{self.key}-{_sha(what, 12)}.pkl"

    def result(self, what: Any) -> Any:
        data = _load_pickle(self._result_path(what))
        if isinstance(data, dict) and data.get("key") == self.key and data.get("what") == what:
            return data.get("value")
        return None

    def store_result(self, what: Any, value: Any) -> None:
        payload = {"key": self.key, "what": what, "value": value}
        atomic_write(self._result_path(what), lambda f: pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL))

    # summary of the whole root under the same key (``paperkit data summary``)
    def _summary_path(self, protocol: str) -> Path:
        return self.folder / f"summary-{self.key}-{_sha(protocol, 8)}.json"

    def summary(self, protocol: str) -> Any:
        try:
            data = json.loads(self._summary_path(protocol).read_text())
        except (OSError, ValueError):
            return None
        return data.get("summary") if isinstance(data, dict) and data.get("key") == self.key else None

    def store_summary(self, protocol: str, summary: Any) -> None:
        payload = json.dumps({"key": self.key, "protocol": protocol, "summary": summary}).encode()
        atomic_write(self._summary_path(protocol), lambda f: f.write(payload))


# --------------------------------------------------------------------------------------------------
# Crop cache
# --------------------------------------------------------------------------------------------------
class CropCache:
    """Face crops of every indexed image of a data root at one size: ``crops-<key>.npy`` (uint8
    ``[N, size, size, 3]``, opened memory-mapped read-only, shared by notebooks, epochs and DataLoader
    workers through the page cache) plus ``crops-<key>.json`` naming the key, the sample order and each
    image's size and mtime when it was cropped.

    The key covers the index key (root, label files, reader version) and the crop parameters. Rows hold
    exactly what ``FaceDataset.load_crop`` returns from the JPEG; a row whose image has since changed on
    disk (size or mtime) is not used: that sample goes the JPEG path again (and fails loudly if broken).
    Built by :func:`paperkit.data.ensure_crop_cache` into temp names, the JSON renamed last: an array
    without its sidecar is never opened."""

    def __init__(self, folder: Path, key: str, meta: dict[str, Any]) -> None:
        self.folder, self.key, self.meta = folder, key, meta
        self.npy = folder / f"crops-{key}.npy"
        self.rows = {p: i for i, p in enumerate(meta["paths"])}
        self.stamps = meta["stamps"]
        self.valid = meta.get("valid") or [None] * len(self.stamps)
        self.boxes = meta["boxes"]
        self.size = int(meta["size"])
        self._arr: np.ndarray | None = None

    @staticmethod
    def paths_for(root: str | os.PathLike, key: str) -> tuple[Path, Path, Path]:
        folder = _folder("crops", root)
        return folder, folder / f"crops-{key}.npy", folder / f"crops-{key}.json"

    @classmethod
    def open(cls, root: str | os.PathLike, key: str) -> "CropCache | None":
        folder, npy, side = cls.paths_for(root, key)
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("key") != key or not npy.is_file():
            return None
        try:
            n = len(meta["paths"])
            if len(meta["stamps"]) != n or len(meta["boxes"]) != n:
                return None
            if meta.get("context") and len(meta.get("valid") or []) != n:
                return None
            expected = n * int(meta["size"]) ** 2 * 3
            if npy.stat().st_size < expected:
                return None
        except (KeyError, TypeError, ValueError, OSError):
            return None
        return cls(folder, key, meta)

    @property
    def array(self) -> np.ndarray:
        if self._arr is None:
            self._arr = np.load(self.npy, mmap_mode="r")
        return self._arr

    def row(self, sample: Any, stamp: tuple[int, int] | None) -> np.ndarray | None:
        """The cached crop of ``sample`` (a ``paperkit.index.Sample``) whose image now has ``stamp`` (size,
        mtime_ns), or None: not cached, cropped from another box, or the image changed since."""
        i = self.rows.get(sample.path)
        if i is None or stamp is None:
            return None
        cached = self.stamps[i]
        if cached is None or cached[0] != stamp[0] or cached[1] != stamp[1]:
            return None
        box, problem = self.boxes[i]
        if problem != sample.box_problem or box != (list(sample.box) if sample.box is not None else None):
            return None
        return np.array(self.array[i])   # a private copy: augmentation must never write into the cache

    def valid_of(self, sample: Any) -> tuple[float, float, float, float] | None:
        """The part of ``sample``'s row that shows the image (context crops; None for deployed crops)."""
        v = self.valid[self.rows[sample.path]]
        return None if v is None else tuple(v)

    def __getstate__(self) -> dict[str, Any]:   # DataLoader workers reopen the memmap themselves
        d = dict(self.__dict__)
        d["_arr"] = None
        return d


# --------------------------------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------------------------------
def make_fake_tree(source: str | os.PathLike, out: str | os.PathLike, entries: int, test_fraction: float = 0.2) -> Path:
    """A CelebA-Spoof tree of ``entries`` label entries whose images and ``_BB.txt`` files are hard links
    (copies across filesystems) to the images of ``source`` (cycled): a big tree for index benchmarks at
    the cost of a few inodes. Labels are the source's, so every entry is valid."""
    import shutil

    from paperkit import celeba
    src, out = Path(source), Path(out)
    pool = []
    for split in celeba.SPLITS:
        labels = json.loads(celeba.label_file(src, split).read_text())
        pool += sorted(labels.items())
    if not pool:
        raise ValueError(f"{source} has no label entries")
    per_folder = 25
    labels_out: dict[str, dict[str, list[int]]] = {"train": {}, "test": {}}
    n_test = int(round(entries * test_fraction))
    for i in range(entries):
        key, vec = pool[i % len(pool)]
        split = "test" if i < n_test else "train"
        kind = "spoof" if vec[celeba.LIVE_SPOOF] else "live"
        new = f"Data/{split}/{10000 + i // (2 * per_folder)}/{kind}/{i:07d}{Path(key).suffix}"
        dst = out / new
        dst.parent.mkdir(parents=True, exist_ok=True)
        for a, b in ((src / key, dst), (celeba.bb_path(src / key), celeba.bb_path(dst))):
            if a.exists() and not b.exists():
                try:
                    os.link(a, b)
                except OSError:
                    shutil.copyfile(a, b)
        labels_out[split][new] = vec
    for split, d in labels_out.items():
        celeba.label_file(out, split).parent.mkdir(parents=True, exist_ok=True)
        celeba.label_file(out, split).write_text(json.dumps(d))
    return out


def bench_index(root: str | os.PathLike, protocol: str = "intra_test", workers: int | None = None) -> dict[str, Any]:
    """Time the index of ``root`` cold (no cache: probe every image over ``workers`` processes, default all
    cores) and warm (from the cache): ``index.summary`` and ``index.load_index`` of both splits. Runs in a
    temporary cache folder, so the user's cache is neither used nor changed."""
    import shutil
    import tempfile
    from paperkit import celeba, index
    root = celeba.check_root(root)
    saved = os.environ.get("PAPERKIT_CACHE"), os.environ.get(INDEX_ENV)
    tmp = tempfile.mkdtemp(prefix="paperkit-bench-index-")
    level = index.log.level
    index.log.setLevel(logging.ERROR)
    try:
        os.environ["PAPERKIT_CACHE"] = tmp
        os.environ[INDEX_ENV] = "1"
        entries = sum(len(celeba.read_labels(root, s, protocol)) for s in celeba.SPLITS)
        t0 = time.perf_counter()
        if workers is not None:
            cpu = os.cpu_count
            os.cpu_count = lambda: workers   # type: ignore[assignment]  (the pool sizes itself from this)
        try:
            index.summary(root, protocol)
        finally:
            if workers is not None:
                os.cpu_count = cpu   # type: ignore[assignment]
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        index.summary(root, protocol)
        warm_summary = time.perf_counter() - t0
        for s in celeba.SPLITS:   # first load_index: probes cached, labels read and screened again
            index.load_index(root, s, protocol)
        t0 = time.perf_counter()
        for s in celeba.SPLITS:   # what every later notebook pays
            index.load_index(root, s, protocol)
        warm_index = time.perf_counter() - t0
    finally:
        index.log.setLevel(level)
        for k, v in zip(("PAPERKIT_CACHE", INDEX_ENV), saved):
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)
    per_k = 1000.0 / max(1, entries)
    return {"root": str(root), "entries": entries, "workers": workers or os.cpu_count(),
            "cold_s": round(cold, 2), "warm_summary_s": round(warm_summary, 3),
            "warm_load_index_s": round(warm_index, 2),
            "cold_ms_per_1000": round(cold * per_k * 1e3, 1),
            "warm_summary_ms_per_1000": round(warm_summary * per_k * 1e3, 2),
            "warm_load_index_ms_per_1000": round(warm_index * per_k * 1e3, 1),
            "cold_over_warm_load_index": round(cold / max(1e-9, warm_index), 1)}


def cli_bench_index(root: str, as_json: bool = False, workers: int | None = None) -> int:
    from paperkit import celeba
    try:
        r = bench_index(root, workers=workers)
    except celeba.DatasetError as e:
        import sys
        print(f"error: {e}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"index of {r['root']}: {r['entries']} label entries, warm page cache, {r['workers']} process(es)")
    per = "ms per 1,000 entries"
    print(f"  cold build (probe every image + box):  {r['cold_s']:8.2f} s  = {r['cold_ms_per_1000']:8.1f} {per}")
    print(f"  warm summary (cached):                 {r['warm_summary_s']:8.3f} s  = "
          f"{r['warm_summary_ms_per_1000']:8.2f} {per}")
    print(f"  warm load_index, both splits:          {r['warm_load_index_s']:8.2f} s  = "
          f"{r['warm_load_index_ms_per_1000']:8.1f} {per}")
    print(f"  cold / warm load_index: {r['cold_over_warm_load_index']:.1f}x")
    return 0


def bench_train(root: str | os.PathLike | None = None, size: int = 128, batch_size: int = 32, steps: int = 24,
                rounds: int = 3, workers: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Training throughput (img/s) of No-PTA MobileNetV2 with and without the crop cache, in one run:
    ``rounds`` interleaved rounds of ``steps`` timed steps each (after one untimed warm-up step per round),
    the same model, optimiser and augmentation (seeded by sample), medians over rounds. Also the input
    pipeline alone (load + augment + normalise, no model) in the same process.

    """
    import statistics

    import torch

    from paperkit import crop, data, index, profiles
    from paperkit.models.pta import mobilenet_v2_baseline
    prof = profiles.get_profile("default")
    root = data.resolve_root(root or "", prof, prof.data_seed)
    workers = devices.workers(prof.num_workers) if workers is None else int(workers)
    t0 = time.perf_counter()
    built = data.ensure_crop_cache(root, crop.context_size(size), context=True)  # what training items read
    build_s = time.perf_counter() - t0
    if built is None:
        raise RuntimeError(f"no crop cache for {root} at {size} px (turned off with {CROP_ENV}=0, or over the "
                           f"{CROP_LIMIT_ENV} limit): nothing to compare")
    samples = index.load_index(root, "train")
    modes = {"jpeg": False, "cache": True}
    loaders = {m: data._loader(ds, batch_size, workers, data.EpochSampler(len(ds), seed), drop_last=True)
               for m, ds in ((m, data.FaceDataset(root, samples, size, train=True, seed=seed, crop_cache=use))
                             for m, use in modes.items())}
    iters = {m: iter(dl) for m, dl in loaders.items()}

    torch.manual_seed(seed)
    model = mobilenet_v2_baseline(num_classes=2).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    train_rate: dict[str, list[float]] = {m: [] for m in modes}
    load_rate: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(rounds):   # the two modes interleaved, round by round
        for m in modes:
            rate, ms = _timed_steps(model, opt, loaders[m], iters, m, steps, batch_size)
            train_rate[m].append(rate)
            if ms is not None:
                cpu[m].append(ms)
        for m, use in modes.items():   # the pipeline alone, in this process (no worker overlap)
            ds = data.FaceDataset(root, samples, size, train=True, seed=seed, crop_cache=use)
            load_rate[m].append(_pipeline_rate(ds, min(len(ds), steps * batch_size // 4)))
    med = {m: statistics.median(v) for m, v in train_rate.items()}
    lmed = {m: statistics.median(v) for m, v in load_rate.items()}
    return {"root": str(root), "size": size, "batch_size": batch_size, "workers": workers, "steps": steps,
            "rounds": rounds, "crop_cache_build_s": round(build_s, 1), "crops": int(built.array.shape[0]),
            "cache_mb": round(built.npy.stat().st_size / 2 ** 20, 1),
            "train_img_per_s": {m: round(v, 1) for m, v in med.items()},
            "train_rounds": {m: [round(v, 1) for v in vs] for m, vs in train_rate.items()},
            "train_ratio_cache_over_jpeg": round(med["cache"] / med["jpeg"], 2),
            "pipeline_img_per_s": {m: round(v, 1) for m, v in lmed.items()},
            "cpu_ms_per_img": {m: round(statistics.median(v), 1) for m, v in cpu.items() if v},
            "cpu_ratio_jpeg_over_cache": (round(statistics.median(cpu["jpeg"]) / statistics.median(cpu["cache"]), 2)
                                          if cpu["jpeg"] and cpu["cache"] else None),
            "pipeline_ratio_cache_over_jpeg": round(lmed["cache"] / lmed["jpeg"], 2),
            "load_avg_1min": round(os.getloadavg()[0], 2)}


def _timed_steps(model: Any, opt: Any, loader: Any, iters: dict[str, Any], mode: str, steps: int,
                 batch_size: int) -> tuple[float, float | None]:
    """One untimed warm-up step, then ``steps`` timed training steps: img/s, and the loader workers' CPU
    ms per image (None where /proc cannot tell)."""
    import torch
    import torch.nn.functional as F

    t, c = time.perf_counter(), None
    for k in range(steps + 1):
        if k == 1:
            t = time.perf_counter()
            c = _cpu_seconds(_worker_pids(iters[mode]))
        try:
            x, y, _ = next(iters[mode])
        except StopIteration:
            iters[mode] = iter(loader)
            x, y, _ = next(iters[mode])
        loss = F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    rate = steps * batch_size / (time.perf_counter() - t)
    c1 = _cpu_seconds(_worker_pids(iters[mode]))
    return rate, ((c1 - c) / (steps * batch_size) * 1e3 if c is not None and c1 is not None else None)


def _pipeline_rate(ds: Any, n: int) -> float:
    """Load + augment + normalise of ``n`` samples in this process, img/s."""
    t = time.perf_counter()
    for i in range(n):
        ds[(i, 0)]
    return n / (time.perf_counter() - t)


def _worker_pids(it: Any) -> list[int]:
    return [w.pid for w in getattr(it, "_workers", []) if getattr(w, "pid", None)]


def _cpu_seconds(pids: list[int]) -> float | None:
    """CPU time (user + system) of this process plus ``pids`` (DataLoader workers), from /proc: what one
    training step costs in core-seconds, which a busy shared machine distorts far less than wall time."""
    total = time.process_time()
    try:
        tick = os.sysconf("SC_CLK_TCK")
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    except (OSError, ValueError, IndexError):
        return None
    return total


def cli_bench_train(root: str | None = None, steps: int = 24, rounds: int = 3, workers: int | None = None,
                    as_json: bool = False) -> int:
    r = bench_train(root, steps=steps, rounds=rounds, workers=workers)
    if as_json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"No-PTA MobileNetV2 training, {r['size']} px, batch {r['batch_size']}, {r['workers']} loader worker(s), "
          f"{r['rounds']} interleaved rounds x {r['steps']} steps (load average {r['load_avg_1min']})")
    print(f"  crop cache: {r['crops']} crops, {r['cache_mb']} MB (opened/built in {r['crop_cache_build_s']} s)")
    t, p = r["train_img_per_s"], r["pipeline_img_per_s"]
    print(f"  training img/s   JPEG path {t['jpeg']:7.1f}   crop cache {t['cache']:7.1f}   "
          f"ratio {r['train_ratio_cache_over_jpeg']:.2f}x   (rounds: {r['train_rounds']})")
    print(f"  input pipeline   JPEG path {p['jpeg']:7.1f}   crop cache {p['cache']:7.1f}   "
          f"ratio {r['pipeline_ratio_cache_over_jpeg']:.2f}x   (one process, no model)")
    if r["cpu_ratio_jpeg_over_cache"]:
        c = r["cpu_ms_per_img"]
        print(f"  CPU per trained image (main + workers): JPEG path {c['jpeg']:.1f} ms, "
              f"crop cache {c['cache']:.1f} ms, "
              f"ratio {r['cpu_ratio_jpeg_over_cache']:.2f}x (robust to other load on the machine)")
    return 0
