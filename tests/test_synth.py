"""Tests for the embedded dataset generator (paperkit.synth): the tree, its labels, the renderer.

Kept fast: a profile smaller than `smoke` (4 identities) except one smoke build shared by most checks.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from paperkit import detect, synth
from paperkit.cues import CUE_NAMES
from paperkit.profiles import get_profile
from paperkit.synth import builder, frame, identity, person

TINY = get_profile("smoke", synth_identities=5, synth_live_per_identity=2, synth_spoof_per_identity=3,
                   synth_image_size=96)


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory) -> Path:
    return synth.build(tmp_path_factory.mktemp("synth") / "ds", profile="smoke", seed=0, progress=False)


def test_layout_matches_celeba_spoof(smoke_root: Path) -> None:
    prof = get_profile("smoke")
    labels = {}
    for split in ("train", "test"):
        d = json.loads((smoke_root / "metas" / "intra_test" / f"{split}_label.json").read_text())
        labels.update(d)
        for rel in d:
            parts = rel.split("/")
            assert parts[0] == "Data" and parts[1] == split and parts[3] in ("live", "spoof"), rel
            assert len(parts) == 5 and len(parts[4]) == len("000000.jpg") and parts[4][:6].isdigit(), rel
            img = smoke_root / rel
            assert img.is_file()
            bb = (img.parent / f"{img.stem}_BB.txt").read_text().split()
            assert len(bb) == 5
            x, y, w, h = map(int, bb[:4])
            assert 10 < w < 224 and 10 < h < 224 and -50 < x < 224 and -50 < y < 224
            assert 0 < float(bb[4]) <= 1
    dropped = json.loads((smoke_root / synth.MARKER).read_text())["box_check"]["dropped"]
    assert dropped <= 2  # renders whose face box stays out of the frame after the redraws (counted, not written)
    per = prof.synth_live_per_identity + prof.synth_spoof_per_identity
    assert len(labels) == prof.synth_identities * per - dropped
    files = {str(p.relative_to(smoke_root)) for p in (smoke_root / "Data").rglob("*.jpg")}
    assert files == set(labels)
    import cv2
    im = cv2.imread(str(smoke_root / next(iter(labels))))
    assert im.shape == (prof.synth_image_size, prof.synth_image_size, 3)


def test_label_vectors(smoke_root: Path) -> None:
    seen = set()
    for split in ("train", "test"):
        d = json.loads((smoke_root / "metas" / "intra_test" / f"{split}_label.json").read_text())
        for rel, v in d.items():
            assert len(v) == 44 and all(isinstance(x, int) for x in v)
            live = rel.split("/")[3] == "live"
            assert v[43] == (0 if live else 1)
            if live:
                assert v[40] == 0 and v[41] == 0 and v[42] == 0
                assert set(v[:40]) <= {0, 1}
            else:
                assert 1 <= v[40] <= 10 and 1 <= v[41] <= 4 and v[42] in (1, 2)
                assert v[:40] == [0] * 40
                seen.add(v[40])
    assert len(seen) >= 5, seen  # the type decks spread attacks even in a tiny build


def test_subject_disjoint_and_side_files(smoke_root: Path) -> None:
    tr = json.loads((smoke_root / "metas/intra_test/train_label.json").read_text())
    te = json.loads((smoke_root / "metas/intra_test/test_label.json").read_text())
    subj = lambda d: {k.split("/")[2] for k in d}  # noqa: E731
    assert subj(tr) and subj(te) and not subj(tr) & subj(te)
    assert len(subj(te)) == round(get_profile("smoke").synth_test_fraction * get_profile("smoke").synth_identities)
    cues = json.loads((smoke_root / "metas/paperkit/attack_cues.json").read_text())
    assert cues["cues"] == list(CUE_NAMES)
    samples = json.loads((smoke_root / "metas/paperkit/samples.json").read_text())
    allv = {**tr, **te}
    assert set(cues["labels"]) == set(allv) == set(samples)
    for rel, c in cues["labels"].items():
        v = allv[rel]
        assert len(c) == 7 and set(c) <= {0, 1}
        if v[43] == 0:
            assert c[:6] == [0] * 6
        else:
            assert c[0] == int(v[40] in (1, 2, 3, 4, 5, 6)) and c[1] == int(v[40] in (7, 8, 9))
            assert c[4] == int(v[40] in (4, 5, 6))
    # videos: one subject, one kind, one domain; several frames
    vids: dict[str, set] = {}
    for rel, s in samples.items():
        assert s["domain"] in ("A", "B")
        vids.setdefault(s["video"], set()).add((rel.split("/")[2], rel.split("/")[3], allv[rel][40], s["domain"]))
    assert all(len(v) == 1 for v in vids.values())
    assert len(vids) < len(samples)
    # domain protocol files partition each split
    for split, d in (("train", tr), ("test", te)):
        a = json.loads((smoke_root / f"metas/protocol_domain/A_{split}_label.json").read_text())
        b = json.loads((smoke_root / f"metas/protocol_domain/B_{split}_label.json").read_text())
        assert set(a) | set(b) == set(d) and not set(a) & set(b)
        assert all(d[k] == v for k, v in {**a, **b}.items())
        assert all(samples[k]["domain"] == "A" for k in a) and all(samples[k]["domain"] == "B" for k in b)
    meta = json.loads((smoke_root / synth.MARKER).read_text())
    assert meta["generator"] == "paperkit.synth" and meta["seed"] == 0 and meta["profile"] == "smoke"
    assert meta["version"] == synth.VERSION


def test_cues_are_set_by_name() -> None:
    assert frame.cue_vector({"print": 1, "cutout": 1, "low_quality": 1}) == [1, 0, 0, 0, 1, 0, 1]
    assert frame.cue_vector({}) == [0] * len(CUE_NAMES)
    with pytest.raises(KeyError, match="unknown attack cue"):
        frame.cue_vector({"halftone": 1})


def test_deterministic(tmp_path: Path) -> None:
    a = synth.build(tmp_path / "a", profile=TINY, seed=3, progress=False)
    b = synth.build(tmp_path / "b", profile=TINY, seed=3, progress=False)
    c = synth.build(tmp_path / "c", profile=TINY, seed=4, progress=False)
    da, db, dc = _tree_digest(a), _tree_digest(b), _tree_digest(c)
    assert da == db
    assert da != dc


def test_difficulty_changes_output(tmp_path: Path) -> None:
    a = synth.build(tmp_path / "a", profile=TINY, seed=1, difficulty=0.0, progress=False)
    b = synth.build(tmp_path / "b", profile=TINY, seed=1, difficulty=1.0, progress=False)
    assert _tree_digest(a) != _tree_digest(b)
    with pytest.raises(ValueError, match="difficulty"):
        synth.build(tmp_path / "c", profile=TINY, difficulty=1.5, progress=False)


def test_refuses_nonempty_out(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        synth.build(tmp_path / "x", profile=TINY, progress=False)
    assert (tmp_path / "x" / "f").read_text() == "keep me"


def test_default_root_caches(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PAPERKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(builder, "get_profile", lambda name, **kw: TINY)
    r1 = synth.default_root("smoke", seed=2)
    assert r1.name.startswith(f"synth-v{synth.VERSION}-smoke-s2-") and (r1 / synth.MARKER).is_file()
    stamp = (r1 / synth.MARKER).stat().st_mtime_ns
    assert synth.default_root("smoke", seed=2) == r1
    assert (r1 / synth.MARKER).stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind


def test_renderer_and_haar() -> None:
    ident = identity.make_identity(0, 1)
    assert ident == identity.make_identity(0, 1)
    r = np.random.default_rng(0)
    rgb, alpha, box, marks = person.render_person(ident, identity.random_pose(r), 128, r)
    assert rgb.shape == (128, 128, 3) and alpha.shape == (128, 128)
    x, y, w, h = box
    assert 0 < x < 128 and 0 < y < 128 and 20 < w < 100
    # skin has real high-frequency texture (pores), not a flat fill
    cx, cy = int(marks.face[0]), int(marks.face[1] + marks.face[3] * 0.35)
    patch = rgb[cy - 3:cy + 3, cx + 8:cx + 14, 1]
    assert patch.std() > 0.005
    from skimage import data
    found = detect.haar_boxes(data.astronaut())  # the finder `--faces` uses
    x, y, w, h = found[0]  # her face: about (177, 67, 93, 93) in the 512 px photo
    assert 60 < w < 200 and 150 < x + w / 2 < 300 and 60 < y + h / 2 < 200


def _face_photos(tmp_path: Path) -> Path:
    import cv2
    from skimage import data
    d = tmp_path / "faces"
    (d / "eileen").mkdir(parents=True)
    cv2.imwrite(str(d / "eileen" / "a.png"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(d / "bricks.png"), data.brick())  # no face: skipped and counted
    import matplotlib.cbook as cbook
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        (d / "grace.jpg").write_bytes(f.read())
    return d


def test_faces_dir(tmp_path: Path, capsys) -> None:
    src = _face_photos(tmp_path)
    root = synth.build(tmp_path / "out", profile=TINY, seed=0, faces_dir=src, progress=False)
    assert "skipped 1 photo(s) with no face" in capsys.readouterr().err
    meta = json.loads((root / synth.MARKER).read_text())
    assert meta["identities"] == 2 and meta["faces_without_face"] == 1 and meta["source"] == "faces_dir"
    tr = json.loads((root / "metas/intra_test/train_label.json").read_text())
    te = json.loads((root / "metas/intra_test/test_label.json").read_text())
    assert len(tr) == len(te) == 5
    assert {v[43] for v in tr.values()} == {0, 1}


def test_faces_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="folder not found"):
        synth.build(tmp_path / "o1", profile=TINY, faces_dir=tmp_path / "nope", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no photos"):
        synth.build(tmp_path / "o2", profile=TINY, faces_dir=tmp_path / "empty", progress=False)
    import cv2
    from skimage import data
    (tmp_path / "noface").mkdir()
    cv2.imwrite(str(tmp_path / "noface" / "b.png"), data.brick())
    with pytest.raises(ValueError, match="no face found"):
        synth.build(tmp_path / "o3", profile=TINY, faces_dir=tmp_path / "noface", progress=False)
    assert not (tmp_path / "o3").exists()
    assert synth.cli_synth(str(tmp_path / "o4"), "smoke", 0, str(tmp_path / "nope")) == 2


def test_bench_reports_rate() -> None:
    out = synth.bench(TINY, n=6, workers=1)
    assert out["images"] == 6 and out["img_per_s"] > 0 and out["image_size"] == 96


def _fit_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of `a` against `b` after the best per-channel gain and offset (what white balance and exposure do)."""
    a, b = a.reshape(-1, 3).astype(np.float64), b.reshape(-1, 3).astype(np.float64)
    fit = np.empty_like(b)
    for c in range(3):
        m = np.stack([b[:, c], np.ones(len(b))], 1)
        fit[:, c] = m @ np.linalg.lstsq(m, a[:, c], rcond=None)[0]
    return float(10 * np.log10(1 / np.mean((a - fit) ** 2)))


