"""Notebooks stay thin: literal parameters, calls into paperkit, results written through paperkit."""
import ast
import json
from pathlib import Path

import pytest

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = ["00_data", "01_pta_mobilenet", "02_fourier_texture", "03_distillation", "04_results",
            "05_compare_branches"]
COMMON = {"profile", "data_root", "run_dir", "seeds"}
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
    assert "record_notebook" in _src(cells[-1]), "the last cell writes the manifest entry through paperkit"
