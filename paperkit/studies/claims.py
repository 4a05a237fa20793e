"""Notebook 04: the four seeds' claims checked against what notebooks 00-03 wrote, with intervals.

Every verdict is computed here by an explicit rule (the `rule` column states the quantity, the threshold
and the interval), never typed by hand, and it is three-valued (`paperkit.stats.verdict`): *holds* only
when the whole 95% interval of the tested quantity lies on the holding side of the threshold, *does not
hold* only when it lies wholly on the other side, *inconclusive* when it allows both. *Not measurable
here* says why: a table, a column or the per-image predictions are missing, or the claim is an absolute
number on a dataset we do not have (CelebA-Spoof accuracy measured on synthetic data).

Where the intervals come from:
- a claim comparing models is computed from the per-image predictions (`run_dir/predictions/*.csv.gz`),
  with a paired subject bootstrap over the same test images (`stats.paired_difference`; a max over
  several models or a ratio uses one joint bootstrap, `stats.paired_statistic`);
- with several training seeds the seeds' test images are pooled (a subject's images of every seed are
  drawn together), so the interval is that of the seed-averaged model; the spread across seeds is in the
  tables' `std` rows;
- a timing claim uses the round-bootstrap ratio intervals the tables carry (`rel_latency_ci_low/high` ...),
  with several seeds the envelope of the seeds' intervals;
- counts that involve no sampling (MAdds, parameters, file size) are exact: their interval is the point.

The claim record and verdict rule are :mod:`paperkit.studies.claim_record`; the claims themselves, one per
function and grouped by seed, are :mod:`paperkit.studies.seed_claims`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from paperkit import results
from paperkit.studies import common
from paperkit.profiles import Profile
from paperkit.studies import seed_claims  # noqa: F401  (importing it registers the claims, in order)
from paperkit.studies.claim_record import (CLAIMS, COLUMNS, FAILS, HOLDS, INCONCLUSIVE, NA, TABLES, VERDICTS,
                                          Unmeasurable, judge, load_run)

# ================================================================================ the table, the figure

def claims_table(run_dir: str | Path, profile: str | Profile = "default", seeds: Any = None,
                 n_boot: int | None = None) -> pd.DataFrame:
    """One row per claim: the paper's figure, ours, the tested quantity with its 95% interval and bootstrap
    units, the threshold, and the verdict computed by `judge`."""
    run = load_run(run_dir, profile, seeds, n_boot)
    rows = []
    for c in CLAIMS:
        base = {"seed": c.seed, "id": c.id, "claim": c.text, "paper": c.paper, "dataset": run.dataset,
                "quantity": c.quantity, "threshold": c.threshold, "holds_if": c.holds_if, "rule": c.rule,
                "source": c.source}
        try:
            m = c.measure(run)
        except Unmeasurable as e:
            rows.append({**base, "ours": str(e), "value": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": np.nan,
                         "verdict": NA})
            continue
        except (KeyError, IndexError, ValueError, TypeError) as e:  # a table of an unexpected shape: say so
            rows.append({**base, "ours": f"cannot read the inputs: {e!r}", "value": np.nan, "ci_low": np.nan,
                         "ci_high": np.nan, "n": np.nan, "verdict": NA})
            continue
        rows.append({**base, "ours": m.ours, "value": m.value, "ci_low": m.low, "ci_high": m.high, "n": m.n,
                     "verdict": judge(c, m)})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write_claims(run_dir: str | Path, profile: str | Profile = "default", seeds: Any = None
                 ) -> tuple[pd.DataFrame, Path]:
    df = claims_table(run_dir, profile, seeds)
    return df, results.write_table(run_dir, "claims", df)


NOTEBOOK = "04_results"


def setup(profile: str = "default", data_root: str = "", run_dir: str = "../results", seeds: Any = None,
          overrides: dict[str, Any] | None = None) -> common.Study:
    """Notebook 04's study: the profile (+ `overrides`), the dataset root (for the manifest) and the
    training seeds to judge (`study.seeds`); no loaders, this notebook reads the run's tables."""
    study = common.setup(common.Study, NOTEBOOK, profile, data_root, run_dir, seeds, overrides, loaders=False)
    print("dataset:", study.dataset, "| training seeds judged:", list(study.seeds))
    return study


