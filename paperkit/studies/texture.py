"""Notebook 02 (seed 002): Fourier-loss texture model, its ablation, and INT8 ONNX deployment.

Cells: `setup` -> `train` (with and without the Fourier loss, same seed/data/initial weights) ->
`spectra_figure` (predicted vs target spectra, live and spoof faces) -> `deploy` (export, parity,
INT8 static QDQ quantization calibrated on real training crops, ONNX Runtime test scores, latency next
to the FP32 No-PTA MobileNetV2 ONNX in the same interleaved run) -> `deploy_table` -> `roc_figure` ->
`summary`. Seed 002 reports 98% accuracy on CelebA-Spoof, a 600 KB INT8 model and < 20 ms on an old
i7; our numbers name the dataset they were measured on.
"""
from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from paperkit import export, fourier, metrics, results
from paperkit.models.texture import TextureNet, texture_net
from paperkit.profiles import Profile

NOTEBOOK = "02_fourier_texture"
MODELS = ("texture", "texture_no_fourier")     # with / without the Fourier auxiliary loss
BASELINE = "mobilenet_v2_nopta"
FP32_NAME, INT8_NAME = "texture_fp32.onnx", "texture_int8.onnx"
THRESHOLD = 0.5
SEED_002 = {"accuracy": 98.0, "size_kb": 600.0, "latency_ms": 20.0}   # as reported (CelebA-Spoof, i7 2nd gen)


@dataclass
class Study:
    """Everything one run of notebook 02 shares between its cells."""

    profile: Profile
    root: Path
    run_dir: Path
    seed: int
    dataset: str
    loaders: dict[str, Any]
    started: float = field(default_factory=time.time)
    models: dict[str, TextureNet] = field(default_factory=dict)
    histories: dict[str, Any] = field(default_factory=dict)
    onnx: dict[str, Path] = field(default_factory=dict)          # "<model>/<format>" -> file
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)


def setup(profile: str | Profile = "default", data_root: str = "", run_dir: str = "../results",
          seed: int = 0) -> Study:
    """Resolve the profile and dataset (embedded synthetic one when `data_root` is empty), build loaders."""
    from paperkit.studies.common import open_data

    d = open_data(profile, data_root, seed)
    study = Study(profile=d.profile, root=d.root, run_dir=Path(run_dir), seed=seed, dataset=d.dataset,
                  loaders=d.loaders)
    print(f"profile {d.profile.name}; dataset: {d.dataset}; images {d.sizes()}; input {d.profile.input_size}px; "
          f"Fourier weight {d.profile.fourier_weight}")
    return study


# ---------------------------------------------------------------------------------------------- train

def train(study: Study, progress: bool = True) -> pd.DataFrame:
    """Train the texture model with CE + w*MSE(spectrum) and, as the ablation, with CE only.

    Both start from identical weights (same seed) and see the same batches and augmentations (the
    loop reseeds; the sampler is keyed by seed and epoch). Checkpoints: run_dir/checkpoints/02_<model>_<profile>.
    """
    from paperkit.train import fit

    prof, seed = study.profile, study.seed
    loss_fns = {"texture": fourier.fourier_loss_fn(prof.fourier_weight), "texture_no_fourier": None}
    frames = []
    for key in MODELS:
        torch.manual_seed(seed)  # identical initial weights for both arms
        model = texture_net(num_classes=2)
        hist = fit(model, study.loaders, run_dir=study.run_dir, name=f"02_{key}_{prof.name}",
                   epochs=prof.texture_epochs, lr=prof.texture_lr, seed=seed, loss_fn=loss_fns[key],
                   channels_last=prof.channels_last, progress=progress)
        study.models[key] = model.eval()
        study.histories[key] = hist
        df = hist.to_frame()
        df.insert(0, "model", key)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    for c in ("val_acer", "val_accuracy"):
        if c in out:
            out[c] = out[c] * 100.0
    out["dataset"] = study.dataset
    study.tables["history"] = out
    study.outputs.append(results.write_table(study.run_dir, "texture_history", out))
    return out


