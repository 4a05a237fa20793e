"""PTA MobileNetV2 (seed 000): shapes, run-time switching, configuration strings, sampling."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual

from paperkit.models.pta import (PTA_TRAIN_PROBS, PTABlock, PTAMobileNetV2, mobilenet_v2_baseline,
                                 parse_config, pta_mobilenet_v2)
from paperkit.papers import SEED000_TABLES_3_4
from paperkit.registry import MODELS

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model() -> PTAMobileNetV2:
    torch.manual_seed(0)
    return pta_mobilenet_v2().eval()


def test_output_shapes_every_config(model: PTAMobileNetV2) -> None:
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for cfg in ("HHH", "LHH", "HLH", "HHL", "LLL", "BBB", "LBH"):
            assert model.configure(cfg)(x).shape == (2, 2)
    assert mobilenet_v2_baseline()(x).shape == (2, 2)


def test_architecture_matches_table1(model: PTAMobileNetV2) -> None:
    feats = list(model.features)
    assert len(feats) == 16  # same entries as torchvision's MobileNetV2 features
    blocks = model.pta_blocks
    assert [feats.index(b) for b in blocks] == [9, 11, 13]
    assert [b.out_channels for b in blocks] == [64, 96, 160]
    for b in blocks:
        assert isinstance(b.light, InvertedResidual)
        assert len(b.heavy) == 2 and all(isinstance(m, InvertedResidual) for m in b.heavy)
        assert all(m.stride == 1 for m in [*b.heavy, b.light])
    assert model.classifier[-1].in_features == 1280 and model.classifier[-1].out_features == 2
    # HHH holds exactly the No-PTA weights' shapes where the paper says it is equivalent.
    base = mobilenet_v2_baseline()
    n_base = sum(p.numel() for p in base.parameters())
    n_light = sum(p.numel() for b in blocks for p in b.light.parameters())
    assert sum(p.numel() for p in model.parameters()) == n_base + n_light


def test_configure_switches_without_copying(model: PTAMobileNetV2) -> None:
    before = {n: p.data_ptr() for n, p in model.named_parameters()}
    ids = {n: id(p) for n, p in model.named_parameters()}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        # relative difference: at fresh init, eval-mode activations are tiny (BN running stats = identity)
        y_hhh = model.configure("HHH").features(x)
        y_lll = model.configure("LLL").features(x)
        assert model.config == "LLL"
        assert (y_hhh - y_lll).norm() > 1e-2 * y_hhh.norm()
        assert torch.equal(model.configure("HHH").features(x), y_hhh)
    assert {n: p.data_ptr() for n, p in model.named_parameters()} == before
    assert {n: id(p) for n, p in model.named_parameters()} == ids
    assert model.configure("lhh") is model and model.config == "LHH"  # chains; lower case accepted
    model.configure("HHH")


@pytest.mark.parametrize("bad", ["HXH", "HH", "HHHH", "", "H H", "hhx"])
def test_bad_config_strings(model: PTAMobileNetV2, bad: str) -> None:
    model.configure("HHH")
    with pytest.raises(ValueError, match=r"use 3 letters from H, L, B e\.g\. 'LHH'"):
        model.configure(bad)
    assert model.config == "HHH"  # a failed configure leaves the model as it was


def test_bad_config_message_exact() -> None:
    with pytest.raises(ValueError) as e:
        parse_config("HXH")
    assert str(e.value) == "unknown configuration 'HXH'; use 3 letters from H, L, B e.g. 'LHH'"
    with pytest.raises(TypeError):
        parse_config(3)  # type: ignore[arg-type]


def test_both_mode_is_mean_of_branches() -> None:
    torch.manual_seed(0)
    heavy = nn.Sequential(InvertedResidual(16, 16, 1, 6), InvertedResidual(16, 16, 1, 6))
    block = PTABlock(heavy, InvertedResidual(16, 16, 1, 6)).eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        block.mode = "H"
        h = block(x)
        block.mode = "L"
        l_ = block(x)
        block.mode = "B"
        b = block(x)
    torch.testing.assert_close(b, (h + l_) / 2)
    assert [m is heavy for m in block.active_branches()] == [True, False]


def test_sample_config_frequencies() -> None:
    m = pta_mobilenet_v2()
    g = torch.Generator().manual_seed(0)
    n = 4000
    counts = Counter(m.sample_config(g) for _ in range(n))
    assert set(counts) == set(PTA_TRAIN_PROBS)  # B is never sampled
    for cfg, p in PTA_TRAIN_PROBS.items():
        assert abs(counts[cfg] / n - p) < 0.025, (cfg, counts[cfg] / n, p)
    assert m.config in PTA_TRAIN_PROBS
    # Seeded generator -> same sequence.
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert [m.sample_config(g1) for _ in range(20)] == [m.sample_config(g2) for _ in range(20)]
    # Custom probabilities (the training contract lets studies change them).
    assert {m.sample_config(g, {"LLL": 1.0, "HHH": 0.0}) for _ in range(10)} == {"LLL"}
    with pytest.raises(ValueError):
        m.sample_config(g, {"HXH": 1.0})


def test_width_mult_student_under_1m() -> None:
    m = pta_mobilenet_v2(width_mult=0.5)
    assert sum(p.numel() for p in m.parameters()) < 1_000_000
    assert m.configure("LLL")(torch.randn(1, 3, 64, 64)).shape == (1, 2)
    with pytest.raises(ValueError):
        pta_mobilenet_v2(width_mult=0)


def test_registry_and_meta() -> None:
    assert isinstance(MODELS.get("pta_mobilenet_v2")(), PTAMobileNetV2)
    assert MODELS.get("mobilenet_v2_baseline")().classifier[-1].out_features == 2
    assert set(SEED000_TABLES_3_4) == {"NoPTA", "HHH", "LHH", "HLH", "HHL", "LLL", "BBB"}
    for row in SEED000_TABLES_3_4.values():
        assert abs(row["acer"] - (row["apcer"] + row["bpcer"]) / 2) < 0.011  # the paper's ACER = mean


def test_state_dict_roundtrip_keeps_all_branches(model: PTAMobileNetV2) -> None:
    sd = model.state_dict()
    other = pta_mobilenet_v2().configure("LLL")
    other.load_state_dict(sd)  # every branch is in the checkpoint whatever the configuration
    assert other.config == "LLL"
    assert any(k.startswith("features.9.light.") for k in sd) and any(k.startswith("features.9.heavy.1.") for k in sd)


def test_study_writes_tables_and_figure(tiny_celeba_clean, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Notebook 01's study end to end on a tiny tree (smoke profile); latency and MAdds are faked here
    (tests/test_complexity.py covers them) so the test stays a few seconds."""
    import numpy as np
    import pandas as pd

    from paperkit import complexity, results
    from paperkit.batchnorm import SharedStatsStore, bn_buffers
    from paperkit.studies import pta_costs, pta_summary
    from paperkit.studies import pta_mobilenet as study_mod

    configs = ["NoPTA", "HHH", "LHH", "HLH", "HHL", "LLL", "BBB"]
    seen_bn: dict = {}
    monkeypatch.setattr(complexity, "table4", lambda input_size=128: [
        {"config": c, "params_m": SEED000_TABLES_3_4[c]["params_m"], "madds_m": SEED000_TABLES_3_4[c]["madds_m"]}
        for c in configs])

    def fake_bench(*a, **k):
        seen_bn.update(k.get("bn_states") or {})
        return pd.DataFrame([{"candidate": f"{c}/{b}", "config": c, "backend": b, "median_ms": 1.0, "rel_latency": 1.0,
                              "rel_latency_p10": 1.0, "rel_latency_ci_low": 0.9, "rel_latency_ci_high": 1.1,
                              "rounds": 2}
                             for c in configs for b in ("torch", "ort")])
    monkeypatch.setattr(complexity, "bench_latency", fake_bench)
    run_dir = tmp_path / "run"
    s = study_mod.setup("smoke", str(tiny_celeba_clean), str(run_dir), None)
    assert s.seeds == (0,)
    hist = study_mod.train(s, progress=False)
    assert list(hist["model"]) == ["MobileNetV2", "MobileNetV2+PTA"] and (hist["val_acer"] <= 100).all()
    assert (run_dir / "checkpoints" / "01_pta_smoke_s0" / "best.pt").is_file()
    assert (run_dir / "checkpoints" / "01_pta_smoke_s0" / SharedStatsStore.FILE).is_file()
    pta_row = hist[hist["model"] == "MobileNetV2+PTA"].iloc[0]
    assert 0 <= pta_row["val_acer_shared_bn"] <= 100 and np.isnan(hist["val_acer_shared_bn"].iloc[0])
    run = s.runs[0]
    # the shared (training) statistics differ from the recalibrated HHH ones the checkpoint holds
    held = bn_buffers(run.models["pta"])
    assert run.shared_bn is not None
    assert any(not torch.equal(held[k], v) for k, v in run.shared_bn.items() if "running_mean" in k)
    t3 = study_mod.table3(s)
    fixed = t3[t3["operating_point"] == "fixed_0.5"]
    assert list(fixed["config"]) == ["NoPTA"] + [c for c in configs[1:] for _ in (0, 1)]
    assert list(fixed["bn"]) == ["n/a"] + ["shared", "recalibrated"] * 6
    assert set(t3["operating_point"]) == {"fixed_0.5", "val_eer"} and (t3["seed"] == 0).all()
    for col in ("accuracy", "apcer", "bpcer", "acer", "acer_ci_low", "acer_ci_high", "apcer_worst_type",
                "apcer_worst_type_code", "acer_iso", "tpr_at_fpr_1e-2", "n_images", "n_subjects", "threshold",
                "paper_acer", "dataset"):
        assert col in t3.columns, col
    assert (fixed["threshold"] == 0.5).all() and s.models["pta"].config == "HHH"
    # HHH recalibrated in Table 3 = the statistics validation used (same crops): the checkpoint's buffers
    for k, v in run.bn_states["HHH"].items():
        torch.testing.assert_close(held[k], v, rtol=1e-4, atol=1e-5)
    preds = results.read_predictions(run_dir, "table3_quality")
    assert preds is not None and set(preds["split"]) == {"val", "test"}
    assert set(preds["bn"]) == {"", "shared", "recalibrated"} and set(preds["fmt"]) == {"torch"}
    assert len(preds) == 13 * (len(s.loaders["val"].dataset) + len(s.loaders["test"].dataset))
    t4 = pta_costs.table4(s)
    assert {"latency_ms_torch", "latency_ms_ort", "rel_latency", "rel_latency_ci_low", "paper_madds_m",
            "seed", "bn"} <= set(t4.columns)
    assert set(seen_bn) == set(configs[1:])  # every exported configuration gets its own statistics
    t5 = pta_costs.table5(s)
    assert list(t5["model"]) == ["MobileNetV2", "MobileNetV2+PTA"] and t5.loc[0, "rel_epoch_time"] == 1.0
    for col in ("rel_epoch_time", "rel_step_time", "rel_step_time_ci_low", "rel_step_time_ci_high",
                "timing_rounds", "seed", "best_acer_ci_low"):
        assert col in t5.columns, col
    assert t5.loc[1, "rel_step_time"] > 0 and t5.loc[1, "timing_rounds"] >= 2
    study_mod.figure2(s)
    f2 = results.read_table(run_dir, "figure2_val_acer")   # each epoch's val ACER with its subject-bootstrap CI
    assert ((f2["val_acer_ci_low"] <= f2["val_acer"] + 1e-9) & (f2["val_acer"] <= f2["val_acer_ci_high"] + 1e-9)).all()
    assert f2[["val_acer_ci_low", "val_acer_ci_high"]].notna().all().all()
    for name in ("table3_quality", "table4_complexity", "table5_training"):
        df = results.read_table(run_dir, name)
        assert df is not None and (df["dataset"] == "CelebA-Spoof").all()
    assert (run_dir / "figures" / "figure2_val_acer.png").is_file()
    summ = pta_summary.summary(s)
    assert "PTA/NoPTA epoch time" in summ and "PTA/NoPTA train-step time [95% CI]" in summ
    assert "test ACER % HHH: shared -> recalibrated BN" in summ
    # a rerun resumes from the finished checkpoints instead of training again, shared curve included
    s2 = study_mod.setup("smoke", str(tiny_celeba_clean), str(run_dir), [0])
    hist2 = study_mod.train(s2, progress=False)
    pd.testing.assert_frame_equal(hist2, hist)
    assert s2.runs[0].hooks.recalibration_s == []  # the stored recalibration was reused
    for k, v in s2.runs[0].shared_bn.items():
        assert torch.equal(v, run.shared_bn[k])


