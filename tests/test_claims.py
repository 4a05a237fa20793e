"""Claims are judged from intervals: hand-made tables and per-image predictions (no training) must give
the three verdicts where the interval says so, and a missing input must give "not measurable here"."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from paperkit import results
from paperkit.studies import claims, seed_claims

DS = "synthetic (paperkit synth v3, profile smoke, seed 0)"
N_SUBJ, LIVE, SPOOF = 16, 4, 6


def _images(split: str, prefix: str = "s", n_subj: int = N_SUBJ) -> pd.DataFrame:
    """Subjects with live and attack images, two videos each (one live, one attack)."""
    rows = []
    for i in range(n_subj):
        subj = f"{prefix}{split}{i:02d}"
        for k in range(LIVE + SPOOF):
            live = k < LIVE
            rows.append({"subject": subj, "label": 0 if live else 1, "spoof_type": 0 if live else 1 + k % 3,
                         "video": f"{subj}_{'live' if live else 'spoof'}"})
    df = pd.DataFrame(rows)
    df["split"] = split
    return df


def _scores(img: pd.DataFrame, error: float, seed: int) -> np.ndarray:
    """Scores that call a fraction `error` of the images wrong (by image, fixed seed)."""
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(img)) < error
    right = np.where(img["label"] == 1, 0.9, 0.1)
    return np.where(wrong, 1 - right, right)


def _variant(img: pd.DataFrame, error: float, seed: int, model: str, config: str = "", bn: str = "",
             fmt: str = "torch", train_seed: int = 0, **extra: str) -> pd.DataFrame:
    df = img.assign(model=model, config=config, bn=bn, fmt=fmt, seed=train_seed, score=_scores(img, error, seed),
                    dataset=DS)
    return df.assign(**extra)


def _both(error: float, seed: int, **kw: str) -> pd.DataFrame:
    return pd.concat([_variant(_images("val"), error, seed + 1000, **kw), _variant(_images("test"), error, seed, **kw)],
                     ignore_index=True)


def write_table3_predictions(run_dir, hhh_error=0.05, nopta_error=0.30, same=False, with_bn=True):
    frames = [_both(nopta_error, 1, model="MobileNetV2", config="NoPTA")]
    for j, cfg in enumerate(seed_claims.PAPER_CONFIGS):
        for bn in ("shared", "recalibrated"):
            err = hhh_error if cfg == "HHH" else 0.10
            # same=True: HHH gets exactly the No-PTA scores (same seed and error)
            frames.append(_both(nopta_error if same else err, 1 if same else 10 + j, model="MobileNetV2+PTA",
                                config=cfg, bn=bn))
    df = pd.concat(frames, ignore_index=True)
    if not with_bn:
        df = df.drop(columns="bn")
    results.write_predictions(run_dir, "table3_quality", df) if with_bn else _write_raw(run_dir, "table3_quality", df)


def _write_raw(run_dir, name, df):
    """Predictions missing a contract column (write_predictions would refuse them)."""
    p = run_dir / "predictions" / f"{name}.csv.gz"
    p.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(p, index=False)


def write_table4(run_dir, lll, bbb=(1.05, 1.02, 1.08)):
    rows = [("NoPTA", 1.0, 1.0, 1.0), ("HHH", 1.01, 0.99, 1.03), ("LLL", *lll), ("BBB", *bbb)]
    results.write_table(run_dir, "table4_complexity", pd.DataFrame(
        [{"config": c, "seed": 0, "madds_m": 100.0, "paper_madds_m": 100.01, "rel_latency": v, "rel_latency_ci_low": lo,
          "rel_latency_ci_high": hi, "latency_rounds": 7, "dataset": DS} for c, v, lo, hi in rows]))


def write_texture(run_dir, int8_error=0.05, same=False):
    frames = [_both(0.05, 3, model="texture", fmt="fp32"),
              _both(0.05 if same else int8_error, 3 if same else 4, model="texture", fmt="int8"),
              _both(0.25, 5, model="texture_no_fourier", fmt="fp32")]
    results.write_predictions(run_dir, "texture", pd.concat(frames, ignore_index=True))
    results.write_table(run_dir, "texture_deploy", pd.DataFrame([
        {"model": "texture", "format": f, "seed": 0, "operating_point": op, "size_kb": s, "accuracy": 95.0,
         "accuracy_ci_low": 93.0, "accuracy_ci_high": 97.0, "latency_ms": 0.9, "latency_ms_ci_low": 0.8,
         "latency_ms_ci_high": 1.0, "latency_rounds": 7, "dataset": DS}
        for f, s in (("fp32", 1400), ("int8", 480)) for op in ("fixed_0.5", "val_eer")]))


def write_swap(run_dir, judged_for=True):
    frames = [_both(0.02, 6, model="teacher", fmt="fp32"), _both(0.25, 7, model="student_alone", fmt="fp32"),
              _both(0.05, 8, model="student_kd_hinton", fmt="fp32"), _both(0.30, 9, model="student_kd", fmt="fp32")]
    results.write_predictions(run_dir, "swap", pd.concat(frames, ignore_index=True))
    t = pd.DataFrame([{"model": m, "seed": 0, "operating_point": "fixed_0.5", "params_m": p, "speedup_vs_teacher": s,
                       "speedup_vs_teacher_ci_low": s - 0.3, "speedup_vs_teacher_ci_high": s + 0.3, "judged_for": j,
                       "dataset": DS}
                      for m, p, s, j in (("teacher", 3.8, 1.0, ""), ("student_alone", 0.4, 4.0, ""),
                                         ("student_kd_hinton", 0.4, 4.2, "seed 003"),
                                         ("student_kd", 0.4, 4.1, "seed 001"))])
    results.write_table(run_dir, "swap", t if judged_for else t.drop(columns="judged_for"))


def write_cross_domain(run_dir):
    frames = []
    for a, b in (("A", "B"), ("B", "A")):
        for m, err, s in (("teacher", 0.03, 20), ("student_alone", 0.30, 21)):
            val = _variant(_images("val", prefix=a), err, s + 100, m, fmt="fp32", config=f"{a}->{a}")
            test = _variant(_images("test", prefix=b), err, s, m, fmt="fp32", config=f"{a}->{b}")
            frames += [val, test]
    results.write_predictions(run_dir, "cross_domain", pd.concat(frames, ignore_index=True))


def _table(run_dir, **kw) -> pd.DataFrame:
    return claims.claims_table(run_dir, profile="smoke", **kw).set_index("id")


# ---------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("lll, verdict", [((0.80, 0.78, 0.83), "holds"), ((0.85, 0.83, 0.88), "inconclusive"),
                                          ((0.90, 0.87, 0.93), "does not hold")])
def test_timing_verdict_follows_the_interval(tmp_path, lll, verdict):
    write_table4(tmp_path, lll)
    df = _table(tmp_path)
    row = df.loc["000_lll_085"]
    assert row["verdict"] == verdict
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(lll[1:])
    assert row["n"] == 7  # timing rounds
    assert "0.85" in row["rule"] and "CI" in row["rule"]


def test_lll_fastest_needs_separated_intervals(tmp_path):
    write_table4(tmp_path, (0.80, 0.78, 0.83))
    assert _table(tmp_path).loc["000_lll_fastest", "verdict"] == "holds"
    write_table4(tmp_path, (0.98, 0.95, 1.00))  # overlaps No-PTA's [1, 1] only at the edge, and HHH's
    assert _table(tmp_path).loc["000_lll_fastest", "verdict"] == "inconclusive"
    write_table4(tmp_path, (1.10, 1.08, 1.12))
    assert _table(tmp_path).loc["000_lll_fastest", "verdict"] == "does not hold"


def test_missing_inputs_are_not_measurable_with_a_reason(tmp_path):
    df = _table(tmp_path)
    assert len(df) >= 20
    assert (df["verdict"] == "not measurable here").all()
    assert df["ours"].str.contains("missing|not available").all()
    assert df[["value", "ci_low", "ci_high"]].isna().all().all()


def test_paired_claims_use_the_predictions(tmp_path):
    write_table3_predictions(tmp_path, hhh_error=0.02, nopta_error=0.35)
    df = _table(tmp_path)
    row = df.loc["000_hhh_vs_nopta_recalibrated"]
    assert row["verdict"] == "holds" and row["ci_high"] < 0
    assert row["n"] == N_SUBJ  # bootstrap units are test subjects
    assert df.loc["000_hhh_vs_nopta_shared", "verdict"] == "holds"
    assert df.loc["000_every_config_vs_nopta", "verdict"] == "holds"  # every config at 10% vs 35%
    # the other direction fails
    write_table3_predictions(tmp_path, hhh_error=0.40, nopta_error=0.02)
    assert _table(tmp_path).loc["000_hhh_vs_nopta_recalibrated", "verdict"] == "does not hold"


def test_identical_predictions_give_a_zero_width_difference(tmp_path):
    write_table3_predictions(tmp_path, same=True)
    write_texture(tmp_path, same=True)
    df = _table(tmp_path)
    hhh = df.loc["000_hhh_vs_nopta_recalibrated"]
    assert (hhh["value"], hhh["ci_low"], hhh["ci_high"]) == (0, 0, 0)
    assert hhh["verdict"] == "does not hold"  # "lower" needs the CI below 0; [0, 0] is not
    int8 = df.loc["002_int8_no_cost"]
    assert (int8["ci_low"], int8["ci_high"]) == (0, 0)
    assert int8["verdict"] == "holds"  # inside [-0.5, 0.5]


def test_int8_equivalence_is_three_valued(tmp_path):
    write_texture(tmp_path, int8_error=0.5)  # INT8 much worse: wholly outside [-0.5, 0.5]
    df = _table(tmp_path)
    assert df.loc["002_int8_no_cost", "verdict"] == "does not hold"
    assert df.loc["002_int8_no_cost", "ci_low"] > 0.5
    assert df.loc["002_fourier_helps", "verdict"] == "holds"
    assert df.loc["002_int8_20ms", "verdict"] == "holds"
    assert df.loc["002_int8_size", "verdict"] == "holds"
    assert df.loc["002_celeba_98", "verdict"] == "not measurable here"  # absolute number on synthetic data
    assert "synthetic" in df.loc["002_celeba_98", "ours"]


def test_a_small_difference_on_few_subjects_is_inconclusive(tmp_path):
    write_texture(tmp_path, int8_error=0.07)  # a couple of points off on 16 subjects
    row = _table(tmp_path).loc["002_int8_no_cost"]
    assert row["ci_low"] < 0.5 < row["ci_high"] or row["ci_low"] < -0.5 < row["ci_high"]
    assert row["verdict"] == "inconclusive"


def test_missing_column_is_not_measurable(tmp_path):
    write_table3_predictions(tmp_path, with_bn=False)
    row = _table(tmp_path).loc["000_hhh_vs_nopta_recalibrated"]
    assert row["verdict"] == "not measurable here" and "bn" in row["ours"]
    write_table4(tmp_path, (0.8, 0.78, 0.83))
    t4 = results.read_table(tmp_path, "table4_complexity").drop(columns=["rel_latency_ci_low", "rel_latency_ci_high"])
    results.write_table(tmp_path, "table4_complexity", t4)
    row = _table(tmp_path).loc["000_lll_085"]
    assert row["verdict"] == "not measurable here" and "rel_latency_ci_low" in row["ours"]


def test_distillation_claims_judge_the_student_named_for_each_seed(tmp_path):
    write_swap(tmp_path)
    df = _table(tmp_path)
    assert "student_kd_hinton" in df.loc["003_kd_helps", "ours"]
    assert df.loc["003_kd_helps", "verdict"] == "holds"             # 5% vs 25% error
    assert "student_kd" in df.loc["001_weighted_kd_helps", "ours"]
    assert df.loc["001_weighted_kd_helps", "verdict"] in ("does not hold", "inconclusive")  # 30% vs 25%
    assert df.loc["003_student_7x", "verdict"] == "does not hold"   # 4.2x [3.9, 4.5] < 7
    ratio = df.loc["003_student_99pct"]
    assert ratio["ci_low"] <= ratio["value"] <= ratio["ci_high"] and ratio["value"] < 1.0
    assert ratio["verdict"] in ("does not hold", "inconclusive")  # 95% vs 98% accuracy
    assert df.loc["003_student_small", "verdict"] == "holds"
    write_swap(tmp_path, judged_for=False)  # falls back to the documented names, and says so
    assert "by name" in _table(tmp_path).loc["003_kd_helps", "ours"]


def test_cross_domain_claims_pool_both_directions(tmp_path):
    write_cross_domain(tmp_path)
    df = _table(tmp_path)
    row = df.loc["001_teacher_generalizes"]
    assert row["verdict"] == "holds" and row["n"] == 2 * N_SUBJ  # test subjects of domains A and B
    assert df.loc["001_video_level", "verdict"] in claims.VERDICTS
    assert np.isfinite(df.loc["001_video_level", "ci_low"])


def test_seeds_not_in_the_run_are_not_measurable(tmp_path):
    write_table3_predictions(tmp_path)
    row = _table(tmp_path, seeds=[1]).loc["000_hhh_vs_nopta_recalibrated"]
    assert row["verdict"] == "not measurable here" and "seeds [1]" in row["ours"]


def test_margins_agree_with_the_verdicts(tmp_path):
    write_table3_predictions(tmp_path)
    write_table4(tmp_path, (0.84, 0.80, 0.88))
    write_texture(tmp_path, int8_error=0.07)
    write_swap(tmp_path)
    write_cross_domain(tmp_path)
    df = claims.claims_table(tmp_path, profile="smoke")
    judged = df[df["verdict"] != "not measurable here"]
    assert set(judged["verdict"]) >= {"holds", "does not hold", "inconclusive"}
    for _, r in judged.iterrows():
        _, lo, hi = claims.margins(r)
        if r["verdict"] == "holds":
            assert hi <= 0, r["id"]
        if r["verdict"] == "does not hold":
            assert lo >= 0, r["id"]
        if r["verdict"] == "inconclusive":
            assert lo <= 0 <= hi, r["id"]


def test_figure_builds_and_claims_csv_has_interval_columns(tmp_path):
    write_table3_predictions(tmp_path)
    write_table4(tmp_path, (0.84, 0.80, 0.88))
    write_texture(tmp_path)
    table, path = claims.write_claims(tmp_path, profile="smoke")
    back = pd.read_csv(path)
    assert {"ci_low", "ci_high", "n", "verdict", "rule"} <= set(back.columns)
    assert set(back["verdict"]) <= set(claims.VERDICTS)
    fig = claims.verdict_figure(table)
    assert len(fig.axes) == 2
    out = results.save_figure(tmp_path, "claims_verdicts", fig)
    assert out.stat().st_size > 10_000


def test_side_by_side_shows_intervals(tmp_path):
    write_texture(tmp_path)
    t = claims.side_by_side(tmp_path)
    d = t["Seed 002 (size, accuracy, CPU latency)"]
    assert d["latency_ms [95% CI]"].iloc[0] == "0.90 [0.80, 1.00]"


def test_several_seeds_pool_their_images_per_subject(tmp_path):
    write_table3_predictions(tmp_path, hhh_error=0.02, nopta_error=0.35)
    one = _table(tmp_path, seeds=[0]).loc["000_hhh_vs_nopta_recalibrated"]
    p = results.read_predictions(tmp_path, "table3_quality")
    results.write_predictions(tmp_path, "table3_quality", pd.concat([p, p.assign(seed=1)], ignore_index=True))
    two = _table(tmp_path, seeds=[0, 1]).loc["000_hhh_vs_nopta_recalibrated"]
    assert two["value"] == pytest.approx(one["value"])  # seed 1 repeats seed 0
    assert two["n"] == N_SUBJ  # a subject's images of both seeds are drawn together, not as new subjects
    assert two["verdict"] == "holds"
