"""What gets rendered: subjects and their train/test split, capture sessions, attack decks and the
parameters of every session's camera, lighting, background and medium.

All of it is drawn in the parent process, from rng streams keyed by (seed, subject) and fixed tags, so
a worker only computes; each image then depends only on its :class:`Job`. Spoof types, illumination and
environment use the CelebA-Spoof codes.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from paperkit.celeba import MASK_TYPES, PRINT_TYPES

from . import backgrounds
from .camera import AE_TARGET
from .identity import random_pose

# the attack kinds are CelebA-Spoof's spoof-type codes (paperkit.celeba, their one home)
PRINTS, CUTOUTS = PRINT_TYPES, MASK_TYPES
FRAMES_PER_VIDEO = 4        # frames per capture session ("video") when a subject has enough images
TEST_FRACTION = 0.2         # subjects held out for the test split
_SESSION_TAG = 9_100_003
_SPLIT_TAG = 9_100_001

# Domain A = phone camera (sharp, warm, good JPEG); domain B = laptop webcam (soft, noisy, cool, poor JPEG).
# Medium mixes differ too, so a cross-domain test changes both camera and attack instruments.
DOMAINS: dict[str, dict[str, Any]] = {
    "A": {"blur": (0.35, 0.8), "read_noise": 0.004, "shot_noise": 0.0003, "wb": (1.06, 1.0, 0.92),
          "contrast": 1.06, "jpeg": (80, 95), "vignette": 0.12, "iso_dark": 2.0, "sharpen": 0.9, "lowres": 0.15,
          "mix": {1: 3, 2: 1, 3: 1, 4: 1.5, 5: 1, 6: 1.5, 7: 1, 8: 2, 9: 3},
          "screen_pitch": {7: (5, 6), 8: (3, 5), 9: (3, 4)}},
    "B": {"blur": (0.7, 1.5), "read_noise": 0.010, "shot_noise": 0.0008, "wb": (0.93, 1.0, 1.08),
          "contrast": 0.94, "jpeg": (55, 82), "vignette": 0.28, "iso_dark": 3.0, "sharpen": 0.5, "lowres": 0.4,
          "mix": {1: 1, 2: 2, 3: 3, 4: 1, 5: 1.5, 6: 1, 7: 3, 8: 1.5, 9: 1},
          "screen_pitch": {7: (4, 6), 8: (3, 5), 9: (3, 4)}},
}


@dataclass(frozen=True)
class Job:
    """One image to render: whose, where it goes, and the session it belongs to."""
    subject: int          # 0-based identity index
    subject_id: str       # folder name
    split: str
    index: int            # index within the subject (rng stream)
    stem: str             # 6-digit file stem
    live: bool
    session: dict = field(hash=False)


# ----------------------------------------------------------------------------------------------
# Session parameters

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
    sampling = cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444 if q >= 90 else cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420
    return {"blur": float(blur), "jpeg": int(np.clip(q, 35, 97)), "iso": float(iso), "sampling": int(sampling),
            "wb": tuple(float(v) for v in wb), "read": dom["read_noise"], "shot": dom["shot_noise"],
            "contrast": float(dom["contrast"] * r.uniform(0.95, 1.05)),
            "vignette": float(dom["vignette"] * r.uniform(0.5, 1.2)), "exposure": float(r.uniform(0.92, 1.08)),
            # the ISP's unsharp mask (phones sharpen hard, webcams less): lifts whatever detail reached the sensor
            "sharpen": float(r.uniform(0.0, 1.0) * dom["sharpen"]),
            # low-resolution sensors (VGA webcams, video frames) whose image is upscaled to the file size,
            # and hand shake: for live and spoof alike, so softness alone never tells an attack
            "sensor_scale": float(r.uniform(0.35, 0.75)) if r.random() < dom["lowres"] else 1.0,
            "shake": (float(r.uniform(1.5, 5.0)), float(r.uniform(0, math.pi))) if r.random() < 0.2 else (0.0, 0.0),
            # auto-exposure (camera.auto_exposure): the metered luma's target and the face's weight in the
            # meter (phones meter the face, webcams a centre-weighted average); one distribution for all
            "ae_target": float(np.exp(r.normal(math.log(AE_TARGET), 0.3))), "ae_face": float(r.uniform(0.4, 1.0)),
            # the ISP's noise reduction (camera.capture): most pipelines denoise, some barely
            "denoise": float(r.uniform(0.5, 1.0)) if r.random() < 0.85 else 0.0,
            # how many sensor pixels the face spans per pixel of the written image: a phone photo of a face
            # at arm's length is downscaled 1-3x to the frame, which averages its noise and its blur away
            "native": float(np.exp(r.uniform(0.0, math.log(3.0)))) if r.random() < 0.6 else 1.0}


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
    """Which bundled background, and the crop of it (zoom, centre, flip, blur)."""
    nb = len(backgrounds.bundled()[0])
    return {"idx": int(r.integers(nb)) if idx is None else idx, "zoom": float(r.uniform(0.35, 0.9)),
            "cx": float(r.random()), "cy": float(r.random()), "flip": bool(r.random() < 0.5),
            "blur": float(r.uniform(0, 2.5))}


def _print_params(kind: int, r: np.random.Generator, s: float, difficulty: float) -> dict:
    """Paper and ink of a print (also the material of a cut-out): tone, halftone, fibres, glare, bend."""
    glossy = kind == 1
    return {
        "desat": float(r.uniform(0.5, 1.0)), "black": float(r.uniform(0.5, 1.0)),
        "paper_white": tuple(float(v) for v in np.array([0.97, 0.96, 0.92]) * r.uniform(0.95, 1.02, 3)),
        "print_gamma": float(1 + r.uniform(-0.1, 0.3) * s),
        # dots and fibres at real print resolutions and capture distances are faint at the sensor: a weak
        # cue beside the tone, softness and gamut a print cannot escape
        "halftone": float(np.clip((0.25 if glossy else 0.45) * s * r.uniform(0.8, 1.3), 0, 1)),
        # halftone period as seen by the camera (frame px): coarse screens / close-up prints at low
        # difficulty survive the optics and the crop resize; fine ones alias into faint moire
        "ht_frame": float((1 - difficulty) * r.uniform(1.6, 3.4) + difficulty * r.uniform(0.9, 2.2)),
        "ht_sharp": float(r.uniform(1.5, 4.0)),
        "paper_amp": float((0.012 if glossy else 0.035) * s * r.uniform(0.6, 1.4)),
        "banding": float(0.03 * s * r.random()) if kind == 3 else 0.0, "band_period": float(r.uniform(6, 14)),
        "glare": float((r.uniform(0.15, 0.55) if glossy else r.uniform(0.0, 0.25)) * (0.4 + 0.6 * s)
                       * (r.random() < 0.7)),
        "glare_xy": tuple(float(v) for v in r.uniform(0.15, 0.85, 2)),
        "glare_size": tuple(float(v) for v in r.uniform(0.08, 0.35, 2)),
        "glare_ang": float(r.uniform(0, math.pi)), "bend": float(r.uniform(0, 0.15) * s) if kind in (2, 3) else 0.0,
        "margin": float(r.uniform(0.02, 0.08)) if kind == 1 else 0.0,
        "ink_cast": tuple(float(v) for v in 1 + r.normal(0, 0.03, 3) * (0.5 + s)),
    }


def _cutout_params(kind: int, r: np.random.Generator, s: float, difficulty: float) -> dict:
    """How a cut-out sits on the face: size and offset, which half (region masks), eye/mouth holes, edge."""
    return {
        "coverage": 1.0, "mask_scale": float(r.uniform(1.0, 1.12)),
        "mask_shift": tuple(float(v) for v in r.normal(0, 0.015 + 0.015 * (1 - difficulty), 2)),
        "region": str(r.choice(["upper", "lower"])), "holes": bool(kind == 4 or r.random() < 0.7),
        "edge": float(0.3 + 0.7 * s),
        "lift": float(r.uniform(1.0, 3.0) * (0.5 + s)),  # paper's distance from the face: shadow width (px)
    }


def _screen_params(kind: int, r: np.random.Generator, s: float, dom: dict, difficulty: float) -> dict:
    """A replay screen: panel pitch, display gamma, white point, black level, sub-pixel grid, reflections."""
    lo, hi = dom["screen_pitch"][kind]
    return {
        # panel pitch (plane units): coarser panels / closer replays at low difficulty show the sub-pixel
        # grid and pixelation at frequencies the camera resolves
        # real panels (100-460 ppi) put 150-400 pixels across a shown face: pixelation is rarely visible,
        # the sub-pixel grid aliases into moire at the sensor
        "pitch": float(r.uniform(0.35, 0.6) * r.uniform(lo, hi + 1) * (1 + 0.5 * (1 - difficulty))),
        "gamma": float(1 + r.uniform(-0.25, 0.35) * (0.3 + 0.7 * s)),
        "white": tuple(float(v) for v in np.array([0.93, 0.98, 1.08]) ** (0.5 + 1.5 * s) * r.uniform(0.97, 1.03, 3)),
        "black": float(r.uniform(0.01, 0.06) * (0.3 + s)), "bright": float(r.uniform(0.9, 1.15)),
        "grid": float(np.clip(0.5 * s * r.uniform(0.5, 1.3), 0, 0.95)),
        "reflect": float(r.uniform(0.02, 0.25) * (0.3 + 0.7 * s) * (r.random() < 0.8)),
        "bezel": float(r.uniform(0.03, 0.09)), "bezel_color": float(r.choice([0.04, 0.08, 0.75])),
        "coverage": float(r.uniform(0.9, 1.4) if kind != 9 else r.uniform(1.0, 1.5)),
        # backlight PWM / refresh beating with the rolling shutter: soft horizontal bands in the frame
        "band_amp": float(r.uniform(0.0, 0.07) * s * (r.random() < 0.5)), "band_px": float(r.uniform(12, 60)),
        "band_phase": float(r.uniform(0, 2 * math.pi)),
    }


def _medium_params(kind: int, r: np.random.Generator, dom: dict, difficulty: float) -> dict:
    """Everything about one session's attack medium, drawn in a fixed order (strength and placement first)."""
    s = _strength(r, difficulty)
    p: dict[str, Any] = {"strength": s, "coverage": float(r.uniform(0.85, 1.35)),
                         "tilt": tuple(float(v) for v in r.normal(0, 0.08, 2)), "defocus": float(r.uniform(0, 0.6))}
    # the attacker's source photo (a camera's JPEG, resampled): drawn for every attack, after placement
    p["src_blur"] = float(r.uniform(0.3, 1.4) * (0.6 + 0.6 * s))
    p["src_jpeg"] = int(r.uniform(45, 92)) if r.random() < 0.85 else 0
    if kind in PRINTS or kind in CUTOUTS:
        p.update(_print_params(kind, r, s, difficulty))
        if kind == 2:
            p["coverage"] = float(r.uniform(1.0, 1.5))
        if kind in CUTOUTS:
            p.update(_cutout_params(kind, r, s, difficulty))
    else:
        p.update(_screen_params(kind, r, s, dom, difficulty))
    p.update(_hand_params(kind, r))
    return p


