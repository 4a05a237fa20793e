"""Claims verdicts are computed from the tables: flipping a number flips the verdict."""
import pandas as pd

from paperkit import results
from paperkit.studies import claims

DS = "synthetic (paperkit synth v1, profile smoke, seed 0)"


def _t3(run_dir, hhh_acer):
    rows = []
    for cfg, acer in [("NoPTA", 5.0), ("HHH", hhh_acer), ("LHH", 4.0), ("HLH", 4.5), ("HHL", 4.2), ("LLL", 4.8),
                      ("BBB", 3.0)]:
        rows.append({"config": cfg, "dataset": DS, "accuracy": 100 - acer, "apcer": acer, "bpcer": acer,
                     "acer": acer})
    results.write_table(run_dir, "table3_quality", pd.DataFrame(rows))



def test_verdict_follows_the_numbers(tmp_path):
    _t3(tmp_path / "a", hhh_acer=4.0)
    _t3(tmp_path / "b", hhh_acer=6.0)
    a = claims.claims_table(tmp_path / "a").set_index("claim")
    b = claims.claims_table(tmp_path / "b").set_index("claim")
    text = "PTA-HHH beats No-PTA on every metric (Table 3)"
    assert a.loc[text, "verdict"] == "holds"
    assert b.loc[text, "verdict"] == "does not hold"
    assert a.loc["PTA-BBB (both branches averaged) has the best ACER (Table 3)", "verdict"] == "holds"
    assert (a["dataset"] == DS).all()


def test_missing_tables_are_not_measurable(tmp_path):
    df = claims.claims_table(tmp_path)
    assert len(df) >= 15
    assert (df["verdict"] == "not measurable here").all()
    assert df["ours"].str.contains("missing|not available").all()


def test_absolute_celeba_claim_is_not_judged_on_synthetic_data(tmp_path):
    results.write_table(tmp_path, "texture_deploy", pd.DataFrame([
        {"model": "texture", "format": f, "dataset": DS, "params_m": 0.3, "size_kb": s, "accuracy": 99.0,
         "apcer": 1, "bpcer": 1, "acer": a, "latency_ms": 1.0, "rel_latency": 0.2}
        for f, s, a in (("fp32", 1400, 1.0), ("int8", 480, 1.8))]))
    df = claims.claims_table(tmp_path).set_index("claim")
    assert df.loc["98% accuracy on the CelebA-Spoof benchmark", "verdict"] == "not measurable here"
    assert df.loc["The INT8 ONNX model is about 600 KB", "verdict"] == "holds"
    assert df.loc["INT8 quantization costs no accuracy", "verdict"] == "does not hold"  # 0.8 points > 0.5
