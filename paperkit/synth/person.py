"""Drawing a rendered person: head and shoulders on a transparent canvas, with landmarks.

Why procedural: no face data can be downloaded here, yet the anti-spoofing models need bona fide faces
whose *skin, eyes and hair carry real high-frequency texture*, so that a print or a screen (which destroys
or overlays that texture) leaves a learnable trace. Who is drawn, and in which pose, is
:mod:`paperkit.synth.identity`.

Everything is drawn with OpenCV primitives (sub-pixel, fixed-point coordinates) plus a few numpy
operations on the head's region of interest, sized for ~2-4 ms per 224 px render on one core. The steps
below run in a fixed order: each one draws into the same arrays as before it, and the four random draws
(cloth, strands, pores, blotches) come in that order, so a render is a pure function of its inputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .identity import Identity, Pose
from .noise import bank_slice, smooth_noise

_AA = cv2.LINE_AA
_SH = 4                 # fixed-point shift for sub-pixel drawing
_F = float(1 << _SH)
_FLAT = 0.65            # Lambert term of everything that is not the head (body, neck, hair behind)


def _c(rgb) -> tuple[int, int, int]:
    return tuple(int(round(255 * min(max(v, 0.0), 1.0))) for v in rgb)


def _pt(x: float, y: float) -> tuple[int, int]:
    """A point in fixed-point pixel units."""
    return int(round(x * _F)), int(round(y * _F))


def _ax(a: float, b: float) -> tuple[int, int]:
    """Ellipse half-axes in fixed-point pixel units (at least one unit)."""
    return max(1, int(round(a * _F))), max(1, int(round(b * _F)))


def _poly(pts: np.ndarray) -> list[np.ndarray]:
    return [(pts * _F).astype(np.int32)]


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx, yy


@dataclass(frozen=True)
class Marks:
    """Landmarks of a render (pixels): where cut-out masks put their holes, and the face ellipse."""
    eyes: tuple[tuple[float, float], tuple[float, float]]
    mouth: tuple[float, float]
    eye_r: float
    mouth_r: tuple[float, float]
    face: tuple[float, float, float, float]  # cx, cy, rx, ry

    def moved(self, m: np.ndarray) -> "Marks":
        """Landmarks under a 2x3 affine map (scale s applies to radii)."""
        sc = float(math.sqrt(abs(np.linalg.det(m[:, :2]))))

        def t(p):
            return (float(m[0, 0] * p[0] + m[0, 1] * p[1] + m[0, 2]), float(m[1, 0] * p[0] + m[1, 1] * p[1] + m[1, 2]))
        cx, cy = t(self.face[:2])
        return Marks(eyes=(t(self.eyes[0]), t(self.eyes[1])), mouth=t(self.mouth), eye_r=self.eye_r * sc,
                     mouth_r=(self.mouth_r[0] * sc, self.mouth_r[1] * sc),
                     face=(cx, cy, self.face[2] * sc, self.face[3] * sc))


@dataclass(frozen=True)
class _Head:
    """Where the head and its features sit on the canvas (px). Yaw and pitch shift the feature frame
    (fx, fy) off the head centre (cx, cy); the mouth's size and opening follow the pose's expression."""
    size: int
    cx: float
    cy: float
    rx: float
    ry: float
    fx: float
    fy: float
    yaw: float
    eye_y: float
    nose_tip_y: float
    mouth_y: float
    mw: float       # mouth half-width
    lh: float       # lip height
    curve: float    # smile: how far the mouth corners rise
    op: float       # how far the mouth is open

    def eye_x(self, ident: Identity, s: int) -> float:
        """Centre of the left (s=-1) or right (s=1) eye, foreshortened by yaw."""
        return self.fx + s * self.rx * ident.eye_sep * (1 - 0.25 * s * self.yaw)


def _layout(ident: Identity, pose: Pose, size: int) -> _Head:
    rx = pose.scale * size
    ry = rx * ident.face_aspect
    cx, cy = pose.cx * size, pose.cy * size
    fy = cy + pose.pitch * ry * 0.25
    eye_y = fy - ry * 0.12
    nose_tip_y = eye_y + ry * ident.nose_len
    return _Head(size=size, cx=cx, cy=cy, rx=rx, ry=ry, fx=cx + pose.yaw * rx * 0.45, fy=fy, yaw=pose.yaw,
                 eye_y=eye_y, nose_tip_y=nose_tip_y, mouth_y=nose_tip_y + ry * 0.22,
                 mw=rx * ident.mouth_w * (1 + 0.25 * pose.smile), lh=ry * ident.lip_h * 0.5,
                 curve=pose.smile * ry * 0.06, op=pose.mouth_open * ry * 0.08)


class _Canvas:
    """The person's uint8 colour image and its coverage mask, filled together so they cannot disagree."""

    def __init__(self, size: int) -> None:
        self.img = np.zeros((size, size, 3), np.uint8)
        self.mask = np.zeros((size, size), np.uint8)

    def ellipse(self, centre: tuple[float, float], axes: tuple[float, float], a0: int, a1: int,
                color: tuple[int, int, int]) -> None:
        cv2.ellipse(self.img, _pt(*centre), _ax(*axes), 0, a0, a1, color, -1, _AA, _SH)
        cv2.ellipse(self.mask, _pt(*centre), _ax(*axes), 0, a0, a1, 255, -1, _AA, _SH)

    def poly(self, pts: np.ndarray, color: tuple[int, int, int]) -> None:
        cv2.fillPoly(self.img, _poly(pts), color, _AA, _SH)
        cv2.fillPoly(self.mask, _poly(pts), 255, _AA, _SH)


