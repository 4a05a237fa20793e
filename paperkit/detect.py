"""One face finder for every crop of a user's photo (`paperkit predict`, later `evaluate` and `synth --faces`).

Detectors, all with weights that install from registry packages (nothing is downloaded at run time):

- ``hog``  dlib's HOG + linear SVM frontal detector (inside the ``dlib-bin`` wheel): fast, frontal faces.
- ``cnn``  dlib's MMOD CNN (``mmod_human_face_detector.dat`` from ``face-recognition-models``): finds
  faces at an angle, in prints photographed off-axis and in dim light, but ~20x slower, so it runs on a
  downscaled copy.
- ``haar`` OpenCV's bundled Haar cascade: the previous finder, kept for before/after benchmarks.

``detect(rgb, "auto")`` is a cascade: HOG first; when it finds nothing it is confident about, the CNN.
``"fast"`` is HOG alone, ``"cnn"`` the CNN alone.

Every image is padded before detection so a photo that is all face (a tight crop) still shows a whole
face with some context around it. Each detector draws its box differently, and the models were trained
on crops of the CelebA-Spoof ``_BB.txt`` convention (square of 1.5 x max(w, h) around the box centre,
``paperkit.crop.crop_face``); :data:`CALIBRATION` maps each detector's box onto that convention. It was
fitted with :func:`calibrate` on the embedded dataset's train images and checked on its test images
with :func:`check_boxes` (``paperkit bench detect --root R --check-boxes``).
"""
from __future__ import annotations

import importlib.util
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

#: Choices of ``--detector``; "haar" is the previous finder (benchmarks, before/after).
DETECTORS = ("auto", "cnn", "fast", "haar")
#: Border added on every side, as a fraction of the image's long side, before detection.
PAD_FRACTION = 0.2
#: Long side (pixels, after padding) each detector works at: HOG is cheap enough to upsample small
#: photos; the CNN costs ~ pixels, so it works on a smaller copy first (its smallest face is ~50 px).
HOG_SIDE = 480
CNN_SIDE = 320
CNN_SIDE_LARGE = 640
#: HOG hits below this SVM score are not "sure": in auto mode the CNN gets a look first.
HOG_SURE = 0.0
CNN_MIN = 0.0

#: detector -> (scale, dx, dy): a detector box (x, y, w, h) with side d = max(w, h) and centre
#: (cx, cy) maps to a square of side scale*d centred at (cx + dx*d, cy + dy*d), in the `_BB.txt`
#: convention. Fitted by `calibrate` on the train split of the embedded dataset (synthetic v3, default
#: profile, seed 0; medians over the faces each detector found); see the module docstring.
#: Fit (`calibrate(root, "train", limit=600)`; CNN limit=160): hog 353 of 600 images matched, haar 374 of
#: 600, cnn 99 of 160 (the rest: no face found, mostly attacks whose face is degraded).
#: Check (`check_boxes(root, results/models/texture_int8.onnx)`, auto, the 1,024 test images of the same
#: dataset, fingerprint 4da8f2bee2e34f36): on the 743 where a face was found (hog 497, cnn 246) test ACER
#: 5.85% from stored boxes vs 5.86% from detector boxes (+0.02 points); on all 1,024 (281 without a face
#: scored on a centre crop) 4.97% vs 5.49% (+0.52 points). Synthetic, 2 cores, 20 min.
#: Synthetic v5 (same fit, 600 train images): hog scale 1.232 (465 matched), haar 1.089 (445), offsets
#: within 0.005 of these; 3% and 2% off, inside the 0.7-1.3x box jitter training now applies: left as fitted.
CALIBRATION: dict[str, tuple[float, float, float]] = {
    "hog": (1.195, -0.005, -0.020),
    "cnn": (1.261, 0.025, 0.075),
    "haar": (1.069, 0.000, 0.063),
}


class DetectorUnavailable(RuntimeError):
    """A detector's package or weights are missing; the message says what to install."""


