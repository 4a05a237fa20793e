"""Procedural face renderer and Haar-cascade face finder for the embedded dataset.

Why procedural: no face data can be downloaded here, yet the anti-spoofing models need bona fide
faces whose *skin, eyes and hair carry real high-frequency texture*, so that a print or a screen
(which destroys or overlays that texture) leaves a learnable trace. Identities are seeds: every
parameter of a face is drawn from `np.random.default_rng([seed, subject, _ID_STREAM])`, so the same
subject renders the same person in every pose and lighting.

Everything is drawn with OpenCV primitives plus a few whole-canvas numpy operations, sized for
~2-4 ms per 224 px render on one core.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

# Serial OpenCV: its thread pool deadlocks in processes forked after it ran (DataLoader workers).
cv2.setNumThreads(1)

_ID_STREAM = 7_000_001  # rng stream tag for identity parameters (keeps them apart from per-image streams)

# CelebA attribute indices we can state truthfully for a rendered identity (the rest stay 0).
ATTR = {
    "5_o_Clock_Shadow": 0, "Arched_Eyebrows": 1, "Bald": 4, "Bangs": 5, "Big_Lips": 6, "Big_Nose": 7,
    "Black_Hair": 8, "Blond_Hair": 9, "Blurry": 10, "Brown_Hair": 11, "Bushy_Eyebrows": 12, "Chubby": 13,
    "Eyeglasses": 15, "Goatee": 16, "Gray_Hair": 17, "Male": 20, "Mouth_Slightly_Open": 21, "Mustache": 22,
    "Narrow_Eyes": 23, "No_Beard": 24, "Oval_Face": 25, "Pale_Skin": 26, "Pointy_Nose": 27,
    "Rosy_Cheeks": 29, "Smiling": 31, "Straight_Hair": 32, "Wavy_Hair": 33, "Wearing_Lipstick": 36, "Young": 39,
}

# Skin tones (linear-ish RGB in [0,1]) spanning pale to dark; identities interpolate between neighbours.
_SKIN = np.array([
    [0.96, 0.80, 0.70], [0.92, 0.74, 0.62], [0.86, 0.66, 0.53], [0.78, 0.57, 0.44],
    [0.66, 0.46, 0.34], [0.52, 0.35, 0.25], [0.38, 0.25, 0.18], [0.28, 0.18, 0.13],
], np.float32)
_HAIR = {  # name -> RGB
    "black": (0.07, 0.06, 0.06), "brown": (0.30, 0.19, 0.11), "dark_brown": (0.18, 0.12, 0.08),
    "blond": (0.80, 0.66, 0.40), "red": (0.55, 0.24, 0.12), "gray": (0.62, 0.62, 0.62),
}
_IRIS = np.array([[0.30, 0.18, 0.08], [0.20, 0.12, 0.06], [0.25, 0.40, 0.55], [0.30, 0.42, 0.25],
                  [0.45, 0.35, 0.20]], np.float32)


@dataclass(frozen=True)
class Identity:
    """Everything that makes one rendered person recognisable across captures."""
    subject: int
    male: bool
    young: bool
    face_aspect: float      # ry / rx
    jaw: float              # 0 round .. 1 narrow chin
    chubby: float
    skin: tuple[float, float, float]
    pore_amp: float         # high-frequency skin texture amplitude
    blotch_amp: float       # mid-frequency skin unevenness
    rosy: float
    eye_sep: float          # fraction of rx
    eye_w: float
    eye_h: float
    iris: tuple[float, float, float]
    brow_thick: float
    brow_arch: float
    brow_color: tuple[float, float, float]
    nose_len: float
    nose_w: float
    mouth_w: float
    lip_h: float
    lip_color: tuple[float, float, float]
    hair_color_name: str
    hair_color: tuple[float, float, float]
    hair_style: str         # bald | short | long | bangs
    hair_wavy: bool
    hairline: float         # fraction of ry above centre where the hair starts
    beard: str              # none | stubble | goatee | full
    mustache: bool
    glasses: bool
    cloth: tuple[float, float, float]
    ear_size: float

    def attributes(self, smiling: bool, mouth_open: bool, blurry: bool) -> list[int]:
        """40 CelebA face-attribute bits for a bona fide capture of this identity."""
        a = [0] * 40
        on = {
            "Male": self.male, "Young": self.young, "Bald": self.hair_style == "bald",
            "Bangs": self.hair_style == "bangs", "Big_Lips": self.lip_h > 0.15, "Big_Nose": self.nose_w > 0.27,
            "Black_Hair": self.hair_color_name == "black" and self.hair_style != "bald",
            "Blond_Hair": self.hair_color_name == "blond" and self.hair_style != "bald",
            "Brown_Hair": self.hair_color_name in ("brown", "dark_brown") and self.hair_style != "bald",
            "Gray_Hair": self.hair_color_name == "gray" and self.hair_style != "bald",
            "Bushy_Eyebrows": self.brow_thick > 0.075, "Arched_Eyebrows": self.brow_arch > 0.06,
            "Chubby": self.chubby > 0.6, "Eyeglasses": self.glasses, "Goatee": self.beard == "goatee",
            "Mustache": self.mustache, "No_Beard": self.beard == "none" and not self.mustache,
            "5_o_Clock_Shadow": self.beard == "stubble", "Narrow_Eyes": self.eye_h < 0.12,
            "Oval_Face": 1.3 < self.face_aspect < 1.42 and self.jaw > 0.4, "Pale_Skin": self.skin[0] > 0.9,
            "Pointy_Nose": self.nose_w < 0.2, "Rosy_Cheeks": self.rosy > 0.07, "Smiling": smiling,
            "Mouth_Slightly_Open": mouth_open, "Blurry": blurry,
            "Straight_Hair": self.hair_style in ("short", "long", "bangs") and not self.hair_wavy,
            "Wavy_Hair": self.hair_style != "bald" and self.hair_wavy,
            "Wearing_Lipstick": (not self.male) and self.lip_color[0] > 0.7,
        }
        for k, v in on.items():
            a[ATTR[k]] = int(bool(v))
        return a


def make_identity(seed: int, subject: int) -> Identity:
    """Draw one identity from its own rng stream (independent of how many images are rendered)."""
    r = np.random.default_rng([seed, subject, _ID_STREAM])
    male = bool(r.random() < 0.5)
    t = r.uniform(0, len(_SKIN) - 1)
    i = int(t)
    skin = _SKIN[i] * (1 - (t - i)) + _SKIN[min(i + 1, len(_SKIN) - 1)] * (t - i)
    skin = np.clip(skin * r.uniform(0.95, 1.05, 3), 0, 1)
    dark = t > 4.5
    hair_names = ["black", "dark_brown", "brown", "blond", "red", "gray"]
    hp = np.array([3, 3, 3, 1.5, .6, .8]) if not dark else np.array([8, 2, .5, .1, .05, .5])
    hair_name = str(r.choice(hair_names, p=hp / hp.sum()))
    young = bool(r.random() < (0.75 if hair_name != "gray" else 0.1))
    hair = np.clip(np.array(_HAIR[hair_name]) * r.uniform(0.85, 1.15), 0, 1)
    styles = ["bald", "short", "long", "bangs"]
    sp = [0.12, 0.68, 0.12, 0.08] if male else [0.01, 0.19, 0.55, 0.25]
    style = str(r.choice(styles, p=sp))
    beard = str(r.choice(["none", "stubble", "goatee", "full"], p=[0.55, 0.2, 0.1, 0.15])) if male else "none"
    lipstick = (not male) and r.random() < 0.45
    lip = skin * np.array([1.0, 0.72, 0.72]) * r.uniform(0.8, 0.95)
    if lipstick:
        lip = np.array([0.72, 0.12, 0.18]) * r.uniform(0.8, 1.2, 3)
    cloth = r.uniform(0.05, 0.9, 3) * r.uniform(0.5, 1.0)
    return Identity(
        subject=subject, male=male, young=young,
        face_aspect=float(r.uniform(1.22, 1.48)), jaw=float(r.uniform(0.1, 0.8)), chubby=float(r.random()),
        skin=tuple(float(x) for x in skin), pore_amp=float(r.uniform(0.025, 0.06)),
        blotch_amp=float(r.uniform(0.02, 0.06)), rosy=float(r.uniform(0.0, 0.12)),
        eye_sep=float(r.uniform(0.36, 0.46)), eye_w=float(r.uniform(0.17, 0.23)), eye_h=float(r.uniform(0.10, 0.16)),
        iris=tuple(float(x) for x in _IRIS[r.integers(len(_IRIS))] * r.uniform(0.8, 1.2)),
        brow_thick=float(r.uniform(0.04, 0.1) * (1.2 if male else 0.9)), brow_arch=float(r.uniform(0.0, 0.12)),
        brow_color=tuple(float(x) for x in np.clip(hair * 0.8 if hair_name not in ("gray", "blond") else hair * 0.6, 0, 1)),
        nose_len=float(r.uniform(0.33, 0.48)), nose_w=float(r.uniform(0.17, 0.31)),
        mouth_w=float(r.uniform(0.36, 0.52)), lip_h=float(r.uniform(0.08, 0.18)),
        lip_color=tuple(float(x) for x in np.clip(lip, 0, 1)),
        hair_color_name=hair_name, hair_color=tuple(float(x) for x in hair), hair_style=style,
        hair_wavy=bool(r.random() < 0.35), hairline=float(r.uniform(0.45, 0.7)),
        beard=beard, mustache=bool(male and r.random() < 0.3), glasses=bool(r.random() < 0.18),
        cloth=tuple(float(x) for x in cloth), ear_size=float(r.uniform(0.18, 0.26)),
    )


@dataclass(frozen=True)
class Pose:
    """Per-capture variation of one identity."""
    cx: float = 0.5      # face centre, fraction of canvas
    cy: float = 0.46
    scale: float = 0.2   # rx as a fraction of canvas size
    yaw: float = 0.0     # -1..1 (fraction of a quarter turn)
    pitch: float = 0.0
    roll: float = 0.0    # degrees
    smile: float = 0.0   # 0..1
    mouth_open: float = 0.0
    blink: float = 0.0   # 0 open .. 1 closed
    light_dir: tuple[float, float] = (-0.3, -0.4)  # image-plane direction the light comes from
    light: float = 0.75  # diffuse strength
    ambient: float = 0.45
    specular: float = 0.15
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)


def random_pose(r: np.random.Generator, base: Pose | None = None, jitter: float = 1.0) -> Pose:
    """A plausible capture pose; with `base`, a small perturbation of it (frames of one video)."""
    if base is None:
        ang = r.uniform(0, 2 * math.pi)
        return Pose(
            cx=float(r.uniform(0.44, 0.56)), cy=float(r.uniform(0.40, 0.50)), scale=float(r.uniform(0.15, 0.21)),
            yaw=float(r.normal(0, 0.18)), pitch=float(r.normal(0, 0.12)), roll=float(r.normal(0, 6)),
            smile=float(r.random() ** 2), mouth_open=float(max(0.0, r.normal(0, 0.4))) if r.random() < 0.3 else 0.0,
            blink=float(r.random() * 0.3 if r.random() < 0.15 else 0.0),
            light_dir=(float(math.cos(ang) * 0.7), float(math.sin(ang) * 0.5 - 0.3)),
            light=float(r.uniform(0.55, 0.85)), ambient=float(r.uniform(0.35, 0.55)), specular=float(r.uniform(0.05, 0.25)),
            tint=tuple(float(x) for x in r.uniform(0.92, 1.06, 3)),
        )
    j = jitter
    return Pose(
        cx=base.cx + float(r.normal(0, 0.012 * j)), cy=base.cy + float(r.normal(0, 0.012 * j)),
        scale=base.scale * float(1 + r.normal(0, 0.03 * j)), yaw=base.yaw + float(r.normal(0, 0.05 * j)),
        pitch=base.pitch + float(r.normal(0, 0.04 * j)), roll=base.roll + float(r.normal(0, 2.0 * j)),
        smile=float(np.clip(base.smile + r.normal(0, 0.1 * j), 0, 1)),
        mouth_open=float(np.clip(base.mouth_open + r.normal(0, 0.05 * j), 0, 1)),
        blink=float(r.random() * 0.9) if r.random() < 0.08 else 0.0,
        light_dir=base.light_dir, light=base.light, ambient=base.ambient, specular=base.specular, tint=base.tint,
    )


def _c(rgb) -> tuple[int, int, int]:
    return tuple(int(round(255 * min(max(v, 0.0), 1.0))) for v in rgb)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx, yy


BANK = 1024


@lru_cache(maxsize=None)
def noise_bank(kind: str) -> np.ndarray:
    """Fixed-seed noise textures sliced at random offsets.

    Why: drawing fresh normal noise costs ~1 ms per 224 px plane on the target CPU; slicing a cached
    plane at a per-image random offset (a million positions) is free and equally deterministic.
    kinds: white (N(0,1)), pore (slightly blurred), strand (vertical streaks), white3 (3 channels).
    """
    r = np.random.default_rng([20240601, sum(map(ord, kind))])
    if kind == "white3":
        return r.standard_normal((BANK, BANK, 3), dtype=np.float32)
    w = r.standard_normal((BANK, BANK), dtype=np.float32)
    if kind == "pore":
        w = cv2.GaussianBlur(w, (3, 3), 0.6)
        w /= w.std()
    elif kind == "strand":
        w = cv2.blur(w, (1, 7))
        w /= w.std()
    elif kind == "paper":  # fibres: a mix of fine grain and short anisotropic streaks
        a = cv2.GaussianBlur(w, (3, 3), 0.8)
        b = cv2.blur(r.standard_normal((BANK, BANK), dtype=np.float32), (5, 1))
        w = a / a.std() + 0.7 * b / b.std()
        w /= w.std()
    return w


def bank_slice(kind: str, r: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A (h, w[, 3]) view of a noise bank at a random offset (h, w <= BANK)."""
    b = noise_bank(kind)
    y = int(r.integers(0, BANK - h + 1))
    x = int(r.integers(0, BANK - w + 1))
    return b[y:y + h, x:x + w]


