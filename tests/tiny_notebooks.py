"""Tiny papermill notebooks for the reproduce-driver tests (incremental runs, interrupts, locks)."""
from __future__ import annotations

from pathlib import Path

import nbformat


def write_notebook(path: Path, params: str, body: str) -> None:
    """A two-cell notebook: a `parameters`-tagged cell, then `body`, on the project's python3 kernel."""
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
