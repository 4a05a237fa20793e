"""`paperkit evaluate`: figures consistent with paperkit.metrics, no-face and truncated photos counted, clear
layout errors, the report files. The detector is stubbed (any textured image has one centred face), so the
tests need neither dlib's speed nor real photos; the model is a hand-built 32x32 ONNX graph."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from paperkit import cli, evaluate, metrics, predict
from paperkit.detect import Face
from tests.conftest import face_image, tiny_colour_onnx


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_colour_onnx(tmp_path_factory.mktemp("models") / "tiny.onnx")


@pytest.fixture(autouse=True)
def stub_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    """One centred face in any image with texture; none in a flat one (a wall)."""
    def fake(rgb: np.ndarray, detector: str) -> list[Face]:
        if rgb.std() < 3:
            return []
        h, w = rgb.shape[:2]
        box = (w // 4, h // 4, w // 2, h // 2)
        return [Face(box, box, "stub", 1.0)]
    monkeypatch.setattr(predict, "_detect", fake)


def _photos(root: Path, n_live: int = 5, n_spoof: int = 5) -> Path:
    """live/ and spoof/ at two depths, a flat (no-face) live image and a truncated spoof JPEG."""
    for name, n, base in (("live", n_live, 0), ("spoof", n_spoof, 100)):
        for i in range(n):
            d = root / name / ("deep" if i % 2 else "")
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"{name}{i}.{'png' if i == 2 else 'jpg'}"), face_image(base + i, 96, 96))
    cv2.imwrite(str(root / "live" / "wall.png"), np.full((80, 80, 3), 128, np.uint8))
    ok, buf = cv2.imencode(".jpg", face_image(999, 96, 96))
    (root / "spoof" / "cut.jpg").write_bytes(buf.tobytes()[: len(buf) // 2])
    (root / "spoof" / "notes.txt").write_text("not a photo")
    return root


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["evaluate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _figure(out: str, name: str) -> tuple[float, float, float]:
    m = re.search(rf"^{name}\s+([\d.]+) \[([\d.]+), ([\d.]+)\]", out, re.M)
    assert m, f"{name} missing from:\n{out}"
    return float(m[1]), float(m[2]), float(m[3])


def test_figures_match_metrics_and_report_is_written(capsys, model_path: Path, tmp_path: Path) -> None:
    root = _photos(tmp_path / "photos")
    rep = tmp_path / "report"
    code, out, err = _run(capsys, str(root), "--model", str(model_path), "--report", str(rep))
    assert code == 0, err
    assert "photos: 6 live, 6 spoof" in out and "scored: 5 live, 5 spoof" in out
    assert "faces not found: 1 (live 1, spoof 0)" in out and "live/wall.png" in out
    assert "unreadable: 1 (live 0, spoof 1)" in out and "spoof/cut.jpg" in out and "truncated" in out
    assert "spoof/notes.txt: not an image file" in out
    assert "bootstrap over 10 images" in out

    rows = list(csv.DictReader((rep / "scores.csv").open()))
    assert len(rows) == 12                                   # every photo, scored or not
    assert {r["file"]: r["status"] for r in rows}["live/wall.png"] == "no_face"
    ok = [r for r in rows if r["score"]]
    s = np.array([float(r["score"]) for r in ok])
    y = np.array([int(r["label"] == "spoof") for r in ok])
    want = metrics.evaluate(s, y, 0.5)
    doc = json.loads((rep / "metrics.json").read_text())
    m = doc["metrics"]
    assert doc["bootstrap_unit"] == "images" and doc["no_face"] == ["live/wall.png"]
    assert [u["file"] for u in doc["unreadable"]] == ["spoof/cut.jpg"]
    for key, printed_name, scale, tol in (("auc", "AUC", 1, 5e-4), ("apcer", "APCER", 100, 0.05),
                                          ("bpcer", "BPCER", 100, 0.05), ("acer", "ACER", 100, 0.05)):
        assert m[key] == pytest.approx(scale * want[key], abs=1e-4)
        v, lo, hi = _figure(out, printed_name)
        assert v == pytest.approx(scale * want[key], abs=tol)
        assert lo <= v <= hi
        assert m[f"{key}_ci_low"] == pytest.approx(lo, abs=tol) and m[f"{key}_ci_high"] == pytest.approx(hi, abs=tol)
    sheet = cv2.imread(str(rep / "worst_errors.png"))
    assert sheet is not None and sheet.shape[0] == 2 * (evaluate.THUMB + 34)
    assert sheet.shape[1] == evaluate.SHEET_PER_CLASS * evaluate.THUMB


def test_worst_errors_order() -> None:
    rows = [evaluate.Row(f"{i}", lab, f"{i}", lab, "x", sc) for i, (lab, sc) in
            enumerate([(0, 0.1), (0, 0.9), (1, 0.8), (1, 0.2), (0, None)])]
    assert [r.file for r in evaluate.worst(rows, 2)] == ["1", "0", "3", "2"]


def test_missing_spoof_folder_and_root(capsys, model_path: Path, tmp_path: Path) -> None:
    root = _photos(tmp_path / "photos")
    for p in sorted((root / "spoof").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (root / "spoof").rmdir()
    code, out, err = _run(capsys, str(root), "--model", str(model_path))
    assert code == 2 and out == ""
    assert "no spoof/ folder" in err and "expected ROOT/live/** and ROOT/spoof/**" in err
    code, _, err = _run(capsys, str(tmp_path / "nowhere"), "--model", str(model_path))
    assert code == 2 and "does not exist" in err


def test_empty_class_folder_and_bad_model(capsys, model_path: Path, tmp_path: Path) -> None:
    root = _photos(tmp_path / "photos")
    empty = tmp_path / "empty"
    (empty / "live" / "sub").mkdir(parents=True)
    (empty / "spoof").mkdir()
    cv2.imwrite(str(empty / "spoof" / "a.png"), face_image(1))
    code, _, err = _run(capsys, str(empty), "--model", str(model_path))
    assert code == 2 and "live: no images" in err
    code, _, err = _run(capsys, str(root), "--model", str(tmp_path / "m.pt"))
    assert code == 2 and "ONNX" in err


def test_celeba_tree_bootstraps_over_subjects(capsys, model_path: Path, tiny_celeba_clean: Path) -> None:
    code, out, err = _run(capsys, str(tiny_celeba_clean), "--model", str(model_path), "--threshold", "0.4")
    assert code == 0, err
    assert "CelebA-Spoof tree (test split)" in out and "bootstrap over 2 subjects" in out
    assert "threshold 0.4" in out



def test_several_models_give_each_figure_and_their_mean_auc(capsys, model_path: Path, tmp_path: Path) -> None:
    """One block per model, then the mean AUC over the photos all of them scored, with a joint interval."""
    root = _photos(tmp_path / "photos")
    other = tiny_colour_onnx(tmp_path / "other.onnx", np.array([[-1.0, 1.0], [2.0, -1.0], [0.0, 1.0]]))
    rep = tmp_path / "report"
    code, out, err = _run(capsys, str(root), "--model", str(model_path), "--model", str(other), "--report", str(rep))
    assert code == 0, err
    blocks = out.split("paperkit evaluate ")[1:]
    assert len(blocks) == 2
    aucs = [_figure(b, "AUC")[0] for b in blocks]
    assert aucs[0] != aucs[1]
    m = re.search(r"across 2 models: mean AUC ([\d.]+) \[([\d.]+), ([\d.]+)\] \(each model ([\d.]+)-([\d.]+)\)", out)
    assert m, out
    mean, lo, hi = float(m[1]), float(m[2]), float(m[3])
    assert mean == pytest.approx(sum(aucs) / 2, abs=1e-3) and lo <= mean <= hi
    assert (float(m[4]), float(m[5])) == pytest.approx((min(aucs), max(aucs)), abs=1e-3)
    assert "over 10 images scored by every model" in out
    doc = json.loads((rep / "across_models.json").read_text())
    assert doc["model_files"] == [str(model_path), str(other)] and doc["models"] == 2 and doc["n_scored"] == 10
    assert (rep / "0_tiny" / "metrics.json").is_file() and (rep / "1_other" / "scores.csv").is_file()


def test_probe_rescores_every_photo_under_each_capture_change(capsys, model_path: Path, tmp_path: Path) -> None:
    root = _photos(tmp_path / "photos")
    rep = tmp_path / "report"
    code, out, err = _run(capsys, str(root), "--model", str(model_path), "--report", str(rep), "--probe")
    assert code == 0, err
    assert "what moves the scores" in out
    table = list(csv.DictReader((rep / "probe.csv").open()))
    assert [(t["change"], float(t["level"])) for t in table] == [("none", 0.0), *evaluate.PROBES]
    none = table[0]
    assert float(none["flipped_pct"]) == 0 and float(none["auc"]) == pytest.approx(_figure(out, "AUC")[0], abs=5e-4)
    # the brighter row is what the deployed path gives on brightened photos (same box, same crop)
    from paperkit import robustness
    scorer = predict.Scorer(model_path)
    rows = [r for r in csv.DictReader((rep / "scores.csv").open()) if r["score"]]
    live = []
    for r in rows:
        img = cv2.cvtColor(cv2.imread(str(root / r["file"])), cv2.COLOR_BGR2RGB)
        box = tuple(float(v) for v in r["box"].split())          # the box the photo was scored with
        im, b = robustness.by_name("brightness").apply(img, box, 40.0)
        if r["label"] == "live":
            live.append(scorer.score_faces(im, [b])[0])
    bright = next(t for t in table if t["change"] == "brightness" and float(t["level"]) == 40)
    assert float(bright["mean_score_live"]) == pytest.approx(float(np.mean(live)), abs=1e-5)
    dark = next(t for t in table if t["change"] == "brightness" and float(t["level"]) == -40)
    base = float(none["mean_score_live"])
    assert (float(bright["mean_score_live"]) - base) * (float(dark["mean_score_live"]) - base) < 0
