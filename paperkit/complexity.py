"""Model complexity (active parameters, MAdds in seed 000's convention) and CPU latency benchmarks.

MAdds convention (docs/design.md section 4), which reproduces seed 000's Table 4 to 0.01 M:
convolution multiply-adds + BatchNorm 2 per output element + ReLU6 1 per element + Linear with its
bias; residual adds, global pooling and the B-branch average are free. fvcore's default counters
differ (no ReLU6, pooling counted, Linear without bias: 102.18 M for MobileNetV2 at 128x128), so we
set its op handles to the convention instead of hand-writing a counter.

Latency: batch 1, 1x3x128x128, one thread, interleaved rounds (every candidate once per round, start
rotated) and medians, because on a shared 2-core machine differences under ~5 % are noise and a
sequential A-then-B benchmark measures the machine's load drift, not the models. Ratios get a 95%
interval from a bootstrap over rounds, paired by round (`paperkit.stats.ratio_interval` on the
per-round medians), so one lucky pair of numbers never decides a timing claim.
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Union

import numpy as np
import torch
from torch import nn

from paperkit import quiet
from paperkit.models.pta import CONFIGS, PTABlock, PTAMobileNetV2, mobilenet_v2_baseline, pta_mobilenet_v2
from paperkit.papers import SEED000_TABLES_3_4

__all__ = [
    "active_params", "madds", "madds_by_operator", "table4", "cli_table4",
    "measure_latency", "round_medians", "latency_ratio_interval", "bench_latency", "cli_bench_latency",
    "latency_wide", "LATENCY_EXTRAS", "TABLE4_CONFIGS",
]

#: Rows of Table 4 in the paper's order.
TABLE4_CONFIGS: tuple[str, ...] = ("NoPTA",) + CONFIGS

#: Extra latency candidates other studies register (e.g. the INT8 texture model). Each callable
#: returns {name: candidate} (see `measure_latency` for candidate kinds); they join the same
#: interleaved run as the PTA rows so their numbers are comparable.
LATENCY_EXTRAS: list[Callable[[], dict[str, Any]]] = []


# ---------------------------------------------------------------------------------------------- params

def _active_modules(module: nn.Module) -> Iterable[nn.Module]:
    """Yield the modules that run in the current configuration (PTA blocks: chosen branches only)."""
    yield module
    children: Iterable[nn.Module]
    if isinstance(module, PTABlock):
        children = module.active_branches()
    else:
        children = module.children()
    for child in children:
        yield from _active_modules(child)


def active_params(model: nn.Module) -> int:
    """Number of parameters of the modules that actually run (seed 000's Table 4 "# Params").

    A PTA model in LLL holds all weights but runs only the light branches, so only those count.
    Shared parameters are counted once.
    """
    seen: set[int] = set()
    total = 0
    for m in _active_modules(model):
        for p in m.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


# ---------------------------------------------------------------------------------------------- MAdds

def _numel(shape: Iterable[int] | None) -> int:
    return int(np.prod(list(shape))) if shape else 0


def _out_numel(outputs: list[Any]) -> int:
    from fvcore.nn.jit_handles import get_shape

    return _numel(get_shape(outputs[0]))


def _batchnorm_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """2 per output element (scale and shift), whatever the training flag (fvcore's differs in training)."""
    return 2 * _out_numel(outputs)


def _relu6_handle(inputs: list[Any], outputs: list[Any]) -> int:
    return _out_numel(outputs)


def _linear_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::linear(x, W, b): in*out multiply-adds per row, plus one add per output for the bias."""
    from fvcore.nn.jit_handles import get_shape

    x, w = get_shape(inputs[0]), get_shape(inputs[1])
    has_bias = len(inputs) > 2 and get_shape(inputs[2]) is not None
    rows = _numel(x[:-1])
    return rows * w[0] * w[1] + (rows * w[0] if has_bias else 0)


def _addmm_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::addmm(b, x, W^T): the same as Linear with bias (older traces lower Linear to addmm)."""
    from fvcore.nn.jit_handles import get_shape

    x, w = get_shape(inputs[1]), get_shape(inputs[2])
    return x[0] * x[1] * w[1] + x[0] * w[1]


#: Operators that are free in the paper's convention; ignored explicitly so that any *other*
#: uncounted operator is reported instead of silently dropped.
FREE_OPS: tuple[str, ...] = (
    "aten::add", "aten::add_", "aten::mul", "aten::mul_", "aten::div", "aten::div_",
    "aten::adaptive_avg_pool2d", "aten::mean", "aten::flatten", "aten::dropout", "aten::dropout_",
    "aten::feature_dropout", "aten::contiguous", "aten::size", "aten::view", "aten::reshape",
)


def _flop_analysis(model: nn.Module, input_size: int) -> Any:
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import conv_flop_jit

    p = next(model.parameters())
    x = torch.zeros(1, 3, input_size, input_size, device=p.device, dtype=p.dtype)
    fca = FlopCountAnalysis(model, x)
    # Start from no handles: a free op must be ignored, not left with fvcore's default counter.
    fca.clear_op_handles()
    fca.set_op_handle(**{
        "aten::_convolution": conv_flop_jit,
        "aten::batch_norm": _batchnorm_handle,
        "aten::hardtanh": _relu6_handle,
        "aten::hardtanh_": _relu6_handle,
        "aten::linear": _linear_handle,
        "aten::addmm": _addmm_handle,
        **{op: None for op in FREE_OPS},
    })
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    return fca


def _analyse(model: nn.Module, input_size: int) -> tuple[float, Counter]:
    was_training = model.training
    model.eval()  # dropout off, BatchNorm in inference form: what a deployed model runs
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit tracing deprecation noise
            fca = _flop_analysis(model, input_size)
            total = fca.total()
            skipped = Counter(fca.unsupported_ops())
            by_op = Counter(fca.by_operator())
    finally:
        model.train(was_training)
    if skipped:
        warnings.warn(f"madds: operators not counted (not in the paper's convention): {dict(skipped)}",
                      stacklevel=3)
    return total / 1e6, by_op


def madds(model: nn.Module, input_size: int = 128) -> float:
    """Multiply-adds in millions for one 3 x input_size x input_size image, seed 000's convention.

    The current configuration of a PTA model is traced (only its active branches run), so configure
    first. Uncounted operators outside the convention are reported in a warning with their counts.
    """
    return _analyse(model, input_size)[0]


def madds_by_operator(model: nn.Module, input_size: int = 128) -> dict[str, float]:
    """MAdds in millions per operator kind (conv, batch_norm, hardtanh, linear), for explaining totals."""
    return {k: v / 1e6 for k, v in _analyse(model, input_size)[1].items()}


def table4(input_size: int = 128) -> list[dict[str, Any]]:
    """Complexity rows of seed 000's Table 4: config, active params (M) and MAdds (M).

    Weights do not matter for either number, so fresh models are built (no training, no data).
    """
    rows: list[dict[str, Any]] = []
    base = mobilenet_v2_baseline(num_classes=2)
    rows.append({"config": "NoPTA", "params_m": active_params(base) / 1e6, "madds_m": madds(base, input_size)})
    pta = pta_mobilenet_v2(num_classes=2)
    for cfg in CONFIGS:
        pta.configure(cfg)
        rows.append({"config": cfg, "params_m": active_params(pta) / 1e6, "madds_m": madds(pta, input_size)})
    return rows


def cli_table4(as_json: bool = False, input_size: int = 128) -> int:
    """`paperkit profile table4 [--json]`: our params/MAdds beside the paper's (text) or a JSON list."""
    rows = table4(input_size)
    if as_json:
        print(json.dumps([{"config": r["config"], "params_m": round(r["params_m"], 4),
                           "madds_m": round(r["madds_m"], 3)} for r in rows]))
        return 0
    print(f"Seed 000 Table 4 complexity at 1x3x{input_size}x{input_size} (paper convention, docs/design.md section 4)")
    print(f"{'config':<7} {'params_m':>9} {'paper':>6} {'madds_m':>9} {'paper':>7}")
    for r in rows:
        p = SEED000_TABLES_3_4[r["config"]]
        print(f"{r['config']:<7} {r['params_m']:>9.3f} {p['params_m']:>6.2f} {r['madds_m']:>9.2f} {p['madds_m']:>7.2f}")
    print("note: BBB counts 2.719 M active params where the paper prints 2.73; the paper's HLH MAdds "
          "print 96.50 where the count gives 96.51.")
    return 0


# ---------------------------------------------------------------------------------------------- latency

Candidate = Union[Callable[[], Any], nn.Module, str, os.PathLike, Any]


def _torch_runner(model: nn.Module, input_size: int, channels_last: bool = True) -> Callable[[], Any]:
    """One batch-1 eager forward under inference_mode (channels_last: measured faster on this CPU)."""
    model = model.eval().cpu()   # a CPU latency, whatever device trained the model (paperkit.device)
    x = torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def run() -> Any:
        with torch.inference_mode():
            return model(x)
    return run


def _ort_runner(session: Any, input_size: int) -> Callable[[], Any]:
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((1, 3, input_size, input_size)).astype(np.float32)
    return lambda: session.run(None, {name: x})


def _as_runner(name: str, cand: Candidate, input_size: int, threads: int) -> tuple[str, Callable[[], Any]]:
    """Turn a candidate into (backend, zero-argument callable running one inference)."""
    if isinstance(cand, nn.Module):
        return "torch", _torch_runner(cand, input_size)
    if isinstance(cand, (str, os.PathLike)):
        path = Path(cand)
        if path.suffix != ".onnx":
            raise ValueError(f"latency candidate {name!r}: {path} is not an .onnx file; pass a model, "
                             f"an ONNX path, an onnxruntime session or a zero-argument callable")
        from paperkit.deploy import ort_session
        return "ort", _ort_runner(ort_session(path, threads=threads), input_size)
    if hasattr(cand, "run") and hasattr(cand, "get_inputs"):  # an onnxruntime.InferenceSession
        return "ort", _ort_runner(cand, input_size)
    if callable(cand):
        return "callable", cand
    raise TypeError(f"latency candidate {name!r} has unsupported type {type(cand).__name__}")


@quiet.timing("latency (complexity.measure_latency)")
def measure_latency(candidates: Mapping[str, Candidate], rounds: int = 7, iters: int = 30, warmup: int = 5,
                    input_size: int = 128, threads: int = 1) -> "Any":
    """Median batch-1 latency (ms) per candidate, measured in interleaved rounds.

    A candidate is an `nn.Module` (torch eager, channels_last, inference_mode), an `.onnx` path or an
    onnxruntime session (CPU, `threads` intra-op threads), or a zero-argument callable doing one
    inference. Each round runs every candidate `iters` times, the start rotating between rounds;
    torch runs with `torch.set_num_threads(threads)` (restored afterwards).
    Returns a DataFrame: candidate, backend, median_ms, p10_ms, p90_ms, rounds, iters, threads; its
    `attrs["round_ms"]` maps each candidate to its per-round medians (for intervals, `round_medians`).
    """
    import pandas as pd

    if not candidates:
        raise ValueError("measure_latency: no candidates")
    if rounds < 1 or iters < 1:
        raise ValueError(f"rounds and iters must be >= 1, got rounds={rounds} iters={iters}")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        runners = {n: _as_runner(n, c, input_size, threads) for n, c in candidates.items()}
        names = list(runners)
        for n in names:
            for _ in range(max(0, warmup)):
                runners[n][1]()
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                fn = runners[n][1]
                for _ in range(iters):
                    t0 = time.perf_counter()
                    fn()
                    times[n].append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(old_threads)
    rows = []
    for n in names:
        t = np.asarray(times[n])
        rows.append({"candidate": n, "backend": runners[n][0], "median_ms": float(np.median(t)),
                     "p10_ms": float(np.percentile(t, 10)), "p90_ms": float(np.percentile(t, 90)),
                     "rounds": rounds, "iters": iters, "threads": threads})
    df = pd.DataFrame(rows)
    df.attrs["round_ms"] = {n: [float(np.median(times[n][r * iters:(r + 1) * iters])) for r in range(rounds)]
                            for n in names}
    return df


def round_medians(df: "Any", candidate: str) -> list[float] | None:
    """Per-round median latencies (ms) of `candidate` from a `measure_latency` result, or None."""
    return (getattr(df, "attrs", {}).get("round_ms") or {}).get(candidate)


def latency_ratio_interval(df: "Any", num: str, den: str, n_boot: int = 2000, seed: int = 0) -> "Any":
    """latency(num) / latency(den) with a 95% bootstrap interval over rounds paired by round, or None
    when the per-round times are not available (e.g. a faked measurement in a test)."""
    from paperkit import stats

    a, b = round_medians(df, num), round_medians(df, den)
    if a is None or b is None:
        return None
    return stats.ratio_interval(a, b, paired=True, n_boot=n_boot, seed=seed, stat="median")


def _profile(profile: Any) -> Any:
    from paperkit.profiles import Profile, get_profile

    return profile if isinstance(profile, Profile) else get_profile(profile)


def bench_latency(profile: Any = "default", baseline: nn.Module | None = None,
                  pta: PTAMobileNetV2 | None = None, input_size: int = 128, threads: int = 1,
                  onnx_dir: str | os.PathLike | None = None, extras: bool = True,
                  exporter: str = "dynamo", bn_states: Mapping[str, Mapping[str, torch.Tensor]] | None = None
                  ) -> "Any":
    """Latency of No-PTA and every PTA configuration, torch eager and ONNX Runtime FP32, one run.

    Trained models can be passed (the study does); otherwise fresh ones are built, since latency does
    not depend on weight values. Each PTA configuration is exported to its own ONNX graph (that is
    how a device would ship it) with `paperkit.deploy.export_onnx` (dynamo, what we ship), or with
    `exporter="torchscript"` (torch's legacy exporter, ~10x faster to export, same operator graph
    after ORT's optimisations; the smoke profile uses it to check wiring quickly).
    `LATENCY_EXTRAS` candidates join the same interleaved run. `bn_states` (config -> BatchNorm
    statistics, `paperkit.batchnorm.config_bn_states`) are loaded into each configuration's copy before
    it is exported, so every ONNX graph carries the statistics of its own configuration (latency does
    not depend on them; the graph's outputs do).
    Rounds and iterations come from the profile (`latency_rounds`, `latency_iters`).
    Returns a long DataFrame: candidate, config, backend, median_ms, p10_ms, p90_ms, rel_latency
    (medians, vs No-PTA of the same backend; extras vs No-PTA ORT), rel_latency_p10 (the same with
    10th percentiles: when other processes compete for the cores, the median includes waiting for
    a core and ratios shrink towards 1, while the fast tail still shows the models' own cost),
    rel_latency_ci_low / rel_latency_ci_high (95%, bootstrap over rounds paired by round, on per-round
    medians; rel_latency_rounds is that estimator's point value), rounds, iters, threads.

    Long because a third of it is this docstring, and the rest is one interleaved measurement in which every
    candidate is built, exported and timed in the same rounds.
    """
    if exporter not in ("dynamo", "torchscript"):
        raise ValueError(f"exporter must be 'dynamo' or 'torchscript', not {exporter!r}")
    prof = _profile(profile)
    baseline = mobilenet_v2_baseline(num_classes=2) if baseline is None else baseline
    pta = pta_mobilenet_v2(num_classes=2) if pta is None else pta
    saved_config = pta.config
    models: dict[str, nn.Module] = {"NoPTA": copy.deepcopy(baseline).cpu().eval()}
    for cfg in CONFIGS:
        models[cfg] = copy.deepcopy(pta).cpu().eval().configure(cfg)
        if bn_states is not None and cfg in bn_states:
            from paperkit.batchnorm import load_bn_buffers
            load_bn_buffers(models[cfg], bn_states[cfg])
    pta.configure(saved_config)

    with tempfile.TemporaryDirectory(prefix="paperkit-latency-") as td:
        out_dir = Path(onnx_dir) if onnx_dir is not None else Path(td)
        cands: dict[str, Candidate] = {}
        meta: dict[str, str] = {}
        for cfg, m in models.items():
            cands[f"{cfg}/torch"] = m
            meta[f"{cfg}/torch"] = cfg
        for cfg, m in models.items():
            path = out_dir / f"pta_{cfg}.onnx" if cfg != "NoPTA" else out_dir / "nopta.onnx"
            _export_for_latency(m, path, input_size, exporter)
            cands[f"{cfg}/ort"] = path
            meta[f"{cfg}/ort"] = cfg
        if extras:
            for hook in LATENCY_EXTRAS:
                for name, cand in hook().items():
                    if name in cands:
                        raise KeyError(f"LATENCY_EXTRAS candidate {name!r} clashes with a built-in row")
                    cands[name] = cand
                    meta[name] = name
        df = measure_latency(cands, rounds=prof.latency_rounds, iters=prof.latency_iters,
                             warmup=max(3, prof.latency_iters // 5), input_size=input_size, threads=threads)
    df.insert(1, "config", [meta[c] for c in df["candidate"]])
    for col, stat in (("rel_latency", "median_ms"), ("rel_latency_p10", "p10_ms")):
        ref = {b: df.loc[df["candidate"] == f"NoPTA/{b}", stat].iloc[0] for b in ("torch", "ort")}
        df[col] = [getattr(row, stat) / ref.get(row.backend, ref["ort"]) for row in df.itertuples()]
    centre, lows, highs = [], [], []
    for row in df.itertuples():
        den = f"NoPTA/{row.backend}" if row.backend in ("torch", "ort") else "NoPTA/ort"
        iv = latency_ratio_interval(df, str(row.candidate), den)
        centre.append(iv.value if iv is not None else float("nan"))
        lows.append(iv.low if iv is not None else float("nan"))
        highs.append(iv.high if iv is not None else float("nan"))
    # the interval is about the ratio of per-round medians (its own point estimate, kept beside it);
    # rel_latency pools every iteration, so with few rounds it can sit just outside the interval
    df["rel_latency_rounds"], df["rel_latency_ci_low"], df["rel_latency_ci_high"] = centre, lows, highs
    return df


def _export_for_latency(model: nn.Module, path: Path, input_size: int, exporter: str) -> Path:
    """Export a batch-1 graph quietly (the exporters print progress lines that would flood notebooks)."""
    import contextlib
    import io

    from paperkit import deploy

    quiet = contextlib.redirect_stdout(io.StringIO())
    if exporter == "torchscript":
        try:
            x = torch.zeros(1, 3, input_size, input_size)
            with warnings.catch_warnings(), quiet, torch.no_grad():
                warnings.simplefilter("ignore")  # its deprecation notice
                torch.onnx.export(model.eval(), (x,), str(path), dynamo=False, external_data=False,
                                  input_names=[deploy.INPUT_NAME], output_names=[deploy.OUTPUT_NAME])
            return path
        except Exception as e:  # the legacy exporter may be gone in a future torch: fall back, say so
            warnings.warn(f"torchscript ONNX export failed ({type(e).__name__}: {e}); using dynamo",
                          stacklevel=2)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return deploy.export_onnx(model, path, input_size=input_size, dynamic_batch=False)


def latency_wide(df: "Any") -> "Any":
    """Pivot `bench_latency`'s PTA rows to one row per config: latency_ms_torch, latency_ms_ort,
    rel_latency (ORT, the deployable runtime) with rel_latency_ci_low/high (and rel_latency_rounds, the
    ratio of per-round medians the interval is centred on), rel_latency_p10 (ORT, 10th percentiles),
    rel_latency_torch and timing_rounds."""
    import pandas as pd

    rows = []
    for cfg in TABLE4_CONFIGS:
        sub = df[df["config"] == cfg].set_index("backend")
        if sub.empty:
            continue
        ci = {f"rel_latency_{k}": float(sub.loc["ort", f"rel_latency_{k}"])
              if f"rel_latency_{k}" in sub.columns else float("nan") for k in ("rounds", "ci_low", "ci_high")}
        rows.append({"config": cfg,
                     "latency_ms_torch": float(sub.loc["torch", "median_ms"]),
                     "latency_ms_ort": float(sub.loc["ort", "median_ms"]),
                     "rel_latency": float(sub.loc["ort", "rel_latency"]), **ci,
                     "rel_latency_p10": float(sub.loc["ort", "rel_latency_p10"]),
                     "rel_latency_torch": float(sub.loc["torch", "rel_latency"]),
                     "timing_rounds": int(sub.loc["ort", "rounds"]) if "rounds" in sub.columns else 0})
    return pd.DataFrame(rows)


def cli_bench_latency(profile: str = "default", as_json: bool = False) -> int:
    """`paperkit bench latency`: prints the latency table (JSON records with --json)."""
    df = bench_latency(profile)
    if as_json:
        print(df.to_json(orient="records"))
        return 0
    prof = _profile(profile)
    print(f"batch 1, 1x3x128x128, 1 thread, {prof.latency_rounds} interleaved rounds x "
          f"{prof.latency_iters} iterations, median ms; rel_latency vs No-PTA of the same backend")
    print(df[["candidate", "backend", "median_ms", "p10_ms", "p90_ms", "rel_latency", "rel_latency_p10"]]
          .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0
