"""Habits the code base keeps, checked so they cannot quietly erode.

- Every "docs/design.md section N" citation names a section that exists.
- Tests do not skip on what the package ships (only the opt-in browser test may skip), and never
  accept any exception at all.
- No module over 500 lines and no function over 60 lines unless its docstring says why ("Long because").
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "paperkit"
TESTS = ROOT / "tests"
DESIGN = ROOT / "docs" / "design.md"

MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 500
REASON = "Long because"


CITATION = re.compile(r"docs/design\.md section (\d+)")
SKIP_CALL = re.compile(r"\b(skipif|importorskip)\(")
ALLOWED_SKIP = 'importorskip("playwright.sync_api"'
CATCH_ALL = re.compile(r"pytest\.raises\(\s*(Exception|BaseException)\s*[,)]")


def _py_files(*dirs: Path) -> list[Path]:
    return sorted(p for d in dirs for p in d.rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_design_citations_name_existing_sections() -> None:
    sections = set(re.findall(r"^## (\d+)\. ", DESIGN.read_text(encoding="utf-8"), flags=re.M))
    assert sections, f"{DESIGN} has no numbered '## N. Title' sections"
    cited = {}
    for path in _py_files(PACKAGE, TESTS):
        for n in CITATION.findall(path.read_text(encoding="utf-8")):
            cited.setdefault(n, []).append(_rel(path))
    assert cited, "no docs/design.md citations found: has the citation format changed?"
    missing = {n: files for n, files in cited.items() if n not in sections}
    assert not missing, f"citations of sections not in docs/design.md: {missing}"


def test_no_uncited_design_references() -> None:
    """The old form ("DESIGN section N") pointed at a file outside the repository."""
    offenders = [_rel(p) for p in _py_files(PACKAGE, TESTS)
                 if p != Path(__file__).resolve() and re.search(r"\bDESIGN section", p.read_text(encoding="utf-8"))]
    assert not offenders, f"cite docs/design.md section N instead: {offenders}"


def test_tests_skip_only_the_opt_in_browser_test() -> None:
    found = []
    for path in sorted(TESTS.glob("*.py")):
        if path.resolve() == Path(__file__).resolve():
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if SKIP_CALL.search(line) and ALLOWED_SKIP not in line:
                found.append(f"{_rel(path)}:{i}: {line.strip()}")
    assert not found, ("the package's own modules and core dependencies ship, so import them and let a "
                       "missing one fail:\n" + "\n".join(found))


def test_no_catch_all_raises() -> None:
    found = []
    for path in sorted(TESTS.glob("*.py")):
        if path.resolve() == Path(__file__).resolve():
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if CATCH_ALL.search(line):
                found.append(f"{_rel(path)}:{i}: {line.strip()}")
    assert not found, "name the exception a test expects:\n" + "\n".join(found)


def _oversized() -> set[tuple[str, str]]:
    """(path, function) for every function over the limit, (path, "<module>") for every module over it,
    that does not say in its docstring why it is long."""
    out: set[tuple[str, str]] = set()
    for path in _py_files(PACKAGE):
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        if len(source.splitlines()) > MAX_MODULE_LINES and REASON not in (ast.get_docstring(tree) or ""):
            out.add((_rel(path), "<module>"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and REASON not in (ast.get_docstring(node) or ""):
                    out.add((_rel(path), node.name))
    return out


def test_long_code_says_why() -> None:
    unexplained = sorted(_oversized())   # ("<module>" = the module itself, over MAX_MODULE_LINES)
    assert not unexplained, (f"over {MAX_FUNCTION_LINES} lines per function / {MAX_MODULE_LINES} per module "
                             f"without '{REASON} ...' in the docstring: split it, or give the reason: {unexplained}")
