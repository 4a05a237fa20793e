"""README results block (paperkit.summary): rendered from the tables, and the committed README matches them."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from paperkit import summary

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"


def test_committed_readme_quotes_the_committed_tables():
    """Fails when results/ was regenerated without the README (run `paperkit results summary --write README.md`)."""
    assert summary.readme_block(REPO / "README.md") == summary.markdown(RESULTS).rstrip("\n")


def test_rendered_numbers_are_the_tables_numbers():
    md = summary.markdown(RESULTS)
    t3 = pd.read_csv(RESULTS / "tables" / "table3_quality.csv")
    nopta = t3[(t3.config == "NoPTA") & (t3.operating_point == "fixed_0.5")].iloc[0]
    assert f"| No-PTA | {nopta.acer:.2f} [{nopta.acer_ci_low:.2f}, {nopta.acer_ci_high:.2f}] |" in md
    claims = pd.read_csv(RESULTS / "tables" / "claims.csv")
    for verdict, n in claims.verdict.value_counts().items():
        assert f"{n} {verdict}" in md
    assert "not CelebA-Spoof numbers" in md


def test_write_readme_replaces_only_the_block(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(RESULTS / "tables", run / "tables")
    shutil.copy(RESULTS / "manifest.json", run / "manifest.json")
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{summary.BEGIN}\nold numbers\n{summary.END}\n\nafter\n")
    assert summary.write_readme(readme, run) is True
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "old numbers" not in text
    assert summary.write_readme(readme, run) is False   # already up to date


def test_clear_errors(tmp_path):
    (tmp_path / "README.md").write_text("no block here\n")
    with pytest.raises(summary.SummaryError, match="has no results block"):
        summary.readme_block(tmp_path / "README.md")
    with pytest.raises(summary.SummaryError, match="run `make reproduce` first"):
        summary.markdown(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{")
    with pytest.raises(summary.SummaryError, match="not valid JSON"):
        summary.markdown(tmp_path / "bad")


def test_reproduce_refreshes_only_the_checkouts_readme(tmp_path, monkeypatch):
    from paperkit import reproduce
    checkout = tmp_path / "checkout"
    (checkout / "paperkit").mkdir(parents=True)
    shutil.copytree(RESULTS / "tables", checkout / "results" / "tables")
    shutil.copy(RESULTS / "manifest.json", checkout / "results" / "manifest.json")
    readme = checkout / "README.md"
    stale = f"intro\n{summary.BEGIN}\nstale\n{summary.END}\n"
    readme.write_text(stale)
    monkeypatch.setattr(reproduce, "PACKAGE_DIR", checkout / "paperkit")
    elsewhere = tmp_path / "scratch"
    shutil.copytree(checkout / "results", elsewhere)
    reproduce._refresh_readme(elsewhere)          # a scratch run folder: README untouched
    assert readme.read_text() == stale
    reproduce._refresh_readme(checkout / "results")
    assert "stale" not in readme.read_text() and summary.readme_block(readme) == summary.markdown(
        checkout / "results").rstrip("\n")
