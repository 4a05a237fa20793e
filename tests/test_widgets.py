"""paperkit.widgets driven headlessly: a tiny PTA model trained 1 epoch by the shared loop on a tiny tree."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import build_tiny_celeba, clean_tree
from paperkit import complexity, data, results, widgets
from paperkit.models.pta import CONFIGS, META, mobilenet_v2_baseline, pta_mobilenet_v2
from paperkit.profiles import get_profile
from paperkit.train import fit, predict_scores

PROFILE = get_profile("smoke", input_size=32, batch_size=8, num_workers=0, latency_rounds=1, latency_iters=2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder holding what notebook 01 leaves: 01_pta_smoke_s0 and 01_nopta_smoke_s0 checkpoints."""
    base = tmp_path_factory.mktemp("widgets")
    root = build_tiny_celeba(base / "celeba", clean_tree(train_subjects=5, test_subjects=2, per_subject=4))
    run_dir = base / "run"
    loaders = data.make_loaders(root, PROFILE, 0)
    torch.manual_seed(0)
    fit(pta_mobilenet_v2(num_classes=2), loaders, run_dir=run_dir, name="01_pta_smoke_s0", epochs=1, lr=1e-3,
        seed=0, before_step=lambda m, g: m.sample_config(g), eval_config=lambda m: m.configure("HHH"),
        progress=False)
    fit(mobilenet_v2_baseline(num_classes=2), loaders, run_dir=run_dir, name="01_nopta_smoke_s0", epochs=1,
        lr=1e-3, seed=0, progress=False)
    return {"root": root, "run_dir": run_dir, "loaders": loaders}


@pytest.fixture(scope="module")
def state(run):
    return widgets.prepare(PROFILE, str(run["root"]), run["run_dir"], [0], n_samples=4, progress=False)


def _fresh_state(state):
    """A state sharing the (expensive) reports but with its own selection."""
    return widgets.BranchState(model=state.model, reports=state.reports, samples=state.samples,
                               dataset=state.dataset)


# ------------------------------------------------------------------------------------------ loading
def test_missing_checkpoint_says_to_run_notebook_01(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"notebook 01.*--only 01"):
        widgets.load_pta(tmp_path, "smoke")
    with pytest.raises(FileNotFoundError, match="01_pta_default_s0"):
        widgets.prepare("default", "", tmp_path)
    with pytest.raises(FileNotFoundError, match="01_pta_smoke_s3.*seed 3"):
        widgets.prepare("smoke", "", tmp_path, [3, 4])
    assert widgets.load_nopta(tmp_path, "smoke") is None


def test_load_pta_gives_the_trained_weights(run):
    model = widgets.load_pta(run["run_dir"], "smoke")
    assert model.config == "HHH" and not model.training
    ck = torch.load(widgets.checkpoint_path(run["run_dir"], "smoke"), weights_only=True)
    for k, v in ck["best_state"].items():
        assert torch.equal(model.state_dict()[k], v), k


def test_all_27_configurations_paper_six_first():
    assert len(widgets.ALL_CONFIGS) == len(set(widgets.ALL_CONFIGS)) == 27
    assert widgets.ALL_CONFIGS[:6] == CONFIGS


# ------------------------------------------------------------------------------------------ scores
def test_staged_scores_equal_plain_forward(run):
    model = widgets.load_pta(run["run_dir"], "smoke")
    ref = widgets.load_nopta(run["run_dir"], "smoke")
    loader = run["loaders"]["test"]
    got, labels = widgets.staged_scores(model, loader, widgets.ALL_CONFIGS, reference=ref)
    assert set(got) == set(widgets.ALL_CONFIGS) | {widgets.REFERENCE}
    for cfg in ("HHH", "LLL", "BBB", "BLH", "LBL"):
        s, y = predict_scores(model.configure(cfg), loader, channels_last=False)
        np.testing.assert_allclose(got[cfg], s, atol=1e-5)
        np.testing.assert_array_equal(labels, y)
    s, _ = predict_scores(ref, loader, channels_last=False)
    np.testing.assert_allclose(got[widgets.REFERENCE], s, atol=1e-5)


def test_staged_scores_restore_the_configuration(run):
    model = widgets.load_pta(run["run_dir"], "smoke").configure("LBH")
    widgets.staged_scores(model, run["loaders"]["val"], ["HHH", "BBB"])
    assert model.config == "LBH"


