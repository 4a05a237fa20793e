"""The claim record and the rule that judges it: what a claim is (`Claim`), what was measured (`Measured`),
the three-valued verdict (`judge`), the registry the per-seed claims join (`claim`, `CLAIMS`), and the run
folder they read (`Run`, `load_run`) with the helpers that turn predictions and tables into intervals.

The per-seed claims are in :mod:`paperkit.studies.seed_claims`; notebook 04's table and figure in
:mod:`paperkit.studies.claims` (whose docstring says where every interval comes from).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from paperkit import results, stats
from paperkit.profiles import Profile, get_profile, resolve_seeds


HOLDS, FAILS, INCONCLUSIVE, NA = stats.HOLDS, stats.FAILS, stats.INCONCLUSIVE, stats.NA
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, NA)
S000, S001, S002, S003 = "000 PTA", "001 generalization", "002 texture INT8", "003 SWAP distillation"
TABLES = ("table3_quality", "table4_complexity", "table5_training", "figure2_val_acer", "texture_deploy",
          "texture_int8_agreement", "swap", "cross_domain_hter")
PREDICTIONS = ("table3_quality", "texture", "swap", "cross_domain")
FIXED = "fixed_0.5"
BOOT_SEED = 0
COLUMNS = ("seed", "id", "claim", "paper", "ours", "dataset", "quantity", "value", "ci_low", "ci_high", "n",
           "threshold", "holds_if", "verdict", "rule", "source")
_PAIRED = "95% CI: paired subject bootstrap over the same test images"


class Unmeasurable(Exception):
    """A claim cannot be judged from this run; the message says what is missing and who writes it."""


@dataclass(frozen=True)
class Measured:
    """The tested quantity: point, 95% interval, bootstrap units, and a human-readable summary."""

    value: float
    low: float
    high: float
    n: float
    ours: str


@dataclass(frozen=True)
class Claim:
    id: str
    seed: str
    text: str
    paper: str
    quantity: str
    threshold: float
    holds_if: str  # stats.verdict's below / at_most / above / at_least, or "within" (|quantity| <= threshold)
    rule: str
    source: str
    label: str  # short name for the figure
    measure: Callable[["Run"], Measured]


CLAIMS: list[Claim] = []


def claim(id: str, seed: str, text: str, paper: str, quantity: str, threshold: float, holds_if: str, rule: str,
          source: str, label: str) -> Callable[[Callable[["Run"], Measured]], Callable[["Run"], Measured]]:
    def register(fn: Callable[["Run"], Measured]) -> Callable[["Run"], Measured]:
        CLAIMS.append(Claim(id, seed, text, paper, quantity, threshold, holds_if, rule, source, label, fn))
        return fn
    return register



def judge(c: Claim, m: Measured) -> str:
    """The three-valued verdict of one claim from its interval (never from the point alone)."""
    if c.holds_if == "within":
        return stats.within_verdict(m.low, m.high, -c.threshold, c.threshold)
    return stats.verdict(m.low, m.high, c.threshold, c.holds_if)



# ================================================================================ reading the run
@dataclass
class Run:
    """What notebooks 00-03 wrote into one run folder, restricted to the training seeds being judged."""

    run_dir: Path
    tables: dict[str, pd.DataFrame | None]
    predictions: dict[str, pd.DataFrame | None]
    seeds: tuple[int, ...]
    n_boot: int

    @property
    def dataset(self) -> str:
        for df in [*self.tables.values(), *self.predictions.values()]:
            if df is not None and "dataset" in df and len(df):
                return str(df["dataset"].iloc[0])
        return "none"

    @property
    def synthetic(self) -> bool:
        return self.dataset.startswith("synthetic")

    def table(self, name: str, *columns: str) -> pd.DataFrame:
        """The table's rows of the judged seeds (per-seed rows, not the mean/std rows); every column named
        must exist, else the claim is not measurable."""
        df = self.tables.get(name)
        if df is None:
            raise Unmeasurable(f"tables/{name}.csv missing ({_WRITER.get(name, 'an earlier notebook')} writes it)")
        missing = [c for c in columns if c not in df]
        if missing:
            raise Unmeasurable(f"tables/{name}.csv has no column(s) {missing}")
        if "seed" in df:
            df = df[df["seed"].astype(str).isin({str(s) for s in self.seeds})]
            if df.empty:
                raise Unmeasurable(f"tables/{name}.csv has no rows for seeds {list(self.seeds)}")
        if "operating_point" in df and (df["operating_point"] == FIXED).any():
            df = df[df["operating_point"] == FIXED]
        return df

    def preds(self, name: str, split: str = "test") -> pd.DataFrame:
        """Per-image predictions of the judged seeds on one split."""
        df = self.predictions.get(name)
        if df is None:
            raise Unmeasurable(f"predictions/{name}.csv.gz missing ({_WRITER.get(name, 'an earlier notebook')} "
                               "writes it); a paired interval needs the per-image scores")
        missing = [c for c in ("score", "label", "subject", "seed", "split") if c not in df]
        if missing:
            raise Unmeasurable(f"predictions/{name}.csv.gz has no column(s) {missing}")
        df = df[df["seed"].astype(str).isin({str(s) for s in self.seeds})]
        if df.empty:
            raise Unmeasurable(f"predictions/{name}.csv.gz has no rows for seeds {list(self.seeds)}")
        if split:
            df = df[df["split"] == split]
            if df.empty:
                raise Unmeasurable(f"predictions/{name}.csv.gz has no {split!r} rows")
        return df


_WRITER = {"table3_quality": "notebook 01", "table4_complexity": "notebook 01", "table5_training": "notebook 01",
           "figure2_val_acer": "notebook 01", "texture_deploy": "notebook 02", "texture_int8_agreement": "notebook 02",
           "texture": "notebook 02", "swap": "notebook 03", "cross_domain_hter": "notebook 03",
           "cross_domain": "notebook 03"}


def _normalise(df: pd.DataFrame | None) -> pd.DataFrame | None:
    """Empty strings for the 'does not apply' columns (CSV reads them back as NaN), str subject ids."""
    if df is None:
        return None
    df = df.copy()
    for c in ("model", "config", "bn", "fmt", "split", "subject", "video"):
        if c in df:
            df[c] = df[c].fillna("").astype(str)
    if "spoof_type" in df:
        df["spoof_type"] = pd.to_numeric(df["spoof_type"], errors="coerce").fillna(0).astype(np.int64)
    return df


def load_run(run_dir: str | Path, profile: str | Profile = "default", seeds: Any = None,
             n_boot: int | None = None) -> Run:
    prof = get_profile(profile)
    return Run(Path(run_dir), {n: results.read_table(run_dir, n) for n in TABLES},
               {n: _normalise(results.read_predictions(run_dir, n)) for n in PREDICTIONS},
               resolve_seeds(prof, seeds), int(n_boot or prof.bootstrap_samples))


# ================================================================================ building intervals
def _one(df: pd.DataFrame, what: str, prefer: dict[str, Sequence[str]] | None = None, **eq: str) -> pd.DataFrame:
    """The rows of exactly one model variant: `eq` filters (column == value); where a column still has
    several values, the first present value of `prefer[column]` is taken, else it is ambiguous."""
    sel = df
    for k, v in eq.items():
        if k not in sel:
            raise Unmeasurable(f"{what}: predictions have no column {k!r}")
        sel = sel[sel[k] == v]
    if sel.empty:
        raise Unmeasurable(f"{what}: no predictions with " + ", ".join(f"{k}={v!r}" for k, v in eq.items()))
    for col in ("model", "config", "bn", "fmt"):
        if col not in sel or sel[col].nunique() <= 1:
            continue
        options = [p for p in (prefer or {}).get(col, ()) if p in set(sel[col])]
        if not options:
            raise Unmeasurable(f"{what}: several {col} values {sorted(set(sel[col]))} match; cannot tell which")
        sel = sel[sel[col] == options[0]]
    return sel


_ORDER = ["seed", "subject", "label", "spoof_type", "video"]


def _sorted(df: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    """A canonical image order, so two models' rows line up subject by subject (the subject bootstrap only
    needs both models to have the same images per subject)."""
    keys = [k for k in [*extra, *_ORDER] if k in df]
    return df.assign(seed=df["seed"].astype(str)).sort_values(keys, kind="stable").reset_index(drop=True)


def _scored(df: pd.DataFrame) -> stats.Scored:
    """Subjects are kept across seeds, so pooled seeds resample a subject's images of every seed together."""
    return stats.Scored.from_frame(df)


