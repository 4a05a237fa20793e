"""Uncertainty for every number a table reports, and the three-valued verdict rule.

Images of one subject are not independent (same face, same session, same medium), so every interval
comes from a bootstrap that resamples test *subjects* with replacement and keeps all of a drawn
subject's images. A comparison of two models on the same test images resamples the same subjects for
both (paired), which removes the between-subject variance the two share. Timing ratios resample
measurement rounds (paired rounds when both candidates ran in the same round).

Rates are in percent (AUC as a fraction), ISO/IEC 30107-3 with the attack as the positive class,
score = P(attack), called attack when score >= threshold (see `paperkit.metrics`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from paperkit import metrics

HOLDS, FAILS, INCONCLUSIVE, NA = "holds", "does not hold", "inconclusive", "not measurable here"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, NA)
OPERATING_POINTS = ("fixed_0.5", "val_eer")
CI_METRICS = ("accuracy", "apcer", "bpcer", "acer", "apcer_worst_type", "acer_iso", "auc")
LEVEL = 0.95
MIN_BONA_FIDE_FOR_TPR = 1000  # TPR at FPR 1e-2 needs >= 10 rejected bona fide to mean anything
# one bootstrap seed per use keeps every interval reproducible without tying them together
_SEED_OFFSET = 7919


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float
    n: int  # bootstrap units: subjects, or timing rounds

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


@dataclass(frozen=True)
class Scored:
    """One model's scores on one split, with what the bootstrap and the per-type APCER need."""

    scores: np.ndarray
    labels: np.ndarray
    subjects: np.ndarray
    spoof_types: np.ndarray
    videos: np.ndarray | None = None

    def __post_init__(self) -> None:
        s, y = metrics._check(self.scores, self.labels)
        object.__setattr__(self, "scores", s)
        object.__setattr__(self, "labels", y)
        for name in ("subjects", "spoof_types") + (("videos",) if self.videos is not None else ()):
            v = np.asarray(getattr(self, name))
            if v.shape != s.shape:
                raise ValueError(f"{name} has {v.size} entries for {s.size} scores; one per image is needed")
            object.__setattr__(self, name, v)
        object.__setattr__(self, "subjects", self.subjects.astype(str))
        object.__setattr__(self, "spoof_types", self.spoof_types.astype(np.int64))

    @classmethod
    def from_dataset(cls, scores: Sequence[float], labels: Sequence[int], dataset: Any) -> "Scored":
        """Subjects, spoof types and videos from a `paperkit.data.FaceDataset` (evaluation loaders keep order)."""
        samples = dataset.samples
        if len(samples) != len(np.asarray(scores).ravel()):
            raise ValueError(f"{len(np.asarray(scores).ravel())} scores for {len(samples)} samples: the loader "
                             "must not shuffle or drop images when scoring")
        return cls(np.asarray(scores), np.asarray(labels), np.array([s.subject for s in samples]),
                   np.array([s.spoof_type for s in samples]), np.array([s.video for s in samples]))

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> "Scored":
        """Back from the per-image predictions `frame` writes (columns score, label, subject, spoof_type)."""
        return cls(df["score"].to_numpy(), df["label"].to_numpy(), df["subject"].astype(str).to_numpy(),
                   df["spoof_type"].to_numpy(), df["video"].astype(str).to_numpy() if "video" in df else None)

    def frame(self, **columns: Any) -> pd.DataFrame:
        """Per-image rows for `results.write_predictions`; `columns` (model, config, split ...) are constants."""
        df = pd.DataFrame({"subject": self.subjects, "spoof_type": self.spoof_types,
                           "video": self.videos if self.videos is not None else "",
                           "label": self.labels, "score": self.scores})
        for k, v in reversed(list(columns.items())):
            df.insert(0, k, v)
        return df

    def __len__(self) -> int:
        return int(self.scores.size)