def test_staged_bn_equals_recalibrating_each_configuration(run):
    """The tree-staged calibration + scoring gives, per configuration, what recalibrate_bn on that
    configuration followed by a plain forward gives (same crops): the shared prefix does not leak stats."""
    from paperkit.batchnorm import bn_buffers, recalibrate_bn

    model = widgets.load_pta(run["run_dir"], "smoke")
    calib = widgets.calibration_set(run["loaders"], PROFILE)
    before = bn_buffers(model)
    bn = widgets.staged_bn_states(model, calib, ["HHH", "LLL", "BLH", "LBL"])
    assert len(bn.nodes) == 3 + 4 + 4 and bn.covers("BLH") and not bn.covers("BBB")
    for k, v in bn_buffers(model).items():
        assert torch.equal(v, before[k]), k  # the model is left as it was
    loader = run["loaders"]["test"]
    got, _ = widgets.staged_scores(model, loader, ["HHH", "LLL", "BLH", "LBL"], bn=bn)
    plain = widgets.staged_scores(model, loader, ["LLL"])[0]["LLL"]
    for cfg in ("HHH", "LLL", "BLH", "LBL"):
        ref = widgets.load_pta(run["run_dir"], "smoke").configure(cfg)
        recalibrate_bn(ref, calib)
        for k, v in bn.full(cfg).items():
            torch.testing.assert_close(ref.state_dict()[k], v, msg=k)
        s, _ = predict_scores(ref, loader, channels_last=False)
        np.testing.assert_allclose(got[cfg], s, atol=1e-5)
    assert not np.allclose(plain, got["LLL"], atol=1e-4), "recalibration must change LLL's scores here"
    # extending covers new configurations without recomputing the known nodes' statistics
    n_before = dict(bn.nodes)
    widgets.staged_bn_states(model, calib, ["BBB"], existing=bn)
    assert bn.covers("BBB") and all(torch.equal(bn.nodes["H"][k], v) for k, v in n_before["H"].items())
    with pytest.raises(KeyError, match="no BatchNorm statistics"):
        widgets.staged_scores(model, loader, ["HBL"], bn=bn)


def test_score_cache_recalibrates_once_per_configuration(run):
    model = widgets.load_pta(run["run_dir"], "smoke")
    calib = widgets.calibration_set(run["loaders"], PROFILE)
    cache = widgets.ScoreCache({k: run["loaders"][k] for k in ("val", "test")}, calib=calib)
    assert cache.bn_mode == "recalibrated"
    cache.fill(model, ["HHH", "LLL"])
    assert cache.calibrations == 1 and cache.passes == 2
    cache.scores(model, "test", "HHH")
    cache.fill(model, ["HHH", "LLL"])
    assert cache.calibrations == 1
    cache.scores(model, "val", "BBB")
    assert cache.calibrations == 2 and cache.bn.covers("BBB")


def test_each_configuration_is_evaluated_once(run):
    model = widgets.load_pta(run["run_dir"], "smoke")
    cache = widgets.ScoreCache({k: run["loaders"][k] for k in ("val", "test")})
    cache.scores(model, "test", "LHB")
    assert cache.passes == 1
    cache.scores(model, "test", "lhb")
    cache.metrics(model, "test", "LHB")
    assert cache.passes == 1
    cache.fill(model, ["HHH", "LLL"])
    assert cache.passes == 3  # one pass per split for both new configurations together
    cache.fill(model, ["HHH", "LLL"])
    assert cache.passes == 3