@dataclass(frozen=True)
class Face:
    """One face: ``box`` in the training convention (give it to `paperkit.crop.crop_face`), the
    detector's own ``raw_box``, which detector found it and its confidence (that detector's score)."""

    box: tuple[int, int, int, int]
    raw_box: tuple[int, int, int, int]
    detector: str
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# Image preparation

def as_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """RGB uint8 from RGB/RGBA/gray arrays of any depth (float images in [0, 1] or [0, 255])."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.dtype != np.uint8:
        mx = float(img.max()) if img.size else 1.0
        img = np.clip(img.astype(np.float32) * (255.0 / (mx if mx > 1.5 else 1.0)), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {img.shape}")
    return np.ascontiguousarray(img)


def pad_and_scale(img: np.ndarray, side: int, pad_fraction: float | None = None
                  ) -> tuple[np.ndarray, float, int]:
    """Pad with the image's mean colour (a flat border adds no edges a detector could fire on),
    then resize so the long side is `side`. Returns (image, scale, pad) with
    original = detected / scale - pad. `pad_fraction` None = PAD_FRACTION."""
    pad_fraction = PAD_FRACTION if pad_fraction is None else pad_fraction
    h, w = img.shape[:2]
    pad = int(round(max(h, w) * pad_fraction))
    if pad:
        mean = [int(v) for v in img.reshape(-1, img.shape[2]).mean(0)]
        img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=mean)
    f = side / max(img.shape[:2])
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    out = cv2.resize(img, (max(1, round(img.shape[1] * f)), max(1, round(img.shape[0] * f))), interpolation=interp)
    return out, f, pad


def _unmap(x: float, y: float, w: float, h: float, f: float, pad: int, shape: tuple[int, ...]
           ) -> tuple[int, int, int, int]:
    """Detector box in the working copy -> original pixels (clipped to the image)."""
    H, W = shape[:2]
    x0, y0 = x / f - pad, y / f - pad
    x1, y1 = (x + w) / f - pad, (y + h) / f - pad
    x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(W), x1), min(float(H), y1)
    return int(round(x0)), int(round(y0)), max(1, int(round(x1 - x0))), max(1, int(round(y1 - y0)))


def to_bb_convention(raw: Sequence[float], detector: str) -> tuple[int, int, int, int]:
    """A detector's box -> the `_BB.txt` convention the models were trained with (see CALIBRATION).

    The result may leave the image: `crop_face` moves the crop inside it, exactly as training did."""
    x, y, w, h = (float(v) for v in raw)
    s, dx, dy = CALIBRATION[detector]
    d = max(w, h)
    cx, cy = x + w / 2 + dx * d, y + h / 2 + dy * d
    side = s * d
    return int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(side)), int(round(side))


# ----------------------------------------------------------------------------------------------
# The three detectors: each returns [(raw box in original pixels, score)]

def _dlib() -> Any:
    try:
        import dlib
    except ImportError as e:
        raise DetectorUnavailable("dlib is not installed: `pip install dlib-bin==20.0.1.post1` (or reinstall "
                                  "paperkit, which depends on it), or use --detector haar") from e
    return dlib


def cnn_weights() -> Path:
    """mmod_human_face_detector.dat inside face-recognition-models, found without importing that package
    (its __init__ needs pkg_resources, which recent setuptools no longer ship)."""
    spec = importlib.util.find_spec("face_recognition_models")
    locs = list(spec.submodule_search_locations or []) if spec else []
    for loc in locs:
        p = Path(loc) / "models" / "mmod_human_face_detector.dat"
        if p.is_file():
            return p
    raise DetectorUnavailable("the CNN face detector's weights (mmod_human_face_detector.dat) are missing: "
                              "`pip install face-recognition-models==0.3.0` (or reinstall paperkit), or use "
                              "--detector fast")


@lru_cache(maxsize=1)
def _hog() -> Any:
    return _dlib().get_frontal_face_detector()


@lru_cache(maxsize=1)
def _cnn() -> Any:
    return _dlib().cnn_face_detection_model_v1(str(cnn_weights()))


@lru_cache(maxsize=1)
def _cascade() -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    if not path.is_file():
        raise DetectorUnavailable(f"Haar cascade not found at {path}; reinstall opencv-python-headless 4.x")
    c = cv2.CascadeClassifier(str(path))
    if c.empty():
        raise DetectorUnavailable(f"could not load the Haar cascade {path}; reinstall opencv-python-headless 4.x")
    return c


RawHits = list[tuple[tuple[int, int, int, int], float]]


def hog_raw(img: np.ndarray) -> RawHits:
    work, f, pad = pad_and_scale(img, HOG_SIDE)
    gray = cv2.cvtColor(work, cv2.COLOR_RGB2GRAY)
    rects, scores, _ = _hog().run(gray, 0, -0.5)
    return [(_unmap(r.left(), r.top(), r.width(), r.height(), f, pad, img.shape), float(s))
            for r, s in zip(rects, scores)]


def cnn_raw(img: np.ndarray) -> RawHits:
    """The CNN on a copy at CNN_SIDE, then (only when that finds nothing and the photo is bigger) at
    CNN_SIDE_LARGE, where faces under ~1/6 of the photo's side are still big enough to be found."""
    padded_side = round(max(img.shape[:2]) * (1 + 2 * PAD_FRACTION))
    out: RawHits = []
    for side in (CNN_SIDE, CNN_SIDE_LARGE):
        work, f, pad = pad_and_scale(img, min(side, padded_side))  # shrink big photos, never enlarge
        for d in _cnn()(work, 0):
            if d.confidence >= CNN_MIN:
                r = d.rect
                out.append((_unmap(r.left(), r.top(), r.width(), r.height(), f, pad, img.shape),
                            float(d.confidence)))
        if out or padded_side <= side * 1.1:
            break
    return out


