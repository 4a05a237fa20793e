"""`paperkit evaluate ROOT [--model M ...] [--report DIR] [--threshold T] [--detector D] [--probe]`.

How a model trained on the synthetic dataset transfers to a folder of real photos. Every photo goes through
the same path as `paperkit predict` (`predict.predict_paths`: decode with EXIF orientation, truncation
check, face detection, training-convention crop, largest face scored), so the figures describe what a user
of `predict` would get.

Layouts (the first that matches):

- a CelebA-Spoof tree (``Data/`` and ``metas/intra_test/*_label.json``): its test split, labels and
  subjects from the label file through paperkit's reader checks (`celeba.read_labels`, `index.screen_labels`);
- ``ROOT/live/**`` and ``ROOT/spoof/**``: label from the top folder, images at any depth.

No-face policy: a photo where the detector finds no face is *not* scored (as `predict` reports it), counted
per class, listed by name, and excluded from the metrics; so are unreadable or truncated files. The
figures therefore describe the photos the detector accepted, and the counts say how many those are.

Intervals: 95% bootstrap (`paperkit.stats.quality`) over subjects when the layout names them (CelebA-Spoof
subject folders), else over images, which are then the only unit we can tell apart. Several ``--model``
(e.g. one per training seed) are scored one after the other, then their mean AUC is given with one joint
bootstrap over the photos scored by all (`paperkit.stats.mean_auc`): one seed's AUC on a few photos says
little about the recipe. Attack is the positive class and the score is P(attack), called attack when
score >= threshold (`paperkit.metrics`). ``--probe`` then rescores every photo under a few capture changes
(brighter, darker, JPEG, blur, a looser or tighter box) to show what the model's decisions follow.
"""
from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from paperkit import predict

N_BOOT = 1000
#: Faces per class on the contact sheet (highest-scoring live, lowest-scoring spoof).
SHEET_PER_CLASS = 8
THUMB = 160
LAYOUT_HELP = ("expected ROOT/live/** and ROOT/spoof/** (bona fide and attack photos, any depth; "
               f"{', '.join(predict.IMAGE_SUFFIXES)}) or a CelebA-Spoof tree (ROOT/Data, ROOT/metas/intra_test/"
               "test_label.json)")
LABEL_NAMES = ("live", "spoof")


class EvaluateError(ValueError):
    """The folder cannot be evaluated as given (missing, wrong layout, empty); the message says why."""


@dataclass(frozen=True)
class Item:
    """One photo to score: its label (0 live, 1 spoof) and its bootstrap unit (subject, or the file)."""

    path: Path
    label: int
    subject: str
    spoof_type: int


@dataclass
class Layout:
    root: Path
    kind: str                      # "folders" or "celeba"
    items: list[Item]
    unit: str                      # "subjects" or "images"
    ignored: list[str] = field(default_factory=list)   # files that are not images, or label entries skipped


# ----------------------------------------------------------------------------------------------
# Inputs

def _is_celeba(root: Path) -> bool:
    return (root / "Data").is_dir() and (root / "metas").is_dir()