def test_recalibrating_validation_does_not_change_training(tiny_celeba_clean, tmp_path) -> None:
    """The eval hook recalibrates HHH for validation, then hands the training running statistics back:
    two epochs with it end at the very weights and shared statistics of two epochs without it."""
    from paperkit import data
    from paperkit.batchnorm import SharedStatsStore, training_calibration, weights_fingerprint
    from paperkit.profiles import get_profile
    from paperkit.studies.pta_training import PTAFitHooks
    from paperkit.train import fit, load_checkpoint

    prof = get_profile("smoke", input_size=32, batch_size=4, num_workers=0)
    loaders = data.make_loaders(tiny_celeba_clean, prof, 0)
    calib = training_calibration(loaders, prof)
    finals = {}
    for name in ("plain", "hooked"):
        torch.manual_seed(0)
        m = pta_mobilenet_v2(num_classes=2, width_mult=0.35)
        if name == "plain":
            kw = dict(before_step=lambda mm, g: mm.sample_config(g), eval_config=lambda mm: mm.configure("HHH"))
        else:
            hooks = PTAFitHooks(calib, SharedStatsStore(tmp_path / "run" / "checkpoints" / name),
                                loaders["val"], channels_last=False)
            kw = dict(before_step=hooks.before_step, eval_config=hooks.eval_config)
        for epochs in (1, 2):  # two fit calls, as the interleaved schedule does (resume in between)
            fit(m, loaders, run_dir=tmp_path / "run", name=name, epochs=epochs, lr=1e-3, seed=0,
                channels_last=False, progress=False, **kw)
        finals[name] = load_checkpoint(tmp_path / "run" / "checkpoints" / name / "last.pt")["model"]
    plain, hooked = finals["plain"], finals["hooked"]
    store = SharedStatsStore(tmp_path / "run" / "checkpoints" / "hooked")
    m = pta_mobilenet_v2(num_classes=2, width_mult=0.35)
    m.load_state_dict(hooked)
    shared = store.get(weights_fingerprint(m), "shared")
    assert shared is not None
    for k, v in plain.items():
        if k in shared:  # a BatchNorm statistic: the store holds the training one
            torch.testing.assert_close(shared[k], v, msg=k)
        else:
            torch.testing.assert_close(hooked[k], v, msg=k)
    assert any(not torch.equal(hooked[k], shared[k]) for k in shared if "running_var" in k)
    assert sorted(int(e["shared_val"]["epoch"]) for e in store.entries.values() if "shared_val" in e) == [1, 2]

