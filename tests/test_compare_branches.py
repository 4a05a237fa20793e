"""Notebook 05 (paperkit.studies.compare_branches, branch_reports, paperkit.config_tree, paperkit.widgets) driven
headlessly: a tiny PTA model trained 1 epoch by the shared loop on a tiny tree."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import build_tiny_celeba, clean_tree
from paperkit import complexity, config_tree, data, results, widgets
from paperkit.batchnorm import training_calibration
from paperkit.models.pta import CONFIGS, mobilenet_v2_baseline, pta_mobilenet_v2
from paperkit.papers import SEED000_TABLES_3_4
from paperkit.profiles import get_profile, run_name
from paperkit.studies import branch_records, branch_reports, common, compare_branches
from paperkit.train import fit, predict_scores

PROFILE = get_profile("smoke", input_size=32, batch_size=8, num_workers=0, latency_rounds=1, latency_iters=2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder holding what notebook 01 leaves for PROFILE (a smoke variant, so its checkpoint folders
    carry `profiles.run_name`): 01_pta_<run name>_s0 and 01_nopta_<run name>_s0."""
    base = tmp_path_factory.mktemp("widgets")
    root = build_tiny_celeba(base / "celeba", clean_tree(train_subjects=5, test_subjects=2, per_subject=4))
    run_dir = base / "run"
    loaders = data.make_loaders(root, PROFILE, 0)
    torch.manual_seed(0)
    rn = run_name(PROFILE)
    fit(pta_mobilenet_v2(num_classes=2), loaders, run_dir=run_dir, name=f"01_pta_{rn}_s0", epochs=1, lr=1e-3,
        seed=0, before_step=lambda m, g: m.sample_config(g), eval_config=lambda m: m.configure("HHH"),
        progress=False)
    fit(mobilenet_v2_baseline(num_classes=2), loaders, run_dir=run_dir, name=f"01_nopta_{rn}_s0", epochs=1,
        lr=1e-3, seed=0, progress=False)
    return {"root": root, "run_dir": run_dir, "loaders": loaders}


@pytest.fixture(scope="module")
def state(run):
    return compare_branches.prepare(PROFILE, str(run["root"]), run["run_dir"], [0], n_samples=4, progress=False)


def _fresh_state(state):
    """A state sharing the (expensive) reports but with its own selection."""
    return branch_reports.BranchState(profile=state.profile, run_dir=state.run_dir, seeds=state.seeds,
                                      model=state.model, reports=state.reports, samples=state.samples,
                                      dataset=state.dataset)


# ------------------------------------------------------------------------------------------ loading
def test_missing_checkpoint_says_to_run_notebook_01(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"notebook 01.*--only 01"):
        compare_branches.load_pta(tmp_path, "smoke")
    with pytest.raises(FileNotFoundError, match="01_pta_default_s0"):
        compare_branches.prepare("default", "", tmp_path)
    with pytest.raises(FileNotFoundError, match="01_pta_smoke_s3.*seed 3"):
        compare_branches.prepare("smoke", "", tmp_path, [3, 4])
    assert compare_branches.load_nopta(tmp_path, "smoke") is None


def test_load_pta_gives_the_trained_weights(run):
    model = compare_branches.load_pta(run["run_dir"], PROFILE)
    assert model.config == "HHH" and not model.training
    ck = torch.load(compare_branches.checkpoint_path(run["run_dir"], run_name(PROFILE)), weights_only=True)
    for k, v in ck["best_state"].items():
        assert torch.equal(model.state_dict()[k], v), k


def test_all_27_configurations_paper_six_first():
    assert len(config_tree.ALL_CONFIGS) == len(set(config_tree.ALL_CONFIGS)) == 27
    assert config_tree.ALL_CONFIGS[:6] == CONFIGS


# ------------------------------------------------------------------------------------------ scores
def test_staged_scores_equal_plain_forward(run):
    model = compare_branches.load_pta(run["run_dir"], PROFILE)
    ref = compare_branches.load_nopta(run["run_dir"], PROFILE)
    loader = run["loaders"]["test"]
    got, labels = config_tree.staged_scores(model, loader, config_tree.ALL_CONFIGS, reference=ref)
    assert set(got) == set(config_tree.ALL_CONFIGS) | {config_tree.REFERENCE}
    for cfg in ("HHH", "LLL", "BBB", "BLH", "LBL"):
        s, y = predict_scores(model.configure(cfg), loader, channels_last=False)
        np.testing.assert_allclose(got[cfg], s, atol=1e-5)
        np.testing.assert_array_equal(labels, y)
    s, _ = predict_scores(ref, loader, channels_last=False)
    np.testing.assert_allclose(got[config_tree.REFERENCE], s, atol=1e-5)


