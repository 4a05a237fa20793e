"""`paperkit predict PATH... [--model FILE.onnx] [--threshold T] [--detector D] [--json] [--csv FILE]`.

Scores every face in images or video files (folders are searched at any depth) with an ONNX model. Faces
come from `paperkit.detect` (dlib HOG, then dlib's CNN when HOG is not sure; weights from registry
packages, nothing downloaded); each box is in the `_BB.txt` convention the models were trained with, and
each face is cropped exactly as the dataset reader crops (`paperkit.data.crop_face` + `preprocess`), so
deployment sees what training saw. A video gets per-frame scores (largest face of each frame), the
video-level score (mean of frame scores, as seed 001 aggregates) and the frame rate achieved end to end.

Every input file gets one result (`Report.files`): called live, called spoof (by its largest face), no
face, or a problem (unreadable, corrupt or truncated, ...) naming the file; totals are given per folder.
Nothing is skipped silently. Exit status: 0 if at least one face was scored, 1 if nothing could be
scored, 2 if the model is missing/unloadable or an option is invalid.

The default model is the one shipped inside the package (`paperkit/assets/texture_int8.onnx`, with its
model card `MODEL_CARD.md`; `--model-info` prints it); :func:`ship_model` regenerates both from a run.

Long because it holds the whole `paperkit predict` verb: the model, inputs, scoring, output, and the shipped
model with its card, which read the same model metadata; the sections are marked below.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
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
        from paperkit.data import crop_face, preprocess
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


# ----------------------------------------------------------------------------------------------
# The shipped model and its card

#: Per-split metrics shown on the card, in order (percent except AUC).
CARD_METRICS = ("accuracy", "apcer", "bpcer", "acer", "auc")


def _fmt_metric(row: dict[str, Any], key: str) -> str:
    v = row.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
        return "n/a"
    digits = 3 if key == "auc" else 2
    out = f"{float(v):.{digits}f}"
    lo, hi = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    if lo is not None and hi is not None and lo == lo and hi == hi and lo != "" and hi != "":
        out += f" [{float(lo):.{digits}f}, {float(hi):.{digits}f}]"
    return out


def _synthetic_rows(run_dir: Path, model: str = "texture", fmt: str = "int8") -> tuple[list[dict[str, Any]], str]:
    """The deployable model's rows of `tables/texture_deploy.csv` (one per operating point when the run
    recorded them), and where they came from."""
    import pandas as pd

    path = run_dir / "tables" / "texture_deploy.csv"
    if not path.is_file():
        return [], f"{path} not found (run notebook 02)"
    df = pd.read_csv(path)
    fcol = "format" if "format" in df.columns else "fmt"
    sel = df[(df["model"] == model) & (df[fcol] == fmt)]
    if "seed" in sel.columns and sel["seed"].astype(str).isin(["mean"]).any():
        sel = sel[sel["seed"].astype(str) == "mean"]
    return sel.to_dict(orient="records"), "tables/texture_deploy.csv"


def real_photo_check(real_dir: str | Path, model: str | Path, threshold: float = 0.5, detector: str = "auto",
                     n_boot: int = 1000) -> dict[str, Any]:
    """Score a folder of real photos laid out as `live/` and `spoof/` (any depth below them) with `model`.

    Photos without a detected face are counted, not scored. Intervals: bootstrap over photos (95%)."""
    from paperkit import metrics, stats

    real_dir = Path(real_dir)
    rep = predict_paths([real_dir], Scorer(model), threshold, detector)
    scores, labels = [], []
    for f in rep.files:
        parts = {p.lower() for p in Path(f.file).relative_to(real_dir).parts[:-1]}
        label = 1 if "spoof" in parts else 0 if "live" in parts else None
        if label is not None and f.score is not None:
            scores.append(f.score)
            labels.append(label)
    out: dict[str, Any] = {"folder": real_dir.name, "images": len(rep.files), "scored": len(scores),
                           "no_face": sum(f.status == "no_face" for f in rep.files),
                           "live": labels.count(0), "spoof": labels.count(1), "detector": detector,
                           "found_by": dict(Counter(f.detector for f in rep.files if f.detector))}
    if labels.count(0) and labels.count(1):
        sc = stats.Scored(np.asarray(scores), np.asarray(labels), np.asarray([str(i) for i in range(len(scores))]),
                          np.asarray(labels))
        q = stats.quality(sc, threshold, n_boot=n_boot, seed=0)
        out |= {k: q[k] for k in q if k.split("_ci_")[0] in CARD_METRICS}
        out["auc"] = metrics.roc_auc(scores, labels)
    return out


def write_card(path: Path, onnx_path: Path, run_dir: Path, input_size: int, threshold: float,
               real: dict[str, Any] | None) -> Path:
    """The model card (markdown): data, input and crop, threshold, metrics with intervals, limits.

    Long because the card is a single markdown template written as a list of lines in reading order; split
    per section, the template would be scattered.
    """
    from paperkit import detect

    manifest_p = run_dir / "manifest.json"
    manifest = json.loads(manifest_p.read_text(encoding="utf-8")) if manifest_p.is_file() else {"entries": {}}
    entries = manifest.get("entries", {})
    entry = entries.get("02_fourier_texture") or entries.get("00_data") or {}
    ds = entry.get("dataset") or (entries.get("00_data") or {}).get("dataset") or {}
    counts = ds.get("counts", {})
    rows, source = _synthetic_rows(run_dir)
    size_kb = onnx_path.stat().st_size / 1024
    lines = [
        "# Model card: paperkit texture model, INT8 (`texture_int8.onnx`)",
        "",
        "Seed 002's Fourier-supervised texture network (MobileNet-style, ~0.36 M parameters), exported to ONNX and "
        f"quantised to INT8 (static QDQ); {size_kb:.0f} KB. Scores P(spoof) for one face crop. "
        "Written by `paperkit.predict.ship_model` from a run's results; regenerate it rather than edit it.",
        "",
        "## Trained on",
        "",
        f"- Dataset: {ds.get('name', 'unknown (no manifest entry)')}; generator `{ds.get('generator', '?')}` "
        f"version {ds.get('version', '?')}, fingerprint `{ds.get('fingerprint', '?')}`.",
        f"- {counts.get('train', {}).get('images', '?')} train images ({counts.get('train', {}).get('subjects', '?')} "
        f"subjects), {counts.get('test', {}).get('images', '?')} test images "
        f"({counts.get('test', {}).get('subjects', '?')} subjects, disjoint from train).",
        "- Synthetic: rendered faces and simulated print/screen/mask attacks, not photographs of people. "
        "It was never trained on a real photo.",
        f"- Run: git revision `{entry.get('git_revision') or _revision()}`, "
        f"profile `{(entry.get('parameters') or {}).get('profile', '?')}`.",
        "",
        "## Input and crop",
        "",
        f"- Input: RGB, {input_size}x{input_size}, (x/255 - 0.5)/0.5 per channel, NCHW float32, any batch size.",
        "- Crop: a square of 1.5 x max(w, h) around the centre of the face box in the CelebA-Spoof `_BB.txt` "
        "convention, reflect-padded where it leaves the image (`paperkit.data.crop_face`), then resized.",
        "- Faces in user photos: `paperkit.detect` (dlib HOG, then dlib's CNN when HOG is not sure, on a padded "
        "copy); each detector's box is mapped onto the `_BB.txt` convention by a scale and offset fitted on the "
        "synthetic train images (`paperkit.detect.CALIBRATION`: "
        + ", ".join(f"{k} {v[0]:.3f}/{v[1]:+.3f}/{v[2]:+.3f}" for k, v in detect.CALIBRATION.items())
        + " as scale/dx/dy).",
        "",
        "## Threshold",
        "",
        f"- Called spoof when P(spoof) >= {threshold:g}. A fixed threshold, not tuned on any test data: the "
        "`fixed_0.5` operating point every claim in this project uses. `--threshold` changes it.",
    ]
    val = [r for r in rows if r.get("operating_point") == "val_eer"]
    if val:
        lines.append(f"- For reference, the validation-EER threshold of this run was {float(val[0]['threshold']):.3f} "
                     "(the `val_eer` row below).")
    lines += ["", "## Metrics", "", "Rates in percent (AUC as a fraction); 95% intervals in brackets where the "
              "run recorded them.", "",
              "| data | operating point | images | " + " | ".join(m.upper() if m != "accuracy" else "Accuracy"
                                                             for m in CARD_METRICS) + " |",
              "|---|---|---|" + "---|" * len(CARD_METRICS)]
    for r in rows:
        op = r.get("operating_point", "fixed_0.5")
        n = r.get("n_images", counts.get("test", {}).get("images", "?"))
        n = int(n) if isinstance(n, float) and n == n else n
        lines.append(f"| synthetic test split | {op} | {n} | " + " | ".join(_fmt_metric(r, m) for m in CARD_METRICS)
                     + " |")
    if not rows:
        lines.append(f"| synthetic test split | - | - | {source} |" + " |" * (len(CARD_METRICS) - 1))
    if real and real.get("scored"):
        lines.append(f"| real photos, internal check ({real['images']} photos: {real['live']} live, {real['spoof']} "
                     f"spoof scored) | fixed_{threshold:g} | {real['scored']} | "
                     + " | ".join(_fmt_metric(real, m) for m in CARD_METRICS) + " |")
    lines += ["", f"Synthetic rows: `{source}` of the run; their intervals (when shown) are subject-bootstrap."]
    if real:
        lines += [f"Real-photo row: `{real['folder']}`, {real['images']} real photographs of bona fide faces and "
                  f"printed/replayed attacks from public repositories, kept outside the repository; a face was "
                  f"found in {real['images'] - real['no_face']} of them ("
                  + ", ".join(f"{k} {v}" for k, v in sorted(real['found_by'].items())) + "); intervals bootstrap "
                  "over photos. An internal check on 31 real photos: it decides little alone."]
    else:
        lines += ["Real-photo check: not run for this card (pass `real_dir` to `ship_model`)."]
    lines += [
        "",
        "## Known limits",
        "",
        "- Trained on synthetic data only: the synthetic test numbers say how well it separates the simulated "
        "attacks, not how it does on real cameras and real attacks, where it is much weaker (see the real-photo row).",
        "- One face crop, one frame: no depth, motion or challenge-response; 3D masks were not simulated as such.",
        "- The face detector is frontal-leaning (HOG) with a CNN fallback; faces smaller than ~50 px after "
        "the detector's downscaling, or strongly rotated, are reported as `no_face`, never scored.",
        "- Not a security product: use it to reproduce and study the papers' models.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _revision() -> str:
    """The checkout's revision while notebook 02 is still running (its manifest entry is not written yet)."""
    from .results import git_revision
    return git_revision()


