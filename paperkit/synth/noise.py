"""Noise for the renderer: fixed-seed texture banks (skin pores, hair strands, paper fibres, sensor noise)
sliced at random offsets, and smooth low-frequency noise.

Why banks: drawing fresh normal noise costs ~1 ms per 224 px plane on the target CPU; slicing a cached
plane at a per-image random offset (a million positions) is free and equally deterministic.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

BANK = 1024  # side of every bank plane (px)


@lru_cache(maxsize=None)
def noise_bank(kind: str) -> np.ndarray:
    """One fixed-seed noise plane per kind: white (N(0,1)), pore (slightly blurred), strand (vertical
    streaks), paper (fine grain plus short streaks), white3 (3 channels)."""
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


def smooth_noise(r: np.random.Generator, size: int, scale: int) -> np.ndarray:
    """Smooth noise with feature size ~`scale` px (upsampled low-res normal noise)."""
    n = max(2, size // max(1, scale) + 2)
    low = r.standard_normal((n, n), dtype=np.float32)
    return cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