# ---------------------------------------------------------------------------- side-by-side display
def _with_ci(df: pd.DataFrame, lead: Sequence[str], metrics_: Sequence[str], digits: int = 2) -> pd.DataFrame:
    """Display copy: each metric as "value [low, high]" when its CI columns exist, its paper_ column beside it."""
    out = df[[c for c in lead if c in df]].copy()
    for m in metrics_:
        if m not in df:
            continue
        if f"{m}_ci_low" in df and f"{m}_ci_high" in df:
            out[f"{m} [95% CI]"] = [
                "" if pd.isna(v) else (f"{v:.{digits}f}" if pd.isna(lo) else f"{v:.{digits}f} [{lo:.{digits}f}, "
                                                                               f"{hi:.{digits}f}]")
                for v, lo, hi in zip(pd.to_numeric(df[m], errors="coerce"), pd.to_numeric(df[f"{m}_ci_low"],
                                     errors="coerce"), pd.to_numeric(df[f"{m}_ci_high"], errors="coerce"))]
        else:
            out[m] = df[m]
        if f"paper_{m}" in df:
            out[f"paper {m}"] = df[f"paper_{m}"]
    return out


def side_by_side(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """The seeds' tables with the paper's columns next to ours and every interval beside its number."""
    t = {n: results.read_table(run_dir, n) for n in TABLES}
    q = ("accuracy", "apcer", "bpcer", "acer", "apcer_worst_type", "acer_iso")
    op = ("operating_point", "seed")
    out: dict[str, pd.DataFrame] = {}
    if (t3 := t["table3_quality"]) is not None:
        out["Seed 000 Table 3 (quality, %)"] = _with_ci(t3, ("config", "bn", *op), q)
    if (t4 := t["table4_complexity"]) is not None:
        out["Seed 000 Table 4 (complexity, latency)"] = _with_ci(
            t4, ("config", "seed"), ("params_m", "madds_m", "latency_ms_ort", "rel_latency"), 3)
    if (t5 := t["table5_training"]) is not None:
        out["Seed 000 Table 5 (training)"] = _with_ci(
            t5, ("model", "seed", "epochs"), ("best_acer", "epoch_time_min", "rel_step_time", "rel_epoch_time"), 3)
    if (d := t["texture_deploy"]) is not None:
        out["Seed 002 (size, accuracy, CPU latency)"] = _with_ci(
            d, ("model", "format", *op, "params_m", "size_kb"), (*q, "latency_ms", "rel_latency"))
    if (s := t["swap"]) is not None:
        out["Seed 003 SWAP"] = _with_ci(s, ("model", "judged_for", *op, "params_m", "size_kb_fp32", "size_kb_int8"),
                                        ("latency_ms", "speedup_vs_teacher", *q, "accuracy_vs_teacher", "energy_mj"))
    if (c := t["cross_domain_hter"]) is not None:
        out["Seed 001 cross-domain HTER (%)"] = _with_ci(c, ("train_domain", "test_domain", "model", "level", "seed"),
                                                         ("hter", "auc", "n_test"))
    return out


# ---------------------------------------------------------------------------- figure
COLOURS = {HOLDS: "#2e7d32", FAILS: "#c62828", INCONCLUSIVE: "#f9a825", NA: "#9e9e9e"}
_OP = {"below": "<", "at_most": "≤", "above": ">", "at_least": "≥", "within": "|·| ≤"}


def margins(row: pd.Series) -> tuple[float, float, float]:
    """Where the interval lies relative to the threshold, oriented so that negative = the holding side:
    (point, low, high) of quantity − threshold (below), threshold − quantity (above), |quantity| − bound
    (within). `holds` iff high < 0 (or <= 0), `does not hold` iff low > 0, as `judge` decides."""
    v, lo, hi, t = row["value"], row["ci_low"], row["ci_high"], row["threshold"]
    if row["holds_if"] in ("above", "at_least"):
        return t - v, t - hi, t - lo
    if row["holds_if"] == "within":
        near = 0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))
        return abs(v) - t, near - t, max(abs(lo), abs(hi)) - t
    return v - t, lo - t, hi - t


def verdict_figure(claims: pd.DataFrame) -> Any:
    """Every claim's interval against its threshold, coloured by verdict, and the counts per seed and
    verdict. Quantities differ in units, so each row is drawn in its own interval's half-widths from the
    threshold (negative = the holding side): a bar wholly left of the line holds, wholly right does not,
    across it is inconclusive; the numbers themselves are printed at the right."""
    from matplotlib.figure import Figure

    order = {s: i for i, s in enumerate(dict.fromkeys(sorted(claims["seed"].astype(str))))}
    df = claims.assign(_o=claims["seed"].astype(str).map(order)).sort_values("_o", kind="stable")
    df = df.reset_index(drop=True)
    n = len(df)
    fig = Figure(figsize=(12, 0.3 * n + 3.2))
    gs = fig.add_gridspec(2, 1, height_ratios=[0.3 * n + 0.6, 1.9], hspace=0.25)
    _interval_panel(fig.add_subplot(gs[0]), df)
    _count_panel(fig.add_subplot(gs[1]), df)
    return fig


