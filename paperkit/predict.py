"""`paperkit predict PATH... [--model FILE.onnx] [--threshold T] [--detector D] [--json] [--csv FILE]`.

Scores every face in images or video files (folders are searched at any depth) with an ONNX model. Faces
come from `paperkit.detect` (dlib HOG, then dlib's CNN when HOG is not sure; weights from registry
packages, nothing downloaded); each box is in the `_BB.txt` convention the models were trained with, and
each face is cropped exactly as the dataset reader crops (`paperkit.crop.crop_face` + `preprocess`), so
deployment sees what training saw. A video gets per-frame scores (largest face of each frame), the
video-level score (mean of frame scores, as seed 001 aggregates) and the frame rate achieved end to end.

Every input file gets one result (`Report.files`): called live, called spoof (by its largest face), no
face, or a problem (unreadable, corrupt or truncated, ...) naming the file; totals are given per folder.
Nothing is skipped silently. Exit status: 0 if at least one face was scored, 1 if nothing could be
scored, 2 if the model is missing/unloadable or an option is invalid.

The default model is the one shipped inside the package (`paperkit/assets/texture_int8.onnx`, with its
model card `MODEL_CARD.md`; `--model-info` prints it); `paperkit.model_card.ship_model` regenerates both
from a run.
"""
from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

MODEL_NAME = "texture_int8.onnx"
CARD_NAME = "MODEL_CARD.md"
ASSETS = Path(__file__).resolve().parent / "assets"
#: Where the default model is looked up, in order: inside the package (what `pip install .` ships),
#: then `make reproduce`'s output relative to the working directory, then the checkout's.
DEFAULT_MODELS: list[Path] = [ASSETS / MODEL_NAME, Path("results/models") / MODEL_NAME,
                              Path(__file__).resolve().parent.parent / "results" / "models" / MODEL_NAME]
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MAX_VIDEO_FRAMES = 100_000
#: A progress bar (stderr) is shown from this many input files on.
PROGRESS_MIN_FILES = 20
#: Per-file outcomes, in the order totals are printed.
STATUSES = ("live", "spoof", "no_face", "unreadable", "error")


class PredictError(RuntimeError):
    """One input cannot be scored; the message names the file and the reason. `status` says which kind."""

    def __init__(self, message: str, status: str = "error") -> None:
        super().__init__(message)
        self.status = status


@dataclass
class FaceResult:
    file: str
    box: list[int]
    score: float
    label: str
    frame: int | None = None
    detector: str = ""
    confidence: float | None = None


@dataclass
class VideoResult:
    file: str
    frames: int
    frames_with_face: int
    score: float | None
    label: str | None
    fps: float


@dataclass
class FileResult:
    """One input file's outcome: `status` is one of STATUSES; score/label of its largest face (or video)."""

    file: str
    folder: str
    status: str
    score: float | None = None
    faces: int = 0
    detector: str = ""
    confidence: float | None = None
    box: list[int] | None = None
    message: str = ""


@dataclass
class Report:
    model: str
    threshold: float
    input_size: int
    detector: str = "auto"
    faces: list[FaceResult] = field(default_factory=list)
    videos: list[VideoResult] = field(default_factory=list)
    files: list[FileResult] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    def totals(self) -> dict[str, dict[str, int]]:
        """Per folder (and "all"): how many files were called live, spoof, had no face, or failed."""
        out: dict[str, Counter[str]] = {}
        for f in self.files:
            out.setdefault(f.folder, Counter())[f.status] += 1
        allc: Counter[str] = Counter(f.status for f in self.files)
        return {k: {s: int(c[s]) for s in STATUSES} | {"files": int(sum(c.values()))}
                for k, c in list(sorted(out.items())) + [("all", allc)]}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"totals": self.totals()}


# ----------------------------------------------------------------------------------------------
# The model

def default_model() -> Path | None:
    """The packaged INT8 model (or the last `make reproduce`'s), or None when there is none."""
    for p in DEFAULT_MODELS:
        if p.is_file():
            return p
    return None