def _require(study: Study) -> None:
    if set(MODELS) - set(study.models):
        raise RuntimeError("no trained texture models in this study; run paperkit.studies.texture.train(study) first")


# ---------------------------------------------------------------------------------------------- spectra

def _pick(loader: Any, per_class: int) -> tuple[torch.Tensor, list[int]]:
    """The first `per_class` live and spoof faces of an (unshuffled) loader."""
    xs: list[torch.Tensor] = []
    ys: list[int] = []
    want = {0: per_class, 1: per_class}
    for x, y, _ in loader:
        for i in range(len(y)):
            c = int(y[i])
            if want.get(c, 0) > 0:
                xs.append(x[i])
                ys.append(c)
                want[c] -= 1
        if not any(want.values()):
            break
    if not xs:
        raise ValueError("the test loader is empty: no faces to show")
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    return torch.stack([xs[i] for i in order]), [ys[i] for i in order]


def spectrum_errors(study: Study) -> pd.DataFrame:
    """Test-split MSE of each model's predicted spectrum against the target (the ablation's head was
    never trained, so its error shows what the Fourier loss taught)."""
    _require(study)
    rows = []
    for key in MODELS:
        m = study.models[key].eval()
        err, n = 0.0, 0
        with torch.no_grad():
            for x, _, _ in study.loaders["test"]:
                _, spec = m.forward_with_spectrum(x)
                t = fourier.spectrum_target(x, spec.shape[-2:])
                err += float(((spec - t) ** 2).mean(dim=(1, 2, 3)).sum())
                n += len(x)
        rows.append({"model": key, "dataset": study.dataset, "spectrum_mse": err / max(n, 1)})
    return pd.DataFrame(rows)


def spectra_figure(study: Study, per_class: int = 2) -> Any:
    """Face | target spectrum | predicted spectrum, for live and spoof test faces (Fourier model)."""
    import matplotlib.pyplot as plt

    _require(study)
    x, ys = _pick(study.loaders["test"], per_class)
    m = study.models["texture"].eval()
    with torch.no_grad():
        _, pred = m.forward_with_spectrum(x)
    target = fourier.spectrum_target(x, pred.shape[-2:])
    full = fourier.spectrum_target(x, x.shape[-2:])
    faces = fourier.unnormalise(x).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    cols = ["face", "log|FFT| (full size)", f"target {tuple(pred.shape[-2:])}", "predicted"]
    fig, axes = plt.subplots(len(ys), 4, figsize=(9, 2.3 * len(ys)), squeeze=False)
    for i, y in enumerate(ys):
        ims = [faces[i], full[i, 0].numpy(), target[i, 0].numpy(), pred[i, 0].numpy()]
        for j, im in enumerate(ims):
            ax = axes[i, j]
            ax.imshow(im, cmap=None if j == 0 else "magma", vmin=None if j == 0 else 0, vmax=None if j == 0 else 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=9)
        axes[i, 0].set_ylabel("spoof" if y else "live")
    fig.suptitle(f"Fourier head on test faces ({study.dataset})", fontsize=9)
    fig.tight_layout()
    study.outputs.append(results.save_figure(study.run_dir, "texture_spectra", fig))
    errs = spectrum_errors(study)
    study.tables["spectrum_mse"] = errs
    study.outputs.append(results.write_table(study.run_dir, "texture_spectrum_mse", errs))
    return fig


# ---------------------------------------------------------------------------------------------- deploy

def calibration_loader(study: Study) -> Any:
    """Un-augmented crops of a seeded subset of the TRAIN split (profile.calib_images): real faces
    give the activation ranges deployment will see; random noise would not."""
    from torch.utils.data import DataLoader

    from paperkit.data import FaceDataset

    train_ds = study.loaders["train"].dataset
    n = min(study.profile.calib_images, len(train_ds.samples))
    pick = np.random.default_rng([study.seed, 2002]).permutation(len(train_ds.samples))[:n]
    ds = FaceDataset(study.root, [train_ds.samples[i] for i in sorted(pick)], study.profile.input_size,
                     train=False, seed=study.seed)
    return DataLoader(ds, batch_size=study.profile.batch_size, shuffle=False, num_workers=0)


