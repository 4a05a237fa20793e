"""Notebook 02 (seed 002): the Fourier-loss texture model and its ablation, trained and inspected.

Cells here: `setup` -> `method` (what is trained, with which loss, budget and calibration) -> `train`
(with and without the Fourier loss, per training seed; same seed -> same data and initial weights for
both arms) -> `spectra_figure`. The deployment cells that follow (ONNX export, INT8 quantization,
latency, the `texture_deploy` table, FP32 vs INT8 agreement, ROC, the summary against seed 002's claims
and shipping the model) are in `paperkit.studies.texture_deploy`, on the same `Study`. Seed 002 reports
98% accuracy on CelebA-Spoof, a 600 KB INT8 model and < 20 ms on an old i7; our numbers name the dataset
they were measured on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch

from paperkit import fourier, quiet, results
from paperkit.losses import LossFn, fourier_loss_fn
from paperkit.models.texture import TextureNet, texture_net
from paperkit.profiles import Profile, get_profile, run_name
from paperkit.studies import common

NOTEBOOK = "02_fourier_texture"
MODELS = ("texture", "texture_no_fourier")     # with / without the Fourier auxiliary loss

Key = tuple[str, str, int]                     # (model, format, seed): one deployed file (texture_deploy)


@dataclass
class Study(common.Study):
    """Everything one run of notebook 02 shares between its cells (on top of `common.Study`); its first
    seed's Fourier model is the one shipped in run_dir/models/."""

    models: dict[tuple[str, int], TextureNet] = field(default_factory=dict)   # (model, seed)
    histories: dict[tuple[str, int], Any] = field(default_factory=dict)
    onnx: dict[Key, Path] = field(default_factory=dict)
    scored: dict[tuple[str, str, int, str], Any] = field(default_factory=dict)  # (model, fmt, seed, split) -> Scored
    info: dict[str, Any] = field(default_factory=dict)


def setup(profile: str | Profile = "default", data_root: str = "", run_dir: str = "../results",
          seeds: Sequence[int] | int | None = None, overrides: dict[str, Any] | None = None) -> Study:
    """Resolve the profile (+ `overrides`), the training seeds (None -> the profile's) and the dataset
    (embedded synthetic one when `data_root` is empty, built with `profile.data_seed` so every training
    seed sees one split)."""
    study = common.setup(Study, NOTEBOOK, profile, data_root, run_dir, seeds, overrides)
    p = study.profile
    print(f"profile {p.name}; dataset: {study.dataset}; images "
          f"{ {k: len(v.dataset) for k, v in study.loaders.items()} }; input {p.input_size}px; "
          f"training seeds {list(study.seeds)} (data seed {p.data_seed})")
    return study


def method(study: Study) -> pd.DataFrame:
    """The recipe as run: builder, loss and weight, budget, calibration, latency and interval protocol.

    A table rather than prose so the notebook shows the values this run actually used (profile fields)."""
    p = study.profile
    rows = [
        ("model builder", "paperkit.models.texture.texture_net(num_classes=2)",
         f"{texture_net().deploy_parameters() / 1e6:.3f} M parameters at inference (Fourier head is training-only)"),
        ("Fourier loss", f"paperkit.losses.fourier_loss_fn(weight={p.fourier_weight})",
         "CE + weight * MSE(predicted, target log|FFT| of the same augmented batch)"),
        ("ablation loss", "cross-entropy only (paperkit.losses.cross_entropy_loss)",
         "same seed -> same initial weights, batches and augmentations"),
        ("budget", f"{p.texture_epochs} epochs, Adam lr {p.texture_lr}, batch {p.batch_size}, "
                   f"input {p.input_size}px", "best epoch by validation ACER"),
        ("training seeds", str(list(study.seeds)), f"data seed {p.data_seed} (one split for every training seed)"),
        ("INT8 calibration", f"{p.calib_images} un-augmented train crops (seeded subset)",
         "onnxruntime static QDQ, per-channel symmetric int8 weights, uint8 activations, MinMax"),
        ("operating points", "fixed_0.5; val_eer (threshold at the EER of that model/format's own val scores)",
         "no test label chooses a threshold"),
        ("intervals", f"95% subject bootstrap, {p.bootstrap_samples} resamples",
         "resamples test subjects (their images are not independent)"),
        ("latency", f"batch 1, 1 thread, ONNX Runtime; {p.latency_rounds} interleaved rounds x "
                    f"{p.latency_iters} runs",
                    "CI: bootstrap over rounds (median; ratio to the FP32 No-PTA MobileNetV2)"),
    ]
    df = pd.DataFrame(rows, columns=["item", "value", "note"])
    study.tables["method"] = df
    return df


# ---------------------------------------------------------------------------------------------- train

def checkpoint_name(key: str, profile: str, seed: int) -> str:
    """run_dir/checkpoints/<name>: one per arm, profile and training seed."""
    return f"02_{key}_{profile}_s{seed}"


