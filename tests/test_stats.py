"""paperkit.stats: worst-type APCER by hand, the subject bootstrap, paired intervals, the verdict rule."""
import numpy as np
import pandas as pd
import pytest

from paperkit import results, stats


def _scored(scores, labels, subjects, types):
    return stats.Scored(np.array(scores, float), np.array(labels), np.array(subjects), np.array(types))


def test_worst_type_apcer_by_hand():
    # type 1 (print): 4 attacks, 1 accepted (score < 0.5) -> 25 %; type 7 (PC screen): 2 attacks, 2 accepted -> 100 %
    # pooled APCER = 3/6 = 50 %; bona fide: 4, 1 rejected -> BPCER 25 %
    scores = [0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.6]
    labels = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    types = [1, 1, 1, 1, 7, 7, 0, 0, 0, 0]
    q = stats.quality(_scored(scores, labels, list("abcdefghij"), types), n_boot=50)
    assert q["apcer"] == pytest.approx(50.0)
    assert q["apcer_worst_type"] == pytest.approx(100.0)
    assert q["apcer_worst_type_code"] == 7
    assert q["bpcer"] == pytest.approx(25.0)
    assert q["acer"] == pytest.approx(37.5)
    assert q["acer_iso"] == pytest.approx(62.5)
    assert q["accuracy"] == pytest.approx(60.0)


def test_bootstrap_resamples_subjects_not_images():
    # two subjects; subject "a" is always right (10 images), subject "b" always wrong (10 images).
    # Resampling subjects gives accuracy 0, 50 or 100 % per replicate; resampling images would give a
    # narrow band around 50 %.
    n = 10
    scores = [0.9] * n + [0.1] * n + [0.1] * n + [0.9] * n
    labels = [1] * n + [0] * n + [1] * n + [0] * n
    subjects = ["a"] * (2 * n) + ["b"] * (2 * n)
    types = [1] * n + [0] * n + [1] * n + [0] * n
    s = _scored(scores, labels, subjects, types)
    keys, inv = stats._subject_index(s.subjects)
    W = stats._weights(len(keys), 400, 0)
    boot = stats._rates(W @ stats._counts(s, 0.5, inv, len(keys), np.array([1])), np.array([1]))["accuracy"]
    assert set(np.round(boot, 6)) <= {0.0, 50.0, 100.0}
    q = stats.quality(s, n_boot=400)
    assert q["accuracy"] == pytest.approx(50.0)
    assert q["accuracy_ci_low"] == 0.0 and q["accuracy_ci_high"] == 100.0
    assert q["n_subjects"] == 2 and q["n_images"] == 4 * n


def test_interval_covers_the_truth_most_of_the_time():
    # 60 subjects, each with its own error rate: the 95 % interval should cover the population ACER
    rng = np.random.default_rng(0)
    hits, trials = 0, 25
    for t in range(trials):
        subj, sc, lab, typ = [], [], [], []
        for i in range(60):
            p_err = rng.uniform(0.0, 0.2)
            for j in range(10):
                y = j % 2
                wrong = rng.random() < p_err
                subj.append(f"s{i}")
                lab.append(y)
                typ.append(1 if y else 0)
                sc.append((0.2 if y else 0.8) if wrong else (0.8 if y else 0.2))
        q = stats.quality(_scored(sc, lab, subj, typ), n_boot=200, seed=t)
        hits += q["acer_ci_low"] <= 10.0 <= q["acer_ci_high"]  # E[p_err] = 10 %
    assert hits >= 0.8 * trials


def test_bootstrap_is_reproducible():
    rng = np.random.default_rng(1)
    s = _scored(rng.random(200), rng.integers(0, 2, 200), rng.integers(0, 20, 200).astype(str), np.ones(200))
    a, b = stats.quality(s, seed=3), stats.quality(s, seed=3)
    assert a.keys() == b.keys()
    np.testing.assert_array_equal(np.array(list(a.values())), np.array(list(b.values())))