def missing_model_message() -> str:
    where = ", ".join(str(p) for p in DEFAULT_MODELS)
    return (f"no default model: {MODEL_NAME} not found (looked in {where}). Reinstall paperkit (the wheel "
            f"ships it), run `make reproduce` (it writes results/models/{MODEL_NAME}) or pass --model FILE.onnx")


def model_card(model: Path | None = None) -> Path | None:
    """The model card next to a model file (`MODEL_CARD.md`, or `<stem>.md`), if there is one."""
    model = model or default_model()
    if model is None:
        return None
    for p in (model.with_name(CARD_NAME), model.with_suffix(".md")):
        if p.is_file():
            return p
    return None


class Scorer:
    """An ONNX model plus the shared crop/preprocess path; scores one face at a time."""

    def __init__(self, model_path: str | Path, threads: int = 1) -> None:
        from paperkit.deploy import input_size_of, ort_session

        self.path = Path(model_path)
        self.session = ort_session(self.path, threads=threads)
        self.input_size = input_size_of(self.session)
        shape = self.session.get_inputs()[0].shape
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"{self.path}: expected an input of shape [N,3,H,W], got {shape}")

    def score_faces(self, rgb: np.ndarray, boxes: Sequence[Sequence[int] | None]) -> list[float]:
        """P(spoof) per box (None = the centre-crop fallback of a missing box, as the reader does)."""
        from paperkit.crop import crop_face
        from paperkit.data import preprocess
        from paperkit.deploy import run_logits, softmax_spoof

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


# ----------------------------------------------------------------------------------------------
# Inputs

def _check_file(path: Path) -> None:
    if not path.exists():
        raise PredictError(f"{path}: no such file", "unreadable")
    if not path.is_file():
        raise PredictError(f"{path}: not a regular file", "unreadable")
    if path.stat().st_size == 0:
        raise PredictError(f"{path}: empty file (0 bytes), not an image or a video", "unreadable")


def truncation(path: Path) -> str:
    """Why a JPEG/PNG/... file is truncated or corrupt ("" when it decodes whole).

    OpenCV decodes a truncated JPEG into a partly grey image with only a warning on stderr, so a full
    decode with Pillow (which raises on missing data) is the check; formats Pillow cannot open pass."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as im:
            im.load()
    except UnidentifiedImageError:
        return ""
    except Image.DecompressionBombError:
        return ""  # decode_image reports this with its own limit
    except (OSError, SyntaxError, ValueError) as e:
        return str(e) or type(e).__name__
    return ""


def _read_image(path: Path) -> tuple[np.ndarray | None, str]:
    """(RGB uint8, "") via the dataset reader's decoder, or (None, why it is not a usable image)."""
    from paperkit.data import ImageError, decode_image

    try:
        rgb = decode_image(path)
    except ImageError as e:
        if "decompression-bomb" in str(e):
            raise PredictError(str(e), "unreadable") from e
        return None, str(e)
    why = truncation(path)
    if why:
        raise PredictError(f"{path}: truncated or corrupt image ({why}); nothing scored for this file. "
                           f"Re-copy or re-export it", "unreadable")
    return rgb, ""


