"""Where the work runs: the compute device, mixed precision and DataLoader workers, chosen from the machine.

The same notebook must run on this 2-core CPU box and on a GPU box with many cores without edits, so
nothing below is a profile constant: ``PAPERKIT_DEVICE`` (``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``)
overrides the automatic choice, ``PAPERKIT_AMP=0`` turns bf16 autocast off on CUDA, and a profile's
``num_workers=None`` means "from the core count".

Convention: models live on the CPU between calls. The functions that compute (``train.fit``,
``train.predict_scores``, ``batchnorm.recalibrate``) move a model to the compute device for their work
and back, so export, latency benchmarks and widgets always find a CPU model. On a CPU run every move is
a no-op and every number is the same as before this module existed.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
import torch.nn as nn

DEVICE_ENV = "PAPERKIT_DEVICE"
AMP_ENV = "PAPERKIT_AMP"
THREADS_ENV = "PAPERKIT_THREADS"   # torch threads of this process (reproduce --jobs N sets cores // N)
MAX_WORKERS = 8


def apply_threads() -> int | None:
    """Set torch's intra-op threads from ``$PAPERKIT_THREADS`` (unset: torch's default); runs at import."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
        if n < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"{THREADS_ENV}={raw!r} is not a thread count; set an int >= 1 or unset it") from None
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


apply_threads()


def pick(prefer: str | None = None) -> torch.device:
    """``prefer`` (or ``$PAPERKIT_DEVICE``, else ``auto``): CUDA when present, the CPU otherwise.

    Under torchrun each process takes ``cuda:$LOCAL_RANK``."""
    choice = (prefer or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cpu":
        return torch.device("cpu")
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {choice!r} was asked for ({DEVICE_ENV} or an argument) but this torch "
                               f"({torch.__version__}) sees no CUDA device; use 'auto' or 'cpu'")
        if choice == "cuda":
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device(choice)
    raise ValueError(f"unknown device {choice!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA devices that support it (no loss scaler needed), none on the CPU: our CPU numbers are fp32."""
    if device.type != "cuda" or os.environ.get(AMP_ENV, "1") == "0":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else None


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    dtype = amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def backend(device: torch.device | None = None) -> str:
    """The torch.distributed backend for this device: NCCL between GPUs, gloo between CPU processes."""
    device = device or pick()
    return "nccl" if device.type == "cuda" else "gloo"


def cores() -> int:
    """Cores this process may use (the affinity mask, which containers and taskset narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_workers(n_cores: int | None = None) -> int:
    """DataLoader workers for a machine: one core stays with the training process, at most MAX_WORKERS.

    2 cores -> 1 worker (what the default profile always used), 16 cores -> 8."""
    n = cores() if n_cores is None else int(n_cores)
    return max(0, min(MAX_WORKERS, n - 1)) if n > 1 else 0


def workers(num_workers: int | None) -> int:
    """A profile's ``num_workers``: an int is taken as it is, None means :func:`default_workers`."""
    if num_workers is None:
        return default_workers()
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be None (from the core count) or an int >= 0, got {num_workers!r}")
    return num_workers


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    if p is None:
        b = next(model.buffers(), None)
        return b.device if b is not None else torch.device("cpu")
    return p.device


@contextlib.contextmanager
def on(model: nn.Module, device: torch.device | None = None) -> Iterator[torch.device]:
    """Run a block with ``model`` on the compute device, then put it back where it was."""
    device = device or pick()
    home = model_device(model)
    if device != home:
        model.to(device)
    try:
        yield device
    finally:
        if device != home:
            model.to(home)


def describe(device: torch.device | None = None) -> str:
    device = device or pick()
    amp = amp_dtype(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return (f"{device} ({name}), {'bf16 autocast' if amp else 'fp32'}, {cores()} core(s), "
            f"{default_workers()} DataLoader worker(s) by default, threads {torch.get_num_threads()}")