def haar_boxes(image_rgb: np.ndarray, pad_fraction: float = 0.0) -> list[tuple[int, int, int, int]]:
    """Frontal faces (x, y, w, h), largest first, with OpenCV's bundled Haar cascade (the previous finder, and
    the one `synth --faces` places photos by): a copy at most 640 px on its long side, histogram-equalised."""
    return [b for b, _ in _haar_hits(as_uint8_rgb(image_rgb), pad_fraction)]


def _haar_hits(img: np.ndarray, pad_fraction: float) -> RawHits:
    h, w = img.shape[:2]
    side = min(640, round(max(h, w) * (1 + 2 * pad_fraction)))
    work, f, pad = pad_and_scale(img, side, pad_fraction)
    gray = cv2.equalizeHist(cv2.cvtColor(work, cv2.COLOR_RGB2GRAY))
    min_side = max(20, int(min(gray.shape) * 0.08))
    found, _, weights = _cascade().detectMultiScale3(gray, scaleFactor=1.1, minNeighbors=5,
                                                     minSize=(min_side, min_side), outputRejectLevels=True)
    boxes = np.asarray(found).reshape(-1, 4)
    wts = np.asarray(weights, np.float64).reshape(-1) if len(boxes) else np.zeros(0)
    hits = [(_unmap(*b, f, pad, img.shape), float(s)) for b, s in zip(boxes.tolist(), wts.tolist())]
    hits.sort(key=lambda t: (-t[0][2] * t[0][3], t[0][0], t[0][1]))
    return hits


def haar_raw(img: np.ndarray) -> RawHits:
    """Exactly the previous finder (no padding), so benchmarks compare against what users had."""
    return _haar_hits(img, 0.0)


RAW: dict[str, Callable[[np.ndarray], RawHits]] = {"hog": hog_raw, "cnn": cnn_raw, "haar": haar_raw}


def _faces(hits: RawHits, name: str) -> list[Face]:
    out = [Face(to_bb_convention(b, name), b, name, round(s, 4)) for b, s in hits]
    out.sort(key=lambda f: (-f.raw_box[2] * f.raw_box[3], f.raw_box[0], f.raw_box[1]))
    return out


