"""paperkit.data on hand-made CelebA-Spoof trees (tests/conftest.py): every problem kind, every bad input."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import GOOD_BB
from paperkit import augment, celeba, crop, cues, data, index
from paperkit.profiles import get_profile


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Index and crop caches of these tests go to a per-test folder, never the user's cache."""
    monkeypatch.setenv("PAPERKIT_CACHE", str(tmp_path / "cache"))


def _profile(**kw):
    base = dict(num_workers=0, batch_size=4, input_size=32, val_fraction=0.2)
    base.update(kw)
    return get_profile("smoke", **base)


NEW_KINDS = {"label_conflict": 0, "bad_spoof_type": 0, "split_overlap": 0}


def _with_new_kinds(expected):
    """conftest's expected summary plus the label-problem kinds (none in that tree) and the examples."""
    out = json.loads(json.dumps(expected))
    out["problems"].update(NEW_KINDS)
    out["examples"] = {"missing_bb": "Data/train/1002/live/000005.jpg", "empty_bb": "Data/train/1002/live/000006.jpg",
                       "negative_bb": "Data/train/1002/spoof/000008.jpg", "tiny_bb": "Data/train/1003/live/000009.jpg",
                       "unreadable_image": "Data/train/1003/spoof/000010.jpg",
                       "missing_image": "Data/train/1004/spoof/000013.jpg"}
    return out


# ---------------------------------------------------------------- summary and index
def test_summary_matches_issue_shape(tiny_celeba, tiny_celeba_expected):
    s = index.summary(tiny_celeba)
    assert s == _with_new_kinds(tiny_celeba_expected)
    assert set(s["problems"]) == set(celeba.PROBLEM_KEYS)


def test_index_skips_bad_images_and_keeps_box_fallbacks(tiny_celeba):
    idx = index.load_index(tiny_celeba, "train")
    by_id = {Path(s.path).stem: s for s in idx}
    # missing, zero-byte, corrupt, truncated, bomb are skipped; everything else is kept
    assert sorted(by_id) == ["000001", "000002", "000003", "000004", "000005", "000006", "000007", "000008",
                             "000009", "000015", "000016"]
    assert idx.entries == 16
    assert idx.problems == {"missing_bb": 1, "empty_bb": 2, "negative_bb": 1, "tiny_bb": 1,
                            "unreadable_image": 4, "missing_image": 1, **NEW_KINDS}
    assert by_id["000001"].box == (16.0, 9.0, 32.0, 30.0) and by_id["000001"].box_problem == ""
    for stem, why in [("000005", "missing_bb"), ("000006", "empty_bb"), ("000007", "empty_bb"),
                      ("000009", "tiny_bb")]:
        assert by_id[stem].box is None and by_id[stem].box_problem == why
    neg = by_id["000008"]
    assert neg.box_problem == "negative_bb" and neg.box[0] == 0.0 and neg.box[1] == 0.0 and neg.box[2] > 3
    assert idx.examples["missing_image"] == "Data/train/1004/spoof/000013.jpg"


def test_sample_fields_from_labels_and_side_files(tiny_celeba):
    s = {Path(x.path).stem: x for x in index.load_index(tiny_celeba, "train")}["000003"]
    assert (s.split, s.subject, s.label, s.spoof_type) == ("train", "1001", 1, 7)
    assert s.domain == "A" and s.video == "train/1001/spoof/7"
    assert s.cues == (0, 1, -1, -1, 0, -1, -1)


def test_without_side_files_cues_are_derived_and_video_defaults(tiny_celeba_builder, tmp_path):
    root = tiny_celeba_builder(tmp_path / "t", side_files=False, train_subjects=2, test_subjects=1)
    idx = index.load_index(root, "train")
    for s in idx:
        assert s.domain == ""
        assert s.video == f"train/{s.subject}/{'spoof' if s.label else 'live'}/{s.spoof_type}"
        assert s.cues == celeba.derived_cues(s.label, s.spoof_type, s.illumination)
    assert celeba.derived_cues(1, 1)[:2] == (1, 0) and celeba.derived_cues(1, 8)[:2] == (0, 1)


def test_derived_cue_mapping_for_real_celeba_spoof():
    names = cues.CUE_NAMES
    # live: no medium cue; image quality is not labelled, so unknown rather than 0
    assert celeba.derived_cues(0, 0, 0) == (0,) * 6 + (-1,)
    photo = dict(zip(names, celeba.derived_cues(1, 1, 1)))
    assert photo["print"] == 1 and photo["screen"] == 0 and photo["paper_texture"] == 1 and photo["glare"] == -1
    phone = dict(zip(names, celeba.derived_cues(1, 9, 4)))
    assert phone["screen"] == 1 and phone["moire"] == -1 and phone["print"] == 0 and phone["low_quality"] == 1
    region = dict(zip(names, celeba.derived_cues(1, 6, 1)))
    assert region["cutout"] == 1 and region["paper_texture"] == 1
    assert celeba.derived_cues(1, 10, 1)[:6] == (0,) * 6  # 3D mask: none of the paper/screen cues