def test_paired_difference_identical_models_is_zero_and_sign_is_right():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    subj = rng.integers(0, 30, 300).astype(str)
    a = _scored(np.where(y == 1, 0.9, 0.1), y, subj, y)
    noisy = np.where(rng.random(300) < 0.3, 1 - np.where(y == 1, 0.9, 0.1), np.where(y == 1, 0.9, 0.1))
    b = _scored(noisy, y, subj, y)
    same = stats.paired_difference(a, a)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    d = stats.paired_difference(a, b)
    assert d.value < 0 and d.high < 0  # a is clearly better (lower ACER)
    with pytest.raises(ValueError, match="same images"):
        stats.paired_difference(a, _scored(a.scores[:10], y[:10], subj[:10], y[:10]))


def test_paired_statistic_ratio_of_accuracies():
    y = np.array([0, 1] * 50)
    subj = np.repeat(np.arange(20).astype(str), 5)
    a = _scored(np.where(y == 1, 0.9, 0.1), y, subj, y)
    r = stats.paired_statistic([a, a], lambda m: m[0]["accuracy"] / m[1]["accuracy"], n_boot=100)
    assert r.value == pytest.approx(1.0) and r.low == pytest.approx(1.0) and r.high == pytest.approx(1.0)


def test_verdict_rule():
    assert stats.verdict(1.0, 2.0, 3.0, "below") == stats.HOLDS
    assert stats.verdict(3.5, 4.0, 3.0, "below") == stats.FAILS
    assert stats.verdict(2.0, 4.0, 3.0, "below") == stats.INCONCLUSIVE   # straddles
    assert stats.verdict(2.0, 3.0, 3.0, "below") == stats.INCONCLUSIVE   # touches: strict rule not shown
    assert stats.verdict(2.0, 3.0, 3.0, "at_most") == stats.HOLDS
    assert stats.verdict(7.5, 9.0, 7.0, "at_least") == stats.HOLDS
    assert stats.verdict(5.0, 6.9, 7.0, "at_least") == stats.FAILS
    assert stats.verdict(6.0, 8.0, 7.0, "above") == stats.INCONCLUSIVE
    assert stats.verdict(float("nan"), 1.0, 0.0) == stats.NA
    assert stats.within_verdict(-0.2, 0.3, -0.5, 0.5) == stats.HOLDS
    assert stats.within_verdict(-0.7, 0.3, -0.5, 0.5) == stats.INCONCLUSIVE
    assert stats.within_verdict(0.6, 0.9, -0.5, 0.5) == stats.FAILS
    with pytest.raises(ValueError, match="holds_if"):
        stats.verdict(0, 1, 0.5, "sideways")


def test_ratio_interval_paired_cancels_drift():
    # the machine slows down round by round; b is always 1.25x a within a round
    drift = np.linspace(1.0, 3.0, 15)
    a, b = 1.0 * drift, 1.25 * drift
    r = stats.ratio_interval(a, b, paired=True)
    assert r.value == pytest.approx(0.8)
    assert r.low == pytest.approx(0.8) and r.high == pytest.approx(0.8)
    un = stats.ratio_interval(a, b, paired=False)
    assert un.high - un.low > 0.1  # unpaired, the drift widens the interval
    with pytest.raises(ValueError, match="equal counts"):
        stats.ratio_interval([1, 2], [1, 2, 3])


def test_thresholds_and_rows():
    y = np.array([0] * 50 + [1] * 50)
    val = _scored(np.r_[np.linspace(0, 0.6, 50), np.linspace(0.4, 1, 50)], y, np.arange(100).astype(str), y)
    th = stats.thresholds(val)
    assert th["fixed_0.5"] == 0.5 and 0.4 <= th["val_eer"] <= 0.6
    rows = stats.quality_rows(val, val, n_boot=50)
    assert [r["operating_point"] for r in rows] == ["fixed_0.5", "val_eer"]
    assert np.isnan(rows[0]["tpr_at_fpr_1e-2"])  # < 1000 bona fide
    assert stats.thresholds(None) == {"fixed_0.5": 0.5}