def train(study: Study, builder: Callable[..., TextureNet] = texture_net,
          loss: Callable[[float], LossFn] = fourier_loss_fn, fourier_weight: float | None = None,
          epochs: int | None = None, lr: float | None = None, progress: bool = True) -> pd.DataFrame:
    """Train the texture model with CE + w*MSE(spectrum) and, as the ablation, with CE only, per seed.

    `builder` (called with num_classes=2), the Fourier arm's `loss` (a factory taking the weight `w`), `w`
    and the budget (`epochs`, `lr`) are what the notebook shows; None takes the profile's. Values other
    than the profile's become part of the profile (and of its `run_name`), another builder or loss part of
    the checkpoint names, so an altered recipe never resumes the default one's checkpoints.
    Within a seed both arms start from identical weights and see the same batches and augmentations
    (the loop reseeds; the sampler is keyed by seed and epoch), so the paired comparison isolates the loss.
    """
    from paperkit.train import fit

    prof = study.profile
    want = {"fourier_weight": prof.fourier_weight if fourier_weight is None else float(fourier_weight),
            "texture_epochs": prof.texture_epochs if epochs is None else int(epochs),
            "texture_lr": prof.texture_lr if lr is None else float(lr)}
    if any(getattr(prof, k) != v for k, v in want.items()):
        prof = study.profile = get_profile(prof, **want)
        print(f"recipe differs from profile {prof.name}'s ({want}): checkpoints under {run_name(prof)}")
    defaults = ((builder, texture_net), (loss, fourier_loss_fn))
    suffix = "".join(f"-{getattr(f, '__name__', 'custom')}" for f, d in defaults if f is not d)
    loss_fns = {"texture": loss(prof.fourier_weight), "texture_no_fourier": None}
    frames = []
    for seed in study.seeds:
        for key in MODELS:
            torch.manual_seed(seed)  # identical initial weights for both arms
            model = builder(num_classes=2)
            hist = fit(model, study.loaders, run_dir=study.run_dir,
                       name=checkpoint_name(key, run_name(prof), seed) + suffix,
                       epochs=prof.texture_epochs, lr=prof.texture_lr, seed=seed, loss_fn=loss_fns[key],
                       channels_last=prof.channels_last, lr_schedule=prof.lr_schedule,
                       schedule_epochs=prof.texture_epochs, progress=progress)
            study.models[(key, seed)] = model.eval()
            study.histories[(key, seed)] = hist
            df = hist.to_frame()
            df.insert(0, "model", key)
            df.insert(1, "seed", seed)
            frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    for c in ("val_acer", "val_accuracy"):
        if c in out:
            out[c] = out[c] * 100.0
    out["dataset"] = study.dataset
    out = _across_seeds(out, ["model", "epoch"], [c for c in ("train_loss", "val_acer", "val_accuracy", "val_auc")
                                                  if c in out])
    study.tables["history"] = out
    study.outputs.append(results.write_table(study.run_dir, "texture_history", out))
    return out


def require_trained(study: Study) -> None:
    """Raise unless `train` has left both arms of every seed in the study."""
    missing = [(k, s) for s in study.seeds for k in MODELS if (k, s) not in study.models]
    if missing:
        raise RuntimeError(f"no trained texture models {missing} in this study; "
                           "run paperkit.studies.fourier_texture.train(study) first")


def _across_seeds(df: pd.DataFrame, by: list[str], metrics_: list[str]) -> pd.DataFrame:
    """Per-seed rows plus mean/std rows (stats.across_seeds) when the study has more than one seed."""
    from paperkit import stats

    return stats.across_seeds(df, by, metrics_)


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
    require_trained(study)
    rows = []
    for seed in study.seeds:
        for key in MODELS:
            m = study.models[(key, seed)].eval()
            err, n = 0.0, 0
            with torch.no_grad():
                for x, _, _ in study.loaders["test"]:
                    quiet.checkpoint()
                    _, spec = m.forward_with_spectrum(x)
                    t = fourier.spectrum_target(x, spec.shape[-2:])
                    err += float(((spec - t) ** 2).mean(dim=(1, 2, 3)).sum())
                    n += len(x)
            rows.append({"model": key, "seed": seed, "dataset": study.dataset, "spectrum_mse": err / max(n, 1)})
    return _across_seeds(pd.DataFrame(rows), ["model"], ["spectrum_mse"])


def spectra_figure(study: Study, per_class: int = 2) -> Any:
    """Face | target spectrum | predicted spectrum, for live and spoof test faces (first seed's Fourier model)."""
    import matplotlib.pyplot as plt

    require_trained(study)
    x, ys = _pick(study.loaders["test"], per_class)
    m = study.models[("texture", study.seed)].eval()
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
    fig.suptitle(f"Fourier head on test faces, seed {study.seed} ({study.dataset})", fontsize=9)
    fig.tight_layout()
    study.outputs.append(results.save_figure(study.run_dir, "texture_spectra", fig))
    errs = spectrum_errors(study)
    study.tables["spectrum_mse"] = errs
    study.outputs.append(results.write_table(study.run_dir, "texture_spectrum_mse", errs))
    return fig
