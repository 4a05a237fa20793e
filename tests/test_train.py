"""The shared training loop: best-by-validation, atomic resumable checkpoints, safe loading, DDP."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from paperkit import train
from tiny_train import TinyDataset, TinyNet, loaders

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{HERE.parent}", "OMP_NUM_THREADS": "1"}


def _fit(run_dir, epochs=3, model=None, **kw):
    torch.set_num_threads(1)
    train.seed_everything(0)
    return train.fit(model or TinyNet(), loaders(), run_dir=run_dir, name="tiny", epochs=epochs, lr=1e-2,
                     seed=0, progress=False, channels_last=False, **kw)


def test_fit_learns_and_keeps_best(tmp_path):
    model = TinyNet()
    hist = _fit(tmp_path, epochs=4, model=model)
    assert [r["epoch"] for r in hist.rows] == [1, 2, 3, 4]
    assert hist.best_val_acer == min(r["val_acer"] for r in hist.rows)
    assert hist.best_val_acer < 0.25  # the tiny task is learnable
    assert (tmp_path / "checkpoints/tiny/last.pt").is_file() and (tmp_path / "checkpoints/tiny/best.pt").is_file()
    # the model ends with its best epoch's weights
    reloaded = train.load_weights(TinyNet(), tmp_path / "checkpoints/tiny/best.pt")
    for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()):
        assert torch.equal(a, b)


def test_same_seed_same_history(tmp_path):
    h1 = _fit(tmp_path / "a")
    h2 = _fit(tmp_path / "b")
    drop = lambda rows: [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]  # noqa: E731
    assert drop(h1.rows) == drop(h2.rows)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    """Kill a real training process mid-run with SIGKILL, start it again: it resumes and ends identical."""
    killed = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, str(HERE / "tiny_train.py"), str(killed), "4", "0.05"], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = killed / "checkpoints/tiny/last.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if last.is_file() and train.load_checkpoint(last)["epoch"] >= 0:
            break
        time.sleep(0.05)
    else:
        p.kill()
        pytest.fail("no checkpoint appeared: " + (p.stdout.read() if p.stdout else ""))
    p.send_signal(signal.SIGKILL)
    p.wait()
    done_before = train.load_checkpoint(last)["epoch"] + 1
    assert done_before < 4, "the run finished before it could be killed; slow it down"
    out = subprocess.run([sys.executable, str(HERE / "tiny_train.py"), str(killed), "4"], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"RESUMED_FROM={done_before} EPOCHS=4 WORLD=1" in out.stdout
    ref = subprocess.run([sys.executable, str(HERE / "tiny_train.py"), str(tmp_path / "ref"), "4"], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    a = train.load_checkpoint(last)
    b = train.load_checkpoint(tmp_path / "ref/checkpoints/tiny/last.pt")
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-6), k
    assert [r["val_acer"] for r in a["history"]] == [r["val_acer"] for r in b["history"]]


def test_checkpoint_of_other_architecture_is_refused(tmp_path):
    _fit(tmp_path, epochs=1)
    with pytest.raises(train.CheckpointError, match="does not fit"):
        _fit(tmp_path, epochs=2, model=TinyNet(width=5))
    with pytest.raises(train.CheckpointError, match="does not fit"):
        train.load_weights(TinyNet(width=6), tmp_path / "checkpoints/tiny/best.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "pickle"])
def test_tampered_or_truncated_checkpoint_is_refused(tmp_path, content):
    p = tmp_path / "checkpoints/tiny/last.pt"
    p.parent.mkdir(parents=True)
    if content == "pickle":
        torch.save({"model": _Evil()}, p)  # would run code under weights_only=False
    else:
        p.write_bytes(content)
    with pytest.raises(train.CheckpointError, match="cannot be loaded safely"):
        _fit(tmp_path, epochs=1)


def test_missing_checkpoint_names_the_fix(tmp_path):
    with pytest.raises(train.CheckpointError, match="train the model first"):
        train.load_weights(TinyNet(), tmp_path / "nope.pt")


def test_bad_epochs():
    with pytest.raises(ValueError, match="epochs"):
        train.fit(TinyNet(), loaders(), run_dir="/tmp/x", name="t", epochs=0, lr=1e-3, seed=0)


def test_ddp_two_cpu_processes(tmp_path):
    """The same loop under torchrun with 2 gloo processes: each rank sees half the data, rank 0 checkpoints."""
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "--standalone", str(HERE / "tiny_train.py"), str(tmp_path), "2"],
                         env=ENV, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "RESUMED_FROM=0 EPOCHS=2 WORLD=2" in out.stdout
    ck = train.load_checkpoint(tmp_path / "checkpoints/tiny/last.pt")
    assert ck["epoch"] == 1 and len(ck["history"]) == 2


def test_torchrun_entry_point_trains_pta_on_a_celeba_tree(tmp_path, tiny_celeba_builder):
    """`torchrun -m paperkit.train`: the real reader, PTA sampling and DDP (unused branches) together."""
    root = tiny_celeba_builder(tmp_path / "celeba", train_subjects=10, per_subject=8)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "paperkit.train", "--model", "pta_mobilenet_v2", "--profile", "smoke",
                          "--data-root", str(root), "--run-dir", str(tmp_path / "run"), "--epochs", "1"],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(world size 2)" in out.stdout
    ck = train.load_checkpoint(tmp_path / "run/checkpoints/pta_mobilenet_v2/last.pt")
    assert ck["signature"]["arch"] == "PTAMobileNetV2" and len(ck["history"]) == 1


def test_checkpoint_from_other_data_is_set_aside_not_resumed(tmp_path, capsys):
    _fit(tmp_path, epochs=2)
    torch.set_num_threads(1)
    train.seed_everything(0)
    other = loaders()
    other["train"] = torch.utils.data.DataLoader(TinyDataset(48, 5), batch_size=8, shuffle=True,
                                                 generator=torch.Generator().manual_seed(0))
    hist = train.fit(TinyNet(), other, run_dir=tmp_path, name="tiny", epochs=2, lr=1e-2, seed=0, progress=False,
                     channels_last=False)
    assert hist.resumed_from == 0 and len(hist.rows) == 2
    assert "training from scratch" in capsys.readouterr().out
    assert (tmp_path / "checkpoints/tiny.stale/last.pt").is_file()


def test_short_run_resumed_to_full_budget_equals_full_run(tmp_path):
    """What the distillation study's tau/alpha selection relies on: a 1-epoch run continued to 3 epochs under
    the same checkpoint name ends with the weights and history of a 3-epoch run from scratch."""
    _fit(tmp_path / "short", epochs=1)
    h = _fit(tmp_path / "short", epochs=3)
    assert h.resumed_from == 1
    ref = _fit(tmp_path / "full", epochs=3)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]  # noqa: E731
    assert drop(h.rows) == drop(ref.rows)
    a = train.load_checkpoint(tmp_path / "short/checkpoints/tiny/last.pt")
    b = train.load_checkpoint(tmp_path / "full/checkpoints/tiny/last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["best_epoch"] == b["best_epoch"]


def test_cosine_schedule_resumes_exactly_and_decays(tmp_path):
    """The cosine rate depends on the step index alone: 1 epoch + resume to 3 equals 3 straight epochs
    when both lay the schedule over 3 epochs, and the rate ends near 0 (a constant run differs)."""
    kw = dict(lr_schedule="cosine", schedule_epochs=3)
    _fit(tmp_path / "short", epochs=1, **kw)
    h = _fit(tmp_path / "short", epochs=3, **kw)
    ref = _fit(tmp_path / "full", epochs=3, **kw)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]  # noqa: E731
    assert h.resumed_from == 1 and drop(h.rows) == drop(ref.rows)
    ck = train.load_checkpoint(tmp_path / "full/checkpoints/tiny/last.pt")
    assert ck["optimizer"]["param_groups"][0]["lr"] < 1e-2 * 1e-2
    const = _fit(tmp_path / "const", epochs=3)
    assert drop(const.rows) != drop(ref.rows)
    with pytest.raises(ValueError, match="lr_schedule"):
        _fit(tmp_path / "bad", epochs=1, lr_schedule="step")


class _HalfUnlabelled(TinyDataset):
    """TinyDataset whose odd indices carry the 'withheld' label -1 (the distillation study's pool)."""

    def __getitem__(self, i: int):
        x, y, cues = super().__getitem__(i)
        return x, (-1 if i % 2 else y), cues


def test_fit_trains_on_partly_unlabelled_batches_with_a_kd_loss(tmp_path):
    from paperkit.losses import kd_loss_fn
    torch.set_num_threads(1)
    teacher = TinyNet()
    _fit(tmp_path / "teacher", epochs=3, model=teacher)
    lds = loaders()
    lds["train"] = torch.utils.data.DataLoader(_HalfUnlabelled(64, 0), batch_size=8, shuffle=True,
                                               generator=torch.Generator().manual_seed(0))
    train.seed_everything(0)
    hist = train.fit(TinyNet(), lds, run_dir=tmp_path, name="semi", epochs=2, lr=1e-2, seed=0, progress=False,
                     channels_last=False, loss_fn=kd_loss_fn(teacher, "weighted", tau=2.0, alpha=0.5))
    assert len(hist.rows) == 2 and all(r["train_loss"] > 0 for r in hist.rows)
    assert all(0 <= r["val_acer"] <= 1 for r in hist.rows)          # validation keeps its real labels
    # the default loss has no notion of a withheld label: it must not silently train on -1
    with pytest.raises((IndexError, RuntimeError)):
        train.fit(TinyNet(), lds, run_dir=tmp_path, name="plain", epochs=1, lr=1e-2, seed=0, progress=False,
                  channels_last=False)


def test_val_interval_brackets_the_epochs_val_acer_and_needs_subjects():
    """Figure 2's per-epoch interval: a subject bootstrap of the validation ACER, as a fraction like val_acer."""
    from types import SimpleNamespace

    import numpy as np

    from paperkit import metrics
    rng = np.random.default_rng(0)
    n = 240
    labels = np.tile([0, 1, 1], n // 3)
    scores = np.clip(labels * 0.35 + rng.random(n) * 0.65, 0, 1)
    samples = [SimpleNamespace(subject=f"s{i // 8}", spoof_type=int(y) * (1 + i % 3), video="")
               for i, y in enumerate(labels)]
    out = train.val_interval(scores, labels, SimpleNamespace(samples=samples), seed=0, n_boot=400)
    acer = metrics.evaluate(scores, labels, 0.5)["acer"]
    assert 0 < acer < 0.5
    assert out["val_acer_ci_low"] <= acer <= out["val_acer_ci_high"] < 1
    assert out["val_acer_ci_high"] - out["val_acer_ci_low"] > 0.01
    assert train.val_interval(scores, labels, object()) == {}   # no subjects: no interval, no crash