def _noise(r: np.random.Generator, size: int, scale: int) -> np.ndarray:
    """Smooth noise with feature size ~`scale` px (upsampled low-res normal noise)."""
    n = max(2, size // max(1, scale) + 2)
    low = r.standard_normal((n, n), dtype=np.float32)
    return cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)


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


def render_person(ident: Identity, pose: Pose, size: int, r: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float], "Marks"]:
    """Render a head-and-shoulders person on a transparent canvas.

    Returns (rgb float32 [size,size,3] ~[0,1], alpha float32 [size,size], face box x,y,w,h in px,
    landmarks). `pose.roll` is not applied here: the caller folds it into the capture homography.
    The skin gets pores (per-pixel noise) and blotches, hair gets strands, so that a bona fide capture
    has the fine texture that recapture through paper or a screen degrades.
    """
    S = size
    rx = pose.scale * S
    ry = rx * ident.face_aspect
    cx, cy = pose.cx * S, pose.cy * S
    yaw, pitch = pose.yaw, pose.pitch
    # feature frame: yaw shifts the features sideways, pitch up/down
    fx = cx + yaw * rx * 0.45
    fy = cy + pitch * ry * 0.25
    img = np.zeros((S, S, 3), np.uint8)
    mask = np.zeros((S, S), np.uint8)
    skin = np.array(ident.skin, np.float32)
    AA = cv2.LINE_AA
    sh = 4  # fixed-point shift for sub-pixel drawing
    F = float(1 << sh)

    def P(x: float, y: float) -> tuple[int, int]:
        return int(round(x * F)), int(round(y * F))

    def A(a: float, b: float) -> tuple[int, int]:
        return max(1, int(round(a * F))), max(1, int(round(b * F)))

    hair = _c(ident.hair_color)
    # --- body and neck
    cv2.ellipse(img, P(cx, cy + ry * 2.55), A(rx * 2.7, ry * 1.35), 0, 0, 360, _c(ident.cloth), -1, AA, sh)
    cv2.ellipse(mask, P(cx, cy + ry * 2.55), A(rx * 2.7, ry * 1.35), 0, 0, 360, 255, -1, AA, sh)
    neck = np.array([[cx - rx * 0.55, cy + ry * 0.3], [cx + rx * 0.55, cy + ry * 0.3],
                     [cx + rx * 0.62, cy + ry * 1.45], [cx, cy + ry * 1.75], [cx - rx * 0.62, cy + ry * 1.45]])
    cv2.fillPoly(img, [(neck * F).astype(np.int32)], _c(skin * 0.8), AA, sh)
    cv2.fillPoly(mask, [(neck * F).astype(np.int32)], 255, AA, sh)
    # --- hair behind the head
    if ident.hair_style in ("long", "bangs"):
        cv2.ellipse(img, P(cx, cy - ry * 0.1), A(rx * 1.22, ry * 1.12), 0, 180, 360, hair, -1, AA, sh)
        back = np.array([[cx - rx * 1.22, cy - ry * 0.1], [cx + rx * 1.22, cy - ry * 0.1],
                         [cx + rx * 1.35, cy + ry * (1.3 if ident.hair_style == "long" else 0.6)],
                         [cx - rx * 1.35, cy + ry * (1.3 if ident.hair_style == "long" else 0.6)]])
        cv2.fillPoly(img, [(back * F).astype(np.int32)], hair, AA, sh)
        cv2.ellipse(mask, P(cx, cy - ry * 0.1), A(rx * 1.22, ry * 1.12), 0, 180, 360, 255, -1, AA, sh)
        cv2.fillPoly(mask, [(back * F).astype(np.int32)], 255, AA, sh)
    # --- ears
    for s in (-1, 1):
        ex = cx + s * rx * (0.97 - 0.12 * s * yaw)
        cv2.ellipse(img, P(ex, cy + ry * 0.02), A(rx * ident.ear_size, ry * 0.2), 0, 0, 360, _c(skin * 0.88), -1, AA, sh)
        cv2.ellipse(mask, P(ex, cy + ry * 0.02), A(rx * ident.ear_size, ry * 0.2), 0, 0, 360, 255, -1, AA, sh)
    # --- head outline with a jaw
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    lower = np.clip(-np.cos(t), 0, None)  # 1 at chin
    wfac = 1 - ident.jaw * 0.35 * lower ** 2 + ident.chubby * 0.06 * lower
    head = np.stack([cx + rx * np.sin(t) * wfac, cy - ry * np.cos(t)], 1)
    cv2.fillPoly(img, [(head * F).astype(np.int32)], _c(skin), AA, sh)
    cv2.fillPoly(mask, [(head * F).astype(np.int32)], 255, AA, sh)
    headmask = np.zeros((S, S), np.uint8)
    cv2.fillPoly(headmask, [(head * F).astype(np.int32)], 255, AA, sh)

    # --- soft shading strokes (eye sockets, nose sides, cheekbones, under lip), blurred once
    shade = np.zeros((S, S), np.float32)
    ldx = pose.light_dir[0]
    eye_y = fy - ry * 0.12
    nose_tip_y = eye_y + ry * ident.nose_len
    mouth_y = nose_tip_y + ry * 0.22
    for s in (-1, 1):
        ex = fx + s * rx * ident.eye_sep * (1 - 0.25 * s * yaw)
        cv2.ellipse(shade, P(ex, eye_y - ry * 0.02), A(rx * ident.eye_w * 1.35, ry * ident.eye_h * 1.3), 0, 0, 360, 0.22, -1, AA, sh)
    nside = 1 if ldx < 0 else -1  # nose side away from the light is darker
    cv2.line(shade, P(fx + nside * rx * ident.nose_w * 0.45, eye_y + ry * 0.05),
             P(fx + nside * rx * ident.nose_w * 0.55, nose_tip_y - ry * 0.03), 0.28, max(1, int(rx * 0.08)), AA, 0)
    cv2.ellipse(shade, P(fx, nose_tip_y + ry * 0.03), A(rx * ident.nose_w * 0.6, ry * 0.04), 0, 0, 360, 0.25, -1, AA, sh)
    cv2.ellipse(shade, P(fx, mouth_y + ry * ident.lip_h * 0.9), A(rx * ident.mouth_w * 0.35, ry * 0.04), 0, 0, 360, 0.2, -1, AA, sh)
    k = int(rx * 0.18) | 1
    shade = cv2.GaussianBlur(shade, (k, k), 0)

    # --- features (drawn into img; hair/beard etc)
    for s in (-1, 1):
        ex = fx + s * rx * ident.eye_sep * (1 - 0.25 * s * yaw)
        ew = rx * ident.eye_w * (1 - 0.3 * s * yaw)
        eh = ry * ident.eye_h * 0.55 * (1 - pose.blink) * (1 - 0.25 * pose.smile)
        if eh > 0.6:
            cv2.ellipse(img, P(ex, eye_y), A(ew, eh), 0, 0, 360, _c((0.92, 0.9, 0.88)), -1, AA, sh)
            ir = min(ew * 0.5, eh * 1.6)
            ix = ex + yaw * ew * 0.3
            # iris clipped by the eye opening, composited in a small patch around the eye
            px0, py0 = max(0, int(ex - ew - 2)), max(0, int(eye_y - eh - 2))
            px1, py1 = min(S, int(ex + ew + 3)), min(S, int(eye_y + eh + 3))
            if px1 > px0 and py1 > py0:
                pw, ph = px1 - px0, py1 - py0
                eyemask = np.zeros((ph, pw), np.uint8)
                cv2.ellipse(eyemask, P(ex - px0, eye_y - py0), A(ew, eh), 0, 0, 360, 255, -1, AA, sh)
                iris_l = img[py0:py1, px0:px1].copy()
                c0 = P(ix - px0, eye_y - py0)
                cv2.circle(iris_l, c0, int(ir * F), _c(ident.iris), -1, AA, sh)
                cv2.circle(iris_l, c0, int(ir * 0.45 * F), (10, 10, 12), -1, AA, sh)
                cv2.circle(iris_l, P(ix - ir * 0.3 - px0, eye_y - ir * 0.3 - py0), max(1, int(ir * 0.22 * F)),
                           (250, 250, 250), -1, AA, sh)
                wgt = eyemask.astype(np.float32)[..., None] * (1.0 / 255)
                patch = img[py0:py1, px0:px1]
                patch[:] = (patch * (1 - wgt) + iris_l * wgt + 0.5).astype(np.uint8)
        # eyelid and lashes
        lid = _c(np.array(ident.brow_color) * 0.5)
        cv2.ellipse(img, P(ex, eye_y), A(ew * 1.02, max(eh, 0.8) * 1.05), 0, 190, 350, lid, max(1, int(rx * 0.035)), AA, sh)
        cv2.ellipse(img, P(ex, eye_y), A(ew, max(eh, 0.8)), 0, 20, 160, _c(skin * 0.7), 1, AA, sh)
        # eyebrow
        by = eye_y - ry * (0.15 + ident.brow_arch * 0.3) - ry * 0.02
        bw = ew * 1.3
        pts = np.array([[ex - s * bw * 0.9, by + ry * 0.04], [ex - s * bw * 0.1, by - ry * ident.brow_arch * 0.5],
                        [ex + s * bw * 0.9, by + ry * 0.02]])
        thick = max(1, int(round(ry * ident.brow_thick)))
        cv2.polylines(img, [(pts * F).astype(np.int32)], False, _c(ident.brow_color), thick, AA, sh)
    # nose: nostrils and a soft tip
    for s in (-1, 1):
        cv2.ellipse(img, P(fx + s * rx * ident.nose_w * 0.3, nose_tip_y), A(rx * 0.045, ry * 0.022), 0, 0, 360,
                    _c(skin * 0.45), -1, AA, sh)
    # mouth
    mw = rx * ident.mouth_w * (1 + 0.25 * pose.smile)
    lh = ry * ident.lip_h * 0.5
    curve = pose.smile * ry * 0.06
    op = pose.mouth_open * ry * 0.08
    upper = np.array([[fx - mw, mouth_y - curve], [fx - mw * 0.4, mouth_y - lh], [fx, mouth_y - lh * 0.7],
                      [fx + mw * 0.4, mouth_y - lh], [fx + mw, mouth_y - curve], [fx, mouth_y]])
    lower = np.array([[fx - mw, mouth_y - curve], [fx, mouth_y + op], [fx + mw, mouth_y - curve],
                      [fx + mw * 0.5, mouth_y + op + lh * 1.2], [fx - mw * 0.5, mouth_y + op + lh * 1.2]])
    lower = lower[[0, 1, 2, 3, 4]]
    if op > 1:
        cv2.ellipse(img, P(fx, mouth_y + op * 0.5), A(mw * 0.8, op * 0.7 + 0.5), 0, 0, 360, (40, 15, 15), -1, AA, sh)
        cv2.ellipse(img, P(fx, mouth_y + op * 0.1), A(mw * 0.6, op * 0.35 + 0.5), 0, 0, 180, (225, 220, 210), -1, AA, sh)
    cv2.fillPoly(img, [(upper * F).astype(np.int32)], _c(np.array(ident.lip_color) * 0.9), AA, sh)
    cv2.fillPoly(img, [(lower[[0, 2, 3, 4]] * F).astype(np.int32)], _c(ident.lip_color), AA, sh)
    cv2.polylines(img, [(np.array([[fx - mw, mouth_y - curve], [fx, mouth_y + op * 0.3], [fx + mw, mouth_y - curve]]) * F
                         ).astype(np.int32)], False, _c(np.array(ident.lip_color) * 0.45), 1, AA, sh)

    flat = 0.65
    outside = pose.ambient + pose.light * flat
    # the canvas outside the head gets a flat light level and a cheap low-frequency cloth texture
    cloth = _noise(r, S, 4)
    lightmap = cloth * (0.05 * outside / 255) + (outside / 255)
    rgb = img.astype(np.float32)
    rgb *= lightmap[..., None]
    # all per-pixel work happens on the head region of interest only (4x fewer pixels than the canvas)
    x0, x1 = max(0, int(cx - rx * 1.45)), min(S, int(cx + rx * 1.45) + 1)
    y0, y1 = max(0, int(cy - ry * 1.25)), min(S, int(cy + ry * 1.35) + 1)
    roi = rgb[y0:y1, x0:x1]
    roi *= 1.0 / outside
    H, W = roi.shape[:2]
    gx, gy = _grid(max(S, 1))
    xx = gx[:H, :W] + x0
    yy = gy[:H, :W] + y0
    shade = shade[y0:y1, x0:x1]
    hm = headmask[y0:y1, x0:x1].astype(np.float32) * (1.0 / 255)
    strands = None
    if ident.beard != "none" or ident.mustache or ident.hair_style != "bald":
        strands = bank_slice("strand", r, H, W)
    if ident.beard != "none":
        u = (xx - fx) / rx
        v = (yy - cy) / ry
        if ident.beard == "stubble":
            bmask = np.clip((v - 0.25) * 4, 0, 1) * hm * 0.35
        elif ident.beard == "goatee":
            bmask = np.clip((v - 0.62) * 6, 0, 1) * np.clip(1 - np.abs(u) * 2.2, 0, 1) * hm * 0.85
        else:
            bmask = np.clip((v - 0.3) * 5, 0, 1) * hm * 0.85
        bmask = bmask * np.clip(0.7 + 0.6 * strands, 0, 1)
        roi += (np.array(ident.hair_color, np.float32) - roi) * bmask[..., None]
    if ident.mustache:
        mm = np.zeros((H, W), np.float32)
        cv2.ellipse(mm, P(fx - x0, mouth_y - lh - ry * 0.035 - y0), A(mw * 0.95, ry * 0.045), 0, 180, 360, 0.9, -1, AA, sh)
        mm *= np.clip(0.7 + 0.5 * strands, 0, 1)
        roi += (np.array(ident.hair_color, np.float32) - roi) * mm[..., None]
    hm_total = np.zeros((H, W), np.float32)
    if ident.hair_style != "bald":
        hmask = np.zeros((H, W), np.uint8)
        hc_, hy_ = cx - x0, cy - ry * 0.05 - y0
        cv2.ellipse(hmask, P(hc_, hy_), A(rx * 1.08, ry * 1.06), 0, 180, 360, 255, -1, AA, sh)
        cv2.ellipse(hmask, P(hc_, hy_), A(rx * 1.08, ry * 0.3), 0, 0, 180, 255, -1, AA, sh)
        hl = ident.hairline if ident.hair_style != "bangs" else 0.3
        fore = np.zeros((H, W), np.uint8)
        cv2.ellipse(fore, P(hc_ + yaw * rx * 0.2, hy_ + ry * (0.75 - hl)), A(rx * 0.86, ry * 0.75), 0, 0, 360, 255, -1, AA, sh)
        if ident.hair_style == "bangs":
            lx_, ly_ = gx[:H, :W], gy[:H, :W]
            fringe = (np.sin(lx_ * (6.0 / max(rx, 1))) * ry * 0.03).astype(np.float32)
            fore = cv2.remap(fore, lx_, ly_ + fringe, cv2.INTER_LINEAR)
        hm_total = cv2.subtract(hmask, fore).astype(np.float32) * (1.0 / 255)
        cv2.ellipse(mask, P(cx, cy - ry * 0.05), A(rx * 1.08, ry * 1.06), 0, 180, 360, 255, -1, AA, sh)
        hc = np.array(ident.hair_color, np.float32)
        roi += (hc * (1 + 0.35 * strands)[..., None] - roi) * hm_total[..., None]

    # --- skin texture: pores (per pixel) + blotches (mid frequency), only on skin
    skin_m = np.clip(mask[y0:y1, x0:x1].astype(np.float32) * (1.0 / 255) - hm_total, 0, 1)
    pores = bank_slice("pore", r, H, W) * (ident.pore_amp * 1.4)
    blot = cv2.resize(_noise(r, max(H, W), max(2, int(rx * 0.15))), (W, H)) * ident.blotch_amp
    roi *= (1 + (pores + blot) * skin_m)[..., None]
    if ident.rosy > 0.01:
        for s in (-1, 1):
            d2 = ((xx - (fx + s * rx * 0.5)) / (rx * 0.25)) ** 2 + ((yy - (nose_tip_y - ry * 0.05)) / (ry * 0.15)) ** 2
            roi[..., 1:] *= (1 - ident.rosy * np.exp(-d2) * hm)[..., None]

    # --- lighting: lambert on an ellipsoid for the head, gentle gradient elsewhere
    u = (xx - cx) / (rx * 1.05)
    v = (yy - cy) / (ry * 1.05)
    nz = np.sqrt(np.clip(1 - u * u - v * v, 0.02, 1))
    lx, ly = pose.light_dir
    lz = math.sqrt(max(0.05, 1 - lx * lx - ly * ly))
    lam = np.clip(u * (-lx) * 0.9 + v * (-ly) * 0.9 + nz * lz, 0, 1)
    lam = lam * hm + (1 - hm) * flat
    roi *= (pose.ambient + pose.light * lam - shade)[..., None]
    spec = pose.specular * np.exp(-(((xx - fx + lx * rx * 0.3) / (rx * 0.35)) ** 2 + ((yy - (cy - ry * 0.45)) / (ry * 0.18)) ** 2))
    spec += pose.specular * 0.8 * np.exp(-(((xx - fx) / (rx * 0.1)) ** 2 + ((yy - nose_tip_y + ry * 0.06) / (ry * 0.08)) ** 2))
    roi += (spec * skin_m)[..., None]
    # glasses last (not shaded by skin)
    if ident.glasses:
        for s in (-1, 1):
            ex = fx + s * rx * ident.eye_sep * (1 - 0.25 * s * yaw)
            cv2.ellipse(rgb, P(ex, eye_y), A(rx * 0.3, ry * 0.14), 0, 0, 360, (0.08, 0.07, 0.07), max(1, int(rx * 0.04)), AA, sh)
        cv2.line(rgb, P(fx - rx * 0.12, eye_y - ry * 0.03), P(fx + rx * 0.12, eye_y - ry * 0.03), (0.08, 0.07, 0.07),
                 max(1, int(rx * 0.035)), AA, sh)
    alpha = mask.astype(np.float32) * (1.0 / 255)
    box = (float(fx - rx * 1.0), float(cy - ry * 0.72), float(rx * 2.0), float(ry * 1.78))
    marks = Marks(
        eyes=((float(fx - rx * ident.eye_sep * (1 + 0.25 * yaw)), float(eye_y)),
              (float(fx + rx * ident.eye_sep * (1 - 0.25 * yaw)), float(eye_y))),
        mouth=(float(fx), float(mouth_y + op * 0.4)), eye_r=float(rx * ident.eye_w * 1.25),
        mouth_r=(float(mw * 1.15), float(lh * 2.2 + op + 1.0)), face=(float(cx), float(cy), float(rx), float(ry)),
    )
    return rgb, alpha, box, marks


# ----------------------------------------------------------------------------------------------
# Face finding for user photos (--faces)

def find_faces(image_rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Frontal faces (x, y, w, h) in pixels, largest first, with OpenCV's bundled Haar cascade.

    Kept for `synth --faces`, whose placement is tuned to the Haar box; the finder lives in
    `paperkit.detect` (``haar_boxes``), next to the CNN detector that `predict` uses.
    """
    from paperkit.detect import haar_boxes

    return haar_boxes(image_rgb)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_rgb(path: str | os.PathLike) -> np.ndarray | None:
    """Read any common photo as uint8 RGB (grayscale/RGBA/16-bit converted); None if it does not decode."""
    data = np.fromfile(str(path), np.uint8)
    if data.size == 0:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img
