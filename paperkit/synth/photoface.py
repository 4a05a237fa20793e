"""Photographic identities: real face photographs bundled in installed packages, varied per identity.

Why: a model trained on drawn faces learns the drawing style (flat shading, outlined features), and on
real photos it meets skin texture, soft shading and sensor detail it never saw, in bona fide faces and in
attacks alike. Here every identity, live or shown by an attack, is a *photograph* of a face: one of the
portraits shipped inside scikit-image / matplotlib, made into a distinct identity by a smooth random warp
of its shape (face width, jaw, feature placement), a skin-tone and exposure shift in Lab, and a mirror.
Live captures and attack contents come from the same identity photo, so only the attack cues differ.

Only a few portraits are bundled, so identities share base faces: this is fine for anti-spoofing (the
label never depends on who is shown) but not for face recognition. Without any bundled portrait the
caller falls back to the procedural renderer.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from .backgrounds import package_file
from .photos import PhotoFace

# (package, file, CelebA attributes set to 1): portraits whose face fills a good part of the frame
_PORTRAITS = [
    ("skimage", "astronaut.png",
     ("Smiling", "Mouth_Slightly_Open", "Young", "Wearing_Lipstick", "No_Beard", "Brown_Hair")),
    ("matplotlib", "grace_hopper.jpg", ("Gray_Hair", "No_Beard", "Wavy_Hair")),
]


@lru_cache(maxsize=1)
def portraits() -> tuple[tuple[PhotoFace, tuple[str, ...]], ...]:
    """The bundled portraits, each cropped around its (Haar) face, as float32 RGB with the face box."""
    from paperkit.detect import haar_boxes

    from .backgrounds import _read_bundled
    from .photos import _face_crop
    out = []
    for pkg, name, attrs in _PORTRAITS:
        p = package_file(pkg, name)
        img = _read_bundled(p) if p is not None else None
        if img is None:
            continue
        found = haar_boxes(img)
        if found:
            out.append((_extend(_face_crop(img, found[0])), attrs))
    return tuple(out)


def _extend(face: PhotoFace) -> PhotoFace:
    """The portrait continued past its edges as a defocused background (edge pixels, blurred more with the
    distance from the photo), so a capture framed wider than the portrait never shows a pasted rectangle."""
    h, w = face.rgb.shape[:2]
    pad = int(0.5 * max(h, w))
    big = cv2.copyMakeBorder(face.rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    soft = cv2.GaussianBlur(big, (0, 0), pad / 8)
    yy, xx = np.mgrid[0:big.shape[0], 0:big.shape[1]].astype(np.float32)
    dx = np.maximum(np.maximum(pad - xx, xx - (pad + w - 1)), 0)
    dy = np.maximum(np.maximum(pad - yy, yy - (pad + h - 1)), 0)
    wt = np.clip(np.sqrt(dx * dx + dy * dy) / (0.15 * pad), 0, 1)[..., None]
    x, y, bw, bh = face.box
    return PhotoFace((big * (1 - wt) + soft * wt).astype(np.float32), (x + pad, y + pad, bw, bh))


def available() -> bool:
    return len(portraits()) > 0


@lru_cache(maxsize=256)
def identity_photo(seed: int, subject: int) -> tuple[PhotoFace, tuple[str, ...]]:
    """Identity `subject`'s own photo: a bundled portrait, warped and re-toned (pure function of seed, subject)."""
    r = np.random.default_rng([seed, subject, 7_300_011])
    base, attrs = portraits()[int(r.integers(len(portraits())))]
    img = base.rgb
    h, w = img.shape[:2]
    x, y, bw, bh = base.box
    fcx, fcy = x + bw / 2, y + bh / 2
    # shape: a smooth displacement field concentrated on the face (scale ~ a third of the face)
    k = 6
    amp = 0.045 * bw
    dx = cv2.resize(r.normal(0, amp, (k, k)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(r.normal(0, amp, (k, k)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wgt = np.exp(-(((xx - fcx) / (1.3 * bw)) ** 2 + ((yy - fcy) / (1.5 * bh)) ** 2))
    sx, sy = float(r.uniform(0.88, 1.12)), float(r.uniform(0.92, 1.08))  # face width / height
    map_x = (fcx + (xx - fcx) / sx + dx * wgt).astype(np.float32)
    map_y = (fcy + (yy - fcy) / sy + dy * wgt).astype(np.float32)
    out = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # tone: skin / hair colour and exposure shift in Lab (the same shift over the whole photo)
    lab = cv2.cvtColor(np.clip(out, 0, 1), cv2.COLOR_RGB2LAB)
    lab[..., 0] = np.clip(lab[..., 0] * float(r.uniform(0.85, 1.1)) + float(r.uniform(-6, 6)), 0, 100)
    lab[..., 1] += float(r.uniform(-6, 8))
    lab[..., 2] += float(r.uniform(-8, 10))
    out = np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), 0, 1).astype(np.float32)
    box = (int(fcx - bw * sx / 2), int(fcy - bh * sy / 2), int(bw * sx), int(bh * sy))
    if r.random() < 0.5:
        out = np.ascontiguousarray(out[:, ::-1])
        box = (w - box[0] - box[2], box[1], box[2], box[3])
    return PhotoFace(out, box), attrs