def test_staged_scores_restore_the_configuration(run):
    model = compare_branches.load_pta(run["run_dir"], PROFILE).configure("LBH")
    config_tree.staged_scores(model, run["loaders"]["val"], ["HHH", "BBB"])
    assert model.config == "LBH"


def test_staged_bn_equals_recalibrating_each_configuration(run):
    """The tree-staged calibration + scoring gives, per configuration, what recalibrate_bn on that
    configuration followed by a plain forward gives (same crops): the shared prefix does not leak stats."""
    from paperkit.batchnorm import bn_buffers, recalibrate_bn

    model = compare_branches.load_pta(run["run_dir"], PROFILE)
    calib = training_calibration(run["loaders"], PROFILE)
    before = bn_buffers(model)
    bn = config_tree.staged_bn_states(model, calib, ["HHH", "LLL", "BLH", "LBL"])
    assert len(bn.nodes) == 3 + 4 + 4 and bn.covers("BLH") and not bn.covers("BBB")
    for k, v in bn_buffers(model).items():
        assert torch.equal(v, before[k]), k  # the model is left as it was
    loader = run["loaders"]["test"]
    got, _ = config_tree.staged_scores(model, loader, ["HHH", "LLL", "BLH", "LBL"], bn=bn)
    plain = config_tree.staged_scores(model, loader, ["LLL"])[0]["LLL"]
    for cfg in ("HHH", "LLL", "BLH", "LBL"):
        ref = compare_branches.load_pta(run["run_dir"], PROFILE).configure(cfg)
        recalibrate_bn(ref, calib)
        for k, v in bn.full(cfg).items():
            torch.testing.assert_close(ref.state_dict()[k], v, msg=k)
        s, _ = predict_scores(ref, loader, channels_last=False)
        np.testing.assert_allclose(got[cfg], s, atol=1e-5)
    assert not np.allclose(plain, got["LLL"], atol=1e-4), "recalibration must change LLL's scores here"
    # extending covers new configurations without recomputing the known nodes' statistics
    n_before = dict(bn.nodes)
    config_tree.staged_bn_states(model, calib, ["BBB"], existing=bn)
    assert bn.covers("BBB") and all(torch.equal(bn.nodes["H"][k], v) for k, v in n_before["H"].items())
    with pytest.raises(KeyError, match="no BatchNorm statistics"):
        config_tree.staged_scores(model, loader, ["HBL"], bn=bn)


def test_score_cache_recalibrates_once_per_configuration(run):
    model = compare_branches.load_pta(run["run_dir"], PROFILE)
    calib = training_calibration(run["loaders"], PROFILE)
    cache = branch_reports.ScoreCache({k: run["loaders"][k] for k in ("val", "test")}, calib=calib)
    assert cache.bn_mode == "recalibrated"
    cache.fill(model, ["HHH", "LLL"])
    assert cache.calibrations == 1 and cache.passes == 2
    cache.scores(model, "test", "HHH")
    cache.fill(model, ["HHH", "LLL"])
    assert cache.calibrations == 1
    cache.scores(model, "val", "BBB")
    assert cache.calibrations == 2 and cache.bn.covers("BBB")


def test_each_configuration_is_evaluated_once(run):
    model = compare_branches.load_pta(run["run_dir"], PROFILE)
    cache = branch_reports.ScoreCache({k: run["loaders"][k] for k in ("val", "test")})
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
    assert set(state.reports) == set(config_tree.ALL_CONFIGS) | {config_tree.REFERENCE}
    assert state.reports["LLL"]["trained_config"] and not state.reports["BBB"]["trained_config"]


def test_report_complexity_matches_direct_count(state):
    model = pta_mobilenet_v2(num_classes=2)
    for cfg in ("BLH", "LLB"):
        model.configure(cfg)
        assert state.reports[cfg]["params_m"] == pytest.approx(complexity.active_params(model) / 1e6)
        assert state.reports[cfg]["madds_m"] == pytest.approx(complexity.madds(model, PROFILE.input_size), abs=1e-6)
    assert state.reports["HHH"]["madds_m"] == pytest.approx(state.reports["NoPTA"]["madds_m"], abs=1e-6)


def test_summed_madds_reproduce_the_paper_at_128():
    got = branch_reports.complexity_by_config(pta_mobilenet_v2(num_classes=2), CONFIGS, 128)
    for cfg in CONFIGS:
        assert got[cfg]["madds_m"] == pytest.approx(SEED000_TABLES_3_4[cfg]["madds_m"], abs=0.02), cfg


