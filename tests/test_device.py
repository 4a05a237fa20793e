"""Device, precision and worker choice (paperkit.device). No GPU here: CUDA is simulated where only the choice
is under test, and the training/evaluation paths are run for real on the CPU."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from paperkit import device as devices
from paperkit import train


def test_auto_is_cpu_without_cuda(monkeypatch):
    monkeypatch.delenv(devices.DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.pick() == torch.device("cpu")
    assert devices.pick("auto") == torch.device("cpu")
    assert devices.backend(devices.pick()) == "gloo"
    assert devices.amp_dtype(torch.device("cpu")) is None


def test_auto_takes_cuda_of_the_local_rank(monkeypatch):
    monkeypatch.delenv(devices.DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    dev = devices.pick()
    assert dev == torch.device("cuda", 3)
    assert devices.backend(dev) == "nccl"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert devices.amp_dtype(dev) is torch.bfloat16
    monkeypatch.setenv(devices.AMP_ENV, "0")
    assert devices.amp_dtype(dev) is None


def test_env_override_and_clear_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(devices.DEVICE_ENV, "cpu")
    assert devices.pick() == torch.device("cpu")
    monkeypatch.setenv(devices.DEVICE_ENV, "cuda")
    with pytest.raises(RuntimeError, match="sees no CUDA device"):
        devices.pick()
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        devices.pick("tpu")


def test_workers_follow_the_core_count():
    assert devices.default_workers(1) == 0
    assert devices.default_workers(2) == 1
    assert devices.default_workers(16) == devices.MAX_WORKERS
    assert devices.workers(3) == 3
    assert devices.workers(None) == devices.default_workers()
    with pytest.raises(ValueError, match="num_workers"):
        devices.workers(-1)


def test_on_moves_and_restores(monkeypatch):
    model = nn.Linear(2, 2)
    with devices.on(model, torch.device("cpu")) as dev:
        assert dev == torch.device("cpu")
    assert devices.model_device(model) == torch.device("cpu")
    assert devices.model_device(nn.ReLU()) == torch.device("cpu")   # no parameters, no buffers


def test_fit_runs_on_an_explicit_device_and_returns_a_cpu_model(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    cues = torch.zeros(16, 1, dtype=torch.long)
    ds = torch.utils.data.TensorDataset(x, y, cues)
    loaders = {"train": torch.utils.data.DataLoader(ds, batch_size=8),
               "val": torch.utils.data.DataLoader(ds, batch_size=8)}
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    hist = train.fit(model, loaders, run_dir=tmp_path, name="dev", epochs=1, lr=1e-2, seed=0,
                     channels_last=False, progress=False, device="cpu")
    assert len(hist.rows) == 1
    assert devices.model_device(model) == torch.device("cpu")
    s, labels = train.predict_scores(model, loaders["val"], channels_last=False)
    assert s.shape == (16,) and labels.tolist() == y.tolist()
