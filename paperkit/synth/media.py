"""The attack media: what a print, a screen or a paper cut-out does to the face it shows.

The medium's periodic structure (halftone screen, sub-pixel stripes) is a cached tile that is warped
straight into the camera frame: each sensor pixel point-samples the structure where it lands on the
medium, which is exactly what makes it alias into moire; the optics' low-pass is applied as the Gaussian
MTF at the structure's true frequency (:func:`atten`). This keeps all per-pixel work at output resolution
(the cost of a live image) instead of rendering a 2-3x oversampled medium.
"""
from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from .noise import bank_slice
from .person import Marks

_TILE = 1024
P0_HT = 4.0     # halftone tile period (tile px)
P0_SUB = 6      # sub-pixel tile pitch (tile px): 2 px per R/G/B stripe


# ----------------------------------------------------------------------------------------------
# Periodic structure and optics

@lru_cache(maxsize=2)
def halftone_tile() -> np.ndarray:
    """Clustered-dot screens in [0,1] at the C, M, Y screen angles (15, 75, 0 degrees), one per channel."""
    yy, xx = np.mgrid[0:_TILE, 0:_TILE].astype(np.float32)
    out = np.empty((_TILE, _TILE, 3), np.float32)
    for c, ang in enumerate((15.0, 75.0, 0.0)):
        a = math.radians(ang)
        u = (xx * math.cos(a) + yy * math.sin(a)) * (2 * math.pi / P0_HT)
        v = (-xx * math.sin(a) + yy * math.cos(a)) * (2 * math.pi / P0_HT)
        out[..., c] = 0.5 + 0.25 * (np.cos(u) + np.cos(v))
    return out


