"""Deployment in one place: ONNX export, INT8 static (QDQ) quantization, parity, ONNX Runtime scoring and
the CPU measurements (interleaved latency rounds, CPU time, energy, throughput) of seed 002 and seed 003.

Both the Fourier-texture study (notebook 02) and the distillation/SWAP study (notebook 03) deploy through
these functions, so "how a model ships and how fast it runs" has one definition.

Why these choices:
- One self-contained file (`external_data=False`) with a dynamic batch axis, so the deployable model is
  a single artefact that scores one face or a batch.
- Static QDQ quantization with per-channel weights, calibrated on real training crops: random-noise
  calibration gives activation ranges that real faces never produce, which costs accuracy.
- The graph is pre-processed (shape inference + ORT graph optimisation folds BatchNorm into Conv)
  before quantization, so BN is never quantized on its own and Conv+ReLU fuse into one INT8 kernel.
- Activations are unsigned 8 bit by default (QUInt8 x QInt8 is ORT's fast path on x86; measured on
  this machine in `activation_speed`), weights signed 8 bit, symmetric.
- Every timing runs under `quiet.timing` (the machine is held while notebooks run side by side) and every
  scoring batch passes `quiet.checkpoint`.
"""
from __future__ import annotations

import contextlib
import copy
import glob
import io
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np
import torch
from paperkit import quiet
from torch import nn

if TYPE_CHECKING:
    from paperkit.stats import Scored

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MAX_PARITY_GAP = 1e-3              # largest torch vs ONNX FP32 logit gap an export may show
PER_CORE_WATTS = 5.0               # assumed power of one busy core when no RAPL counter is readable
RAPL_GLOB = "/sys/class/powercap/intel-rapl*"


# ---------------------------------------------------------------------------------------------- export

def export_onnx(model: nn.Module, path: str | os.PathLike, input_size: int = 128,
                dynamic_batch: bool = True, opset: int | None = None) -> Path:
    """Export `model.forward` (eval mode, CPU) to one ONNX file; returns the path.

    Auxiliary heads that `forward` does not call (the texture model's Fourier head) are not traced,
    so they cannot appear in the graph; `assert_head_absent` checks that.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model = model.eval().cpu()
    x = torch.zeros(2 if dynamic_batch else 1, 3, input_size, input_size)
    kw: dict[str, Any] = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamo=True,
                              verbose=False, external_data=False)
    if opset is not None:
        kw["opset_version"] = opset
    if dynamic_batch:
        kw["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with torch.no_grad():
            prog = torch.onnx.export(model, (x,), None, **kw)
        prog.save(str(tmp), external_data=False)
        if hasattr(model, "fourier_head"):
            assert_head_absent(tmp, model.fourier_head)
        strip_metadata(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        model.train(was_training)
    return path


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Exporter progress lines, quantizer warnings and root-logger chatter kept out of the notebook."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def export_quietly(model: nn.Module, path: str | os.PathLike, input_size: int = 128,
                   dynamic_batch: bool = True) -> Path:
    """`export_onnx` with the exporter's warnings silenced (they would flood a notebook)."""
    with silenced():
        return export_onnx(model, path, input_size=input_size, dynamic_batch=dynamic_batch)

def strip_metadata(path: str | os.PathLike) -> None:
    """Drop per-node exporter metadata (stack traces with local paths, FX dumps).

    It is about 8% of the FP32 file and 20% of the INT8 one, leaks the builder's file paths, and makes
    the committed model differ between checkouts; it carries nothing the runtime needs.
    """
    import onnx

    m = onnx.load(str(path))
    for n in m.graph.node:
        del n.metadata_props[:]
    onnx.save(m, str(path))


def graph_strings(path: str | os.PathLike) -> list[str]:
    """Every name in the graph (nodes, initialisers, value infos, node metadata) for provenance checks."""
    import onnx

    m = onnx.load(str(path))
    g = m.graph
    out = [n.name for n in g.node] + [i.name for i in g.initializer] + [v.name for v in g.value_info]
    for n in g.node:
        out.extend(list(n.input) + list(n.output))
        out.extend(p.value for p in n.metadata_props)
    return out