def _draw_silhouette(cv: _Canvas, ident: Identity, h: _Head) -> np.ndarray:
    """Body, neck, the hair behind the head, ears and the head outline with its jaw, into image and mask.
    Returns the head's own mask (where the ellipsoid shading applies)."""
    cx, cy, rx, ry = h.cx, h.cy, h.rx, h.ry
    skin = np.array(ident.skin, np.float32)
    cv.ellipse((cx, cy + ry * 2.55), (rx * 2.7, ry * 1.35), 0, 360, _c(ident.cloth))
    neck = np.array([[cx - rx * 0.55, cy + ry * 0.3], [cx + rx * 0.55, cy + ry * 0.3],
                     [cx + rx * 0.62, cy + ry * 1.45], [cx, cy + ry * 1.75], [cx - rx * 0.62, cy + ry * 1.45]])
    cv.poly(neck, _c(skin * 0.8))
    if ident.hair_style in ("long", "bangs"):
        hair = _c(ident.hair_color)
        drop = ry * (1.3 if ident.hair_style == "long" else 0.6)
        cv.ellipse((cx, cy - ry * 0.1), (rx * 1.22, ry * 1.12), 180, 360, hair)
        back = np.array([[cx - rx * 1.22, cy - ry * 0.1], [cx + rx * 1.22, cy - ry * 0.1],
                         [cx + rx * 1.35, cy + drop], [cx - rx * 1.35, cy + drop]])
        cv.poly(back, hair)
    for s in (-1, 1):
        ex = cx + s * rx * (0.97 - 0.12 * s * h.yaw)
        cv.ellipse((ex, cy + ry * 0.02), (rx * ident.ear_size, ry * 0.2), 0, 360, _c(skin * 0.88))
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    lower = np.clip(-np.cos(t), 0, None)  # 1 at chin
    wfac = 1 - ident.jaw * 0.35 * lower ** 2 + ident.chubby * 0.06 * lower
    head = np.stack([cx + rx * np.sin(t) * wfac, cy - ry * np.cos(t)], 1)
    cv.poly(head, _c(skin))
    headmask = np.zeros((h.size, h.size), np.uint8)
    cv2.fillPoly(headmask, _poly(head), 255, _AA, _SH)
    return headmask