_SKIN_TONES = ((0.93, 0.74, 0.62), (0.85, 0.64, 0.50), (0.72, 0.52, 0.40), (0.55, 0.38, 0.28), (0.40, 0.27, 0.20))


def _hand_params(kind: int, r: np.random.Generator) -> dict:
    """Fingers gripping a hand-held medium (photo print, A4 sheet, pad, phone): none for posters, PC
    screens and cut-outs. Drawn last, so the other parameters keep their draws."""
    held = kind in (1, 3, 8, 9)
    count = int(r.choice([0, 1, 2, 3], p=[0.35, 0.3, 0.25, 0.1])) if held else 0
    edge = int(r.integers(4))
    fingers = []
    for i in range(count):
        fingers.append({"edge": edge if i < 2 else (edge + 2) % 4, "pos": float(r.uniform(0.12, 0.88)),
                        "reach": float(r.uniform(0.06, 0.18)), "width": float(r.uniform(0.08, 0.13))})
    tone = np.array(_SKIN_TONES[int(r.integers(len(_SKIN_TONES)))]) * r.uniform(0.9, 1.08, 3)
    return {"fingers": fingers, "finger_skin": tuple(float(v) for v in tone)}


# ----------------------------------------------------------------------------------------------
# Sessions, decks, jobs

