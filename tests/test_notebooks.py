"""Notebooks stay thin: literal parameters, calls into paperkit, results written through paperkit."""
import ast
import importlib
import json
import re
from pathlib import Path

import pytest

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = ["00_data", "01_pta_mobilenet", "02_fourier_texture", "03_distillation", "04_results",
            "05_compare_branches"]
COMMON = {"profile", "data_root", "run_dir", "seeds", "overrides"}
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))


def _code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _src(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_the_six_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_thin_and_stripped(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    cells = _code_cells(nb)
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    assert cells[0] is params[0], "the parameters cell comes first"
    tree = ast.parse(_src(params[0]))
    names = set()
    for node in tree.body:
        assert isinstance(node, ast.Assign), f"parameters cell holds only assignments: {ast.dump(node)[:80]}"
        ast.literal_eval(node.value)  # plain literals only
        names |= {t.id for t in node.targets}
    assert COMMON <= names, f"missing common parameters {COMMON - names}"
    for c in cells:
        assert not c.get("outputs"), "outputs must be stripped (nbstripout)"
        assert c.get("execution_count") is None
        for node in ast.walk(ast.parse(_src(c))):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)), \
                "no def/class/lambda in notebooks: put logic in paperkit"
    last = _src(cells[-1]).strip()
    assert last in ("common.record(study)", "common.record(run)", "common.record(state)"), \
        f"every notebook ends with the same call, common.record(<its study>), not {last!r}"


PAPERKIT_NAME = re.compile(r"`(paperkit(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_paperkit_name_the_markdown_mentions_exists(path):
    """Markdown that names `paperkit.x.y` sends a reader there: the module (or its attribute) must exist."""
    nb = json.loads(path.read_text())
    names = {m for c in nb["cells"] if c["cell_type"] == "markdown" for m in PAPERKIT_NAME.findall(_src(c))}
    assert names, f"{path.name}'s markdown names no paperkit module: say where the method lives"
    missing = []
    for name in sorted(names):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):   # the longest importable prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(name)
            break
        else:
            missing.append(name)
    assert not missing, f"{path.name} markdown names {missing}, which do not exist in paperkit"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_overrides_reach_the_study(path):
    """The `overrides` parameter goes into the call that resolves the profile (the study's setup)."""
    nb = json.loads(path.read_text())
    calls = [n for c in _code_cells(nb) for n in ast.walk(ast.parse(_src(c))) if isinstance(n, ast.Call)
             and getattr(n.func, "attr", "") in ("setup", "prepare")]
    assert calls, f"{path.name} has no setup/prepare call"
    assert any(isinstance(a, ast.Name) and a.id == "overrides" for n in calls for a in n.args) or any(
        k.arg == "overrides" for n in calls for k in n.keywords), f"{path.name} does not pass overrides to setup"