_LIM = 6.0   # half-widths shown either side of the threshold


def _claim_row(ax: Any, y: int, r: pd.Series, col: str) -> None:
    """One claim: its interval in half-widths from the threshold, the point, and the numbers at the right."""
    lim = _LIM
    if r["verdict"] == NA or not np.isfinite([r["value"], r["ci_low"], r["ci_high"]]).all():
        ax.text(-lim + 0.15, y, "not measurable here: " + str(r["ours"])[:110], va="center", fontsize=7,
                color="#424242", zorder=4, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85,
                                                 "pad": 0.6})
        return
    p, lo, hi = margins(r)
    hw = (hi - lo) / 2
    if hw > 0:
        c, p = (lo + hi) / 2 / hw, p / hw
        a, b = np.clip([c - 1, c + 1], -lim, lim)
        ax.plot([a, b], [y, y], color=col, lw=7, solid_capstyle="butt", zorder=2)
        if -lim < p < lim:
            ax.plot([p], [y], marker="|", color="black", ms=11, mew=2, zorder=3)
        for edge, m in ((-lim, "<"), (lim, ">")):
            if (c - 1 <= edge if edge < 0 else c + 1 >= edge):
                ax.plot([edge * 0.985], [y], marker=m, color=col, ms=8, zorder=3)
    else:  # an exact count: no interval, drawn at the edge of its side
        ax.plot([-lim * 0.9 if p < 0 else lim * 0.9 if p > 0 else 0], [y], marker="D", color=col, ms=8,
                mec="black", zorder=3)
    num = (f"{r['value']:.3g}" if r["ci_low"] == r["ci_high"] else
           f"{r['value']:.3g} [{r['ci_low']:.3g}, {r['ci_high']:.3g}]")
    ax.text(1.01, y, f"{num}  {_OP.get(r['holds_if'], '?')} {r['threshold']:g}   {r['quantity']}", va="center",
            fontsize=7.5, color=col, transform=ax.get_yaxis_transform())


def _interval_panel(ax: Any, df: pd.DataFrame) -> None:
    from matplotlib.patches import Patch

    labels = {c.id: c.label for c in CLAIMS}
    n, lim = len(df), _LIM
    ax.axvspan(-lim, 0, color="#e8f5e9", zorder=0)
    ax.axvspan(0, lim, color="#ffebee", zorder=0)
    ax.axvline(0, color="black", lw=1.2, zorder=1)
    ytick = []
    for i, r in df.iterrows():
        y = n - 1 - i
        ytick.append((y, f"{str(r['seed'])[:3]}  {labels.get(r['id'], r['id'])}"))
        _claim_row(ax, y, r, COLOURS.get(r["verdict"], COLOURS[NA]))
    for y in [n - 1 - i + 0.5 for i in range(1, n) if df["seed"].iloc[i] != df["seed"].iloc[i - 1]]:
        ax.axhline(y, color="#9e9e9e", lw=0.8)
    ax.set_yticks([y for y, _ in ytick], [s for _, s in ytick], fontsize=8)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlim(-lim, lim)
    ax.set_xlabel("distance of the 95% interval from the threshold, in half-widths of that interval "
                  "(left = holds side; | = point; ◆ = exact count; arrows = beyond the axis)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(f"Claims checked on {df['dataset'].iloc[0] if n else 'no data'}", fontsize=9, loc="left", pad=16)
    ax.legend(handles=[Patch(color=COLOURS[v], label=v) for v in VERDICTS], fontsize=7.5, loc="lower right",
              bbox_to_anchor=(1, 1.0), ncol=4, frameon=False)


def _count_panel(ax2: Any, df: pd.DataFrame) -> None:
    counts = df.groupby(["seed", "verdict"]).size().unstack(fill_value=0).reindex(columns=list(VERDICTS),
                                                                                fill_value=0)
    left = np.zeros(len(counts))
    for v in VERDICTS:
        ax2.barh(range(len(counts)), counts[v], left=left, color=COLOURS[v], label=v)
        for j, (x, k) in enumerate(zip(left, counts[v])):
            if k:
                ax2.text(x + k / 2, j, str(int(k)), ha="center", va="center", fontsize=8, color="white")
        left += counts[v].to_numpy()
    ax2.set_yticks(range(len(counts)), list(counts.index), fontsize=8)
    ax2.invert_yaxis()
    ax2.set_xlabel("claims", fontsize=8)
    ax2.set_title("verdicts per seed", fontsize=9)
