"""MobileNetV2 with Post-Train Adaptive (PTA) blocks (seed 000, its Table 1; docs/design.md section 3).

A PTA block replaces a pair of inverted residual blocks by two branches: *heavy* (that very pair)
and *light* (one inverted residual block). Which branch runs is chosen at run time per block with
`model.configure("LHH")` (H = heavy, L = light, B = both, outputs averaged so the feature
distribution stays the same). Switching only flips a flag: no weights are copied or rebuilt, so one
trained model serves every device tier. Training samples a configuration per step with the seed's
Table 2 probabilities (`PTA_TRAIN_PROBS`, never B).

Layout follows torchvision's `mobilenetv2.py` (whose `InvertedResidual` is reused as is): the
`features` Sequential has the same 16 entries as torchvision's MobileNetV2, entries 9, 11 and 13
being the PTA blocks, so the No-PTA and the PTA model differ only where the paper says they do.
"""
from __future__ import annotations

from typing import Callable, Literal, Optional

import torch
from torch import Tensor, nn
from torchvision.models.mobilenetv2 import InvertedResidual, mobilenet_v2
from torchvision.models._utils import _make_divisible
from torchvision.ops.misc import Conv2dNormActivation

from paperkit.registry import MODELS

__all__ = [
    "PTABlock", "PTAMobileNetV2", "pta_mobilenet_v2", "mobilenet_v2_baseline",
    "PTA_TRAIN_PROBS", "CONFIGS", "TABLE3_CONFIGS", "parse_config",
]

Mode = Literal["H", "L", "B"]
MODES: tuple[str, ...] = ("H", "L", "B")

#: Seed 000, Table 2: configurations sampled during training (B is never trained on).
PTA_TRAIN_PROBS: dict[str, float] = {"HHH": 0.45, "LHH": 0.15, "HLH": 0.15, "HHL": 0.15, "LLL": 0.10}

#: Configurations the paper reports (Tables 3 and 4), in its row order; "NoPTA" = plain MobileNetV2.
CONFIGS: tuple[str, ...] = ("HHH", "LHH", "HLH", "HHL", "LLL", "BBB")
TABLE3_CONFIGS: tuple[str, ...] = ("NoPTA",) + CONFIGS

#: (t, c, n, s) per stage, seed 000 Table 1 before the PTA substitution (= torchvision's MobileNetV2).
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
#: Stages (by channel count) whose last pair of blocks becomes a PTA block: "the largest number of channels".
PTA_STAGES: tuple[int, ...] = (64, 96, 160)


def parse_config(config: str, num_blocks: int = 3) -> tuple[str, ...]:
    """Validate a configuration string ("LHH") and split it into per-block modes.

    Lower case is accepted (a CLI user typing `lhh` means LHH); anything else is an error that says
    what a valid string looks like, because a typo silently running the heavy branch would be worse.
    """
    if not isinstance(config, str):
        raise TypeError(f"configuration must be a string like 'LHH', got {type(config).__name__}")
    up = config.strip().upper()
    if len(up) != num_blocks or any(c not in MODES for c in up):
        raise ValueError(f"unknown configuration {config!r}; use {num_blocks} letters from H, L, B e.g. 'LHH'")
    return tuple(up)


class PTABlock(nn.Module):
    """Two branches with the same input and output shape; `mode` picks which one runs.

    H runs `heavy` (a pair of inverted residual blocks), L runs `light` (one block), B runs both and
    averages, so B's output has the scale the next layer saw during training. Weights are never shared
    between branches (seed 000, section 3).
    """

    def __init__(self, heavy: nn.Sequential, light: InvertedResidual, mode: Mode = "H") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown PTA mode {mode!r}; use one of H, L, B")
        self.heavy = heavy
        self.light = light
        self.mode: str = mode
        self.out_channels: int = light.out_channels

    def active_branches(self) -> list[nn.Module]:
        """The submodules that run in the current mode (used by `paperkit.complexity.active_params`)."""
        if self.mode == "H":
            return [self.heavy]
        if self.mode == "L":
            return [self.light]
        return [self.heavy, self.light]

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "H":
            return self.heavy(x)
        if self.mode == "L":
            return self.light(x)
        return (self.heavy(x) + self.light(x)) * 0.5

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


