"""`paperkit predict`: a real photo, a video, broken inputs, the missing-default-model message."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from paperkit import deploy, model_card, predict
from paperkit.models.texture import texture_net


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained) texture model exported at 64x64: predict must read the size from the file."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("models") / "texture_fp32.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return deploy.export_onnx(texture_net().eval(), out, input_size=64)


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real photograph with a frontal face, from an installed package (scikit-image)."""
    from skimage import data as skdata

    path = tmp_path_factory.mktemp("photos") / "astronaut.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    return path


def _run(capsys, *args, **kw) -> tuple[int, str, str]:
    code = predict.cli_predict(*args, **kw)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_real_photo_json(capsys, model_path: Path, astronaut: Path) -> None:
    code, out, err = _run(capsys, [str(astronaut)], str(model_path), 0.5, True)
    assert code == 0, err
    rep = json.loads(out)
    assert rep["input_size"] == 64 and rep["errors"] == []
    assert len(rep["faces"]) >= 1
    face = rep["faces"][0]
    assert face["file"] == str(astronaut) and face["frame"] is None
    x, y, w, h = face["box"]
    assert 120 < x + w / 2 < 300 and 50 < y + h / 2 < 200     # the astronaut's face, upper middle
    assert 0.0 <= face["score"] <= 1.0
    assert face["label"] == ("spoof" if face["score"] >= 0.5 else "live")
    # threshold decides the label; text output names the file
    code, out, _ = _run(capsys, [str(astronaut)], str(model_path), 0.0, False)
    assert code == 0 and "-> spoof" in out and str(astronaut) in out


def test_video_scores_frames_and_reports_fps(capsys, model_path: Path, astronaut: Path, tmp_path: Path) -> None:
    bgr = cv2.imread(str(astronaut))
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (bgr.shape[1], bgr.shape[0]))
    for _ in range(3):
        w.write(bgr)
    w.release()
    code, out, err = _run(capsys, [str(video)], str(model_path), 0.5, True)
    assert code == 0, err
    rep = json.loads(out)
    (v,) = rep["videos"]
    assert v["frames"] == 3 and v["frames_with_face"] == 3 and v["fps"] > 0
    frames = [f for f in rep["faces"] if f["frame"] is not None]
    assert sorted({f["frame"] for f in frames}) == [0, 1, 2]
    assert v["score"] == pytest.approx(np.mean([f["score"] for f in frames if f["box"] == frames[0]["box"]]), abs=0.05)


@pytest.mark.parametrize("kind, message", [
    ("zero", "empty file"),
    ("text", "does not decode as an image"),
    ("empty_video", "no readable frames|could not open"),
    ("no_face", "no face found"),
    ("missing", "no such file"),
])
def test_broken_inputs(capsys, model_path: Path, tmp_path: Path, kind: str, message: str) -> None:
    if kind == "zero":
        p = tmp_path / "zero.jpg"
        p.write_bytes(b"")
    elif kind == "text":
        p = tmp_path / "notes.jpg"
        p.write_text("this is not an image\n")
    elif kind == "empty_video":
        p = tmp_path / "empty.avi"
        cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64)).release()
        assert p.exists()
    elif kind == "no_face":
        p = tmp_path / "gradient.png"
        cv2.imwrite(str(p), np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (150, 1)))
    else:
        p = tmp_path / "nothing_here.png"
    code, out, err = _run(capsys, [str(p)], str(model_path), 0.5, True)
    assert code == 1
    import re
    assert re.search(message, err), err
    assert str(p) in err and "nothing could be scored" in err
    rep = json.loads(out)
    assert rep["faces"] == [] and rep["errors"][0]["file"] == str(p)