def _expand(paths: Sequence[str | Path], rep: Report) -> list[tuple[Path, str]]:
    """(file, folder it is counted under). Directories are searched at any depth (sorted); each file
    counts under its own parent folder. An empty directory is reported."""
    out: list[tuple[Path, str]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file()
                           and f.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
            if not files:
                rep.errors.append({"file": str(p), "error": f"{p}: directory (and its sub-folders) has no image "
                                                            f"or video files ({', '.join(IMAGE_SUFFIXES)}, videos)"})
            out.extend((f, str(f.parent)) for f in files)
        else:
            out.append((p, str(p.parent)))
    return out


# ----------------------------------------------------------------------------------------------
# Scoring

def _detect(rgb: np.ndarray, detector: str) -> list[Any]:
    from paperkit.detect import detect

    return detect(rgb, detector)


def score_image(scorer: Scorer, path: Path, rgb: np.ndarray, threshold: float,
                detector: str = "auto") -> list[FaceResult]:
    faces = _detect(rgb, detector)
    if not faces:
        raise PredictError(f"{path}: no face found (detector {detector}: dlib HOG, then its CNN on a padded, "
                           f"downscaled copy); nothing scored for this image", "no_face")
    scores = scorer.score_faces(rgb, [f.box for f in faces])
    return [FaceResult(str(path), [int(v) for v in f.box], s, _label(s, threshold), None, f.detector, f.confidence)
            for f, s in zip(faces, scores)]


def score_video(scorer: Scorer, path: Path, threshold: float, max_frames: int = MAX_VIDEO_FRAMES,
                detector: str = "auto") -> tuple[list[FaceResult], VideoResult]:
    """Every frame: detect, score all faces; frame score = its largest face; video score = mean."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise PredictError(f"{path}: not a readable image or video (OpenCV could not open it)", "unreadable")
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
            found = _detect(rgb, detector)
            scores = scorer.score_faces(rgb, [f.box for f in found])
            for f, s in zip(found, scores):
                faces.append(FaceResult(str(path), [int(v) for v in f.box], s, _label(s, threshold), n,
                                        f.detector, f.confidence))
            if scores:
                frame_scores.append(scores[0])  # faces come largest first
            n += 1
    finally:
        cap.release()
    elapsed = time.perf_counter() - t0
    if n == 0:
        raise PredictError(f"{path}: video has no readable frames", "unreadable")
    fps = n / elapsed if elapsed > 0 else math.inf
    if not frame_scores:
        raise PredictError(f"{path}: no face found in any of its {n} frames", "no_face")
    vs = float(np.mean(frame_scores))
    return faces, VideoResult(str(path), n, len(frame_scores), vs, _label(vs, threshold), round(fps, 2))


def _progress(items: list[Any]) -> Iterable[Any]:
    if len(items) < PROGRESS_MIN_FILES:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="paperkit predict", unit="file", file=sys.stderr)


def predict_paths(paths: Sequence[str | Path], scorer: Scorer, threshold: float, detector: str = "auto") -> Report:
    """Score every path; each file gets a `FileResult`, problems also an `errors` entry; never raises
    for a bad input."""
    rep = Report(model=str(scorer.path), threshold=threshold, input_size=scorer.input_size, detector=detector)
    for p, folder in _progress(_expand(paths, rep)):
        try:
            _check_file(p)
            suffix = p.suffix.lower()
            rgb, why = (None, "") if suffix in VIDEO_SUFFIXES else _read_image(p)
            if rgb is not None:
                faces = score_image(scorer, p, rgb, threshold, detector)
                rep.faces.extend(faces)
                top = faces[0]
                rep.files.append(FileResult(str(p), folder, top.label, top.score, len(faces), top.detector,
                                            top.confidence, top.box))
            elif suffix in IMAGE_SUFFIXES:
                raise PredictError(f"{p}: does not decode as an image (corrupt, truncated or not an "
                                   f"image file despite its {suffix} name; reader said: {why})", "unreadable")
            else:
                faces, video = score_video(scorer, p, threshold, detector=detector)
                rep.faces.extend(faces)
                rep.videos.append(video)
                rep.files.append(FileResult(str(p), folder, str(video.label), video.score, len(faces),
                                            faces[0].detector, faces[0].confidence, faces[0].box))
        except PredictError as e:
            rep.errors.append({"file": str(p), "error": str(e)})
            rep.files.append(FileResult(str(p), folder, e.status, message=str(e)))
        except Exception as e:  # anything unexpected still becomes a named, counted result
            msg = f"{p}: could not be scored ({type(e).__name__}: {e})"
            rep.errors.append({"file": str(p), "error": msg})
            rep.files.append(FileResult(str(p), folder, "error", message=msg))
    return rep


# ----------------------------------------------------------------------------------------------
# Output

CSV_COLUMNS = ("file", "folder", "status", "score", "faces", "detector", "confidence", "box", "message")


def write_csv(rep: Report, path: str | Path) -> Path:
    """One row per input file (CSV_COLUMNS); `box` as "x y w h" in the training crop convention."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for f in rep.files:
            w.writerow([f.file, f.folder, f.status, "" if f.score is None else f"{f.score:.6f}", f.faces, f.detector,
                        "" if f.confidence is None else f.confidence,
                        "" if f.box is None else " ".join(str(v) for v in f.box), f.message])
    return path


def format_totals(rep: Report) -> str:
    tot = rep.totals()
    width = max([len(k) for k in tot] + [6])
    head = f"{'folder':<{width}}  {'files':>5}  {'live':>5}  {'spoof':>5}  {'no face':>7}  {'problem':>7}"
    lines = [head]
    for k, c in tot.items():
        lines.append(f"{k:<{width}}  {c['files']:>5}  {c['live']:>5}  {c['spoof']:>5}  {c['no_face']:>7}  "
                     f"{c['unreadable'] + c['error']:>7}")
    return "\n".join(lines)


def format_report(rep: Report) -> str:
    lines = [f"model {rep.model} (input {rep.input_size}x{rep.input_size}), threshold {rep.threshold:g}, "
             f"detector {rep.detector}"]
    for f in rep.faces:
        where = f"{f.file}" + (f" frame {f.frame}" if f.frame is not None else "")
        x, y, w, h = f.box
        lines.append(f"{where}: face at x={x} y={y} w={w} h={h} ({f.detector} {f.confidence:.2f})  "
                     f"P(spoof)={f.score:.4f}  -> {f.label}")
    for v in rep.videos:
        lines.append(f"{v.file}: video score {v.score:.4f} -> {v.label} (mean of {v.frames_with_face} frame "
                     f"scores; {v.frames} frames read at {v.fps:.1f} fps)")
    for f in rep.files:
        if f.status == "no_face":
            lines.append(f"{f.file}: no face found")
    lines.append(format_totals(rep))
    lines.append(f"{len(rep.faces)} face(s) scored, {len(rep.errors)} problem(s)")
    return "\n".join(lines)


def cli_predict(paths: Sequence[str], model: str | None = None, threshold: float = 0.5,
                as_json: bool = False, csv_path: str | None = None, detector: str = "auto",
                model_info: bool = False) -> int:
    """Entry point of `paperkit predict`; returns the process exit status (see module docstring)."""
    from paperkit.detect import DETECTORS, available

    if not (0.0 <= threshold <= 1.0):
        print(f"paperkit predict: --threshold must be in [0, 1], got {threshold}", file=sys.stderr)
        return 2
    if detector not in DETECTORS:
        print(f"paperkit predict: --detector must be one of {', '.join(DETECTORS)}, got {detector!r}",
              file=sys.stderr)
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
    if model_info:
        card = model_card(model_path)
        if card is None:
            print(f"paperkit predict: {model_path} has no model card ({CARD_NAME} beside it)", file=sys.stderr)
            return 2
        print(card.read_text(encoding="utf-8"))
        return 0
    if not paths:
        print("paperkit predict: give at least one image, video or folder (or --model-info)", file=sys.stderr)
        return 2
    why = available(detector)
    if why:
        print(f"paperkit predict: {why}", file=sys.stderr)
        return 2
    try:
        scorer = Scorer(model_path)
    except (RuntimeError, ValueError) as e:
        print(f"paperkit predict: {e}", file=sys.stderr)
        return 2
    rep = predict_paths(paths, scorer, threshold, detector)
    for err in rep.errors:
        print(f"paperkit predict: {err['error']}", file=sys.stderr)
    if csv_path:
        write_csv(rep, csv_path)
    if as_json:
        print(json.dumps(rep.to_dict(), indent=2))
    else:
        print(format_report(rep))
    if not rep.faces:
        print("paperkit predict: nothing could be scored", file=sys.stderr)
        return 1
    return 0
