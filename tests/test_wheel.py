"""The deployable model ships inside the package: the built wheel holds it, and `paperkit predict` run from
a folder outside the checkout finds it (no `results/` there)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from a copy of the sources (so the checkout gets no build/ or egg-info)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "paperkit", src / "paperkit", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = out.glob("paperkit-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_contains_model_and_card(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert "paperkit/assets/texture_int8.onnx" in names and "paperkit/assets/MODEL_CARD.md" in names
        info = z.getinfo("paperkit/assets/texture_int8.onnx")
        assert 100_000 < info.file_size < 1024 * 1024
        assert z.read("paperkit/assets/texture_int8.onnx") == (REPO / "paperkit/assets/texture_int8.onnx").read_bytes()
        assert z.read("paperkit/assets/MODEL_CARD.md").startswith(b"# Model card")
        assert not any(n.startswith(("results/", "tests/")) for n in names)


@pytest.mark.slow
def test_predict_outside_the_checkout_uses_the_packaged_model(tmp_path: Path) -> None:
    from skimage import data as skdata

    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    exe = Path(sys.executable).parent / "paperkit"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "paperkit"]
    proc = subprocess.run(cmd + ["predict", "photo.jpg", "--json"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert Path(rep["model"]).parts[-3:] == ("paperkit", "assets", "texture_int8.onnx")
    assert rep["totals"]["all"]["files"] == 1 and len(rep["faces"]) >= 1
    info = subprocess.run(cmd + ["predict", "--model-info"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert info.returncode == 0 and info.stdout.startswith("# Model card")
