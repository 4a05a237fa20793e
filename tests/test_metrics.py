"""Metrics against hand-computed confusion matrices (attack = positive, ISO/IEC 30107-3)."""
import math

import numpy as np
import pytest

from paperkit import metrics

# 4 attacks (label 1) and 6 bona fide (label 0). At threshold 0.5:
# attacks scored 0.9, 0.8, 0.6 -> detected (TP=3); 0.2 -> accepted (FN=1)
# bona fide 0.7 -> rejected (FP=1); 0.1, 0.3, 0.4, 0.2, 0.05 -> accepted (TN=5)
SCORES = [0.9, 0.8, 0.6, 0.2, 0.7, 0.1, 0.3, 0.4, 0.2, 0.05]
LABELS = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]


def test_confusion_by_hand():
    c = metrics.confusion(SCORES, LABELS)
    assert (c.tp, c.fn, c.tn, c.fp) == (3, 1, 5, 1)


def test_iso_rates_by_hand():
    m = metrics.evaluate(SCORES, LABELS)
    assert m["apcer"] == pytest.approx(1 / 4)      # attacks accepted / attacks
    assert m["bpcer"] == pytest.approx(1 / 6)      # bona fide rejected / bona fide
    assert m["acer"] == pytest.approx((1 / 4 + 1 / 6) / 2)
    assert m["accuracy"] == pytest.approx(8 / 10)


def test_threshold_moves_errors():
    c = metrics.confusion(SCORES, LABELS, threshold=0.75)
    assert (c.tp, c.fn, c.tn, c.fp) == (2, 2, 6, 0)
    assert metrics.hter(SCORES, LABELS, 0.75) == pytest.approx((2 / 4 + 0) / 2)


def test_auc_and_eer_by_hand():
    # (attack, bona fide) pairs ranked correctly: 0.9 and 0.8 beat all 6, 0.6 beats 5 (not 0.7),
    # 0.2 beats 0.1 and 0.05 and ties 0.2 (counts half)
    correct = 6 + 6 + 5 + (2 + 0.5)
    assert metrics.roc_auc(SCORES, LABELS) == pytest.approx(correct / 24)
    e, thr = metrics.eer([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    assert e == pytest.approx(0.0)
    assert 0.2 < thr <= 0.8


def test_perfect_and_inverted():
    assert metrics.evaluate([0.9, 0.1], [1, 0])["acer"] == 0
    assert metrics.evaluate([0.1, 0.9], [1, 0])["acer"] == 1


def test_video_scores_mean_per_video():
    s, y = metrics.video_scores([0.2, 0.4, 0.9, 0.7], [0, 0, 1, 1], ["a", "a", "b", "b"])
    assert np.allclose(s, [0.3, 0.8]) and list(y) == [0, 1]
    with pytest.raises(ValueError, match="mixes live and spoof"):
        metrics.video_scores([0.2, 0.4], [0, 1], ["a", "a"])


@pytest.mark.parametrize("scores,labels,msg", [
    ([], [], "no scores"), ([0.1, 0.2], [0], "differ in length"), ([0.1], [2], "labels must be"),
    ([math.nan], [1], "NaN"),
])
def test_bad_input(scores, labels, msg):
    with pytest.raises(ValueError, match=msg):
        metrics.evaluate(scores, labels)


def test_single_class_gives_nan_auc_not_crash():
    m = metrics.evaluate([0.1, 0.2], [0, 0])
    assert math.isnan(m["auc"]) and math.isnan(m["apcer"]) and m["bpcer"] == 0
