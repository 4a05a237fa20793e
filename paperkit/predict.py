"""`paperkit predict PATH... [--model FILE.onnx] [--threshold T] [--json]` (seed 002's first command).

Scores every face in images or video files with an ONNX model: faces come from OpenCV's Haar cascade
bundled with opencv-python-headless 4.x (no download, `paperkit.faces.find_faces`), each is cropped
exactly as the dataset reader crops (`paperkit.data.crop_face` + `preprocess`), so deployment sees
what training saw. A video gets per-frame scores (largest face of each frame), the video-level score
(mean of frame scores, as seed 001 aggregates) and the frame rate achieved end to end.

Every problem is reported with the file and the reason; nothing is skipped silently. Exit status:
0 if at least one face was scored, 1 if nothing could be scored, 2 if the model is missing/unloadable.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

MODEL_NAME = "texture_int8.onnx"
#: Where `make reproduce` leaves the committed INT8 model: relative to the working directory first,
#: then the checkout this package lives in.
DEFAULT_MODELS: list[Path] = [Path("results/models") / MODEL_NAME,
                              Path(__file__).resolve().parent.parent / "results" / "models" / MODEL_NAME]
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MAX_VIDEO_FRAMES = 100_000


class PredictError(RuntimeError):
    """One input cannot be scored; the message names the file and the reason."""


@dataclass
class FaceResult:
    file: str
    box: list[int]
    score: float
    label: str
    frame: int | None = None


@dataclass
class VideoResult:
    file: str
    frames: int
    frames_with_face: int
    score: float | None
    label: str | None
    fps: float


@dataclass
class Report:
    model: str
    threshold: float
    input_size: int
    faces: list[FaceResult] = field(default_factory=list)
    videos: list[VideoResult] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_model() -> Path | None:
    """The INT8 model of the last `make reproduce`, or None when there is none."""
    for p in DEFAULT_MODELS:
        if p.is_file():
            return p
    return None


def missing_model_message() -> str:
    where = ", ".join(str(p) for p in DEFAULT_MODELS)
    return (f"no default model: {MODEL_NAME} not found (looked in {where}). Run `make reproduce` "
            f"(it writes results/models/{MODEL_NAME}) or pass --model FILE.onnx")


class Scorer:
    """An ONNX model plus the shared crop/preprocess path; scores one face at a time."""

    def __init__(self, model_path: str | Path, threads: int = 1) -> None:
        from paperkit.export import input_size_of, ort_session

        self.path = Path(model_path)
        self.session = ort_session(self.path, threads=threads)
        self.input_size = input_size_of(self.session)
        shape = self.session.get_inputs()[0].shape
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"{self.path}: expected an input of shape [N,3,H,W], got {shape}")

    def score_faces(self, rgb: np.ndarray, boxes: Sequence[Sequence[int]]) -> list[float]:
        from paperkit.data import crop_face, preprocess
        from paperkit.export import run_logits, softmax_spoof

        if not boxes:
            return []
        x = np.stack([preprocess(crop_face(rgb, b, self.input_size), self.input_size).numpy()
                      for b in boxes])
        fixed_batch = self.session.get_inputs()[0].shape[0]
        if isinstance(fixed_batch, int):
            logits = np.concatenate([run_logits(self.session, x[i:i + 1]) for i in range(len(x))])
        else:
            logits = run_logits(self.session, x)
        return [float(s) for s in softmax_spoof(logits)]


def _label(score: float, threshold: float) -> str:
    return "spoof" if score >= threshold else "live"


def _find_faces(rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
    from paperkit.faces import find_faces

    return find_faces(rgb)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise PredictError(f"{path}: no such file")
    if not path.is_file():
        raise PredictError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise PredictError(f"{path}: empty file (0 bytes), not an image or a video")


def _read_image(path: Path) -> tuple[np.ndarray | None, str]:
    """(RGB uint8, "") via the dataset reader's decoder, or (None, why it is not a usable image)."""
    from paperkit.data import ImageError, decode_image

    try:
        return decode_image(path), ""
    except ImageError as e:
        if "decompression-bomb" in str(e):
            raise PredictError(str(e)) from e
        return None, str(e)


def score_image(scorer: Scorer, path: Path, rgb: np.ndarray, threshold: float) -> list[FaceResult]:
    boxes = _find_faces(rgb)
    if not boxes:
        raise PredictError(f"{path}: no face found (Haar cascade, frontal faces only); "
                           f"nothing scored for this image")
    scores = scorer.score_faces(rgb, boxes)
    return [FaceResult(str(path), [int(v) for v in b], s, _label(s, threshold)) for b, s in zip(boxes, scores)]