def ship_model(onnx_path: str | Path, run_dir: str | Path = "results", real_dir: str | Path | None = None,
               assets_dir: str | Path | None = None, threshold: float = 0.5, detector: str = "auto") -> Path:
    """Copy a run's deployable INT8 model into the package (`paperkit/assets/`) with its model card, and put
    the same card beside the model in `<run_dir>/models/` (`texture_int8.md`). Returns the packaged model.

    Notebook 02 calls it after each run so the wheel always ships the model the README's numbers describe.
    `real_dir` (a folder with `live/` and `spoof/`) adds the real-photo check; leave it None when absent."""
    onnx_path, run_dir = Path(onnx_path), Path(run_dir)
    assets = Path(assets_dir) if assets_dir is not None else ASSETS
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: no such model; run notebook 02 (it writes models/{MODEL_NAME})")
    size = onnx_path.stat().st_size
    if size >= 1024 * 1024:
        raise ValueError(f"{onnx_path} is {size / 1024:.0f} KB; the packaged model must stay under 1 MB "
                         f"(ship the INT8 export, not FP32)")
    scorer = Scorer(onnx_path)  # fails here, not in a user's hands, if the file does not load
    real = None
    if real_dir is not None and Path(real_dir).is_dir():
        real = real_photo_check(real_dir, onnx_path, threshold, detector)
    assets.mkdir(parents=True, exist_ok=True)
    target = assets / MODEL_NAME
    if onnx_path.resolve() != target.resolve():
        tmp = target.with_suffix(".onnx.tmp")
        shutil.copyfile(onnx_path, tmp)
        tmp.replace(target)
    card = write_card(assets / CARD_NAME, target, run_dir, scorer.input_size, threshold, real)
    models = run_dir / "models"
    if models.is_dir():
        shutil.copyfile(card, models / (Path(MODEL_NAME).stem + ".md"))
    return target
