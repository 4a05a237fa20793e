"""The README's results section, rendered from a run folder's tables so the two can never disagree.

``make reproduce`` into the checkout's ``results/`` rewrites the block between the two markers in
README.md; ``paperkit results summary`` prints it (``--write README.md`` rewrites it by hand), and a
test checks that the committed README matches the committed tables.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from . import results

BEGIN = ("<!-- paperkit results: begin. Written by `paperkit results summary --write README.md` from results/; "
         "do not edit -->")
END = "<!-- paperkit results: end -->"
NOTEBOOK_LABELS = {"00_data": "00", "01_pta_mobilenet": "01", "02_fourier_texture": "02", "03_distillation": "03",
                   "04_results": "04", "05_compare_branches": "05"}


HOLDS_IF = {"below": "<", "above": ">", "at_most": "<=", "at_least": ">=", "within": "|x| <="}


class SummaryError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------ formatting
def _num(v: Any, nd: int = 2) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "" if v is None else str(v)
    return "" if math.isnan(f) else f"{f:.{nd}f}"


def _type_name(code: Any) -> str:
    from .celeba import SPOOF_TYPE_NAMES
    return SPOOF_TYPE_NAMES.get(int(code), f"type {int(code)}")


def _int(v: Any) -> str:
    return f"{int(v):,}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "?"


def _ci(row: pd.Series, col: str, nd: int = 2, suffix: str = "") -> str:
    v = _num(row.get(col), nd)
    lo, hi = _num(row.get(f"{col}_ci_low"), nd), _num(row.get(f"{col}_ci_high"), nd)
    if not v:
        return "n/a"
    return f"{v}{suffix} [{lo}, {hi}]" if lo and hi else f"{v}{suffix}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _first_seed(df: pd.DataFrame) -> pd.DataFrame:
    if "seed" not in df or not len(df):
        return df
    seeds = [s for s in df["seed"].astype(str).unique() if s not in ("mean", "std")]
    return df[df["seed"].astype(str) == seeds[0]] if seeds else df


def _at(df: pd.DataFrame, **match: Any) -> pd.DataFrame:
    for k, v in match.items():
        if k in df:
            df = df[df[k].astype(str) == str(v)]
    return df


def _one(df: pd.DataFrame, **match: Any) -> pd.Series | None:
    sub = _at(df, **match)
    return sub.iloc[0] if len(sub) else None


# ------------------------------------------------------------------------------------------ sections
def _times(total: float, per: str, rep: dict[str, Any], stems: set[str]) -> str:
    """The run's wall time: the sum of the notebooks' times when they ran one at a time; with notebooks side
    by side (reproduce --jobs) the producing run's wall time, when that run produced every notebook shown
    (a later no-op run carries that record forward in `produced_by`)."""
    prod = rep.get("produced_by")
    if isinstance(prod, dict):   # a later no-op run keeps the producing run's record
        jobs, wall, ran = prod.get("jobs"), prod.get("total_wall_time_s"), set(prod.get("notebooks") or ())
    else:
        par = rep.get("parallel") or {}
        jobs = par.get("jobs") if isinstance(par, dict) else None
        wall = rep.get("total_wall_time_s")
        ran = {k for k, v in (rep.get("notebooks") or {}).items()
               if isinstance(v, dict) and v.get("action") == "ran"}
    if isinstance(jobs, int) and jobs > 1 and isinstance(wall, (int, float)) and stems <= ran:
        return (f", {wall / 60:.1f} minutes wall with {jobs} notebooks at a time ({per} min per notebook, "
                "side by side)")
    return f", {total / 60:.1f} minutes in all ({per} min)"


def _header(run_dir: Path, manifest: dict[str, Any]) -> str:
    entries = manifest.get("entries", {})
    rep = entries.get("reproduce", {})
    data = entries.get("00_data", {}).get("dataset", {})
    counts = data.get("counts", {})
    # each notebook's own entry: its time and revision when it last ran (reused notebooks keep theirs)
    books = {k: e for k, e in sorted(entries.items()) if k in NOTEBOOK_LABELS and isinstance(e, dict)}
    times = {k: e["wall_time_s"] for k, e in books.items() if isinstance(e.get("wall_time_s"), (int, float))}
    revs: dict[str, list[str]] = {}
    for k, e in books.items():
        revs.setdefault(str(e.get("git_revision", "?")), []).append(NOTEBOOK_LABELS[k])
    revision = (f"revision {next(iter(revs))}" if len(revs) == 1 else "revisions " + ", ".join(
        f"{r} ({', '.join(nbs)})" for r, nbs in revs.items())) if revs else f"revision {rep.get('git_revision', '?')}"
    per = ", ".join(f"{NOTEBOOK_LABELS.get(k, k)}: {v / 60:.1f}" for k, v in times.items())
    total = sum(times.values()) if times else None
    seeds = rep.get("seeds", rep.get("seed", ""))
    seeds = ", ".join(str(x) for x in seeds) if isinstance(seeds, (list, tuple)) else seeds
    tr, te = counts.get("train", {}), counts.get("test", {})
    name = data.get("name", "?")
    return (f"Measured by `make reproduce` (profile `{rep.get('profile', '?')}`, training seed(s) {seeds}) at "
            f"{revision} on the embedded **synthetic** dataset (`{name}`: "
            f"{data.get('identities', '?')} identities, {_int(tr.get('images'))} train / {_int(te.get('images'))} test "
            f"images, {te.get('subjects', '?')} test subjects at {data.get('image_size', '?')} px)"
            + (_times(total, per, rep, set(times)) if total else "")
            + ". Intervals are 95%, from a bootstrap over test subjects; a comparison uses a paired bootstrap over "
            "the same images. Every CSV is in `results/tables/`, every figure in `results/figures/`, per-image "
            "scores in `results/predictions/`. **These are not CelebA-Spoof numbers.**")


def _seed000(t3: pd.DataFrame | None, t4: pd.DataFrame | None, t5: pd.DataFrame | None) -> str:
    if t3 is None:
        return "**Seed 000, PTA MobileNetV2**: not run."
    t3 = _first_seed(t3)
    t4 = _first_seed(t4) if t4 is not None else pd.DataFrame()
    rows = []
    for config in t3["config"].drop_duplicates():
        pta = config != "NoPTA"
        rec = _one(t3, config=config, operating_point="fixed_0.5", **({"bn": "recalibrated"} if pta else {}))
        sh = _one(t3, config=config, operating_point="fixed_0.5", bn="shared") if pta else None
        eer = _one(t3, config=config, operating_point="val_eer", **({"bn": "recalibrated"} if pta else {}))
        c4 = _one(t4, config=config) if len(t4) else None
        if rec is None:
            continue
        worst = f"{_num(rec.get('apcer_worst_type'))} ({_type_name(rec['apcer_worst_type_code'])})" \
            if _num(rec.get("apcer_worst_type_code")) else "n/a"
        rows.append([
            "No-PTA" if config == "NoPTA" else config, _ci(rec, "acer"),
            _num(sh["acer"]) if sh is not None else "(no BN choice)",
            _ci(eer, "acer") if eer is not None else "n/a", worst, _num(rec.get("paper_acer")),
            _num(c4.get("params_m"), 3) if c4 is not None else "",
            f"{_num(c4.get('madds_m'))} / {_num(c4.get('paper_madds_m'))}" if c4 is not None else "",
            ("1" if config == "NoPTA" else _ci(c4, "rel_latency")) if c4 is not None else "",
            _num(c4.get("paper_rel_latency")) if c4 is not None else ""])
    out = ["**Seed 000, PTA MobileNetV2** (`table3_quality.csv`, `table4_complexity.csv`, `table5_training.csv`). "
           "PTA rows are evaluated with BatchNorm statistics re-estimated for that configuration on clean "
           "training crops; the shared column is the paper-literal evaluation with the statistics training left.",
           "",
           _table(["config", "test ACER % (thr 0.5)", "ACER % shared BN", "ACER % (val-EER thr)",
                   "worst-type APCER %", "paper ACER % (CelebA-Spoof)", "params M", "MAdds M ours / paper",
                   "ORT latency vs No-PTA", "paper SD845"], rows)]
    if t5 is not None:
        p = _one(_first_seed(t5), model="MobileNetV2+PTA")
        if p is not None:
            out += ["", f"Training (Table 5): a PTA epoch takes {_num(p.get('rel_epoch_time'), 3)}x the No-PTA "
                        f"epoch (mean of {int(p.get('epochs', 0))} interleaved epochs); the step-time ratio over "
                        f"{int(p.get('timing_rounds', 0))} interleaved rounds is {_ci(p, 'rel_step_time', 3)} "
                        f"(the paper: {_num(p.get('paper_rel_epoch_time'), 3)}x on a GTX 1050Ti)."]
    out += ["", "![validation ACER per epoch](results/figures/figure2_val_acer.png)"]
    return "\n".join(out)


def _seed002(dep: pd.DataFrame | None) -> str:
    if dep is None:
        return "**Seed 002, Fourier texture model**: not run."
    dep = _at(_first_seed(dep), operating_point="fixed_0.5")
    rows = []
    for _, r in dep.iterrows():
        rows.append([str(r["model"]), str(r["format"]), _ci(r, "acer"), _ci(r, "auc", 3), _num(r.get("size_kb"), 0),
                     _ci(r, "latency_ms", 2), _ci(r, "rel_latency", 2)])
    return "\n".join([
        "**Seed 002, Fourier texture model** (`texture_deploy.csv`; latency batch 1, 1 thread, relative to the FP32 "
        "No-PTA MobileNetV2 measured beside it):", "",
        _table(["model", "format", "test ACER % (thr 0.5)", "AUC", "file KB", "latency ms", "vs No-PTA"], rows)])


def _seed003(swap: pd.DataFrame | None, pool: pd.DataFrame | None, sel: pd.DataFrame | None) -> str:
    if swap is None:
        return "**Seed 003, SWAP**: not run."
    swap = _at(_first_seed(swap), operating_point="fixed_0.5")
    rows = []
    for _, r in swap.iterrows():
        judged = r.get("judged_for")
        name = str(r["model"]) + (f" ({judged})" if isinstance(judged, str) and judged else "")
        rows.append([name, _num(r.get("params_m"), 2),
                     f"{_num(r.get('size_kb_fp32'), 0)} / {_num(r.get('size_kb_int8'), 0)}",
                     _ci(r, "latency_ms"), _ci(r, "speedup_vs_teacher") if r["model"] != "teacher" else "1",
                     _ci(r, "accuracy"), _ci(r, "accuracy_vs_teacher", 3) if r["model"] != "teacher" else "1",
                     _ci(r, "acer"), _num(r.get("energy_mj"), 1)])
    out = ["**Seeds 003 / 001, distillation and SWAP** (`swap.csv`; energy = CPU time x an assumed 5 W per core, "
           "no power counter here):", "",
           _table(["model", "params M", "FP32 / INT8 KB", "latency ms (FP32)", "speed-up vs teacher", "accuracy %",
                   "accuracy vs teacher", "ACER %", "energy mJ"], rows)]
    if sel is not None and "selected" in sel:
        win = sel[sel["selected"].astype(str) == "True"]
        if len(win):
            w = win.iloc[0]
            out += ["", f"Seed 001's KD loss uses tau={_num(w['kd_tau'], 1)}, alpha={_num(w['kd_alpha'], 2)}, "
                        f"chosen on validation ACER among {len(sel)} candidates (`kd_selection.csv`)."]
    if pool is not None:
        semi = _one(_first_seed(pool), model="student_kd_semi")
        if semi is not None and _num(semi.get("acer_minus_labelled_only")):
            out += ["", f"Unlabelled pool (`distill_pool.csv`): seed 001's KD with the withheld-label images minus "
                        f"without them, test ACER {_ci(semi, 'acer_minus_labelled_only')} points."]
    return "\n".join(out)


def _seed001(hter: pd.DataFrame | None) -> str:
    if hter is None:
        return "**Seed 001, cross-domain HTER**: not run."
    h = _at(_first_seed(hter), protocol="cross-domain")
    rows = [[f"{r['train_domain']} -> {r['test_domain']}", str(r["model"]), str(r["level"]), _ci(r, "hter"),
             _num(r.get("auc"), 3)] for _, r in h.iterrows()]
    rule = h["threshold_rule"].iloc[0] if len(h) and "threshold_rule" in h else ""
    return "\n".join([f"**Seed 001, cross-domain HTER** (`cross_domain_hter.csv`; threshold: {rule}):", "",
                      _table(["train -> test", "model", "level", "HTER %", "AUC"], rows)])


def _claims(claims: pd.DataFrame | None) -> str:
    if claims is None:
        return "**Claims**: notebook 04 has not run."
    claims = _first_seed(claims) if "seed" in claims and claims["seed"].astype(str).str.isdigit().any() else claims
    counts = claims["verdict"].value_counts()
    order = ["holds", "does not hold", "inconclusive", "not measurable here"]
    tally = ", ".join(f"{int(counts[v])} {v}" for v in order if v in counts)
    rows = []
    for _, r in claims.iterrows():
        if _num(r.get("value")):
            nd = 4 if 0 < abs(float(r["value"])) < 0.1 else 2    # e.g. a 0.0084 M MAdds difference
            q = (f"{r.get('quantity', '')} = {_num(r['value'], nd)} [{_num(r.get('ci_low'), nd)}, "
                 f"{_num(r.get('ci_high'), nd)}]")
            if _num(r.get("threshold")):
                sym = HOLDS_IF.get(str(r.get("holds_if")), str(r.get("holds_if")))
                q += f"; holds if {sym} {_num(r.get('threshold'))}"
        else:
            q = str(r.get("ours", ""))
        rows.append([str(r["seed"]), str(r["claim"]).replace("|", "\\|"), q.replace("|", "\\|"), f"**{r['verdict']}**"])
    return "\n".join([f"**Claims** (`claims.csv`, verdicts computed by notebook 04 from the intervals): {tally}.",
                      "", _table(["seed", "claim", "ours (95% CI)", "verdict"], rows), "",
                      "![claims](results/figures/claims_verdicts.png)"])


def _robustness(rob: pd.DataFrame | None) -> str:
    """Per deployed model: the box-scale stability verdict and the perturbation that costs most ACER."""
    if rob is None:
        return "**Robustness**: notebook 04 has not joined the cards (`robustness.csv`)."
    rows = []
    for model, g in rob.groupby("model", sort=False):
        first = g.iloc[0]
        worst = g.loc[g["acer"].idxmax()]
        ref = g[(g["perturbation"] == "box_scale") & (g["level"] == 1.0)]
        d = "box_scale_max_abs_delta_acer"
        rows.append([str(model), _ci(ref.iloc[0], "acer") if len(ref) else "",
                     f"{_num(first[d])} [{_num(first[d + '_ci_low'])}, {_num(first[d + '_ci_high'])}]: "
                     f"**{first['box_scale_stable_verdict']}**",
                     f"{worst['perturbation']} {worst['level']:g}: {_num(worst['acer'])}"])
    return "\n".join(["**Robustness of the deployed models** (`robustness.csv`, notebooks 02/03; perturbation "
                      "before the deployed crop; box scale judged against <= 2 ACER points):", "",
                      _table(["model", "ACER % as boxed", "max abs ΔACER over box scale 0.9-1.2x (pts)",
                              "costliest perturbation: ACER %"], rows)])


# ------------------------------------------------------------------------------------------ public API
def markdown(run_dir: str | os.PathLike = "results") -> str:
    """The results section for README.md, from `run_dir`'s manifest and tables."""
    run_dir = Path(run_dir)
    mpath = run_dir / "manifest.json"
    if not mpath.is_file():
        raise SummaryError(f"{mpath} does not exist: run `make reproduce` first")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise SummaryError(f"{mpath} is not valid JSON ({e}); rerun `make reproduce`") from e
    read: Callable[[str], pd.DataFrame | None] = lambda name: results.read_table(run_dir, name)  # noqa: E731
    parts = [_header(run_dir, manifest),
             _seed000(read("table3_quality"), read("table4_complexity"), read("table5_training")),
             _seed002(read("texture_deploy")),
             _seed003(read("swap"), read("distill_pool"), read("kd_selection")),
             _seed001(read("cross_domain_hter")),
             _robustness(read("robustness")),
             _claims(read("claims"))]
    return "\n\n".join([BEGIN, *parts, END]) + "\n"


def readme_block(readme: str | os.PathLike) -> str:
    text = Path(readme).read_text()
    if BEGIN not in text or END not in text:
        raise SummaryError(f"{readme} has no results block (the lines {BEGIN!r} ... {END!r})")
    start = text.index(BEGIN)
    return text[start:text.index(END, start) + len(END)]


def write_readme(readme: str | os.PathLike, run_dir: str | os.PathLike = "results") -> bool:
    """Replace the README's results block with one rendered from `run_dir`; True if the file changed."""
    readme = Path(readme)
    text = readme.read_text()
    old = readme_block(readme)
    new = markdown(run_dir).rstrip("\n")
    if old == new:
        return False
    results.atomic_write_bytes(readme, text.replace(old, new).encode())
    return True