def detect(image_rgb: np.ndarray, detector: str = "auto") -> list[Face]:
    """Faces in an RGB image, largest first, boxes in the training convention.

    ``auto``: HOG hits with score >= HOG_SURE are kept as they are; otherwise the CNN looks; when the CNN
    finds nothing either, HOG's weaker hits (score in [-0.5, HOG_SURE)) are returned rather than nothing.
    """
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}")
    img = as_uint8_rgb(image_rgb)
    if detector == "haar":
        return _faces(haar_raw(img), "haar")
    if detector == "cnn":
        return _faces(cnn_raw(img), "cnn")
    hog = hog_raw(img)
    sure = [h for h in hog if h[1] >= HOG_SURE]
    if detector == "fast":
        return _faces(sure, "hog")
    if sure:
        return _faces(sure, "hog")
    cnn = cnn_raw(img)
    if cnn:
        return _faces(cnn, "cnn")
    return _faces(hog, "hog")


def available(detector: str) -> str:
    """"" when `detector` can run here, else why not (with the install command)."""
    try:
        if detector in ("auto", "fast"):
            _hog()
        if detector in ("auto", "cnn"):
            _cnn()
        if detector == "haar":
            _cascade()
    except DetectorUnavailable as e:
        return str(e)
    return ""


# ----------------------------------------------------------------------------------------------
# Benchmark on a folder (`paperkit bench detect DIR`)

def bench_folder(folder: str | Path, detectors: Sequence[str] = ("haar", "fast", "cnn", "auto"),
                 repeats: int = 1) -> list[dict[str, Any]]:
    """Faces found and ms per image for each detector on every image under `folder` (recursive).

    Detectors are interleaved per image (image 1: every detector, image 2: ...) so machine load hits them
    alike; decoding is outside the timing. One warm-up call per detector loads its weights first.
    Wall ms and process CPU ms are both given: on a shared machine the CPU time is what the detector
    costs, the wall time what this run waited."""
    from paperkit.data import ImageError, decode_image

    from paperkit.predict import IMAGE_SUFFIXES

    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) in it or its sub-folders")
    imgs, unreadable = [], 0
    for p in files:
        try:
            imgs.append((p, decode_image(p)))
        except ImageError:
            unreadable += 1
    warm = np.zeros((64, 64, 3), np.uint8)
    for d in detectors:
        detect(warm, d)
    times: dict[str, list[float]] = {d: [] for d in detectors}
    cpu: dict[str, list[float]] = {d: [] for d in detectors}
    found: dict[str, int] = {d: 0 for d in detectors}
    by: dict[str, dict[str, int]] = {d: {} for d in detectors}
    missed: dict[str, list[str]] = {d: [] for d in detectors}
    for p, img in imgs:
        for d in detectors:
            best, best_cpu = float("inf"), float("inf")
            for _ in range(max(1, repeats)):
                t0, c0 = time.perf_counter(), time.process_time()
                faces = detect(img, d)
                best = min(best, (time.perf_counter() - t0) * 1000)
                best_cpu = min(best_cpu, (time.process_time() - c0) * 1000)
            times[d].append(best)
            cpu[d].append(best_cpu)
            if faces:
                found[d] += 1
                by[d][faces[0].detector] = by[d].get(faces[0].detector, 0) + 1
            else:
                missed[d].append(str(p.relative_to(root)))
    rows = []
    for d in detectors:
        t, c = np.asarray(times[d]), np.asarray(cpu[d])
        rows.append({"detector": d, "images": len(imgs), "unreadable": unreadable, "with_face": found[d],
                     "found_by": ", ".join(f"{k} {v}" for k, v in sorted(by[d].items())),
                     "median_ms": float(np.median(t)), "p95_ms": float(np.percentile(t, 95)),
                     "median_cpu_ms": float(np.median(c)), "p95_cpu_ms": float(np.percentile(c, 95)),
                     "no_face": missed[d]})
    return rows


# ----------------------------------------------------------------------------------------------
# Box convention: fit on train images, check on test images

def _stored_boxes(root: str | Path, split: str, limit: int | None) -> list[tuple[Any, np.ndarray]]:
    from paperkit.data import decode_image
    from paperkit.index import load_index

    idx = load_index(root, split, limit=limit, seed=0)
    out = []
    for s in idx:
        if s.box is None or s.box_problem not in ("", "negative_bb"):
            continue
        out.append((s, decode_image(Path(root) / s.path if not Path(s.path).is_absolute() else s.path)))
    return out