@lru_cache(maxsize=2)
def subpixel_tile() -> np.ndarray:
    """RGB stripe sub-pixels with a black matrix between rows and stripes, mean 1 per channel."""
    col = np.arange(_TILE) % P0_SUB
    row = np.arange(_TILE) % P0_SUB
    mask = np.zeros((_TILE, _TILE, 3), np.float32)
    for c in range(3):
        mask[:, col // 2 == c, c] = 1.0
        mask[:, (col == 2 * c + 1), c] = 0.75  # stripe edge toward the black matrix
    mask[row == P0_SUB - 1, :, :] *= 0.2
    mask /= mask.reshape(-1, 3).mean(0)
    return mask


def pattern_out(tile: np.ndarray, p0: float, period: float, h: np.ndarray, n: int, r: np.random.Generator
                ) -> np.ndarray:
    """Warp a periodic tile (period p0 tile px) into the frame, for a plane whose structure has
    `period` plane px and maps to the frame by homography h (plane px -> frame px)."""
    k = period / p0
    ox, oy = r.uniform(0, 8 * p0, 2)
    a = np.array([[k, 0, -ox * k], [0, k, -oy * k], [0, 0, 1]], np.float64)
    return cv2.warpPerspective(tile, h @ a, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def blob_out(h: np.ndarray, plane: int, n: int, cx: float, cy: float, sx: float, sy: float, ang: float
             ) -> np.ndarray:
    """An oriented Gaussian highlight (glare) on the medium plane (fractions of its side), seen in the frame."""
    k = 32
    yy, xx = np.mgrid[0:k, 0:k].astype(np.float32) / k
    c, s = math.cos(ang), math.sin(ang)
    u = ((xx - cx) * c + (yy - cy) * s) / max(sx, 1e-3)
    v = (-(xx - cx) * s + (yy - cy) * c) / max(sy, 1e-3)
    small = np.exp(-(u * u + v * v)).astype(np.float32)
    a = np.array([[plane / k, 0, 0], [0, plane / k, 0], [0, 0, 1]], np.float64)
    return cv2.warpPerspective(small, h @ a, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def _mtf(sigma: float, period: float) -> float:
    if period <= 0:
        return 0.0
    f = 1.0 / period
    return math.exp(-2 * (math.pi * sigma * f) ** 2)


def atten(sigma: float, period: float) -> float:
    """Optical low-pass a periodic cue suffers *before* sampling, beyond what the frame's own Gaussian blur
    (applied later) does to it: a structure the sensor resolves (period >= 2 px) keeps full amplitude
    here and is blurred once with the frame; a finer one, which aliases to a lower frequency that the
    frame blur would wrongly spare, is attenuated by the MTF ratio."""
    if period <= 0:
        return 0.0
    return _mtf(sigma, period) / _mtf(sigma, max(period, 2.0))


def _lum(x: np.ndarray) -> np.ndarray:
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


# ----------------------------------------------------------------------------------------------
# The hand holding a print or a phone

def fingers_out(h: np.ndarray, plane: int, n: int, fingers: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Fingertips gripping the medium's edge, seen in the frame: (coverage mask, shading).

    Each finger is a capsule coming from outside the medium across one edge (`edge` 0-3: top, right,
    bottom, left) at `pos` along it, its rounded tip `reach` into the plane, `width` wide (fractions of the
    side); the shading darkens toward the finger's sides (a cylinder lit from the front)."""
    k, lo, span = 128, -0.3, 1.6          # the canvas covers the plane and 0.3 of a side around it
    yy, xx = (np.mgrid[0:k, 0:k].astype(np.float32) + 0.5) / k * span + lo
    mask = np.zeros((k, k), np.float32)
    shade = np.ones((k, k), np.float32)
    for f in fingers:
        e, pos, reach, half = f["edge"], f["pos"], f["reach"], f["width"] / 2
        along, depth = {0: (xx, yy), 1: (yy, 1 - xx), 2: (xx, 1 - yy), 3: (yy, xx)}[e]
        d_tip = np.clip(depth, -1.0, reach - half) - depth      # distance to the finger's axis segment
        dist = np.sqrt((along - pos) ** 2 + d_tip ** 2)
        m = dist <= half
        mask = np.maximum(mask, m.astype(np.float32))
        shade = np.where(m, 0.7 + 0.3 * np.sqrt(np.clip(1 - (dist / half) ** 2, 0, 1)), shade)
    a = np.array([[plane * span / k, 0, plane * lo], [0, plane * span / k, plane * lo], [0, 0, 1]], np.float64)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.7)
    out_m = cv2.warpPerspective(mask, h @ a, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    out_s = cv2.warpPerspective(shade, h @ a, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out_m, out_s


def hold_with_fingers(frame: np.ndarray, h: np.ndarray, plane: int, med: dict, light: float,
                      r: np.random.Generator) -> np.ndarray:
    """The frame with the session's fingers (if any) over the medium: skin tone, cylinder shading, pores."""
    fingers = med.get("fingers") or []
    if not fingers:
        return frame
    n = frame.shape[0]
    mask, shade = fingers_out(h, plane, n, fingers)
    skin = np.array(med["finger_skin"], np.float32) * light
    tex = 1 + 0.03 * bank_slice("pore", r, n, n)
    hand = skin * (shade * tex)[..., None]
    return frame * (1 - mask[..., None]) + hand * mask[..., None]


# ----------------------------------------------------------------------------------------------
# The attacker's source photo

def source_photo(content: np.ndarray, p: dict) -> np.ndarray:
    """The photo an attack shows was itself taken by a camera and saved as a JPEG (a social-media copy,
    a phone snapshot), then resampled to the print or screen: softer than the live face, with its own
    JPEG blocks and a slightly lower resolution. `p['src_blur']` (content px) and `p['src_jpeg']`
    (quality) are the session's draws; quality 0 skips the JPEG."""
    x = np.clip(content, 0, 1)
    if p.get("src_blur", 0.0) > 0.3:
        x = cv2.GaussianBlur(x, (0, 0), p["src_blur"])
    q = int(p.get("src_jpeg", 0))
    if q > 0:
        ok, buf = cv2.imencode(".jpg", (x * 255 + 0.5).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, q])
        x = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).astype(np.float32) / 255
    return x


# ----------------------------------------------------------------------------------------------
# Prints

def print_tone(content: np.ndarray, p: dict) -> np.ndarray:
    """Ink on paper cannot reproduce the scene: desaturated, lifted blacks, paper-white highlights."""
    s = p["strength"]
    x = np.clip(content, 0, 1)
    lum = _lum(x)[..., None]
    x = lum + (x - lum) * (1 - 0.45 * s * p["desat"])
    x = x * np.array(p.get("ink_cast", (1.0, 1.0, 1.0)), np.float32)  # the printer's colour balance
    black, white = 0.04 + 0.16 * s * p["black"], np.array(p["paper_white"], np.float32)
    return black + (white - black) * np.power(np.clip(x, 0, 1), p["print_gamma"])


def print_texture(x: np.ndarray, kind: int, p: dict, h: np.ndarray, plane: int, blur: float, scale: float,
                  r: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Halftone dots, paper fibres, banding and gloss glare, on a print already warped into the frame.

    `scale` = frame px per plane px (for the cues' frequencies at the sensor). Returns the frame and the
    strengths the cues are decided from (glare, paper_amp, halftone)."""
    n = x.shape[0]
    ht_out = p["ht_period"] * scale
    a_ht = p["halftone"] * atten(blur, ht_out)
    if a_ht > 0.01:
        ink = 1 - x
        scr = pattern_out(halftone_tile(), P0_HT, p["ht_period"], h, n, r)
        dots = np.clip((ink - scr) * p["ht_sharp"] + 0.5, 0, 1)
        x = 1 - (ink + (dots - ink) * a_ht)
    a_pa = p["paper_amp"] * atten(blur, 2.0)
    if a_pa > 0.002:
        x = x * (1 + a_pa * bank_slice("paper", r, n, n))[..., None]
    if kind == 3 and p["banding"] > 0:  # inkjet banding along the print-head passes
        band = p["band_period"] * scale
        rows = np.sin(np.arange(n, dtype=np.float32) * (2 * math.pi / band)) * p["banding"] * atten(blur, band)
        x = x * (1 + rows)[:, None, None]
    glare = 0.0
    if p["glare"] > 0.01:
        g = blob_out(h, plane, n, *p["glare_xy"], *p["glare_size"], p["glare_ang"]) * p["glare"]
        x = x * (1 - g[..., None]) + g[..., None] * 1.05
        glare = p["glare"]
    return x, {"glare": glare, "paper_amp": a_pa, "halftone": a_ht}


# ----------------------------------------------------------------------------------------------
# Paper cut-outs (face, upper-body and region masks)

def cutout_mask(kind: int, med: dict, marks: Marks, c_alpha: np.ndarray, a_m: np.ndarray, m: int) -> np.ndarray:
    """Where the print is (1) in the medium plane: face oval / half-face band / body silhouette, minus holes."""
    cut = np.zeros((m, m), np.float32)
    cx, cy, rx, ry = marks.face
    aa = cv2.LINE_AA
    if kind == 5:
        cut = cv2.warpAffine(c_alpha, a_m, (m, m), flags=cv2.INTER_LINEAR)
        cut = (cut > 0.5).astype(np.float32)
    elif kind == 4:
        cv2.ellipse(cut, (int(cx), int(cy - ry * 0.05)), (int(rx * 1.02), int(ry * 1.02)), 0, 0, 360, 1.0, -1, aa)
    elif med["region"] == "upper":
        cv2.ellipse(cut, (int(cx), int(cy)), (int(rx * 1.05), int(ry * 1.02)), 0, 180, 360, 1.0, -1, aa)
        cv2.rectangle(cut, (int(cx - rx * 1.05), int(cy - 1)), (int(cx + rx * 1.05), int(cy + ry * 0.12)), 1.0, -1)
    else:
        cv2.ellipse(cut, (int(cx), int(cy)), (int(rx * 1.0), int(ry * 1.0)), 0, 0, 180, 1.0, -1, aa)
        cv2.rectangle(cut, (int(cx - rx), int(cy - ry * 0.08)), (int(cx + rx), int(cy + 1)), 1.0, -1)
    if kind in (4, 6) and med["holes"]:
        for ex, ey in marks.eyes:
            cv2.ellipse(cut, (int(ex), int(ey)), (int(marks.eye_r), int(marks.eye_r * 0.55)), 0, 0, 360, 0.0, -1, aa)
        mx, my = marks.mouth
        cv2.ellipse(cut, (int(mx), int(my)), (int(marks.mouth_r[0]), int(marks.mouth_r[1])), 0, 0, 360, 0.0, -1, aa)
    return cut


def hold_cutout(printed: np.ndarray, cut: np.ndarray, behind: np.ndarray, med: dict) -> np.ndarray:
    """The cut-out held in front of `behind`: it drops a shadow (offset from the light, as wide as the
    paper's distance from the face) and its edge catches light."""
    edge = med["edge"]
    lift = med.get("lift", 1.0)
    sh = cv2.GaussianBlur(cut, (0, 0), lift)
    sh = np.roll(sh, (int(round(lift * 0.7)), int(round(lift * 0.5))), (0, 1))
    rim = np.clip(sh - cut, 0, 1)
    base = behind * (1 - np.clip(rim * 2 * edge, 0, 0.6))[..., None]
    plane = printed * cut[..., None] + base * (1 - cut[..., None])
    ext = np.clip((cut - cv2.erode(cut, np.ones((3, 3), np.uint8))) * edge, 0, 1)
    plane += ext[..., None] * 0.5
    return plane


# ----------------------------------------------------------------------------------------------
# Screens (replay on PC, pad, phone)

def screen_display(content: np.ndarray, p: dict) -> np.ndarray:
    """What the panel emits, at its own pixel count: box-resampled content through display gamma,
    white point and black level (returned at panel resolution, res x res)."""
    n = content.shape[0]
    res = max(8, int(round(2 * n / p["pitch"])))
    disp = cv2.resize(np.clip(content, 0, 1), (res, res), interpolation=cv2.INTER_AREA)
    disp = np.power(disp, p["gamma"]) * np.array(p["white"], np.float32)
    return p["black"] + (p["bright"] - p["black"]) * disp


def screen_reflection(env: np.ndarray, h: np.ndarray, plane: int, n: int, r: np.random.Generator) -> np.ndarray:
    """The room reflected in the glass: a blurred mirror of the environment and a window highlight."""
    refl = cv2.resize(env, (n // 8, n // 8), interpolation=cv2.INTER_AREA)
    refl = cv2.resize(cv2.flip(refl, 1), (n, n), interpolation=cv2.INTER_LINEAR)
    refl += blob_out(h, plane, n, r.uniform(0, 1), r.uniform(0, 1), 0.15, 0.6, r.uniform(0, math.pi))[..., None] * 0.6
    return refl