def assert_head_absent(path: str | os.PathLike, head: nn.Module, prefix: str = "fourier_head") -> None:
    """Fail if any node or weight of the auxiliary head reached the exported graph.

    Two independent checks: no name/metadata mentions the head's module prefix, and no initialiser
    has the exact shape+values of one of the head's conv weights.
    """
    import onnx
    from onnx import numpy_helper

    hits = [s for s in graph_strings(path) if prefix in s]
    if hits:
        raise AssertionError(f"{path}: exported graph contains {len(hits)} name(s) from {prefix!r}, "
                             f"e.g. {hits[:3]}; forward() must not call the head")
    head_w = [p.detach().cpu().numpy() for n, p in head.named_parameters() if p.dim() == 4]
    for init in onnx.load(str(path)).graph.initializer:
        arr = numpy_helper.to_array(init)
        for w in head_w:
            if arr.shape == w.shape and np.allclose(arr, w):
                raise AssertionError(f"{path}: initialiser {init.name!r} equals a {prefix} weight")


# ---------------------------------------------------------------------------------------------- runtime

def ort_session(path: str | os.PathLike, threads: int = 1) -> Any:
    """A CPU ONNX Runtime session with a fixed thread count (benchmarks use 1) and full graph opts."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise RuntimeError(f"cannot load ONNX model {path}: {e}") from e


def input_size_of(session: Any) -> int:
    """Square input side from the model's input shape [N,3,H,W] (H must be a fixed integer)."""
    shape = session.get_inputs()[0].shape
    h = shape[2] if len(shape) == 4 else None
    if not isinstance(h, int):
        raise ValueError(f"model input shape {shape} has no fixed height; export with a fixed input size")
    return h