def _aligned(frames: Sequence[pd.DataFrame], what: str, extra: Sequence[str] = ()) -> list[stats.Scored]:
    out = [_sorted(f, extra) for f in frames]
    ref = out[0]
    for f in out[1:]:
        if len(f) != len(ref) or not (np.array_equal(f["subject"].to_numpy(), ref["subject"].to_numpy())
                                      and np.array_equal(f["label"].to_numpy(), ref["label"].to_numpy())):
            raise Unmeasurable(f"{what}: the models were not scored on the same test images "
                               f"({len(ref)} vs {len(f)} rows, or different subjects/labels)")
    return [_scored(f) for f in out]


def _point(s: stats.Scored, threshold: float = 0.5) -> dict[str, float]:
    """Point rates (percent) for the `ours` summaries; intervals come from the stats calls."""
    tp = np.sum((s.scores >= threshold) & (s.labels == 1))
    fn = np.sum((s.scores < threshold) & (s.labels == 1))
    tn = np.sum((s.scores < threshold) & (s.labels == 0))
    fp = np.sum((s.scores >= threshold) & (s.labels == 0))
    apcer = 100 * fn / max(tp + fn, 1)
    bpcer = 100 * fp / max(fp + tn, 1)
    return {"accuracy": 100 * (tp + tn) / max(len(s), 1), "apcer": apcer, "bpcer": bpcer, "acer": (apcer + bpcer) / 2}