def test_faces_dir_bona_fide_keeps_source_photo(tmp_path: Path) -> None:
    """A `--faces` bona fide render is the user's photo through a camera: with the known placement (scale,
    shift, mirror, capture homography) undone, its face box matches the source photo at >= 28 dB PSNR,
    compared above the camera's noise floor (both low-passed at sigma 1.5 px, so sensor noise, ISP
    sharpening and JPEG blocks, which a phone adds by design, do not count) and after the best per-channel
    gain/offset (white balance and exposure, which a camera may move). Measured: 33-38 dB on these
    sessions, dark noisy webcam ones included. The mirrored photo through the same transform, a wrong
    placement, stays below 22 dB (15-19 dB): the threshold separates a kept photo from a wrong one."""
    import cv2

    from paperkit.synth.photos import load_face_photos
    from paperkit.synth.plan import plan_jobs
    from paperkit.synth.scene import in_process
    photos, _, _ = load_face_photos(_face_photos(tmp_path))
    n = 224
    jobs, _ = plan_jobs(0, 2, 12, 4, 0.25, ["1", "2"])
    live = [j for j in jobs if j.live][::3]
    with in_process(photos):
        for j in live:
            res = frame.render_frame(j, 0, n)
            img = cv2.cvtColor(cv2.imdecode(np.frombuffer(res["jpeg"], np.uint8), 1), cv2.COLOR_BGR2RGB)
            k, m = res["source"]
            m = np.array(m)
            src = photos[j.subject][k].rgb
            sc = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))
            pre = cv2.GaussianBlur(src, (0, 0), max(0.5 / sc, 0.3))  # the downscale's own low-pass
            ref = cv2.warpPerspective(pre, m, (n, n), flags=cv2.INTER_LINEAR)
            mirrored = cv2.warpPerspective(np.ascontiguousarray(pre[:, ::-1]), m, (n, n), flags=cv2.INTER_LINEAR)
            x, y, w, h = (int(float(v)) for v in res["bb"].split()[:4])
            got, ref, mirrored = (cv2.GaussianBlur(z, (0, 0), 1.5)[y:y + h, x:x + w]
                                  for z in (img.astype(np.float32) / 255, ref, mirrored))
            assert _fit_psnr(got, ref) >= 28.0
            assert _fit_psnr(got, mirrored) < 22.0


