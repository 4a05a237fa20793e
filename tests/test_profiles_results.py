import dataclasses
import json

import pandas as pd
import pytest

from paperkit import profiles, results


def test_profiles_exist_and_are_frozen():
    for name in ("smoke", "default", "paper"):
        p = profiles.get_profile(name)
        assert p.name == name
        with pytest.raises(dataclasses.FrozenInstanceError):
            p.batch_size = 1  # type: ignore[misc]
    assert profiles.get_profile("paper").pta_lr == 1e-4 and profiles.get_profile("paper").pta_epochs == 20


def test_paper_profile_uses_the_seeds_hyperparameters_and_three_seeds():
    p = profiles.get_profile("paper")
    assert (p.batch_size, p.input_size, p.teacher_lr, p.teacher_epochs) == (32, 128, 1e-6, 3)
    assert p.seeds == (0, 1, 2) and profiles.get_profile("default").seeds == (0,)


def test_resolve_seeds():
    d = profiles.get_profile("default")
    assert profiles.resolve_seeds(d, None) == (0,) and profiles.resolve_seeds(d, []) == (0,)
    assert profiles.resolve_seeds(d, [2, 1]) == (2, 1) and profiles.resolve_seeds(d, 3) == (3,)
    with pytest.raises(ValueError, match="repeat"):
        profiles.resolve_seeds(d, [1, 1])
    with pytest.raises(TypeError, match="seeds must be"):
        profiles.resolve_seeds(d, ["a"])


def test_unknown_profile_and_field_name_what_exists():
    with pytest.raises(KeyError, match="smoke"):
        profiles.get_profile("fast")
    with pytest.raises(TypeError, match="known fields"):
        profiles.get_profile("smoke", epochz=3)
    assert profiles.get_profile("smoke", pta_epochs=2).pta_epochs == 2


def test_write_table_requires_dataset_column(tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        results.write_table(tmp_path, "t", pd.DataFrame({"a": [1]}))
    p = results.write_table(tmp_path, "t", pd.DataFrame({"a": [1.23456], "dataset": ["x"]}))
    assert p == tmp_path / "tables" / "t.csv"
    assert results.read_table(tmp_path, "t")["a"][0] == pytest.approx(1.23456)


def test_dataset_label_marks_synthetic(tmp_path):
    (tmp_path / results.SYNTH_MARKER).write_text(json.dumps({"version": 1, "seed": 3, "profile": "smoke"}))
    assert results.dataset_label(tmp_path).startswith("synthetic")
    other = tmp_path / "real"
    other.mkdir()
    assert results.dataset_label(other) == "CelebA-Spoof"


def test_manifest_merges_entries(tmp_path):
    import time
    results.record_notebook(tmp_path, "00_data", {"profile": "smoke"}, None, time.time(), [])
    results.update_manifest(tmp_path, "reproduce", {"x": 1})
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert set(m["entries"]) == {"00_data", "reproduce"}
    e = m["entries"]["00_data"]
    assert e["parameters"] == {"profile": "smoke"} and "torch" in e["packages"] and "git_revision" in e


def test_overrides_resolve_once_and_keep_checkpoints_apart():
    from paperkit import profiles

    plain = profiles.resolve("smoke")
    assert plain is profiles.get_profile("smoke") and profiles.run_name(plain) == "smoke"
    prof = profiles.resolve("smoke", {"pta_epochs": 7, "seeds": [0, 1]})
    assert prof.pta_epochs == 7 and prof.seeds == (0, 1) and prof.name == "smoke"
    assert profiles.run_name(prof).startswith("smoke-") and profiles.run_name(prof) != "smoke"
    assert profiles.run_name(profiles.resolve("smoke", {"pta_epochs": 7, "seeds": [0, 1]})) == profiles.run_name(prof)
    with pytest.raises(TypeError, match="unknown profile field.*pta_epoch"):
        profiles.resolve("smoke", {"pta_epoch": 1})
    with pytest.raises(TypeError, match="overrides must be a dict"):
        profiles.resolve("smoke", [("pta_epochs", 1)])


def test_common_setup_carries_the_resolved_profile_and_records_the_parameters(tmp_path, monkeypatch):
    from paperkit.studies import common

    monkeypatch.setattr(common.data, "resolve_root", lambda root, prof, seed: tmp_path)
    st = common.setup(common.Study, "00_data", "smoke", "", tmp_path, None, {"batch_size": 4}, loaders=False)
    assert st.profile.batch_size == 4 and st.seeds == st.profile.seeds and st.root == tmp_path
    assert st.parameters == {"profile": "smoke", "data_root": "", "run_dir": str(tmp_path), "seeds": None,
                             "overrides": {"batch_size": 4}}
    with pytest.raises(TypeError, match="takes the Profile that setup resolved"):
        common.open_data("smoke", "")
    path = common.record(st)
    entry = json.loads(path.read_text())["entries"]["00_data"]
    assert entry["parameters"]["overrides"] == {"batch_size": 4}


def test_overridden_synth_fields_reach_the_generator(monkeypatch, tmp_path):
    """data.resolve_root hands the Profile itself down (not its name, which would drop the overrides)."""
    from paperkit import data, synth

    seen = []
    monkeypatch.setattr(synth, "default_root", lambda profile, seed: seen.append(profile) or tmp_path)
    prof = profiles.resolve("smoke", {"synth_identities": 12})
    assert data.resolve_root("", prof, 0) == tmp_path
    assert seen[0] is prof and seen[0].synth_identities == 12
    assert synth.synth_key(prof) != synth.synth_key(profiles.get_profile("smoke"))


class _CountingProfiles(dict):
    """PROFILES that counts look-ups by name (what re-resolving a profile on its way down would do)."""

    def __init__(self, base):
        super().__init__(base)
        self.lookups = []

    def __getitem__(self, name):
        self.lookups.append(name)
        return super().__getitem__(name)


def test_the_profile_is_resolved_once_on_its_way_to_the_loaders(monkeypatch, tmp_path):
    """studies -> profiles -> data -> synth -> loaders: the name becomes a Profile once, in common.setup;
    below it the object travels (an override would be lost by any later look-up by name)."""
    from paperkit.studies import common

    counting = _CountingProfiles(profiles.PROFILES)
    monkeypatch.setattr(profiles, "PROFILES", counting)
    st = common.setup(common.Study, "01_pta_mobilenet", "smoke", "", tmp_path, None, {"batch_size": 5})
    assert counting.lookups == ["smoke"]
    assert st.loaders["train"].batch_size == 5     # the override reached the loaders