# ------------------------------------------------------------------------------------------ reports
def test_report_fields(state):
    r = state.reports["LHH"]
    for k in ("config", "params_m", "madds_m", "latency_ms", "accuracy", "apcer", "bpcer", "acer", "val_acer",
              "dataset", "samples", "n_test", "latency_backend", "trained_config"):
        assert k in r, k
    assert r["config"] == "LHH" and r["blocks"] == "Light / Heavy / Heavy"
    assert r["bn"] == "recalibrated" and state.reports["NoPTA"]["bn"] == "n/a" and state.bn == "recalibrated"
    assert state.timings["bn_calibration_s"] > 0 and state.seed == 0
    assert r["latency_ms"] > 0
    for k in ("accuracy", "apcer", "bpcer", "acer"):
        assert 0.0 <= r[k] <= 100.0 or math.isnan(r[k])
    assert r["acer"] == pytest.approx((r["apcer"] + r["bpcer"]) / 2)
    assert r["dataset"] == results.dataset_label(state.root)
    assert len(r["samples"]) == 4 and {s["label"] for s in r["samples"]} == {0, 1}
    for s in r["samples"]:
        assert 0.0 <= s["score"] <= 1.0 and s["pred"] == int(s["score"] >= 0.5)
        assert s["correct"] == (s["pred"] == s["label"])
    assert set(state.reports) == set(widgets.ALL_CONFIGS) | {widgets.REFERENCE}
    assert state.reports["LLL"]["trained_config"] and not state.reports["BBB"]["trained_config"]


def test_report_complexity_matches_direct_count(state):
    model = pta_mobilenet_v2(num_classes=2)
    for cfg in ("BLH", "LLB"):
        model.configure(cfg)
        assert state.reports[cfg]["params_m"] == pytest.approx(complexity.active_params(model) / 1e6)
        assert state.reports[cfg]["madds_m"] == pytest.approx(complexity.madds(model, PROFILE.input_size), abs=1e-6)
    assert state.reports["HHH"]["madds_m"] == pytest.approx(state.reports["NoPTA"]["madds_m"], abs=1e-6)


def test_summed_madds_reproduce_the_paper_at_128():
    got = widgets.complexity_by_config(pta_mobilenet_v2(num_classes=2), CONFIGS, 128)
    for cfg in CONFIGS:
        assert got[cfg]["madds_m"] == pytest.approx(META[cfg]["madds_m"], abs=0.02), cfg


def test_config_report_measures_when_not_given(run):
    model = widgets.load_pta(run["run_dir"], "smoke")
    cache = widgets.ScoreCache({k: run["loaders"][k] for k in ("val", "test")})
    r = widgets.config_report(model, "hlb", cache, input_size=PROFILE.input_size)
    assert r["config"] == "HLB" and r["latency_ms"] > 0 and r["madds_m"] > 0 and r["samples"] == []
    with pytest.raises(ValueError, match="unknown configuration"):
        widgets.config_report(model, "HXH", cache)


def test_compare_side_by_side(state):
    df = widgets.compare(state.reports, ["HHH", "lll", "NoPTA"])
    assert list(df["config"]) == ["HHH", "LLL", "NoPTA"] and "samples" not in df.columns
    with pytest.raises(KeyError, match="no report"):
        widgets.compare({"HHH": state.reports["HHH"]}, ["LLL"])


# ------------------------------------------------------------------------------------------ budget
def _rep(cfg, lat, val_acer, acer):
    return {"config": cfg, "latency_ms": lat, "val_acer": val_acer, "acer": acer, "madds_m": 1.0}


def test_budget_picks_lowest_validation_acer_that_fits():
    reports = {"NoPTA": _rep("NoPTA", 5.0, 0.0, 0.0), "HHH": _rep("HHH", 10.0, 2.0, 9.0),
               "LLL": _rep("LLL", 7.0, 3.0, 1.0), "BBB": _rep("BBB", 12.0, 1.0, 5.0),
               "LHH": _rep("LHH", 8.0, 3.0, 1.0)}
    assert widgets.best_under_budget(reports, 100).config == "BBB"
    assert widgets.best_under_budget(reports, 11).config == "HHH"  # not LLL, whose *test* ACER is lower
    assert widgets.best_under_budget(reports, 9).config == "LLL"    # tie on val ACER -> faster
    pick = widgets.best_under_budget(reports, 6)
    assert pick.config is None and "fastest" in pick.reason and "LLL" in pick.reason  # NoPTA never chosen
    assert widgets.best_under_budget(reports, 6, include_reference=True).config == "NoPTA"
    assert widgets.best_under_budget(reports, -1).config is None
    assert "validation" in widgets.best_under_budget(reports, 100).reason


def test_budget_with_undefined_validation_acer_takes_the_fastest():
    reports = {"HHH": _rep("HHH", 10.0, float("nan"), 1.0), "LLL": _rep("LLL", 7.0, float("nan"), 2.0)}
    pick = widgets.best_under_budget(reports, 20)
    assert pick.config == "LLL" and "undefined" in pick.reason


