"""Complexity (seed 000 Table 4 convention), latency plumbing and ONNX export of a PTA configuration."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from paperkit import complexity
from paperkit.complexity import active_params, madds, measure_latency, table4
from paperkit.models.pta import pta_mobilenet_v2
from paperkit.papers import SEED000_TABLES_3_4

torch.set_num_threads(1)

# docs/design.md section 4: the paper's MAdds (HLH printed 96.50, counted 96.51) and our counted params.
EXPECTED = {
    "NoPTA": (2.226, 104.15), "HHH": (2.226, 104.15), "LHH": (2.172, 100.63), "HLH": (2.108, 96.51),
    "HHL": (1.906, 99.00), "LLL": (1.734, 87.84), "BBB": (2.719, 120.47),
}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return table4(128)


def test_table4_reproduces_paper(rows: list[dict]) -> None:
    assert [r["config"] for r in rows] == list(EXPECTED)
    for r in rows:
        params, mad = EXPECTED[r["config"]]
        assert abs(r["madds_m"] - mad) < 0.05, r
        assert abs(r["params_m"] - params) < 0.01, r
        # and against the numbers printed in the paper (params printed with 2 decimals; BBB 2.73)
        assert abs(r["madds_m"] - SEED000_TABLES_3_4[r["config"]]["madds_m"]) < 0.05, r
        tol = 0.015 if r["config"] == "BBB" else 0.006
        assert abs(r["params_m"] - SEED000_TABLES_3_4[r["config"]]["params_m"]) < tol, r


def test_active_params_follow_configuration() -> None:
    m = pta_mobilenet_v2()
    total = sum(p.numel() for p in m.parameters())
    n_b = active_params(m.configure("BBB"))
    assert n_b == total  # both branches run: every parameter is active
    n_h, n_l = active_params(m.configure("HHH")), active_params(m.configure("LLL"))
    light = sum(p.numel() for b in m.pta_blocks for p in b.light.parameters())
    heavy = sum(p.numel() for b in m.pta_blocks for p in b.heavy.parameters())
    assert n_h == total - light and n_l == total - heavy
    assert active_params(nn.Linear(3, 2)) == 8


def test_madds_convention_on_small_modules() -> None:
    # conv 1x1 3->4 on 2x2: 4*3*4 = 48; BN 2 per output element: 32; ReLU6 1 per element: 16.
    seq = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU6(inplace=True))
    assert madds(seq, input_size=2) * 1e6 == pytest.approx(48 + 32 + 16)
    # Linear with bias counts in*out + out; pooling and residual adds are free.
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    assert madds(head, input_size=4) * 1e6 == pytest.approx(3 * 2 + 2)


def test_madds_restores_training_mode() -> None:
    m = pta_mobilenet_v2().train().configure("LLL")
    madds(m, input_size=32)
    assert m.training and m.config == "LLL"


def test_cli_table4_json(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                         rows: list[dict]) -> None:
    monkeypatch.setattr(complexity, "table4", lambda input_size=128: rows)
    assert complexity.cli_table4(as_json=True) == 0
    out = json.loads(capsys.readouterr().out)
    assert [set(r) for r in out] == [{"config", "params_m", "madds_m"}] * 7
    assert complexity.cli_table4(as_json=False) == 0
    assert "2.73" in capsys.readouterr().out


def test_measure_latency_interleaves_rounds() -> None:
    calls: list[str] = []
    cands = {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}
    df = measure_latency(cands, rounds=3, iters=2, warmup=0, input_size=16)
    assert list(df["candidate"]) == ["a", "b", "c"]
    assert (df["median_ms"] >= 0).all() and set(df["backend"]) == {"callable"}
    # round-robin: every round runs each candidate once (rotating start), never all of one first
    assert calls == ["a"] * 2 + ["b"] * 2 + ["c"] * 2 + ["b"] * 2 + ["c"] * 2 + ["a"] * 2 \
        + ["c"] * 2 + ["a"] * 2 + ["b"] * 2
    with pytest.raises(ValueError):
        measure_latency({}, rounds=1, iters=1)
    with pytest.raises(ValueError, match="not an .onnx file"):
        measure_latency({"x": "model.pt"}, rounds=1, iters=1)


def test_round_medians_give_a_paired_ratio_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-round medians are kept and the ratio's interval comes from them, paired by round; a fake clock
    makes the times exact: b takes twice a's time, and round 2 is slow for both (drift cancels)."""
    clock = [0.0]
    state = {"round": 0}

    def tick(ms: float):
        def run() -> None:
            clock[0] += ms * (3.0 if state["round"] == 2 else 1.0) / 1e3
        return run

    calls = {"n": 0}

    def fake_counter() -> float:
        return clock[0]

    monkeypatch.setattr(complexity.time, "perf_counter", fake_counter)
    base = {"a": tick(1.0), "b": tick(2.0)}

    def counted(name):
        def run() -> None:
            base[name]()
            calls["n"] += 1
            state["round"] = calls["n"] // 8  # 2 candidates x 4 iters per round
        return run

    df = measure_latency({"a": counted("a"), "b": counted("b")}, rounds=4, iters=4, warmup=0, input_size=8)
    assert complexity.round_medians(df, "a") == pytest.approx([1.0, 1.0, 3.0, 1.0])
    assert complexity.round_medians(df, "missing") is None
    iv = complexity.latency_ratio_interval(df, "b", "a")
    assert iv.value == pytest.approx(2.0) and iv.low == pytest.approx(2.0) and iv.high == pytest.approx(2.0)
    assert iv.n == 4