def test_problems_logged_once_with_example(tiny_celeba, caplog):
    with caplog.at_level(logging.WARNING, logger="paperkit.data"):
        index.load_index(tiny_celeba, "train")
    msgs = [r.getMessage() for r in caplog.records if r.name == "paperkit.data"]
    assert len(msgs) == 1
    assert "missing_image=1" in msgs[0] and "000013.jpg" in msgs[0] and "zero-byte" in msgs[0]


def test_limit_is_deterministic_and_applied_before_probing(tiny_celeba_clean):
    a = index.load_index(tiny_celeba_clean, "train", limit=7, seed=3)
    b = index.load_index(tiny_celeba_clean, "train", limit=7, seed=3)
    c = index.load_index(tiny_celeba_clean, "train", limit=7, seed=4)
    assert [s.path for s in a] == [s.path for s in b] and len(a) == 7
    assert [s.path for s in a] != [s.path for s in c]
    assert [s.path for s in a] == sorted(s.path for s in a)


def test_absent_image_is_counted_once_not_also_as_missing_box(tiny_celeba_builder, tmp_path):
    # an absent image without its _BB.txt, and an undecodable one without a box: one problem each
    rows = [("train", "1001", "live", 1, "jpg", 0, GOOD_BB), ("train", "1001", "spoof", 2, "none", 7, None),
            ("train", "1002", "spoof", 3, "corrupt", 1, None), ("train", "1002", "live", 4, "jpg", 0, None),
            ("test", "2001", "live", 5, "jpg", 0, GOOD_BB)]
    root = tiny_celeba_builder(tmp_path / "t", rows)
    idx = index.load_index(root, "train")
    assert idx.problems["missing_image"] == 1 and idx.problems["unreadable_image"] == 1
    assert idx.problems["missing_bb"] == 1          # only the kept image 000004 misses its box
    assert idx.examples["missing_bb"] == "Data/train/1002/live/000004.jpg"
    assert index.summary(root)["problems"]["missing_bb"] == 1


# ---------------------------------------------------------------- hostile label files
def _labels(root, split="train"):
    f = root / f"metas/intra_test/{split}_label.json"
    return f, json.loads(f.read_text())


def _key(labels, folder, nth=0):
    return sorted(k for k in labels if f"/{folder}/" in k)[nth]


def test_label_conflict_is_counted_logged_once_and_skipped(tiny_celeba_clean, caplog):
    f, labels = _labels(tiny_celeba_clean)
    live_flag_spoof = _key(labels, "live", 0)       # live/ with [43] = 1, [40] = 0 (the issue's example)
    labels[live_flag_spoof][43] = 1
    live_type_7 = _key(labels, "live", 1)           # live/, flag live, but spoof type 7
    labels[live_type_7][40] = 7
    spoof_type_0 = _key(labels, "spoof", 0)         # spoof/, flag spoof, type 0 (= live)
    labels[spoof_type_0][40] = 0
    spoof_flag_live = _key(labels, "spoof", 1)      # spoof/ with a consistent live label (flag 0, type 0)
    labels[spoof_flag_live][40], labels[spoof_flag_live][43] = 0, 0
    f.write_text(json.dumps(labels))
    bad = {live_flag_spoof, live_type_7, spoof_type_0, spoof_flag_live}
    with caplog.at_level(logging.WARNING, logger="paperkit.data"):
        idx = index.load_index(tiny_celeba_clean, "train")
    assert idx.problems["label_conflict"] == 4 and idx.entries == len(labels)
    assert not bad & {s.path for s in idx} and len(idx) == len(labels) - 4
    msgs = [r.getMessage() for r in caplog.records if r.name == "paperkit.data"]
    assert len(msgs) == 1 and "label_conflict=4" in msgs[0] and idx.examples["label_conflict"] in msgs[0]
    assert "flag [43]" in msgs[0]
    s = index.summary(tiny_celeba_clean)
    assert s["problems"]["label_conflict"] == 4 and s["examples"]["label_conflict"] in bad
    tr = s["splits"]["train"]
    assert tr["images"] == len(labels) and tr["live"] + tr["spoof"] == len(labels) - 4


