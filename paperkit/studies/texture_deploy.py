"""Notebook 02 (seed 002): deploying the texture models and judging them in the deployed format.

Cells: `deploy` (export both arms of every seed to ONNX, parity, INT8 static QDQ quantization calibrated
on real training crops, ONNX Runtime scores on val and test, latency in interleaved rounds beside the
FP32 No-PTA MobileNetV2 ONNX) -> `deploy_table` (tables/texture_deploy.csv: quality at two operating
points with subject-bootstrap intervals, size, latency; per-image predictions; FP32 vs INT8 `agreement`)
-> `roc_figure` -> `summary` (one line per seed 002 claim) -> `ship` (the INT8 model into the package).
They work on the `Study` that `paperkit.studies.fourier_texture` sets up and trains.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from paperkit import deploy as deployment   # `deploy(study)` below is this notebook's deployment cell
from paperkit import metrics, registry, results, stats
from paperkit.papers import SEED002
from paperkit.studies.fourier_texture import MODELS, Key, Study, require_trained

FORMATS = ("fp32", "int8")                     # both arms are deployed in both formats (ablation in INT8 too)
SPLITS = ("val", "test")                       # val: the val-EER threshold; test: the reported metrics
BASELINE = "mobilenet_v2_nopta/fp32"           # latency reference candidate
FP32_NAME, INT8_NAME = "texture_fp32.onnx", "texture_int8.onnx"
PREDICTIONS = "texture"                        # run_dir/predictions/texture.csv.gz
BOOT_SEED = 0                                  # one bootstrap stream for every row: intervals are comparable


def calibration_loader(study: Study, seed: int | None = None) -> Any:
    """Un-augmented crops of a seeded subset of the TRAIN split (profile.calib_images): real faces
    give the activation ranges deployment will see; random noise would not."""
    from torch.utils.data import DataLoader

    from paperkit.data import FaceDataset

    seed = study.seed if seed is None else int(seed)
    train_ds = study.loaders["train"].dataset
    n = min(study.profile.calib_images, len(train_ds.samples))
    pick = np.random.default_rng([seed, 2002]).permutation(len(train_ds.samples))[:n]
    ds = FaceDataset(study.root, [train_ds.samples[i] for i in sorted(pick)], study.profile.input_size,
                     train=False, seed=seed)
    return DataLoader(ds, batch_size=study.profile.batch_size, shuffle=False, num_workers=0)


def onnx_path(study: Study, key: str, fmt: str, seed: int) -> Path:
    """The first seed's Fourier model is the deliverable (run_dir/models/texture_<fmt>.onnx); every other
    file (the ablation, later seeds) stays under run_dir/checkpoints/02_onnx_<profile>/."""
    if key == "texture" and seed == study.seed:
        return study.run_dir / "models" / f"texture_{fmt}.onnx"
    return study.run_dir / "checkpoints" / f"02_onnx_{study.profile.name}" / f"{key}_s{seed}_{fmt}.onnx"


def candidate(key: str, fmt: str, seed: int) -> str:
    """Latency candidate name of one file."""
    return f"{key}/{fmt}/s{seed}"


def latency_table(rounds_df: pd.DataFrame, n_boot: int = 2000, seed: int = BOOT_SEED) -> pd.DataFrame:
    """Per candidate: median latency over rounds with a bootstrap CI, and the latency ratio to BASELINE
    with a paired bootstrap CI over the same rounds (stats.ratio_interval); one row per candidate."""
    wide = rounds_df.pivot(index="round", columns="candidate", values="median_ms").sort_index()
    if BASELINE not in wide:
        raise ValueError(f"latency rounds have no {BASELINE!r} reference; time it in the same run")
    ref = wide[BASELINE].to_numpy()
    rows = []
    for name in wide.columns:
        v = wide[name].to_numpy()
        m = stats.median_interval(v, n_boot=n_boot, seed=seed)
        r = stats.ratio_interval(v, ref, paired=True, n_boot=n_boot, seed=seed, stat="median")
        first = rounds_df[rounds_df["candidate"] == name].iloc[0]
        rows.append({"candidate": name, "latency_ms": m.value, "latency_ms_ci_low": m.low, "latency_ms_ci_high": m.high,
                     "rel_latency": r.value, "rel_latency_ci_low": r.low, "rel_latency_ci_high": r.high,
                     "latency_rounds": len(v), "latency_iters": int(first["iters"]),
                     "threads": int(first["threads"])})
    return pd.DataFrame(rows)


def deploy(study: Study) -> pd.DataFrame:
    """Export both arms of every seed (FP32) and INT8-quantize them, check parity, score val and test with
    ORT, and time every file beside the FP32 No-PTA MobileNetV2 ONNX in one interleaved run.

    Returns the latency table (one row per file, with its round-bootstrap intervals)."""
    require_trained(study)
    prof, size = study.profile, study.profile.input_size
    x_real = next(iter(study.loaders["test"]))[0]
    for seed in study.seeds:
        calib = calibration_loader(study, seed)
        for key in MODELS:
            model = study.models[(key, seed)]
            fp32 = deployment.export_quietly(model, onnx_path(study, key, "fp32", seed), size)
            study.info[f"{key}/s{seed}/parity"] = deployment.parity(model, fp32, x_real)
            t0 = time.time()
            int8 = deployment.quantize_int8(fp32, onnx_path(study, key, "int8", seed), calib,
                                            max_images=prof.calib_images)
            study.info[f"{key}/s{seed}/quantize_s"] = time.time() - t0
            study.onnx[(key, "fp32", seed)], study.onnx[(key, "int8", seed)] = fp32, int8
            print(f"{key} seed {seed}: ONNX parity (max |logit diff| on {len(x_real)} real test crops) "
                  f"{study.info[f'{key}/s{seed}/parity']:.2e}; FP32 {deployment.file_size_kb(fp32):.0f} KB, "
                  f"INT8 {deployment.file_size_kb(int8):.0f} KB ({len(calib.dataset)} calibration crops)")
    for (key, fmt, seed), path in study.onnx.items():
        sess = deployment.ort_session(path)
        for split in SPLITS:
            loader = study.loaders[split]
            if len(loader.dataset) == 0:
                continue
            study.scored[(key, fmt, seed, split)] = deployment.onnx_scored(sess, loader)
    with tempfile.TemporaryDirectory(prefix="paperkit-02-") as td:
        torch.manual_seed(study.seed)
        nopta = registry.MODELS.get("mobilenet_v2_baseline")(num_classes=2).eval()
        base = deployment.export_quietly(nopta, Path(td) / "nopta.onnx", size)
        cands = {BASELINE: base, **{candidate(*k): p for k, p in study.onnx.items()}}
        rounds = deployment.interleaved_latency(cands, rounds=prof.latency_rounds, iters=prof.latency_iters,
                                                warmup=max(3, prof.latency_iters // 5), input_size=size, threads=1)
    rounds.insert(1, "input_size", size)
    rounds["dataset"] = study.dataset
    study.tables["latency_rounds"] = rounds
    study.outputs.append(results.write_table(study.run_dir, "texture_latency_rounds", rounds))
    lat = latency_table(rounds, n_boot=max(prof.bootstrap_samples, 1000))
    meta = {candidate(*k): k for k in study.onnx}
    meta[BASELINE] = ("mobilenet_v2_nopta", "fp32", study.seed)
    lat.insert(1, "model", [meta[c][0] for c in lat["candidate"]])
    lat.insert(2, "format", [meta[c][1] for c in lat["candidate"]])
    lat.insert(3, "seed", [meta[c][2] for c in lat["candidate"]])
    lat.insert(4, "input_size", size)
    lat["dataset"] = study.dataset
    study.tables["latency"] = lat
    lat = stats.across_seeds(lat, ["model", "format"], ["latency_ms", "rel_latency"])
    study.outputs.append(results.write_table(study.run_dir, "texture_latency", lat))
    study.outputs += [onnx_path(study, "texture", f, study.seed) for f in FORMATS]
    return lat


def predictions(study: Study) -> pd.DataFrame:
    """Per-image scores of every model x format x seed on val and test (the claims' paired intervals)."""
    if not study.scored:
        raise RuntimeError("run paperkit.studies.texture_deploy.deploy(study) first")
    frames = [sc.frame(model=key, config="", bn="", fmt=fmt, seed=seed, split=split, dataset=study.dataset)
              for (key, fmt, seed, split), sc in study.scored.items()]
    return pd.concat(frames, ignore_index=True)


def deploy_table(study: Study) -> pd.DataFrame:
    """`tables/texture_deploy.csv`: quality at both operating points with subject-bootstrap CIs, size and
    latency (with round-bootstrap CIs) of every model x format x seed; writes the per-image predictions
    and `texture_int8_agreement.csv` (FP32 vs INT8, paired)."""
    if not study.scored or "latency" not in study.tables:
        raise RuntimeError("run paperkit.studies.texture_deploy.deploy(study) first")
    nb = study.profile.bootstrap_samples
    lat = study.tables["latency"].set_index("candidate")
    lat_cols = ["latency_ms", "latency_ms_ci_low", "latency_ms_ci_high", "rel_latency", "rel_latency_ci_low",
                "rel_latency_ci_high", "latency_rounds"]
    rows = []
    for (key, fmt, seed), path in study.onnx.items():
        test = study.scored.get((key, fmt, seed, "test"))
        if test is None:
            raise RuntimeError("the test split is empty: nothing to report in texture_deploy")
        val = study.scored.get((key, fmt, seed, "val"))
        for q in stats.quality_rows(test, val, n_boot=nb, seed=BOOT_SEED):
            rows.append({"model": key, "format": fmt, "seed": seed, **q,
                         "params_m": study.models[(key, seed)].deploy_parameters() / 1e6,
                         "size_kb": deployment.file_size_kb(path),
                         **{c: lat.loc[candidate(key, fmt, seed), c] for c in lat_cols},
                         "dataset": study.dataset})
    df = pd.DataFrame(rows)
    lead = ["model", "format", "seed", "operating_point", "threshold"]
    df = df[lead + [c for c in df.columns if c not in lead]]
    df = df.sort_values(["seed", "operating_point", "model", "format"], kind="stable",
                        key=lambda c: c.map({"fixed_0.5": 0, "val_eer": 1}) if c.name == "operating_point" else c)
    # mean/std across seeds of the point estimates only (an averaged interval bound means nothing)
    num = [c for c in df.columns if c not in lead + ["dataset", "apcer_worst_type_code"]
           and not c.endswith(("_ci_low", "_ci_high")) and pd.api.types.is_numeric_dtype(df[c])]
    df = stats.across_seeds(df.reset_index(drop=True), ["model", "format", "operating_point"], num)
    study.tables["deploy"] = df
    study.outputs.append(results.write_table(study.run_dir, "texture_deploy", df))
    study.outputs.append(results.write_predictions(study.run_dir, PREDICTIONS, predictions(study)))
    study.tables["agreement"] = agreement(study)
    study.outputs.append(results.write_table(study.run_dir, "texture_int8_agreement", study.tables["agreement"]))
    return df


def agreement(study: Study) -> pd.DataFrame:
    """FP32 vs INT8 on the same test images (threshold 0.5): label agreement, score drift, and the
    paired subject-bootstrap CI of ACER(INT8) - ACER(FP32)."""
    rows = []
    for seed in study.seeds:
        for key in MODELS:
            a32, a8 = study.scored[(key, "fp32", seed, "test")], study.scored[(key, "int8", seed, "test")]
            d = stats.paired_difference(a8, a32, "acer", n_boot=study.profile.bootstrap_samples, seed=BOOT_SEED)
            rows.append({"model": key, "seed": seed, "images": len(a32.labels),
                         "label_agreement": 100 * float(np.mean((a32.scores >= 0.5) == (a8.scores >= 0.5))),
                         "acer_fp32": 100 * metrics.evaluate(a32.scores, a32.labels, 0.5)["acer"],
                         "acer_int8": 100 * metrics.evaluate(a8.scores, a8.labels, 0.5)["acer"],
                         "acer_delta": d.value, "acer_delta_ci_low": d.low, "acer_delta_ci_high": d.high,
                         "n_subjects": d.n, "max_abs_score_diff": float(np.abs(a32.scores - a8.scores).max()),
                         "parity_fp32_vs_torch": study.info[f"{key}/s{seed}/parity"], "dataset": study.dataset})
    df = pd.DataFrame(rows)
    return stats.across_seeds(df, ["model"], ["label_agreement", "acer_fp32", "acer_int8", "acer_delta",
                                         "max_abs_score_diff", "parity_fp32_vs_torch"])


def roc_figure(study: Study) -> Any:
    """ROC curves on the test split: FP32 vs INT8 (ORT) for both arms, first seed."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    if not study.scored:
        raise RuntimeError("run paperkit.studies.texture_deploy.deploy(study) first")
    fig, ax = plt.subplots(figsize=(5, 4.5))
    styles = {"fp32": "-", "int8": "--"}
    for (key, fmt, seed, split), sc in study.scored.items():
        if split != "test" or seed != study.seed or len(set(sc.labels.tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(sc.labels, sc.scores)
        auc = metrics.roc_auc(sc.scores, sc.labels)
        ax.plot(fpr, tpr, styles[fmt], label=f"{key} {fmt.upper()} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="gray", lw=0.8)
    ax.set_xlabel("BPCER (bona fide rejected)")
    ax.set_ylabel("1 - APCER (attacks detected)")
    ax.set_title(f"Texture model, ONNX Runtime, seed {study.seed}\n{study.dataset}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    study.outputs.append(results.save_figure(study.run_dir, "texture_roc", fig))
    return fig


def summary(study: Study) -> pd.DataFrame:
    """One line per claim of seed 002 with our measurement and its 95% CI (first seed, threshold 0.5;
    differences are paired subject bootstraps on the same test images). Verdicts live in claims.csv."""
    if "deploy" not in study.tables:
        raise RuntimeError("run paperkit.studies.texture_deploy.deploy_table(study) first")
    d = study.tables["deploy"]
    s0 = d[(d["seed"].astype(str) == str(study.seed))].set_index(["model", "format", "operating_point"])
    nb = study.profile.bootstrap_samples

    def cell(model: str, fmt: str, col: str, op: str = "fixed_0.5") -> tuple[float, float, float]:
        r = s0.loc[(model, fmt, op)]
        lo, hi = r.get(f"{col}_ci_low", np.nan), r.get(f"{col}_ci_high", np.nan)
        return float(r[col]), float(lo), float(hi)

    def paired(a: Key, b: Key) -> tuple[float, float, float]:
        i = stats.paired_difference(study.scored[(*a, "test")], study.scored[(*b, "test")], "acer",
                                    n_boot=nb, seed=BOOT_SEED)
        return i.value, i.low, i.high

    ag = study.tables["agreement"]
    ag0 = ag[ag["seed"].astype(str) == str(study.seed)].set_index("model")
    sd = study.seed
    size = float(s0.loc[("texture", "int8", "fixed_0.5"), "size_kb"])
    rows = [
        ("INT8 file size (KB)", (size, np.nan, np.nan), "<= 600", SEED002["size_kb"]),
        ("ACER FP32 (%)", cell("texture", "fp32", "acer"), "", None),
        ("ACER INT8 (%)", cell("texture", "int8", "acer"), "", None),
        ("ACER INT8 at the val-EER threshold (%)", cell("texture", "int8", "acer", "val_eer"), "", None),
        ("ACER INT8 - FP32 (points, paired)", paired(("texture", "int8", sd), ("texture", "fp32", sd)),
         "within +-0.5", None),
        ("FP32 vs INT8 label agreement (%)", (float(ag0.loc["texture", "label_agreement"]), np.nan, np.nan), "", None),
        ("accuracy INT8 (%)", cell("texture", "int8", "accuracy"), "", SEED002["accuracy"]),
        ("INT8 latency / FP32 No-PTA MobileNetV2 ONNX", cell("texture", "int8", "rel_latency"), "<= 0.35", None),
        ("FP32 latency / FP32 No-PTA MobileNetV2 ONNX", cell("texture", "fp32", "rel_latency"), "", None),
        ("INT8 latency (ms, batch 1, 1 thread)", cell("texture", "int8", "latency_ms"), "< 20", SEED002["latency_ms"]),
        ("ablation: ACER without Fourier loss, FP32 (%)", cell("texture_no_fourier", "fp32", "acer"), "", None),
        ("ablation: ACER with - without, FP32 (points, paired)",
         paired(("texture", "fp32", sd), ("texture_no_fourier", "fp32", sd)), "< 0 = Fourier helps", None),
        ("ablation: ACER with - without, INT8 (points, paired)",
         paired(("texture", "int8", sd), ("texture_no_fourier", "int8", sd)), "< 0 = Fourier helps", None),
    ]
    df = pd.DataFrame([(q, v[0], v[1], v[2], t, p) for q, v, t, p in rows],
                      columns=["quantity", "ours", "ci_low", "ci_high", "target", "seed_002"])
    df["seed"] = sd
    df["dataset"] = study.dataset
    study.tables["summary"] = df
    return df


def ship(study: Study, real_photos: str = "") -> str:
    """Put this run's INT8 model and its model card into the package (`paperkit/assets/`), but only for a
    run into this checkout's own `results/`: a smoke run or a scratch run dir must never replace the model
    that `pip install` ships. `real_photos` (a folder with live/ and spoof/) adds the real-photo check."""
    from paperkit import model_card, predict

    repo_results = (Path(__file__).resolve().parents[2] / "results").resolve()
    model = onnx_path(study, "texture", "int8", study.seeds[0])
    if study.run_dir.resolve() != repo_results:
        return (f"not shipped: run_dir {study.run_dir} is not this checkout's results/ folder; the package keeps "
                f"its model ({predict.ASSETS / predict.MODEL_NAME})")
    real = real_photos if real_photos and Path(real_photos).is_dir() else None
    target = model_card.ship_model(model, study.run_dir, real_dir=real)
    return f"shipped {model} -> {target} (model card beside it{'; real-photo check on ' + real if real else ''})"