def _shading(ident: Identity, pose: Pose, h: _Head) -> np.ndarray:
    """Soft shading strokes (eye sockets, nose side and tip, under the lip), blurred once."""
    rx, ry, fx = h.rx, h.ry, h.fx
    shade = np.zeros((h.size, h.size), np.float32)
    for s in (-1, 1):
        cv2.ellipse(shade, _pt(h.eye_x(ident, s), h.eye_y - ry * 0.02),
                    _ax(rx * ident.eye_w * 1.35, ry * ident.eye_h * 1.3), 0, 0, 360, 0.22, -1, _AA, _SH)
    nside = 1 if pose.light_dir[0] < 0 else -1  # nose side away from the light is darker
    # drawn with shift 0 on fixed-point points (16x too far out), so it falls off the canvas; kept as it
    # was, since removing it would change every image
    cv2.line(shade, _pt(fx + nside * rx * ident.nose_w * 0.45, h.eye_y + ry * 0.05),
             _pt(fx + nside * rx * ident.nose_w * 0.55, h.nose_tip_y - ry * 0.03), 0.28, max(1, int(rx * 0.08)),
             _AA, 0)
    cv2.ellipse(shade, _pt(fx, h.nose_tip_y + ry * 0.03), _ax(rx * ident.nose_w * 0.6, ry * 0.04), 0, 0, 360, 0.25,
                -1, _AA, _SH)
    cv2.ellipse(shade, _pt(fx, h.mouth_y + ry * ident.lip_h * 0.9), _ax(rx * ident.mouth_w * 0.35, ry * 0.04),
                0, 0, 360, 0.2, -1, _AA, _SH)
    k = int(rx * 0.18) | 1
    return cv2.GaussianBlur(shade, (k, k), 0)


def _draw_eyeball(img: np.ndarray, ident: Identity, h: _Head, ex: float, ew: float, eh: float) -> None:
    """Eye white, then the iris and pupil clipped by the eye opening (composited in a patch around it)."""
    S, eye_y = h.size, h.eye_y
    cv2.ellipse(img, _pt(ex, eye_y), _ax(ew, eh), 0, 0, 360, _c((0.92, 0.9, 0.88)), -1, _AA, _SH)
    ir = min(ew * 0.5, eh * 1.6)
    ix = ex + h.yaw * ew * 0.3
    px0, py0 = max(0, int(ex - ew - 2)), max(0, int(eye_y - eh - 2))
    px1, py1 = min(S, int(ex + ew + 3)), min(S, int(eye_y + eh + 3))
    if px1 <= px0 or py1 <= py0:
        return
    pw, ph = px1 - px0, py1 - py0
    eyemask = np.zeros((ph, pw), np.uint8)
    cv2.ellipse(eyemask, _pt(ex - px0, eye_y - py0), _ax(ew, eh), 0, 0, 360, 255, -1, _AA, _SH)
    iris_l = img[py0:py1, px0:px1].copy()
    c0 = _pt(ix - px0, eye_y - py0)
    cv2.circle(iris_l, c0, int(ir * _F), _c(ident.iris), -1, _AA, _SH)
    cv2.circle(iris_l, c0, int(ir * 0.45 * _F), (10, 10, 12), -1, _AA, _SH)
    cv2.circle(iris_l, _pt(ix - ir * 0.3 - px0, eye_y - ir * 0.3 - py0), max(1, int(ir * 0.22 * _F)),
               (250, 250, 250), -1, _AA, _SH)
    wgt = eyemask.astype(np.float32)[..., None] * (1.0 / 255)
    patch = img[py0:py1, px0:px1]
    patch[:] = (patch * (1 - wgt) + iris_l * wgt + 0.5).astype(np.uint8)