def test_config_report_measures_when_not_given(run):
    model = compare_branches.load_pta(run["run_dir"], PROFILE)
    cache = branch_reports.ScoreCache({k: run["loaders"][k] for k in ("val", "test")})
    r = branch_reports.config_report(model, "hlb", cache, input_size=PROFILE.input_size)
    assert r["config"] == "HLB" and r["latency_ms"] > 0 and r["madds_m"] > 0 and r["samples"] == []
    with pytest.raises(ValueError, match="unknown configuration"):
        branch_reports.config_report(model, "HXH", cache)


def test_compare_side_by_side(state):
    df = branch_reports.compare(state.reports, ["HHH", "lll", "NoPTA"])
    assert list(df["config"]) == ["HHH", "LLL", "NoPTA"] and "samples" not in df.columns
    with pytest.raises(KeyError, match="no report"):
        branch_reports.compare({"HHH": state.reports["HHH"]}, ["LLL"])


# ------------------------------------------------------------------------------------------ budget
def _rep(cfg, lat, val_acer, acer):
    return {"config": cfg, "latency_ms": lat, "val_acer": val_acer, "acer": acer, "madds_m": 1.0}


def test_budget_picks_lowest_validation_acer_that_fits():
    reports = {"NoPTA": _rep("NoPTA", 5.0, 0.0, 0.0), "HHH": _rep("HHH", 10.0, 2.0, 9.0),
               "LLL": _rep("LLL", 7.0, 3.0, 1.0), "BBB": _rep("BBB", 12.0, 1.0, 5.0),
               "LHH": _rep("LHH", 8.0, 3.0, 1.0)}
    assert branch_reports.best_under_budget(reports, 100).config == "BBB"
    assert branch_reports.best_under_budget(reports, 11).config == "HHH"  # not LLL, whose *test* ACER is lower
    assert branch_reports.best_under_budget(reports, 9).config == "LLL"    # tie on val ACER -> faster
    pick = branch_reports.best_under_budget(reports, 6)
    assert pick.config is None and "fastest" in pick.reason and "LLL" in pick.reason  # NoPTA never chosen
    assert branch_reports.best_under_budget(reports, 6, include_reference=True).config == "NoPTA"
    assert branch_reports.best_under_budget(reports, -1).config is None
    assert "validation" in branch_reports.best_under_budget(reports, 100).reason


def test_budget_with_undefined_validation_acer_takes_the_fastest():
    reports = {"HHH": _rep("HHH", 10.0, float("nan"), 1.0), "LLL": _rep("LLL", 7.0, float("nan"), 2.0)}
    pick = branch_reports.best_under_budget(reports, 20)
    assert pick.config == "LLL" and "undefined" in pick.reason


def test_state_budget_on_real_reports(state):
    st = _fresh_state(state)
    slowest = max(r["latency_ms"] for r in st.reports.values())
    pick = st.apply_budget(slowest + 1)
    assert pick.config == branch_reports.best_under_budget(st.reports, slowest + 1).config == st.current
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
    target = branch_reports.best_under_budget(ui.state.reports, ui.budget.max).config
    ui.budget.value = ui.budget.max
    assert ui.state.current == ui.config == target
    assert target in ui.budget_label.value


# ------------------------------------------------------------------------------------------ notebook outputs
def test_comparison_table_and_figure(state, tmp_path):
    df = compare_branches.comparison_table(state)
    assert list(df["config"][:7]) == ["NoPTA", *CONFIGS] and len(df) == 28
    assert (df["dataset"] == state.dataset).all()
    for f in compare_branches.BUDGET_FRACTIONS:
        tag = f"{int(round(f * 100))}pct_hhh"
        assert df[f"chosen_{tag}"].sum() <= 1
        assert not df.loc[df["chosen_" + tag], "fits_" + tag].eq(False).any()
        assert not df.loc[df["config"] == "NoPTA", f"fits_{tag}"].any()
    assert df.loc[df["config"] == "HHH", "fits_100pct_hhh"].item()
    path = results.write_table(tmp_path, "branch_comparison", df)
    assert path.is_file()
    choices = compare_branches.budget_choices(state)
    assert choices.iloc[-1]["chosen"] == "none" and "no configuration fits" in choices.iloc[-1]["reason"]
    fig_path = results.save_figure(tmp_path, "branch_tradeoff", compare_branches.tradeoff_figure(state))
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
    s = branch_reports.sample_faces(_FakeSet(labels), n, seed=0)
    assert (s.labels.count(0), s.labels.count(1)) == expect
    again = branch_reports.sample_faces(_FakeSet(labels), n, 0)
    assert s.indices == sorted(set(s.indices)) and s.indices == again.indices