def run_logits(session: Any, x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def softmax_spoof(logits: np.ndarray) -> np.ndarray:
    """P(spoof) = softmax(logits)[:, 1], numerically stable."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[:, 1] / e.sum(axis=1)


def parity(model: nn.Module, onnx_path: str | os.PathLike, batch: torch.Tensor | np.ndarray) -> float:
    """Max absolute logit difference between torch (eval) and ONNX Runtime FP32 on the same batch."""
    x = torch.as_tensor(np.asarray(batch), dtype=torch.float32) if not isinstance(batch, torch.Tensor) \
        else batch.float()
    was_training = model.training
    model.eval()
    with torch.no_grad():
        ref = model.cpu()(x).numpy()
    model.train(was_training)
    got = run_logits(ort_session(onnx_path), x)
    return float(np.abs(ref - got).max())


@quiet.timing("ONNX latency rounds")
def interleaved_latency(models: dict[str, str | os.PathLike | Any], rounds: int, iters: int,
                        warmup: int = 3, input_size: int = 128, threads: int = 1) -> Any:
    """Per-round median batch-1 latency (ms) of ONNX models, measured in interleaved rounds.

    Why per round: one pair of medians says nothing about run-to-run drift (a timing verdict flipped
    between two runs of one commit). Each round runs every model `iters` times, the starting model
    rotating, so slow phases of the machine hit all models alike; the rounds are the units a bootstrap
    of the ratio resamples. `models` maps a name to an .onnx path or an ORT session (one session per
    model for the whole run). Returns a long DataFrame: candidate, round, median_ms, iters, threads.
    """
    import pandas as pd

    if not models:
        raise ValueError("interleaved_latency: no models to time")
    if rounds < 1 or iters < 1:
        raise ValueError(f"rounds and iters must be >= 1, got rounds={rounds} iters={iters}")
    x = np.random.default_rng(0).standard_normal((1, 3, input_size, input_size)).astype(np.float32)
    runs = {}
    for name, m in models.items():
        sess = m if hasattr(m, "run") and hasattr(m, "get_inputs") else ort_session(m, threads=threads)
        feed = {sess.get_inputs()[0].name: x}
        runs[name] = (sess, feed)
        for _ in range(max(0, warmup)):
            sess.run(None, feed)
    names = list(runs)
    rows = []
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            sess, feed = runs[name]
            t = np.empty(iters)
            for i in range(iters):
                t0 = time.perf_counter()
                sess.run(None, feed)
                t[i] = (time.perf_counter() - t0) * 1e3
            rows.append({"candidate": name, "round": r, "median_ms": float(np.median(t)), "iters": iters,
                         "threads": threads})
    return pd.DataFrame(rows)


def round_medians(rounds: Any) -> dict[str, list[float]]:
    """`interleaved_latency`'s long table as {candidate: per-round medians in round order} (paired by index)."""
    rounds = rounds.sort_values("round", kind="stable")
    return {name: [float(v) for v in rounds.loc[rounds["candidate"] == name, "median_ms"]]
            for name in dict.fromkeys(rounds["candidate"])}


# ---------------------------------------------------------------------------------------------- CPU and energy

def energy_method() -> tuple[str, Callable[[], float] | None]:
    """('rapl:<zone>', reader of microjoules) where a RAPL counter is readable, else the CPU-time model."""
    for zone in sorted(glob.glob(RAPL_GLOB)):
        f = Path(zone) / "energy_uj"
        try:
            float(f.read_text())
        except (OSError, ValueError):
            continue
        name = (Path(zone) / "name").read_text().strip() if (Path(zone) / "name").is_file() else Path(zone).name
        return f"rapl:{name} (package counter; includes any other load)", lambda f=f: float(f.read_text())
    return f"cpu_time x {PER_CORE_WATTS:g} W/core (assumed; no readable RAPL counter)", None


@quiet.timing("ONNX CPU time and energy")
def cpu_and_energy(session: Any, input_size: int, iters: int, rapl: Callable[[], float] | None
                   ) -> tuple[float, float]:
    """CPU ms per batch-1 inference (process CPU time, 1 ORT thread) and energy per inference in mJ."""
    x = np.random.default_rng(0).standard_normal((1, 3, input_size, input_size)).astype(np.float32)
    name = session.get_inputs()[0].name
    for _ in range(3):
        session.run(None, {name: x})
    e0 = rapl() if rapl else 0.0
    c0 = time.process_time()
    for _ in range(iters):
        session.run(None, {name: x})
    cpu_ms = (time.process_time() - c0) * 1e3 / iters
    if rapl:
        return cpu_ms, (rapl() - e0) / 1e3 / iters
    return cpu_ms, cpu_ms * PER_CORE_WATTS   # ms x W = mJ


@quiet.timing("ONNX throughput")
def throughput(session: Any, input_size: int, batch: int, reps: int) -> float:
    """Images per second of one `batch`-image run (median of `reps` runs after one warm-up)."""
    x = np.random.default_rng(1).standard_normal((batch, 3, input_size, input_size)).astype(np.float32)
    name = session.get_inputs()[0].name
    session.run(None, {name: x})
    times = []
    for _ in range(max(1, reps)):
        t0 = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return batch / float(np.median(times))


# ---------------------------------------------------------------------------------------------- scoring

def _images(batch: Any) -> torch.Tensor | np.ndarray:
    """The image tensor of a loader batch: (x, y, cues), (x, y), or x."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def onnx_scores(session: Any, loader: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """P(spoof) and labels for every sample of a loader yielding (x, y, ...), in loader order."""
    scores, labels = [], []
    for batch in loader:
        x, y = batch[0], batch[1]
        quiet.checkpoint()
        scores.append(softmax_spoof(run_logits(session, x)))
        labels.append(np.asarray(y.numpy() if isinstance(y, torch.Tensor) else y).reshape(-1))
    if not scores:
        return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.concatenate(scores).astype(np.float32), np.concatenate(labels).astype(np.int64)



def onnx_scored(model: str | os.PathLike | Any, loader: Any) -> "Scored":
    """`onnx_scores` of an .onnx path (1-thread session) or a session, as `stats.Scored` of the loader's dataset."""
    from paperkit.stats import Scored

    session = model if hasattr(model, "run") and hasattr(model, "get_inputs") else ort_session(model, threads=1)
    s, y = onnx_scores(session, loader)
    return Scored.from_dataset(s, y, loader.dataset)


def ort_function(module: nn.Module, input_size: int, threads: int | None = None
                 ) -> Callable[[torch.Tensor], torch.Tensor]:
    """`module.forward` as an ONNX Runtime CPU session (batch size free; `threads`: torch's count by default).

    Why: a frozen network evaluated many times (the teacher's trunk) runs several times faster in ORT at one
    thread than in torch eager; the ONNX file lives only as long as the export."""
    with tempfile.TemporaryDirectory() as td, silenced():
        path = export_onnx(module.eval(), Path(td) / "module.onnx", input_size)
        session = ort_session(path, threads=torch.get_num_threads() if threads is None else threads)
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: np.ascontiguousarray(x.float().numpy())})[0])
    return run

