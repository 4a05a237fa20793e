"""Notebook 05 in a real browser: JupyterLab from this venv, headless Chromium driven by Playwright.

What a user does on a fresh clone: open `notebooks/05_compare_branches.ipynb` in JupyterLab, Run All, click
the widget. The run folder is what a clone has (the committed `results/tables/branch_comparison.csv` and
`manifest.json`, no checkpoint), so the notebook takes its recorded path and nothing is trained. Asserts are
on the DOM (a screenshot is saved to the test's tmp folder for a person to look at):

- the widget renders (3 PTA-block toggles, Pin, the budget slider, the comparison table);
- toggling a block's branch changes the configuration on screen and its latency / ACER;
- Pin keeps the pinned configuration as an extra row when the toggles move on;
- moving the budget slider changes the chosen configuration (the best recorded validation ACER that fits);
- no cell shows an error, and the kernel logged no exception from a widget callback.

Marked `browser`, left out of `make test`; `make test-browser` runs it. Needs Debian's `chromium`
(`apt-get install -y chromium`; `PAPERKIT_CHROMIUM` points elsewhere) and `playwright` (dev extras). The
browser Playwright would download is not used.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "05_compare_branches.ipynb"
CHROMIUM = os.environ.get("PAPERKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
RUN_ALL_TIMEOUT_MS = 120_000  # kernel start + torch import + the notebook, on 2 busy cores
STEP_TIMEOUT_MS = 20_000      # one widget round trip (browser -> kernel -> browser)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_clone(work: Path) -> Path:
    """notebooks/05 and the committed run folder, laid out as in a checkout, without any checkpoint."""
    (work / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, work / "notebooks" / NOTEBOOK)
    run = work / "results"
    (run / "tables").mkdir(parents=True)
    shutil.copy(ROOT / "results" / "tables" / "branch_comparison.csv", run / "tables" / "branch_comparison.csv")
    shutil.copy(ROOT / "results" / "manifest.json", run / "manifest.json")
    return run


def _isolated_jupyter_env(base: Path) -> dict[str, str]:
    """Jupyter config, data, runtime and lab settings under `base`; the only kernel is this interpreter."""
    dirs = {k: base / k.lower() for k in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
                                          "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR")}
    for d in dirs.values():
        d.mkdir(parents=True)
    spec = dirs["JUPYTER_DATA_DIR"] / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (paperkit)", "language": "python"}))
    # no news / update checks (the network is closed) and no toast over the notebook
    note = dirs["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    note.parent.mkdir(parents=True)
    note.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    tracker = dirs["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"autoStartDefaultKernel": True}))
    env = {**os.environ, **{k: str(v) for k, v in dirs.items()}, "PYTHONUNBUFFERED": "1"}
    env.pop("JUPYTER_PATH", None)
    return env


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on 127.0.0.1 with a token, serving a fresh-clone layout; yields (url, token, run_dir, log)."""
    pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extras: pip install -e '.[dev]'")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set PAPERKIT_CHROMIUM)")
    work = tmp_path / "clone"
    run = _fresh_clone(work)
    port, token = _free_port(), secrets.token_hex(16)
    log_path = tmp_path / "jupyterlab.log"
    log = open(log_path, "wb")
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
           f"--port={port}", "--port-retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={work}", "--ServerApp.open_browser=False", "--LabApp.news_url=",
           "--ServerApp.terminals_enabled=False", "--LabApp.extension_manager=readonly"]
    proc = subprocess.Popen(cmd, cwd=work, env=_isolated_jupyter_env(tmp_path / "jupyter"), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                req = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {token}"})
                with urllib.request.urlopen(req, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer in 60 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, token, run, log_path
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and the kernels it started (its own session)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


def _shown_rows(page) -> list[list[str]]:
    """Cells of the widget's comparison table: config, blocks, params, MAdds, latency, accuracy, APCER,
    BPCER, ACER, val ACER (the current configuration first, then the pinned one, then No-PTA)."""
    return page.eval_on_selector_all(
        ".paperkit-table table.paperkit-shown tbody tr",
        "rows => rows.map(r => Array.from(r.querySelectorAll('td')).map(td => td.textContent.trim()))")


def _wait_rows(page, predicate, what: str) -> list[list[str]]:
    deadline = time.monotonic() + STEP_TIMEOUT_MS / 1000
    rows = _shown_rows(page)
    while not predicate(rows):
        if time.monotonic() > deadline:
            pytest.fail(f"the widget did not update ({what}); the table shows {rows}")
        page.wait_for_timeout(100)
        rows = _shown_rows(page)
    return rows


def _active(page) -> str:
    """The configuration the three ToggleButtons show (H / L / B per block)."""
    names = {"Heavy": "H", "Light": "L", "Both": "B"}
    return "".join(names[page.locator(f".paperkit-block-{i} button.mod-active").inner_text().strip()]
                   for i in (1, 2, 3))


def _errors(page) -> list[str]:
    """Error outputs in the notebook: tracebacks on stderr and error outputs (ename/evalue)."""
    texts = page.eval_on_selector_all(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"], '
        '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]',
        "els => els.map(e => e.textContent)")
    return [t for t in texts if re.search(r"Traceback|Error\b|Exception", t)]


def test_notebook_05_in_a_real_browser(lab, tmp_path):
    import pandas as pd
    from playwright.sync_api import expect, sync_playwright

    from paperkit import config_tree
    from paperkit.studies import branch_records, branch_reports

    url, token, run, log_path = lab
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    recorded = pd.read_csv(run / "tables" / "branch_comparison.csv").set_index("config")
    reports = branch_records.recorded_state(run, "default").reports
    t0 = time.monotonic()
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.set_default_timeout(STEP_TIMEOUT_MS)
            page.goto(f"{url}/lab/tree/notebooks/{NOTEBOOK}?token={token}", wait_until="domcontentloaded",
                      timeout=60_000)
            expect(page.locator(".jp-NotebookPanel .jp-Cell").first).to_be_visible(timeout=60_000)
            # the notebook's kernel (python3 = this interpreter) starts by itself; Run All before it is up
            # would ask for a kernel instead
            expect(page.get_by_role("button", name=re.compile(r"Python 3 \(paperkit\) \| Idle"))).to_be_visible(
                timeout=60_000)
            # Run > Run All Cells, as a user would
            page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
            page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
            last = page.locator(".jp-NotebookPanel .jp-CodeCell").last
            expect(last.locator(".jp-OutputArea-output")).to_contain_text("keeps the entry", timeout=RUN_ALL_TIMEOUT_MS)
            prompts = page.eval_on_selector_all(".jp-CodeCell .jp-InputArea-prompt",
                                                "els => els.map(e => e.textContent)")
            assert prompts and not any("*" in t for t in prompts), f"cells still running: {prompts}"
            run_all_s = time.monotonic() - t0

            # the first output says this is the recorded run and how to go live
            first_out = page.locator(".jp-CodeCell .jp-OutputArea-output").first
            expect(first_out).to_contain_text("RECORDED RUN")
            expect(first_out).to_contain_text("--only 01,05")

            # the widget renders
            ui = page.locator(".paperkit-branches")
            expect(ui).to_be_visible()
            for i in (1, 2, 3):
                expect(page.locator(f".paperkit-block-{i} button")).to_have_count(3)
            expect(page.locator(".paperkit-pin")).to_be_visible()
            expect(page.locator(".paperkit-budget .noUi-handle, .paperkit-budget input").first).to_be_attached()
            expect(page.locator(".paperkit-note")).to_contain_text("no sample faces")
            rows = _wait_rows(page, lambda r: len(r) == 2 and r[0][0] == "HHH", "initial HHH")
            assert _active(page) == "HHH" and rows[1][0] == config_tree.REFERENCE

            # toggle block 1 to Light: LHH with its own recorded latency and ACER
            page.locator(".paperkit-block-1 button", has_text="Light").click()
            rows = _wait_rows(page, lambda r: r and r[0][0] == "LHH", "toggle block 1 -> Light")
            lat = {c: f"{recorded.loc[c, 'latency_ms']:.2f}" for c in ("HHH", "LHH")}
            assert rows[0][4] == lat["LHH"] != lat["HHH"]
            assert rows[0][8] == f"{recorded.loc['LHH', 'acer']:.2f}"
            assert (rows[0][4], rows[0][8]) != (f"{recorded.loc['HHH', 'latency_ms']:.2f}",
                                                f"{recorded.loc['HHH', 'acer']:.2f}")

            # Pin LHH, move block 3 to Both: LHB shown with LHH pinned beside it, one row more
            n_before = len(rows)
            page.locator(".paperkit-pin").click()
            expect(page.locator(".paperkit-table")).to_contain_text("pinned: LHH")
            page.locator(".paperkit-block-3 button", has_text="Both").click()
            rows = _wait_rows(page, lambda r: r and r[0][0] == "LHB", "toggle block 3 -> Both after Pin")
            assert len(rows) == n_before + 1 and [r[0] for r in rows] == ["LHB", "LHH", config_tree.REFERENCE]
            assert rows[0][4] == f"{recorded.loc['LHB', 'latency_ms']:.2f}"

            # drag the budget slider to ~20% of its track: the best recorded val ACER that fits is chosen
            before = rows[0][0]
            handle = page.locator(".paperkit-budget .noUi-handle")
            track = page.locator(".paperkit-budget .noUi-base, .paperkit-budget .noUi-target").first
            hb, tb = handle.bounding_box(), track.bounding_box()
            page.mouse.move(hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2)
            page.mouse.down()
            page.mouse.move(tb["x"] + 0.2 * tb["width"], hb["y"] + hb["height"] / 2, steps=12)
            page.mouse.up()
            label = page.locator(".paperkit-budget-label")
            expect(label).to_contain_text(re.compile(r"budget [0-9.]+ ms: [HLB]{3}: lowest validation"))
            m = re.search(r"budget ([0-9.]+) ms: ([HLB]{3}):", label.inner_text())
            budget, chosen = float(m.group(1)), m.group(2)
            rows = _wait_rows(page, lambda r: r and r[0][0] == chosen, f"budget {budget} ms -> {chosen}")
            assert chosen != before and _active(page) == chosen
            fits = {branch_reports.best_under_budget(reports, budget + d).config for d in (-0.005, 0.0, 0.005)}
            assert chosen in fits, (budget, chosen, fits)
            assert float(rows[0][4]) <= budget + 0.01

            page.wait_for_timeout(500)  # let any late error output arrive
            page.screenshot(path=str(tmp_path / "notebook05.png"), full_page=True)
            assert not _errors(page), _errors(page)
            # a callback's exception would show in the widget's own output area (paperkit-log)
            expect(page.locator(".paperkit-log .jp-OutputArea-output")).to_have_count(0)
        finally:
            ctx.close()
    log = log_path.read_text(errors="replace")
    assert not re.search(r"Traceback|Exception in comm_msg|Error in observer", log), log[-4000:]
    print(f"run all {run_all_s:.0f}s, whole browser session {time.monotonic() - t0:.0f}s; "
          f"screenshot {tmp_path / 'notebook05.png'}")
