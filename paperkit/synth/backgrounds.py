"""Backgrounds: real photographs bundled inside installed packages (no download), and crops of them.

Grayscale photos are tinted so walls and paper are not all neutral gray; without any bundled photo the
renderer falls back to procedural gradients (with a warning).
"""
from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from .photos import read_rgb

# Real photographs shipped inside installed wheels (no download): (package, file, environment 1 indoor/2 outdoor).
# Images showing a human face (astronaut, camera, grace_hopper) are excluded: a second face confuses the box.
_BACKGROUNDS = [
    ("skimage", "coffee.png", 1), ("skimage", "chelsea.png", 1), ("skimage", "motorcycle_left.png", 1),
    ("skimage", "motorcycle_right.png", 1), ("skimage", "page.png", 1), ("skimage", "clock_motion.png", 1),
    ("skimage", "coins.png", 1), ("skimage", "text.png", 1), ("skimage", "rocket.jpg", 2), ("skimage", "brick.png", 2),
    ("skimage", "grass.png", 2), ("skimage", "gravel.png", 2), ("skimage", "hubble_deep_field.jpg", 2),
    ("matplotlib", "Minduka_Present_Blue_Pack.png", 1),
]


def package_file(package: str, name: str) -> Path | None:
    """A sample image an installed package ships (skimage.data, matplotlib sample_data), or None."""
    try:
        if package == "skimage":
            import skimage.data as d
            p = Path(d.__file__).parent / name
        else:
            import matplotlib
            p = Path(matplotlib.get_data_path()) / "sample_data" / name
    except Exception:  # package missing or broken: fall back to procedural backgrounds
        return None
    return p if p.is_file() else None


def _read_bundled(p: Path) -> np.ndarray | None:
    """Read a bundled photo as uint8 RGB; Pillow first (quiet about odd ICC profiles), OpenCV as fallback."""
    try:
        from PIL import Image
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except Exception:
        return read_rgb(p)


@lru_cache(maxsize=1)
def bundled() -> tuple[list[np.ndarray], list[int], list[str]]:
    """Load the bundled photographs once per process as float32 RGB (max side 512), with environments.

    Grayscale photos are tinted with a fixed colour so walls and paper are not all neutral gray.
    Falls back to procedural gradients + noise (with a warning) if no photograph is available.
    """
    imgs, envs, names = [], [], []
    tints = [(1.0, 0.92, 0.8), (0.85, 0.95, 1.05), (1.0, 1.0, 0.9), (0.9, 1.0, 0.9)]
    for i, (pkg, name, env) in enumerate(_BACKGROUNDS):
        p = package_file(pkg, name)
        if p is None:
            continue
        im = _read_bundled(p)
        if im is None or min(im.shape[:2]) < 64:
            continue
        f = 512.0 / max(im.shape[:2])
        if f < 1:
            im = cv2.resize(im, (int(im.shape[1] * f), int(im.shape[0] * f)), interpolation=cv2.INTER_AREA)
        x = im.astype(np.float32) / 255
        if np.abs(x[..., 0] - x[..., 1]).mean() < 0.01:
            x = x * np.array(tints[i % len(tints)], np.float32)
        imgs.append(np.ascontiguousarray(x))
        envs.append(env)
        names.append(f"{pkg}:{name}")
    if not imgs:
        warnings.warn("paperkit.synth: no bundled photographs found (scikit-image / matplotlib sample data); "
                      "using procedural backgrounds. Install scikit-image to get real backgrounds.", stacklevel=2)
        r = np.random.default_rng(12345)
        for k in range(8):
            yy, xx = np.mgrid[0:256, 0:256].astype(np.float32) / 256
            base = r.uniform(0.2, 0.8, 3).astype(np.float32)
            g = base + (xx[..., None] - 0.5) * r.uniform(-0.4, 0.4, 3) + (yy[..., None] - 0.5) * r.uniform(-0.4, 0.4, 3)
            g += cv2.resize(r.standard_normal((16, 16, 3)).astype(np.float32), (256, 256)) * 0.08
            imgs.append(np.clip(g, 0, 1).astype(np.float32))
            envs.append(1 + k % 2)
            names.append(f"procedural:{k}")
    return imgs, envs, names


def crop(idx: int, size: int, zoom: float, cx: float, cy: float, flip: bool, blur: float) -> np.ndarray:
    """A square crop of background `idx` (relative centre cx, cy in [0,1], side = zoom * short side)."""
    img = bundled()[0][idx]
    h, w = img.shape[:2]
    side = max(8.0, min(h, w) * zoom)
    x0 = (w - side) * cx
    y0 = (h - side) * cy
    sc = size / side
    m = np.array([[sc, 0, -x0 * sc], [0, sc, -y0 * sc]], np.float64)
    if flip:
        m = np.array([[-1, 0, size - 1], [0, 1, 0]], np.float64) @ np.vstack([m, [0, 0, 1]])
    out = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if blur > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    return out