def _quiet_export(model: nn.Module, path: Path, size: int) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export.export_onnx(model, path, input_size=size)


def deploy(study: Study) -> pd.DataFrame:
    """Export both arms (FP32) and INT8-quantize them, check parity, score the test split with ORT,
    and measure batch-1 1-thread latency beside the FP32 No-PTA MobileNetV2 ONNX in one run.

    The Fourier model's files go to run_dir/models/ (texture_fp32.onnx, texture_int8.onnx); the
    ablation's stay under run_dir/checkpoints/ (not a deliverable). Returns the latency table.
    """
    from paperkit import complexity
    from paperkit.models.pta import mobilenet_v2_baseline

    _require(study)
    prof, size = study.profile, study.profile.input_size
    models_dir = study.run_dir / "models"
    abl_dir = study.run_dir / "checkpoints" / f"02_onnx_{prof.name}"
    calib = calibration_loader(study)
    x_real = next(iter(study.loaders["test"]))[0]
    for key in MODELS:
        d = models_dir if key == "texture" else abl_dir
        fp32 = _quiet_export(study.models[key], d / f"{key}_fp32.onnx", size)
        study.info[f"{key}/parity"] = export.parity(study.models[key], fp32, x_real)
        t0 = time.time()
        int8 = export.quantize_int8(fp32, d / f"{key}_int8.onnx", calib, max_images=prof.calib_images)
        study.info[f"{key}/quantize_s"] = time.time() - t0
        study.onnx[f"{key}/fp32"], study.onnx[f"{key}/int8"] = fp32, int8
        print(f"{key}: ONNX parity (max |logit diff| on {len(x_real)} real test crops) "
              f"{study.info[f'{key}/parity']:.2e}; FP32 {export.file_size_kb(fp32):.0f} KB, "
              f"INT8 {export.file_size_kb(int8):.0f} KB ({len(calib.dataset)} calibration crops)")
    for name, path in study.onnx.items():
        study.scores[name] = export.onnx_scores(export.ort_session(path), study.loaders["test"])
    with tempfile.TemporaryDirectory(prefix="paperkit-02-") as td:
        torch.manual_seed(study.seed)
        base = _quiet_export(mobilenet_v2_baseline(num_classes=2).eval(), Path(td) / "nopta.onnx", size)
        cands = {BASELINE + "/fp32": base, **study.onnx}
        lat = complexity.measure_latency(cands, rounds=prof.latency_rounds, iters=prof.latency_iters,
                                         warmup=max(3, prof.latency_iters // 5), input_size=size, threads=1)
    ref = float(lat.loc[lat["candidate"] == BASELINE + "/fp32", "median_ms"].iloc[0])
    lat["rel_latency"] = lat["median_ms"] / ref
    lat.insert(1, "input_size", size)
    lat["dataset"] = study.dataset
    study.tables["latency"] = lat
    study.outputs.append(results.write_table(study.run_dir, "texture_latency", lat))
    study.outputs += [study.onnx["texture/fp32"], study.onnx["texture/int8"]]
    return lat


def deploy_table(study: Study) -> pd.DataFrame:
    """`tables/texture_deploy.csv`: quality (percent, ISO/IEC 30107-3, threshold 0.5), size and latency
    of every model/format, plus `texture_int8_agreement.csv` (FP32 vs INT8 label agreement)."""
    if not study.scores or "latency" not in study.tables:
        raise RuntimeError("run paperkit.studies.texture.deploy(study) first")
    lat = study.tables["latency"].set_index("candidate")
    rows = []
    for name, path in study.onnx.items():
        key, fmt = name.split("/")
        s, y = study.scores[name]
        m = metrics.evaluate(s, y, THRESHOLD)
        rows.append({"model": key, "format": fmt, "dataset": study.dataset,
                     "params_m": study.models[key].deploy_parameters() / 1e6,
                     "size_kb": export.file_size_kb(path),
                     "accuracy": 100 * m["accuracy"], "apcer": 100 * m["apcer"], "bpcer": 100 * m["bpcer"],
                     "acer": 100 * m["acer"], "latency_ms": float(lat.loc[name, "median_ms"]),
                     "rel_latency": float(lat.loc[name, "rel_latency"])})
    df = pd.DataFrame(rows)
    study.tables["deploy"] = df
    study.outputs.append(results.write_table(study.run_dir, "texture_deploy", df))
    agree = []
    for key in MODELS:
        s32, y = study.scores[f"{key}/fp32"]
        s8, _ = study.scores[f"{key}/int8"]
        a32, a8 = (metrics.evaluate(s, y, THRESHOLD)["acer"] for s in (s32, s8))
        agree.append({"model": key, "dataset": study.dataset, "images": len(y),
                      "label_agreement": 100 * float(np.mean((s32 >= THRESHOLD) == (s8 >= THRESHOLD))),
                      "acer_fp32": 100 * a32, "acer_int8": 100 * a8, "acer_delta": 100 * (a8 - a32),
                      "max_abs_score_diff": float(np.abs(s32 - s8).max()),
                      "parity_fp32_vs_torch": study.info[f"{key}/parity"]})
    ag = pd.DataFrame(agree)
    study.tables["agreement"] = ag
    study.outputs.append(results.write_table(study.run_dir, "texture_int8_agreement", ag))
    return df


def roc_figure(study: Study) -> Any:
    """ROC curves on the test split: FP32 vs INT8 (ORT) for both arms."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    if not study.scores:
        raise RuntimeError("run paperkit.studies.texture.deploy(study) first")
    fig, ax = plt.subplots(figsize=(5, 4.5))
    styles = {"fp32": "-", "int8": "--"}
    for name, (s, y) in study.scores.items():
        key, fmt = name.split("/")
        if len(set(y.tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        auc = metrics.roc_auc(s, y)
        ax.plot(fpr, tpr, styles[fmt], label=f"{key} {fmt.upper()} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="gray", lw=0.8)
    ax.set_xlabel("BPCER (bona fide rejected)")
    ax.set_ylabel("1 - APCER (attacks detected)")
    ax.set_title(f"Texture model, ONNX Runtime\n{study.dataset}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    study.outputs.append(results.save_figure(study.run_dir, "texture_roc", fig))
    return fig


def summary(study: Study) -> pd.DataFrame:
    """One line per claim of seed 002 with our measurement beside it."""
    d = study.tables["deploy"].set_index(["model", "format"])
    ag = study.tables["agreement"].set_index("model")
    t32, t8 = d.loc[("texture", "fp32")], d.loc[("texture", "int8")]
    nf = d.loc[("texture_no_fourier", "fp32")]
    rows = [
        ("INT8 file size (KB)", t8["size_kb"], "<= 600", SEED_002["size_kb"]),
        ("ACER FP32 (%)", t32["acer"], "", None),
        ("ACER INT8 (%)", t8["acer"], "within 0.5 of FP32", None),
        ("FP32 vs INT8 label agreement (%)", ag.loc["texture", "label_agreement"], "", None),
        ("accuracy INT8 (%)", t8["accuracy"], "", SEED_002["accuracy"]),
        ("INT8 latency / FP32 No-PTA MobileNetV2 ONNX", t8["rel_latency"], "<= 0.35", None),
        ("FP32 latency / FP32 No-PTA MobileNetV2 ONNX", t32["rel_latency"], "", None),
        ("INT8 latency (ms, batch 1, 1 thread)", t8["latency_ms"], "", SEED_002["latency_ms"]),
        ("ablation: ACER without Fourier loss, FP32 (%)", nf["acer"], "", None),
        ("ablation: ACER with - without (points)", t32["acer"] - nf["acer"], "< 0 = Fourier helps", None),
    ]
    df = pd.DataFrame(rows, columns=["quantity", "ours", "target", "seed_002"])
    df["dataset"] = study.dataset
    study.tables["summary"] = df
    return df
