"""Notebook 00 (data): what the dataset contains and what a model will see.

Cells: summary table (`summary_table`) -> grid of live and every attack type (`sample_grid`) -> mean
log-magnitude spectrum of live vs spoof crops (`spectra_figure`, the cue seed 002's Fourier head relies on)
-> label histograms (`label_histograms`). Every function reads through `paperkit.index` and `paperkit.data`, the
same reader the training notebooks use, and works identically on real CelebA-Spoof and on the embedded synthetic set.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from paperkit import celeba, data, index, results
from paperkit.studies import common


NOTEBOOK = "00_data"


def setup(profile: str = "default", data_root: str = "", run_dir: str = "../results", seeds: Any = None,
          overrides: dict[str, Any] | None = None) -> common.Study:
    """Notebook 00's study: the profile (+ `overrides`) and the dataset root (the embedded synthetic one,
    built once and cached, when `data_root` is empty); no loaders, this notebook reads the files."""
    study = common.setup(common.Study, NOTEBOOK, profile, data_root, run_dir, seeds, overrides, loaders=False)
    print("dataset:", study.dataset, "at", study.root)
    return study


def summary_table(root: str | os.PathLike) -> pd.DataFrame:
    """One row per split: label-file counts, one column per spoof type, and the problem counts."""
    per = index.summary_by_split(root)
    types = sorted({int(t) for d in per.values() for t in d["spoof_types"]})
    rows = []
    for split, d in per.items():
        row: dict[str, Any] = {"dataset": results.dataset_label(root), "split": split, "images": d["images"],
                               "live": d["live"], "spoof": d["spoof"]}
        for t in types:
            row[f"type_{t}_{celeba.SPOOF_TYPE_NAMES.get(t, t)}".replace(" ", "_")] = d["spoof_types"].get(str(t), 0)
        row.update(d["problems"])
        rows.append(row)
    return pd.DataFrame(rows)


def _all_samples(root: Path) -> list[index.Sample]:
    return list(index.load_index(root, "train")) + list(index.load_index(root, "test"))


def sample_grid(root: str | os.PathLike, size: int = 128, per_type: int = 6, seed: int = 0,
                samples: Sequence[index.Sample] | None = None) -> plt.Figure:
    """Face crops (exactly as the model gets them, without augmentation): one row for live and one per
    attack type present, ``per_type`` seeded picks per row, from different subjects where possible."""
    root = Path(root)
    samples = list(samples) if samples is not None else _all_samples(root)
    ds = data.FaceDataset(root, samples, size=size)
    by_type: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_type.setdefault(s.spoof_type if s.label else 0, []).append(i)
    types = sorted(by_type)
    rng = np.random.default_rng([seed, 2024])
    fig, axes = plt.subplots(len(types), per_type, figsize=(1.6 * per_type, 1.7 * len(types)), squeeze=False)
    for r, t in enumerate(types):
        idx = by_type[t]
        # one image per subject first (diversity), then fill up
        order = [idx[j] for j in rng.permutation(len(idx))]
        seen, picks = set(), []
        for i in order:
            if samples[i].subject not in seen:
                picks.append(i)
                seen.add(samples[i].subject)
        picks += [i for i in order if i not in picks]
        for c in range(per_type):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for sp in ax.spines.values():
                sp.set_visible(False)
            if c < len(picks):
                ax.imshow(ds.load_crop(picks[c]))
                ax.set_title(f"{samples[picks[c]].split}/{samples[picks[c]].subject}", fontsize=6)
            if c == 0:
                ax.set_ylabel(f"{t}: {celeba.SPOOF_TYPE_NAMES.get(t, t)}\n(n={len(idx)})", fontsize=8)
    fig.suptitle(f"Face crops at {size}x{size} - {results.dataset_label(root)}", fontsize=9)
    fig.tight_layout()
    return fig


def mean_log_spectra(root: str | os.PathLike, size: int = 128, per_class: int = 256, seed: int = 0,
                     samples: Sequence[index.Sample] | None = None) -> dict[str, np.ndarray]:
    """Mean centred log(1 + |FFT|) of grayscale face crops, per class (live / spoof), from the train split.

    Prints and screens add periodic structure (halftone dots, sub-pixel grids, moire) and remove some
    skin texture: those show up as peaks and slope changes away from the centre of the mean spectrum.
    A Hann window is applied first, so the crop's non-periodic borders do not paint a bright cross
    through the spectrum that would hide the medium's own structure."""
    root = Path(root)
    samples = list(samples) if samples is not None else list(index.load_index(root, "train"))
    ds = data.FaceDataset(root, samples, size=size)
    rng = np.random.default_rng([seed, 31337])
    out = {}
    for name, lab in (("live", 0), ("spoof", 1)):
        idx = [i for i, s in enumerate(samples) if s.label == lab]
        idx = [idx[j] for j in np.sort(rng.permutation(len(idx))[:per_class])]
        acc = np.zeros((size, size), np.float64)
        win = np.outer(np.hanning(size), np.hanning(size)).astype(np.float32)
        for i in idx:
            g = ds.load_crop(i).astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            acc += np.log1p(np.abs(np.fft.fftshift(np.fft.fft2((g - g.mean()) * win))))
        out[name] = acc / max(1, len(idx))
        out[f"n_{name}"] = np.array(len(idx))
    return out