def test_photographic_identities() -> None:
    """Default identities are bundled portraits, varied per identity, deterministic from the seed."""
    from paperkit.synth import photoface
    assert photoface.available()
    a, _ = photoface.identity_photo(0, 1)
    b, _ = photoface.identity_photo(0, 1)
    c, _ = photoface.identity_photo(0, 2)
    assert np.array_equal(a.rgb, b.rgb) and a.box == b.box
    assert a.rgb.shape != c.rgb.shape or not np.allclose(a.rgb, c.rgb, atol=0.02)
    x, y, w, h = a.box
    assert 0 <= x and 0 <= y and x + w <= a.rgb.shape[1] and y + h <= a.rgb.shape[0]


def test_box_check_regenerates_or_drops(tmp_path: Path, monkeypatch) -> None:
    """Every written image's face box lies in the frame; a render that fails is redrawn, then dropped, and
    both are counted in the marker file."""
    root = synth.build(tmp_path / "ok", profile=TINY, seed=0, progress=False)
    meta = json.loads((root / synth.MARKER).read_text())
    assert meta["box_check"]["dropped"] == 0 and "rule" in meta["box_check"]
    for bb in root.rglob("*_BB.txt"):  # written on the 224 px grid: allow its rounding (0.85, not 0.9)
        x, y, w, h = (float(v) * 96 / 224 for v in bb.read_text().split()[:4])
        inside = (min(96, x + w) - max(0, x)) * (min(96, y + h) - max(0, y)) / (w * h)
        assert inside >= 0.85 and min(w, h) >= 0.09 * 96
    calls = {"n": 0}

    def every_third_fails(box, n):  # fails twice per job, then passes: all regenerated, none dropped
        calls["n"] += 1
        return calls["n"] % 3 == 0
    monkeypatch.setattr(frame, "box_ok", every_third_fails)
    monkeypatch.setenv("PAPERKIT_SYNTH_WORKERS", "1")
    meta = json.loads((synth.build(tmp_path / "re", profile=TINY, seed=0, progress=False) / synth.MARKER).read_text())
    total = sum(meta["counts"][s]["images"] for s in ("train", "test"))
    assert meta["box_check"]["regenerated"] == total == 5 * 5 and meta["box_check"]["dropped"] == 0
    monkeypatch.setattr(frame, "box_ok", lambda box, n: False)
    root = synth.build(tmp_path / "drop", profile=TINY, seed=0, progress=False)
    meta = json.loads((root / synth.MARKER).read_text())
    assert meta["box_check"]["dropped"] == 25 and not list(root.rglob("*.jpg"))


