"""A user's own bona fide photos as identities (``paperkit data synth --faces DIR``).

Each sub-folder of DIR is one identity, each loose photo is one. Faces are found with the Haar cascade
(:func:`paperkit.detect.haar_boxes`), whose box the placement in :mod:`paperkit.synth.scene` is tuned to,
and cropped generously; attacks are then simulated on them exactly as on rendered faces.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from paperkit.detect import haar_boxes
from paperkit.predict import IMAGE_SUFFIXES


@dataclass
class PhotoFace:
    """A user's bona fide photo, cropped around the face found by the Haar cascade."""
    rgb: np.ndarray            # float32 RGB
    box: tuple[int, int, int, int]


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


def _photo_groups(root: Path) -> list[tuple[str, list[Path]]]:
    """(identity name, its photo files): one per sub-folder (searched at any depth) and one per loose photo."""
    groups: list[tuple[str, list[Path]]] = []
    for p in sorted(root.iterdir()):
        if p.is_dir():
            files = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
            if files:
                groups.append((p.name, files))
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            groups.append((p.stem, [p]))
    return groups


def _face_crop(img: np.ndarray, box: tuple[int, int, int, int]) -> PhotoFace:
    """A generous crop around the face, at most ~4 face widths and 600 px, with the box moved into it."""
    x, y, w, h = box
    side = int(max(w, h) * 4)
    cx, cy = x + w // 2, y + h // 2
    x0, y0 = max(0, cx - side // 2), max(0, cy - side // 2)
    crop = img[y0:y0 + side, x0:x0 + side]
    f2 = min(1.0, 600.0 / max(crop.shape[:2]))
    if f2 < 1:
        crop = cv2.resize(crop, (int(crop.shape[1] * f2), int(crop.shape[0] * f2)), interpolation=cv2.INTER_AREA)
    return PhotoFace(crop.astype(np.float32) / 255,
                     (int((x - x0) * f2), int((y - y0) * f2), int(w * f2), int(h * f2)))


def load_face_photos(faces_dir: str | os.PathLike) -> tuple[list[list[PhotoFace]], list[str], int]:
    """Identities from a folder of bona fide photos: each sub-folder is one identity, each loose photo is one.

    Returns (identities, names, photos_without_face). Raises a clear error when the folder is missing,
    empty, or no photo contains a face the Haar cascade can find.
    """
    root = Path(faces_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--faces {root}: folder not found; pass a folder of bona fide face photos "
                                f"(one identity per photo or per sub-folder)")
    groups = _photo_groups(root)
    if not groups:
        raise FileNotFoundError(f"--faces {root}: no photos ({', '.join(IMAGE_SUFFIXES)}) found; add bona fide "
                                f"face photos (one identity per photo or per sub-folder)")
    idents, names, no_face, unreadable = [], [], 0, 0
    for name, files in groups:
        shots = []
        for f in files:
            img = read_rgb(f)
            if img is None:
                unreadable += 1
                continue
            found = haar_boxes(img)
            if not found:
                no_face += 1
                continue
            shots.append(_face_crop(img, found[0]))
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