@pytest.mark.parametrize("stype", [11, -1, 99])
def test_spoof_type_outside_0_10_is_counted_not_shown_as_a_type(tiny_celeba_clean, stype, capsys):
    f, labels = _labels(tiny_celeba_clean)
    key = _key(labels, "spoof", 0)
    labels[key][40] = stype
    f.write_text(json.dumps(labels))
    idx = index.load_index(tiny_celeba_clean, "train")
    assert idx.problems["bad_spoof_type"] == 1 and idx.problems["label_conflict"] == 0
    assert key not in {s.path for s in idx}
    s = index.summary(tiny_celeba_clean)
    assert s["problems"]["bad_spoof_type"] == 1 and s["examples"]["bad_spoof_type"] == key
    assert str(stype) not in s["splits"]["train"]["spoof_types"]
    assert index.cli_summary(tiny_celeba_clean) == 0
    out = capsys.readouterr().out
    assert "bad_spoof_type=1" in out and key in out and f"={stype}" not in out.replace("bad_spoof_type=1", "")


def test_image_in_train_and_test_is_counted_warned_and_dropped_from_train(tiny_celeba_clean, caplog, capsys):
    _, train = _labels(tiny_celeba_clean)
    f, test = _labels(tiny_celeba_clean, "test")
    key = _key(train, "live", 0)
    other = _key(train, "spoof", 2)
    test[key] = train[key]
    test[other.replace("Data/train/", "Data/train/./")] = train[other]   # same file, another spelling
    f.write_text(json.dumps(test))
    with caplog.at_level(logging.WARNING, logger="paperkit.data"):
        tr = index.load_index(tiny_celeba_clean, "train")
    assert tr.problems["split_overlap"] == 2 and not {key, other} & {s.path for s in tr}
    assert any("TRAIN/TEST OVERLAP" in r.getMessage() and key in r.getMessage() for r in caplog.records)
    te = index.load_index(tiny_celeba_clean, "test")
    assert key in {s.path for s in te} and te.problems["split_overlap"] == 0   # test stays the official one
    loaders = data.make_loaders(tiny_celeba_clean, _profile(), seed=0)
    trained = {s.path for k in ("train", "val") for s in loaders[k].dataset.samples}
    assert not trained & {key, other}
    s = index.summary(tiny_celeba_clean)
    assert s["problems"]["split_overlap"] == 2 and s["examples"]["split_overlap"] == key
    assert index.cli_summary(tiny_celeba_clean, as_json=True) == 0
    assert json.loads(capsys.readouterr().out)["problems"]["split_overlap"] == 2
    assert index.cli_summary(tiny_celeba_clean) == 0
    out = capsys.readouterr().out
    assert "split_overlap=2" in out and "WARNING" in out and key in out


def test_every_problem_kind_has_a_count_and_an_example(tiny_celeba):
    _, train = _labels(tiny_celeba)
    f = tiny_celeba / "metas/intra_test/train_label.json"
    train["Data/train/1005/live/000015.jpg"][43] = 1                 # label_conflict
    train["Data/train/1005/spoof/000016.jpg"][40] = 11               # bad_spoof_type
    f.write_text(json.dumps(train))
    tf, test = _labels(tiny_celeba, "test")
    test["Data/train/1001/live/000001.jpg"] = train["Data/train/1001/live/000001.jpg"]   # split_overlap
    tf.write_text(json.dumps(test))
    s = index.summary(tiny_celeba)
    assert set(s["problems"]) == set(celeba.PROBLEM_KEYS)
    assert all(s["problems"][k] >= 1 for k in celeba.PROBLEM_KEYS), s["problems"]
    assert set(s["examples"]) == set(celeba.PROBLEM_KEYS)
    for k, example in s["examples"].items():
        assert example.startswith("Data/"), (k, example)


# ---------------------------------------------------------------- bad input: structure errors
def test_not_a_tree_names_what_is_missing(tmp_path, capsys):
    (tmp_path / "Data").mkdir()
    with pytest.raises(celeba.DatasetError, match="missing metas/intra_test/train_label.json"):
        celeba.check_root(tmp_path)
    with pytest.raises(celeba.DatasetError, match="does not exist"):
        index.summary(tmp_path / "nope")
    assert index.cli_summary(tmp_path, as_json=True) != 0
    err = capsys.readouterr().err
    assert "metas/intra_test/test_label.json" in err and "expected a CelebA-Spoof tree" in err
    assert issubclass(celeba.DatasetError, ValueError)


def test_cli_summary_json(tiny_celeba, tiny_celeba_expected, capsys):
    assert index.cli_summary(tiny_celeba, as_json=True) == 0
    assert json.loads(capsys.readouterr().out) == _with_new_kinds(tiny_celeba_expected)
    assert index.cli_summary(tiny_celeba, as_json=False) == 0
    assert "problems:" in capsys.readouterr().out


def test_malformed_json_names_file(tiny_celeba):
    f = tiny_celeba / "metas/intra_test/test_label.json"
    f.write_text('{"Data/test/2001/live/000101.jpg": [0, 1,')
    with pytest.raises(celeba.DatasetError, match=r"test_label\.json is not valid JSON"):
        index.summary(tiny_celeba)
    f.write_text("[1, 2, 3]")
    with pytest.raises(celeba.DatasetError, match="expected a JSON object"):
        index.load_index(tiny_celeba, "test")


