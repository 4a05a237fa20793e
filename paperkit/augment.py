"""Training-time augmentation of a face crop (seed 000: colour jitter, ISO noise, horizontal flip). The
box-scale and shift jitter that chooses the crop comes before, in :func:`paperkit.crop.jitter_box`.

Every random draw comes from the generator passed in (:func:`paperkit.data.sample_rng`), so an augmented
sample is reproducible from (seed, epoch, index) whatever the DataLoader worker layout.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

# Training-time augmentation (seed 000: "colour jitter and ISO-noise"; the paper gives no strengths, these
# are moderate values that keep medium cues such as moire and halftone visible).
JITTER = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.02}
ISO_NOISE_P = 0.5
ISO_INTENSITY = (0.1, 0.5)     # scales luminance (shot + read) noise
ISO_COLOR_SHIFT = (0.01, 0.05)  # scales chroma noise, as a fraction of full scale
FLIP_P = 0.5
# Capture tone (not in seed 000): real photos arrive over- and under-exposed, through other tone curves and
# with lifted or crushed blacks, whatever their class. Without this the v6 texture model called a photo
# spoof more often the brighter it was (robustness card: +20 levels took synthetic BPCER from 17% to 40%;
# real bona fide close-ups that were overexposed scored 0.5-0.99).
TONE_P = 0.5
TONE_GAIN = (0.6, 1.8)        # exposure, drawn log-uniform; highlights clip as a sensor's do
TONE_GAMMA = (0.65, 1.5)      # display/ISP tone curve, drawn log-uniform
TONE_OFFSET = 30.0            # black level moved by up to +-30 levels (haze, flare, crushed shadows)


def _adjust_hue(img: np.ndarray, shift: float) -> np.ndarray:
    """Hue rotation by ``shift`` turns (|shift| <= 0.5) in OpenCV's 8-bit full-range HSV: ~20x faster
    than torchvision's float HSV round trip on uint8 crops, and within one hue step of it."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL)
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(round(shift * 256))).astype(np.uint8)  # wraps mod 256
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)


def color_jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness/contrast/saturation/hue jitter in random order (as torchvision's ColorJitter).

    Brightness, contrast and saturation use torchvision.transforms.v2's maintained functional ops on a
    uint8 tensor; hue uses OpenCV's HSV (torchvision's hue op costs ~3 ms per 128 px crop, more than the
    rest of the pipeline). Factors come from our per-sample generator so an augmented sample is
    reproducible from (seed, epoch, index) whatever the worker layout."""
    from torchvision.transforms.v2 import functional as TF
    ops = [(name, float(rng.uniform(1 - JITTER[name], 1 + JITTER[name])))
           for name in ("brightness", "contrast", "saturation") if JITTER[name] > 0]
    if JITTER["hue"] > 0:
        ops.append(("hue", float(rng.uniform(-JITTER["hue"], JITTER["hue"]))))
    fns = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast, "saturation": TF.adjust_saturation}
    out = np.ascontiguousarray(img)
    t = None   # tensor view while consecutive torchvision ops run, converted back only for hue
    for i in rng.permutation(len(ops)):
        name, f = ops[i]
        if name == "hue":
            if t is not None:
                out, t = t.permute(1, 2, 0).contiguous().numpy(), None
            out = _adjust_hue(out, f)
        else:
            if t is None:
                t = torch.from_numpy(out).permute(2, 0, 1)
            t = fns[name](t, f)
    if t is not None:
        out = t.permute(1, 2, 0).contiguous().numpy()
    return out


_SHOT_SIGMA = (2.0 + 0.6 * np.sqrt(np.arange(256, dtype=np.float32))).astype(np.float32)  # per luma level


def iso_noise(img: np.ndarray, rng: np.random.Generator, intensity: float, color_shift: float) -> np.ndarray:
    """Camera sensor (ISO) noise, written here because no maintained implementation is installed.

    Luminance noise = read-noise floor + photon shot noise whose std grows with sqrt(signal) (a lookup on
    the pixel's luma, in 8-bit levels, times ``intensity``), identical in the three channels; chroma noise
    = independent per-channel noise of std ``color_shift`` x 127.5 generated at half resolution and
    upsampled, because demosaicing makes real colour noise blotchy rather than per-pixel."""
    h, w = img.shape[:2]
    lum = rng.standard_normal((h, w), dtype=np.float32)
    lum *= _SHOT_SIGMA[cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)]
    lum *= intensity
    chroma = rng.standard_normal(((h + 1) // 2, (w + 1) // 2, 3), dtype=np.float32)
    x = cv2.resize(chroma, (w, h), interpolation=cv2.INTER_LINEAR)
    x *= color_shift * 127.5
    x += lum[..., None]
    x += img
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def tone(img: np.ndarray, gain: float, gamma: float, offset: float) -> np.ndarray:
    """One 8-bit lookup: exposure gain (clipping), then a tone curve, then a black-level offset that
    fades out towards white (a lifted black does not lift the highlights past 255)."""
    x = np.clip(np.arange(256, dtype=np.float32) / 255.0 * gain, 0.0, 1.0) ** gamma
    x = x * 255.0 + offset * (1.0 - x)
    return cv2.LUT(img, np.clip(np.rint(x), 0, 255).astype(np.uint8))


def random_tone(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gain = float(np.exp(rng.uniform(*np.log(TONE_GAIN))))
    gamma = float(np.exp(rng.uniform(*np.log(TONE_GAMMA))))
    return tone(img, gain, gamma, float(rng.uniform(-TONE_OFFSET, TONE_OFFSET)))


def augment(crop: np.ndarray, rng: np.random.Generator, tone_jitter: bool = True) -> np.ndarray:
    """Training transforms of seed 000 on a face crop: colour jitter, ISO noise (p=0.5), horizontal flip;
    before them, when ``tone_jitter``, a capture tone change with probability :data:`TONE_P`
    (:func:`random_tone`; ``tone_jitter=False`` draws exactly what seed 000's recipe draws)."""
    out = random_tone(crop, rng) if tone_jitter and rng.random() < TONE_P else crop
    out = color_jitter(out, rng)
    if rng.random() < ISO_NOISE_P:
        out = iso_noise(out, rng, float(rng.uniform(*ISO_INTENSITY)), float(rng.uniform(*ISO_COLOR_SHIFT)))
    if rng.random() < FLIP_P:
        out = np.ascontiguousarray(out[:, ::-1])
    return out