def _pair(run: Run, a: stats.Scored, b: stats.Scored, metric: str = "acer") -> stats.Interval:
    return stats.paired_difference(a, b, metric, n_boot=run.n_boot, seed=BOOT_SEED)


def _iv(i: stats.Interval) -> str:
    return f"{i.value:+.2f} [{i.low:+.2f}, {i.high:+.2f}]"


def _measured(i: stats.Interval, ours: str) -> Measured:
    return Measured(i.value, i.low, i.high, i.n, ours)


def _exact(x: float, ours: str) -> Measured:
    """A number with no sampling in it (a count of operations, a file size): the interval is the point."""
    return Measured(float(x), float(x), float(x), float("nan"), ours)


def _table_interval(df: pd.DataFrame, col: str, table: str) -> tuple[float, float, float, float]:
    """Point and CI of a column from a table with `<col>_ci_low/high`; over several seeds' rows, the mean
    point and the envelope of the intervals (holds only if every seed's interval holds)."""
    lo, hi = f"{col}_ci_low", f"{col}_ci_high"
    missing = [c for c in (col, lo, hi) if c not in df]
    if missing:
        raise Unmeasurable(f"tables/{table}.csv has no column(s) {missing}: a verdict needs the interval")
    v = pd.to_numeric(df[col], errors="coerce")
    low, high = pd.to_numeric(df[lo], errors="coerce"), pd.to_numeric(df[hi], errors="coerce")
    if v.isna().all() or low.isna().any() or high.isna().any():
        raise Unmeasurable(f"tables/{table}.csv: {col} or its interval is empty (too few timing rounds?)")
    n = float("nan")
    for c in (f"{col}_n", "latency_rounds", "rounds", "timing_rounds", "n_rounds"):
        if c in df and pd.to_numeric(df[c], errors="coerce").notna().any():
            n = float(pd.to_numeric(df[c], errors="coerce").min())
            break
    return float(v.mean()), float(low.min()), float(high.max()), n


def _row_of(df: pd.DataFrame, col: str, value: str, table: str) -> pd.DataFrame:
    if col not in df:
        raise Unmeasurable(f"tables/{table}.csv has no column {col!r}")
    sel = df[df[col].astype(str) == value]
    if sel.empty:
        raise Unmeasurable(f"tables/{table}.csv has no {col} = {value!r} row")
    return sel

