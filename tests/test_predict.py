"""`paperkit predict`: a real photo, a video, broken inputs, the missing-default-model message."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from paperkit import export, predict
from paperkit.models.texture import texture_net


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained) texture model exported at 64x64: predict must read the size from the file."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("models") / "texture_fp32.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export.export_onnx(texture_net().eval(), out, input_size=64)


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
