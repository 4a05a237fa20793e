"""The camera every image goes through, live or spoof: where the object lands in the frame (homographies),
lens blur, auto-exposure, the sensor back-end (white balance, vignetting, noise, noise reduction, sharpening,
tone) and JPEG encoding.

One camera model for both classes, so what separates them is the medium, not the pipeline.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Iterable

import cv2
import numpy as np

from .noise import bank_slice

LIVE_OVERSCAN = 1.1  # scenes are captured slightly zoomed so rotation never shows the canvas edge


@lru_cache(maxsize=8)
def _vignette(n: int) -> np.ndarray:
    """Squared distance from the frame centre, normalised: the vignetting profile."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    d = ((xx - n / 2) ** 2 + (yy - n / 2) ** 2) / (n * n / 2)
    return d


AE_GAIN = (0.35, 4.0)   # the exposure range auto-exposure can reach (shorter time .. highest analogue gain)
AE_TARGET = 0.40        # median metered luma auto-exposure aims at (linear, before the tone curve)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def auto_exposure(frame: np.ndarray, box: Iterable[float], cam: dict) -> float:
    """The gain that brings the metered luma to the session's target (``ae_target``).

    Why: a camera with fixed exposure lets the scene's brightness tell the class (a screen glows in a dark
    room, a dim live face stays dark), and a model trained on that calls every bright real photo an attack.
    Real cameras meter: phones on the face, webcams on a centre-weighted average. The meter reads the
    face box with weight ``ae_face`` and the centre-weighted frame with the rest, the same way for live and
    spoof, so face brightness carries no label; a dark scene comes out noisier (:func:`capture`), not darker.
    """
    n = frame.shape[0]
    luma = _LUMA * np.array(cam["wb"], np.float32)           # what the sensor sees after white balance
    small = cv2.resize(frame, (32, 32), interpolation=cv2.INTER_AREA) @ luma
    w = np.exp(-_vignette(32) * 2.0)
    whole = float((small * w).sum() / w.sum())
    x, y, bw, bh = (float(v) for v in box)
    x0, y0 = int(np.clip(x, 0, n - 1)), int(np.clip(y, 0, n - 1))
    x1, y1 = int(np.clip(x + bw, x0 + 1, n)), int(np.clip(y + bh, y0 + 1, n))
    face = float(frame[y0:y1, x0:x1].reshape(-1, 3).mean(0) @ luma)
    a = float(cam.get("ae_face", 0.7))
    metered = a * face + (1 - a) * whole
    return float(np.clip(cam.get("ae_target", AE_TARGET) / max(metered, 1e-3), *AE_GAIN))


def native_factor(cam: dict) -> float:
    """Sensor pixels per written pixel (``native``; 1 for a low-resolution sensor, which is upscaled
    instead): a frame downscaled k times keeps 1/k of the noise and of the optics' blur."""
    return float(cam.get("native", 1.0)) if cam.get("sensor_scale", 1.0) >= 0.99 else 1.0


