"""The embedded default dataset: bona fide faces and physically simulated attacks in CelebA-Spoof layout.

No face anti-spoofing data can be downloaded here, so paperkit renders one from a seed (DESIGN section 3).
Bona fide captures are procedural identities (paperkit.faces) over crops of real photographs shipped
inside installed packages; attacks show the same identity through a medium (print, screen, cut-out)
and re-capture it. Every image, live or spoof, goes through the *same* camera model, so what separates
the classes is the medium, not the pipeline.

Determinism: every image is a pure function of (seed, subject, index) and of a per-session plan drawn in
the parent process; workers only compute, the parent writes in a fixed order, and JPEG encoding uses fixed
parameters. Same seed -> byte-identical tree (on the same OpenCV/libjpeg build).
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator

import cv2
import numpy as np

from . import __version__ as _pkg_version
from . import faces
from .profiles import get_profile

VERSION = "3"  # bump whenever the output changes: it keys the cache folder
GENERATOR = "paperkit.synth"
MARKER = "PAPERKIT_SYNTHETIC.json"  # == paperkit.results.SYNTH_MARKER
CUES = ["print", "screen", "moire", "glare", "cutout", "paper_texture", "low_quality"]
SPOOF_NAMES = {0: "Live", 1: "Photo", 2: "Poster", 3: "A4", 4: "Face Mask", 5: "Upper Body Mask",
               6: "Region Mask", 7: "PC", 8: "Pad", 9: "Phone", 10: "3D Mask"}
ILLUMINATION_NAMES = {0: "Live", 1: "Normal", 2: "Strong", 3: "Back", 4: "Dark"}
ENVIRONMENT_NAMES = {0: "Live", 1: "Indoor", 2: "Outdoor"}
PRINTS = (1, 2, 3)
SCREENS = (7, 8, 9)
CUTOUTS = (4, 5, 6)
FRAMES_PER_VIDEO = 4        # frames per capture session ("video") when a subject has enough images
TEST_FRACTION = 0.2         # subjects held out for the test split
WORKERS = 2                 # processes for build(); PAPERKIT_SYNTH_WORKERS overrides; 1 = in-process
MIN_IMAGES_FOR_POOL = 400
LIVE_OVERSCAN = 1.1         # scenes are captured slightly zoomed so rotation never shows the canvas edge   # below this a pool's start-up costs more than it saves
_SESSION_TAG = 9_100_003
_SPLIT_TAG = 9_100_001

# Domain A = phone camera (sharp, warm, good JPEG); domain B = laptop webcam (soft, noisy, cool, poor JPEG).
# Medium mixes differ too, so a cross-domain test changes both camera and attack instruments.
DOMAINS: dict[str, dict[str, Any]] = {
    "A": {"blur": (0.35, 0.8), "read_noise": 0.004, "shot_noise": 0.0003, "wb": (1.06, 1.0, 0.92),
          "contrast": 1.06, "jpeg": (80, 95), "vignette": 0.12, "iso_dark": 2.0,
          "mix": {1: 3, 2: 1, 3: 1, 4: 1.5, 5: 1, 6: 1.5, 7: 1, 8: 2, 9: 3},
          "screen_pitch": {7: (5, 6), 8: (3, 5), 9: (3, 4)}},
    "B": {"blur": (0.7, 1.5), "read_noise": 0.010, "shot_noise": 0.0008, "wb": (0.93, 1.0, 1.08),
          "contrast": 0.94, "jpeg": (55, 82), "vignette": 0.28, "iso_dark": 3.0,
          "mix": {1: 1, 2: 2, 3: 3, 4: 1, 5: 1.5, 6: 1, 7: 3, 8: 1.5, 9: 1},
          "screen_pitch": {7: (4, 6), 8: (3, 5), 9: (3, 4)}},
}

# Real photographs shipped inside installed wheels (no download): (package, file, environment 1 indoor/2 outdoor).
# Images showing a human face (astronaut, camera, grace_hopper) are excluded: a second face confuses the box.
_BACKGROUNDS = [
    ("skimage", "coffee.png", 1), ("skimage", "chelsea.png", 1), ("skimage", "motorcycle_left.png", 1),
    ("skimage", "motorcycle_right.png", 1), ("skimage", "page.png", 1), ("skimage", "clock_motion.png", 1),
    ("skimage", "coins.png", 1), ("skimage", "text.png", 1), ("skimage", "rocket.jpg", 2), ("skimage", "brick.png", 2),
    ("skimage", "grass.png", 2), ("skimage", "gravel.png", 2), ("skimage", "hubble_deep_field.jpg", 2),
    ("matplotlib", "Minduka_Present_Blue_Pack.png", 1),
]


# ----------------------------------------------------------------------------------------------
# Backgrounds

def _package_file(package: str, name: str) -> Path | None:
    try:
        if package == "skimage":
            import skimage.data as d
            p = Path(d.__file__).parent / name
        else:
            import matplotlib
            p = Path(matplotlib.get_data_path()) / "sample_data" / name
    except Exception:  # package missing or broken: fall back to procedural backgrounds
        return None
    return p if p.is_file() else None


def _read_bundled(p: Path) -> np.ndarray | None:
    """Read a bundled photo as uint8 RGB; Pillow first (quiet about odd ICC profiles), OpenCV as fallback."""
    try:
        from PIL import Image
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except Exception:
        return faces.read_rgb(p)


@lru_cache(maxsize=1)
def backgrounds() -> tuple[list[np.ndarray], list[int], list[str]]:
    """Load the bundled photographs once per process as float32 RGB (max side 512), with environments.

    Grayscale photos are tinted with a fixed colour so walls and paper are not all neutral gray.
    Falls back to procedural gradients + noise (with a warning) if no photograph is available.
    """
    imgs, envs, names = [], [], []
    tints = [(1.0, 0.92, 0.8), (0.85, 0.95, 1.05), (1.0, 1.0, 0.9), (0.9, 1.0, 0.9)]
    for i, (pkg, name, env) in enumerate(_BACKGROUNDS):
        p = _package_file(pkg, name)
        if p is None:
            continue
        im = _read_bundled(p)
        if im is None or min(im.shape[:2]) < 64:
            continue
        f = 512.0 / max(im.shape[:2])
        if f < 1:
            im = cv2.resize(im, (int(im.shape[1] * f), int(im.shape[0] * f)), interpolation=cv2.INTER_AREA)
        x = im.astype(np.float32) / 255
        if np.abs(x[..., 0] - x[..., 1]).mean() < 0.01:
            x = x * np.array(tints[i % len(tints)], np.float32)
        imgs.append(np.ascontiguousarray(x))
        envs.append(env)
        names.append(f"{pkg}:{name}")
    if not imgs:
        warnings.warn("paperkit.synth: no bundled photographs found (scikit-image / matplotlib sample data); "
                      "using procedural backgrounds. Install scikit-image to get real backgrounds.", stacklevel=2)
        r = np.random.default_rng(12345)
        for k in range(8):
            yy, xx = np.mgrid[0:256, 0:256].astype(np.float32) / 256
            base = r.uniform(0.2, 0.8, 3).astype(np.float32)
            g = base + (xx[..., None] - 0.5) * r.uniform(-0.4, 0.4, 3) + (yy[..., None] - 0.5) * r.uniform(-0.4, 0.4, 3)
            g += cv2.resize(r.standard_normal((16, 16, 3)).astype(np.float32), (256, 256)) * 0.08
            imgs.append(np.clip(g, 0, 1).astype(np.float32))
            envs.append(1 + k % 2)
            names.append(f"procedural:{k}")
    return imgs, envs, names


def _bg_crop(idx: int, r: np.random.Generator, size: int, zoom: float, cx: float, cy: float,
             flip: bool, blur: float) -> np.ndarray:
    """A square crop of background `idx` (relative centre cx, cy in [0,1], side = zoom * short side)."""
    img = backgrounds()[0][idx]
    h, w = img.shape[:2]
    side = max(8.0, min(h, w) * zoom)
    x0 = (w - side) * cx
    y0 = (h - side) * cy
    sc = size / side
    m = np.array([[sc, 0, -x0 * sc], [0, sc, -y0 * sc]], np.float64)
    if flip:
        m = np.array([[-1, 0, size - 1], [0, 1, 0]], np.float64) @ np.vstack([m, [0, 0, 1]])
    out = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if blur > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    return out


# ----------------------------------------------------------------------------------------------
# Media. The medium's periodic structure (halftone screen, sub-pixel stripes) is a cached tile that is
# warped straight into the camera frame: each sensor pixel point-samples the structure where it lands on
# the medium, which is exactly what makes it alias into moire; the optics' low-pass is applied as the
# Gaussian MTF at the structure's true frequency (`_atten`). This keeps all per-pixel work at output
# resolution (the cost of a live image) instead of rendering a 2-3x oversampled medium.

_TILE = 1024
_P0_HT = 4.0    # halftone tile period (tile px)
_P0_SUB = 6     # sub-pixel tile pitch (tile px): 2 px per R/G/B stripe


@lru_cache(maxsize=2)
def _halftone_tile() -> np.ndarray:
    """Clustered-dot screens in [0,1] at the C, M, Y screen angles (15, 75, 0 degrees), one per channel."""
    yy, xx = np.mgrid[0:_TILE, 0:_TILE].astype(np.float32)
    out = np.empty((_TILE, _TILE, 3), np.float32)
    for c, ang in enumerate((15.0, 75.0, 0.0)):
        a = math.radians(ang)
        u = (xx * math.cos(a) + yy * math.sin(a)) * (2 * math.pi / _P0_HT)
        v = (-xx * math.sin(a) + yy * math.cos(a)) * (2 * math.pi / _P0_HT)
        out[..., c] = 0.5 + 0.25 * (np.cos(u) + np.cos(v))
    return out


@lru_cache(maxsize=2)
def _subpixel_tile() -> np.ndarray:
    """RGB stripe sub-pixels with a black matrix between rows and stripes, mean 1 per channel."""
    col = np.arange(_TILE) % _P0_SUB
    row = np.arange(_TILE) % _P0_SUB
    mask = np.zeros((_TILE, _TILE, 3), np.float32)
    for c in range(3):
        mask[:, col // 2 == c, c] = 1.0
        mask[:, (col == 2 * c + 1), c] = 0.75  # stripe edge toward the black matrix
    mask[row == _P0_SUB - 1, :, :] *= 0.2
    mask /= mask.reshape(-1, 3).mean(0)
    return mask


def _pattern_out(tile: np.ndarray, p0: float, period: float, h: np.ndarray, n: int, r: np.random.Generator) -> np.ndarray:
    """Warp a periodic tile (period p0 tile px) into the frame, for a plane whose structure has
    `period` plane px and maps to the frame by homography h (plane px -> frame px)."""
    k = period / p0
    ox, oy = r.uniform(0, 8 * p0, 2)
    a = np.array([[k, 0, -ox * k], [0, k, -oy * k], [0, 0, 1]], np.float64)
    return cv2.warpPerspective(tile, h @ a, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _lum(x: np.ndarray) -> np.ndarray:
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def _blob_out(h: np.ndarray, plane: int, n: int, cx: float, cy: float, sx: float, sy: float, ang: float) -> np.ndarray:
    """An oriented Gaussian highlight (glare) on the medium plane (fractions of its side), seen in the frame."""
    k = 32
    yy, xx = np.mgrid[0:k, 0:k].astype(np.float32) / k
    c, s = math.cos(ang), math.sin(ang)
    u = ((xx - cx) * c + (yy - cy) * s) / max(sx, 1e-3)
    v = (-(xx - cx) * s + (yy - cy) * c) / max(sy, 1e-3)
    small = np.exp(-(u * u + v * v)).astype(np.float32)
    a = np.array([[plane / k, 0, 0], [0, plane / k, 0], [0, 0, 1]], np.float64)
    return cv2.warpPerspective(small, h @ a, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def print_tone(content: np.ndarray, p: dict) -> np.ndarray:
    """Ink on paper cannot reproduce the scene: desaturated, lifted blacks, paper-white highlights."""
    s = p["strength"]
    x = np.clip(content, 0, 1)
    lum = _lum(x)[..., None]
    x = lum + (x - lum) * (1 - 0.45 * s * p["desat"])
    black, white = 0.04 + 0.16 * s * p["black"], np.array(p["paper_white"], np.float32)
    return black + (white - black) * np.power(x, p["print_gamma"])


def print_texture(x: np.ndarray, kind: int, p: dict, h: np.ndarray, plane: int, blur: float, scale: float,
                  r: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Halftone dots, paper fibres, banding and gloss glare, on a print already warped into the frame.

    `scale` = frame px per plane px (for the cues' frequencies at the sensor)."""
    n = x.shape[0]
    ht_out = p["ht_period"] * scale
    a_ht = p["halftone"] * _atten(blur, ht_out)
    if a_ht > 0.01:
        ink = 1 - x
        scr = _pattern_out(_halftone_tile(), _P0_HT, p["ht_period"], h, n, r)
        dots = np.clip((ink - scr) * p["ht_sharp"] + 0.5, 0, 1)
        x = 1 - (ink + (dots - ink) * a_ht)
    a_pa = p["paper_amp"] * _atten(blur, 2.0)
    if a_pa > 0.002:
        x = x * (1 + a_pa * faces.bank_slice("paper", r, n, n))[..., None]
    if kind == 3 and p["banding"] > 0:  # inkjet banding along the print-head passes
        band = p["band_period"] * scale
        rows = np.sin(np.arange(n, dtype=np.float32) * (2 * math.pi / band)) * p["banding"] * _atten(blur, band)
        x = x * (1 + rows)[:, None, None]
    glare = 0.0
    if p["glare"] > 0.01:
        g = _blob_out(h, plane, n, *p["glare_xy"], *p["glare_size"], p["glare_ang"]) * p["glare"]
        x = x * (1 - g[..., None]) + g[..., None] * 1.05
        glare = p["glare"]
    return x, {"glare": glare, "paper_amp": a_pa, "halftone": a_ht}