@pytest.mark.parametrize("bad", [[0] * 43, [0] * 45, [0] * 43 + ["1"], [0] * 43 + [1.0], [0] * 43 + [True],
                                 [0] * 43 + [2], "0" * 44, None])
def test_label_not_44_integers_names_key_and_file(tiny_celeba, bad):
    f = tiny_celeba / "metas/intra_test/train_label.json"
    labels = json.loads(f.read_text())
    labels["Data/train/1001/live/000001.jpg"] = bad
    f.write_text(json.dumps(labels))
    with pytest.raises(celeba.DatasetError) as e:
        index.load_index(tiny_celeba, "train")
    assert "Data/train/1001/live/000001.jpg" in str(e.value) and "train_label.json" in str(e.value)


@pytest.mark.parametrize("key", ["Data/train/../../../etc/passwd", "../outside/Data/x.jpg", "/etc/passwd",
                                 "Data\\..\\..\\x.jpg", "C:/Data/x.jpg", "Data/x.jpg", "images/train/1/live/1.jpg"])
def test_key_outside_root_is_an_error(tiny_celeba, key):
    f = tiny_celeba / "metas/intra_test/train_label.json"
    labels = json.loads(f.read_text())
    labels[key] = [0] * 44
    f.write_text(json.dumps(labels))
    with pytest.raises(celeba.DatasetError, match="train_label.json: key"):
        index.load_index(tiny_celeba, "train")


# ---------------------------------------------------------------- bad input: images
def test_probe_reasons(tiny_celeba):
    train = tiny_celeba / "Data/train"
    assert index.probe_image(train / "1003/spoof/000010.jpg")[2] == "zero-byte file"
    assert index.probe_image(train / "1003/spoof/000011.jpg")[0] == "unreadable_image"
    status, _, why = index.probe_image(train / "1004/live/000012.jpg")
    assert status == "unreadable_image" and "truncated" in why
    status, _, why = index.probe_image(train / "1004/live/000014.png")
    assert status == "unreadable_image" and "decompression-bomb" in why
    assert index.probe_image(train / "1004/spoof/000013.jpg")[0] == "missing_image"
    assert index.probe_image(train / "1001/live/000001.jpg") == ("ok", (64, 48), "")


def test_decode_refuses_bomb_zero_byte_corrupt_and_missing(tiny_celeba):
    train = tiny_celeba / "Data/train"
    with pytest.raises(data.ImageError, match="decompression-bomb"):
        data.decode_image(train / "1004/live/000014.png")
    for rel in ("1003/spoof/000010.jpg", "1003/spoof/000011.jpg", "1004/spoof/000013.jpg"):
        with pytest.raises(data.ImageError, match=rel.split("/")[-1]):
            data.decode_image(train / rel)


def test_gray_rgba_16bit_decode_to_rgb_uint8(tiny_celeba):
    train = tiny_celeba / "Data/train/1001"
    ref = cv2.cvtColor(cv2.imread(str(train / "live/000001.jpg")), cv2.COLOR_BGR2RGB)
    for rel in ("live/000002.png", "spoof/000003.png", "spoof/000004.png"):
        img = data.decode_image(train / rel)
        assert img.dtype == np.uint8 and img.shape == (48, 64, 3), rel
    gray = data.decode_image(train / "live/000002.png")
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    # 16-bit PNG of the same content as the 8-bit source (x257) comes back as the 8-bit values
    from conftest import face_image  # noqa: E402  (tests dir is on sys.path via rootdir conftest)
    src = cv2.cvtColor(face_image(4), cv2.COLOR_BGR2RGB)
    assert np.abs(data.decode_image(train / "spoof/000004.png").astype(int) - src).max() <= 1
    rgba_src = cv2.cvtColor(face_image(3), cv2.COLOR_BGR2RGB)
    assert (data.decode_image(train / "spoof/000003.png") == rgba_src).all()
    assert ref.shape == (48, 64, 3)