def capture(frame: np.ndarray, cam: dict, r: np.random.Generator | None) -> tuple[np.ndarray, int, int]:
    """The shared camera back-end: white balance, tone, vignetting, sensor noise, 8-bit quantisation.

    Geometry and optical blur happen before (they depend on where the object is); this part is
    identical for every image. Returns (uint8 RGB, jpeg quality, sampling factor) for encoding.
    ``r=None`` leaves the sensor noise out (the noise-free image the face-visibility check compares with).
    An auto-exposure gain above 1 (``ae_gain``, :func:`auto_exposure`) is analogue gain: it amplifies the
    noise with the signal (by its square root, between shot noise's sqrt(g) and read noise's g). A frame
    the camera downscaled (``native`` k > 1, high-resolution sensors) keeps 1/k of the noise; its optics'
    blur shrinks by k too (:func:`paperkit.synth.frame.render_frame`).
    """
    n = frame.shape[0]
    g = float(cam.get("ae_gain", 1.0))
    x = frame * (np.array(cam["wb"], np.float32) * (cam["exposure"] * g))
    x *= (1 - cam["vignette"] * _vignette(n))[..., None]
    x = np.clip(x, 0, 1.5)
    # Poisson-Gaussian sensor noise, in a mildly correlated (demosaiced) form
    if r is not None:
        sig = np.sqrt(x * cam["shot"] + cam["read"] ** 2) * (cam["iso"] * math.sqrt(max(g, 1.0)) / native_factor(cam))
        x = x + sig * bank_slice("white3", r, n, n)
        # the ISP's noise reduction: edge-preserving smoothing scaled to the noise it estimates. Every phone
        # and webcam pipeline has one; without it every synthetic pixel is noisy, while real JPEGs have flat skin
        if cam.get("denoise", 0.0) > 0.02:
            sd = float(np.sqrt(np.mean(sig * sig)))
            x = x.astype(np.float32)
            x = x + cam["denoise"] * (cv2.bilateralFilter(x, 5, 3.0 * sd + 1e-3, 1.5) - x)
    # the ISP's sharpening (unsharp mask, ~1 px radius), on the noisy demosaiced image
    if cam.get("sharpen", 0.0) > 0.02:
        x = x + cam["sharpen"] * (x - cv2.GaussianBlur(x, (0, 0), 1.0))
    # tone curve (S-shaped contrast) and gamma-ish compression of highlights
    x = np.clip(x, 0, 1)
    x = 0.5 + (x - 0.5) * cam["contrast"]
    out = np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)
    return out, cam["jpeg"], cam["sampling"]


def encode_jpeg(rgb: np.ndarray, quality: int, sampling: int) -> bytes:
    """Baseline JPEG with fixed parameters (no optimisation pass, no progressive scan): same bytes every run."""
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_OPTIMIZE, 0,
              cv2.IMWRITE_JPEG_PROGRESSIVE, 0, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, int(sampling)]
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG; check the opencv-python-headless install")
    return buf.tobytes()


def homography(n_src: int, n_out: int, coverage: float, cx: float, cy: float, roll_deg: float,
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


def warp_box(box: Iterable[float], h: np.ndarray) -> tuple[float, float, float, float]:
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


def motion_blur(frame: np.ndarray, length: float, angle: float) -> np.ndarray:
    """Hand shake during the exposure: a line kernel `length` px long at `angle` (skipped below 1 px)."""
    if length < 1.0:
        return frame
    k = int(math.ceil(length)) | 1
    ker = np.zeros((k, k), np.float32)
    c = k // 2
    dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
    cv2.line(ker, (int(round((c - dx) * 16)), int(round((c - dy) * 16))),
             (int(round((c + dx) * 16)), int(round((c + dy) * 16))), 1.0, 1, cv2.LINE_AA, 4)
    return cv2.filter2D(frame, -1, ker / max(ker.sum(), 1e-6), borderType=cv2.BORDER_REFLECT)


def sensor_capture(frame: np.ndarray, cam: dict, r: np.random.Generator | None) -> tuple[np.ndarray, int, int]:
    """:func:`capture` at the sensor's own resolution: a low-resolution sensor (``sensor_scale`` < 1)
    samples the optical image coarsely, adds its noise there, and its image is upscaled to the file size."""
    n = frame.shape[0]
    f = cam.get("sensor_scale", 1.0)
    if f >= 0.99:
        return capture(frame, cam, r)
    m = max(16, int(round(n * f)))
    small = cv2.resize(frame, (m, m), interpolation=cv2.INTER_AREA)
    out, q, sf = capture(small, cam, r)
    return cv2.resize(out, (n, n), interpolation=cv2.INTER_LINEAR), q, sf


def lens_blur(frame: np.ndarray, sigma: float) -> np.ndarray:
    """The optics' Gaussian blur, the same for every capture (skipped when it would not show)."""
    if sigma > 0.3:
        return cv2.GaussianBlur(frame, (0, 0), sigma)
    return frame