def test_state_budget_on_real_reports(state):
    st = _fresh_state(state)
    slowest = max(r["latency_ms"] for r in st.reports.values())
    pick = st.apply_budget(slowest + 1)
    assert pick.config == widgets.best_under_budget(st.reports, slowest + 1).config == st.current
    st.select("HHH")
    pick = st.apply_budget(1e-6)
    assert pick.config is None and "no configuration fits" in pick.reason and st.current == "HHH"


# ------------------------------------------------------------------------------------------ widget
def test_widget_builds_without_a_display(state):
    ui = widgets.build_widget(_fresh_state(state))
    bundle = ui._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert ui.grid.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert "HHH" in ui.table.value and len(ui.toggles) == 3
    assert [o[0] for o in ui.toggles[0].options] == ["Heavy", "Light", "Both"]


def test_toggles_change_the_configuration(state):
    ui = widgets.build_widget(_fresh_state(state))
    ui.toggles[0].value = "L"
    assert ui.state.current == ui.config == "LHH"
    ui.toggles[2].value = "B"
    assert ui.state.current == "LHB" and "LHB" in ui.table.value
    ui.set_config("BLL")
    assert [t.value for t in ui.toggles] == ["B", "L", "L"] and ui.state.current == "BLL"


def test_pin_shows_two_configurations(state):
    ui = widgets.build_widget(_fresh_state(state))
    ui.set_config("LLL")
    ui.pin_button.click()
    ui.toggles[1].value = "H"
    assert ui.state.shown() == ["LHL", "LLL"]
    assert "shown: LHL, LLL" in ui.table.value
    ui.unpin_button.click()
    assert ui.state.shown() == ["LHL"]


def test_budget_slider_selects_the_best_fitting_configuration(state):
    ui = widgets.build_widget(_fresh_state(state))
    ui.set_config("BBB")
    target = widgets.best_under_budget(ui.state.reports, ui.budget.max).config
    ui.budget.value = ui.budget.max
    assert ui.state.current == ui.config == target
    assert target in ui.budget_label.value


# ------------------------------------------------------------------------------------------ notebook outputs
def test_comparison_table_and_figure(state, tmp_path):
    df = widgets.comparison_table(state)
    assert list(df["config"][:7]) == ["NoPTA", *CONFIGS] and len(df) == 28
    assert (df["dataset"] == state.dataset).all()
    for f in widgets.BUDGET_FRACTIONS:
        tag = f"{int(round(f * 100))}pct_hhh"
        assert df[f"chosen_{tag}"].sum() <= 1
        assert not df.loc[df["chosen_" + tag], "fits_" + tag].eq(False).any()
        assert not df.loc[df["config"] == "NoPTA", f"fits_{tag}"].any()
    assert df.loc[df["config"] == "HHH", "fits_100pct_hhh"].item()
    path = results.write_table(tmp_path, "branch_comparison", df)
    assert path.is_file()
    choices = widgets.budget_choices(state)
    assert choices.iloc[-1]["chosen"] == "none" and "no configuration fits" in choices.iloc[-1]["reason"]
    fig_path = results.save_figure(tmp_path, "branch_tradeoff", widgets.tradeoff_figure(state))
    assert Path(fig_path).stat().st_size > 1000


class _FakeSet:
    """Just what sample_faces reads from a FaceDataset."""

    def __init__(self, labels):
        self.samples = [type("S", (), {"label": y, "path": f"img{i}.png"})() for i, y in enumerate(labels)]

    def load_crop(self, i):
        return np.zeros((4, 4, 3), np.uint8)


@pytest.mark.parametrize("labels,n,expect", [([0] * 10 + [1] * 10, 8, (4, 4)), ([0] * 3 + [1] * 10, 8, (3, 5)),
                                             ([0] * 10 + [1] * 2, 8, (6, 2)), ([0, 1], 8, (1, 1))])
def test_sample_faces_balance_live_and_attack(labels, n, expect):
    s = widgets.sample_faces(_FakeSet(labels), n, seed=0)
    assert (s.labels.count(0), s.labels.count(1)) == expect
    assert s.indices == sorted(set(s.indices)) and s.indices == widgets.sample_faces(_FakeSet(labels), n, 0).indices