# ------------------------------------------------------------------------------------------ recorded run (fresh clone)
REPO_RESULTS = Path(__file__).resolve().parents[1] / "results"
_LAT = {"H": 3.0, "L": 1.0, "B": 4.0}  # ms per block: HHH 9, LLL 3, BBB 12
_VAL = {"H": 2.0, "L": 4.0, "B": 1.0}  # validation ACER per block, weighted by position


def write_recorded_run(run_dir, profile="default", seed=None, drop=(), status="complete", configs=None):
    """A run folder as a fresh clone has it: notebook 05's table and manifest entry, no checkpoint."""
    import pandas as pd

    rows = [{"config": "NoPTA", "blocks": "reference model", "dataset": "hand-made", "params_m": 2.2,
             "madds_m": 104.0, "latency_ms": 2.0, "accuracy": 99.0, "apcer": 0.0, "bpcer": 0.0, "acer": 0.0,
             "val_acer": 0.0}]
    for c in configs or config_tree.ALL_CONFIGS:
        val = sum(_VAL[m] * (1 + 0.1 * i) for i, m in enumerate(c))
        rows.append({"config": c, "dataset": "hand-made", "params_m": 2.0, "madds_m": 10 * sum(_LAT[m] for m in c),
                     "latency_ms": sum(_LAT[m] for m in c), "accuracy": 90.0, "apcer": val, "bpcer": val + 2,
                     "acer": val + 1, "val_acer": val, "fits_100pct_hhh": True, "definition": "hand-made"})
    df = pd.DataFrame(rows).drop(columns=list(drop))
    df.to_csv(results.run_path(run_dir, "tables", f"{branch_records.RECORDED_TABLE}.csv"), index=False)
    results.update_manifest(run_dir, compare_branches.NOTEBOOK, {
        "status": status, "parameters": {"profile": profile, "data_root": "", "run_dir": "../results",
                                         "seeds": seed}, "git_revision": "abc1234", "outputs": []})
    return run_dir


def test_fresh_clone_shows_the_recorded_run_and_says_so(tmp_path, capsys):
    run_dir = write_recorded_run(tmp_path / "results")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    st = compare_branches.prepare("default", "", run_dir, None)
    first = capsys.readouterr().out.splitlines()
    assert first[0].startswith("RECORDED RUN") and "01_pta_default_s0/best.pt" in first[0]
    text = "\n".join(first)
    for needle in (str(run_dir.resolve()), "git abc1234", "latencies are the RECORDED ones", "not measured on this",
                   "sample-face previews are absent", "--only 01,05", "run notebook 01", "BatchNorm: shared"):
        assert needle in text, needle
    assert st.recorded and st.model is None and st.samples is None and st.profile.name == "default"
    assert set(st.reports) == set(config_tree.ALL_CONFIGS) | {config_tree.REFERENCE}
    assert st.reports["LLL"]["latency_ms"] == 3.0 and st.reports["LLL"]["samples"] == []
    assert "fits_100pct_hhh" not in st.reports["LLL"] and st.reports["LLL"]["bn"] == "shared"
    # the notebook's tables and figure work from the recorded numbers; nothing is written or recorded
    table = compare_branches.comparison_table(st)
    assert len(table) == 28 and table.loc[table["config"] == "HHH", "chosen_100pct_hhh"].item() is False
    assert table.loc[table["config"] == "LBB", "chosen_100pct_hhh"].item()  # 9 ms = HHH: LBB fits, lowest val
    choices = compare_branches.budget_choices(st)
    assert "recorded run's machine" in choices.iloc[-1]["reason"]
    fig = compare_branches.tradeoff_figure(st)
    assert "recorded" in fig.axes[0].get_xlabel()
    assert compare_branches.save_outputs(st, run_dir, table, choices, fig) == []
    assert common.record(st) is None      # the manifest keeps the recorded run's entry
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_widget_works_from_the_recorded_numbers(tmp_path, capsys):
    st = compare_branches.prepare("default", "", write_recorded_run(tmp_path), None)
    ui = widgets.build_widget(st)
    assert "application/vnd.jupyter.widget-view+json" in ui._repr_mimebundle_()
    assert len(ui.toggles) == 3 and ui.config == "HHH"
    assert ui.grid.layout.display == "none" and "no sample faces" in ui.note.value
    assert "not measured on this machine" in ui.root.children[0].value
    # toggle: the configuration and its recorded latency / ACER on screen
    ui.toggles[0].value = "L"
    assert ui.state.current == "LHH"
    row = _html_row(ui.table.value, "LHH")
    assert row[4] == "7.00" and row[8] == f"{st.reports['LHH']['acer']:.2f}"
    # pin: the pinned configuration stays as a second row
    ui.pin_button.click()
    ui.toggles[2].value = "B"
    assert ui.state.shown() == ["LHB", "LHH"] and _html_row(ui.table.value, "LHH") and _html_row(ui.table.value, "LHB")
    ui.unpin_button.click()
    assert ui.state.shown() == ["LHB"] and not _html_row(ui.table.value, "LHH")
    # budget: the best recorded validation ACER within it
    ui.budget.value = 7.0
    assert ui.state.current == ui.config == "LHH" and "LHH" in ui.budget_label.value
    ui.budget.value = 5.0
    assert ui.config == "LLH"
    ui.budget.value = ui.budget.max
    assert ui.config == "BBB"  # NoPTA (2 ms, 0% ACER) is a reference, never chosen
    ui.budget.value = 2.5
    assert ui.config == "BBB" and "recorded run's machine" in ui.budget_label.value


