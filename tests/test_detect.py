"""paperkit.detect: the cascade, padding for tight crops, the box convention, the benchmark and the ACER check.

Images come from installed packages (scikit-image's astronaut) and the synthetic renderer; never from
real-photo folders outside the repository."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from paperkit import detect
from paperkit.synth import identity, person

ASTRONAUT_FACE = (168, 73, 109, 109)  # dlib HOG's box on skimage's astronaut (x, y, w, h)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data as skdata

    return skdata.astronaut()


def _tight(img: np.ndarray, cut: float = 0.2) -> np.ndarray:
    """The face with a fifth of the detector's own box cut from each side: a photo that is all face."""
    x, y, w, h = ASTRONAUT_FACE
    c = int(w * cut)
    return np.ascontiguousarray(img[y + c:y + h - c, x + c:x + w - c])


def test_finds_the_face_with_detector_and_confidence(astronaut: np.ndarray) -> None:
    for name, expect in (("auto", "hog"), ("fast", "hog"), ("cnn", "cnn"), ("haar", "haar")):
        found = detect.detect(astronaut, name)
        assert found, name
        f = found[0]
        assert f.detector == expect and isinstance(f.confidence, float)
        x, y, w, h = f.raw_box
        assert 170 < x + w / 2 < 270 and 70 < y + h / 2 < 190, (name, f)   # her face, upper middle
        s, dx, dy = detect.CALIBRATION[expect]
        assert f.box[2] == f.box[3] == pytest.approx(s * max(w, h), abs=1)   # converted: a square


def test_no_face_in_a_gradient() -> None:
    grad = np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (150, 1))
    assert detect.detect(grad) == []
    assert detect.detect(np.dstack([grad] * 3), "cnn") == []


def test_padding_finds_a_tight_crop(astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    tight = _tight(astronaut)
    found = detect.detect(tight, "fast")
    assert len(found) == 1 and found[0].detector == "hog"
    monkeypatch.setattr(detect, "PAD_FRACTION", 0.0)
    assert detect.detect(tight, "fast") == []        # the padding is what makes it work


def test_auto_falls_back_to_the_cnn(astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detect, "hog_raw", lambda img: [])
    found = detect.detect(astronaut, "auto")
    assert found and found[0].detector == "cnn" and 0 < found[0].confidence
    # HOG hits it is not sure of are kept only when the CNN finds nothing either
    monkeypatch.setattr(detect, "hog_raw", lambda img: [((10, 10, 50, 50), -0.2)])
    monkeypatch.setattr(detect, "cnn_raw", lambda img: [])
    (weak,) = detect.detect(astronaut, "auto")
    assert weak.detector == "hog" and weak.confidence == pytest.approx(-0.2)
    assert detect.detect(astronaut, "fast") == []


def test_box_convention_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(detect.CALIBRATION, "hog", (1.5, 0.1, -0.2))
    # box 100x80 at (10, 20): centre (60, 60), side 100 -> square 150 centred at (70, 40)
    assert detect.to_bb_convention((10, 20, 100, 80), "hog") == (-5, -35, 150, 150)


def test_rejects_unknown_detector_and_odd_images() -> None:
    with pytest.raises(ValueError, match="unknown detector"):
        detect.detect(np.zeros((32, 32, 3), np.uint8), "yolo")
    assert detect.as_uint8_rgb(np.zeros((8, 8), np.float32)).shape == (8, 8, 3)
    assert detect.as_uint8_rgb(np.zeros((8, 8, 4), np.uint8)).shape == (8, 8, 3)


def test_synthetic_face_is_found_where_its_bb_says() -> None:
    """A rendered dataset face: the detector's converted box lands on the stored _BB.txt box."""
    r = np.random.default_rng(3)
    rgb, alpha, box, _ = person.render_person(identity.make_identity(0, 3), identity.Pose(), 224, r)
    img = (np.clip(rgb * alpha[..., None] + 0.55 * (1 - alpha[..., None]), 0, 1) * 255).astype(np.uint8)
    found = detect.detect(img)
    assert found, "no face in a frontal synthetic render"
    bx, by, bw, bh = box
    x, y, w, h = found[0].box
    side = max(bw, bh)
    assert abs((x + w / 2) - (bx + bw / 2)) < 0.15 * side and abs((y + h / 2) - (by + bh / 2)) < 0.15 * side
    assert 0.75 < w / side < 1.3


def test_bench_folder_counts_per_detector(tmp_path: Path, astronaut: np.ndarray) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "a" / "b" / "face.jpg"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "a" / "flat.png"), np.full((60, 80, 3), 90, np.uint8))
    rows = detect.bench_folder(tmp_path, ("fast", "auto"))
    assert [r["detector"] for r in rows] == ["fast", "auto"]
    for r in rows:
        assert r["images"] == 2 and r["with_face"] == 1 and r["no_face"] == ["a/flat.png"]
        assert r["median_ms"] > 0 and r["p95_ms"] >= r["median_ms"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        detect.bench_folder(tmp_path / "empty")


def test_check_boxes_on_a_tiny_synthetic_tree(tmp_path: Path) -> None:
    from paperkit import predict, synth
    from paperkit.profiles import get_profile

    model = predict.default_model()
    if model is None:
        pytest.skip("no packaged model (paperkit/assets/texture_int8.onnx)")
    tiny = get_profile("smoke", synth_identities=4, synth_live_per_identity=2, synth_spoof_per_identity=2,
                       synth_image_size=224)
    root = synth.build(tmp_path / "ds", profile=tiny, seed=0, progress=False)
    res = detect.check_boxes(root, model, detector="fast")
    assert res["images"] > 0 and res["all"]["images"] == res["images"]
    assert res["found"]["images"] == res["images"] - res["no_face"]
    for k in ("acer_stored_boxes", "acer_detector_boxes", "acer_difference"):
        v = res["all"][k]
        assert v != v or 0.0 <= abs(v) <= 100.0   # NaN only when a class is absent