def _draw_eyes(img: np.ndarray, ident: Identity, pose: Pose, h: _Head) -> None:
    """Each eye (closed by blink and smile), its lid and lashes, and its eyebrow."""
    rx, ry, eye_y = h.rx, h.ry, h.eye_y
    skin = np.array(ident.skin, np.float32)
    for s in (-1, 1):
        ex = h.eye_x(ident, s)
        ew = rx * ident.eye_w * (1 - 0.3 * s * h.yaw)
        eh = ry * ident.eye_h * 0.55 * (1 - pose.blink) * (1 - 0.25 * pose.smile)
        if eh > 0.6:
            _draw_eyeball(img, ident, h, ex, ew, eh)
        lid = _c(np.array(ident.brow_color) * 0.5)
        cv2.ellipse(img, _pt(ex, eye_y), _ax(ew * 1.02, max(eh, 0.8) * 1.05), 0, 190, 350, lid,
                    max(1, int(rx * 0.035)), _AA, _SH)
        cv2.ellipse(img, _pt(ex, eye_y), _ax(ew, max(eh, 0.8)), 0, 20, 160, _c(skin * 0.7), 1, _AA, _SH)
        by = eye_y - ry * (0.15 + ident.brow_arch * 0.3) - ry * 0.02
        bw = ew * 1.3
        pts = np.array([[ex - s * bw * 0.9, by + ry * 0.04], [ex - s * bw * 0.1, by - ry * ident.brow_arch * 0.5],
                        [ex + s * bw * 0.9, by + ry * 0.02]])
        thick = max(1, int(round(ry * ident.brow_thick)))
        cv2.polylines(img, _poly(pts), False, _c(ident.brow_color), thick, _AA, _SH)


def _draw_nose_and_mouth(img: np.ndarray, ident: Identity, h: _Head) -> None:
    """Nostrils, then the mouth: an open mouth's cavity and teeth, the lips and the line between them."""
    rx, ry, fx, mouth_y = h.rx, h.ry, h.fx, h.mouth_y
    mw, lh, curve, op = h.mw, h.lh, h.curve, h.op
    skin = np.array(ident.skin, np.float32)
    for s in (-1, 1):
        cv2.ellipse(img, _pt(fx + s * rx * ident.nose_w * 0.3, h.nose_tip_y), _ax(rx * 0.045, ry * 0.022), 0, 0, 360,
                    _c(skin * 0.45), -1, _AA, _SH)
    upper = np.array([[fx - mw, mouth_y - curve], [fx - mw * 0.4, mouth_y - lh], [fx, mouth_y - lh * 0.7],
                      [fx + mw * 0.4, mouth_y - lh], [fx + mw, mouth_y - curve], [fx, mouth_y]])
    lower = np.array([[fx - mw, mouth_y - curve], [fx + mw, mouth_y - curve],
                      [fx + mw * 0.5, mouth_y + op + lh * 1.2], [fx - mw * 0.5, mouth_y + op + lh * 1.2]])
    if op > 1:
        cv2.ellipse(img, _pt(fx, mouth_y + op * 0.5), _ax(mw * 0.8, op * 0.7 + 0.5), 0, 0, 360, (40, 15, 15), -1,
                    _AA, _SH)
        cv2.ellipse(img, _pt(fx, mouth_y + op * 0.1), _ax(mw * 0.6, op * 0.35 + 0.5), 0, 0, 180, (225, 220, 210), -1,
                    _AA, _SH)
    lip = np.array(ident.lip_color)
    cv2.fillPoly(img, _poly(upper), _c(lip * 0.9), _AA, _SH)
    cv2.fillPoly(img, _poly(lower), _c(ident.lip_color), _AA, _SH)
    seam = np.array([[fx - mw, mouth_y - curve], [fx, mouth_y + op * 0.3], [fx + mw, mouth_y - curve]])
    cv2.polylines(img, _poly(seam), False, _c(lip * 0.45), 1, _AA, _SH)