def radial_profile(spec: np.ndarray) -> np.ndarray:
    """Mean over rings of integer radius around the centre (DC) of a centred spectrum."""
    h, w = spec.shape
    yy, xx = np.indices(spec.shape)
    r = np.hypot(yy - h // 2, xx - w // 2).astype(int)
    sums = np.bincount(r.ravel(), spec.ravel())
    counts = np.bincount(r.ravel())
    return (sums / np.maximum(counts, 1))[: min(h, w) // 2]


def spectra_figure(spectra: dict[str, np.ndarray], title: str = "") -> plt.Figure:
    """Live / spoof mean spectra, their difference, and the radial profiles."""
    live, spoof = spectra["live"], spectra["spoof"]
    fig, ax = plt.subplots(1, 4, figsize=(16, 3.8), layout="constrained")
    lo, hi = np.percentile(np.concatenate([live.ravel(), spoof.ravel()]), [1, 99.5])
    for a, s, name in ((ax[0], live, "live"), (ax[1], spoof, "spoof")):
        im = a.imshow(s, cmap="magma", vmin=lo, vmax=hi)
        a.set_title(f"mean log|FFT|, {name} (n={int(spectra['n_' + name])})", fontsize=9)
        a.axis("off")
    fig.colorbar(im, ax=ax[1], fraction=0.046)
    d = spoof - live
    m = float(np.abs(d).max()) or 1.0
    im = ax[2].imshow(d, cmap="coolwarm", vmin=-m, vmax=m)
    ax[2].set_title("spoof - live", fontsize=9)
    ax[2].axis("off")
    fig.colorbar(im, ax=ax[2], fraction=0.046)
    for s, name in ((live, "live"), (spoof, "spoof")):
        prof = radial_profile(s)
        ax[3].plot(np.arange(1, len(prof)), prof[1:], label=name)   # radius 0 = DC, removed by the mean
    ax[3].set_xlabel("radial frequency (cycles per crop)")
    ax[3].set_ylabel("mean log|FFT|")
    ax[3].legend()
    ax[3].set_title("radial profile", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def label_frame(root: str | os.PathLike) -> pd.DataFrame:
    """One row per label-file entry that passes the label checks (both splits): split, live/spoof, spoof type,
    illumination, environment."""
    rows = []
    for split in celeba.SPLITS:
        for v in index.screen_labels(root, split, celeba.read_labels(root, split)).labels.values():
            stype, illum, env = v[celeba.SPOOF_TYPE], v[celeba.ILLUMINATION], v[celeba.ENVIRONMENT]
            rows.append({"split": split, "class": "spoof" if v[celeba.LIVE_SPOOF] else "live",
                         "spoof_type": f"{stype} {celeba.SPOOF_TYPE_NAMES.get(stype, '?')}",
                         "illumination": f"{illum} {celeba.ILLUMINATION_NAMES.get(illum, '?')}",
                         "environment": f"{env} {celeba.ENVIRONMENT_NAMES.get(env, '?')}"})
    return pd.DataFrame(rows)


def label_histograms(root: str | os.PathLike) -> plt.Figure:
    """Counts of live/spoof, spoof type, illumination and environment per split (from the label files)."""
    import seaborn as sns
    df = label_frame(root)
    cols = ("class", "spoof_type", "illumination", "environment")
    fig, axes = plt.subplots(1, len(cols), figsize=(4.2 * len(cols), 3.8))
    for ax, col in zip(axes, cols):
        order = sorted(df[col].unique(), key=lambda s: (len(s.split()[0]), s))
        sns.countplot(data=df, y=col, hue="split", order=order, hue_order=list(celeba.SPLITS), ax=ax)
        ax.set_title(col.replace("_", " "), fontsize=10)
        ax.set_ylabel("")
    fig.suptitle(f"Label histograms - {results.dataset_label(root)}", fontsize=10)
    fig.tight_layout()
    return fig