def _new_deck(seed: int, dom_name: str, k: int, decks: dict) -> list[int]:
    """A shuffled 'deck' of spoof types with the domain's medium mix (drawn without replacement,
    so small datasets still cover every type)."""
    decks.setdefault("_count", []).append(1)
    mix = DOMAINS[dom_name]["mix"]
    cards = [t for t, w in mix.items() for _ in range(int(round(w * 2)))]
    r = np.random.default_rng([seed, ord(dom_name), k, 55])
    r.shuffle(cards)
    return cards


def _add_attack(sess: dict, r: np.random.Generator, seed: int, dom: dict, difficulty: float,
                decks: dict[str, list[int]]) -> None:
    """The spoof part of a session: the next card of its domain's deck, the medium, and the photo shown
    (its pose, background and lighting) and the room around the medium."""
    deck = decks[sess["domain"]]
    if not deck:
        deck.extend(_new_deck(seed, sess["domain"], len(decks.get("_count", [])), decks))
    kind = deck.pop()
    sess["kind"] = kind
    sess["medium"] = _medium_params(kind, r, dom, difficulty)
    sess["content_pose"] = asdict(random_pose(r))
    sess["content_bg"] = _bg_params(r)
    sess["content_light"] = _lighting(1, r)
    sess["env_bg"] = _bg_params(r)


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
                "illum": illum, "bg": _bg_params(r), "pose": asdict(random_pose(r)),
                "camera": _camera_session(r, dom, difficulty, illum), "light": _lighting(illum, r),
                "roll": float(r.normal(0, 5)), "frame_cx": float(r.uniform(0.46, 0.54)),
                # a quarter of the sessions are close-ups (webcam at arm's length, a face-crop dataset like
                # NUAA's): the face fills the frame and the model's crop runs past the image edge
                "zoom": float(r.uniform(1.25, 1.7)) if r.random() < 0.25 else 1.0,
            }
            if not live:
                _add_attack(sess, r, seed, dom, difficulty, decks)
            out.append((sess, sz))
    return out


def plan_jobs(seed: int, n_id: int, n_live: int, n_spoof: int, difficulty: float, subject_ids: list[str],
              test_fraction: float = TEST_FRACTION) -> tuple[list[Job], dict[str, str]]:
    """Every image of the dataset in write order, and each subject's split (a random subject-disjoint
    hold-out of `test_fraction`, at least one subject when there are two or more)."""
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
                jobs.append(Job(i, subject_ids[i], splits[subject_ids[i]], idx, f"{i * per + idx:06d}", sess["live"],
                                sess))
                idx += 1
    return jobs, splits