def score_video(scorer: Scorer, path: Path, threshold: float,
                max_frames: int = MAX_VIDEO_FRAMES) -> tuple[list[FaceResult], VideoResult]:
    """Every frame: detect, score all faces; frame score = its largest face; video score = mean."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise PredictError(f"{path}: not a readable image or video (OpenCV could not open it)")
    faces: list[FaceResult] = []
    frame_scores: list[float] = []
    n = 0
    t0 = time.perf_counter()
    try:
        while n < max_frames:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 else cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
            boxes = _find_faces(rgb)
            scores = scorer.score_faces(rgb, boxes)
            for b, s in zip(boxes, scores):
                faces.append(FaceResult(str(path), [int(v) for v in b], s, _label(s, threshold), frame=n))
            if scores:
                frame_scores.append(scores[0])  # boxes come largest first
            n += 1
    finally:
        cap.release()
    elapsed = time.perf_counter() - t0
    if n == 0:
        raise PredictError(f"{path}: video has no readable frames")
    fps = n / elapsed if elapsed > 0 else math.inf
    if not frame_scores:
        raise PredictError(f"{path}: no face found in any of its {n} frames")
    vs = float(np.mean(frame_scores))
    return faces, VideoResult(str(path), n, len(frame_scores), vs, _label(vs, threshold), round(fps, 2))


def predict_paths(paths: Sequence[str | Path], scorer: Scorer, threshold: float) -> Report:
    """Score every path; problems become `Report.errors` entries (file + message), never exceptions."""
    rep = Report(model=str(scorer.path), threshold=threshold, input_size=scorer.input_size)
    for p in _expand(paths, rep):
        try:
            _check_file(p)
            suffix = p.suffix.lower()
            rgb, why = (None, "") if suffix in VIDEO_SUFFIXES else _read_image(p)
            if rgb is not None:
                rep.faces.extend(score_image(scorer, p, rgb, threshold))
            elif suffix in IMAGE_SUFFIXES:
                raise PredictError(f"{p}: does not decode as an image (corrupt, truncated or not an "
                                   f"image file despite its {suffix} name; reader said: {why})")
            else:
                faces, video = score_video(scorer, p, threshold)
                rep.faces.extend(faces)
                rep.videos.append(video)
        except PredictError as e:
            rep.errors.append({"file": str(p), "error": str(e)})
    return rep


def _expand(paths: Sequence[str | Path], rep: Report) -> list[Path]:
    """Directories expand to their image/video files (sorted); an empty directory is reported."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file()
                           and f.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
            if not files:
                rep.errors.append({"file": str(p), "error": f"{p}: directory has no image or video files"})
            out.extend(files)
        else:
            out.append(p)
    return out


def format_report(rep: Report) -> str:
    lines = [f"model {rep.model} (input {rep.input_size}x{rep.input_size}), threshold {rep.threshold:g}"]
    for f in rep.faces:
        where = f"{f.file}" + (f" frame {f.frame}" if f.frame is not None else "")
        x, y, w, h = f.box
        lines.append(f"{where}: face at x={x} y={y} w={w} h={h}  P(spoof)={f.score:.4f}  -> {f.label}")
    for v in rep.videos:
        lines.append(f"{v.file}: video score {v.score:.4f} -> {v.label} (mean of {v.frames_with_face} frame "
                     f"scores; {v.frames} frames read at {v.fps:.1f} fps)")
    lines.append(f"{len(rep.faces)} face(s) scored, {len(rep.errors)} problem(s)")
    return "\n".join(lines)


def cli_predict(paths: Sequence[str], model: str | None = None, threshold: float = 0.5,
                as_json: bool = False) -> int:
    """Entry point of `paperkit predict`; returns the process exit status (see module docstring)."""
    if not (0.0 <= threshold <= 1.0):
        print(f"paperkit predict: --threshold must be in [0, 1], got {threshold}", file=sys.stderr)
        return 2
    if model is None:
        found = default_model()
        if found is None:
            print(f"paperkit predict: {missing_model_message()}", file=sys.stderr)
            return 2
        model_path = found
    else:
        model_path = Path(model)
        if not model_path.is_file():
            print(f"paperkit predict: model {model_path} not found; pass an existing .onnx file to --model "
                  f"or run `make reproduce` to create results/models/{MODEL_NAME}", file=sys.stderr)
            return 2
    try:
        scorer = Scorer(model_path)
    except (RuntimeError, ValueError) as e:
        print(f"paperkit predict: {e}", file=sys.stderr)
        return 2
    rep = predict_paths(paths, scorer, threshold)
    for err in rep.errors:
        print(f"paperkit predict: {err['error']}", file=sys.stderr)
    if as_json:
        print(json.dumps(rep.to_dict(), indent=2))
    else:
        print(format_report(rep))
    if not rep.faces:
        print("paperkit predict: nothing could be scored", file=sys.stderr)
        return 1
    return 0
