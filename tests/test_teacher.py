"""Teacher: pretrained frozen backbone, 8 heads, normalisation, checkpoints, cue mapping, student sizes."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from paperkit.models.pta import pta_mobilenet_v2
from paperkit.models.teacher import (
    CUE_NAMES,
    Teacher,
    check_cues_agree,
    count_params,
    load_lite0_state_dict,
    load_teacher,
    save_teacher,
    teacher_net,
)
from paperkit.models.texture import texture_net
from paperkit.registry import MODELS

SIZE = 64   # tiny inputs keep the tests fast; Lite0's TF padding is the same for any even size


@pytest.fixture(scope="module")
def lite() -> Teacher:
    torch.manual_seed(0)
    return teacher_net(input_size=SIZE)


def test_contract_and_registry(lite: Teacher) -> None:
    assert MODELS.get("teacher") is teacher_net
    x = torch.randn(3, 3, SIZE, SIZE)
    lite.eval()
    logits, cues = lite.forward_heads(x)
    assert logits.shape == (3, 2) and cues.shape == (3, len(CUE_NAMES))
    assert torch.allclose(lite(x), logits)
    f = lite.features(x)
    assert f.shape == (3, lite.backbone.out_dim)
    h_logits, h_cues = lite.head(f)
    assert torch.allclose(h_logits, logits) and torch.allclose(h_cues, cues)
    assert lite.cue_names == CUE_NAMES


def test_pretrained_weights_loaded_and_frozen(lite: Teacher) -> None:
    sd = load_lite0_state_dict()
    assert torch.equal(lite.backbone.net._conv_stem.weight, sd["_conv_stem.weight"])
    assert torch.equal(lite.backbone.net._bn1.running_var, sd["_bn1.running_var"])
    assert not any(p.requires_grad for p in lite.backbone.parameters())
    assert all(p.requires_grad for p in lite.head.parameters())
    # the ImageNet classifier is dropped: only used parameters are counted
    assert not hasattr(lite.backbone.net, "_fc")
    assert 3.0e6 < count_params(lite) < 4.5e6
    assert count_params(lite, trainable_only=True) == count_params(lite.head)


def test_frozen_bn_stays_in_eval_mode_and_keeps_stats(lite: Teacher) -> None:
    lite.train()
    assert lite.training and lite.head.training
    assert not lite.backbone.training
    assert all(not m.training for m in lite.backbone.modules())
    before = lite.backbone.net._bn0.running_mean.clone()
    logits, cues = lite.forward_heads(torch.randn(4, 3, SIZE, SIZE) * 3)
    (logits.sum() + cues.sum()).backward()
    assert torch.equal(before, lite.backbone.net._bn0.running_mean)
    assert all(p.grad is None for p in lite.backbone.parameters())
    assert lite.head.live_spoof.weight.grad is not None
    lite.zero_grad(set_to_none=True)
    lite.eval()


def test_input_conversion_matches_lite_statistics(lite: Teacher) -> None:
    # data: x_n = (x - 0.5) / 0.5; Lite (TF builder): (255 x - 127) / 128
    x = torch.rand(1, 3, 4, 4)
    x_data = (x - 0.5) / 0.5
    expected = (255 * x - 127) / 128
    got = x_data * lite.in_scale + lite.in_shift
    assert torch.allclose(got, expected, atol=1e-6)
    imnet = teacher_net(input_size=SIZE, backbone_stats="imagenet")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(x_data * imnet.in_scale + imnet.in_shift, (x - mean) / std, atol=1e-5)
    with pytest.raises(ValueError, match="backbone_stats"):
        teacher_net(input_size=SIZE, backbone_stats="nope")


def test_scratch_backbone_option() -> None:
    torch.manual_seed(0)
    r = teacher_net(backbone="resnet18")
    assert not r.frozen and r.config["pretrained"] is False
    assert all(p.requires_grad for p in r.parameters())
    r.train()
    assert r.backbone.training
    logits, cues = r.forward_heads(torch.randn(2, 3, SIZE, SIZE))
    assert logits.shape == (2, 2) and cues.shape == (2, 7)
    with pytest.raises(ValueError, match="pretrained=False"):
        teacher_net(backbone="resnet18", pretrained=True)
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        teacher_net(backbone="vgg")


def test_checkpoint_roundtrip_and_bad_checkpoints(lite: Teacher, tmp_path) -> None:
    path = tmp_path / "teacher.pt"
    save_teacher(lite, path)
    back = load_teacher(path)
    x = torch.randn(2, 3, SIZE, SIZE)
    lite.eval()
    back.eval()
    assert torch.allclose(back(x), lite(x), atol=1e-6)
    assert back.frozen and back.config["pretrained"] is True
    with pytest.raises(FileNotFoundError, match="train the teacher"):
        load_teacher(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="3 classes"):
        save_teacher(teacher_net(num_classes=3, input_size=SIZE), tmp_path / "t3.pt")
        load_teacher(tmp_path / "t3.pt", num_classes=2)
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a paperkit teacher"):
        load_teacher(tmp_path / "other.pt")


def test_cue_side_file_must_agree_with_labels() -> None:
    ok = [SimpleNamespace(path="Data/train/1/live/000001.jpg", label=0, cues=(0,) * 7),
          SimpleNamespace(path="Data/train/1/spoof/000002.jpg", label=1, cues=(1, 0, -1, -1, 0, 1, -1))]
    counts = check_cues_agree(ok)
    assert counts["samples"] == 2 and counts["unknown_cue_entries"] == 3
    # a live capture may be of low quality: not a contradiction
    check_cues_agree([SimpleNamespace(path="Data/train/1/live/000004.jpg", label=0, cues=(0,) * 6 + (1,))])
    bad = ok + [SimpleNamespace(path="Data/train/2/live/000003.jpg", label=0, cues=(0, 1, 0, 0, 0, 0, 0))]
    with pytest.raises(ValueError, match="disagrees with the live/spoof labels.*000003"):
        check_cues_agree(bad)
    with pytest.raises(ValueError, match="expected 7 values"):
        check_cues_agree([SimpleNamespace(path="p", label=1, cues=(1, 0))])


def test_pta_student_under_one_million() -> None:
    for w in (0.35, 0.5):
        assert count_params(pta_mobilenet_v2(width_mult=w)) < 1_000_000


def test_texture_student_under_one_million() -> None:
    assert count_params(texture_net()) < 1_000_000


def test_seeds_draw_the_head_not_the_frozen_backbone() -> None:
    """The distillation study shares one feature cache across training seeds: that is only valid because
    the frozen backbone is the same for every seed while the seed draws the trainable head."""
    def build(seed: int) -> Teacher:
        torch.manual_seed(seed)
        return teacher_net(input_size=SIZE)

    a, b, c = build(0), build(0), build(1)
    for (k, va), vc in zip(a.backbone.state_dict().items(), c.backbone.state_dict().values()):
        assert torch.equal(va, vc), k
    assert all(torch.equal(x, y) for x, y in zip(a.head.state_dict().values(), b.head.state_dict().values()))
    assert not torch.equal(a.head.live_spoof.weight, c.head.live_spoof.weight)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(a.eval().features(x), c.eval().features(x))
