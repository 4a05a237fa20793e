"""The bona fide scene in front of the camera, before any medium or capture: a rendered person over a
background crop, or one of the user's own photos (``--faces``) placed where a rendered face would be.

Which source a process uses is set once per process (:func:`init_worker`, the pool initializer), so jobs
stay small when they travel to the workers.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict
from functools import lru_cache
from typing import Iterator

import cv2
import numpy as np

from . import backgrounds, photoface
from .identity import ATTR, Identity, Pose, make_identity
from .person import Marks, render_person
from .photos import PhotoFace

Scene = tuple[np.ndarray, np.ndarray, tuple, Marks, list[int] | None]  # rgb, alpha, box, marks, attributes


class _Sources:
    """Per-process identity source, set by the pool initializer (user photos) or empty (rendered)."""
    photos: list[list[PhotoFace]] | None = None
    # the last user photo placed in this process: (photo index within the identity, 2x3 photo px -> scene px);
    # read right after render_subject by the live capture, which reports where the source photo landed
    last_placement: tuple[int, np.ndarray] | None = None


def init_worker(photos: list[list[PhotoFace]] | None) -> None:
    """Pool initializer (and the in-process equivalent): serial OpenCV, and this process's photos."""
    cv2.setNumThreads(1)
    _Sources.photos = photos


@contextmanager
def in_process(photos: list[list[PhotoFace]] | None) -> Iterator[None]:
    """This process renders a build's jobs itself (no pool); the previous source is restored after."""
    prev = _Sources.photos
    init_worker(photos)
    try:
        yield
    finally:
        _Sources.photos = prev


# Identities that are bundled portraits (photoface); the others are drawn (person). Off by default: with only
# two bundled portraits, photographic identities made transfer to real photos worse, not better (texture
# model, 31-photo internal check, one training seed each: fraction 1.0 AUC 0.33-0.43, 0.5 AUC 0.45-0.80,
# 0.0 AUC 0.89 with the same attack and camera model). Raise it when more portraits can be bundled.
PHOTO_FRACTION = 0.0


@lru_cache(maxsize=4096)
def _photographic(seed: int, subject: int) -> bool:
    """Whether identity `subject` is a photograph. Only a few portraits are bundled, so photographs alone
    make the bona fide class a handful of faces (any real face then looks 'not live'); drawn identities
    add variety. Live and attack images of one identity always come from the same source."""
    if not photoface.available():
        return False
    return bool(np.random.default_rng([seed, subject, 7_300_013]).random() < PHOTO_FRACTION)


@lru_cache(maxsize=4)
def _unit_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    return xx, yy


@lru_cache(maxsize=256)
def _identity(seed: int, subject: int) -> Identity:
    return make_identity(seed, subject)


def render_subject(seed: int, subject: int, pose: Pose, bg: dict, n: int, r: np.random.Generator,
                   lighting: dict) -> Scene:
    """A bona fide scene (person over background) before the camera: rgb, alpha, box, marks, attrs.

    Identities are photographic (:mod:`paperkit.synth.photoface`) when a bundled portrait is available,
    procedural drawings otherwise. Attributes are the 40 CelebA bits of the identity, None for a user's
    photo (unknown)."""
    if _Sources.photos is None:
        if _photographic(seed, subject):
            face, names = photoface.identity_photo(seed, subject)
            scene, alpha, box, marks, _ = _photo_scene([face], pose, n, r, lighting, bg=bg, shade=True)
            attrs = [0] * 40
            for a in names:
                attrs[ATTR[a]] = 1
            return scene, alpha, box, marks, attrs
        return _rendered_scene(seed, subject, pose, bg, n, r, lighting)
    # a user's photo is kept as taken: the session's light only moves its exposure within what a camera's
    # auto-exposure leaves (+-15%, gamma 0.9-1.1), and the frame around it is the session background
    kept = {**lighting, "face": float(np.clip(lighting["face"], 0.85, 1.15)),
            "gamma": float(np.clip(lighting["gamma"], 0.9, 1.1))}
    return _photo_scene(_Sources.photos[subject], pose, n, r, kept, bg=bg)


def last_placement() -> tuple[int, np.ndarray] | None:
    """Where the last user photo rendered in this process went: (its index in the identity, 2x3 map)."""
    return _Sources.last_placement


