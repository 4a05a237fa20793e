"""Who is in front of the camera: procedural identities (with the CelebA attributes they truthfully have)
and the capture poses of one identity.

Identities are seeds: every parameter of a face is drawn from ``np.random.default_rng([seed, subject,
_ID_STREAM])``, so the same subject renders the same person in every pose and lighting
(:func:`paperkit.synth.person.render_person` draws them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
        brow_color=tuple(float(x) for x in np.clip(hair * 0.8 if hair_name not in ("gray", "blond") else hair * 0.6,
                                                   0, 1)),
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
            light=float(r.uniform(0.55, 0.85)), ambient=float(r.uniform(0.35, 0.55)),
            specular=float(r.uniform(0.05, 0.25)),
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
