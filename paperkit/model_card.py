"""The packaged model and its card: `ship_model` copies a run's INT8 texture model into `paperkit/assets/`
and writes the card (data, input and crop, threshold, metrics with intervals, limits) from that run's
tables, so the wheel always ships the model the README's numbers describe.
"""
from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from paperkit.predict import ASSETS, CARD_NAME, MODEL_NAME, Scorer

#: Per-split metrics shown on the card, in order (percent except AUC).
CARD_METRICS = ("accuracy", "apcer", "bpcer", "acer", "auc")


def _fmt_metric(row: dict[str, Any], key: str) -> str:
    v = row.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
        return "n/a"
    digits = 3 if key == "auc" else 2
    out = f"{float(v):.{digits}f}"
    lo, hi = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    if lo is not None and hi is not None and lo == lo and hi == hi and lo != "" and hi != "":
        out += f" [{float(lo):.{digits}f}, {float(hi):.{digits}f}]"
    return out


def _synthetic_rows(run_dir: Path, model: str = "texture", fmt: str = "int8") -> tuple[list[dict[str, Any]], str]:
    """The deployable model's rows of `tables/texture_deploy.csv` (one per operating point when the run
    recorded them), and where they came from."""
    import pandas as pd

    path = run_dir / "tables" / "texture_deploy.csv"
    if not path.is_file():
        return [], f"{path} not found (run notebook 02)"
    df = pd.read_csv(path)
    fcol = "format" if "format" in df.columns else "fmt"
    sel = df[(df["model"] == model) & (df[fcol] == fmt)]
    if "seed" in sel.columns and sel["seed"].astype(str).isin(["mean"]).any():
        sel = sel[sel["seed"].astype(str) == "mean"]
    return sel.to_dict(orient="records"), "tables/texture_deploy.csv"


def real_photo_check(real_dir: str | Path, model: str | Path, threshold: float = 0.5, detector: str = "auto",
                     n_boot: int = 1000) -> dict[str, Any]:
    """The card's real-photo row: `paperkit evaluate`'s figures for a `live/` + `spoof/` folder.

    Photos without a detected face are counted, not scored. Intervals: bootstrap over photos (95%)."""
    from paperkit import evaluate

    layout = evaluate.folder_layout(Path(real_dir))
    rows = evaluate.score_layout(layout, Scorer(model), threshold, detector)
    scored = [r for r in rows if r.scored]
    out: dict[str, Any] = {"folder": layout.root.name, "images": len(rows), "scored": len(scored),
                           "no_face": sum(r.status == "no_face" for r in rows),
                           "live": sum(r.label == 0 for r in scored), "spoof": sum(r.label == 1 for r in scored),
                           "detector": detector, "found_by": dict(Counter(r.detector for r in rows if r.detector))}
    return out | evaluate.metrics_of(rows, threshold, n_boot=n_boot, seed=0)


# ----------------------------------------------------------------------------------------------
# The card, section by section (a list of markdown lines each, in reading order)