@dataclass
class _Roi:
    """The head's region of interest in the lit canvas, where all per-pixel work happens (4x fewer pixels
    than the canvas). `rgb` is a view: writing it writes the canvas."""
    x0: int
    y0: int
    rgb: np.ndarray
    xx: np.ndarray      # canvas coordinates of its pixels
    yy: np.ndarray
    gx: np.ndarray      # its own pixel coordinates
    gy: np.ndarray
    shade: np.ndarray
    head: np.ndarray    # head mask in [0, 1]

    def slice(self, full: np.ndarray) -> np.ndarray:
        return full[self.y0:self.y0 + self.rgb.shape[0], self.x0:self.x0 + self.rgb.shape[1]]


def _light_canvas(img: np.ndarray, pose: Pose, h: _Head, headmask: np.ndarray, shade: np.ndarray,
                  r: np.random.Generator) -> tuple[np.ndarray, _Roi]:
    """The canvas in float RGB at a flat light level with a cheap low-frequency cloth texture; the head's
    region is brought back to unit light (it is lit per pixel later). Returns (canvas, head region)."""
    S, cx, cy, rx, ry = h.size, h.cx, h.cy, h.rx, h.ry
    outside = pose.ambient + pose.light * _FLAT
    cloth = smooth_noise(r, S, 4)
    lightmap = cloth * (0.05 * outside / 255) + (outside / 255)
    rgb = img.astype(np.float32)
    rgb *= lightmap[..., None]
    x0, x1 = max(0, int(cx - rx * 1.45)), min(S, int(cx + rx * 1.45) + 1)
    y0, y1 = max(0, int(cy - ry * 1.25)), min(S, int(cy + ry * 1.35) + 1)
    roi = rgb[y0:y1, x0:x1]
    roi *= 1.0 / outside
    H, W = roi.shape[:2]
    gx, gy = _grid(max(S, 1))
    return rgb, _Roi(x0=x0, y0=y0, rgb=roi, xx=gx[:H, :W] + x0, yy=gy[:H, :W] + y0, gx=gx[:H, :W], gy=gy[:H, :W],
                     shade=shade[y0:y1, x0:x1], head=headmask[y0:y1, x0:x1].astype(np.float32) * (1.0 / 255))


def _draw_facial_hair(roi: _Roi, ident: Identity, h: _Head, strands: np.ndarray | None) -> None:
    """Beard (stubble, goatee or full) and mustache, painted over the skin with strand texture."""
    rx, ry, fx = h.rx, h.ry, h.fx
    hair = np.array(ident.hair_color, np.float32)
    rgb = roi.rgb
    if ident.beard != "none":
        u = (roi.xx - fx) / rx
        v = (roi.yy - h.cy) / ry
        if ident.beard == "stubble":
            bmask = np.clip((v - 0.25) * 4, 0, 1) * roi.head * 0.35
        elif ident.beard == "goatee":
            bmask = np.clip((v - 0.62) * 6, 0, 1) * np.clip(1 - np.abs(u) * 2.2, 0, 1) * roi.head * 0.85
        else:
            bmask = np.clip((v - 0.3) * 5, 0, 1) * roi.head * 0.85
        bmask = bmask * np.clip(0.7 + 0.6 * strands, 0, 1)
        rgb += (hair - rgb) * bmask[..., None]
    if ident.mustache:
        mm = np.zeros(rgb.shape[:2], np.float32)
        cv2.ellipse(mm, _pt(fx - roi.x0, h.mouth_y - h.lh - ry * 0.035 - roi.y0), _ax(h.mw * 0.95, ry * 0.045), 0,
                    180, 360, 0.9, -1, _AA, _SH)
        mm *= np.clip(0.7 + 0.5 * strands, 0, 1)
        rgb += (hair - rgb) * mm[..., None]