def screen_display(content: np.ndarray, p: dict) -> np.ndarray:
    """What the panel emits, at its own pixel count: box-resampled content through display gamma,
    white point and black level (returned at panel resolution, res x res)."""
    n = content.shape[0]
    res = max(8, int(round(2 * n / p["pitch"])))
    disp = cv2.resize(np.clip(content, 0, 1), (res, res), interpolation=cv2.INTER_AREA)
    disp = np.power(disp, p["gamma"]) * np.array(p["white"], np.float32)
    return p["black"] + (p["bright"] - p["black"]) * disp


# ----------------------------------------------------------------------------------------------
# Camera

@lru_cache(maxsize=8)
def _vignette(n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    d = ((xx - n / 2) ** 2 + (yy - n / 2) ** 2) / (n * n / 2)
    return d


def capture(frame: np.ndarray, cam: dict, r: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """The shared camera back-end: white balance, tone, vignetting, sensor noise, 8-bit quantisation.

    Geometry and optical blur happen before (they depend on where the object is); this part is
    identical for every image. Returns (uint8 RGB, jpeg quality, sampling factor) for encoding.
    """
    n = frame.shape[0]
    x = frame * (np.array(cam["wb"], np.float32) * cam["exposure"])
    x *= (1 - cam["vignette"] * _vignette(n))[..., None]
    x = np.clip(x, 0, 1.5)
    # Poisson-Gaussian sensor noise, in a mildly correlated (demosaiced) form
    sig = np.sqrt(x * cam["shot"] + cam["read"] ** 2) * cam["iso"]
    noise = faces.bank_slice("white3", r, n, n)
    x = x + sig * noise
    # tone curve (S-shaped contrast) and gamma-ish compression of highlights
    x = np.clip(x, 0, 1)
    x = 0.5 + (x - 0.5) * cam["contrast"]
    out = np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)
    return out, cam["jpeg"], cam["sampling"]


def encode_jpeg(rgb: np.ndarray, quality: int, sampling: int) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_OPTIMIZE, 0,
              cv2.IMWRITE_JPEG_PROGRESSIVE, 0, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, int(sampling)]
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG; check the opencv-python-headless install")
    return buf.tobytes()


