"""The Fourier auxiliary target of seed 002: the log-magnitude spectrum a texture model's head predicts.

Why: paper halftone, screen sub-pixel grids and moire put energy at specific spatial frequencies that
real skin does not have. Asking an intermediate feature map to predict the face's log-magnitude
spectrum makes the early layers keep that texture information. The loss that asks for it is
`paperkit.losses.fourier_loss_fn`; this module computes what it compares against (and what notebook 02
draws). A detail a public implementation gets wrong: gray = 0.299 R + 0.587 G + 0.114 B on RGB channel
order (our images are RGB; treating them as BGR swaps the red and blue weights).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

GRAY_WEIGHTS_RGB = (0.299, 0.587, 0.114)   # ITU-R BT.601 luma, in R, G, B order

def _mean_std() -> tuple[Sequence[float], Sequence[float]]:
    from paperkit import data  # the normalisation the loaders applied (contract: 0.5, 0.5)

    return data.MEAN, data.STD


def unnormalise(x: torch.Tensor) -> torch.Tensor:
    """Undo the loader's (x - MEAN) / STD: back to RGB in [0, 1] (same device/dtype as x)."""
    mean, std = _mean_std()
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x * s + m


def to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """[N,3,H,W] RGB -> [N,1,H,W] luma with the BT.601 weights applied in RGB order."""
    if rgb.dim() != 4 or rgb.shape[1] != 3:
        raise ValueError(f"expected an [N,3,H,W] RGB batch, got shape {tuple(rgb.shape)}")
    w = torch.as_tensor(GRAY_WEIGHTS_RGB, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb * w).sum(dim=1, keepdim=True)


def log_spectrum(gray: torch.Tensor) -> torch.Tensor:
    """Centred log-magnitude spectrum log(1 + |FFT2|), DC at (H//2, W//2); float32."""
    f = torch.fft.fft2(gray.float())
    f = torch.fft.fftshift(f, dim=(-2, -1))
    return torch.log1p(f.abs())


def spectrum_target(x_normalised: torch.Tensor, out_hw: Sequence[int]) -> torch.Tensor:
    """The head's target for a normalised RGB batch: [N,1,h,w] in [0,1], no gradient.

    Steps: undo normalisation -> RGB gray -> FFT2 -> fftshift -> log(1+|F|) -> per-image min-max ->
    area resize to `out_hw` (the predicting feature map's size). A flat spectrum (constant image
    after min-max has a single peak, so that never divides by zero) maps to zeros.
    """
    with torch.no_grad():
        x = x_normalised.detach().float().contiguous()
        spec = log_spectrum(to_gray(unnormalise(x)))
        n = spec.shape[0]
        flat = spec.view(n, -1)
        lo = flat.min(dim=1).values.view(n, 1, 1, 1)
        hi = flat.max(dim=1).values.view(n, 1, 1, 1)
        spec = (spec - lo) / (hi - lo).clamp_min(1e-8)
        h, w = int(out_hw[0]), int(out_hw[1])
        if spec.shape[-2:] != (h, w):
            spec = F.interpolate(spec, size=(h, w), mode="area")
        return spec.to(x_normalised.dtype)