def _draw_scalp_hair(roi: _Roi, mask: np.ndarray, ident: Identity, h: _Head, strands: np.ndarray | None
                     ) -> np.ndarray:
    """Hair on the head (minus the forehead it leaves free; bangs get a wavy fringe), into the canvas and
    the person's mask. Returns where it covers the head region, in [0, 1] (zeros when bald)."""
    rx, ry = h.rx, h.ry
    H, W = roi.rgb.shape[:2]
    if ident.hair_style == "bald":
        return np.zeros((H, W), np.float32)
    hmask = np.zeros((H, W), np.uint8)
    hc_, hy_ = h.cx - roi.x0, h.cy - ry * 0.05 - roi.y0
    cv2.ellipse(hmask, _pt(hc_, hy_), _ax(rx * 1.08, ry * 1.06), 0, 180, 360, 255, -1, _AA, _SH)
    cv2.ellipse(hmask, _pt(hc_, hy_), _ax(rx * 1.08, ry * 0.3), 0, 0, 180, 255, -1, _AA, _SH)
    hl = ident.hairline if ident.hair_style != "bangs" else 0.3
    fore = np.zeros((H, W), np.uint8)
    cv2.ellipse(fore, _pt(hc_ + h.yaw * rx * 0.2, hy_ + ry * (0.75 - hl)), _ax(rx * 0.86, ry * 0.75), 0, 0, 360, 255,
                -1, _AA, _SH)
    if ident.hair_style == "bangs":
        fringe = (np.sin(roi.gx * (6.0 / max(rx, 1))) * ry * 0.03).astype(np.float32)
        fore = cv2.remap(fore, roi.gx, roi.gy + fringe, cv2.INTER_LINEAR)
    covered = cv2.subtract(hmask, fore).astype(np.float32) * (1.0 / 255)
    cv2.ellipse(mask, _pt(h.cx, h.cy - ry * 0.05), _ax(rx * 1.08, ry * 1.06), 0, 180, 360, 255, -1, _AA, _SH)
    hc = np.array(ident.hair_color, np.float32)
    roi.rgb += (hc * (1 + 0.35 * strands)[..., None] - roi.rgb) * covered[..., None]
    return covered


def _texture_skin(roi: _Roi, mask: np.ndarray, hair: np.ndarray, ident: Identity, h: _Head, r: np.random.Generator
                  ) -> np.ndarray:
    """Pores (per pixel) and blotches (mid frequency) on the skin only, then rosy cheeks.
    Returns the skin mask of the head region (the person's mask minus hair)."""
    H, W = roi.rgb.shape[:2]
    skin_m = np.clip(roi.slice(mask).astype(np.float32) * (1.0 / 255) - hair, 0, 1)
    pores = bank_slice("pore", r, H, W) * (ident.pore_amp * 1.4)
    blot = cv2.resize(smooth_noise(r, max(H, W), max(2, int(h.rx * 0.15))), (W, H)) * ident.blotch_amp
    roi.rgb *= (1 + (pores + blot) * skin_m)[..., None]
    if ident.rosy > 0.01:
        for s in (-1, 1):
            d2 = (((roi.xx - (h.fx + s * h.rx * 0.5)) / (h.rx * 0.25)) ** 2
                  + ((roi.yy - (h.nose_tip_y - h.ry * 0.05)) / (h.ry * 0.15)) ** 2)
            roi.rgb[..., 1:] *= (1 - ident.rosy * np.exp(-d2) * roi.head)[..., None]
    return skin_m


def _light_head(roi: _Roi, skin_m: np.ndarray, pose: Pose, h: _Head) -> None:
    """Lambert shading on an ellipsoid for the head (flat elsewhere) minus the shading strokes, then
    specular highlights on forehead and nose tip (skin only)."""
    rx, ry, fx, cy = h.rx, h.ry, h.fx, h.cy
    xx, yy = roi.xx, roi.yy
    u = (xx - h.cx) / (rx * 1.05)
    v = (yy - cy) / (ry * 1.05)
    nz = np.sqrt(np.clip(1 - u * u - v * v, 0.02, 1))
    lx, ly = pose.light_dir
    lz = math.sqrt(max(0.05, 1 - lx * lx - ly * ly))
    lam = np.clip(u * (-lx) * 0.9 + v * (-ly) * 0.9 + nz * lz, 0, 1)
    lam = lam * roi.head + (1 - roi.head) * _FLAT
    roi.rgb *= (pose.ambient + pose.light * lam - roi.shade)[..., None]
    spec = pose.specular * np.exp(-(((xx - fx + lx * rx * 0.3) / (rx * 0.35)) ** 2
                                    + ((yy - (cy - ry * 0.45)) / (ry * 0.18)) ** 2))
    spec += pose.specular * 0.8 * np.exp(-(((xx - fx) / (rx * 0.1)) ** 2
                                           + ((yy - h.nose_tip_y + ry * 0.06) / (ry * 0.08)) ** 2))
    roi.rgb += (spec * skin_m)[..., None]