def _images_under(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under `folder`, sorted; hidden files are left out."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in predict.IMAGE_SUFFIXES]
    return images, [p for p in files if p.suffix.lower() not in predict.IMAGE_SUFFIXES]


def folder_layout(root: Path) -> Layout:
    """ROOT/live and ROOT/spoof; each image is its own bootstrap unit (the layout names no subjects)."""
    missing = [n for n in LABEL_NAMES if not (root / n).is_dir()]
    if missing:
        raise EvaluateError(f"{root}: no {' or '.join(n + '/' for n in missing)} folder; {LAYOUT_HELP}")
    items: list[Item] = []
    ignored: list[str] = []
    for label, name in enumerate(LABEL_NAMES):
        images, other = _images_under(root / name)
        if not images:
            raise EvaluateError(f"{root / name}: no images in it or its sub-folders "
                                f"({', '.join(predict.IMAGE_SUFFIXES)}); both classes are needed")
        items += [Item(p, label, str(p.relative_to(root)), label) for p in images]
        ignored += [f"{p.relative_to(root)}: not an image file" for p in other]
    return Layout(root, "folders", items, "images", ignored)


def celeba_layout(root: Path, split: str = "test") -> Layout:
    """A CelebA-Spoof tree's split through the reader's label checks; bootstrap unit = subject folder."""
    from paperkit.celeba import SPOOF_TYPE, LIVE_SPOOF, DatasetError, check_root, key_subject, read_labels
    from paperkit.index import screen_labels

    try:
        check_root(root)
        screen = screen_labels(root, split, read_labels(root, split))
    except DatasetError as e:
        raise EvaluateError(str(e)) from e
    items = [Item(root / k, int(v[LIVE_SPOOF]), key_subject(k), int(v[SPOOF_TYPE]))
             for k, v in sorted(screen.labels.items())]
    for label, name in enumerate(LABEL_NAMES):
        if not any(i.label == label for i in items):
            raise EvaluateError(f"{root}: the {split} label file lists no {name} images; both classes are needed")
    ignored = [f"{n} label entr{'y' if n == 1 else 'ies'} skipped ({kind}, e.g. {screen.examples[kind]})"
               for kind, n in screen.problems.items() if n]
    return Layout(root, "celeba", items, "subjects", ignored)


def find_layout(root: str | Path) -> Layout:
    """Which layout ROOT has; raises EvaluateError naming the expected layouts otherwise."""
    root = Path(root).expanduser()
    if not root.exists():
        raise EvaluateError(f"{root} does not exist; {LAYOUT_HELP}")
    if not root.is_dir():
        raise EvaluateError(f"{root} is not a directory; {LAYOUT_HELP}")
    return celeba_layout(root) if _is_celeba(root) else folder_layout(root)


# ----------------------------------------------------------------------------------------------
# Scoring and metrics

@dataclass
class Row:
    """One photo's outcome: status is predict's (live, spoof, no_face, unreadable, error)."""

    file: str
    label: int
    subject: str
    spoof_type: int
    status: str
    score: float | None
    detector: str = ""
    box: list[int] | None = None
    message: str = ""

    @property
    def scored(self) -> bool:
        return self.score is not None


def score_layout(layout: Layout, scorer: predict.Scorer, threshold: float, detector: str) -> list[Row]:
    """Score every photo with predict's path; one Row per photo, in layout order, none dropped."""
    rep = predict.predict_paths([i.path for i in layout.items], scorer, threshold, detector)
    by_file = {f.file: f for f in rep.files}
    rows = []
    for it in layout.items:
        f = by_file[str(it.path)]
        rows.append(Row(str(it.path.relative_to(layout.root)), it.label, it.subject, it.spoof_type, f.status,
                        f.score, f.detector, f.box, f.message))
    return rows


def metrics_of(rows: Sequence[Row], threshold: float, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, float]:
    """AUC, APCER, BPCER, ACER (percent, AUC a fraction) with 95% bootstrap intervals, scored rows only.

    Empty when a class has no scored photo: the rates would be undefined."""
    from paperkit import stats

    ok = [r for r in rows if r.scored]
    if not {0, 1} <= {r.label for r in ok}:
        return {}
    sc = stats.Scored(np.array([r.score for r in ok]), np.array([r.label for r in ok]),
                      np.array([r.subject for r in ok]), np.array([r.spoof_type for r in ok]))
    q = stats.quality(sc, threshold, n_boot=n_boot, seed=seed)
    keep = ("auc", "apcer", "bpcer", "acer", "accuracy")
    out = {k: float(v) for k, v in q.items() if k.split("_ci_")[0] in keep}
    out["n_units"] = q["n_subjects"]
    out["n_scored"] = q["n_images"]
    return out


def counts(rows: Sequence[Row]) -> dict[str, dict[str, int]]:
    """Per class: files, scored, no face, unreadable (unreadable + error)."""
    out = {}
    for label, name in enumerate(LABEL_NAMES):
        rs = [r for r in rows if r.label == label]
        out[name] = {"files": len(rs), "scored": sum(r.scored for r in rs),
                     "no_face": sum(r.status == "no_face" for r in rs),
                     "unreadable": sum(r.status in ("unreadable", "error") for r in rs)}
    return out


# ----------------------------------------------------------------------------------------------
# Output

def _ci(m: dict[str, float], key: str, digits: int) -> str:
    v, lo, hi = m[key], m.get(f"{key}_ci_low", float("nan")), m.get(f"{key}_ci_high", float("nan"))
    ci = f"[{lo:.{digits}f}, {hi:.{digits}f}]" if np.isfinite(lo) and np.isfinite(hi) else "[n/a]"
    return f"{v:.{digits}f} {ci}"


def format_text(layout: Layout, rows: Sequence[Row], m: dict[str, float], model: str, input_size: int,
                threshold: float, detector: str) -> str:
    """The printed report: counts, every photo not scored by name, then the four figures."""
    c = counts(rows)
    kind = "CelebA-Spoof tree (test split)" if layout.kind == "celeba" else "live/ and spoof/ folders"
    lines = [f"paperkit evaluate {layout.root}: {kind}",
             f"model {model} (input {input_size}x{input_size}), threshold {threshold:g}, detector {detector}",
             f"photos: {c['live']['files']} live, {c['spoof']['files']} spoof",
             f"scored: {c['live']['scored']} live, {c['spoof']['scored']} spoof"]
    no_face = [r for r in rows if r.status == "no_face"]
    bad = [r for r in rows if r.status in ("unreadable", "error")]
    lines.append(f"faces not found: {len(no_face)} (live {c['live']['no_face']}, spoof {c['spoof']['no_face']}); "
                 "not scored, excluded from the metrics")
    lines += [f"  {r.file}" for r in no_face]
    lines.append(f"unreadable: {len(bad)} (live {c['live']['unreadable']}, spoof {c['spoof']['unreadable']}); "
                 "excluded from the metrics")
    lines += [f"  {r.file}: {r.message}" for r in bad]
    if layout.ignored:
        lines.append(f"ignored: {len(layout.ignored)}")
        lines += [f"  {x}" for x in layout.ignored]
    if not m:
        lines.append("metrics: not computable (a class has no scored photo)")
        return "\n".join(lines)
    lines += [f"AUC    {_ci(m, 'auc', 3)}",
              f"APCER  {_ci(m, 'apcer', 1)} %  (attacks accepted as live)",
              f"BPCER  {_ci(m, 'bpcer', 1)} %  (bona fide rejected as attacks)",
              f"ACER   {_ci(m, 'acer', 1)} %",
              f"95% intervals: bootstrap over {int(m['n_units'])} {layout.unit} ({N_BOOT} resamples); "
              f"rates at threshold {threshold:g}"]
    return "\n".join(lines)


CSV_COLUMNS = ("file", "label", "subject", "status", "score", "called", "detector", "box", "message")


def write_csv(rows: Sequence[Row], path: Path, threshold: float) -> Path:
    """Per-photo scores, every photo (unscored ones with an empty score and their status)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for r in rows:
            called = "" if r.score is None else ("spoof" if r.score >= threshold else "live")
            w.writerow([r.file, LABEL_NAMES[r.label], r.subject, r.status,
                        "" if r.score is None else repr(float(r.score)), called, r.detector,
                        "" if r.box is None else " ".join(str(v) for v in r.box), r.message])
    return path


def worst(rows: Sequence[Row], per_class: int = SHEET_PER_CLASS) -> list[Row]:
    """Highest-scoring live then lowest-scoring spoof photos: where the model is most wrong."""
    live = sorted((r for r in rows if r.scored and r.label == 0), key=lambda r: -float(r.score or 0))
    spoof = sorted((r for r in rows if r.scored and r.label == 1), key=lambda r: float(r.score or 0))
    return live[:per_class] + spoof[:per_class]


def _thumb(root: Path, r: Row, threshold: float) -> np.ndarray:
    """The face crop the model saw, with its class, score and file name written under it (BGR)."""
    import cv2

    from paperkit.crop import crop_face
    from paperkit.data import decode_image

    face = cv2.cvtColor(crop_face(decode_image(root / r.file), r.box, THUMB), cv2.COLOR_RGB2BGR)
    wrong = (float(r.score or 0) >= threshold) != bool(r.label)
    panel = np.full((THUMB + 34, THUMB, 3), 255, np.uint8)
    panel[:THUMB] = face
    color = (0, 0, 200) if wrong else (0, 120, 0)
    cv2.rectangle(panel, (0, 0), (THUMB - 1, THUMB - 1), color, 3)
    text = f"{LABEL_NAMES[r.label]} {float(r.score or 0):.3f}" + (" ERR" if wrong else "")
    cv2.putText(panel, text, (3, THUMB + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, color, 1, cv2.LINE_AA)
    name = Path(r.file).name
    name = name if len(name) <= 24 else name[:10] + ".." + name[-12:]
    cv2.putText(panel, name, (3, THUMB + 29), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
    return panel


def write_sheet(root: Path, rows: Sequence[Row], path: Path, threshold: float) -> Path:
    """Contact sheet PNG: row 1 the highest-scoring live faces, row 2 the lowest-scoring spoof faces."""
    import cv2

    picked = worst(rows)
    lines = []
    for label in (0, 1):
        tiles = [_thumb(root, r, threshold) for r in picked if r.label == label]
        tiles += [np.full((THUMB + 34, THUMB, 3), 255, np.uint8)] * (SHEET_PER_CLASS - len(tiles))
        lines.append(np.hstack(tiles))
    sheet = np.vstack(lines)
    if not cv2.imwrite(str(path), sheet):
        raise OSError(f"could not write {path}")
    return path


def write_report(out: Path, layout: Layout, rows: Sequence[Row], m: dict[str, float], meta: dict[str, Any]
                 ) -> list[Path]:
    """scores.csv, worst_errors.png and metrics.json in `out` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    thr = float(meta["threshold"])
    paths = [write_csv(rows, out / "scores.csv", thr), write_sheet(layout.root, rows, out / "worst_errors.png", thr)]
    doc = meta | {"root": str(layout.root), "layout": layout.kind, "bootstrap_unit": layout.unit,
                  "n_boot": N_BOOT, "counts": counts(rows), "metrics": m,
                  "no_face": [r.file for r in rows if r.status == "no_face"],
                  "unreadable": [{"file": r.file, "message": r.message} for r in rows
                                 if r.status in ("unreadable", "error")],
                  "ignored": layout.ignored,
                  "policy": "photos with no detected face or that do not decode are not scored and are "
                            "excluded from the metrics"}
    p = out / "metrics.json"
    p.write_text(json.dumps(doc, indent=2, allow_nan=False, default=_json_default) + "\n", encoding="utf-8")
    return paths + [p]


def _json_default(x: Any) -> Any:
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _nan_to_none(m: dict[str, float]) -> dict[str, float | None]:
    return {k: (v if np.isfinite(v) else None) for k, v in m.items()}


# ----------------------------------------------------------------------------------------------
# Entry point

def _model_path(model: str | None) -> Path:
    """--model or the packaged model; raises EvaluateError with predict's advice when there is none."""
    if model is None:
        found = predict.default_model()
        if found is None:
            raise EvaluateError(predict.missing_model_message())
        return found
    p = Path(model)
    if p.suffix.lower() != ".onnx":
        raise EvaluateError(f"--model takes an ONNX file (.onnx), got {p}")
    if not p.is_file():
        raise EvaluateError(f"model {p} not found; pass an existing .onnx file to --model")
    return p


# ----------------------------------------------------------------------------------------------
# What moves the scores (--probe)

#: Capture changes `--probe` applies to every scored photo before its crop (:mod:`paperkit.robustness`'s).
PROBES: tuple[tuple[str, float], ...] = (
    ("brightness", -40.0), ("brightness", 40.0), ("gamma", 0.6), ("gamma", 1.6), ("jpeg_quality", 30.0),
    ("blur_sigma", 2.0), ("box_scale", 0.8), ("box_scale", 1.2))


def probe(layout: Layout, rows: Sequence[Row], scorer: predict.Scorer, threshold: float
          ) -> list[dict[str, float | str]]:
    """How the scores of these photos move under simple capture changes, each applied to the photo and
    its detected box before the deployed crop: mean spoof score of live and of spoof photos, AUC, and the
    share of decisions that flip at `threshold`. A model whose bona fide scores follow brightness learnt
    the simulation's exposure, not an attack cue; this is how paperkit found that shortcut."""
    from paperkit import metrics, robustness

    ok = [r for r in rows if r.scored and r.box is not None]
    if not {0, 1} <= {r.label for r in ok}:
        return []
    images = [predict._read_image(layout.root / r.file)[0] for r in ok]
    labels = np.array([r.label for r in ok])
    base = np.array([r.score for r in ok], dtype=float)
    out: list[dict[str, float | str]] = []
    for name, level in (("none", 0.0), *PROBES):
        if name == "none":
            s = base
        else:
            p = robustness.by_name(name)
            s = np.empty(len(ok))
            for i, (img, r) in enumerate(zip(images, ok)):
                moved, box = p.apply(img, tuple(float(v) for v in r.box), level)
                s[i] = scorer.score_faces(moved, [box])[0]
        out.append({"change": name, "level": level, "mean_score_live": float(s[labels == 0].mean()),
                    "mean_score_spoof": float(s[labels == 1].mean()), "auc": float(metrics.roc_auc(s, labels)),
                    "flipped_pct": float(100 * np.mean((s >= threshold) != (base >= threshold)))})
    return out


def format_probe(table: Sequence[dict[str, float | str]]) -> str:
    lines = ["what moves the scores (each change applied to every scored photo before its crop):",
             f"  {'change':14s} {'level':>6s}  {'live':>5s}  {'spoof':>5s}  {'AUC':>5s}  flipped"]
    for t in table:
        lines.append(f"  {t['change']:14s} {float(t['level']):6g}  {float(t['mean_score_live']):5.2f}  "
                     f"{float(t['mean_score_spoof']):5.2f}  {float(t['auc']):5.3f}  {float(t['flipped_pct']):5.1f} %")
    lines.append("  live / spoof: mean P(attack) of bona fide / attack photos; flipped: decisions that change")
    return "\n".join(lines)


def write_probe(table: Sequence[dict[str, float | str]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    return path


def across_models(per_model: Sequence[Sequence[Row]], n_boot: int = N_BOOT, seed: int = 0) -> dict[str, float]:
    """Mean AUC of several models over the photos every one of them scored (the detector does not depend
    on the model, so normally all), with a joint bootstrap, and the models' AUC range."""
    from paperkit import stats

    scored = set.intersection(*({r.file for r in rows if r.scored} for rows in per_model))
    models = []
    for rows in per_model:
        ok = sorted((r for r in rows if r.file in scored), key=lambda r: r.file)
        models.append(stats.Scored(np.array([r.score for r in ok]), np.array([r.label for r in ok]),
                                   np.array([r.subject for r in ok]), np.array([r.spoof_type for r in ok])))
    if not models or not {0, 1} <= set(models[0].labels.tolist()):
        return {}
    iv = stats.mean_auc(models, n_boot=n_boot, seed=seed)
    aucs = [float(stats.metrics.roc_auc(m.scores, m.labels)) for m in models]
    return {"models": len(models), "auc_mean": iv.value, "auc_mean_ci_low": iv.low, "auc_mean_ci_high": iv.high,
            "auc_min": min(aucs), "auc_max": max(aucs), "n_units": iv.n, "n_scored": int(models[0].labels.size)}


def format_across(a: dict[str, float], unit: str) -> str:
    return (f"across {int(a['models'])} models: mean AUC {a['auc_mean']:.3f} "
            f"[{a['auc_mean_ci_low']:.3f}, {a['auc_mean_ci_high']:.3f}] (each model {a['auc_min']:.3f}-"
            f"{a['auc_max']:.3f}); joint bootstrap over {int(a['n_units'])} {unit} scored by every model")


def cli_evaluate(root: str, model: str | Sequence[str] | None = None, report: str | None = None,
                 threshold: float = 0.5, detector: str = "auto", probe_changes: bool = False) -> int:
    """`paperkit evaluate`: 0 when the figures were computed, 1 when a class had no scored photo,
    2 when ROOT, a model or an option is unusable. Several models: each is reported (``--report``: in
    ``DIR/<n>_<model name>/``), then their mean AUC (:func:`across_models`)."""
    models = [model] if model is None or isinstance(model, str) else list(model)
    per_model, codes, layout = [], [], None
    for i, m in enumerate(models):
        sub = report if report is None or len(models) == 1 else str(Path(report) / f"{i}_{Path(m).stem}")
        code, layout, rows = _evaluate_one(root, m, sub, threshold, detector, probe_changes)
        if code == 2:
            return 2
        codes.append(code)
        per_model.append(rows)
    if len(models) == 1:
        return codes[0]
    a = across_models(per_model)
    print()
    if not a:
        print("across models: not computable (a class has no photo scored by every model)")
        return 1
    print(format_across(a, layout.unit))
    if report:
        p = Path(report) / "across_models.json"
        p.write_text(json.dumps({**a, "model_files": models}, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {p}")
    return max(codes)


def _evaluate_one(root: str, model: str | None, report: str | None, threshold: float, detector: str,
                  probe_changes: bool = False) -> tuple[int, Layout | None, list[Row]]:
    from paperkit.detect import DETECTORS, available

    def fail(msg: str) -> tuple[int, None, list[Row]]:
        print(f"paperkit evaluate: {msg}", file=sys.stderr)
        return 2, None, []

    if not 0.0 <= threshold <= 1.0:
        return fail(f"--threshold must be in [0, 1], got {threshold}")
    if detector not in DETECTORS:
        return fail(f"--detector must be one of {', '.join(DETECTORS)}, got {detector!r}")
    try:
        layout = find_layout(root)
        model_path = _model_path(model)
    except EvaluateError as e:
        return fail(str(e))
    why = available(detector)
    if why:
        return fail(why)
    try:
        scorer = predict.Scorer(model_path)
    except (RuntimeError, ValueError) as e:
        return fail(str(e))
    rows = score_layout(layout, scorer, threshold, detector)
    m = metrics_of(rows, threshold)
    print(format_text(layout, rows, m, str(model_path), scorer.input_size, threshold, detector))
    if report:
        meta = {"model": str(model_path), "input_size": scorer.input_size, "threshold": threshold,
                "detector": detector}
        for p in write_report(Path(report), layout, rows, _nan_to_none(m), meta):
            print(f"wrote {p}")
    if probe_changes and m:
        table = probe(layout, rows, scorer, threshold)
        print()
        print(format_probe(table))
        if report:
            print(f"wrote {write_probe(table, Path(report) / 'probe.csv')}")
    return (0 if m else 1), layout, rows
