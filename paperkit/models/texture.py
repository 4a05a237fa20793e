"""MiniFAS-style texture model with an auxiliary Fourier head (seed 002).

Why this shape: spoof media (paper halftone, screen sub-pixels, moire) leave their mark in fine
texture, so the network keeps full-width early layers cheap (depthwise-separable inverted residual
blocks, MobileNetV2/MiniFASNet style) and spends its channels late, where the map is small. It is
built to deploy as an INT8 ONNX model that is several times faster than MobileNetV2:
- ReLU (not PReLU/ReLU6) by default: ONNX Runtime fuses Conv+ReLU inside QDQ groups, while a PReLU
  would force a dequantize/quantize round trip per activation (PReLU stays available as an option).
- Squeeze-and-excitation only in the last two stages, where its global pool is cheap.
- Global average pooling instead of MiniFASNet's fixed-size global depthwise conv, so any input side
  divisible by 16 works (the smoke profile uses 64, the seeds 128).

The Fourier head (a few convolutions on the stride-8 feature map) predicts the log-magnitude spectrum
of the input face; it is used only by `forward_with_spectrum` during training. `forward` never calls
it, so an exported graph does not contain it (checked in paperkit.deploy).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paperkit.registry import MODELS

HEAD_PREFIX = "fourier_head"   # module-name prefix of the auxiliary head (export asserts it is absent)


def _act(kind: str, channels: int) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "prelu":
        return nn.PReLU(channels)
    raise ValueError(f"unknown activation {kind!r}; use 'relu' or 'prelu'")


def _round(c: float, divisor: int = 8) -> int:
    """Channel counts that are multiples of 8 vectorise well in ORT's INT8 kernels."""
    return max(divisor, int(c + divisor / 2) // divisor * divisor)


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
                 act: str | None = "relu") -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(_act(act, cout))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel re-weighting from global context (MiniFASNetV1SE); hard-sigmoid quantizes cleanly."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        mid = _round(channels / reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, mid, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(mid, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> [SE] -> 1x1 linear project, residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, se: bool, act: str) -> None:
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(cin, mid, 1, act=act))
        layers.append(ConvBNAct(mid, mid, 3, stride, groups=mid, act=act))
        if se:
            layers.append(SqueezeExcite(mid))
        layers.append(ConvBNAct(mid, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


# (expand, out_channels, repeats, first_stride, squeeze_excite); total stride 16 with the stem.
TEXTURE_STAGES: tuple[tuple[int, int, int, int, bool], ...] = (
    (1, 16, 1, 1, False),   # 64x64   (after the stride-2 stem)
    (2, 24, 1, 2, False),   # 32x32   (one cheap block: high-resolution INT8 depthwise is slow in ORT)
    (3, 40, 2, 2, False),   # 16x16  <- Fourier head taps here (stride 8)
    (3, 80, 2, 2, True),    # 8x8
    (3, 112, 2, 1, True),   # 8x8
)
FOURIER_TAP_STAGE = 2      # index into TEXTURE_STAGES of the stage whose output feeds the head


class TextureNet(nn.Module):
    """Small texture classifier: logits [N,2] (index 1 = spoof); `forward_with_spectrum` adds the map."""

    def __init__(self, num_classes: int = 2, width: float = 1.0, act: str = "relu",
                 last_channels: int = 192, dropout: float = 0.2,
                 stages: tuple[tuple[int, int, int, int, bool], ...] = TEXTURE_STAGES,
                 tap_stage: int = FOURIER_TAP_STAGE) -> None:
        super().__init__()
        if sum(1 for st in stages if st[3] == 2) != 3 or stages[tap_stage][3] != 2 or \
                sum(1 for st in stages[: tap_stage + 1] if st[3] == 2) != 2:
            raise ValueError("stages must downsample 3 times (x2 each, total stride 16 with the stem) "
                             "and the Fourier tap must be the stride-8 stage")
        self.tap_stage = tap_stage
        self.width = width
        stem = _round(16 * width)
        self.stem = ConvBNAct(3, stem, 3, 2, act=act)
        built: list[nn.Module] = []
        cin = stem
        self.tap_channels = 0
        for i, (t, c, n, stride, se) in enumerate(stages):
            cout = _round(c * width)
            blocks = [InvertedResidual(cin if j == 0 else cout, cout, stride if j == 0 else 1, t, se, act)
                      for j in range(n)]
            built.append(nn.Sequential(*blocks))
            cin = cout
            if i == tap_stage:
                self.tap_channels = cout
        self.stages = nn.ModuleList(built)
        last = _round(last_channels * max(width, 1.0))
        self.final = ConvBNAct(cin, last, 1, act=act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(last, num_classes))
        hc = self.tap_channels
        # The auxiliary head: only forward_with_spectrum runs it (name prefix checked by export).
        self.fourier_head = nn.Sequential(
            ConvBNAct(hc, hc, 3, act="relu"),
            ConvBNAct(hc, hc // 2, 3, act="relu"),
            nn.Conv2d(hc // 2, 1, 1),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        tap = x
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == self.tap_stage:
                tap = x
        return x, tap

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.final(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, _ = self._features(x)
        return self._classify(feats)

    def forward_with_spectrum(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the predicted spectrum [N,1,H/8,W/8] (sigmoid: the target lies in [0,1])."""
        feats, tap = self._features(x)
        spec = torch.sigmoid(self.fourier_head(tap))
        return self._classify(feats), spec

    def spectrum_size(self, input_size: int) -> tuple[int, int]:
        """Side of the head's output for a square input (the tap is at stride 8)."""
        s = input_size
        for _ in range(3):
            s = (s + 1) // 2
        return s, s

    def deploy_parameters(self) -> int:
        """Parameters that run at inference (the Fourier head is training-only)."""
        head = sum(p.numel() for p in self.fourier_head.parameters())
        return sum(p.numel() for p in self.parameters()) - head


TEXTURE_METADATA: dict[str, Any] = {
    "family": "texture",
    "seed": "002",
    "input_size": 128,
    "num_classes": 2,
    "max_params": 500_000,
    "has_fourier_head": True,
    "description": "MiniFAS-style depthwise-separable CNN with SE and an auxiliary Fourier head",
}


@MODELS.register("texture_net")
def texture_net(num_classes: int = 2, width: float = 1.0, **kw: Any) -> TextureNet:
    """The seed-002 texture model (registered as 'texture_net')."""
    return TextureNet(num_classes=num_classes, width=width, **kw)


texture_net.metadata = TEXTURE_METADATA  # type: ignore[attr-defined]
