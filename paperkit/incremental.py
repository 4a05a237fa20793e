"""What a notebook's results depend on, and whether they are still valid: the keys of an incremental
`paperkit reproduce` (see :mod:`paperkit.reproduce` for the rules: source, parameters, paperkit source,
dataset fingerprint, package versions, the run ids of the notebooks it depends on, and its outputs).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from . import profiles, results

PACKAGE_DIR = Path(__file__).resolve().parent


def sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:16]


def source_hash(nb: Path) -> str:
    """Hash of a notebook's cells (type, source, tags): outputs, execution counts and other metadata are
    ignored, so an executed copy or a re-saved notebook hashes the same as its clean source."""
    try:
        cells = json.loads(nb.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError) as e:
        from .reproduce import ReproduceError   # late: reproduce imports this module
        raise ReproduceError(f"cannot read notebook {nb}: {e}") from e
    norm = [(c.get("cell_type"), "".join(c.get("source", "")) if isinstance(c.get("source"), list)
             else c.get("source", ""), sorted(c.get("metadata", {}).get("tags", []))) for c in cells]
    return sha(json.dumps(norm, sort_keys=True))


def paperkit_hash(package_dir: Path = PACKAGE_DIR) -> str:
    """Hash of every paperkit/*.py and paperkit/**/*.py (path and content): any code change counts."""
    h = hashlib.sha256()
    for f in sorted(p for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts):
        h.update(f.relative_to(package_dir).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def embedded_root(profile: str) -> Path | None:
    """The embedded dataset's folder for ``profile`` if it is built (the path synth.default_root uses),
    else None; never builds it, and avoids importing paperkit.data (torch) on a no-op run."""
    from . import synth
    prof = profiles.get_profile(profile)
    root = synth.cache_dir() / f"synth-v{synth.VERSION}-{prof.name}-s{prof.data_seed}-{synth.synth_key(prof)}"
    return root if (root / synth.MARKER).is_file() else None


def dataset_fingerprint(profile: str, data_root: str) -> str:
    """Fingerprint of the dataset the notebooks read, without building the embedded one ("not built")."""
    if data_root:
        return results.dataset_info(data_root).get("fingerprint", "")
    try:
        root = embedded_root(profile)
        if root is None:
            return "not built"
        return results.dataset_info(root).get("fingerprint", "")
    except Exception as e:   # never stops a run: an unknown fingerprint only makes notebooks rerun
        return f"unknown ({type(e).__name__})"


def shared_inputs(profile: str, data_root: str) -> dict[str, str]:
    return {"paperkit": paperkit_hash(), "dataset": dataset_fingerprint(profile, data_root),
            "packages": sha(json.dumps(results.package_versions(), sort_keys=True))}


def dependencies(stem: str, stems: Sequence[str], dag: dict[str, Sequence[str]], notebook_dir: Path) -> list[str]:
    """Stems of the notebooks ``stem`` depends on (by number), among the notebooks of its folder."""
    num = stem[:2]
    here = sorted(p.stem for p in notebook_dir.glob("[0-9][0-9]_*.ipynb")) or list(stems)
    wanted = dag[num] if num in dag else [p[:2] for p in here if p[:2] < num]
    return [p for p in here if p[:2] in set(wanted) and p != stem]


def manifest_entries(run_dir: Path) -> dict[str, Any]:
    try:
        m = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
        return m.get("entries", {}) if isinstance(m, dict) else {}
    except (OSError, ValueError):
        return {}


def notebook_inputs(nb: Path, params: dict[str, Any], shared: dict[str, str], deps: Sequence[str],
                    run_dir: Path) -> dict[str, Any]:
    """The key a completed run of ``nb`` is recorded under (and compared with next time)."""
    entries = manifest_entries(run_dir)
    # run_dir is left out: the manifest lives in it, so a clone at another path or a moved run folder
    # reuses its results instead of rerunning every notebook for a changed absolute path
    keyed = {k: v for k, v in params.items() if k != "run_dir"}
    return {"source": source_hash(nb), "parameters": sha(json.dumps(keyed, sort_keys=True, default=str)),
            **shared, "dependencies": {d: entries.get(d, {}).get("run_id", "") for d in deps}}


NAMES = {"source": "source changed", "parameters": "parameters changed", "paperkit": "paperkit changed",
         "dataset": "dataset changed", "packages": "package versions changed"}


def stale_reasons(run_dir: Path, nb: Path, inputs: dict[str, Any], deps: Sequence[str], ran: set[str]) -> list[str]:
    """Why ``nb`` must run ([] = its recorded results are still valid)."""
    entry = manifest_entries(run_dir).get(nb.stem)
    if not entry:
        return ["no previous run"]
    if entry.get("status") != "complete":
        return [f"previous run {entry.get('status', 'unknown')}"]
    old = entry.get("inputs")
    if not isinstance(old, dict):
        return ["no record of its inputs (run before incremental reproduce)"]
    why = [NAMES[k] for k in NAMES if old.get(k) != inputs[k]]
    for d in deps:
        if d in ran:
            why.append(f"dependency {d[:2]} reran")
        elif old.get("dependencies", {}).get(d) != inputs["dependencies"].get(d):
            why.append(f"dependency {d[:2]} changed since")
    for o in list(entry.get("outputs", [])) + [f"executed/{nb.name}"]:
        p = Path(o)
        if not (p if p.is_absolute() else run_dir / p).exists():
            why.append(f"output missing: {o}")
    return why
