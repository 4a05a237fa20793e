"""Distillation study pieces that need no trained teacher: the unlabelled pool, its loaders, the tau/alpha
selection rule, video-level HTER with intervals, and the setup's parameter checks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from paperkit import data, index, metrics, stats
from paperkit.losses import IGNORE_LABEL
from paperkit.profiles import get_profile
from paperkit.studies import cross_domain, distill_pool, distillation

PROF = get_profile("smoke", input_size=32, batch_size=4, num_workers=0)


def _samples(n_subjects: int = 10, per: int = 4) -> list[index.Sample]:
    return [index.Sample(path=f"Data/train/{s}/{'spoof' if i % 2 else 'live'}/{i:06d}.png", split="train",
                        subject=str(s), label=i % 2, spoof_type=2 * (i % 2))
            for s in range(n_subjects) for i in range(per)]


def _run(root: Path, loaders: dict, pool: distill_pool.Pool | None) -> distillation.DistillRun:
    return distillation.DistillRun(notebook=distillation.NOTEBOOK, profile=PROF, root=root, run_dir=root / "run",
                                   seeds=(0,), tau=4.0, alpha=0.7,
                                   student="pta_mobilenet_v2", dataset="synthetic (test)", loaders=loaders,
                                   cue_counts={}, pool=pool, kd_pair=(2.0, 0.9))


# ------------------------------------------------------------------------------------------ pool
def test_pool_withholds_whole_subjects_seeded_and_fixed() -> None:
    s = _samples()
    p = distill_pool.make_pool(s, 0.5, seed=0)
    assert p is not None and len(p.unlabelled_subjects) == 5
    hidden = {s[i].subject for i in p.unlabelled}
    assert hidden == set(p.unlabelled_subjects)
    assert not hidden & {s[i].subject for i in p.labelled}          # subject-disjoint
    assert sorted(np.concatenate([p.labelled, p.unlabelled]).tolist()) == list(range(len(s)))
    assert np.array_equal(distill_pool.make_pool(s, 0.5, seed=0).unlabelled, p.unlabelled)   # reruns agree
    other = distill_pool.make_pool(s, 0.5, seed=1)
    assert other is not None and set(other.unlabelled_subjects) != set(p.unlabelled_subjects)
    assert distill_pool.make_pool(s, 0.0, seed=0) is None
    assert len(distill_pool.make_pool(s, 0.99, seed=0).labelled) > 0       # at least one labelled subject stays
    for bad in (-0.1, 1.0, "half"):
        with pytest.raises(ValueError, match="unlabelled_fraction"):
            distill_pool.make_pool(s, bad, seed=0)  # type: ignore[arg-type]


def test_pool_loaders_hide_labels_and_reproduce_the_cached_images(tiny_celeba_clean: Path) -> None:
    """The semi loader yields the training images in the same order with the same augmentation (so cached
    teacher features still apply) and label -1 exactly on the pool's subjects; the labelled-only loader
    yields only labelled subjects' images, each identical to the full set's image at that (index, epoch)."""
    loaders = data.make_loaders(tiny_celeba_clean, PROF, 0)
    tr = loaders["train"].dataset
    pool = distill_pool.make_pool(tr.samples, 0.5, seed=0)
    assert pool is not None
    run = _run(tiny_celeba_clean, loaders, pool)
    hidden = set(pool.unlabelled_subjects)
    for epoch in (0, 1):
        full = distillation._student_loaders(run, "student_alone")["train"]
        semi = distillation._student_loaders(run, "student_kd_semi")["train"]
        for ld in (full, semi):
            ld.sampler.set_epoch(epoch)
            ld.dataset.set_epoch(epoch)
        xs_full = [(x, y) for x, y, _ in full]
        xs_semi = [(x, y) for x, y, _ in semi]
        assert len(xs_full) == len(xs_semi)
        for (xf, yf), (xsm, ysm) in zip(xs_full, xs_semi):
            assert torch.equal(xf, xsm)
            assert ((ysm == IGNORE_LABEL) | (ysm == yf)).all()
        semi.sampler.set_epoch(epoch)
        idx = [i for i, _ in semi.sampler]
        ys = [semi.dataset.samples[i].label for i in idx]
        assert all((y == IGNORE_LABEL) == (tr.samples[i].subject in hidden) for i, y in zip(idx, ys))
        lab = distillation._student_loaders(run, "student_kd_labelled_only")["train"]
        lab.sampler.set_epoch(epoch)
        pairs = list(lab.sampler)
        assert {i for i, _ in pairs} <= set(pool.labelled.tolist())
        assert all(e == epoch for _, e in pairs)
        i0, _ = pairs[0]
        assert torch.equal(tr[(i0, epoch)][0], lab.dataset[(i0, epoch)][0])
    with pytest.raises(RuntimeError, match="pool"):
        distillation._student_loaders(_run(tiny_celeba_clean, loaders, None), "student_kd_semi")
    with pytest.raises(ValueError, match="not a pool student"):
        distill_pool.pool_loaders(run, "student_alone")


def test_subset_sampler_is_seeded_per_epoch() -> None:
    s = distill_pool.SubsetEpochSampler([3, 5, 7, 9], seed=0)
    e0, e1 = list(s), list(s)
    assert sorted(i for i, _ in e0) == [3, 5, 7, 9] and {e for _, e in e0} == {0} and {e for _, e in e1} == {1}
    s.set_epoch(0)
    assert list(s) == e0 and len(s) == 4


# ------------------------------------------------------------------------------------------ selection
def test_select_kd_takes_lowest_val_acer_ties_to_auc_and_records_every_candidate(tmp_path: Path, monkeypatch
                                                                                   ) -> None:
    fake = {(4.0, 0.7): (0.20, 0.90), (2.0, 0.9): (0.10, 0.80), (1.0, 0.9): (0.10, 0.95)}
    calls = []

    def train_one(run, seed, name, loaders, teacher, ck, use_cache=False, epochs=None, pair=None):
        calls.append((name, ck, epochs, pair))
        acer, auc = fake[pair]
        hist = pd.DataFrame([{"epoch": 1, "train_loss": 1.0, "val_acer": acer + 0.05, "val_accuracy": 0.8,
                              "val_auc": auc, "epoch_time_s": 1.0},
                             {"epoch": 2, "train_loss": 0.9, "val_acer": acer, "val_accuracy": 0.9,
                              "val_auc": auc, "epoch_time_s": 1.0},
                             {"epoch": 3, "train_loss": 0.8, "val_acer": 0.0, "val_accuracy": 1.0,   # beyond the
                              "val_auc": 1.0, "epoch_time_s": 1.0}])                                # short run
        return None, hist

    monkeypatch.setattr(distillation, "train_one", train_one)
    monkeypatch.setattr(distillation, "require_teacher", lambda run, seed=None: None)
    monkeypatch.setattr(distillation, "_cache_student_views", lambda run: None)
    run = _run(tmp_path, {}, None)
    run.kd_grid, run.kd_grid_epochs, run.kd_pair = tuple(fake), 2, None
    df = distillation.select_kd(run)
    assert run.kd_pair == (1.0, 0.9)                           # 10% like (2, 0.9), higher AUC
    assert df["selected"].sum() == 1 and df.loc[df.selected, "kd_tau"].item() == 1.0
    assert df.val_acer.tolist() == pytest.approx([20.0, 10.0, 10.0])   # percent, judged within 2 epochs only
    assert (tmp_path / "run" / "tables" / "kd_selection.csv").is_file() and "dataset" in df
    assert all(c[0] == "student_kd" and c[2] == 2 for c in calls)
    # the winner's checkpoint is the one train_students resumes (same name as the full-budget run)
    win = [c[1] for c in calls if c[3] == (1.0, 0.9)][0]
    assert win == distillation.ck_name(run, 0, "student_kd")
    assert df.soft_weight.tolist() == pytest.approx([0.7 / 0.3 / 16, 0.9 / 0.1 / 4, 0.9 / 0.1])


def test_kd_params_need_a_selection_and_hinton_keeps_its_pair(tmp_path: Path) -> None:
    run = _run(tmp_path, {}, None)
    run.kd_pair = None
    assert run.kd_params("student_kd_hinton") == (4.0, 0.7)
    with pytest.raises(RuntimeError, match="select_kd"):
        run.kd_params("student_kd")


@pytest.mark.parametrize("grid,match", [([[0.0, 0.5]], "tau"), ([[2.0, 1.5]], "alpha"), ([[2.0]], "pairs"),
                                        ([[2.0, 0.5], [2.0, 0.5]], "repeats")])
def test_bad_grid(grid, match) -> None:
    with pytest.raises(ValueError, match=match):
        distillation._check_grid(grid)


# ------------------------------------------------------------------------------------------ HTER
def test_video_level_and_hter_interval_at_fixed_threshold() -> None:
    # two subjects, two videos each; frames of a video share label, subject and type
    videos = np.array(["a1", "a1", "a2", "a2", "b1", "b1", "b2", "b2"])
    s = stats.Scored(np.array([0.9, 0.7, 0.2, 0.4, 0.6, 0.8, 0.55, 0.35]), np.array([1, 1, 0, 0, 1, 1, 0, 0]),
                     np.array(["a"] * 4 + ["b"] * 4), np.array([2, 2, 0, 0, 3, 3, 0, 0]), videos)
    v = cross_domain.video_level(s)
    assert v.videos.tolist() == ["a1", "a2", "b1", "b2"]
    assert v.scores.tolist() == pytest.approx([0.8, 0.3, 0.7, 0.45])
    assert v.labels.tolist() == [1, 0, 1, 0] and v.subjects.tolist() == ["a", "a", "b", "b"]
    q = stats.quality(s, 0.5, 200, 0)
    assert q["acer"] == pytest.approx(100 * metrics.hter(s.scores, s.labels, 0.5))   # HTER = ACER at the threshold
    assert q["acer_ci_low"] <= q["acer"] <= q["acer_ci_high"]
    bad = stats.Scored(s.scores, np.array([1, 0, 0, 0, 1, 1, 0, 0]), s.subjects, s.spoof_types, videos)
    with pytest.raises(ValueError, match="mixes labels"):
        cross_domain.video_level(bad)


def test_cross_domain_rows_use_the_training_domains_val_threshold(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    def scored(n_subj: int, shift: float) -> stats.Scored:
        subj = np.repeat([f"s{i}" for i in range(n_subj)], 6)
        y = np.tile([0, 0, 0, 1, 1, 1], n_subj)
        vid = np.array([f"{s}/{'spoof' if lab else 'live'}" for s, lab in zip(subj, y)])
        return stats.Scored(np.clip(0.3 + 0.4 * y + shift + 0.15 * rng.standard_normal(y.size), 0, 1), y, subj,
                            2 * y, vid)
    val, test = scored(6, 0.0), scored(8, 0.1)
    rows = cross_domain._level_rows(_run(tmp_path, {}, None), 0, "student_kd", "A", "B", val, test)
    frame, video = rows
    thr = metrics.threshold_at_eer(val.scores, val.labels)
    assert frame["threshold"] == pytest.approx(thr)          # fixed on A's validation data, not on B's test
    assert frame["hter"] == pytest.approx(100 * metrics.hter(test.scores, test.labels, thr))
    assert frame["hter_ci_low"] <= frame["hter"] <= frame["hter_ci_high"] and frame["n_subjects"] == 8
    v_val, v_test = cross_domain.video_level(val), cross_domain.video_level(test)
    assert video["threshold"] == pytest.approx(metrics.threshold_at_eer(v_val.scores, v_val.labels))
    assert video["hter"] == pytest.approx(100 * metrics.hter(v_test.scores, v_test.labels, video["threshold"]))
    assert video["n_test"] == 16


def test_feature_cache_trunk_matches_the_teacher_and_a_miss_is_computed_not_dropped():
    """The fast trunk (BN folded, ONNX Runtime on the CPU) gives the teacher's own features and logits; a
    batch that was never cached (a cross-domain student's) gets logits computed now."""
    import torch

    from paperkit.models.teacher import teacher_net
    from paperkit.studies.teacher_training import FeatureCache

    torch.manual_seed(0)
    t = teacher_net(pretrained=False, input_size=64).eval()
    cache = FeatureCache(t, batch_size=4, workers=0)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(cache.trunk()(x), t.features(x), rtol=1e-3, atol=1e-4)
        logits = cache.teacher_logits(t.head, x)
        torch.testing.assert_close(logits, t(x), rtol=1e-3, atol=1e-4)
    assert cache.lookups == {"hit": 0, "miss": 1}


def test_students_are_built_from_the_registry_and_errors_list_what_exists() -> None:
    from paperkit import registry

    assert registry.STUDENTS.names() == ["pta_mobilenet_v2", "texture_net"]
    assert {"pta_mobilenet_v2", "mobilenet_v2_baseline", "texture_net", "teacher"} <= set(registry.MODELS.names())
    a, b = distillation.build_student("pta_mobilenet_v2", 3), distillation.build_student("pta_mobilenet_v2", 3)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))  # same seed
    with pytest.raises(KeyError, match=r"registered: \['pta_mobilenet_v2', 'texture_net'\]"):
        registry.STUDENTS.get("resnet")
