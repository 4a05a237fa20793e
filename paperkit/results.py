"""The results contract: every notebook writes tables, figures and its manifest entry through here.

Layout under a run folder: `tables/<name>.csv`, `figures/<name>.png`, `models/*.onnx`,
`manifest.json`. Tables must say which dataset they were measured on (`dataset` column), so a
synthetic number can never pass for a CelebA-Spoof one.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

SYNTH_MARKER = "PAPERKIT_SYNTHETIC.json"
TRACKED_PACKAGES = (
    "torch", "torchvision", "numpy", "pandas", "fvcore", "onnx", "onnxruntime",
    "opencv-python-headless", "scikit-learn", "papermill", "seaborn",
)


def run_path(run_dir: str | os.PathLike, *parts: str) -> Path:
    """A path inside the run folder, with its parent created."""
    p = Path(run_dir).joinpath(*parts)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file and rename, so a killed process never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dataset_info(root: str | os.PathLike | None) -> dict[str, Any]:
    """Name and fingerprint of a dataset root: synthetic (with generator, seed, profile) or CelebA-Spoof."""
    if root is None:
        return {"name": "none", "synthetic": False, "fingerprint": ""}
    root = Path(root)
    marker = root / SYNTH_MARKER
    h = hashlib.sha256()
    for rel in ("metas/intra_test/train_label.json", "metas/intra_test/test_label.json"):
        f = root / rel
        if f.is_file():
            h.update(f.read_bytes())
    fp = h.hexdigest()[:16]
    if marker.is_file():
        meta = json.loads(marker.read_text())
        name = (f"synthetic (paperkit synth v{meta.get('version')}, profile {meta.get('profile')}, "
                f"seed {meta.get('seed')})")
        return {"name": name, "synthetic": True, "fingerprint": fp, **meta}
    return {"name": "CelebA-Spoof", "synthetic": False, "fingerprint": fp, "root": str(root)}


def dataset_label(root: str | os.PathLike | None) -> str:
    return dataset_info(root)["name"]


def write_table(run_dir: str | os.PathLike, name: str, df: pd.DataFrame) -> Path:
    """Write `tables/<name>.csv`; refuses a table with no `dataset` column (say what it was measured on)."""
    if "dataset" not in df.columns:
        raise ValueError(f"table {name!r} has no 'dataset' column; add dataset_label(data_root) to it")
    path = run_path(run_dir, "tables", f"{name}.csv")
    atomic_write_bytes(path, df.to_csv(index=False, float_format="%.6g").encode())
    return path


def read_table(run_dir: str | os.PathLike, name: str) -> pd.DataFrame | None:
    path = Path(run_dir) / "tables" / f"{name}.csv"
    return pd.read_csv(path) if path.is_file() else None


PREDICTION_COLUMNS = ("model", "config", "bn", "fmt", "seed", "split", "subject", "spoof_type", "video",
                      "label", "score")


def write_predictions(run_dir: str | os.PathLike, name: str, df: pd.DataFrame) -> Path:
    """Write per-image scores to `predictions/<name>.csv.gz` (atomically), so that notebook 04 can compute
    paired intervals between any two models scored on the same images.

    Gzip is written with mtime 0: the same scores give the same bytes on every rerun."""
    import gzip

    missing = [c for c in PREDICTION_COLUMNS + ("dataset",) if c not in df.columns]
    if missing:
        raise ValueError(f"predictions {name!r} lack column(s) {missing}; use paperkit.stats.Scored.frame("
                         "model=..., config=..., bn=..., fmt=..., seed=..., split=..., dataset=...)")
    path = run_path(run_dir, "predictions", f"{name}.csv.gz")
    raw = df.to_csv(index=False, float_format="%.7g").encode()
    atomic_write_bytes(path, gzip.compress(raw, compresslevel=6, mtime=0))
    return path


def read_predictions(run_dir: str | os.PathLike, name: str) -> pd.DataFrame | None:
    """The per-image scores a notebook wrote, or None when that notebook has not run in `run_dir`."""
    path = Path(run_dir) / "predictions" / f"{name}.csv.gz"
    if not path.is_file():
        return None
    text = ("model", "config", "bn", "fmt", "split", "subject", "video", "dataset")
    df = pd.read_csv(path, keep_default_na=False, dtype={c: str for c in text})
    return df


def _register_figure_display() -> None:
    """Show matplotlib Figure objects returned by notebook cells as PNG (studies build figures without
    pyplot, so the inline backend's formatter may not be installed)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None:
        return
    from matplotlib.figure import Figure

    def png(fig: Figure) -> bytes:
        import io
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        return buf.getvalue()

    ip.display_formatter.formatters["image/png"].for_type(Figure, png)


_register_figure_display()


def save_figure(run_dir: str | os.PathLike, name: str, fig: Any, dpi: int = 120) -> Path:
    """Save a matplotlib figure as `figures/<name>.png` (deterministic metadata, so reruns diff cleanly)."""
    import io

    path = run_path(run_dir, "figures", f"{name}.png")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())  # a killed run never leaves half a PNG
    return path


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "not installed"
    out["python"] = platform.python_version()
    return out