def _rendered_scene(seed: int, subject: int, pose: Pose, bg: dict, n: int, r: np.random.Generator,
                    lighting: dict) -> Scene:
    ident = _identity(seed, subject)
    p = Pose(**{**asdict(pose), "light": pose.light * lighting["face"], "ambient": pose.ambient * lighting["face"]})
    person, alpha, box, marks = render_person(ident, p, n, r)
    back = backgrounds.crop(bg["idx"], n, bg["zoom"], bg["cx"], bg["cy"], bg["flip"], bg["blur"]) * lighting["bg"]
    a = alpha[..., None]
    scene = (person * a + back * (1 - a)) * np.array(pose.tint, np.float32)
    attrs = ident.attributes(pose.smile > 0.5, pose.mouth_open > 0.3, False)
    return scene, alpha, box, marks, attrs


def _photo_scene(shots: list[PhotoFace], pose: Pose, n: int, r: np.random.Generator, lighting: dict,
                 bg: dict | None = None, shade: bool = False) -> Scene:
    """One of the identity's photos, scaled and shifted so its Haar face box sits where a rendered face
    would (randomly mirrored); the face ellipse and body below it stand in for the person's alpha.

    Where the photo does not reach the frame, the frame edge is the photo's own edge pixels (user photos)
    or the session background `bg` behind a soft edge, never a mirrored copy of the photo. `shade` adds the
    pose's key light as a soft gradient across the face (bundled portraits only: a user's photo is kept)."""
    k = int(r.integers(len(shots)))
    ph = shots[k]
    x, y, w, h = ph.box
    face_w = 2.0 * pose.scale * n
    sc = face_w / (w * 0.95)
    fcx, fcy = x + w / 2, y + h * 0.55
    flip = bool(r.random() < 0.5)
    m = np.array([[sc, 0, pose.cx * n - fcx * sc], [0, sc, pose.cy * n - fcy * sc]], np.float64)
    if flip:  # mirror the photo about its face centre, so the face stays where the box says
        m = m @ np.array([[-1, 0, 2 * fcx], [0, 1, 0], [0, 0, 1]], np.float64)
    _Sources.last_placement = (k, m)
    scene = cv2.warpAffine(ph.rgb, m, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if bg is not None:
        cover = cv2.warpAffine(np.ones(ph.rgb.shape[:2], np.float32), m, (n, n), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT)
        if cover.min() < 0.999:
            cover = cv2.GaussianBlur(cv2.erode(cover, np.ones((5, 5), np.uint8)), (0, 0), 2.0)[..., None]
            back = backgrounds.crop(bg["idx"], n, bg["zoom"], bg["cx"], bg["cy"], bg["flip"], bg["blur"])
            scene = scene * cover + back * lighting["bg"] * (1 - cover)
    if shade:
        lx, ly = pose.light_dir
        xx, yy = _unit_grid(n)
        ramp = 1 + 0.5 * pose.light * ((xx - pose.cx) * lx + (yy - pose.cy) * ly) / max(pose.scale, 0.05) * 0.5
        scene = scene * np.clip(ramp, 0.55, 1.35)[..., None] * np.array(pose.tint, np.float32)
    scene = np.power(np.clip(scene, 0, 1), lighting["gamma"]) * lighting["face"]
    bx = pose.cx * n - w * sc / 2
    by = pose.cy * n - h * sc * 0.55
    box = (bx, by, w * sc, h * sc)
    cx, cy, rx, ry = pose.cx * n, pose.cy * n, w * sc * 0.45, h * sc * 0.62
    marks = Marks(eyes=((cx - rx * 0.42, cy - ry * 0.2), (cx + rx * 0.42, cy - ry * 0.2)),
                  mouth=(cx, cy + ry * 0.52), eye_r=rx * 0.25, mouth_r=(rx * 0.4, ry * 0.15), face=(cx, cy, rx, ry))
    alpha = np.zeros((n, n), np.float32)
    cv2.ellipse(alpha, (int(cx), int(cy)), (int(rx * 1.25), int(ry * 1.25)), 0, 0, 360, 1.0, -1)
    cv2.ellipse(alpha, (int(cx), int(cy + ry * 2.4)), (int(rx * 2.8), int(ry * 1.4)), 0, 0, 360, 1.0, -1)
    return scene, alpha, box, marks, None


def photo_source() -> bool:
    """This process renders a user's photos (``--faces``), not bundled or drawn identities."""
    return _Sources.photos is not None
