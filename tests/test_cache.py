"""Index and crop caches (paperkit.cache): invalidation, killed builds, load-time checks, identical items."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from paperkit import cache, celeba, crop, data, index
from paperkit.profiles import get_profile


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(cache.INDEX_ENV, raising=False)
    monkeypatch.delenv(cache.CROP_ENV, raising=False)
    data._OPEN_CROPS.clear()
    return tmp_path / "cache"


@pytest.fixture
def probes(monkeypatch):
    """Counts the images actually probed (serial path: trees here are below POOL_MIN)."""
    seen: list[str] = []
    real = index._probe_entry

    def counting(root, key):
        seen.append(key)
        return real(root, key)
    monkeypatch.setattr(index, "_probe_entry", counting)
    return seen


def _same(a, b):
    assert [(s.path, s.box, s.box_problem, s.stamp) for s in a] == [(s.path, s.box, s.box_problem, s.stamp) for s in b]
    assert a.problems == b.problems and a.examples == b.examples and a.entries == b.entries


# ---------------------------------------------------------------- index cache
def test_warm_index_equals_cold_and_probes_nothing(tiny_celeba, probes, caplog):
    with caplog.at_level(logging.WARNING, logger="paperkit.data"):
        cold = index.load_index(tiny_celeba, "train")
    said = [r.getMessage() for r in caplog.records]
    assert len(probes) == 16 and any("unreadable_image=4" in m for m in said)
    caplog.clear()
    probes.clear()
    with caplog.at_level(logging.WARNING, logger="paperkit.data"):
        warm = index.load_index(tiny_celeba, "train")
    assert probes == [] and [r.getMessage() for r in caplog.records] == said   # the same warning, once
    _same(cold, warm)
    assert index.summary(tiny_celeba) == index.summary(tiny_celeba)
    probes.clear()
    index.load_index(tiny_celeba, "train", limit=5, seed=3)    # another cap: a new result from cached probes
    assert probes == []
    os.environ[cache.INDEX_ENV] = "0"
    try:
        off = index.load_index(tiny_celeba, "train")
    finally:
        del os.environ[cache.INDEX_ENV]
    assert len(probes) == 16
    _same(cold, off)


def test_changed_label_file_or_reader_version_rebuilds(tiny_celeba_clean, probes, monkeypatch):
    index.load_index(tiny_celeba_clean, "train")
    assert len(probes) == 24
    probes.clear()
    index.load_index(tiny_celeba_clean, "train")
    assert probes == []
    f = tiny_celeba_clean / "metas/intra_test/train_label.json"
    labels = json.loads(f.read_text())
    dropped = sorted(labels)[0]
    del labels[dropped]
    f.write_text(json.dumps(labels))
    idx = index.load_index(tiny_celeba_clean, "train")
    assert len(probes) == 23 and dropped not in {s.path for s in idx} and len(idx) == 23
    probes.clear()
    assert index.summary(tiny_celeba_clean)["splits"]["train"]["images"] == 23
    assert len(probes) == 8        # the test split: the train probes of this label state are cached
    probes.clear()
    monkeypatch.setattr(index, "READER_VERSION", index.READER_VERSION + 1)
    index.load_index(tiny_celeba_clean, "train")
    assert len(probes) == 23
    assert len(list((own_cache_dir() / "index").iterdir())) == 1


def own_cache_dir() -> Path:
    return Path(os.environ["PAPERKIT_CACHE"])


def test_one_folder_per_root_and_vanished_roots_are_pruned(tiny_celeba_builder, tmp_path):
    a = tiny_celeba_builder(tmp_path / "a", train_subjects=2, test_subjects=1)
    b = tiny_celeba_builder(tmp_path / "b", train_subjects=2, test_subjects=1)
    index.load_index(a, "train")
    index.load_index(b, "train")
    assert len(list((own_cache_dir() / "index").iterdir())) == 2
    import shutil
    shutil.rmtree(a)
    c = tiny_celeba_builder(tmp_path / "c", train_subjects=2, test_subjects=1)
    index.load_index(c, "train")
    tags = sorted(p.name for p in (own_cache_dir() / "index").iterdir())
    assert len(tags) == 2 and tags == sorted([cache.root_tag(b), cache.root_tag(c)])


def test_pool_probing_is_ordered_and_matches_serial(tiny_celeba, monkeypatch):
    keys = [s for split in celeba.SPLITS for s in celeba.read_labels(tiny_celeba, split)] * 3
    serial = index.probe_samples(tiny_celeba, keys, use_cache=False)
    monkeypatch.setattr(index, "POOL_MIN", 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    pooled = index.probe_samples(tiny_celeba, keys, use_cache=False)
    assert pooled == serial


def test_image_truncated_after_caching_is_counted_at_load_and_the_run_continues(tiny_celeba_clean, caplog):
    idx = index.load_index(tiny_celeba_clean, "train")
    bad = idx[2]
    raw = (tiny_celeba_clean / bad.path).read_bytes()
    (tiny_celeba_clean / bad.path).write_bytes(raw[: len(raw) // 2])   # cv2 alone would paint it grey
    warm = index.load_index(tiny_celeba_clean, "train")
    assert bad.path in {s.path for s in warm}                    # the cache does not look at images again
    ds = data.FaceDataset(tiny_celeba_clean, warm, size=32)
    with caplog.at_level(logging.WARNING, logger="paperkit.data"):
        x, y, _ = ds[2]
    assert y == warm[3].label and torch.equal(x, ds[3][0])      # replaced by the next sample
    assert ds.runtime_failures == 1 and bad.path in ds.failure_report()
    assert any("changed on disk after it was indexed" in r.getMessage() for r in caplog.records)
    # counted across DataLoader workers too: the parent process sees the workers' count
    ds2 = data.FaceDataset(tiny_celeba_clean, warm, size=32)
    loader = torch.utils.data.DataLoader(ds2, batch_size=4, num_workers=2)
    assert sum(len(b[1]) for b in loader) == len(warm)
    assert ds2.runtime_failures == 1
    # a replaced image that still decodes is used (re-probed, box re-read), not counted
    good = idx[5]
    import cv2
    from conftest import face_image
    cv2.imwrite(str(tiny_celeba_clean / good.path), face_image(99))
    os.utime(tiny_celeba_clean / good.path, ns=(1, 1))
    ds3 = data.FaceDataset(tiny_celeba_clean, warm, size=32)
    ds3[5]
    assert ds3.runtime_failures == 0


# ---------------------------------------------------------------- killed builds
KILLED_WRITER = r"""
import os, sys, time
from pathlib import Path
from paperkit import cache, celeba, data, index
real = cache.atomic_write
def slow(path, write):
    def half(f):
        import io
        buf = io.BytesIO(); write(buf); b = buf.getvalue()
        f.write(b[: len(b) // 2]); f.flush()
        Path(sys.argv[2]).write_text("writing")
        time.sleep(60)
    return real(path, half)
cache.atomic_write = slow
index.load_index(sys.argv[1], "train")
"""


def test_a_killed_build_never_leaves_a_cache_a_later_run_trusts(tiny_celeba_clean, tmp_path, probes):
    flag = tmp_path / "flag"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1])]
                                                        + os.environ.get("PYTHONPATH", "").split(os.pathsep))}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tiny_celeba_clean), str(flag)], env=env)
    t0 = time.time()
    while not flag.exists():
        assert proc.poll() is None and time.time() - t0 < 60, "writer exited early"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    folder = own_cache_dir() / "index" / cache.root_tag(tiny_celeba_clean)
    left = [p.name for p in folder.iterdir()]
    assert [n for n in left if n.endswith(cache.TMP_SUFFIX)] and not [n for n in left if n.startswith("probes-")]
    idx = index.load_index(tiny_celeba_clean, "train")      # rebuilt from the images, not from half a file
    assert len(probes) == 24 and len(idx) == 24
    # a corrupt file under the final name (written by something else) is ignored and rebuilt, not trusted
    table = cache.ProbeTable(tiny_celeba_clean, index.READER_VERSION)
    table.path.write_bytes(table.path.read_bytes()[:100])
    for p in folder.glob("result-*"):
        p.unlink()
    probes.clear()
    assert len(index.load_index(tiny_celeba_clean, "train")) == 24 and len(probes) == 24


# ---------------------------------------------------------------- crop cache
def _profile(**kw):
    base = dict(num_workers=0, batch_size=4, input_size=32, val_fraction=0.2)
    base.update(kw)
    return get_profile("smoke", **base)


@pytest.mark.parametrize("train", [False, True])
def test_crop_cache_rows_equal_load_crop_and_items_are_identical(tiny_celeba_clean, train):
    idx = index.load_index(tiny_celeba_clean, "train")
    jpeg = data.FaceDataset(tiny_celeba_clean, idx, size=32, train=train, seed=4, crop_cache=False)
    px = jpeg.crop_px    # training items read the wider context crops
    assert px == (crop.context_size(32) if train else 32) and jpeg.box_jitter == train
    ref = [jpeg.load_crop(i) for i in range(len(idx))]
    assert data.open_crop_cache(tiny_celeba_clean, px, train) is None
    c = data.ensure_crop_cache(tiny_celeba_clean, px, context=train)
    # deployed crops of both splits (32 images); context crops of the train split only, which only training reads
    assert c is not None and c.array.shape == (len(idx) if train else 32, px, px, 3) and c.array.dtype == np.uint8
    test0 = index.load_index(tiny_celeba_clean, "test")[0]
    assert (c.row(test0, data._stamp(tiny_celeba_clean / test0.path)) is None) == train
    cached = data.FaceDataset(tiny_celeba_clean, idx, size=32, train=train, seed=4)
    assert cached.crop_cache() is c
    for i in range(len(idx)):
        assert np.array_equal(cached.load_crop(i), ref[i])
        assert cached._load(i)[1] == jpeg._load(i)[1] and (cached._load(i)[1] is not None) == train
        for epoch in (0, 3):
            a, b = cached[(i, epoch)], jpeg[(i, epoch)]
            assert a[0].shape == (3, 32, 32)
            assert torch.equal(a[0], b[0]) and a[1] == b[1] and torch.equal(a[2], b[2])
    # the JPEG path is not taken: a row is served even if decoding would now be impossible ...
    import paperkit.data as d
    real = d.decode_image
    d.decode_image = lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded"))
    try:
        cached.load_crop(0)
    finally:
        d.decode_image = real
    # ... and rows cannot be written through (augmentation gets a private copy)
    row = cached.load_crop(0)
    row[:] = 0
    assert np.array_equal(cached.load_crop(0), ref[0])
    side = json.loads((c.folder / f"crops-{c.key}.json").read_text())
    assert side["paths"] == sorted(side["paths"]) and side["size"] == px and side["key"] == c.key
    # the other scale's cache survives this build's sweep of stale caches
    other = data.ensure_crop_cache(tiny_celeba_clean, 32 if train else crop.context_size(32), context=not train)
    assert other is not None and other.key != c.key and c.npy.is_file()
    assert data.open_crop_cache(tiny_celeba_clean, px, train) is not None


def test_make_loaders_builds_it_and_workers_share_it(tiny_celeba_clean, monkeypatch):
    monkeypatch.setenv(cache.CROP_ENV, "0")
    off = data.make_loaders(tiny_celeba_clean, _profile(num_workers=0), seed=2)
    assert off["train"].dataset.crop_cache() is None
    monkeypatch.delenv(cache.CROP_ENV)
    on = data.make_loaders(tiny_celeba_clean, _profile(num_workers=1), seed=2)
    assert on["train"].dataset.crop_cache() is not None
    for _ in range(2):
        for (x1, y1, _), (x0, y0, _) in zip(on["train"], off["train"]):
            assert torch.equal(x1, x0) and torch.equal(y1, y0)
    for (x1, _, _), (x0, _, _) in zip(on["test"], off["test"]):
        assert torch.equal(x1, x0)


def test_crop_cache_size_limit_and_changed_images(tiny_celeba_clean, caplog):
    with caplog.at_level(logging.INFO, logger="paperkit.data"):
        assert data.ensure_crop_cache(tiny_celeba_clean, 32, limit_bytes=1000) is None
    assert any("reading the image files" in r.getMessage() for r in caplog.records)
    c = data.ensure_crop_cache(tiny_celeba_clean, 32)
    idx = index.load_index(tiny_celeba_clean, "test")
    ds = data.FaceDataset(tiny_celeba_clean, idx, size=32)
    (tiny_celeba_clean / idx[0].path).write_bytes(b"")          # broken after the crops were cached
    x, y, _ = ds[0]
    assert ds.runtime_failures == 1 and y == idx[1].label       # not served from the stale row
    assert c.row(idx[1], data._stamp(tiny_celeba_clean / idx[1].path)) is not None
    # another size is another cache; a changed label file makes the old one unusable
    assert data.open_crop_cache(tiny_celeba_clean, 48) is None
    f = tiny_celeba_clean / "metas/intra_test/test_label.json"
    f.write_text(f.read_text() + "\n")
    assert data.open_crop_cache(tiny_celeba_clean, 32) is None


def test_a_crop_array_without_its_sidecar_is_never_opened(tiny_celeba_clean):
    c = data.ensure_crop_cache(tiny_celeba_clean, 32)
    side = c.npy.with_suffix(".json")
    side.unlink()
    data._OPEN_CROPS.clear()
    assert data.open_crop_cache(tiny_celeba_clean, 32) is None
    assert data.ensure_crop_cache(tiny_celeba_clean, 32) is not None and side.is_file()


def test_cli_summary_is_served_from_the_cache(tiny_celeba, probes, capsys):
    from paperkit import cli
    assert cli.main(["data", "summary", "--root", str(tiny_celeba), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert len(probes) == 20
    probes.clear()
    assert cli.main(["data", "summary", "--root", str(tiny_celeba), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == first and probes == []


def test_bench_index_and_bench_train_run(tiny_celeba_clean, capsys, own_cache):
    from paperkit import cli
    assert cli.main(["bench", "index", "--root", str(tiny_celeba_clean)]) == 0
    out = capsys.readouterr().out
    assert "per 1,000 entries" in out and "32 label entries" in out
    assert not (own_cache / "index").exists()          # the bench used a temporary cache of its own
    r = cache.bench_train(tiny_celeba_clean, size=32, batch_size=4, steps=2, rounds=1, workers=0)
    assert set(r["train_img_per_s"]) == {"jpeg", "cache"} and r["train_ratio_cache_over_jpeg"] > 0
    assert r["crops"] == len(index.load_index(tiny_celeba_clean, "train")) == 24   # the context crops training reads