def machine_info() -> dict[str, Any]:
    """The CPU a run trained on: not part of any cache key, but two CPUs round differently, so the same seed
    gives different models on them (README, "Same seed, another CPU"); the manifest says which one it was."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch
        cap = torch.backends.cpu.get_cpu_capability()
    except Exception:   # torch missing or too old: the manifest still records the rest
        cap = "unknown"
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_cpu_capability": cap, "system": platform.system()}


# What a run itself rewrites in a checkout: changes there do not make the code that ran "dirty".
RUN_OUTPUTS = ("results", "paperkit/assets", "README.md")


def git_revision() -> str:
    """HEAD's short hash, with "-dirty" when tracked files other than a run's own outputs differ from it."""
    try:
        here = Path(__file__).resolve().parent
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=here, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *(f":(exclude){p}" for p in RUN_OUTPUTS)], cwd=top or here,
                               capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return "unknown"
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def update_manifest(run_dir: str | os.PathLike, key: str, entry: dict[str, Any]) -> Path:
    """Merge one entry (a notebook's, or the reproduce driver's) into `manifest.json`.

    Read-modify-write under an exclusive lock on the run folder (no concurrent update is lost), written by
    temp file + rename (a killed process never leaves half a manifest). A manifest that is not valid JSON
    (written by something else) is kept as `manifest.json.corrupt` with a warning and a new one started,
    so it can never stop a run."""
    import fcntl
    import warnings
    path = run_path(run_dir, "manifest.json")
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX)
        except OSError:  # a filesystem without flock: the atomic rename still keeps the file whole
            pass
        data: dict[str, Any] = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(data, dict) or not isinstance(data.get("entries", {}), dict):
                    raise ValueError("not an object with an 'entries' object")
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                aside = path.with_name("manifest.json.corrupt")
                os.replace(path, aside)
                warnings.warn(f"{path} was not a valid manifest ({e}); kept it as {aside} and started a new one",
                              stacklevel=2)
                data = {}
        data.setdefault("entries", {})[key] = entry
        data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode())
    finally:
        os.close(dir_fd)  # releases the lock
    return path


def record_notebook(run_dir: str | os.PathLike, notebook: str, params: dict[str, Any],
                    data_root: str | os.PathLike | None, started: float,
                    outputs: Iterable[str | os.PathLike] = ()) -> Path:
    """A notebook's manifest entry: parameters, dataset, versions, git revision, wall time, outputs.

    Every output must exist (the manifest never names a file that is not there); a relative output is
    looked up from the working directory (what `write_table` returns for a relative run_dir), then from
    the run folder, and recorded relative to the run folder."""
    base = Path(run_dir).resolve()
    rels, missing = [], []
    for o in outputs:
        p = Path(o)
        candidates = [p] if p.is_absolute() else [Path.cwd() / p, base / p]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            missing.append(str(o))
            continue
        f = found.resolve()
        rels.append(str(f.relative_to(base)) if base in f.parents else str(f))
    if missing:
        raise FileNotFoundError(f"record_notebook({notebook!r}): output(s) {missing} do not exist (looked in "
                                f"{Path.cwd()} and {base}); write them before recording, or leave them out")
    entry = {
        "status": "complete",
        "parameters": {k: v for k, v in params.items()},
        "dataset": dataset_info(data_root),
        "packages": package_versions(),
        "git_revision": git_revision(),
        "wall_time_s": round(time.time() - started, 1),
        "outputs": rels,
    }
    return update_manifest(run_dir, notebook, entry)