def _homography(n_src: int, n_out: int, coverage: float, cx: float, cy: float, roll_deg: float,
                tilt: tuple[float, float], jitter: np.ndarray) -> np.ndarray:
    """Map a square plane of n_src px to the output frame: it covers `coverage` of the frame width,
    centred at (cx, cy) (fractions), rotated by roll, with perspective tilt and corner jitter (fractions)."""
    half = coverage * n_out / 2
    src = np.array([[0, 0], [n_src, 0], [n_src, n_src], [0, n_src]], np.float32)
    base = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32)
    tx, ty = tilt
    # perspective: one side nearer (bigger) than the other
    base = base * np.array([[1 + ty * b[1] * 0.5 + 0.0, 1 + tx * b[0] * 0.5] for b in base], np.float32)
    a = math.radians(roll_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], np.float32)
    dst = base @ rot.T * half + np.array([cx * n_out, cy * n_out], np.float32) + jitter.astype(np.float32) * n_out
    return cv2.getPerspectiveTransform(src, dst.astype(np.float32))


def _warp_box(box: Iterable[float], h: np.ndarray) -> tuple[float, float, float, float]:
    """Axis-aligned box of a warped face box, shrunk halfway back toward the original size (a face
    detector's box stays face-sized under rotation)."""
    x, y, w, hh = box
    pts = np.array([[[x, y]], [[x + w, y]], [[x, y + hh]], [[x + w, y + hh]], [[x + w / 2, y + hh / 2]]], np.float32)
    q = cv2.perspectiveTransform(pts, h.astype(np.float64)).reshape(-1, 2)
    x0, y0 = q[:4].min(0)
    x1, y1 = q[:4].max(0)
    sc = math.sqrt(abs(np.linalg.det(h[:2, :2] / h[2, 2])))
    tw, th = w * sc, hh * sc
    bw, bh = x1 - x0, y1 - y0
    nw, nh = (bw + tw) / 2, (bh + th) / 2
    cx, cy = q[4]
    return float(cx - nw / 2), float(cy - nh / 2), float(nw), float(nh)


# ----------------------------------------------------------------------------------------------
# Identity sources: rendered faces or user photos

@dataclass
class PhotoFace:
    """A user's bona fide photo, cropped around the face found by the Haar cascade."""
    rgb: np.ndarray            # float32 RGB
    box: tuple[int, int, int, int]


class _Sources:
    """Per-process identity source, set by the pool initializer (user photos) or empty (rendered)."""
    photos: list[list[PhotoFace]] | None = None


def _init_worker(photos: list[list[PhotoFace]] | None) -> None:
    cv2.setNumThreads(1)
    _Sources.photos = photos


@lru_cache(maxsize=256)
def _identity(seed: int, subject: int) -> faces.Identity:
    return faces.make_identity(seed, subject)


