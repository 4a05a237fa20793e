"""One image from its job: the live capture or one attack (print, screen replay, paper cut-out) through the
shared camera, with its 44 CelebA-Spoof labels, its ``_BB.txt`` face box and its attack cues.

:func:`render_frame` is a pure function of (job, seed, size): every random draw comes from one rng keyed by
(seed, subject, index), in a fixed order: the frame's pose and blur jitter, then the attack's own draws,
then exposure (metered on the face: :func:`paperkit.synth.camera.auto_exposure`), sensor noise and the box
score. Attack cues are set by name (:data:`paperkit.cues.CUE_NAMES`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import cv2
import numpy as np

from paperkit.cues import CUE_NAMES

from . import backgrounds
from .camera import (LIVE_OVERSCAN, auto_exposure, encode_jpeg, homography, lens_blur, motion_blur, native_factor,
                     sensor_capture, warp_box)
from .identity import ATTR, Pose, random_pose
from .media import (P0_SUB, atten, blob_out, cutout_mask, hold_cutout, hold_with_fingers, pattern_out, print_texture,
                    print_tone, screen_display, screen_reflection, source_photo, subpixel_tile)
from .plan import CUTOUTS, PRINTS, Job
from .scene import last_placement, photo_source, render_subject


@dataclass
class _Take:
    """One capture in progress: its job, its rng and the frame's own camera draws."""
    job: Job
    seed: int
    n: int
    r: np.random.Generator
    pose: Pose              # the session pose, jittered for this frame
    blur: float
    roll: float             # degrees: the session's roll plus the frame pose's
    jitter: np.ndarray      # corner jitter of the capture homography
    fcx: float              # horizontal frame centre of a scene captured directly (live, cut-outs)
    env: np.ndarray | None = None  # the room around a medium (attacks only)
    zoom: float = 1.0       # close-up framing (the session's; relaxed on a re-render whose box left the frame)

    @property
    def sess(self) -> dict:
        return self.job.session

    @property
    def light(self) -> dict:
        return self.job.session["light"]


@dataclass
class _Shot:
    """What a live capture or an attack hands to the camera back-end."""
    frame: np.ndarray
    box: tuple[float, float, float, float]   # face box in frame px
    cues: dict[str, int]
    attrs: list[int] | None = None           # CelebA face attributes (live renders only)
    source: tuple | None = None              # live user-photo renders: (photo index, 3x3 photo px -> frame px)


def cue_vector(cues: dict[str, int]) -> list[int]:
    """Cue labels in :data:`CUE_NAMES` order, unset cues 0; an unknown name is a bug, not a silent 0."""
    unknown = set(cues) - set(CUE_NAMES)
    if unknown:
        raise KeyError(f"unknown attack cue(s) {sorted(unknown)}; the names are {list(CUE_NAMES)}")
    return [int(cues.get(name, 0)) for name in CUE_NAMES]


def _print_cues(pc: dict) -> dict[str, int]:
    """Cues a print leaves at the sensor, from the strengths print_texture applied."""
    return {"moire": int(pc["halftone"] > 0.15), "glare": int(pc["glare"] > 0.2),
            "paper_texture": int(pc["paper_amp"] > 0.008)}


def _direct_homography(t: _Take) -> np.ndarray:
    """The capture of a scene in front of the camera (live, or a cut-out held against the face)."""
    z = t.zoom
    cx, cy = _zoom_centre(t.fcx, 0.5, t.pose.cx, t.pose.cy, LIVE_OVERSCAN, z)
    return homography(t.n, t.n, LIVE_OVERSCAN * z, cx, cy, t.roll, (0.0, 0.0), t.jitter)


def _zoom_centre(cx: float, cy: float, px: float, py: float, cov: float, z: float) -> tuple[float, float]:
    """Frame position of the plane's centre when a capture is framed `z` times tighter (a close-up, the
    face filling the frame): the plane point (px, py), the face, keeps its place instead of sliding out."""
    return cx - (px - 0.5) * cov * (z - 1), cy - (py - 0.5) * cov * (z - 1)