def _html_row(html, config):
    """The cells of `config`'s row in the widget's table (config, blocks, params, MAdds, latency, ...)."""
    import re

    for tr in re.findall(r"<tr>(.*?)</tr>", html, flags=re.S):
        cells = [c.strip() for c in re.findall(r"<td>(.*?)</td>", tr, flags=re.S)]
        if cells and cells[0] == config:
            return cells
    return []


@pytest.mark.parametrize("kw,match", [
    ({"profile": "smoke"}, "recorded with profile 'smoke'"),
    ({"seed": [2]}, "recorded with seed 2"),
    ({"drop": ("val_acer",)}, r"lacks column\(s\) \['val_acer'\]"),
    ({"configs": config_tree.ALL_CONFIGS[:-1]}, "each of the 27 configurations"),
    ({"status": "running"}, "being rerun.*--only 01,05"),
])
def test_recorded_run_that_does_not_fit_is_refused(tmp_path, kw, match):
    write_recorded_run(tmp_path, **kw)
    with pytest.raises(FileNotFoundError, match=r"no trained PTA model.*notebook 01.*no recorded numbers.*" + match):
        compare_branches.prepare("default", "", tmp_path, None)


def test_without_fallback_a_missing_checkpoint_still_stops(tmp_path):
    write_recorded_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="01_pta_default_s0"):
        compare_branches.prepare("default", "", tmp_path, None, fallback=False)


def test_the_committed_default_run_is_usable_on_a_fresh_clone(capsys):
    table = REPO_RESULTS / "tables" / "branch_comparison.csv"
    assert table.is_file(), f"{table} is missing: the committed results ship with the repo; run `make reproduce`"
    st = branch_records.recorded_state(REPO_RESULTS, "default", 0)
    assert set(config_tree.ALL_CONFIGS) <= set(st.reports) and st.provenance["git_revision"] != "unknown"
    ui = widgets.build_widget(st)
    ui.budget.value = ui.budget.max
    assert ui.config == branch_reports.best_under_budget(st.reports, ui.budget.max).config


def test_what_the_live_path_writes_reads_back(state, tmp_path, capsys):
    """The table notebook 05 writes on the live path is the one a fresh clone falls back to."""
    run_dir = tmp_path / "run"
    compare_branches.save_outputs(state, run_dir, compare_branches.comparison_table(state),
                                  compare_branches.budget_choices(state), compare_branches.tradeoff_figure(state))
    back = branch_records.recorded_state(run_dir, "smoke", 0)
    assert set(back.reports) == set(state.reports) and back.bn == state.bn == "recalibrated"
    for c, r in state.reports.items():
        for k in ("latency_ms", "val_acer", "acer", "madds_m", "params_m"):
            assert back.reports[c][k] == pytest.approx(r[k], rel=1e-5, nan_ok=True), (c, k)
    best = branch_reports.best_under_budget
    assert best(back.reports, 1e9).config == best(state.reports, 1e9).config


def test_recorded_table_with_a_missing_latency_is_refused(tmp_path):
    import pandas as pd

    write_recorded_run(tmp_path)
    path = tmp_path / "tables" / f"{branch_records.RECORDED_TABLE}.csv"
    df = pd.read_csv(path)
    df.loc[df["config"] == "BLH", "latency_ms"] = float("nan")
    df.to_csv(path, index=False)
    with pytest.raises(FileNotFoundError, match="BLH has no recorded latency"):
        compare_branches.prepare("default", "", tmp_path, None)