class PTAMobileNetV2(nn.Module):
    """MobileNetV2 (torchvision layout) whose 64-, 96- and 160-channel stages end in a PTA block.

    Args:
        num_classes: 2 for live/spoof (index 1 = spoof, the paperkit model contract).
        width_mult: channel multiplier as in torchvision; < 1 gives a narrow model (e.g. a distillation
            student: 0.5 is about 0.7 M parameters), rounded to multiples of `round_nearest`.
        round_nearest: channel rounding, 8 as in torchvision (1 turns rounding off).
        dropout: dropout before the classifier.
        last_channel: width of the final 1x1 convolution (1280 in the paper); like torchvision it is
            scaled only when width_mult > 1.
        norm_layer: normalisation layer, BatchNorm2d by default.
        config: initial configuration, "HHH" (the one equivalent to the No-PTA model).
    """

    def __init__(
        self,
        num_classes: int = 2,
        width_mult: float = 1.0,
        round_nearest: int = 8,
        dropout: float = 0.2,
        last_channel: int = 1280,
        norm_layer: Optional[Callable[..., nn.Module]] = None,
        config: str = "HHH",
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d

        input_channel = _make_divisible(32 * width_mult, round_nearest)
        self.last_channel = _make_divisible(last_channel * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [
            Conv2dNormActivation(3, input_channel, stride=2, norm_layer=norm_layer, activation_layer=nn.ReLU6)
        ]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            output_channel = _make_divisible(c * width_mult, round_nearest)
            plain = n - 2 if c in PTA_STAGES else n
            for i in range(plain):
                stride = s if i == 0 else 1
                features.append(InvertedResidual(input_channel, output_channel, stride, t, norm_layer))
                input_channel = output_channel
            if c in PTA_STAGES:
                # The pair is the tail of the stage, so stride is 1 and both branches keep the shape.
                heavy = nn.Sequential(
                    InvertedResidual(input_channel, output_channel, 1, t, norm_layer),
                    InvertedResidual(output_channel, output_channel, 1, t, norm_layer),
                )
                light = InvertedResidual(input_channel, output_channel, 1, t, norm_layer)
                features.append(PTABlock(heavy, light))
                input_channel = output_channel
        features.append(
            Conv2dNormActivation(input_channel, self.last_channel, kernel_size=1, norm_layer=norm_layer,
                                 activation_layer=nn.ReLU6)
        )
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))

        # Same initialisation as torchvision's MobileNetV2, so No-PTA vs PTA compares architectures only.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
        self.configure(config)

    # --- configuration ------------------------------------------------------------------------
    @property
    def pta_blocks(self) -> list[PTABlock]:
        """The three PTA blocks in network order (64-, 96-, 160-channel stages)."""
        # Looked up, not cached, so copies, wrappers and module surgery never leave a stale list.
        return [m for m in self.features if isinstance(m, PTABlock)]

    @property
    def config(self) -> str:
        """Current configuration, one letter per PTA block, e.g. "LHH"."""
        return "".join(b.mode for b in self.pta_blocks)

    def configure(self, config: str) -> "PTAMobileNetV2":
        """Select the branch of every PTA block ("LHH": light in the first block, heavy in the others).

        Only flags change; parameters, optimizer state and checkpoints are untouched. Returns self so
        `model.configure("LLL").eval()` chains.
        """
        blocks = self.pta_blocks
        modes = parse_config(config, len(blocks))
        for block, mode in zip(blocks, modes):
            block.mode = mode
        return self

    def sample_config(self, generator: Optional[torch.Generator] = None,
                      probs: Optional[dict[str, float]] = None) -> str:
        """Configure a random configuration drawn with `probs` (default: seed 000 Table 2) and return it.

        Drawn with torch's generator so a seeded training run samples the same sequence every time.
        """
        probs = PTA_TRAIN_PROBS if probs is None else probs
        names = list(probs)
        for name in names:
            parse_config(name, len(self.pta_blocks))
        weights = torch.tensor([float(probs[n]) for n in names], dtype=torch.float64)
        if weights.min() < 0 or weights.sum() <= 0:
            raise ValueError(f"sampling probabilities must be >= 0 with a positive sum, got {probs}")
        idx = int(torch.multinomial(weights, 1, generator=generator).item())
        self.configure(names[idx])
        return names[idx]

    # --- forward ------------------------------------------------------------------------------
    def _forward_impl(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)

    def forward(self, x: Tensor) -> Tensor:
        return self._forward_impl(x)


def pta_mobilenet_v2(num_classes: int = 2, width_mult: float = 1.0, **kwargs: object) -> PTAMobileNetV2:
    """MobileNetV2+PTA of seed 000 (2.226 M parameters in HHH at width 1.0), trained from scratch."""
    return PTAMobileNetV2(num_classes=num_classes, width_mult=width_mult, **kwargs)  # type: ignore[arg-type]


def mobilenet_v2_baseline(num_classes: int = 2, **kwargs: object) -> nn.Module:
    """The No-PTA baseline: torchvision's MobileNetV2, no pretrained weights (the seed trains from scratch)."""
    return mobilenet_v2(weights=None, num_classes=num_classes, **kwargs)


MODELS.register("pta_mobilenet_v2")(pta_mobilenet_v2)
MODELS.register("mobilenet_v2_baseline")(mobilenet_v2_baseline)