def _provenance(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The notebook entry that trained the model and its dataset record (from the run's manifest)."""
    manifest_p = run_dir / "manifest.json"
    manifest = json.loads(manifest_p.read_text(encoding="utf-8")) if manifest_p.is_file() else {"entries": {}}
    entries = manifest.get("entries", {})
    entry = entries.get("02_fourier_texture") or entries.get("00_data") or {}
    ds = entry.get("dataset") or (entries.get("00_data") or {}).get("dataset") or {}
    return entry, ds


def _head(onnx_path: Path, entry: dict[str, Any], ds: dict[str, Any]) -> list[str]:
    from paperkit.results import git_revision   # notebook 02 is still running: its entry may not exist yet

    counts = ds.get("counts", {})
    tr, te = counts.get("train", {}), counts.get("test", {})
    return [
        "# Model card: paperkit texture model, INT8 (`texture_int8.onnx`)",
        "",
        "Seed 002's Fourier-supervised texture network (MobileNet-style, ~0.36 M parameters), exported to ONNX and "
        f"quantised to INT8 (static QDQ); {onnx_path.stat().st_size / 1024:.0f} KB. Scores P(spoof) for one face "
        "crop. Written by `paperkit.model_card.ship_model` from a run's results; regenerate it rather than edit it.",
        "",
        "## Trained on",
        "",
        f"- Dataset: {ds.get('name', 'unknown (no manifest entry)')}; generator `{ds.get('generator', '?')}` "
        f"version {ds.get('version', '?')}, fingerprint `{ds.get('fingerprint', '?')}`.",
        f"- {tr.get('images', '?')} train images ({tr.get('subjects', '?')} subjects), {te.get('images', '?')} "
        f"test images ({te.get('subjects', '?')} subjects, disjoint from train).",
        "- Synthetic: rendered faces and simulated print/screen/mask attacks, not photographs of people. "
        "It was never trained on a real photo.",
        f"- Run: git revision `{entry.get('git_revision') or git_revision()}`, "
        f"profile `{(entry.get('parameters') or {}).get('profile', '?')}`.",
    ]


def _input_and_threshold(input_size: int, threshold: float, rows: list[dict[str, Any]]) -> list[str]:
    from paperkit import detect

    lines = [
        "",
        "## Input and crop",
        "",
        f"- Input: RGB, {input_size}x{input_size}, (x/255 - 0.5)/0.5 per channel, NCHW float32, any batch size.",
        "- Crop: a square of 1.5 x max(w, h) around the centre of the face box in the CelebA-Spoof `_BB.txt` "
        "convention, moved inside the image where it would leave it (shrunk only when the photo is smaller; "
        "never padded: `paperkit.crop.crop_face`), then resized.",
        "- Faces in user photos: `paperkit.detect` (dlib HOG, then dlib's CNN when HOG is not sure, on a padded "
        "copy); each detector's box is mapped onto the `_BB.txt` convention by a scale and offset fitted on the "
        "synthetic train images (`paperkit.detect.CALIBRATION`: "
        + ", ".join(f"{k} {v[0]:.3f}/{v[1]:+.3f}/{v[2]:+.3f}" for k, v in detect.CALIBRATION.items())
        + " as scale/dx/dy).",
        "",
        "## Threshold",
        "",
        f"- Called spoof when P(spoof) >= {threshold:g}. A fixed threshold, not tuned on any test data: the "
        "`fixed_0.5` operating point every claim in this project uses. `--threshold` changes it.",
    ]
    val = [r for r in rows if r.get("operating_point") == "val_eer"]
    if val:
        lines.append(f"- For reference, the validation-EER threshold of this run was {float(val[0]['threshold']):.3f} "
                     "(the `val_eer` row below).")
    return lines


def _metrics(rows: list[dict[str, Any]], source: str, test_images: Any, threshold: float,
             real: dict[str, Any] | None) -> list[str]:
    lines = ["", "## Metrics", "", "Rates in percent (AUC as a fraction); 95% intervals in brackets where the "
             "run recorded them.", "",
             "| data | operating point | images | " + " | ".join(m.upper() if m != "accuracy" else "Accuracy"
                                                            for m in CARD_METRICS) + " |",
             "|---|---|---|" + "---|" * len(CARD_METRICS)]
    for r in rows:
        n = r.get("n_images", test_images)
        n = int(n) if isinstance(n, float) and n == n else n
        lines.append(f"| synthetic test split | {r.get('operating_point', 'fixed_0.5')} | {n} | "
                     + " | ".join(_fmt_metric(r, m) for m in CARD_METRICS) + " |")
    if not rows:
        lines.append(f"| synthetic test split | - | - | {source} |" + " |" * (len(CARD_METRICS) - 1))
    if real and real.get("scored"):
        lines.append(f"| real photos, internal check ({real['images']} photos: {real['live']} live, {real['spoof']} "
                     f"spoof scored) | fixed_{threshold:g} | {real['scored']} | "
                     + " | ".join(_fmt_metric(real, m) for m in CARD_METRICS) + " |")
    lines += ["", f"Synthetic rows: `{source}` of the run; their intervals (when shown) are subject-bootstrap."]
    if real:
        lines += [f"Real-photo row: `{real['folder']}`, {real['images']} real photographs of bona fide faces and "
                  f"printed/replayed attacks from public repositories, kept outside the repository; a face was "
                  f"found in {real['images'] - real['no_face']} of them ("
                  + ", ".join(f"{k} {v}" for k, v in sorted(real['found_by'].items())) + "); intervals bootstrap "
                  "over photos. An internal check on 31 real photos: it decides little alone."]
    else:
        lines += ["Real-photo check: not run for this card (pass `real_dir` to `ship_model`)."]
    return lines


LIMITS = [
    "",
    "## Known limits",
    "",
    "- Trained on synthetic data only: the synthetic test numbers say how well it separates the simulated "
    "attacks, not how it does on real cameras and real attacks, where it is much weaker (the real-photo row when "
    "the card was written with `real_dir`; `paperkit evaluate` on your own photos; the README's internal check).",
    "- One face crop, one frame: no depth, motion or challenge-response; 3D masks were not simulated as such.",
    "- The face detector is frontal-leaning (HOG) with a CNN fallback; faces smaller than ~50 px after "
    "the detector's downscaling, or strongly rotated, are reported as `no_face`, never scored.",
    "- Not a security product: use it to reproduce and study the papers' models.",
    "",
]


def write_card(path: Path, onnx_path: Path, run_dir: Path, input_size: int, threshold: float,
               real: dict[str, Any] | None) -> Path:
    """The model card (markdown): data, input and crop, threshold, metrics with intervals, limits."""
    entry, ds = _provenance(run_dir)
    rows, source = _synthetic_rows(run_dir)
    test_images = ds.get("counts", {}).get("test", {}).get("images", "?")
    lines = (_head(onnx_path, entry, ds) + _input_and_threshold(input_size, threshold, rows)
             + _metrics(rows, source, test_images, threshold, real) + LIMITS)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def ship_model(onnx_path: str | Path, run_dir: str | Path = "results", real_dir: str | Path | None = None,
               assets_dir: str | Path | None = None, threshold: float = 0.5, detector: str = "auto") -> Path:
    """Copy a run's deployable INT8 model into the package (`paperkit/assets/`) with its model card, and put
    the same card beside the model in `<run_dir>/models/` (`texture_int8.md`). Returns the packaged model.

    Notebook 02 calls it after each run so the wheel always ships the model the README's numbers describe.
    `real_dir` (a folder with `live/` and `spoof/`) adds the real-photo check; leave it None when absent."""
    onnx_path, run_dir = Path(onnx_path), Path(run_dir)
    assets = Path(assets_dir) if assets_dir is not None else ASSETS
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: no such model; run notebook 02 (it writes models/{MODEL_NAME})")
    size = onnx_path.stat().st_size
    if size >= 1024 * 1024:
        raise ValueError(f"{onnx_path} is {size / 1024:.0f} KB; the packaged model must stay under 1 MB "
                         f"(ship the INT8 export, not FP32)")
    scorer = Scorer(onnx_path)  # fails here, not in a user's hands, if the file does not load
    real = None
    if real_dir is not None and Path(real_dir).is_dir():
        real = real_photo_check(real_dir, onnx_path, threshold, detector)
    assets.mkdir(parents=True, exist_ok=True)
    target = assets / MODEL_NAME
    if onnx_path.resolve() != target.resolve():
        tmp = target.with_suffix(".onnx.tmp")
        shutil.copyfile(onnx_path, tmp)
        tmp.replace(target)
    card = write_card(assets / CARD_NAME, target, run_dir, scorer.input_size, threshold, real)
    models = run_dir / "models"
    if models.is_dir():
        shutil.copyfile(card, models / (Path(MODEL_NAME).stem + ".md"))
    return target
