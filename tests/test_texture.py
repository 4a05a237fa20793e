"""Texture model (seed 002) and the Fourier target/loss: shapes, budget, known spectra."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from paperkit import fourier
from paperkit.losses import fourier_loss_fn
from paperkit.models.texture import TextureNet, texture_net
from paperkit.registry import MODELS


def test_registered_with_metadata_and_budget() -> None:
    assert "texture_net" in MODELS
    m = MODELS.get("texture_net")(num_classes=2)
    assert isinstance(m, TextureNet)
    assert texture_net.metadata["max_params"] == 500_000
    # every parameter, head included, within the 0.5 M budget
    assert sum(p.numel() for p in m.parameters()) <= 500_000
    assert m.deploy_parameters() < sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("size", [64, 96, 128])
def test_shapes(size: int) -> None:
    m = texture_net().eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits = m(x)
        logits2, spec = m.forward_with_spectrum(x)
    assert logits.shape == (2, 2)
    assert torch.allclose(logits, logits2)          # the head does not change the classifier path
    assert spec.shape == (2, 1, *m.spectrum_size(size)) == (2, 1, size // 8, size // 8)
    assert spec.min() >= 0 and spec.max() <= 1


def test_forward_does_not_run_the_head() -> None:
    m = texture_net().eval()
    called = []
    m.fourier_head.register_forward_hook(lambda *a: called.append(1))
    with torch.no_grad():
        m(torch.randn(1, 3, 64, 64))
    assert not called


def _normalise(rgb01: torch.Tensor) -> torch.Tensor:
    return (rgb01 - 0.5) / 0.5   # paperkit.data.MEAN/STD


def test_cosine_grating_peaks_at_its_frequency() -> None:
    n, k = 64, 6                  # k cycles across the width -> peaks at (n/2, n/2 +- k)
    xx = torch.arange(n).float()
    img = 0.5 + 0.4 * torch.cos(2 * math.pi * k * xx / n)
    rgb = img.view(1, 1, 1, n).expand(1, 3, n, n)
    spec = fourier.spectrum_target(_normalise(rgb), (n, n))[0, 0]
    assert spec.shape == (n, n)
    assert spec.min() == 0 and spec.max() == pytest.approx(1.0)
    c = n // 2
    assert spec[c, c] == pytest.approx(1.0)          # DC is the largest term of a positive image
    off = spec.clone()
    off[c, c] = 0
    top2 = {tuple(divmod(int(i), n)) for i in off.flatten().topk(2).indices}
    assert top2 == {(c, c - k), (c, c + k)}
    # vertical grating -> peaks move to the vertical axis
    specv = fourier.spectrum_target(_normalise(rgb.transpose(2, 3)), (n, n))[0, 0]
    specv[c, c] = 0
    assert {tuple(divmod(int(i), n)) for i in specv.flatten().topk(2).indices} == {(c - k, c), (c + k, c)}


def test_constant_image_has_only_dc_at_centre() -> None:
    rgb = torch.full((2, 3, 32, 32), 0.7)
    spec = fourier.spectrum_target(_normalise(rgb), (32, 32))
    for s in spec[:, 0]:
        assert s[16, 16] == 1.0
        assert s.sum() == pytest.approx(1.0)
    # area resize keeps the DC bump centred
    small = fourier.spectrum_target(_normalise(rgb), (4, 4))[0, 0]
    assert small.shape == (4, 4)
    assert small.argmax().item() == 2 * 4 + 2


def test_gray_uses_rgb_channel_order() -> None:
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    blue = torch.zeros(1, 3, 2, 2)
    blue[:, 2] = 1.0
    assert fourier.to_gray(red).flatten()[0] == pytest.approx(0.299)
    assert fourier.to_gray(blue).flatten()[0] == pytest.approx(0.114)
    # end to end: a red grating on gray has 0.299/0.114 times the AC energy of a blue one
    n, k = 32, 4
    g = torch.cos(2 * math.pi * k * torch.arange(n).float() / n).view(1, n).expand(n, n)
    def amp(ch: int) -> float:
        rgb = torch.full((1, 3, n, n), 0.5)
        rgb[0, ch] += 0.3 * g
        return torch.fft.fft2(fourier.to_gray(fourier.unnormalise(_normalise(rgb)))).abs()[0, 0, 0, k].item()
    assert amp(0) / amp(2) == pytest.approx(0.299 / 0.114, rel=1e-4)


def test_target_follows_the_augmented_batch() -> None:
    """The target is computed from the batch given (what the classifier sees), not from elsewhere."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    flipped = torch.flip(x, dims=[3])
    a = fourier.spectrum_target(x, (32, 32))
    b = fourier.spectrum_target(flipped, (32, 32))
    assert not torch.allclose(a, b)
    # channels_last input (the training loop's layout) gives the same target
    c = fourier.spectrum_target(x.contiguous(memory_format=torch.channels_last), (32, 32))
    assert torch.allclose(a, c)