def test_bootstrap_auc_matches_sklearn_on_the_identity_replicate():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    sc = np.round(rng.random(300), 2)  # ties
    s = _scored(sc, y, rng.integers(0, 25, 300).astype(str), y)
    keys, inv = stats._subject_index(s.subjects)
    W = np.vstack([np.ones(len(keys)), stats._weights(len(keys), 3, 0)])
    got = stats._auc_replicates(s, inv, len(keys), W)
    assert got[0] == pytest.approx(roc_auc_score(y, sc))
    w_img = W[1][inv]
    assert got[1] == pytest.approx(roc_auc_score(y, sc, sample_weight=w_img))


def test_mean_auc_of_seeds_uses_one_joint_resample():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200)
    subj = rng.integers(0, 20, 200).astype(str)
    a = _scored(y * 0.3 + rng.random(200), y, subj, y)
    b = _scored(y * 0.1 + rng.random(200), y, subj, y)
    q = stats.quality(a, n_boot=500, seed=0)
    same = stats.mean_auc([a, a], n_boot=500, seed=0)     # one model twice: its own AUC and interval
    assert (same.value, same.low, same.high) == pytest.approx((q["auc"], q["auc_ci_low"], q["auc_ci_high"]))
    both = stats.mean_auc([a, b], n_boot=500, seed=0)
    qb = stats.quality(b, n_boot=500, seed=0)
    assert both.value == pytest.approx((q["auc"] + qb["auc"]) / 2) and both.n == 20
    assert q["auc_ci_low"] > both.low > qb["auc_ci_low"] and both.low < both.value < both.high
    with pytest.raises(ValueError):
        stats.mean_auc([a, _scored(b.scores[:10], y[:10], subj[:10], y[:10])])


def test_tpr_at_fpr_needs_enough_bona_fide():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(2000, int), np.ones(500, int)]
    sc = np.r_[rng.uniform(0, 0.5, 2000), rng.uniform(0.4, 1.0, 500)]
    s = _scored(sc, y, np.arange(2500).astype(str), y)
    t = stats.tpr_at_fpr(s)
    assert 75 < t < 100


def test_across_seeds_adds_mean_and_std_rows_only_with_several_seeds():
    df = pd.DataFrame({"config": ["A", "A", "B", "B"], "seed": [0, 1, 0, 1], "acer": [1.0, 3.0, 2.0, 2.0],
                       "dataset": "synthetic"})
    out = stats.across_seeds(df, ["config"], ["acer"])
    mean = out[(out["seed"] == "mean")].set_index("config")["acer"]
    std = out[(out["seed"] == "std")].set_index("config")["acer"]
    assert mean["A"] == 2.0 and std["B"] == 0.0 and std["A"] == pytest.approx(np.sqrt(2))
    one = df[df["seed"] == 0]
    assert stats.across_seeds(one, ["config"], ["acer"]) is one


def test_predictions_roundtrip(tmp_path):
    s = _scored([0.1, 0.9], [0, 1], ["007", "008"], [0, 3])
    df = s.frame(model="m", config="", bn="", fmt="fp32", seed=0, split="test", dataset="synthetic x")
    results.write_predictions(tmp_path, "p", df)
    back = results.read_predictions(tmp_path, "p")
    assert back["subject"].tolist() == ["007", "008"] and back["config"].tolist() == ["", ""]
    again = stats.Scored.from_frame(back)
    assert np.allclose(again.scores, s.scores) and list(again.subjects) == ["007", "008"]
    first = (tmp_path / "predictions" / "p.csv.gz").read_bytes()
    results.write_predictions(tmp_path, "p", df)
    assert (tmp_path / "predictions" / "p.csv.gz").read_bytes() == first  # reruns give the same bytes
    with pytest.raises(ValueError, match="lack column"):
        results.write_predictions(tmp_path, "q", df.drop(columns=["bn"]))
    assert results.read_predictions(tmp_path, "absent") is None
