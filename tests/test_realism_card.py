"""Notebook 00's realism card: one row per type present, bona fide as the reference, statistics that
respond to what they name."""
from __future__ import annotations

import numpy as np

from paperkit.studies import realism_card
from tests.conftest import build_tiny_celeba, clean_tree


def test_card_has_a_row_per_type_with_bona_fide_as_reference(tmp_path):
    root = build_tiny_celeba(tmp_path / "celeba", clean_tree(train_subjects=4, test_subjects=1, per_subject=4))
    df, profiles, crops = realism_card.measure(root, size=32, per_type=8, seed=0)
    assert df["spoof_type"].iloc[0] == 0 and set(df["spoof_type"]) == set(profiles) == set(crops)
    live = df[df["spoof_type"] == 0].iloc[0]
    for k in realism_card.STATS:
        assert np.isfinite(df[k]).all() and live[f"{k}_vs_live"] == 1.0
    assert (df["hf_energy"].between(0, 1)).all() and (df["n"] >= 1).all()
    fig = realism_card.figure(df, profiles, crops)
    assert len(fig.axes) == 6 * len(df)


def test_sharpness_and_high_frequency_energy_rise_with_fine_texture():
    win = np.outer(np.hanning(32), np.hanning(32)).astype(np.float32)
    smooth = np.full((32, 32, 3), 120, np.uint8)
    smooth[:, 16:] = 140
    dots = smooth.copy()
    dots[::2, ::2] = 250                                  # a halftone-like grid
    a, _ = realism_card._crop_stats(smooth, win)
    b, _ = realism_card._crop_stats(dots, win)
    assert b["sharpness"] > 10 * a["sharpness"] and b["hf_energy"] > a["hf_energy"]


def test_shortcut_auc_is_half_for_one_distribution_and_one_for_separated_ones():
    rng = np.random.default_rng(0)
    same = rng.normal(100, 10, 200)
    assert abs(realism_card.shortcut_auc(same[:100], same[100:]) - 0.5) < 0.1
    assert realism_card.shortcut_auc([1, 2, 3], [10, 11]) == 1.0
    assert realism_card.shortcut_auc([10, 11], [1, 2, 3]) == 0.0
    assert realism_card.shortcut_auc([5, 5], [5]) == 0.5


def test_card_reports_a_shortcut_auc_per_statistic(tmp_path):
    root = build_tiny_celeba(tmp_path / "celeba", clean_tree(train_subjects=4, test_subjects=1, per_subject=4))
    df, _, _ = realism_card.measure(root, size=32, per_type=8, seed=0)
    for k in realism_card.STATS:
        assert df[f"{k}_auc"].between(0, 1).all()