def test_face_visibility_rule_rejects_a_box_of_noise_and_keeps_a_face() -> None:
    """A box whose noise-free content is flat (a face lost in the dark) fails however noisy the written
    image is; a box with face-like contrast passes; noise that swamps the contrast fails."""
    rng = np.random.default_rng(0)
    flat = np.full((96, 96, 3), 20, np.uint8)
    noisy = np.clip(flat + rng.normal(0, 12, flat.shape), 0, 255).astype(np.uint8)
    box = (24.0, 24.0, 48.0, 48.0)
    assert not frame.face_visible(flat, noisy, box)
    face = flat.copy()
    cv2.circle(face, (48, 48), 20, (150, 120, 100), -1)          # skin
    cv2.circle(face, (40, 42), 3, (10, 10, 10), -1)              # eyes and mouth
    cv2.circle(face, (56, 42), 3, (10, 10, 10), -1)
    cv2.line(face, (40, 58), (56, 58), (60, 20, 20), 2)
    slight = np.clip(face + rng.normal(0, 3, face.shape), 0, 255).astype(np.uint8)
    assert frame.face_visible(face, slight, box)
    swamped = np.clip(face + rng.normal(0, 80, face.shape), 0, 255).astype(np.uint8)
    assert not frame.face_visible(face, swamped, box)
    assert not frame.face_visible(face, face, (200.0, 200.0, 10.0, 10.0))   # a box outside the frame