def _draw_glasses(rgb: np.ndarray, ident: Identity, h: _Head) -> None:
    """Frames drawn last, on the lit canvas (not shaded like skin)."""
    rx, ry, fx, eye_y = h.rx, h.ry, h.fx, h.eye_y
    frame = (0.08, 0.07, 0.07)
    for s in (-1, 1):
        cv2.ellipse(rgb, _pt(h.eye_x(ident, s), eye_y), _ax(rx * 0.3, ry * 0.14), 0, 0, 360, frame,
                    max(1, int(rx * 0.04)), _AA, _SH)
    cv2.line(rgb, _pt(fx - rx * 0.12, eye_y - ry * 0.03), _pt(fx + rx * 0.12, eye_y - ry * 0.03), frame,
             max(1, int(rx * 0.035)), _AA, _SH)


def _marks(ident: Identity, h: _Head) -> Marks:
    rx, fx, yaw = h.rx, h.fx, h.yaw
    return Marks(
        eyes=((float(fx - rx * ident.eye_sep * (1 + 0.25 * yaw)), float(h.eye_y)),
              (float(fx + rx * ident.eye_sep * (1 - 0.25 * yaw)), float(h.eye_y))),
        mouth=(float(fx), float(h.mouth_y + h.op * 0.4)), eye_r=float(rx * ident.eye_w * 1.25),
        mouth_r=(float(h.mw * 1.15), float(h.lh * 2.2 + h.op + 1.0)),
        face=(float(h.cx), float(h.cy), float(rx), float(h.ry)),
    )


def render_person(ident: Identity, pose: Pose, size: int, r: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float], Marks]:
    """Render a head-and-shoulders person on a transparent canvas.

    Returns (rgb float32 [size,size,3] ~[0,1], alpha float32 [size,size], face box x,y,w,h in px,
    landmarks). `pose.roll` is not applied here: the caller folds it into the capture homography.
    The skin gets pores (per-pixel noise) and blotches, hair gets strands, so that a bona fide capture
    has the fine texture that recapture through paper or a screen degrades.
    """
    h = _layout(ident, pose, size)
    canvas = _Canvas(size)
    headmask = _draw_silhouette(canvas, ident, h)
    shade = _shading(ident, pose, h)
    _draw_eyes(canvas.img, ident, pose, h)
    _draw_nose_and_mouth(canvas.img, ident, h)
    rgb, roi = _light_canvas(canvas.img, pose, h, headmask, shade, r)
    strands = None
    if ident.beard != "none" or ident.mustache or ident.hair_style != "bald":
        strands = bank_slice("strand", r, *roi.rgb.shape[:2])
    _draw_facial_hair(roi, ident, h, strands)
    hair = _draw_scalp_hair(roi, canvas.mask, ident, h, strands)
    skin_m = _texture_skin(roi, canvas.mask, hair, ident, h, r)
    _light_head(roi, skin_m, pose, h)
    if ident.glasses:
        _draw_glasses(rgb, ident, h)
    alpha = canvas.mask.astype(np.float32) * (1.0 / 255)
    box = (float(h.fx - h.rx * 1.0), float(h.cy - h.ry * 0.72), float(h.rx * 2.0), float(h.ry * 1.78))
    return rgb, alpha, box, _marks(ident, h)
