"""Robustness card of a deployed (ONNX) model: how its decisions move when the capture or the face box
moves, on the test split it was trained for.

Users of seed 002's model report that moving its box from 121 to 145 px flips its output; a detector on
another machine, another camera's JPEG or a darker room does the same to ours. Each perturbation is applied
to the decoded test image (and its box) before the crop the model always sees (`paperkit.crop.crop_face`,
`preprocess`), so the card measures the deployed path, not the training one:

    box_scale     the face box scaled about its centre (0.8-1.3x; a detector that boxes tighter or looser)
    box_shift_x/y the box moved by a fraction of its side (+-10%)
    jpeg_quality  the whole image re-encoded (95 ... 30)
    blur_sigma    Gaussian blur of the whole image, in pixels of the face at 224 px
    gamma         the image's tone curve (<1 brighter, >1 darker)
    brightness    an offset added to every channel
    face_size_px  the image resized so that the face box is that many pixels wide (48-224)

Box scale/shift, gamma and brightness lie inside the ranges the training crops are jittered over
(`paperkit.crop.jitter_box`, `paperkit.augment.random_tone`): those rows test whether the invariance was
learnt. JPEG, blur and face size are not augmented (only the synthetic camera varies them in the data).

Every row gives accuracy / APCER / BPCER / ACER at the model's threshold with a subject-bootstrap interval,
and the mean spoof score of live and of spoof images; `stability` gives the largest ACER change against the
unperturbed row over a range of levels, with a paired interval (same images, same resampled subjects).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import pandas as pd

from paperkit import stats

Box = tuple[float, float, float, float]   # x, y, w, h in pixels
Perturb = Callable[[np.ndarray, Box, float], tuple[np.ndarray, Box]]

COLUMNS = ("model", "perturbation", "level", "accuracy", "apcer", "bpcer", "acer", "mean_spoof_score_live",
           "mean_spoof_score_spoof")


def _scale_box(img: np.ndarray, box: Box, f: float) -> tuple[np.ndarray, Box]:
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    return img, (cx - f * w / 2, cy - f * h / 2, f * w, f * h)


def _shift(axis: int) -> Perturb:
    def shift(img: np.ndarray, box: Box, f: float) -> tuple[np.ndarray, Box]:
        x, y, w, h = box
        return img, ((x + f * w, y, w, h) if axis == 0 else (x, y + f * h, w, h))
    return shift


def _jpeg(img: np.ndarray, box: Box, q: float) -> tuple[np.ndarray, Box]:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(q)])
    if not ok:
        raise RuntimeError(f"JPEG encoding at quality {q} failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), box


def _blur(img: np.ndarray, box: Box, sigma: float) -> tuple[np.ndarray, Box]:
    if sigma <= 0:
        return img, box
    s = sigma * max(box[2], box[3]) / 224.0   # the same blur relative to the face, whatever the image size
    return cv2.GaussianBlur(img, (0, 0), sigmaX=max(s, 1e-3)), box


def _gamma(img: np.ndarray, box: Box, g: float) -> tuple[np.ndarray, Box]:
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** g + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(img, lut), box


def _brightness(img: np.ndarray, box: Box, d: float) -> tuple[np.ndarray, Box]:
    return np.clip(img.astype(np.int16) + int(d), 0, 255).astype(np.uint8), box


def _face_size(img: np.ndarray, box: Box, px: float) -> tuple[np.ndarray, Box]:
    f = float(px) / max(box[2], box[3])
    H, W = img.shape[:2]
    size = (max(1, int(round(W * f))), max(1, int(round(H * f))))
    out = cv2.resize(img, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    return out, tuple(v * f for v in box)  # type: ignore[return-value]


@dataclass(frozen=True)
class Perturbation:
    name: str
    levels: tuple[float, ...]
    identity: float          # the level that leaves the input as it is (its row is the reference)
    apply: Perturb


PERTURBATIONS: tuple[Perturbation, ...] = (
    Perturbation("box_scale", (0.8, 0.9, 1.0, 1.1, 1.2, 1.3), 1.0, _scale_box),
    Perturbation("box_shift_x", (-0.1, -0.05, 0.0, 0.05, 0.1), 0.0, _shift(0)),
    Perturbation("box_shift_y", (-0.1, -0.05, 0.0, 0.05, 0.1), 0.0, _shift(1)),
    Perturbation("jpeg_quality", (95.0, 70.0, 50.0, 30.0), 0.0, _jpeg),
    Perturbation("blur_sigma", (0.0, 1.0, 2.0, 3.0), 0.0, _blur),
    Perturbation("gamma", (0.6, 0.8, 1.0, 1.25, 1.6), 1.0, _gamma),
    Perturbation("brightness", (-40.0, -20.0, 0.0, 20.0, 40.0), 0.0, _brightness),
    Perturbation("face_size_px", (48.0, 64.0, 96.0, 128.0, 224.0), 0.0, _face_size),
)


def by_name(name: str) -> Perturbation:
    for p in PERTURBATIONS:
        if p.name == name:
            return p
    raise KeyError(f"unknown perturbation {name!r}; known: {[p.name for p in PERTURBATIONS]}")


def _test_images(dataset: Any, limit: int, seed: int) -> list[tuple[np.ndarray, Box | None, Any]]:
    """Decoded test images with their boxes (a seeded subset of `limit`, whole subjects kept together)."""
    from paperkit import data

    samples = list(dataset.samples)
    subjects = sorted({s.subject for s in samples})
    order = np.random.default_rng(seed).permutation(len(subjects))
    keep, n = set(), 0
    for i in order:
        if n >= limit:
            break
        keep.add(subjects[i])
        n += sum(s.subject == subjects[i] for s in samples)
    out = []
    for s in samples:
        if s.subject not in keep:
            continue
        img = data.decode_image(Path(dataset.root) / s.path)
        box = data._box_of(Path(dataset.root), s, img.shape[1], img.shape[0])
        out.append((img, box, s))
    return out


def _scores(session: Any, size: int, images: Sequence[tuple[np.ndarray, Box | None, Any]], p: Perturbation,
            level: float) -> np.ndarray:
    from paperkit.crop import CROP_SCALE, crop_face
    from paperkit.data import preprocess
    from paperkit.deploy import run_logits, softmax_spoof

    step = 1 if isinstance(session.get_inputs()[0].shape[0], int) else 64   # a fixed-batch export: one by one
    batch, out = [], []
    for img, box, _ in images:
        if box is None:   # no usable box: the reader's centre-crop fallback, perturbed as a centred box
            side = min(img.shape[:2]) / CROP_SCALE
            box = (img.shape[1] / 2 - side / 2, img.shape[0] / 2 - side / 2, side, side)
        im, b = (img, box) if level == p.identity else p.apply(img, box, level)
        batch.append(preprocess(crop_face(im, b, size), size).numpy())
        if len(batch) == step:
            out.append(softmax_spoof(run_logits(session, np.stack(batch))))
            batch = []
    if batch:
        out.append(softmax_spoof(run_logits(session, np.stack(batch))))
    return np.concatenate(out)


def card(model: str | Path, dataset: Any, name: str, threshold: float = 0.5, limit: int = 480, seed: int = 0,
         perturbations: Sequence[Perturbation] = PERTURBATIONS, n_boot: int = 500,
         progress: bool = True) -> tuple[pd.DataFrame, dict[tuple[str, float], stats.Scored]]:
    """One row per perturbation and level for the ONNX `model` on `dataset` (a test FaceDataset), and the
    per-image scores behind each row (for paired comparisons). `limit` images (whole subjects) bound the
    cost: 35 levels x `limit` crops through ONNX Runtime."""
    from paperkit.deploy import input_size_of, ort_session

    session = ort_session(Path(model), threads=1)
    size = input_size_of(session)
    images = _test_images(dataset, limit, seed)
    labels = np.array([s.label for _, _, s in images])
    subjects = np.array([s.subject for _, _, s in images])
    types = np.array([s.spoof_type for _, _, s in images])
    rows, scored = [], {}
    for p in perturbations:
        for level in p.levels:
            sc = stats.Scored(_scores(session, size, images, p, level), labels, subjects, types)
            q = stats.quality(sc, threshold, n_boot=n_boot, seed=seed)
            rows.append({"model": name, "perturbation": p.name, "level": level,
                         **{k: q[k] for k in ("accuracy", "apcer", "bpcer", "acer")},
                         "mean_spoof_score_live": float(sc.scores[labels == 0].mean()),
                         "mean_spoof_score_spoof": float(sc.scores[labels == 1].mean()),
                         "acer_ci_low": q["acer_ci_low"], "acer_ci_high": q["acer_ci_high"],
                         "n_images": len(images), "n_subjects": len(set(subjects)), "threshold": threshold})
            scored[(p.name, level)] = sc
        if progress:
            print(f"  {name}: {p.name} {list(p.levels)} done", flush=True)
    return pd.DataFrame(rows), scored


def stability(scored: dict[tuple[str, float], stats.Scored], perturbation: str, levels: Sequence[float],
              reference: float, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0) -> stats.Interval:
    """max over `levels` of |ACER(level) - ACER(reference)| in points, with one joint paired subject
    bootstrap over the same images (the max is taken inside each replicate)."""
    ref = scored[(perturbation, reference)]
    others = [scored[(perturbation, lv)] for lv in levels if lv != reference]
    if not others:
        raise ValueError(f"no level of {perturbation} other than the reference {reference}")
    return stats.paired_statistic([ref, *others], lambda m: np.max([np.abs(x["acer"] - m[0]["acer"])
                                                                    for x in m[1:]], axis=0),
                                  thresholds_=[threshold] * (1 + len(others)), n_boot=n_boot, seed=seed)


def figure(df: pd.DataFrame) -> Any:
    """ACER (with its interval) per level, one panel per perturbation, one line per model."""
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(df["perturbation"]))
    fig = Figure(figsize=(3.2 * min(4, len(names)), 2.8 * ((len(names) + 3) // 4)))
    for i, pname in enumerate(names):
        ax = fig.add_subplot((len(names) + 3) // 4, min(4, len(names)), i + 1)
        for model, g in df[df["perturbation"] == pname].groupby("model", sort=False):
            g = g.sort_values("level")
            ax.plot(g["level"], g["acer"], marker="o", ms=3, label=str(model))
            ax.fill_between(g["level"], g["acer_ci_low"], g["acer_ci_high"], alpha=0.15)
        ax.set_title(pname, fontsize=9)
        ax.set_ylabel("ACER %", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle(f"Robustness on {df['dataset'].iloc[0] if 'dataset' in df and len(df) else 'the test split'}",
                 fontsize=9)
    fig.tight_layout()
    return fig
