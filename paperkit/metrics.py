"""Presentation-attack-detection metrics, ISO/IEC 30107-3 with the attack as the positive class.

Seed 000 prints APCER = FP/(FP+TN) and BPCER = FN/(FN+TP) while its own words define APCER as attacks
accepted and BPCER as bona fide rejected; with attack = positive those words give APCER = FN/(FN+TP)
and BPCER = FP/(FP+TN). We follow the words and the ISO standard. Scores are P(attack); a sample is
called an attack when score >= threshold. Rates are fractions here; tables convert to percent.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


@dataclass(frozen=True)
class Confusion:
    tp: int  # attack called attack
    fn: int  # attack accepted as bona fide
    tn: int  # bona fide accepted
    fp: int  # bona fide rejected as attack


def _check(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.shape[0]} vs {y.shape[0]}")
    if s.size == 0:
        raise ValueError("no scores to evaluate (empty split?)")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (bona fide) or 1 (attack)")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf: the model diverged or the input was broken")
    return s, y.astype(np.int64)


def confusion(scores: Sequence[float], labels: Sequence[int], threshold: float = 0.5) -> Confusion:
    s, y = _check(scores, labels)
    pred = s >= threshold
    return Confusion(tp=int(np.sum(pred & (y == 1))), fn=int(np.sum(~pred & (y == 1))),
                     tn=int(np.sum(~pred & (y == 0))), fp=int(np.sum(pred & (y == 0))))


def _rate(num: int, den: int) -> float:
    return float(num) / den if den else float("nan")


def apcer(c: Confusion) -> float:
    """Attacks accepted as bona fide / attacks."""
    return _rate(c.fn, c.fn + c.tp)


def bpcer(c: Confusion) -> float:
    """Bona fide rejected as attacks / bona fide."""
    return _rate(c.fp, c.fp + c.tn)


def acer(c: Confusion) -> float:
    return (apcer(c) + bpcer(c)) / 2


def accuracy(c: Confusion) -> float:
    return _rate(c.tp + c.tn, c.tp + c.tn + c.fp + c.fn)


def hter(scores: Sequence[float], labels: Sequence[int], threshold: float) -> float:
    """(FAR + FRR)/2 at a threshold fixed beforehand (on validation data): FAR = APCER, FRR = BPCER."""
    return acer(confusion(scores, labels, threshold))


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    s, y = _check(scores, labels)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, s))


def eer(scores: Sequence[float], labels: Sequence[int]) -> tuple[float, float]:
    """Equal error rate and the threshold where it occurs (interpolated between ROC points)."""
    s, y = _check(scores, labels)
    if len(np.unique(y)) < 2:
        return float("nan"), 0.5
    fpr, tpr, thr = roc_curve(y, s)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    thr_i = float(np.clip(thr[i], 0.0, 1.0))
    return float((fpr[i] + fnr[i]) / 2), thr_i


def threshold_at_eer(scores: Sequence[float], labels: Sequence[int]) -> float:
    return eer(scores, labels)[1]


def evaluate(scores: Sequence[float], labels: Sequence[int], threshold: float = 0.5) -> dict[str, float]:
    """All headline metrics as fractions: accuracy, apcer, bpcer, acer, auc, eer."""
    c = confusion(scores, labels, threshold)
    return {"accuracy": accuracy(c), "apcer": apcer(c), "bpcer": bpcer(c), "acer": acer(c),
            "auc": roc_auc(scores, labels), "eer": eer(scores, labels)[0]}


def as_percent(m: dict[str, float], keys: Sequence[str] = ("accuracy", "apcer", "bpcer", "acer", "eer", "hter")
               ) -> dict[str, float]:
    return {k: (100.0 * v if k in keys else v) for k, v in m.items()}


def video_scores(scores: Sequence[float], labels: Sequence[int], videos: Sequence[str]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Mean frame score per video (seed 001's session-level aggregation); a video must have one label."""
    s, y = _check(scores, labels)
    v = np.asarray(videos)
    if v.shape != s.shape:
        raise ValueError("one video id per score is needed")
    keys, inv = np.unique(v, return_inverse=True)
    sums = np.bincount(inv, weights=s)
    counts = np.bincount(inv)
    lab_max = np.zeros(len(keys), dtype=np.int64)
    lab_min = np.ones(len(keys), dtype=np.int64)
    np.maximum.at(lab_max, inv, y)
    np.minimum.at(lab_min, inv, y)
    if (lab_max != lab_min).any():
        bad = keys[lab_max != lab_min][0]
        raise ValueError(f"video {bad!r} mixes live and spoof frames; video ids must be per capture session")
    return sums / counts, lab_max