def test_invisible_faces_are_redrawn_then_dropped_and_counted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PAPERKIT_SYNTH_WORKERS", "1")
    monkeypatch.setattr(frame, "face_visible", lambda clean, noisy, box: False)
    root = synth.build(tmp_path / "dark", profile=TINY, seed=0, progress=False)
    meta = json.loads((root / synth.MARKER).read_text())
    assert meta["box_check"]["dropped"] == 25 and "sensor noise" in meta["box_check"]["rule"]


def test_auto_exposure_meters_the_face_so_brightness_carries_no_label() -> None:
    """The same face in a dim and in a bright scene comes out at the same face luma (the camera meters
    it); the dim one is noisier (analogue gain), and the gain stays within what a camera can reach."""
    from paperkit.synth import camera
    base = np.full((64, 64, 3), 0.2, np.float32)
    base[16:48, 16:48] = (0.55, 0.45, 0.4)
    box = (16.0, 16.0, 32.0, 32.0)
    cam = {"wb": (1.0, 1.0, 1.0), "exposure": 1.0, "vignette": 0.0, "shot": 0.0003, "read": 0.004, "iso": 1.0,
           "contrast": 1.0, "jpeg": 90, "sampling": 0, "ae_target": 0.4, "ae_face": 1.0}
    outs = {}
    for name, light in (("dim", 0.3), ("bright", 1.6)):
        g = camera.auto_exposure(base * light, box, cam)
        clean, _, _ = camera.capture(base * light, {**cam, "ae_gain": g}, None)
        noisy, _, _ = camera.capture(base * light, {**cam, "ae_gain": g}, np.random.default_rng(0))
        outs[name] = (g, float(clean[16:48, 16:48].mean()),
                      float((noisy.astype(np.float32) - clean)[20:44, 20:44].std()))
    assert outs["dim"][0] > 1 > outs["bright"][0]
    assert abs(outs["dim"][1] - outs["bright"][1]) < 2 and abs(outs["dim"][1] - 0.4 * 255) < 3
    assert outs["dim"][2] > 1.3 * outs["bright"][2]
    assert camera.auto_exposure(base * 1e-4, box, cam) == camera.AE_GAIN[1]   # a black frame: the gain tops out


def test_isp_noise_reduction_flattens_skin_but_keeps_edges_and_downscaled_frames_are_cleaner() -> None:
    from paperkit.synth import camera
    frame = np.full((64, 64, 3), 0.35, np.float32)
    frame[:, 32:] = 0.7                                           # one strong edge
    cam = {"wb": (1.0, 1.0, 1.0), "exposure": 1.0, "vignette": 0.0, "shot": 0.0008, "read": 0.01, "iso": 2.0,
           "contrast": 1.0, "jpeg": 90, "sampling": 0}

    def noise_and_edge(**kw):
        out = camera.capture(frame, {**cam, **kw}, np.random.default_rng(0))[0].astype(np.float32)
        return float(out[8:56, 4:24].std()), float(out[:, 36:60].mean() - out[:, 4:28].mean())
    raw, edge_raw = noise_and_edge()
    clean, edge_clean = noise_and_edge(denoise=1.0)
    small, _ = noise_and_edge(native=3.0)
    assert clean < 0.6 * raw and abs(edge_clean - edge_raw) < 2
    assert abs(small - raw / 3) < 0.25 * raw / 3