def _match(hits: RawHits, stored: Sequence[float]) -> tuple[int, int, int, int] | None:
    """The detector box whose centre lies inside the stored box (largest such), or None."""
    x, y, w, h = stored
    inside = [b for b, _ in hits if x <= b[0] + b[2] / 2 <= x + w and y <= b[1] + b[3] / 2 <= y + h]
    return max(inside, key=lambda b: b[2] * b[3]) if inside else None


def calibrate(root: str | Path, split: str = "train", limit: int | None = 1000,
              detectors: Sequence[str] = ("hog", "cnn", "haar")) -> dict[str, dict[str, float]]:
    """Fit CALIBRATION: per detector, medians of stored side / detector side and of the centre offsets
    (in detector sides) over the images where the detector's box matches the stored `_BB.txt` box."""
    samples = _stored_boxes(root, split, limit)
    out: dict[str, dict[str, float]] = {}
    for name in detectors:
        s_, dx_, dy_ = [], [], []
        for s, img in samples:
            b = _match(RAW[name](img), s.box)
            if b is None:
                continue
            d = max(b[2], b[3])
            sx, sy, sw, sh = s.box
            s_.append(max(sw, sh) / d)
            dx_.append((sx + sw / 2 - (b[0] + b[2] / 2)) / d)
            dy_.append((sy + sh / 2 - (b[1] + b[3] / 2)) / d)
        out[name] = {"scale": float(np.median(s_)) if s_ else float("nan"),
                     "dx": float(np.median(dx_)) if dx_ else float("nan"),
                     "dy": float(np.median(dy_)) if dy_ else float("nan"),
                     "matched": len(s_), "images": len(samples)}
    return out


def _acers(stored: np.ndarray, found: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    from paperkit import metrics

    ca, cb = metrics.confusion(stored, labels, threshold), metrics.confusion(found, labels, threshold)
    return {"images": int(len(labels)), "acer_stored_boxes": 100 * metrics.acer(ca),
            "acer_detector_boxes": 100 * metrics.acer(cb), "apcer_stored_boxes": 100 * metrics.apcer(ca),
            "apcer_detector_boxes": 100 * metrics.apcer(cb), "bpcer_stored_boxes": 100 * metrics.bpcer(ca),
            "bpcer_detector_boxes": 100 * metrics.bpcer(cb),
            "acer_difference": 100 * (metrics.acer(cb) - metrics.acer(ca))}


def check_boxes(root: str | Path, model: str | Path, split: str = "test", detector: str = "auto",
                limit: int | None = None, threshold: float = 0.5) -> dict[str, Any]:
    """Test ACER of `model` on crops from stored `_BB.txt` boxes vs crops from the detector's boxes.

    ``found``: the images where the detector found a face (the box conversion is what differs).
    ``all``: every image, those without a detected face scored on a centre crop (crop_face's fallback
    for a missing box), i.e. what `predict` on these images could at best do."""
    from paperkit.predict import Scorer

    scorer = Scorer(model)
    samples = _stored_boxes(root, split, limit)
    stored, det, labels, hit = [], [], [], []
    by: dict[str, int] = {}
    for s, img in samples:
        faces = detect(img, detector)
        if faces:
            by[faces[0].detector] = by.get(faces[0].detector, 0) + 1
        stored.extend(scorer.score_faces(img, [s.box]))
        det.extend(scorer.score_faces(img, [faces[0].box if faces else None]))
        labels.append(s.label)
        hit.append(bool(faces))
    st, de, y, h = np.asarray(stored), np.asarray(det), np.asarray(labels), np.asarray(hit, bool)
    return {"split": split, "images": len(samples), "detector": detector, "found_by": by,
            "no_face": int((~h).sum()), "threshold": threshold,
            "all": _acers(st, de, y, threshold), "found": _acers(st[h], de[h], y[h], threshold),
            "calibration": {k: list(v) for k, v in CALIBRATION.items()}}