def test_fourier_loss_trains_the_head() -> None:
    torch.manual_seed(0)
    m = texture_net().train()
    x = torch.randn(4, 3, 64, 64)
    y = torch.tensor([0, 1, 0, 1])
    loss_fn = fourier_loss_fn(weight=2.0)
    loss, logits = loss_fn(m, x, y, torch.full((4, 7), -1))
    assert logits.shape == (4, 2) and loss.dim() == 0
    loss.backward()
    assert m.fourier_head[0][0].weight.grad is not None
    assert m.fourier_head[0][0].weight.grad.abs().sum() > 0
    ce_only, _ = fourier_loss_fn(weight=0.0)(m, x, y, None)
    assert loss.item() > ce_only.item()
    with pytest.raises(ValueError):
        fourier_loss_fn(-1.0)



# ---------------------------------------------------------------------------------------------- study tables

def _fake_scored(n_subj: int, per: int, rng: "np.random.Generator", shift: float = 0.0):
    import numpy as np

    from paperkit import stats

    subj = np.repeat([f"s{i:02d}" for i in range(n_subj)], per)
    y = np.tile([0, 1], n_subj * per // 2)
    types = np.where(y == 1, rng.choice([1, 7, 9], size=y.size), 0)
    s = np.clip(0.5 + (y - 0.5) * 0.5 + rng.normal(0, 0.25, y.size) + shift, 0, 1)
    return stats.Scored(s, y, subj, types, np.array([f"v{i}" for i in range(y.size)]))


@pytest.fixture(scope="module")
def fake_study(tmp_path_factory: pytest.TempPathFactory):
    """A Study as `deploy` leaves it (scores on val/test, files, latency rounds) without training anything."""
    import numpy as np
    import pandas as pd

    from paperkit.profiles import get_profile
    from paperkit.studies import fourier_texture as tx
    from paperkit.studies import texture_deploy as td

    run = tmp_path_factory.mktemp("run")
    prof = get_profile("smoke")
    st = tx.Study(notebook=tx.NOTEBOOK, profile=prof, root=run, run_dir=run, seeds=(0,), dataset="synthetic (test)")
    rng = np.random.default_rng(1)
    rounds = [{"candidate": td.BASELINE, "round": r, "median_ms": 10 + rng.normal(0, 0.3), "iters": 5,
               "threads": 1} for r in range(6)]
    for key in tx.MODELS:
        st.models[(key, 0)] = texture_net()
        for j, fmt in enumerate(td.FORMATS):
            p = td.onnx_path(st, key, fmt, 0)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"x" * (1000 + j))
            st.onnx[(key, fmt, 0)] = p
            st.info[f"{key}/s0/parity"] = 1e-6
            r2 = np.random.default_rng(7)   # same images (and labels) for every model: pairing is possible
            st.scored[(key, fmt, 0, "val")] = _fake_scored(8, 10, r2, 0.05 * j)
            st.scored[(key, fmt, 0, "test")] = _fake_scored(30, 10, r2, 0.05 * j)
            rounds += [{"candidate": td.candidate(key, fmt, 0), "round": r, "median_ms": 3 + j + rng.normal(0, 0.2),
                        "iters": 5, "threads": 1} for r in range(6)]
    st.tables["latency_rounds"] = pd.DataFrame(rounds)
    lat = td.latency_table(st.tables["latency_rounds"], n_boot=500)
    lat["model"], lat["format"], lat["seed"] = "", "", 0
    st.tables["latency"] = lat
    td.deploy_table(st)
    return st


