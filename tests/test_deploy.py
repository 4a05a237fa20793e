"""paperkit.deploy: ONNX export (one file, dynamic batch, no Fourier head), parity, INT8 QDQ quantization on
real crops, ONNX scoring and interleaved latency rounds."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from conftest import build_tiny_celeba, clean_tree
from paperkit import data, deploy
from paperkit.models.texture import texture_net
from paperkit.profiles import get_profile


@pytest.fixture(scope="module")
def loaders(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = build_tiny_celeba(tmp_path_factory.mktemp("celeba"), clean_tree())
    prof = get_profile("smoke", input_size=128, batch_size=8, num_workers=0)
    return data.make_loaders(root, prof, seed=0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, loaders: dict) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    m = texture_net()
    # Non-trivial BN statistics, estimated on real training crops as training would leave them. (Random
    # running statistics let the signal die out by the last stage: every face then gets the same logits
    # and an INT8-vs-FP32 comparison measures only a constant offset.)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None                 # cumulative average over the batches below
    m.train()
    with torch.no_grad():
        for i, (x, _, _) in enumerate(loaders["train"]):
            m(x)
            if i == 3:
                break
    torch.nn.init.normal_(m.classifier[-1].weight, 0, 1.0)
    m.eval()
    out = tmp_path_factory.mktemp("onnx") / "models" / "texture_fp32.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deploy.export_onnx(m, out, input_size=128)
    return m, out


def test_single_file_dynamic_batch(exported) -> None:
    m, path = exported
    assert path.is_file() and not list(path.parent.glob("*.data"))
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value            # symbolic batch axis
    sess = deploy.ort_session(path)
    assert deploy.input_size_of(sess) == 128
    for n in (1, 3):
        assert deploy.run_logits(sess, np.zeros((n, 3, 128, 128), np.float32)).shape == (n, 2)
    # no exporter stack traces (local paths) left in the file
    assert not any(n.metadata_props for n in model.graph.node)


def test_fourier_head_absent_from_graph(exported) -> None:
    m, path = exported
    deploy.assert_head_absent(path, m.fourier_head)              # names and weight values
    model = onnx.load(str(path))
    n_conv = sum(1 for n in model.graph.node if n.op_type == "Conv")
    body_convs = sum(1 for name, mod in m.named_modules()
                     if isinstance(mod, torch.nn.Conv2d) and not name.startswith("fourier_head"))
    assert n_conv == body_convs
    # the checker itself catches a head that sneaks in
    head_w = m.fourier_head[0][0].weight.detach().numpy()
    model.graph.initializer.append(onnx.numpy_helper.from_array(head_w, "sneaky"))
    bad = path.with_name("bad.onnx")
    onnx.save(model, str(bad))
    with pytest.raises(AssertionError, match="fourier_head"):
        deploy.assert_head_absent(bad, m.fourier_head)


def test_parity_on_real_crops(exported, loaders) -> None:
    m, path = exported
    x, y, _ = next(iter(loaders["test"]))
    diff = deploy.parity(m, path, x)
    print(f"ONNX parity (max abs logit diff, {len(x)} real crops): {diff:.2e}")
    assert diff < 1e-4
    scores, labels = deploy.onnx_scores(deploy.ort_session(path), loaders["test"])
    with torch.no_grad():
        ref = torch.softmax(m(x), 1)[:, 1].numpy()
    assert np.allclose(scores[: len(x)], ref, atol=1e-5)
    assert len(labels) == len(loaders["test"].dataset) and set(labels) <= {0, 1}


def test_int8_size_and_agreement(exported, loaders, tmp_path: Path) -> None:
    m, path = exported
    q = deploy.quantize_int8(path, tmp_path / "models" / "texture_int8.onnx", loaders["train"], max_images=64)
    assert "int8" in q.name
    kb = deploy.file_size_kb(q)
    print(f"INT8 size {kb:.0f} KB (FP32 {deploy.file_size_kb(path):.0f} KB)")
    assert kb <= 600
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops       # QDQ format
    # per-channel weights: conv weight scales are vectors
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(q)).graph.initializer}
    assert any(k.endswith("weight_scale") and v.ndim == 1 and v.size > 1 for k, v in inits.items())
    # an untrained net has no trained margin to preserve; check INT8 logits track FP32 logits on real crops
    x = next(iter(loaders["test"]))[0]
    l8 = deploy.run_logits(deploy.ort_session(q), x)
    l32 = deploy.run_logits(deploy.ort_session(path), x)
    d8, d32 = l8[:, 1] - l8[:, 0], l32[:, 1] - l32[:, 0]
    print(f"INT8 vs FP32 logit-margin corr {np.corrcoef(d8, d32)[0, 1]:.4f}, max abs diff {np.abs(d8 - d32).max():.3f}")
    assert d32.std() > 0.1                                      # the faces really get different margins
    # INT8 ranks the faces as FP32 does (percentile calibration of this net gives ~0.81 and fails this).
    # No absolute bound: on this random net uint8 activations shift the margins systematically (relative
    # RMS error ~0.6, ~0.26 with int8 activations); the trained model's agreement is in texture_int8_agreement.
    assert np.corrcoef(d8, d32)[0, 1] > 0.9


def test_quantize_refuses_empty_calibration(exported, tmp_path: Path) -> None:
    _, path = exported
    with pytest.raises(ValueError, match="no images"):
        deploy.quantize_int8(path, tmp_path / "x_int8.onnx", [])
    with pytest.raises(FileNotFoundError):
        deploy.quantize_int8(tmp_path / "missing.onnx", tmp_path / "y_int8.onnx", [])


def test_interleaved_latency_rounds(exported, tmp_path: Path) -> None:
    """Per-round medians of every model, rounds rotating the starting model (what the ratio CI resamples)."""
    _, path = exported
    sess = deploy.ort_session(path)
    df = deploy.interleaved_latency({"a": path, "b": sess}, rounds=3, iters=2, warmup=1, input_size=128)
    assert list(df.columns) == ["candidate", "round", "median_ms", "iters", "threads"]
    assert len(df) == 6 and set(df["candidate"]) == {"a", "b"}
    assert df.groupby("candidate")["round"].apply(list).to_dict() == {"a": [0, 1, 2], "b": [0, 1, 2]}
    assert list(df["candidate"].iloc[:4]) == ["a", "b", "b", "a"]   # round 1 starts with the second model
    assert (df["median_ms"] > 0).all()
    med = deploy.round_medians(df)                                   # the SWAP table's paired view
    assert list(med) == ["a", "b"] and med["a"] == df[df.candidate == "a"]["median_ms"].tolist()
    with pytest.raises(ValueError, match="rounds and iters"):
        deploy.interleaved_latency({"a": path}, rounds=0, iters=1)
    with pytest.raises(FileNotFoundError):
        deploy.interleaved_latency({"x": tmp_path / "missing.onnx"}, rounds=1, iters=1)
