"""`paperkit bench latency`: every model side by side in one interleaved run, ratios vs No-PTA.

Built-in rows are No-PTA and each PTA configuration (torch eager and ONNX Runtime FP32); every
deployable ONNX model found in `<run_dir>/models/` (texture FP32/INT8, teacher, students) joins the
same run, so the printed ratios never mix measurements taken at different moments.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import complexity, deploy


def deployed_models(run_dir: str | Path, input_size: int = 128) -> dict[str, Path]:
    """ONNX files of a run folder whose input matches the bench size, keyed `<stem>/ort`."""
    out: dict[str, Path] = {}
    models = Path(run_dir) / "models"
    for p in sorted(models.glob("*.onnx")) if models.is_dir() else []:
        try:
            size = deploy.input_size_of(deploy.ort_session(p))
        except Exception as e:  # a broken file is reported, never silently skipped
            print(f"bench: skipping {p}: cannot be opened by ONNX Runtime ({e})")
            continue
        if size == input_size:
            out[f"{p.stem}/ort"] = p
        else:
            print(f"bench: skipping {p}: input {size}x{size}, the bench runs {input_size}x{input_size}")
    return out


def latency_table(profile: str = "default", run_dir: str | Path = "results", input_size: int = 128) -> Any:
    hook = lambda: deployed_models(run_dir, input_size)  # noqa: E731
    complexity.LATENCY_EXTRAS.append(hook)
    try:
        return complexity.bench_latency(profile, input_size=input_size)
    finally:
        complexity.LATENCY_EXTRAS.remove(hook)


def cli_latency(profile: str = "default", run_dir: str | Path = "results", as_json: bool = False) -> int:
    df = latency_table(profile, run_dir)
    cols = ["candidate", "backend", "median_ms", "p10_ms", "p90_ms", "rel_latency"]
    if as_json:
        print(json.dumps(df[cols].to_dict(orient="records"), indent=2))
    else:
        print(f"batch 1, {df['threads'].iloc[0]} thread(s), median of {df['rounds'].iloc[0]} interleaved rounds x "
              f"{df['iters'].iloc[0]} runs; rel_latency vs No-PTA of the same backend (ONNX files vs No-PTA ORT)")
        print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def cli_detect(folder: str | None, detectors: list[str], root: str | None = None, check: bool = False,
               model: str | None = None, limit: int | None = None, as_json: bool = False) -> int:
    """`paperkit bench detect DIR` (faces found, median/p95 ms per detector) and/or `--check-boxes`
    (does the box conversion reproduce the stored-box test ACER of the deployable model?).

    Long because it is one verb with two optional reports (the detector table and the box check) that share
    the argument checks and the JSON output; each part is straight-line printing.
    """
    import sys

    from . import detect, predict

    if folder is None and not check:
        print("paperkit bench detect: give a FOLDER of photos and/or --check-boxes", file=sys.stderr)
        return 2
    bad = [d for d in detectors if d not in detect.DETECTORS]
    if bad:
        print(f"paperkit bench detect: unknown detector(s) {', '.join(bad)}; choose from "
              f"{', '.join(detect.DETECTORS)}", file=sys.stderr)
        return 2
    for d in detectors:
        why = detect.available(d)
        if why:
            print(f"paperkit bench detect: {why}", file=sys.stderr)
            return 2
    out: dict[str, Any] = {}
    if folder is not None:
        try:
            rows = detect.bench_folder(folder, detectors)
        except FileNotFoundError as e:
            print(f"paperkit bench detect: {e}", file=sys.stderr)
            return 2
        out["folder"] = rows
        if not as_json:
            import pandas as pd

            print(f"{folder}: {rows[0]['images']} image(s), {rows[0]['unreadable']} unreadable; detectors "
                  f"interleaved per image, decoding not timed (haar = the previous finder; fast = dlib HOG; "
                  f"cnn = dlib MMOD; auto = HOG, then CNN when HOG is not sure)")
            print(pd.DataFrame(rows).drop(columns=["unreadable", "no_face"]).to_string(
                index=False, float_format=lambda v: f"{v:.1f}"))
            for r in rows:
                if r["no_face"]:
                    print(f"  {r['detector']}: no face in {', '.join(r['no_face'])}")
    if check:
        from . import data, profiles

        model_path = Path(model) if model else predict.default_model()
        if model_path is None or not model_path.is_file():
            print(f"paperkit bench detect: {predict.missing_model_message()}", file=sys.stderr)
            return 2
        ds = data.resolve_root(root or "", profiles.get_profile("default"), 0)
        res = detect.check_boxes(ds, model_path, limit=limit)
        res["root"], res["model"] = str(ds), str(model_path)
        out["check_boxes"] = res
        if not as_json:
            print(f"box convention check on {ds} ({res['split']}, {res['images']} images, model {model_path}):")
            print(f"  detector found a face in {res['images'] - res['no_face']} ({res['found_by']}); "
                  f"{res['no_face']} without one are scored on a centre crop in the detector column")
            for k in ("all", "found"):
                r = res[k]
                print(f"  {k:5s} ({r['images']} images): ACER stored boxes {r['acer_stored_boxes']:.2f}%  "
                      f"detector boxes {r['acer_detector_boxes']:.2f}%  difference {r['acer_difference']:+.2f} "
                      f"points")
    if as_json:
        print(json.dumps(out, indent=2, default=str))
    return 0


def bn_recalibration(profile: str = "default", configs: tuple[str, ...] = ("HHH", "LLL", "BBB"),
                     rounds: int = 3, n_images: int | None = None) -> list[dict[str, Any]]:
    """What per-configuration BatchNorm recalibration costs, next to what it is paid for: one validation
    pass of the same configuration. Both run on the same model and machine, interleaved per round, so the
    printed ratio does not depend on the machine's load at one moment.

    Weights do not change the cost, so a fresh PTA MobileNetV2 at the profile's input size is used with
    `profile.bn_calib_images` random crops (the calibration set's size) and as many validation images."""
    import time

    import numpy as np
    import torch

    from . import batchnorm, stats
    from .models.pta import pta_mobilenet_v2
    from .profiles import get_profile

    prof = get_profile(profile)
    n = int(n_images or prof.bn_calib_images)
    size, bs = prof.input_size, prof.batch_size
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if prof.channels_last else torch.contiguous_format
    batches = [torch.randn(min(bs, n - i), 3, size, size, generator=g).contiguous(memory_format=fmt)
               for i in range(0, n, bs) if n - i > 1]
    model = pta_mobilenet_v2(num_classes=2).eval().to(memory_format=fmt)
    rows = []
    for cfg in configs:
        model.configure(cfg)
        recal, evals = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            batchnorm.recalibrate_bn(model, batches, max_images=n, channels_last=prof.channels_last)
            recal.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            with torch.inference_mode():
                for x in batches:
                    model(x)
            evals.append(time.perf_counter() - t0)
        r = stats.ratio_interval(recal, evals)
        rows.append({"config": cfg, "images": n, "input_size": size, "recalibrate_s": float(np.median(recal)),
                     "eval_pass_s": float(np.median(evals)), "ratio": r.value, "ratio_ci_low": r.low,
                     "ratio_ci_high": r.high, "rounds": rounds, "threads": torch.get_num_threads()})
    return rows


def cli_bn(profile: str = "default", rounds: int = 3, as_json: bool = False) -> int:
    """`paperkit bench bn`: seconds to recalibrate one PTA configuration vs one evaluation pass of it."""
    rows = bn_recalibration(profile, rounds=rounds)
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"BatchNorm recalibration vs an evaluation pass over the same {rows[0]['images']} crops "
          f"({rows[0]['input_size']} px, {rows[0]['threads']} threads, median of {rounds} interleaved rounds)")
    for r in rows:
        print(f"  {r['config']}: recalibrate {r['recalibrate_s']:.2f} s, eval pass {r['eval_pass_s']:.2f} s, "
              f"ratio {r['ratio']:.2f} [{r['ratio_ci_low']:.2f}, {r['ratio_ci_high']:.2f}]")
    return 0