# ---------------------------------------------------------------------------------------------- INT8

def calibration_arrays(batches: Iterable[Any], max_images: int | None = None) -> list[np.ndarray]:
    """Collect float32 image batches (up to `max_images` images) from a loader yielding (x, ...) or x."""
    out: list[np.ndarray] = []
    seen = 0
    for batch in batches:
        if max_images is not None and seen >= max_images:
            break
        x = _images(batch)
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if max_images is not None:
            x = x[: max_images - seen]
        if len(x):
            out.append(np.ascontiguousarray(x, dtype=np.float32))
            seen += len(x)
    return out


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                  calibration_batches: Iterable[Any], *, max_images: int | None = None,
                  activation_type: str = "uint8", preprocess: bool = True,
                  calibrate_method: str = "minmax") -> Path:
    """Static INT8 QDQ quantization (per-channel symmetric int8 weights) calibrated on real crops.

    `calibration_batches`: a DataLoader (or any iterable) yielding (x, y, ...) or x batches of
    normalised crops. Raises if it yields no images (a model calibrated on nothing is meaningless).
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if not fp32_path.is_file():
        raise FileNotFoundError(f"FP32 model not found: {fp32_path}; export it first with export_onnx")
    act = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}.get(activation_type)
    if act is None:
        raise ValueError(f"activation_type must be 'uint8' or 'int8', not {activation_type!r}")
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibrate_method]
    input_name = onnx.load(str(fp32_path)).graph.input[0].name

    class Reader(CalibrationDataReader):  # ORT checks the base class
        """Feeds the collected real crops to ORT's calibrator, one batch per call."""

        def __init__(self, name: str, arrays: list[np.ndarray]) -> None:
            self.name, self.arrays, self.i = name, arrays, 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.i >= len(self.arrays):
                return None
            self.i += 1
            return {self.name: self.arrays[self.i - 1]}

    arrays = calibration_arrays(calibration_batches, max_images)
    if not arrays:
        raise ValueError("quantize_int8: the calibration loader yielded no images; pass a DataLoader of "
                         "real training crops (paperkit.data.make_loaders(...)['train'])")
    reader = Reader(input_name, arrays)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="paperkit-quant-") as td:
        src = fp32_path
        if preprocess:
            src = Path(td) / "pre.onnx"
            quant_pre_process(str(fp32_path), str(src), skip_symbolic_shape=True)
        tmp_out = Path(td) / "int8.onnx"
        cwd = os.getcwd()
        os.chdir(td)  # the calibrator writes its augmented model to the working directory
        try:
            quantize_static(str(src), str(tmp_out), reader, quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=act, weight_type=QuantType.QInt8,
                            calibrate_method=method,
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
        finally:
            os.chdir(cwd)
        from paperkit.results import atomic_write_bytes
        atomic_write_bytes(out_path, tmp_out.read_bytes())
    return out_path


def export_int8_pair(model: nn.Module, base: str | os.PathLike, calibration: Any, *, input_size: int,
                     max_images: int | None, name: str = "model") -> dict[str, Path]:
    """`<base>.onnx` (FP32, dynamic batch) and `<base>_int8.onnx` (calibrated on `calibration`), quietly; raises
    when FP32 ONNX disagrees with torch on two calibration crops by more than MAX_PARITY_GAP."""
    base = Path(base)
    fp32, int8 = base.with_name(base.name + ".onnx"), base.with_name(base.name + "_int8.onnx")
    with silenced():   # the exporter's progress lines and quantizer warnings would flood the notebook
        export_onnx(copy.deepcopy(model).cpu().eval(), fp32, input_size=input_size, dynamic_batch=True)
        quantize_int8(fp32, int8, calibration, max_images=max_images)
    x = next(iter(calibration))[0][:2]
    gap = parity(copy.deepcopy(model).cpu().eval(), fp32, x)
    if gap > MAX_PARITY_GAP:
        raise RuntimeError(f"ONNX export of {name} disagrees with torch (max logit gap {gap:.2e})")
    return {"fp32": fp32, "int8": int8}


def file_size_kb(path: str | os.PathLike) -> float:
    return Path(path).stat().st_size / 1024.0