def test_dataset_substitutes_image_that_vanished_after_indexing(tiny_celeba, caplog):
    idx = index.load_index(tiny_celeba, "test")
    ds = data.FaceDataset(tiny_celeba, idx, size=32)
    (tiny_celeba / idx[0].path).unlink()
    with caplog.at_level(logging.WARNING, logger="paperkit.data"):
        x, y, cues = ds[0]
    assert y == idx[1].label and ds.runtime_failures == 1
    assert any(Path(idx[0].path).name in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- boxes
@pytest.mark.parametrize("text,expected", [
    ("", ("empty_bb", None)), ("\n\n  \n", ("empty_bb", None)), ("1 2 3", ("empty_bb", None)),
    ("a b c d e", ("empty_bb", None)), ("1 2 nan 4 0.9", ("empty_bb", None)), ("1 2 inf 4", ("empty_bb", None)),
    ("\n10 20 30 40 0.98\n", ("ok", (10.0, 20.0, 30.0, 40.0))), ("10,20,30,40", ("ok", (10.0, 20.0, 30.0, 40.0))),
    ("10 20 30 40", ("ok", (10.0, 20.0, 30.0, 40.0))),
])
def test_read_box(tmp_path, text, expected):
    f = tmp_path / "x_BB.txt"
    f.write_text(text)
    assert celeba.read_box(f) == expected


def test_read_box_missing_and_binary(tmp_path):
    assert celeba.read_box(tmp_path / "nope_BB.txt") == ("missing_bb", None)
    (tmp_path / "b_BB.txt").write_bytes(b"\xff\xfe\x00\x01")
    assert celeba.read_box(tmp_path / "b_BB.txt") == ("empty_bb", None)


def test_box_to_pixels_scales_and_clips():
    box, neg, tiny = celeba.box_to_pixels((56, 56, 112, 112), 448, 224)
    assert box == (112.0, 56.0, 224.0, 112.0) and not neg and not tiny
    box, neg, tiny = celeba.box_to_pixels((-20, 200, 100, 100), 224, 224)
    assert box == (0.0, 200.0, 80.0, 24.0) and neg and not tiny
    assert celeba.box_to_pixels((300, 300, 10, 10), 224, 224)[2]          # entirely outside -> tiny
    assert celeba.box_to_pixels((10, 10, 2, 50), 224, 224)[2]             # 2 px wide -> tiny
    assert not celeba.box_to_pixels((10, 10, 3, 3), 224, 224)[2]


# ---------------------------------------------------------------- crops and preprocessing
def _img(h=40, w=60, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_crop_inside_is_a_plain_slice():
    img = _img()
    out = crop.crop_face(img, (20, 10, 10, 8), 15)  # side 15 around centre (25, 14): floor(25-7.5)=17
    assert out.shape == (15, 15, 3) and out.dtype == np.uint8
    assert (out == img[6:21, 17:32]).all()


@pytest.mark.parametrize("box", [(0, 0, 30, 30), (50, 30, 10, 10), (-5, 20, 40, 10), (10, 5, 80, 70),
                                 (58, 38, 4, 4)])
def test_unfitted_crop_outside_is_reflect101_of_the_full_image(box):
    """The context crop (fit=False) keeps its geometry and pads with reflect-101 of the whole image."""
    img = _img()
    x, y, w, h = box
    side = int(round(1.5 * max(w, h)))
    x0, y0 = int(np.floor(x + w / 2 - side / 2)), int(np.floor(y + h / 2 - side / 2))
    pad = 200
    ref = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")   # numpy 'reflect' == REFLECT_101
    expected = ref[pad + y0:pad + y0 + side, pad + x0:pad + x0 + side]
    out = crop.crop_face(img, box, side, fit=False)
    assert (out == expected).all()


def test_crop_fallback_is_centre_square_and_resizes():
    img = _img(40, 60)
    assert (crop.crop_face(img, None, 40) == img[:, 10:50]).all()
    assert (crop.crop_face(img, (5, 5, 0, 7), 40) == img[:, 10:50]).all()
    assert crop.crop_face(img, None, 128).shape == (128, 128, 3)
    with pytest.raises(ValueError, match="RGB uint8"):
        crop.crop_face(img[..., 0], None, 16)


def test_preprocess_range_and_shape():
    face = np.zeros((20, 20, 3), np.uint8)
    face[..., 1] = 255
    t = data.preprocess(face, 16)
    assert t.shape == (3, 16, 16) and t.dtype == torch.float32
    assert torch.allclose(t[0], torch.full((16, 16), -1.0)) and torch.allclose(t[1], torch.ones(16, 16))
    with pytest.raises(ValueError):
        data.preprocess(face.astype(np.float32), 16)


def test_augment_is_reproducible_and_keeps_uint8():
    face = _img(32, 32)
    a = augment.augment(face, data.sample_rng(0, 1, 5))
    b = augment.augment(face, data.sample_rng(0, 1, 5))
    c = augment.augment(face, data.sample_rng(0, 2, 5))
    assert a.dtype == np.uint8 and a.shape == face.shape
    assert (a == b).all() and not (a == c).all()
    noisy = augment.iso_noise(np.full((32, 32, 3), 128, np.uint8), data.sample_rng(0, 0, 0), 0.5, 0.05)
    assert 1.0 < noisy.astype(float).std() < 20.0


def test_tone_augmentation_spans_exposure_and_keeps_order():
    ramp = np.repeat(np.arange(256, dtype=np.uint8).reshape(16, 16, 1), 3, axis=2)
    assert (augment.tone(ramp, 1.0, 1.0, 0.0) == ramp).all()
    over = augment.tone(ramp, 1.8, 1.0, 0.0)[..., 0].ravel()
    assert over[200] == 255 and over[50] == 90          # overexposed: highlights clip, shadows double
    lifted = augment.tone(ramp, 1.0, 1.0, 30.0)[..., 0].ravel()
    assert lifted[0] == 30 and lifted[255] == 255       # a lifted black does not push white past 255
    for img in (over, lifted, augment.tone(ramp, 0.6, 1.5, -30.0)[..., 0].ravel()):
        assert (np.diff(img.astype(int)) >= 0).all()    # a tone curve never reverses the order of levels
    rng = np.random.default_rng(0)
    means = [augment.random_tone(ramp, rng).mean() for _ in range(200)]
    assert min(means) < 0.8 * ramp.mean() and max(means) > 1.2 * ramp.mean()


class _Fixed:
    """A stand-in generator whose draws are the centre of each range: box scale 1, no shift."""

    def uniform(self, lo, hi, n=None):
        return np.zeros(n) if n else (lo + hi) / 2 if lo * hi > 0 else 0.0


def _jitter(img, box, rng, size=64):
    ctx = crop.crop_face(img, box, crop.context_size(size), crop.CONTEXT_SCALE, fit=False)
    valid = crop.context_valid(box, img.shape[1], img.shape[0], crop.context_size(size))
    return crop.jitter_box(ctx, valid, rng, size)


def _scaled(box, f):
    x, y, w, h = box
    return (x + w * (1 - f) / 2, y + h * (1 - f) / 2, w * f, h * f)


def test_jitter_box_at_scale_one_is_the_deployed_crop_and_otherwise_reframes():
    img = cv2.GaussianBlur(_img(300, 260), (0, 0), 2)
    box = (90, 80, 70, 84)
    direct = crop.crop_face(img, box, 128)     # the default input: the context (269 px) enlarges this face
    same = _jitter(img, box, _Fixed(), 128)
    assert same.shape == (128, 128, 3)
    # the same window, resampled along another chain: close in pixels and about as sharp
    mse = float(((same.astype(float) - direct) ** 2).mean())
    sharp = [cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for a in (same, direct)]
    assert 10 * np.log10(255 ** 2 / mse) >= 30.0 and 0.85 <= sharp[0] / sharp[1] <= 1.15
    direct = crop.crop_face(img, box, 64)
    # the narrowest window (box scale 0.7) still holds 64 px of context
    assert crop.context_size(64) * crop.CROP_SCALE * crop.BOX_SCALE[0] / crop.CONTEXT_SCALE >= 64
    outs = [_jitter(img, box, data.sample_rng(0, e, 1)) for e in range(6)]
    assert all(o.shape == (64, 64, 3) and o.dtype == np.uint8 for o in outs)
    assert min(np.abs(o.astype(int) - direct).mean() for o in outs) > 0.5   # each epoch frames anew
    # a jittered crop is what crop_face gives for a rescaled box (up to resampling)
    zoom = _Fixed()
    zoom.uniform = lambda lo, hi, n=None: np.zeros(n) if n else (np.log(1.2) if lo < 0 else 0.0)
    big = crop.crop_face(img, _scaled(box, 1.2), 64)
    got = _jitter(img, box, zoom)
    assert np.abs(got.astype(int) - big).mean() < np.abs(direct.astype(int) - big).mean() / 2


def test_a_face_filling_a_small_photo_is_cropped_from_its_pixels_never_mirrored():
    """A box near the edge or filling the photo: the square is moved and shrunk into the image (the
    deployed crop) and the jittered training crop is fitted into the same real pixels."""
    img = cv2.GaussianBlur(_img(120, 110), (0, 0), 2)
    box = (8, 6, 100, 104)                                   # 1.5 x box = 156 px > the photo
    assert crop.fit_square(-20, -22, 156, 110, 120) == (0, 0, 110)
    fitted = crop.crop_face(img, box, 64)
    assert np.array_equal(fitted, crop.crop_face(img[:110, :110], None, 64))   # the largest square inside
    padded = crop.crop_face(img, box, 64, fit=False)
    assert not np.array_equal(padded, fitted)                # the old reflect-padded crop differed
    assert crop.context_valid(box, 110, 120, 100) != (0.0, 0.0, 100.0, 100.0)
    for e in range(4):       # every jittered crop lies inside the photo: compare with a crop of the photo
        j = _jitter(img, box, data.sample_rng(0, e, 3))
        assert j.shape == (64, 64, 3)
    inside = _jitter(img, box, _Fixed())
    assert 10 * np.log10(255 ** 2 / float(((inside.astype(float) - fitted) ** 2).mean())) >= 30.0
    edge = (0, 30, 50, 50)                                   # a face at the left edge of a wide image
    wide = cv2.GaussianBlur(_img(200, 300), (0, 0), 2)
    assert crop.fit_square(-13, 17, 75, 300, 200) == (0, 17, 75)   # moved right, not shrunk
    assert np.array_equal(crop.crop_face(wide, edge, 75), wide[17:92, 0:75])


# ---------------------------------------------------------------- dataset and loaders
def test_dataset_items_and_epoch_seeding(tiny_celeba_clean):
    idx = index.load_index(tiny_celeba_clean, "train")
    ev = data.FaceDataset(tiny_celeba_clean, idx, size=32)
    x, y, cues = ev[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    assert cues.dtype == torch.long and cues.shape == (7,)
    assert torch.equal(x, data.preprocess(ev.load_crop(0), 32))
    tr = data.FaceDataset(tiny_celeba_clean, idx, size=32, train=True, seed=1)
    assert torch.equal(tr[(3, 0)][0], tr[(3, 0)][0])
    assert not torch.equal(tr[(3, 0)][0], tr[(3, 1)][0])


def test_hand_built_sample_reads_its_box_lazily(tiny_celeba_clean):
    key = index.load_index(tiny_celeba_clean, "test")[0].path
    s = index.Sample(path=key, split="test", subject="4000", label=0)
    assert s.box_problem == "unchecked" and s.video == "test/4000/live/0"
    ds = data.FaceDataset(tiny_celeba_clean, [s], size=48)
    img = data.decode_image(tiny_celeba_clean / key)
    assert (ds.load_crop(0) == crop.crop_face(img, (16, 9, 32, 30), 48)).all()


def test_epoch_sampler():
    s = data.EpochSampler(10, seed=3)
    e0, e1 = list(s), list(s)
    assert {e for _, e in e0} == {0} and {e for _, e in e1} == {1}
    assert sorted(i for i, _ in e0) == list(range(10)) and e0 != [(i, 0) for i in range(10)]
    s.set_epoch(0)
    assert list(s) == e0


def test_box_jitter_is_a_profile_switch(tiny_celeba_clean):
    """Default: training items read the context crops and jitter the box; box_jitter=False is seed 000's
    literal recipe (augmentation of the deployed crop); evaluation items never jitter."""
    on = data.make_loaders(tiny_celeba_clean, _profile(), seed=0)
    off = data.make_loaders(tiny_celeba_clean, _profile(box_jitter=False), seed=0)
    assert on["train"].dataset.box_jitter and on["train"].dataset.crop_px == crop.context_size(32)
    assert not off["train"].dataset.box_jitter and off["train"].dataset.crop_px == 32
    assert not on["test"].dataset.box_jitter and on["test"].dataset.crop_px == 32
    i = 0
    x_off = off["train"].dataset[(i, 0)][0]
    want = data.preprocess(augment.augment(off["train"].dataset.load_crop(i), data.sample_rng(0, 0, i)), 32)
    assert torch.equal(x_off, want)
    assert not torch.equal(on["train"].dataset[(i, 0)][0], x_off)


def test_tone_jitter_is_a_profile_switch_and_off_draws_seed_000s_recipe(tiny_celeba_clean):
    literal = data.make_loaders(tiny_celeba_clean, _profile(box_jitter=False, tone_jitter=False), seed=0)
    toned = data.make_loaders(tiny_celeba_clean, _profile(box_jitter=False), seed=0)
    ds = literal["train"].dataset
    assert not ds.tone_jitter and toned["train"].dataset.tone_jitter
    rng = data.sample_rng(0, 0, 0)
    seed_000 = augment.color_jitter(ds.load_crop(0), rng)   # the draws the recipe makes, in its order
    if rng.random() < augment.ISO_NOISE_P:
        seed_000 = augment.iso_noise(seed_000, rng, float(rng.uniform(*augment.ISO_INTENSITY)),
                                     float(rng.uniform(*augment.ISO_COLOR_SHIFT)))
    if rng.random() < augment.FLIP_P:
        seed_000 = np.ascontiguousarray(seed_000[:, ::-1])
    assert torch.equal(ds[(0, 0)][0], data.preprocess(seed_000, 32))
    differs = [not torch.equal(ds[(i, 0)][0], toned["train"].dataset[(i, 0)][0]) for i in range(len(ds))]
    assert sum(differs) >= len(ds) // 2


def test_make_loaders_split_by_subject_and_deterministic(tiny_celeba_clean):
    prof = _profile()
    a = data.make_loaders(tiny_celeba_clean, prof, seed=0)
    b = data.make_loaders(tiny_celeba_clean, prof, seed=0)
    tr, va, te = (a[k].dataset.samples for k in ("train", "val", "test"))
    assert {s.subject for s in tr}.isdisjoint({s.subject for s in va})
    assert len({s.subject for s in va}) == 1 and len({s.subject for s in tr}) == 5
    assert {s.split for s in te} == {"test"} and len(te) == 8
    assert a["train"].drop_last and not a["val"].drop_last
    xa, ya, _ = next(iter(a["train"]))
    xb, yb, _ = next(iter(b["train"]))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    xa2, _, _ = next(iter(a["train"]))       # next epoch: new order / augmentation
    assert not torch.equal(xa, xa2)


def test_make_loaders_caps_and_domain(tiny_celeba_clean):
    capped = data.make_loaders(tiny_celeba_clean, _profile(max_train_images=10, max_test_images=3), seed=0)
    assert len(capped["train"].dataset) + len(capped["val"].dataset) == 10
    assert len(capped["test"].dataset) == 3
    dom = data.make_loaders(tiny_celeba_clean, _profile(), seed=0, domain="A", test_domain="B")
    assert {s.domain for k in ("train", "val") for s in dom[k].dataset.samples} == {"A"}
    assert {s.domain for s in dom["test"].dataset.samples} == {"B"}


def test_domain_filter_falls_back_to_samples_side_file(tiny_celeba_clean):
    import shutil
    shutil.rmtree(tiny_celeba_clean / "metas/protocol_domain")
    idx = index.load_index(tiny_celeba_clean, "train", domain="B")
    assert idx and {s.domain for s in idx} == {"B"}


def test_worker_loader_matches_single_process(tiny_celeba_clean):
    one = data.make_loaders(tiny_celeba_clean, _profile(num_workers=1), seed=5)
    zero = data.make_loaders(tiny_celeba_clean, _profile(num_workers=0), seed=5)
    assert one["train"].persistent_workers and one["train"].num_workers == 1
    for _ in range(2):   # two epochs through a persistent worker: augmentation still follows the epoch
        for (x1, y1, _), (x0, y0, _) in zip(one["train"], zero["train"]):
            assert torch.equal(x1, x0) and torch.equal(y1, y0)


def test_make_loaders_reports_problems(tiny_celeba):
    loaders = data.make_loaders(tiny_celeba, _profile(), seed=0)
    assert loaders["train"].dataset.problems["unreadable_image"] == 4
    assert len(loaders["train"].dataset) + len(loaders["val"].dataset) == 11


def test_bench_loading_runs(tiny_celeba_clean):
    r = data.bench_loading(tiny_celeba_clean, size=32, n=8, workers=0)
    assert r["images"] == 8 and r["img_per_s_single"] > 0
    assert set(r["ms_per_image"]) == {"decode", "crop", "augment", "preprocess"}


# ---------------------------------------------------------------- notebook 00_data
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "00_data.ipynb"


def test_notebook_00_is_thin_and_clean():
    nb = json.loads(NOTEBOOK.read_text())   # plain JSON: nbformat's schema validation costs seconds
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    src = ["".join(c["source"]) for c in code]
    params = [i for i, c in enumerate(code) if "parameters" in c["metadata"].get("tags", [])]
    assert params == [0]
    assert [line.split("=")[0].strip() for line in src[0].splitlines()] == ["profile", "data_root", "run_dir", "seeds",
                                                                          "overrides"]
    for c, text in zip(code, src):
        assert not c["outputs"] and c["execution_count"] is None
        assert not any(line.lstrip().startswith(("def ", "class ")) for line in text.splitlines())
    assert src[-1].strip() == "common.record(study)"


@pytest.mark.slow
def test_notebook_00_runs_under_papermill(tiny_celeba_clean, tmp_path):
    import papermill  # a core dependency: imported here only to keep collection light

    run_dir = tmp_path / "run"
    papermill.execute_notebook(str(NOTEBOOK), str(tmp_path / "out.ipynb"), kernel_name="python3",
                               parameters={"profile": "smoke", "data_root": str(tiny_celeba_clean),
                                           "run_dir": str(run_dir), "seeds": None},
                               cwd=str(NOTEBOOK.parent), progress_bar=False)
    import pandas as pd
    table = pd.read_csv(run_dir / "tables" / "data_summary.csv")
    assert list(table["split"]) == ["train", "test"] and (table["dataset"] == "CelebA-Spoof").all()
    for name in ("data_samples", "data_spectra", "data_labels"):
        assert (run_dir / "figures" / f"{name}.png").stat().st_size > 1000
    entry = json.loads((run_dir / "manifest.json").read_text())["entries"]["00_data"]
    assert entry["parameters"]["profile"] == "smoke"
    assert sorted(entry["outputs"]) == ["figures/data_labels.png", "figures/data_samples.png",
                                        "figures/data_spectra.png", "figures/realism_card.png",
                                        "tables/data_summary.csv", "tables/realism.csv"]
    realism = pd.read_csv(run_dir / "tables" / "realism.csv")    # the realism card read the real layout too
    assert realism["spoof_type"].iloc[0] == 0 and (realism["dataset"] == "CelebA-Spoof").all()