def test_deploy_table_has_both_operating_points_and_bracketing_cis(fake_study) -> None:
    import numpy as np

    d = fake_study.tables["deploy"]
    assert set(d["operating_point"]) == {"fixed_0.5", "val_eer"}
    assert len(d) == 2 * 2 * 2                                    # models x formats x operating points
    assert (d.loc[d["operating_point"] == "fixed_0.5", "threshold"] == 0.5).all()
    eer_thr = d.loc[d["operating_point"] == "val_eer", "threshold"]
    assert eer_thr.between(0, 1).all() and not np.allclose(eer_thr, 0.5)
    for m in ("accuracy", "apcer", "bpcer", "acer", "apcer_worst_type", "acer_iso", "latency_ms", "rel_latency"):
        lo, hi = d[f"{m}_ci_low"], d[f"{m}_ci_high"]
        assert lo.notna().all() and (lo < hi).all(), m           # real intervals, not degenerate
        assert ((lo <= d[m]) & (d[m] <= hi)).all(), m            # they bracket the point estimate
    assert (d["apcer_worst_type"] >= d["apcer"]).all()            # worst type is never below the pooled rate
    assert set(d["apcer_worst_type_code"]) <= {1, 7, 9}
    for c in ("acer_iso", "tpr_at_fpr_1e-2", "n_images", "n_subjects", "seed", "dataset", "size_kb"):
        assert c in d, c
    assert (d["n_subjects"] == 30).all() and (d["n_images"] == 300).all()
    # the claims take the first row per model/format: it must be the fixed-threshold one
    first = d.groupby(["model", "format"], sort=False).head(1)
    assert (first["operating_point"] == "fixed_0.5").all()


def test_predictions_cover_every_model_format_split(fake_study) -> None:
    from paperkit import results

    p = results.read_predictions(fake_study.run_dir, "texture")
    assert p is not None
    assert set(zip(p["model"], p["fmt"], p["split"])) == {(m, f, s) for m in ("texture", "texture_no_fourier")
                                                         for f in ("fp32", "int8") for s in ("val", "test")}
    assert (p["config"] == "").all() and (p["bn"] == "").all() and (p["seed"] == 0).all()
    assert len(p) == 4 * (80 + 300)


def test_latency_table_intervals_and_ratio(fake_study) -> None:
    from paperkit.studies import texture_deploy as td

    lat = fake_study.tables["latency"].set_index("candidate")
    assert lat.loc[td.BASELINE, "rel_latency"] == pytest.approx(1.0)
    r = lat.loc[td.candidate("texture", "int8", 0)]
    # ~4 ms vs ~10 ms: the paired ratio interval sits around 0.4 and excludes 1
    assert 0.3 < r["rel_latency_ci_low"] <= r["rel_latency"] <= r["rel_latency_ci_high"] < 0.6
    assert r["latency_ms_ci_low"] <= r["latency_ms"] <= r["latency_ms_ci_high"]
    assert r["latency_rounds"] == 6


