"""`paperkit bench latency`: every model side by side in one interleaved run, ratios vs No-PTA.

Built-in rows are No-PTA and each PTA configuration (torch eager and ONNX Runtime FP32); every
deployable ONNX model found in `<run_dir>/models/` (texture FP32/INT8, teacher, students) joins the
same run, so the printed ratios never mix measurements taken at different moments.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import complexity, export


def deployed_models(run_dir: str | Path, input_size: int = 128) -> dict[str, Path]:
    """ONNX files of a run folder whose input matches the bench size, keyed `<stem>/ort`."""
    out: dict[str, Path] = {}
    models = Path(run_dir) / "models"
    for p in sorted(models.glob("*.onnx")) if models.is_dir() else []:
        try:
            size = export.input_size_of(export.ort_session(p))
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
