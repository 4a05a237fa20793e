"""The robustness card: perturbations do what they say, the table has the columns the issue names, and
the stability interval is a paired one over the same images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from paperkit import data, index, robustness
from tests.conftest import build_tiny_celeba, clean_tree, tiny_colour_onnx


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_colour_onnx(tmp_path_factory.mktemp("models") / "tiny.onnx")


@pytest.fixture(scope="module")
def test_set(tmp_path_factory: pytest.TempPathFactory) -> data.FaceDataset:
    root = build_tiny_celeba(tmp_path_factory.mktemp("celeba"), clean_tree(train_subjects=1, test_subjects=4,
                                                                          per_subject=4))
    return data.FaceDataset(root, index.load_index(root, "test"), size=32)


def test_perturbations_change_image_or_box_as_named():
    img = np.full((100, 120, 3), 128, np.uint8)
    img[40:60, 50:70] = 250
    box = (40.0, 30.0, 40.0, 40.0)
    _, b = robustness.by_name("box_scale").apply(img, box, 1.25)
    assert b == pytest.approx((35.0, 25.0, 50.0, 50.0))          # about the same centre
    _, b = robustness.by_name("box_shift_x").apply(img, box, 0.1)
    assert b == pytest.approx((44.0, 30.0, 40.0, 40.0))
    im, b = robustness.by_name("face_size_px").apply(img, box, 80)
    assert im.shape[:2] == (200, 240) and b == pytest.approx((80.0, 60.0, 80.0, 80.0))
    assert robustness.by_name("gamma").apply(img, box, 1.6)[0].mean() < img.mean()
    assert robustness.by_name("brightness").apply(img, box, 20)[0][0, 0, 0] == 148
    assert robustness.by_name("blur_sigma").apply(img, box, 3)[0][40, 50, 0] < 250
    jpg = robustness.by_name("jpeg_quality").apply(img, box, 30)[0]
    assert jpg.shape == img.shape and not np.array_equal(jpg, img)
    with pytest.raises(KeyError, match="known: .*box_scale"):
        robustness.by_name("rotation")


def test_card_has_the_named_columns_and_its_reference_rows_agree(tiny_model, test_set):
    df, scored = robustness.card(tiny_model, test_set, "tiny", limit=100, n_boot=50, progress=False)
    assert set(robustness.COLUMNS) <= set(df.columns)
    assert set(df["perturbation"]) == {p.name for p in robustness.PERTURBATIONS}
    assert df["perturbation"].str.contains("scale").any()
    ref = df[(df.perturbation == "box_scale") & (df.level == 1.0)].iloc[0]
    for name, level in (("box_shift_x", 0.0), ("gamma", 1.0), ("brightness", 0.0), ("blur_sigma", 0.0)):
        row = df[(df.perturbation == name) & (df.level == level)].iloc[0]
        assert row["acer"] == ref["acer"] and row["mean_spoof_score_live"] == ref["mean_spoof_score_live"]
    assert ((df["acer_ci_low"] <= df["acer"]) & (df["acer"] <= df["acer_ci_high"])).all()
    bright = df[df.perturbation == "brightness"].sort_values("level")["mean_spoof_score_live"].to_numpy()
    assert not np.allclose(bright, bright[0])       # the tiny model reacts to colour: the card sees it
    iv = robustness.stability(scored, "box_scale", (0.9, 1.0, 1.1, 1.2), 1.0, n_boot=50)
    assert iv.low <= iv.value <= iv.high and iv.value >= 0
    with pytest.raises(ValueError, match="no level of box_scale other than the reference"):
        robustness.stability(scored, "box_scale", (1.0,), 1.0)
