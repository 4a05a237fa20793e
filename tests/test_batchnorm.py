"""BatchNorm recalibration per PTA configuration (paperkit.batchnorm; issue 9 item 1)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from paperkit.batchnorm import (CalibrationSet, SharedStatsStore, bn_buffers, config_bn_states, load_bn_buffers,
                                recalibrate_bn, recalibrated, weights_fingerprint)
from paperkit.models.pta import pta_mobilenet_v2

torch.set_num_threads(1)
SIZE = 32


def _calib(n: int = 24, batch: int = 8, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, SIZE, SIZE, generator=g) * 0.7 + 0.2 for _ in range(n // batch)]


def _trained_like(seed: int = 0) -> nn.Module:
    """A narrow PTA model whose running statistics mix configurations, as after per-step sampling."""
    torch.manual_seed(seed)
    m = pta_mobilenet_v2(width_mult=0.35).train()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for cfg in ("HHH", "LLL", "LHH", "HLH", "HHL", "LLL"):
            m.configure(cfg)(torch.randn(8, 3, SIZE, SIZE, generator=g) * 1.5 - 0.3)
    return m.eval()


@pytest.mark.parametrize("config", ["LLL", "BBB", "HLH"])
def test_recalibration_matches_a_copy_only_ever_updated_in_that_config(config: str) -> None:
    """The issue's test: forward passes in other configurations, then recalibrating for C, give the outputs
    of a copy whose statistics were only ever updated in C on the same calibration data."""
    model = _trained_like()
    pristine = copy.deepcopy(model)
    calib = _calib()
    x = torch.randn(5, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(9))
    # pollute: more training-mode passes in every other configuration
    model.train()
    with torch.no_grad():
        for cfg in ("HHH", "LHH", "BBB", "HLB"):
            if cfg != config:
                model.configure(cfg)(torch.randn(8, 3, SIZE, SIZE) * 3.0)
    model.eval().configure(config)
    recalibrate_bn(model, calib)
    # the reference: fresh statistics, only ever updated in `config`, on the same data
    ref = copy.deepcopy(pristine).configure(config)
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    ref.train()
    for m in ref.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    with torch.no_grad():
        for b in calib:
            ref(b)
    ref.eval()
    with torch.no_grad():
        got, want = model(x), ref(x)
        polluted = pristine.configure(config)(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(polluted, want, atol=1e-3), "the test must be able to fail: shared stats differ"
    assert not model.training and model.config == config


def test_recalibration_restores_modes_momentum_and_untouched_branches() -> None:
    model = _trained_like()
    model.classifier[0].train()  # a module left in training mode on purpose stays so
    heavy_before = {k: v.clone() for k, v in bn_buffers(model).items() if ".heavy." in k}
    momenta = [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    params = [p.detach().clone() for p in model.parameters()]
    recalibrate_bn(model.configure("LLL"), _calib())
    after = bn_buffers(model)
    for k, v in heavy_before.items():  # LLL never runs a heavy branch: its statistics must survive
        torch.testing.assert_close(after[k], v)
    assert [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == momenta
    assert model.classifier[0].training and not model.features.training
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))  # no weight moves
    assert all(p.grad is None for p in model.parameters())
    # cumulative average: every light-branch BN saw every batch
    assert int(after["features.9.light.conv.3.num_batches_tracked"]) == len(_calib())


def test_max_images_caps_the_batches_and_bad_input_is_an_error() -> None:
    model = _trained_like()
    recalibrate_bn(model, _calib(n=48), max_images=16)
    assert int(bn_buffers(model)["features.0.1.num_batches_tracked"]) == 2
    with pytest.raises(ValueError, match="no batch"):
        recalibrate_bn(model, [torch.randn(1, 3, SIZE, SIZE)])


def test_context_manager_and_per_config_states_leave_the_model_as_it_was() -> None:
    model = _trained_like().configure("HLH")
    before = bn_buffers(model)
    calib = _calib()
    x = torch.randn(3, 3, SIZE, SIZE)
    with recalibrated(model, calib, "LLL") as m:
        assert m.config == "LLL"
        with torch.no_grad():
            inside = m(x)
    assert model.config == "HLH"
    for k, v in bn_buffers(model).items():
        assert torch.equal(v, before[k]), k
    states = config_bn_states(model, calib, ["LLL", "BBB"])
    assert set(states) == {"LLL", "BBB"} and model.config == "HLH"
    with torch.no_grad():
        torch.testing.assert_close(load_bn_buffers(model.configure("LLL"), states["LLL"])(x), inside)
    with pytest.raises(KeyError, match="another architecture"):
        load_bn_buffers(model, {"nonexistent.running_mean": torch.zeros(3)})


def test_calibration_set_is_seeded_unaugmented_and_label_free(tiny_celeba_clean) -> None:
    from paperkit import data
    from paperkit.profiles import get_profile

    prof = get_profile("smoke", input_size=32, batch_size=4, num_workers=0)
    ds = data.make_loaders(tiny_celeba_clean, prof, 0)["train"].dataset
    assert ds.train  # the training split *with* augmentation: CalibrationSet must bypass it
    a = CalibrationSet.from_dataset(ds, max_images=10, batch_size=4, seed=0)
    b = CalibrationSet.from_dataset(ds, max_images=10, batch_size=4, seed=0)
    assert a.indices == b.indices and all(torch.equal(x, y) for x, y in zip(a, b))
    assert a.n_images == 10 and [len(x) for x in a] == [4, 4, 2]
    i = a.indices[0]
    torch.testing.assert_close(a.batches[0][0], data.preprocess(ds.load_crop(i), 32))  # clean crop
    assert CalibrationSet.from_dataset(ds, max_images=10, batch_size=4, seed=1).indices != a.indices
    assert all(isinstance(x, torch.Tensor) and x.shape[1:] == (3, 32, 32) for x in a)


def test_fingerprint_ignores_bn_statistics_and_store_roundtrips(tmp_path) -> None:
    model = _trained_like()
    fp = weights_fingerprint(model)
    recalibrate_bn(model, _calib())
    assert weights_fingerprint(model) == fp  # BN statistics are buffers, not weights
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    assert weights_fingerprint(model) != fp
    store = SharedStatsStore(tmp_path)
    store.put(fp, "shared", bn_buffers(model))
    again = SharedStatsStore(tmp_path)
    got = again.get(fp, "shared")
    assert got is not None and again.get(fp, "recalibrated") is None and again.get("x", "shared") is None
    for k, v in bn_buffers(model).items():
        assert torch.equal(got[k], v)


def test_bench_bn_reports_cost_beside_an_eval_pass():
    from paperkit import bench
    rows = bench.bn_recalibration("smoke", configs=("LLL",), rounds=2, n_images=8)
    (r,) = rows
    assert r["config"] == "LLL" and r["images"] == 8 and r["recalibrate_s"] > 0 and r["eval_pass_s"] > 0
    assert r["ratio"] == pytest.approx(r["recalibrate_s"] / r["eval_pass_s"], rel=1e-6)


@pytest.mark.parametrize("config", ["HHH", "LLL", "BBB"])
def test_fold_bn_gives_the_same_scores_and_leaves_the_model_alone(config: str) -> None:
    from paperkit.batchnorm import fold_bn
    m = _trained_like().configure(config).eval()
    before = copy.deepcopy(bn_buffers(m))
    folded, n = fold_bn(m)
    assert n > 30 and not any(isinstance(x, nn.BatchNorm2d) for x in folded.modules())
    x = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), m(x), rtol=1e-4, atol=1e-5)
    assert all(torch.equal(v, bn_buffers(m)[k]) for k, v in before.items())
    assert sum(isinstance(x, nn.BatchNorm2d) for x in m.modules()) > 30   # the original keeps its BN


def test_fold_bn_attribute_pairs_follow_the_models_metadata() -> None:
    """A module whose conv feeds its BN through attributes (EfficientNet style) folds only when named."""
    from paperkit.batchnorm import fold_bn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self._conv, self._bn = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self._bn(self._conv(x)))

    b = Block().train()
    with torch.no_grad():
        b(torch.randn(8, 3, 8, 8) * 2 + 1)
    b.eval()
    assert fold_bn(b)[1] == 0
    folded, n = fold_bn(b, pairs=[("_conv", "_bn")])
    x = torch.randn(2, 3, 8, 8)
    assert n == 1 and isinstance(folded._bn, nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), b(x), rtol=1e-4, atol=1e-5)