def _render_live(t: _Take) -> _Shot:
    scene, _, box, _, attrs = render_subject(t.seed, t.job.subject, t.pose, t.sess["bg"], t.n, t.r, t.light)
    h = _direct_homography(t)
    frame = cv2.warpPerspective(scene, h, (t.n, t.n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    placed = last_placement() if photo_source() else None
    src = None if placed is None else (placed[0], (h @ np.vstack([placed[1], [0, 0, 1]])).tolist())
    return _Shot(frame, warp_box(box, h), {}, attrs, src)


def _render_cutout(t: _Take) -> _Shot:
    """A cut-out print held in front of the live face (face/region mask, with holes where the live eyes and
    mouth show) or in front of the room (upper-body silhouette)."""
    sess, med, light, n, kind = t.sess, t.sess["medium"], t.light, t.n, t.sess["kind"]
    live_scene, _, box, marks, _ = render_subject(t.seed, t.job.subject, t.pose, sess["bg"], n, t.r, light)
    if kind == 5:
        live_scene = t.env
    shown = sess["content_pose"]
    cpose = Pose(**{**asdict(t.pose), "light_dir": tuple(shown["light_dir"]), "smile": shown["smile"],
                    "mouth_open": 0.0, "blink": 0.0})
    content, c_alpha, c_box, c_marks, _ = render_subject(t.seed, t.job.subject, cpose, sess["content_bg"], n, t.r,
                                                         sess["content_light"])
    sc = med["mask_scale"]
    shx, shy = med["mask_shift"]
    fx, fy = marks.face[0], marks.face[1]
    a_m = np.array([[sc, 0, (1 - sc) * fx + shx * n], [0, sc, (1 - sc) * fy + shy * n]])
    printed = cv2.warpAffine(print_tone(source_photo(content, med) * light["face"], med), a_m, (n, n),
                             flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    cut = cutout_mask(kind, med, c_marks.moved(a_m), c_alpha, a_m, n)
    plane = hold_cutout(printed, cut, live_scene, med)
    h = _direct_homography(t)
    frame = cv2.warpPerspective(plane, h, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    cut_out = cv2.warpPerspective(cut, h, (n, n), flags=cv2.INTER_LINEAR)
    # plane units here are content px (half the medium units the halftone period is drawn in)
    tex, pc = print_texture(frame, kind, {**med, "ht_period": med["ht_frame"] / LIVE_OVERSCAN}, h, n, t.blur,
                            LIVE_OVERSCAN, t.r)
    frame = tex * cut_out[..., None] + frame * (1 - cut_out[..., None])
    # the face the image claims is the printed one (over the wearer's face, or alone for a silhouette)
    shown_box = warp_box(c_box, h @ np.vstack([a_m, [0, 0, 1]]))
    return _Shot(frame, shown_box, {"print": 1, "cutout": 1, **_print_cues(pc)})


@dataclass(frozen=True)
class _Held:
    """A flat medium (print or screen) held up to the camera: the photo it shows and where it lands."""
    content: np.ndarray     # the shown photo (a rendered scene), content px
    box: tuple              # its face box, content px
    m: int                  # medium plane units across the shown photo: 2 per content px
    bz: int                 # the medium's border (paper margin, screen bezel), plane units
    mm: int                 # plane side including the border
    h: np.ndarray           # plane units -> frame
    hc: np.ndarray          # content px -> frame
    scale: float            # frame px per plane unit


def _hold_up(t: _Take, border: float) -> _Held:
    """Render the photo the medium shows (a near-copy of the session's fixed content pose) and place the
    medium (`border` = its margin or bezel as a fraction of the photo) in the frame."""
    sess, med, n = t.sess, t.sess["medium"], t.n
    cpose = random_pose(t.r, Pose(**sess["content_pose"]), jitter=0.2)  # the shown photo is fixed
    content, _, box, _, _ = render_subject(t.seed, t.job.subject, cpose, sess["content_bg"], n, t.r,
                                           sess["content_light"])
    content = source_photo(content, med)
    m = 2 * n
    bz = int(border * m)
    mm = m + 2 * bz
    z = t.zoom
    cov = med["coverage"] * mm / m
    bx, by, bw, bh = box
    cx, cy = _zoom_centre(0.5 + (sess["frame_cx"] - 0.5) * 0.5, 0.5, (bz + 2 * (bx + bw / 2)) / mm,
                          (bz + 2 * (by + bh / 2)) / mm, cov, z)
    cov *= z
    h = homography(mm, n, cov, cx, cy, t.roll * 0.5, med["tilt"], t.jitter)
    hc = h @ np.array([[2.0, 0, bz], [0, 2.0, bz], [0, 0, 1]])
    return _Held(content, box, m, bz, mm, h, hc, scale=cov * n / mm)


def _in_room(frame: np.ndarray, held: _Held, border_val: np.ndarray, env: np.ndarray, n: int) -> np.ndarray:
    """The medium's own border (paper margin, screen bezel) around what it shows, and the room around it."""
    ones = np.ones((8, 8), np.float32)
    cover = cv2.warpPerspective(ones, held.h @ np.diag([held.mm / 8, held.mm / 8, 1.0]), (n, n),
                                flags=cv2.INTER_LINEAR)
    inner = cv2.warpPerspective(ones, held.h @ np.array([[held.m / 8, 0, held.bz], [0, held.m / 8, held.bz],
                                                         [0, 0, 1]]),
                                (n, n), flags=cv2.INTER_LINEAR) if held.bz > 0 else cover
    return frame * inner[..., None] + border_val * (cover - inner)[..., None] + env * (1 - cover)[..., None]


def _render_print(t: _Take) -> _Shot:
    """A photo, poster or A4 print: ink tone, then halftone, paper, banding and glare as the camera sees
    them; posters and A4 sheets may bend, so light falls off across them."""
    med, light, n, kind = t.sess["medium"], t.light, t.n, t.sess["kind"]
    held = _hold_up(t, med.get("margin", 0.0))
    shown = print_tone(held.content * light["face"], med)
    frame = cv2.warpPerspective(shown, held.hc, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    frame, pc = print_texture(frame, kind, {**med, "ht_period": med["ht_frame"] / held.scale}, held.h, held.mm,
                              t.blur * (1 + med["defocus"]), held.scale, t.r)
    if kind in (2, 3) and med["bend"] > 0.005:
        ramp = blob_out(held.h, held.mm, n, 0.5, 0.5, 1.2, 4.0, 0.0)
        frame *= (1 - med["bend"] + med["bend"] * ramp)[..., None]
    border = np.array(med["paper_white"], np.float32) * light["face"]
    frame = hold_with_fingers(_in_room(frame, held, border, t.env, n), held.h, held.mm, med, light["face"], t.r)
    return _Shot(frame, warp_box(held.box, held.hc), {"print": 1, **_print_cues(pc)})


def _render_screen(t: _Take) -> _Shot:
    """A replay on a PC, pad or phone: the panel's pixels, its sub-pixel grid (aliasing into moire) and the
    room reflected in the glass; a screen emits its own light, so the room's lighting matters less."""
    med, light, n, r = t.sess["medium"], t.light, t.n, t.r
    held = _hold_up(t, med["bezel"])
    disp = screen_display(held.content, med)
    res = disp.shape[0]
    hs = held.h @ np.array([[held.m / res, 0, held.bz], [0, held.m / res, held.bz], [0, 0, 1]])  # panel px -> frame
    frame = cv2.warpPerspective(disp, hs, (n, n), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    pitch = held.m / res
    a_g = med["grid"] * atten(t.blur * (1 + med["defocus"]), pitch * held.scale)
    if a_g > 0.01:
        sub = pattern_out(subpixel_tile(), P0_SUB, pitch, held.h, n, r)
        frame = frame * ((1 - a_g) + a_g * sub)
    if med.get("band_amp", 0.0) > 0.005:  # rolling-shutter bands of the backlight's flicker (frame rows)
        rows = np.arange(n, dtype=np.float32) * (2 * np.pi / (med["band_px"] * n / 224)) + med["band_phase"]
        frame = frame * (1 + med["band_amp"] * np.sin(rows))[:, None, None]
    refl = screen_reflection(t.env, held.h, held.mm, n, r)
    frame = frame / max(0.5, light["bg"]) ** 0.5 + refl * med["reflect"]
    border = np.full(3, med["bezel_color"] * light["bg"], np.float32)
    cues = {"screen": 1, "moire": int(a_g > 0.06), "glare": int(med["reflect"] > 0.15)}
    frame = hold_with_fingers(_in_room(frame, held, border, t.env, n), held.h, held.mm, med, light["face"], r)
    return _Shot(frame, warp_box(held.box, held.hc), cues)


def _renderer(kind: int) -> Callable[[_Take], _Shot]:
    """Spoof type -> how it is rendered (every type that is not live, a cut-out or a print is a screen)."""
    if kind == 0:
        return _render_live
    if kind in CUTOUTS:
        return _render_cutout
    if kind in PRINTS:
        return _render_print
    return _render_screen


def _label(job: Job, kind: int, attrs: list[int] | None) -> list[int]:
    """The 44 CelebA-Spoof ints: 40 face attributes (rendered live faces only), spoof type, illumination,
    environment, spoof flag (the last three are 0 for live captures, as in CelebA-Spoof)."""
    if job.live:
        return (attrs if attrs is not None else [0] * 40) + [kind, 0, 0, 0]
    sess = job.session
    return [0] * 40 + [kind, sess["illum"], backgrounds.bundled()[1][sess["env_bg"]["idx"]], 1]


def _bb_line(box: tuple[float, float, float, float], n: int, score: float) -> str:
    """A ``_BB.txt`` line: the box in CelebA-Spoof's 224 px reference frame, and a detector-like score."""
    f = 224.0 / n
    x, y, w, hh = box
    return f"{int(round(x * f))} {int(round(y * f))} {int(round(w * f))} {int(round(hh * f))} {score:.7f}\n"


BOX_ATTEMPTS = 3        # renders tried per job before it is dropped
BOX_MIN_INSIDE = 0.9    # fraction of the face box that must lie inside the frame
BOX_MIN_SIDE = 0.1      # smallest face box side, fraction of the frame
USER_PHOTO_GAIN = (0.85, 1.15)   # auto-exposure's range on `--faces` builds (the bona fide photo is kept as taken)
# A box can lie in the frame and still show no face: a dark session under heavy sensor noise. On 1,200
# default renders the noise-free face's luma std had a 1% quantile of 6-24 levels per type and its ratio
# to the sensor noise 0.5-4.7; below these a face is barely there, about 1.7% of renders (issue 11).
FACE_MIN_STD = 6.0      # luma std of the noise-free face box, 8-bit levels
FACE_MIN_SNR = 1.5      # that std over the std of the sensor noise in the box


def face_visible(clean: np.ndarray, noisy: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    """The face box of the written image holds a face, not only noise: the noise-free render's luma
    varies inside the box (:data:`FACE_MIN_STD`) and stands out of the sensor noise (:data:`FACE_MIN_SNR`)."""
    n = clean.shape[0]
    x, y, w, hh = box
    x0, y0 = max(0, int(x)), max(0, int(y))
    x1, y1 = min(n, int(math.ceil(x + w))), min(n, int(math.ceil(y + hh)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return False
    gc = cv2.cvtColor(clean[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY).astype(np.float32)
    gn = cv2.cvtColor(noisy[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY).astype(np.float32)
    std = float(gc.std())
    return std >= FACE_MIN_STD and std >= FACE_MIN_SNR * float((gn - gc).std())


def box_ok(box: tuple[float, float, float, float], n: int) -> bool:
    """The face box lies (almost) inside the frame and is big enough to hold a face crop."""
    x, y, w, hh = box
    if w < BOX_MIN_SIDE * n or hh < BOX_MIN_SIDE * n:
        return False
    ix = max(0.0, min(n, x + w) - max(0.0, x))
    iy = max(0.0, min(n, y + hh) - max(0.0, y))
    return ix * iy >= BOX_MIN_INSIDE * w * hh


def render_frame(job: Job, seed: int, n: int) -> dict:
    """Render one image (pure function of the job, seed and size). Returns JPEG bytes, box line, labels,
    cues and `attempts` (renders tried).

    A render whose face box leaves the frame (:func:`box_ok`) or shows no face (:func:`face_visible`) is
    drawn again from the next rng stream (new frame jitter and pose, same session), up to
    :data:`BOX_ATTEMPTS` times; when none passes, the result says ``dropped`` and the builder leaves the
    job out (both counted in the marker file)."""
    for attempt in range(BOX_ATTEMPTS):
        out = _render_once(job, seed, n, attempt)
        if out["box_ok"] and out["face_visible"]:
            return out
    return {**out, "dropped": True}


def _render_once(job: Job, seed: int, n: int, attempt: int) -> dict:
    sess = job.session
    r = np.random.default_rng([seed, job.subject, job.index] + ([attempt] if attempt else []))
    cam = sess["camera"]
    pose = random_pose(r, Pose(**sess["pose"]))
    blur = cam["blur"] * float(r.uniform(0.85, 1.15)) / native_factor(cam)
    take = _Take(job, seed, n, r, pose, blur, roll=sess["roll"] + pose.roll, jitter=r.normal(0, 0.008, (4, 2)),
                 fcx=0.5 + (sess["frame_cx"] - 0.5) * 0.3, zoom=sess.get("zoom", 1.0) ** (1.0 / (1 + attempt)))
    kind = 0 if job.live else sess["kind"]
    if not job.live:
        eb = sess["env_bg"]
        take.env = backgrounds.crop(eb["idx"], n, eb["zoom"], eb["cx"], eb["cy"], eb["flip"],
                                    eb["blur"] + 1.0) * take.light["bg"]
    shot = _renderer(kind)(take)
    frame = motion_blur(lens_blur(shot.frame, blur), *(cam.get("shake") or (0.0, 0.0)))
    cam_f = {**cam, "exposure": cam["exposure"] * float(r.uniform(0.96, 1.04)),
             "ae_gain": auto_exposure(frame, shot.box, cam)}
    if photo_source():   # a user's photo was exposed by its own camera: re-exposed by +-15% at most, all classes
        cam_f["ae_gain"] = float(np.clip(cam_f["ae_gain"], *USER_PHOTO_GAIN))
    rgb, q, sf = sensor_capture(frame, cam_f, r)
    inside = box_ok(shot.box, n)
    visible = inside and face_visible(sensor_capture(frame, cam_f, None)[0], rgb, shot.box)  # no 2nd capture when out
    low = blur > 1.3 or q < 60 or cam["iso"] * cam["read"] > 0.03 or cam.get("sensor_scale", 1.0) < 0.6
    cues = {**shot.cues, "low_quality": int(low or (cam.get("shake") or (0.0, 0.0))[0] > 3.0)}
    if shot.attrs is not None:
        shot.attrs[ATTR["Blurry"]] = int(blur > 1.3)
    data = encode_jpeg(rgb, q, sf)
    score = 0.9 + 0.0999 * float(r.random())
    return {"jpeg": data, "bb": _bb_line(shot.box, n, score), "label": _label(job, kind, shot.attrs),
            "cues": cue_vector(cues), "attempts": attempt + 1, "box_ok": inside,
            "face_visible": visible, "source": shot.source}