def _render_subject(seed: int, subject: int, pose: faces.Pose, bg: dict, n: int, r: np.random.Generator,
                    lighting: dict) -> tuple[np.ndarray, np.ndarray, tuple, faces.Marks, list[int] | None]:
    """A bona fide scene (person over background) before the camera: rgb, alpha, box, marks, attrs."""
    photos = _Sources.photos
    if photos is None:
        ident = _identity(seed, subject)
        p = faces.Pose(**{**asdict(pose), "light": pose.light * lighting["face"], "ambient": pose.ambient * lighting["face"]})
        person, alpha, box, marks = faces.render_person(ident, p, n, r)
        back = _bg_crop(bg["idx"], r, n, bg["zoom"], bg["cx"], bg["cy"], bg["flip"], bg["blur"]) * lighting["bg"]
        a = alpha[..., None]
        scene = (person * a + back * (1 - a)) * np.array(pose.tint, np.float32)
        attrs = ident.attributes(pose.smile > 0.5, pose.mouth_open > 0.3, False)
        return scene, alpha, box, marks, attrs
    # user photo: crop so the Haar face occupies the same place a rendered face would
    shots = photos[subject]
    ph = shots[int(r.integers(len(shots)))]
    x, y, w, h = ph.box
    face_w = 2.0 * pose.scale * n
    sc = face_w / (w * 0.95)
    fcx, fcy = x + w / 2, y + h * 0.55
    flip = bool(r.random() < 0.5)
    m = np.array([[sc, 0, pose.cx * n - fcx * sc], [0, sc, pose.cy * n - fcy * sc]], np.float64)
    if flip:
        m = np.array([[-1, 0, n - 1], [0, 1, 0]], np.float64) @ np.vstack([m, [0, 0, 1]])
    scene = cv2.warpAffine(ph.rgb, m, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    scene = np.power(np.clip(scene, 0, 1), lighting["gamma"]) * lighting["face"]
    bx = pose.cx * n - w * sc / 2
    by = pose.cy * n - h * sc * 0.55
    box = (bx, by, w * sc, h * sc)
    cx, cy, rx, ry = pose.cx * n, pose.cy * n, w * sc * 0.45, h * sc * 0.62
    marks = faces.Marks(eyes=((cx - rx * 0.42, cy - ry * 0.2), (cx + rx * 0.42, cy - ry * 0.2)),
                        mouth=(cx, cy + ry * 0.52), eye_r=rx * 0.25, mouth_r=(rx * 0.4, ry * 0.15), face=(cx, cy, rx, ry))
    alpha = np.zeros((n, n), np.float32)
    cv2.ellipse(alpha, (int(cx), int(cy)), (int(rx * 1.25), int(ry * 1.25)), 0, 0, 360, 1.0, -1)
    cv2.ellipse(alpha, (int(cx), int(cy + ry * 2.4)), (int(rx * 2.8), int(ry * 1.4)), 0, 0, 360, 1.0, -1)
    return scene, alpha, box, marks, None


# ----------------------------------------------------------------------------------------------
# Session planning (parent process) and frame rendering (workers)

@dataclass(frozen=True)
class Job:
    subject: int          # 0-based identity index
    subject_id: str       # folder name
    split: str
    index: int            # index within the subject (rng stream)
    stem: str             # 6-digit file stem
    live: bool
    session: dict = field(hash=False)


def _strength(r: np.random.Generator, difficulty: float) -> float:
    """Attack strength in [0,1] (1 = blatant), Beta-distributed with mean 1 - difficulty."""
    d = float(np.clip(difficulty, 0.0, 1.0))
    a = 0.35 + 3.0 * (1 - d)
    b = 0.35 + 3.0 * d
    lo = max(0.0, 0.6 * (1 - 2 * d))  # easy settings: no near-invisible attacks
    return float(lo + (1 - lo) * r.beta(a, b))


def _camera_session(r: np.random.Generator, dom: dict, difficulty: float, illum: int) -> dict:
    """Camera settings for one capture session; identical distribution for live and spoof."""
    d = float(np.clip(difficulty, 0, 1))
    lo, hi = dom["blur"]
    blur = r.uniform(lo, hi) * (0.75 + 0.25 * d + d * r.uniform(0, 0.8))
    qlo, qhi = dom["jpeg"]
    q = int(round(r.uniform(qlo, qhi) - d * r.uniform(0, 20)))
    iso = 1.0 + (dom["iso_dark"] if illum == 4 else 0.0) + d * r.uniform(0, 0.8)
    wb = np.array(dom["wb"]) * r.uniform(0.96, 1.04, 3)
    return {"blur": float(blur), "jpeg": int(np.clip(q, 35, 97)), "iso": float(iso),
            "sampling": int(cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444 if q >= 90 else cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420),
            "wb": tuple(float(v) for v in wb), "read": dom["read_noise"], "shot": dom["shot_noise"],
            "contrast": float(dom["contrast"] * r.uniform(0.95, 1.05)), "vignette": float(dom["vignette"] * r.uniform(0.5, 1.2)),
            "exposure": float(r.uniform(0.92, 1.08))}


def _lighting(illum: int, r: np.random.Generator) -> dict:
    """Scene lighting for an illumination code (also drawn, hidden, for live sessions)."""
    if illum == 2:   # strong
        return {"face": float(r.uniform(1.15, 1.35)), "bg": float(r.uniform(1.0, 1.2)), "gamma": 0.85}
    if illum == 3:   # back light: bright background, darker face
        return {"face": float(r.uniform(0.55, 0.75)), "bg": float(r.uniform(1.3, 1.6)), "gamma": 1.2}
    if illum == 4:   # dark
        return {"face": float(r.uniform(0.35, 0.55)), "bg": float(r.uniform(0.3, 0.5)), "gamma": 1.3}
    return {"face": float(r.uniform(0.9, 1.1)), "bg": float(r.uniform(0.85, 1.1)), "gamma": 1.0}


def _bg_params(r: np.random.Generator, idx: int | None = None) -> dict:
    nb = len(backgrounds()[0])
    return {"idx": int(r.integers(nb)) if idx is None else idx, "zoom": float(r.uniform(0.35, 0.9)),
            "cx": float(r.random()), "cy": float(r.random()), "flip": bool(r.random() < 0.5), "blur": float(r.uniform(0, 2.5))}


def _pose_dict(p: faces.Pose) -> dict:
    return asdict(p)


def plan_sessions(seed: int, subject: int, n_live: int, n_spoof: int, difficulty: float,
                  decks: dict[str, list[int]]) -> list[tuple[dict, int]]:
    """Split a subject's images into capture sessions; returns [(session, n_frames)], live first.

    Domains alternate across a subject's sessions (random start), so each subject has live and spoof
    captures in both domains whenever it has at least two sessions of each.
    """
    r = np.random.default_rng([seed, subject, _SESSION_TAG])
    out = []
    for live, count in ((True, n_live), (False, n_spoof)):
        if count <= 0:
            continue
        n_sess = max(1, int(round(count / FRAMES_PER_VIDEO)))
        sizes = [count // n_sess + (1 if k < count % n_sess else 0) for k in range(n_sess)]
        start = int(r.integers(2))
        for k, sz in enumerate(sizes):
            dom_name = "AB"[(start + k) % 2]
            dom = DOMAINS[dom_name]
            illum = int(r.choice([1, 2, 3, 4], p=[0.55, 0.15, 0.15, 0.15]))
            sess: dict[str, Any] = {
                "live": live, "domain": dom_name, "video": f"{'live' if live else 'spoof'}_s{k}",
                "illum": illum, "bg": _bg_params(r), "pose": _pose_dict(faces.random_pose(r)),
                "camera": _camera_session(r, dom, difficulty, illum), "light": _lighting(illum, r),
                "roll": float(r.normal(0, 5)), "frame_cx": float(r.uniform(0.46, 0.54)),
            }
            if not live:
                deck = decks[dom_name]
                if not deck:
                    deck.extend(_new_deck(seed, dom_name, len(decks.get("_count", [])), decks))
                kind = deck.pop()
                sess["kind"] = kind
                sess["medium"] = _medium_params(kind, r, dom, difficulty)
                sess["content_pose"] = _pose_dict(faces.random_pose(r))
                sess["content_bg"] = _bg_params(r)
                sess["content_light"] = _lighting(1, r)
                sess["env_bg"] = _bg_params(r)
            out.append((sess, sz))
    return out


def _new_deck(seed: int, dom_name: str, k: int, decks: dict) -> list[int]:
    """A shuffled 'deck' of spoof types with the domain's medium mix (drawn without replacement,
    so small datasets still cover every type)."""
    decks.setdefault("_count", []).append(1)
    mix = DOMAINS[dom_name]["mix"]
    cards = [t for t, w in mix.items() for _ in range(int(round(w * 2)))]
    r = np.random.default_rng([seed, ord(dom_name), k, 55])
    r.shuffle(cards)
    return cards


def _medium_params(kind: int, r: np.random.Generator, dom: dict, difficulty: float) -> dict:
    s = _strength(r, difficulty)
    p: dict[str, Any] = {"strength": s, "coverage": float(r.uniform(0.85, 1.35)), "tilt": tuple(float(v) for v in r.normal(0, 0.08, 2)),
                         "defocus": float(r.uniform(0, 0.6))}
    if kind in PRINTS or kind in CUTOUTS:
        glossy = kind == 1
        p.update({
            "desat": float(r.uniform(0.5, 1.0)), "black": float(r.uniform(0.5, 1.0)),
            "paper_white": tuple(float(v) for v in np.array([0.97, 0.96, 0.92]) * r.uniform(0.95, 1.02, 3)),
            "print_gamma": float(1 + r.uniform(-0.1, 0.3) * s),
            "halftone": float(np.clip((0.5 if glossy else 0.9) * s * r.uniform(0.8, 1.3), 0, 1)),
            # halftone period as seen by the camera (frame px): coarse screens / close-up prints at low
            # difficulty survive the optics and the crop resize; fine ones alias into faint moire
            "ht_frame": float((1 - difficulty) * r.uniform(3.0, 5.5) + difficulty * r.uniform(1.2, 2.6)),
            "ht_sharp": float(r.uniform(1.5, 4.0)),
            "paper_amp": float((0.02 if glossy else 0.06) * s * r.uniform(0.6, 1.4)),
            "banding": float(0.03 * s * r.random()) if kind == 3 else 0.0, "band_period": float(r.uniform(6, 14)),
            "glare": float((r.uniform(0.15, 0.55) if glossy else r.uniform(0.0, 0.25)) * (0.4 + 0.6 * s) * (r.random() < 0.7)),
            "glare_xy": tuple(float(v) for v in r.uniform(0.15, 0.85, 2)), "glare_size": tuple(float(v) for v in r.uniform(0.08, 0.35, 2)),
            "glare_ang": float(r.uniform(0, math.pi)), "bend": float(r.uniform(0, 0.15) * s) if kind in (2, 3) else 0.0,
            "margin": float(r.uniform(0.02, 0.08)) if kind == 1 else 0.0,
        })
        if kind == 2:
            p["coverage"] = float(r.uniform(1.0, 1.5))
        if kind in CUTOUTS:
            p["coverage"] = 1.0
            p["mask_scale"] = float(r.uniform(1.0, 1.12))
            p["mask_shift"] = tuple(float(v) for v in r.normal(0, 0.015 + 0.015 * (1 - difficulty), 2))
            p["region"] = str(r.choice(["upper", "lower"]))
            p["holes"] = bool(kind == 4 or r.random() < 0.7)
            p["edge"] = float(0.3 + 0.7 * s)
            p["lift"] = float(r.uniform(1.0, 3.0) * (0.5 + s))  # paper's distance from the face: shadow width (px)
    else:
        lo, hi = dom["screen_pitch"][kind]
        p.update({
            # panel pitch (plane units): coarser panels / closer replays at low difficulty show the sub-pixel
            # grid and pixelation at frequencies the camera resolves
            "pitch": float(r.uniform(lo, hi + 1) * (1 + 1.0 * (1 - difficulty))), "gamma": float(1 + r.uniform(-0.25, 0.35) * (0.3 + 0.7 * s)),
            "white": tuple(float(v) for v in np.array([0.93, 0.98, 1.08]) ** (0.5 + 1.5 * s) * r.uniform(0.97, 1.03, 3)),
            "black": float(r.uniform(0.01, 0.06) * (0.3 + s)), "bright": float(r.uniform(0.9, 1.15)),
            "grid": float(np.clip(0.85 * s * r.uniform(0.5, 1.3), 0, 0.95)),
            "reflect": float(r.uniform(0.02, 0.25) * (0.3 + 0.7 * s) * (r.random() < 0.8)),
            "bezel": float(r.uniform(0.03, 0.09)), "bezel_color": float(r.choice([0.04, 0.08, 0.75])),
            "coverage": float(r.uniform(0.9, 1.4) if kind != 9 else r.uniform(1.0, 1.5)),
        })
    return p


def _frame_jitter(r: np.random.Generator, base: dict) -> faces.Pose:
    return faces.random_pose(r, faces.Pose(**base))


def _mtf(sigma: float, period: float) -> float:
    if period <= 0:
        return 0.0
    f = 1.0 / period
    return math.exp(-2 * (math.pi * sigma * f) ** 2)


def _atten(sigma: float, period: float) -> float:
    """Optical low-pass a periodic cue suffers *before* sampling, beyond what the frame's own Gaussian blur
    (applied later) does to it: a structure the sensor resolves (period >= 2 px) keeps full amplitude
    here and is blurred once with the frame; a finer one, which aliases to a lower frequency that the
    frame blur would wrongly spare, is attenuated by the MTF ratio."""
    if period <= 0:
        return 0.0
    return _mtf(sigma, period) / _mtf(sigma, max(period, 2.0))


def render_frame(job: Job, seed: int, n: int) -> dict:
    """Render one image (pure function of the job, seed and size). Returns JPEG bytes, box line, labels."""
    sess = job.session
    r = np.random.default_rng([seed, job.subject, job.index])
    cam = sess["camera"]
    light = sess["light"]
    pose = _frame_jitter(r, sess["pose"])
    blur = cam["blur"] * float(r.uniform(0.85, 1.15))
    roll = sess["roll"] + pose.roll
    jitter = r.normal(0, 0.008, (4, 2))
    cues = [0] * 7
    attrs: list[int] | None = None
    kind = 0 if job.live else sess["kind"]
    fcx = 0.5 + (sess["frame_cx"] - 0.5) * 0.3
    if job.live:
        scene, alpha, box, marks, attrs = _render_subject(seed, job.subject, pose, sess["bg"], n, r, light)
        h = _homography(n, n, LIVE_OVERSCAN, fcx, 0.5, roll, (0.0, 0.0), jitter)
        frame = cv2.warpPerspective(scene, h, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        out_box = _warp_box(box, h)
    else:
        med = sess["medium"]
        eb = sess["env_bg"]
        env = _bg_crop(eb["idx"], r, n, eb["zoom"], eb["cx"], eb["cy"], eb["flip"], eb["blur"] + 1.0) * light["bg"]
        if kind in CUTOUTS:
            # a cut-out print held in front of the live face (face/region mask, with holes where the live
            # eyes and mouth show) or in front of the room (upper-body silhouette)
            live_scene, alpha, box, marks, _ = _render_subject(seed, job.subject, pose, sess["bg"], n, r, light)
            if kind == 5:
                live_scene = env
            cpose = faces.Pose(**{**asdict(pose), "light_dir": tuple(sess["content_pose"]["light_dir"]),
                                  "smile": sess["content_pose"]["smile"], "mouth_open": 0.0, "blink": 0.0})
            content, c_alpha, _, c_marks, _ = _render_subject(seed, job.subject, cpose, sess["content_bg"], n, r,
                                                              sess["content_light"])
            sc = med["mask_scale"]
            shx, shy = med["mask_shift"]
            fx, fy = marks.face[0], marks.face[1]
            a_m = np.array([[sc, 0, (1 - sc) * fx + shx * n], [0, sc, (1 - sc) * fy + shy * n]])
            printed = cv2.warpAffine(print_tone(content * light["face"], med), a_m, (n, n), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT)
            cut = _cutout_mask(kind, med, c_marks.moved(a_m), c_alpha, a_m, n)
            edge = med["edge"]
            lift = med.get("lift", 1.0)
            sh = cv2.GaussianBlur(cut, (0, 0), lift)
            sh = np.roll(sh, (int(round(lift * 0.7)), int(round(lift * 0.5))), (0, 1))  # drop shadow, offset from the light
            rim = np.clip(sh - cut, 0, 1)
            base = live_scene * (1 - np.clip(rim * 2 * edge, 0, 0.6))[..., None]
            plane = printed * cut[..., None] + base * (1 - cut[..., None])
            ext = np.clip((cut - cv2.erode(cut, np.ones((3, 3), np.uint8))) * edge, 0, 1)  # the paper edge catches light
            plane += ext[..., None] * 0.5
            h = _homography(n, n, LIVE_OVERSCAN, fcx, 0.5, roll, (0.0, 0.0), jitter)
            frame = cv2.warpPerspective(plane, h, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            cut_out = cv2.warpPerspective(cut, h, (n, n), flags=cv2.INTER_LINEAR)
            # plane units here are content px (half the medium units the halftone period is drawn in)
            tex, pc = print_texture(frame, kind, {**med, "ht_period": med["ht_frame"] / LIVE_OVERSCAN}, h, n, blur,
                                    LIVE_OVERSCAN, r)
            frame = tex * cut_out[..., None] + frame * (1 - cut_out[..., None])
            out_box = _warp_box(box, h)
            cues[0] = cues[4] = 1
            cues[2] = int(pc["halftone"] > 0.15)
            cues[3] = int(pc["glare"] > 0.2)
            cues[5] = int(pc["paper_amp"] > 0.008)
        else:
            cpose = faces.random_pose(r, faces.Pose(**sess["content_pose"]), jitter=0.2)  # the shown photo is fixed
            content, _, box, _, _ = _render_subject(seed, job.subject, cpose, sess["content_bg"], n, r, sess["content_light"])
            m = 2 * n  # medium plane units: 2 per content px
            is_print = kind in PRINTS
            bz = int((med.get("margin", 0.0) if is_print else med["bezel"]) * m)
            mm = m + 2 * bz
            cov = med["coverage"] * mm / m
            h = _homography(mm, n, cov, 0.5 + (sess["frame_cx"] - 0.5) * 0.5, 0.5, roll * 0.5, med["tilt"], jitter)
            scale = cov * n / mm  # frame px per plane unit
            hc = h @ np.array([[2.0, 0, bz], [0, 2.0, bz], [0, 0, 1]])  # content px -> frame
            if is_print:
                shown = print_tone(content * light["face"], med)
                frame = cv2.warpPerspective(shown, hc, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                frame, pc = print_texture(frame, kind, {**med, "ht_period": med["ht_frame"] / scale}, h, mm,
                                          blur * (1 + med["defocus"]), scale, r)
                if kind in (2, 3) and med["bend"] > 0.005:  # a curved sheet: light falls off across it
                    ramp = _blob_out(h, mm, n, 0.5, 0.5, 1.2, 4.0, 0.0)
                    frame *= (1 - med["bend"] + med["bend"] * ramp)[..., None]
                cues[0] = 1
                cues[2] = int(pc["halftone"] > 0.15)
                cues[3] = int(pc["glare"] > 0.2)
                cues[5] = int(pc["paper_amp"] > 0.008)
                border_val = np.array(med["paper_white"], np.float32) * light["face"]
            else:
                disp = screen_display(content, med)
                res = disp.shape[0]
                hs = h @ np.array([[m / res, 0, bz], [0, m / res, bz], [0, 0, 1]])  # panel px -> frame
                frame = cv2.warpPerspective(disp, hs, (n, n), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
                pitch = m / res
                a_g = med["grid"] * _atten(blur * (1 + med["defocus"]), pitch * scale)
                if a_g > 0.01:
                    sub = _pattern_out(_subpixel_tile(), _P0_SUB, pitch, h, n, r)
                    frame = frame * ((1 - a_g) + a_g * sub)
                # the room reflected in the glass: a blurred mirror of the environment and a window highlight
                refl = cv2.resize(env, (n // 8, n // 8), interpolation=cv2.INTER_AREA)
                refl = cv2.resize(cv2.flip(refl, 1), (n, n), interpolation=cv2.INTER_LINEAR)
                refl += _blob_out(h, mm, n, r.uniform(0, 1), r.uniform(0, 1), 0.15, 0.6, r.uniform(0, math.pi))[..., None] * 0.6
                frame = frame / max(0.5, light["bg"]) ** 0.5 + refl * med["reflect"]  # a screen emits its own light
                cues[1] = 1
                cues[2] = int(a_g > 0.06)
                cues[3] = int(med["reflect"] > 0.15)
                border_val = np.full(3, med["bezel_color"] * light["bg"], np.float32)
            # the medium's own border (paper margin, screen bezel) and the room around it
            cover = cv2.warpPerspective(np.ones((8, 8), np.float32), h @ np.diag([mm / 8, mm / 8, 1.0]), (n, n),
                                        flags=cv2.INTER_LINEAR)
            inner = cv2.warpPerspective(np.ones((8, 8), np.float32),
                                        h @ np.array([[m / 8, 0, bz], [0, m / 8, bz], [0, 0, 1]]), (n, n),
                                        flags=cv2.INTER_LINEAR) if bz > 0 else cover
            frame = frame * inner[..., None] + border_val * (cover - inner)[..., None] + env * (1 - cover)[..., None]
            out_box = _warp_box(box, hc)
    if blur > 0.3:  # the optics, the same for every capture
        frame = cv2.GaussianBlur(frame, (0, 0), blur)
    cam_f = {**cam, "exposure": cam["exposure"] * float(r.uniform(0.96, 1.04))}
    rgb, q, sf = capture(frame, cam_f, r)
    cues[6] = int(blur > 1.3 or q < 60 or cam["iso"] * cam["read"] > 0.03)
    if attrs is not None:
        attrs[faces.ATTR["Blurry"]] = int(blur > 1.3)
    data = encode_jpeg(rgb, q, sf)
    f = 224.0 / n
    x, y, w, hh = out_box
    score = 0.9 + 0.0999 * float(r.random())
    bb = f"{int(round(x * f))} {int(round(y * f))} {int(round(w * f))} {int(round(hh * f))} {score:.7f}\n"
    label = (attrs if (job.live and attrs is not None) else [0] * 40) + [
        kind, 0 if job.live else sess["illum"], 0 if job.live else backgrounds()[1][sess["env_bg"]["idx"]],
        0 if job.live else 1]
    return {"jpeg": data, "bb": bb, "label": label, "cues": cues}


def _cutout_mask(kind: int, med: dict, marks: faces.Marks, c_alpha: np.ndarray, a_m: np.ndarray, m: int) -> np.ndarray:
    """Where the print is (1) in the medium plane: face oval / half-face band / body silhouette, minus holes."""
    cut = np.zeros((m, m), np.float32)
    cx, cy, rx, ry = marks.face
    if kind == 5:
        cut = cv2.warpAffine(c_alpha, a_m, (m, m), flags=cv2.INTER_LINEAR)
        cut = (cut > 0.5).astype(np.float32)
    elif kind == 4:
        cv2.ellipse(cut, (int(cx), int(cy - ry * 0.05)), (int(rx * 1.02), int(ry * 1.02)), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    else:
        if med["region"] == "upper":
            cv2.ellipse(cut, (int(cx), int(cy)), (int(rx * 1.05), int(ry * 1.02)), 0, 180, 360, 1.0, -1, cv2.LINE_AA)
            cv2.rectangle(cut, (int(cx - rx * 1.05), int(cy - 1)), (int(cx + rx * 1.05), int(cy + ry * 0.12)), 1.0, -1)
        else:
            cv2.ellipse(cut, (int(cx), int(cy)), (int(rx * 1.0), int(ry * 1.0)), 0, 0, 180, 1.0, -1, cv2.LINE_AA)
            cv2.rectangle(cut, (int(cx - rx), int(cy - ry * 0.08)), (int(cx + rx), int(cy + 1)), 1.0, -1)
    if kind in (4, 6) and med["holes"]:
        for ex, ey in marks.eyes:
            cv2.ellipse(cut, (int(ex), int(ey)), (int(marks.eye_r), int(marks.eye_r * 0.55)), 0, 0, 360, 0.0, -1, cv2.LINE_AA)
        mx, my = marks.mouth
        cv2.ellipse(cut, (int(mx), int(my)), (int(marks.mouth_r[0]), int(marks.mouth_r[1])), 0, 0, 360, 0.0, -1, cv2.LINE_AA)
    return cut


# ----------------------------------------------------------------------------------------------
# User photos (--faces)

def load_face_photos(faces_dir: str | os.PathLike) -> tuple[list[list[PhotoFace]], list[str], int]:
    """Identities from a folder of bona fide photos: each sub-folder is one identity, each loose photo is one.

    Returns (identities, names, photos_without_face). Raises a clear error when the folder is missing,
    empty, or no photo contains a face the Haar cascade can find.
    """
    root = Path(faces_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--faces {root}: folder not found; pass a folder of bona fide face photos "
                                f"(one identity per photo or per sub-folder)")
    groups: list[tuple[str, list[Path]]] = []
    for p in sorted(root.iterdir()):
        if p.is_dir():
            files = sorted(q for q in p.rglob("*") if q.suffix.lower() in faces.IMAGE_SUFFIXES and q.is_file())
            if files:
                groups.append((p.name, files))
        elif p.suffix.lower() in faces.IMAGE_SUFFIXES:
            groups.append((p.stem, [p]))
    if not groups:
        raise FileNotFoundError(f"--faces {root}: no photos ({', '.join(faces.IMAGE_SUFFIXES)}) found; add bona fide "
                                f"face photos (one identity per photo or per sub-folder)")
    idents, names, no_face, unreadable = [], [], 0, 0
    for name, files in groups:
        shots = []
        for f in files:
            img = faces.read_rgb(f)
            if img is None:
                unreadable += 1
                continue
            found = faces.find_faces(img)
            if not found:
                no_face += 1
                continue
            x, y, w, h = found[0]
            # keep a generous crop around the face, at most ~4 face widths and 600 px
            side = int(max(w, h) * 4)
            cx, cy = x + w // 2, y + h // 2
            x0, y0 = max(0, cx - side // 2), max(0, cy - side // 2)
            crop = img[y0:y0 + side, x0:x0 + side]
            f2 = min(1.0, 600.0 / max(crop.shape[:2]))
            if f2 < 1:
                crop = cv2.resize(crop, (int(crop.shape[1] * f2), int(crop.shape[0] * f2)), interpolation=cv2.INTER_AREA)
            shots.append(PhotoFace(crop.astype(np.float32) / 255,
                                   (int((x - x0) * f2), int((y - y0) * f2), int(w * f2), int(h * f2))))
        if shots:
            idents.append(shots)
            names.append(name)
    if unreadable:
        print(f"paperkit synth: skipped {unreadable} unreadable photo(s) in {root}", file=sys.stderr)
    if no_face:
        print(f"paperkit synth: skipped {no_face} photo(s) with no face found in {root}", file=sys.stderr)
    if not idents:
        raise ValueError(f"--faces {root}: no face found in any of the photos (Haar cascade, frontal faces); "
                         f"use well-lit frontal photos where the face is at least ~8% of the image side")
    return idents, names, no_face


# ----------------------------------------------------------------------------------------------
# Build

def _jobs(seed: int, n_id: int, n_live: int, n_spoof: int, difficulty: float, subject_ids: list[str],
          test_fraction: float = TEST_FRACTION) -> tuple[list[Job], dict[str, str]]:
    r = np.random.default_rng([seed, _SPLIT_TAG])
    perm = r.permutation(n_id)
    n_test = int(round(test_fraction * n_id)) if n_id >= 2 else 0
    n_test = max(1, n_test) if n_id >= 2 else 0
    test = set(int(i) for i in perm[:n_test])
    splits = {subject_ids[i]: ("test" if i in test else "train") for i in range(n_id)}
    decks: dict[str, list[int]] = {"A": [], "B": []}
    jobs = []
    per = n_live + n_spoof
    for i in range(n_id):
        idx = 0
        for sess, count in plan_sessions(seed, i, n_live, n_spoof, difficulty, decks):
            for _ in range(count):
                jobs.append(Job(i, subject_ids[i], splits[subject_ids[i]], idx, f"{i * per + idx:06d}", sess["live"], sess))
                idx += 1
    return jobs, splits


def _work(args: tuple[Job, int, int]) -> dict:
    job, seed, n = args
    return render_frame(job, seed, n)


def _run(jobs: list[Job], seed: int, n: int, photos: list[list[PhotoFace]] | None, workers: int) -> Iterator[dict]:
    if workers <= 1 or len(jobs) < MIN_IMAGES_FOR_POOL:
        prev = _Sources.photos
        _init_worker(photos)
        try:
            for j in jobs:
                yield render_frame(j, seed, n)
        finally:
            _Sources.photos = prev
        return
    with _pool_context().Pool(workers, initializer=_init_worker, initargs=(photos,)) as pool:
        yield from pool.imap(_work, ((j, seed, n) for j in jobs), chunksize=16)


def _pool_context() -> Any:
    """spawn, never fork: a forked child inherits OpenCV's (and torch's) thread pools mid-state and can
    hang on its first parallel call (seen here). Scripts that call build() must therefore use the
    `if __name__ == "__main__":` guard; the console script, `python -m paperkit` and notebooks are fine."""
    return mp.get_context("spawn")


def _n_workers() -> int:
    env = os.environ.get("PAPERKIT_SYNTH_WORKERS")
    if env:
        return max(1, int(env))
    return max(1, min(WORKERS, os.cpu_count() or 1))


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=None, sort_keys=True, separators=(",", ":")) + "\n")


def build(out_dir: str | os.PathLike, profile: str = "default", seed: int = 0, faces_dir: str | os.PathLike | None = None,
          difficulty: float | None = None, progress: bool = True) -> Path:
    """Write the embedded dataset in CelebA-Spoof layout under `out_dir` and return it.

    The tree is built in a temporary sibling folder and renamed into place at the end, so an
    interrupted build never looks finished. `out_dir` must not exist or be empty.
    """
    prof = get_profile(profile)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty; choose a new --out folder or delete it")
    n = int(prof.synth_image_size)
    diff = float(prof.synth_difficulty if difficulty is None else difficulty)
    if not 0.0 <= diff <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {diff}")
    photos = None
    no_face = 0
    if faces_dir is not None:
        photos, names, no_face = load_face_photos(faces_dir)
        n_id = len(photos)
        subject_ids = [str(i + 1) for i in range(n_id)]
    else:
        n_id = int(prof.synth_identities)
        names = []
        subject_ids = [str(i + 1) for i in range(n_id)]
    n_live, n_spoof = int(prof.synth_live_per_identity), int(prof.synth_spoof_per_identity)
    jobs, splits = _jobs(seed, n_id, n_live, n_spoof, diff, subject_ids, float(prof.synth_test_fraction))
    if faces_dir is not None and not any(s == "test" for s in splits.values()):
        print(f"paperkit synth: only {n_id} identity in {faces_dir}; the test split is empty "
              f"(add photos of at least 2 people for a subject-disjoint test split)", file=sys.stderr)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        labels: dict[str, dict[str, list[int]]] = {"train": {}, "test": {}}
        cue_labels: dict[str, list[int]] = {}
        samples: dict[str, dict[str, str]] = {}
        dom_labels: dict[str, dict[str, list[int]]] = {f"{d}_{s}": {} for d in "AB" for s in ("train", "test")}
        it = _run(jobs, seed, n, photos, _n_workers())
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(it, total=len(jobs), desc=f"synth {profile} s{seed}", unit="img")
        made = set()
        for job, res in zip(jobs, it):
            rel_dir = f"Data/{job.split}/{job.subject_id}/{'live' if job.live else 'spoof'}"
            if rel_dir not in made:
                (tmp / rel_dir).mkdir(parents=True, exist_ok=True)
                made.add(rel_dir)
            rel = f"{rel_dir}/{job.stem}.jpg"
            (tmp / rel).write_bytes(res["jpeg"])
            (tmp / f"{rel_dir}/{job.stem}_BB.txt").write_text(res["bb"])
            labels[job.split][rel] = res["label"]
            cue_labels[rel] = res["cues"]
            dom = job.session["domain"]
            samples[rel] = {"domain": dom, "video": f"{job.split}/{job.subject_id}/{job.session['video']}"}
            dom_labels[f"{dom}_{job.split}"][rel] = res["label"]
        for split in ("train", "test"):
            _write_json(tmp / "metas" / "intra_test" / f"{split}_label.json", labels[split])
        for k, v in dom_labels.items():
            _write_json(tmp / "metas" / "protocol_domain" / f"{k}_label.json", v)
        _write_json(tmp / "metas" / "paperkit" / "attack_cues.json", {"cues": CUES, "labels": cue_labels})
        _write_json(tmp / "metas" / "paperkit" / "samples.json", samples)
        counts = {s: {"images": len(labels[s]), "live": sum(1 for v in labels[s].values() if v[43] == 0),
                      "spoof": sum(1 for v in labels[s].values() if v[43] == 1),
                      "subjects": sum(1 for x in splits.values() if x == s)} for s in ("train", "test")}
        marker = {
            "generator": GENERATOR, "version": VERSION, "paperkit_version": _pkg_version, "seed": int(seed),
            "profile": prof.name, "difficulty": diff, "image_size": n, "identities": n_id,
            "live_per_identity": n_live, "spoof_per_identity": n_spoof, "counts": counts,
            "source": "faces_dir" if faces_dir is not None else "procedural",
            "faces_dir": str(faces_dir) if faces_dir is not None else None, "faces_without_face": no_face,
            "face_names": names, "backgrounds": backgrounds()[2], "cues": CUES,
            "spoof_types": {str(k): v for k, v in SPOOF_NAMES.items()},
            "domains": {"A": "phone camera: sharp, warm, JPEG 80-95; more phone/pad/photo attacks",
                        "B": "laptop webcam: soft, noisy, cool, JPEG 55-82; more PC/A4/poster attacks"},
            "opencv": cv2.__version__,
        }
        _write_json(tmp / MARKER, marker)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def cache_dir() -> Path:
    env = os.environ.get("PAPERKIT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "paperkit"


def synth_key(prof: Any) -> str:
    """Short hash of every `synth_*` profile field: a profile edited in place gets a new cache folder."""
    import hashlib
    fields = {k: v for k, v in sorted(prof.to_dict().items()) if k.startswith("synth_")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]


def default_root(profile: str = "default", seed: int = 0) -> Path:
    """The cached embedded dataset for (profile, seed), built on first use.

    Keyed by generator version, profile and seed; a finished tree always carries the marker file
    (the build renames a complete temp folder into place), so a killed build is rebuilt next time.
    """
    prof = get_profile(profile)
    root = cache_dir() / f"synth-v{VERSION}-{prof.name}-s{seed}-{synth_key(prof)}"
    if (root / MARKER).is_file():
        return root
    if root.exists():  # not ours or incomplete (should not happen with the atomic rename): rebuild
        shutil.rmtree(root)
    try:
        return build(root, profile=prof.name, seed=seed, progress=True)
    except FileExistsError:
        if (root / MARKER).is_file():  # another process finished first
            return root
        raise


def bench(profile: str = "default", n: int = 200, workers: int | None = None) -> dict:
    """Generation speed: render + camera + JPEG encode of `n` images of the profile through the same
    code path as build() (file writes excluded: I/O, not generation). Pool start-up is included.

    Reports wall-clock img/s and CPU-time img/s per core (the latter is what the machine can do when
    the cores are not shared with other jobs: x cores = the unshared figure)."""
    import resource
    prof = get_profile(profile)
    size = int(prof.synth_image_size)
    per = prof.synth_live_per_identity + prof.synth_spoof_per_identity
    n_id = max(1, math.ceil(n / per))
    jobs, _ = _jobs(0, n_id, prof.synth_live_per_identity, prof.synth_spoof_per_identity, prof.synth_difficulty,
                    [str(i + 1) for i in range(n_id)])
    jobs = jobs[:n]
    w = _n_workers() if workers is None else workers
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    if w > 1:
        pool = _pool_context().Pool(w, initializer=_init_worker, initargs=(None,))
        try:
            n_bytes = sum(len(r["jpeg"]) for r in pool.imap(_work, ((j, 0, size) for j in jobs), chunksize=8))
        finally:
            pool.close()
            pool.join()
    else:
        n_bytes = sum(len(r["jpeg"]) for r in _run(jobs, 0, size, None, 1))
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) + (c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)
    return {"images": len(jobs), "seconds": round(dt, 3), "img_per_s": round(len(jobs) / dt, 1), "workers": w,
            "cpu_seconds": round(cpu, 3), "img_per_cpu_s": round(len(jobs) / max(cpu, 1e-9), 1),
            "image_size": size, "mean_jpeg_kb": round(n_bytes / len(jobs) / 1024, 1), "profile": prof.name}


def cli_synth(out: str, profile: str, seed: int, faces: str | None = None) -> int:
    """`paperkit data synth --out DIR --profile P [--seed N] [--faces DIR]`; returns the exit code."""
    try:
        t0 = time.perf_counter()
        root = build(out, profile=profile, seed=seed, faces_dir=faces, progress=True)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as e:
        print(f"paperkit data synth: {e}", file=sys.stderr)
        return 2
    meta = json.loads((root / MARKER).read_text())
    c = meta["counts"]
    print(f"wrote {c['train']['images']} train + {c['test']['images']} test images "
          f"({meta['identities']} identities) to {root} in {time.perf_counter() - t0:.1f}s")
    return 0
