"""Texture model (seed 002) and the Fourier target/loss: shapes, budget, known spectra."""
from __future__ import annotations

import math

import pytest
import torch

from paperkit import fourier
from paperkit.models.texture import TextureNet, texture_net
from paperkit.registry import MODELS


def test_registered_with_metadata_and_budget() -> None:
    assert "texture_net" in MODELS
    m = MODELS.get("texture_net")(num_classes=2)
    assert isinstance(m, TextureNet)
    assert texture_net.metadata["max_params"] == 500_000
    # every parameter, head included, within the 0.5 M budget
    assert sum(p.numel() for p in m.parameters()) <= 500_000
    assert m.deploy_parameters() < sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("size", [64, 96, 128])
def test_shapes(size: int) -> None:
    m = texture_net().eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits = m(x)
        logits2, spec = m.forward_with_spectrum(x)
    assert logits.shape == (2, 2)
    assert torch.allclose(logits, logits2)          # the head does not change the classifier path
    assert spec.shape == (2, 1, *m.spectrum_size(size)) == (2, 1, size // 8, size // 8)
    assert spec.min() >= 0 and spec.max() <= 1


def test_forward_does_not_run_the_head() -> None:
    m = texture_net().eval()
    called = []
    m.fourier_head.register_forward_hook(lambda *a: called.append(1))
    with torch.no_grad():
        m(torch.randn(1, 3, 64, 64))
    assert not called


def _normalise(rgb01: torch.Tensor) -> torch.Tensor:
    return (rgb01 - 0.5) / 0.5   # paperkit.data.MEAN/STD


def test_cosine_grating_peaks_at_its_frequency() -> None:
    n, k = 64, 6                  # k cycles across the width -> peaks at (n/2, n/2 +- k)
    xx = torch.arange(n).float()
    img = 0.5 + 0.4 * torch.cos(2 * math.pi * k * xx / n)
    rgb = img.view(1, 1, 1, n).expand(1, 3, n, n)
    spec = fourier.spectrum_target(_normalise(rgb), (n, n))[0, 0]
    assert spec.shape == (n, n)
    assert spec.min() == 0 and spec.max() == pytest.approx(1.0)
    c = n // 2
    assert spec[c, c] == pytest.approx(1.0)          # DC is the largest term of a positive image
    off = spec.clone()
    off[c, c] = 0
    top2 = {tuple(divmod(int(i), n)) for i in off.flatten().topk(2).indices}
    assert top2 == {(c, c - k), (c, c + k)}
    # vertical grating -> peaks move to the vertical axis
    specv = fourier.spectrum_target(_normalise(rgb.transpose(2, 3)), (n, n))[0, 0]
    specv[c, c] = 0
    assert {tuple(divmod(int(i), n)) for i in specv.flatten().topk(2).indices} == {(c - k, c), (c + k, c)}


def test_constant_image_has_only_dc_at_centre() -> None:
    rgb = torch.full((2, 3, 32, 32), 0.7)
    spec = fourier.spectrum_target(_normalise(rgb), (32, 32))
    for s in spec[:, 0]:
        assert s[16, 16] == 1.0
        assert s.sum() == pytest.approx(1.0)
    # area resize keeps the DC bump centred
    small = fourier.spectrum_target(_normalise(rgb), (4, 4))[0, 0]
    assert small.shape == (4, 4)
    assert small.argmax().item() == 2 * 4 + 2


def test_gray_uses_rgb_channel_order() -> None:
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    blue = torch.zeros(1, 3, 2, 2)
    blue[:, 2] = 1.0
    assert fourier.to_gray(red).flatten()[0] == pytest.approx(0.299)
    assert fourier.to_gray(blue).flatten()[0] == pytest.approx(0.114)
    # end to end: a red grating on gray has 0.299/0.114 times the AC energy of a blue one
    n, k = 32, 4
    g = torch.cos(2 * math.pi * k * torch.arange(n).float() / n).view(1, n).expand(n, n)
    def amp(ch: int) -> float:
        rgb = torch.full((1, 3, n, n), 0.5)
        rgb[0, ch] += 0.3 * g
        return torch.fft.fft2(fourier.to_gray(fourier.unnormalise(_normalise(rgb)))).abs()[0, 0, 0, k].item()
    assert amp(0) / amp(2) == pytest.approx(0.299 / 0.114, rel=1e-4)


def test_target_follows_the_augmented_batch() -> None:
    """The target is computed from the batch given (what the classifier sees), not from elsewhere."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    flipped = torch.flip(x, dims=[3])
    a = fourier.spectrum_target(x, (32, 32))
    b = fourier.spectrum_target(flipped, (32, 32))
    assert not torch.allclose(a, b)
    # channels_last input (the training loop's layout) gives the same target
    c = fourier.spectrum_target(x.contiguous(memory_format=torch.channels_last), (32, 32))
    assert torch.allclose(a, c)


def test_fourier_loss_trains_the_head() -> None:
    torch.manual_seed(0)
    m = texture_net().train()
    x = torch.randn(4, 3, 64, 64)
    y = torch.tensor([0, 1, 0, 1])
    loss_fn = fourier.fourier_loss_fn(weight=2.0)
    loss, logits = loss_fn(m, x, y, torch.full((4, 7), -1))
    assert logits.shape == (4, 2) and loss.dim() == 0
    loss.backward()
    assert m.fourier_head[0][0].weight.grad is not None
    assert m.fourier_head[0][0].weight.grad.abs().sum() > 0
    ce_only, _ = fourier.fourier_loss_fn(weight=0.0)(m, x, y, None)
    assert loss.item() > ce_only.item()
    with pytest.raises(ValueError):
        fourier.fourier_loss_fn(-1.0)