def test_measure_latency_torch_module_restores_threads() -> None:
    before = torch.get_num_threads()
    df = measure_latency({"tiny": nn.Conv2d(3, 4, 3)}, rounds=1, iters=2, warmup=1, input_size=16, threads=1)
    assert df.loc[0, "backend"] == "torch" and df.loc[0, "threads"] == 1
    assert torch.get_num_threads() == before


def test_onnx_export_lll_matches_torch(tmp_path: Path) -> None:
    from paperkit.deploy import export_onnx, ort_session

    torch.manual_seed(0)
    m = pta_mobilenet_v2().eval().configure("LLL")
    path = export_onnx(m, tmp_path / "lll.onnx", input_size=64, dynamic_batch=False)
    sess = ort_session(path, threads=1)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = m(x).numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)
    # the LLL graph holds only the light branches: fewer weights than the HHH model runs
    import onnx
    n_init = sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)
    assert n_init < active_params(m.configure("HHH"))
    # measure_latency accepts the path and the session
    df = measure_latency({"path": path, "sess": sess}, rounds=1, iters=2, warmup=1, input_size=64)
    assert list(df["backend"]) == ["ort", "ort"]


def test_bench_latency_plumbing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """rel_latency per backend and LATENCY_EXTRAS, without exporting or timing real models."""
    import paperkit.deploy as deploy

    def fake_export(model: nn.Module, path: Path, input_size: int = 128, dynamic_batch: bool = True) -> Path:
        Path(path).write_text(getattr(model, "config", "NoPTA"))
        stamped[Path(path).stem] = float(model.state_dict()["features.0.1.running_mean"][0])
        return Path(path)

    def fake_measure(cands: dict, **kw: object) -> pd.DataFrame:
        def ms(name: str, cand: object) -> float:
            cfg = name.split("/")[0]
            base = {"NoPTA": 10.0, "HHH": 10.0, "LLL": 8.0}.get(cfg, 9.0)
            return base * (0.5 if name.endswith("/ort") else 1.0) if "/" in name else 2.0
        return pd.DataFrame([{"candidate": n, "backend": "ort" if n.endswith("/ort") or "/" not in n else "torch",
                              "median_ms": ms(n, c), "p10_ms": ms(n, c) / 2, "p90_ms": 0.0, "rounds": 1, "iters": 1,
                              "threads": 1} for n, c in cands.items()])

    stamped: dict[str, float] = {}
    monkeypatch.setattr(deploy, "export_onnx", fake_export)
    monkeypatch.setattr(complexity, "measure_latency", fake_measure)
    monkeypatch.setattr(complexity, "LATENCY_EXTRAS", [lambda: {"texture_int8": "x.onnx"}])
    lll_bn = {"features.0.1.running_mean": torch.full((32,), 7.0)}
    df = complexity.bench_latency("smoke", onnx_dir=tmp_path, bn_states={"LLL": lll_bn})
    assert sorted((tmp_path / "pta_LLL.onnx").read_text()) == sorted("LLL")
    assert stamped["pta_LLL"] == 7.0 and stamped["pta_HHH"] == 0.0  # each export carries its own statistics
    by = df.set_index("candidate")
    assert by.loc["LLL/torch", "rel_latency"] == pytest.approx(0.8)
    assert by.loc["LLL/ort", "rel_latency"] == pytest.approx(0.8)
    assert by.loc["LLL/ort", "rel_latency_p10"] == pytest.approx(0.8)
    assert by.loc["texture_int8", "rel_latency"] == pytest.approx(2.0 / 5.0)  # vs No-PTA ORT
    wide = complexity.latency_wide(df)
    assert list(wide["config"]) == list(EXPECTED)
    assert set(wide.columns) == {"config", "latency_ms_torch", "latency_ms_ort", "rel_latency",
                                  "rel_latency_rounds", "rel_latency_ci_low", "rel_latency_ci_high", "rel_latency_p10",
                                  "rel_latency_torch", "timing_rounds"}
    assert wide["rel_latency_ci_low"].isna().all()  # the fake measurement has no per-round times


def test_latency_export_torchscript_and_bad_exporter(tmp_path: Path) -> None:
    from paperkit.deploy import ort_session

    m = pta_mobilenet_v2(width_mult=0.35).eval().configure("BBB")
    path = complexity._export_for_latency(m, tmp_path / "bbb.onnx", 32, "torchscript")
    sess = ort_session(path)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0], m(x).numpy(),
                                   atol=1e-4, rtol=1e-3)
    with pytest.raises(ValueError, match="exporter"):
        complexity.bench_latency("smoke", exporter="tflite")