# --------------------------------------------------------------------------------------------------
# Per-subject counts: the bootstrap sums rows of this matrix with multinomial weights
# --------------------------------------------------------------------------------------------------
def _subject_index(subjects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keys, inv = np.unique(subjects, return_inverse=True)
    return keys, inv


def _counts(s: Scored, threshold: float, inv: np.ndarray, n_subj: int, types: np.ndarray
            ) -> np.ndarray:
    """Columns: tp, fn, tn, fp, then (attacks, accepted attacks) per attack type in `types`."""
    pred = s.scores >= threshold
    att, bf = s.labels == 1, s.labels == 0
    cols = [pred & att, ~pred & att, ~pred & bf, pred & bf]
    for t in types:
        is_t = att & (s.spoof_types == t)
        cols += [is_t, is_t & ~pred]
    m = np.zeros((n_subj, len(cols)))
    for j, c in enumerate(cols):
        m[:, j] = np.bincount(inv, weights=c.astype(np.float64), minlength=n_subj)
    return m


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def _rates(c: np.ndarray, types: np.ndarray) -> dict[str, np.ndarray]:
    """Rates in percent from summed counts (rows = bootstrap replicates, or one row)."""
    tp, fn, tn, fp = c[:, 0], c[:, 1], c[:, 2], c[:, 3]
    apcer = 100 * _div(fn, tp + fn)
    bpcer = 100 * _div(fp, fp + tn)
    out = {"accuracy": 100 * _div(tp + tn, tp + fn + tn + fp), "apcer": apcer, "bpcer": bpcer,
           "acer": (apcer + bpcer) / 2}
    if len(types):
        per_type = 100 * _div(c[:, 5::2], c[:, 4::2])  # (replicates, types); NaN where a type was not drawn
        with np.errstate(all="ignore"):
            worst = np.where(np.isnan(per_type).all(axis=1), np.nan,
                             np.nanmax(np.where(np.isnan(per_type), -np.inf, per_type), axis=1))
        worst_i = np.argmax(np.where(np.isnan(per_type), -np.inf, per_type), axis=1)
        out["apcer_worst_type"] = worst
        out["apcer_worst_type_code"] = types[worst_i].astype(np.float64)
    else:
        out["apcer_worst_type"] = np.full(len(c), np.nan)
        out["apcer_worst_type_code"] = np.full(len(c), np.nan)
    out["acer_iso"] = (out["apcer_worst_type"] + bpcer) / 2
    return out


def _weights(n_subj: int, n_boot: int, seed: int) -> np.ndarray:
    """Multinomial subject multiplicities: row b says how often each subject is drawn in replicate b."""
    rng = np.random.default_rng([seed, _SEED_OFFSET, n_subj])
    return rng.multinomial(n_subj, np.full(n_subj, 1.0 / n_subj), size=n_boot).astype(np.float64)


def _ci(samples: np.ndarray) -> tuple[float, float]:
    x = samples[np.isfinite(samples)]
    if x.size < max(10, 0.5 * samples.size):  # the metric is undefined in most replicates
        return float("nan"), float("nan")
    a = (1 - LEVEL) / 2
    return float(np.quantile(x, a)), float(np.quantile(x, 1 - a))


def _auc_replicates(s: Scored, inv: np.ndarray, n_subj: int, W: np.ndarray) -> np.ndarray:
    """ROC-AUC of every bootstrap replicate at once (ties count one half), without a sort per replicate.

    Per replicate the AUC is sum over attack/bona fide pairs of w_a w_b [s_a > s_b] / (W_a W_b); with the
    scores sorted once, the bona fide weight below each score is a cumulative sum over unique scores."""
    uniq, u_inv = np.unique(s.scores, return_inverse=True)
    att = np.zeros((n_subj, uniq.size))
    bf = np.zeros((n_subj, uniq.size))
    np.add.at(att, (inv[s.labels == 1], u_inv[s.labels == 1]), 1.0)
    np.add.at(bf, (inv[s.labels == 0], u_inv[s.labels == 0]), 1.0)
    A, B = W @ att, W @ bf                       # (replicates, unique scores)
    below = np.cumsum(B, axis=1) - B
    num = (A * (below + 0.5 * B)).sum(axis=1)
    return _div(num, A.sum(axis=1) * B.sum(axis=1))


def tpr_at_fpr(s: Scored, fpr_target: float = 1e-2) -> float:
    """Attack detection rate at the threshold that rejects `fpr_target` of bona fide (percent), or NaN
    when the split has fewer than MIN_BONA_FIDE_FOR_TPR bona fide images (the rate would be a handful of faces)."""
    bf = s.scores[s.labels == 0]
    if bf.size < MIN_BONA_FIDE_FOR_TPR or (s.labels == 1).sum() == 0:
        return float("nan")
    thr = float(np.quantile(bf, 1 - fpr_target, method="higher"))
    return float(100 * np.mean(s.scores[s.labels == 1] > thr))


def quality(test: Scored, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Point estimates and subject-bootstrap 95% intervals of the headline metrics at one threshold."""
    keys, inv = _subject_index(test.subjects)
    types = np.unique(test.spoof_types[test.labels == 1])
    c = _counts(test, threshold, inv, len(keys), types)
    point = {k: float(v[0]) for k, v in _rates(c.sum(axis=0, keepdims=True), types).items()}
    W = _weights(len(keys), n_boot, seed)
    boot = _rates(W @ c, types)
    out: dict[str, float] = {}
    for k in ("accuracy", "apcer", "bpcer", "acer", "apcer_worst_type", "acer_iso"):
        out[k] = point[k]
        out[f"{k}_ci_low"], out[f"{k}_ci_high"] = _ci(boot[k])
    out["apcer_worst_type_code"] = point["apcer_worst_type_code"]
    out["auc"] = metrics.roc_auc(test.scores, test.labels)
    out["auc_ci_low"], out["auc_ci_high"] = _ci(_auc_replicates(test, inv, len(keys), W))
    out["eer"] = 100 * metrics.eer(test.scores, test.labels)[0]
    out["tpr_at_fpr_1e-2"] = tpr_at_fpr(test)
    out["n_images"] = float(len(test))
    out["n_subjects"] = float(len(keys))
    return out


def thresholds(val: Scored | None) -> dict[str, float]:
    """The two operating points: a fixed 0.5 and the EER threshold of the validation split (no test labels)."""
    out = {"fixed_0.5": 0.5}
    if val is not None and len(np.unique(val.labels)) == 2:
        out["val_eer"] = metrics.threshold_at_eer(val.scores, val.labels)
    return out


def quality_rows(test: Scored, val: Scored | None, n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """One row per operating point: `operating_point`, `threshold`, then `quality` at that threshold."""
    return [{"operating_point": op, "threshold": thr, **quality(test, thr, n_boot, seed)}
            for op, thr in thresholds(val).items()]


def _same_images(a: Scored, b: Scored) -> None:
    if len(a) != len(b) or not (np.array_equal(a.labels, b.labels) and np.array_equal(a.subjects, b.subjects)):
        raise ValueError("a paired comparison needs both models scored on the same images in the same order "
                         f"({len(a)} vs {len(b)} images, or labels/subjects differ)")


def paired_difference(a: Scored, b: Scored, metric: str = "acer", threshold_a: float = 0.5,
                      threshold_b: float = 0.5, n_boot: int = 1000, seed: int = 0) -> Interval:
    """metric(a) - metric(b) on the same test images, with a paired subject-bootstrap 95% interval."""
    _same_images(a, b)
    keys, inv = _subject_index(a.subjects)
    types = np.unique(a.spoof_types[a.labels == 1])
    if metric == "auc":
        W = _weights(len(keys), n_boot, seed)
        d = _auc_replicates(a, inv, len(keys), W) - _auc_replicates(b, inv, len(keys), W)
        value = metrics.roc_auc(a.scores, a.labels) - metrics.roc_auc(b.scores, b.labels)
        lo, hi = _ci(d)
        return Interval(float(value), lo, hi, len(keys))
    ca = _counts(a, threshold_a, inv, len(keys), types)
    cb = _counts(b, threshold_b, inv, len(keys), types)
    if metric not in _rates(ca[:1], types):
        raise KeyError(f"unknown metric {metric!r}; choose one of {sorted(_rates(ca[:1], types))} or 'auc'")
    value = _rates(ca.sum(0, keepdims=True), types)[metric][0] - _rates(cb.sum(0, keepdims=True), types)[metric][0]
    W = _weights(len(keys), n_boot, seed)
    d = _rates(W @ ca, types)[metric] - _rates(W @ cb, types)[metric]
    lo, hi = _ci(d)
    return Interval(float(value), lo, hi, len(keys))


def paired_statistic(models: Sequence[Scored], fn: Callable[[list[dict[str, np.ndarray]]], np.ndarray],
                     thresholds_: Sequence[float] | None = None, n_boot: int = 1000, seed: int = 0) -> Interval:
    """Any statistic of several models' rates on the same images, with one joint subject bootstrap.

    `fn` gets one dict of rate arrays per model (key -> array over replicates; index 0 of the point call
    is the estimate) and returns one number per replicate, e.g. the worst configuration's ACER minus the
    baseline's, or the ratio of two accuracies."""
    if not models:
        raise ValueError("no models to compare")
    for m in models[1:]:
        _same_images(models[0], m)
    thr = list(thresholds_) if thresholds_ is not None else [0.5] * len(models)
    keys, inv = _subject_index(models[0].subjects)
    types = np.unique(models[0].spoof_types[models[0].labels == 1])
    cs = [_counts(m, t, inv, len(keys), types) for m, t in zip(models, thr)]
    value = float(np.asarray(fn([_rates(c.sum(0, keepdims=True), types) for c in cs]))[0])
    W = _weights(len(keys), n_boot, seed)
    boot = np.asarray(fn([_rates(W @ c, types) for c in cs]), dtype=np.float64)
    lo, hi = _ci(boot)
    return Interval(value, lo, hi, len(keys))


def mean_auc(models: Sequence[Scored], n_boot: int = 1000, seed: int = 0) -> Interval:
    """Mean ROC-AUC of several models (e.g. training seeds) on the same images, with one joint bootstrap:
    each replicate resamples the units once and averages the models' AUCs on that resample, so the
    interval covers the test sample, and the seeds' spread enters through the mean."""
    if not models:
        raise ValueError("no models to average")
    for m in models[1:]:
        _same_images(models[0], m)
    keys, inv = _subject_index(models[0].subjects)
    W = _weights(len(keys), n_boot, seed)
    boot = np.mean([_auc_replicates(m, inv, len(keys), W) for m in models], axis=0)
    value = float(np.mean([metrics.roc_auc(m.scores, m.labels) for m in models]))
    lo, hi = _ci(boot)
    return Interval(value, lo, hi, len(keys))


def ratio_interval(num: Sequence[float], den: Sequence[float], paired: bool = True, n_boot: int = 2000,
                   seed: int = 0, stat: str = "median") -> Interval:
    """stat(num) / stat(den) with a bootstrap 95% interval over measurement rounds.

    Paired: round i of `num` and of `den` ran back to back (interleaved), so they are resampled together,
    which cancels the machine's drift between rounds."""
    a, b = np.asarray(num, dtype=np.float64).ravel(), np.asarray(den, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("no timing rounds to compare")
    if paired and a.size != b.size:
        raise ValueError(f"paired rounds need equal counts ({a.size} vs {b.size})")
    f = {"median": np.median, "mean": np.mean}.get(stat)
    if f is None:
        raise ValueError(f"stat must be 'median' or 'mean', not {stat!r}")
    value = float(f(a) / f(b))
    if min(a.size, b.size) < 2:
        return Interval(value, float("nan"), float("nan"), int(min(a.size, b.size)))
    rng = np.random.default_rng([seed, _SEED_OFFSET, a.size])
    ia = rng.integers(0, a.size, size=(n_boot, a.size))
    ib = ia if paired else rng.integers(0, b.size, size=(n_boot, b.size))
    r = f(a[ia], axis=1) / f(b[ib], axis=1)
    lo, hi = _ci(r)
    return Interval(value, lo, hi, int(min(a.size, b.size)))


def median_interval(samples: Sequence[float], n_boot: int = 2000, seed: int = 0) -> Interval:
    """Median of repeated timings with a bootstrap 95% interval over rounds."""
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("no timing rounds")
    if x.size < 2:
        return Interval(float(x[0]), float("nan"), float("nan"), 1)
    rng = np.random.default_rng([seed, _SEED_OFFSET, x.size, 1])
    m = np.median(x[rng.integers(0, x.size, size=(n_boot, x.size))], axis=1)
    lo, hi = _ci(m)
    return Interval(float(np.median(x)), lo, hi, int(x.size))


def verdict(low: float, high: float, threshold: float, holds_if: str = "below") -> str:
    """`holds` only when the whole interval lies on the holding side of `threshold`, `does not hold` only
    when it lies wholly on the other side, `inconclusive` when it allows both answers.

    holds_if: "below" (quantity < threshold holds; an interval touching it is inconclusive), "above"
    (quantity > threshold holds), "at_most" (<= holds: high <= threshold), "at_least" (>= holds)."""
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return NA
    if low > high:
        raise ValueError(f"interval [{low}, {high}] has low > high")
    if holds_if == "below":
        return HOLDS if high < threshold else FAILS if low >= threshold else INCONCLUSIVE
    if holds_if == "at_most":
        return HOLDS if high <= threshold else FAILS if low > threshold else INCONCLUSIVE
    if holds_if == "above":
        return HOLDS if low > threshold else FAILS if high <= threshold else INCONCLUSIVE
    if holds_if == "at_least":
        return HOLDS if low >= threshold else FAILS if high < threshold else INCONCLUSIVE
    raise ValueError(f"holds_if must be one of below, at_most, above, at_least, not {holds_if!r}")


def within_verdict(low: float, high: float, lo_bound: float, hi_bound: float) -> str:
    """A two-sided rule (e.g. |delta| <= 0.5): holds when the interval is inside [lo_bound, hi_bound],
    does not hold when it lies wholly outside, inconclusive when it straddles a bound."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return NA
    if lo_bound <= low and high <= hi_bound:
        return HOLDS
    if high < lo_bound or low > hi_bound:
        return FAILS
    return INCONCLUSIVE


def across_seeds(df: pd.DataFrame, by: Sequence[str], metrics_: Sequence[str], seed_col: str = "seed"
                 ) -> pd.DataFrame:
    """Per-seed rows as they are, plus a `mean` and a `std` row per group when more than one seed ran."""
    if seed_col not in df or df[seed_col].nunique() <= 1:
        return df
    out = [df.assign(**{seed_col: df[seed_col].astype(str)})]
    keys = [k for k in by if k in df]
    cols = [m for m in metrics_ if m in df]
    g = df.groupby(keys, sort=False, dropna=False)[cols] if keys else None
    for name, fn in (("mean", "mean"), ("std", "std")):
        agg = (g.agg(fn).reset_index() if g is not None else df[cols].agg(fn).to_frame().T)
        agg[seed_col] = name
        if "dataset" in df and "dataset" not in agg:
            agg["dataset"] = df["dataset"].iloc[0]
        agg["n_seeds"] = df[seed_col].nunique()
        out.append(agg)
    return pd.concat(out, ignore_index=True)