def test_partial_success_exits_zero_and_reports_the_rest(capsys, model_path: Path, astronaut: Path,
                                                         tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    code, out, err = _run(capsys, [str(astronaut), str(bad)], str(model_path), 0.5, False)
    assert code == 0
    assert str(bad) in err and "1 problem(s)" in out


def test_default_model_missing_message(capsys, monkeypatch, astronaut: Path, tmp_path: Path) -> None:
    monkeypatch.setattr(predict, "DEFAULT_MODELS", [tmp_path / "results/models/texture_int8.onnx"])
    code, _, err = _run(capsys, [str(astronaut)], None, 0.5, False)
    assert code == 2
    assert "make reproduce" in err and "--model" in err and "texture_int8.onnx" in err


def test_default_model_used_when_present(capsys, monkeypatch, model_path: Path, astronaut: Path) -> None:
    monkeypatch.setattr(predict, "DEFAULT_MODELS", [model_path])
    code, out, _ = _run(capsys, [str(astronaut)], None, 0.5, True)
    assert code == 0 and json.loads(out)["model"] == str(model_path)


def test_bad_model_file_and_threshold(capsys, astronaut: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_text("not onnx")
    code, _, err = _run(capsys, [str(astronaut)], str(junk), 0.5, False)
    assert code == 2 and "junk.onnx" in err
    code, _, err = _run(capsys, [str(astronaut)], str(tmp_path / "absent.onnx"), 0.5, False)
    assert code == 2 and "not found" in err
    code, _, err = _run(capsys, [str(astronaut)], str(junk), 1.5, False)
    assert code == 2 and "threshold" in err


def _tree(tmp_path: Path, astronaut: Path) -> Path:
    """A user's folder: live/ and spoof/ at different depths, a photo with no face, a truncated JPEG."""
    root = tmp_path / "photos"
    (root / "live" / "day1").mkdir(parents=True)
    (root / "spoof").mkdir(parents=True)
    data = astronaut.read_bytes()
    (root / "live" / "day1" / "a.jpg").write_bytes(data)
    (root / "spoof" / "b.jpg").write_bytes(data)
    cv2.imwrite(str(root / "spoof" / "wall.png"), np.full((120, 160, 3), 128, np.uint8))
    (root / "spoof" / "cut.jpg").write_bytes(data[: len(data) // 2])
    return root


def test_folders_of_any_depth_totals_and_csv(capsys, model_path: Path, astronaut: Path, tmp_path: Path) -> None:
    root = _tree(tmp_path, astronaut)
    out_csv = tmp_path / "out" / "scores.csv"
    code, out, err = _run(capsys, [str(root)], str(model_path), 0.0, True, str(out_csv))
    assert code == 0, err
    rep = json.loads(out)
    status = {Path(f["file"]).name: f["status"] for f in rep["files"]}
    assert status == {"a.jpg": "spoof", "b.jpg": "spoof", "wall.png": "no_face", "cut.jpg": "unreadable"}
    tot = rep["totals"]
    assert tot[str(root / "live" / "day1")] | {} == {"live": 0, "spoof": 1, "no_face": 0, "unreadable": 0,
                                                     "error": 0, "files": 1}
    assert tot[str(root / "spoof")]["no_face"] == 1 and tot[str(root / "spoof")]["unreadable"] == 1
    assert tot["all"]["files"] == 4 and tot["all"]["spoof"] == 2
    assert "cut.jpg" in err and "truncated" in err and "wall.png" in err
    import csv
    rows = list(csv.DictReader(out_csv.open()))
    assert [Path(r["file"]).name for r in rows] == [Path(f["file"]).name for f in rep["files"]]
    face = next(r for r in rows if r["file"].endswith("a.jpg"))
    assert face["status"] == "spoof" and face["detector"] == "hog" and float(face["confidence"]) > 0
    assert len(face["box"].split()) == 4
    # text output: per-folder totals and the no-face file by name
    code, out, _ = _run(capsys, [str(root)], str(model_path), 0.5, False)
    assert "no face" in out and "wall.png: no face found" in out and str(root / "spoof") in out


def test_no_face_everywhere_is_counted_not_raised(capsys, model_path: Path, tmp_path: Path) -> None:
    d = tmp_path / "walls" / "deep" / "er"
    d.mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(d / f"{i}.png"), np.full((80, 80, 3), 40 * i, np.uint8))
    code, out, err = _run(capsys, [str(tmp_path / "walls")], str(model_path), 0.5, True)
    assert code == 1 and "nothing could be scored" in err
    assert json.loads(out)["totals"]["all"]["no_face"] == 3


def test_progress_bar_on_many_files(capsys, monkeypatch, model_path: Path, astronaut: Path, tmp_path: Path) -> None:
    monkeypatch.setattr(predict, "PROGRESS_MIN_FILES", 2)
    for i in range(2):
        (tmp_path / f"{i}.jpg").write_bytes(astronaut.read_bytes())
    code, _, err = _run(capsys, [str(tmp_path)], str(model_path), 0.5, False)
    assert code == 0 and "paperkit predict" in err and "2/2" in err


def test_detector_choice_and_bad_detector(capsys, model_path: Path, astronaut: Path) -> None:
    code, out, _ = _run(capsys, [str(astronaut)], str(model_path), 0.5, True, None, "cnn")
    assert code == 0 and json.loads(out)["faces"][0]["detector"] == "cnn"
    code, _, err = _run(capsys, [str(astronaut)], str(model_path), 0.5, True, None, "yolo")
    assert code == 2 and "--detector" in err


def test_packaged_model_and_card(capsys) -> None:
    assert predict.DEFAULT_MODELS[0] == predict.ASSETS / predict.MODEL_NAME
    model = predict.default_model()
    assert model is not None and model.parent == predict.ASSETS
    assert model.stat().st_size < 1024 * 1024
    code, out, _ = _run(capsys, [], None, 0.5, False, None, "auto", True)
    assert code == 0 and "# Model card" in out and "fingerprint" in out and "Known limits" in out


def test_ship_model_writes_asset_and_card(tmp_path: Path, model_path: Path) -> None:
    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    (run / "tables").mkdir()
    ds = {"name": "synthetic (paperkit synth v3, profile default, seed 0)", "generator": "paperkit.synth",
          "version": "3", "fingerprint": "feedfacecafe0001", "counts": {"train": {"images": 40, "subjects": 4},
                                                                       "test": {"images": 10, "subjects": 1}}}
    (run / "manifest.json").write_text(json.dumps({"entries": {"02_fourier_texture": {
        "dataset": ds, "git_revision": "abc1234", "parameters": {"profile": "default"}}}}))
    (run / "tables" / "texture_deploy.csv").write_text(
        "model,format,dataset,acer,acer_ci_low,acer_ci_high,apcer,bpcer,accuracy\n"
        "texture,int8,synthetic,5.4,4.0,7.1,7.5,3.4,94.0\n")
    assets = tmp_path / "assets"
    src = run / "models" / "texture_int8.onnx"
    src.write_bytes((predict.ASSETS / predict.MODEL_NAME).read_bytes())
    target = model_card.ship_model(src, run, real_dir=None, assets_dir=assets)
    assert target == assets / predict.MODEL_NAME and target.read_bytes() == src.read_bytes()
    card = (assets / predict.CARD_NAME).read_text()
    assert "5.40 [4.00, 7.10]" in card and "feedfacecafe0001" in card and "version 3" in card
    assert "128x128" in card and "not run" in card
    assert (run / "models" / "texture_int8.md").read_text() == card
    with pytest.raises(FileNotFoundError, match="no such model"):
        model_card.ship_model(tmp_path / "absent.onnx", run, assets_dir=assets)
    with pytest.raises(ValueError, match="under 1 MB"):      # the FP32 export is too big to ship
        model_card.ship_model(model_path, run, assets_dir=assets)