def test_agreement_and_summary_carry_paired_intervals(fake_study) -> None:
    from paperkit.studies import fourier_texture as tx
    from paperkit.studies import texture_deploy as td

    ag = fake_study.tables["agreement"]
    assert set(ag["model"]) == set(tx.MODELS)
    assert ((ag["acer_delta_ci_low"] <= ag["acer_delta"]) & (ag["acer_delta"] <= ag["acer_delta_ci_high"])).all()
    s = td.summary(fake_study).set_index("quantity")
    row = s.loc["ablation: ACER with - without, INT8 (points, paired)"]
    assert row["ci_low"] <= row["ours"] <= row["ci_high"]
    assert s.loc["INT8 latency (ms, batch 1, 1 thread)", "target"] == "< 20"


def test_across_seeds_rows_when_more_than_one_seed(fake_study) -> None:
    import pandas as pd

    from paperkit.studies import fourier_texture as tx

    d = fake_study.tables["deploy"]
    two = pd.concat([d, d.assign(seed=1, acer=d["acer"] + 1.0)], ignore_index=True)
    out = tx._across_seeds(two, ["model", "format", "operating_point"], ["acer"])
    mean = out[(out["seed"] == "mean") & (out["model"] == "texture") & (out["format"] == "int8")
               & (out["operating_point"] == "fixed_0.5")]
    base = d[(d["model"] == "texture") & (d["format"] == "int8") & (d["operating_point"] == "fixed_0.5")]
    assert float(mean["acer"].iloc[0]) == pytest.approx(float(base["acer"].iloc[0]) + 0.5)
    assert (out["seed"] == "std").sum() == 8


def test_checkpoint_and_file_names_include_the_seed(fake_study) -> None:
    from paperkit.studies import fourier_texture as tx
    from paperkit.studies import texture_deploy as td

    assert tx.checkpoint_name("texture", "smoke", 2) == "02_texture_smoke_s2"
    assert td.onnx_path(fake_study, "texture", "int8", 0).relative_to(fake_study.run_dir).as_posix() \
        == "models/texture_int8.onnx"                              # the first seed's Fourier model ships
    assert "s1" in td.onnx_path(fake_study, "texture", "int8", 1).name
    assert "checkpoints" in td.onnx_path(fake_study, "texture_no_fourier", "int8", 0).parts


def test_across_seeds_in_deploy_table_skips_interval_bounds(fake_study, monkeypatch) -> None:
    """With two seeds the deploy table gains mean/std rows of the point metrics, not of CI bounds."""
    from paperkit.studies import fourier_texture as tx
    from paperkit.studies import texture_deploy as td

    st = fake_study
    monkeypatch.setattr(st, "seeds", (0, 1))
    for k in [k for k in st.scored if k[2] == 0]:
        monkeypatch.setitem(st.scored, (k[0], k[1], 1, k[3]), st.scored[k])
    for k in [k for k in st.onnx if k[2] == 0]:
        monkeypatch.setitem(st.onnx, (k[0], k[1], 1), st.onnx[k])
    for m in tx.MODELS:
        monkeypatch.setitem(st.models, (m, 1), st.models[(m, 0)])
        monkeypatch.setitem(st.info, f"{m}/s1/parity", 1e-6)
    lat = st.tables["latency"]
    extra = lat[lat["candidate"] != td.BASELINE].assign(candidate=lambda d: d["candidate"].str.replace("/s0", "/s1"))
    monkeypatch.setitem(st.tables, "latency", pd.concat([lat, extra], ignore_index=True))
    monkeypatch.setattr(td.results, "write_table", lambda *a, **k: st.run_dir / "x.csv")
    monkeypatch.setattr(td.results, "write_predictions", lambda *a, **k: st.run_dir / "x.csv.gz")
    for name in ("deploy", "agreement"):                # restored after the test (module-scoped study)
        monkeypatch.setitem(st.tables, name, st.tables[name])
    d = td.deploy_table(st)
    agg = d[d["seed"].isin(["mean", "std"])]
    assert len(agg) == 2 * 8
    assert agg["acer"].notna().all() and agg["acer_ci_low"].isna().all()
    assert (agg.loc[agg["seed"] == "std", "acer"] == 0).all()        # identical seeds -> zero spread
