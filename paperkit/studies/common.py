"""What every notebook's study shares: one `setup` where the notebook's parameters enter paperkit, one
`Study` base that carries them down, and one `record` call that ends every notebook.

    study = pta_mobilenet.setup(profile, data_root, run_dir, seeds, overrides)   # a common.Study subclass
    ...                                                                          # the method's cells
    common.record(study)                                                         # the manifest entry

The profile is resolved once, here (`profiles.resolve`): the `Profile` object travels down to the data,
the loaders and the trainers, so `overrides` (a dict of profile fields) reaches all of them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, TypeVar

import pandas as pd

from paperkit import data, profiles, results
from paperkit.profiles import Profile


@dataclass(frozen=True)
class StudyData:
    profile: Profile
    root: Path
    loaders: dict[str, Any]
    dataset: str  # results.dataset_label(root): says "synthetic" for the embedded dataset

    def sizes(self) -> dict[str, int]:
        return {k: len(v.dataset) for k, v in self.loaders.items()}


def open_data(profile: Profile, data_root: str | None, seed: int | None = None, loaders: bool = True) -> StudyData:
    """The dataset (the embedded one when `data_root` is empty) and, with `loaders`, its loaders.

    `seed` builds the dataset and the subject split; None means `profile.data_seed`, which stays fixed
    across training seeds so that seed-to-seed spread measures training, not a reshuffled split."""
    if not isinstance(profile, Profile):
        raise TypeError(f"open_data takes the Profile that setup resolved, not {profile!r} "
                        "(paperkit.profiles.resolve(name, overrides) makes one)")
    seed = profile.data_seed if seed is None else int(seed)
    root = Path(data.resolve_root(data_root or None, profile, seed))
    made = data.make_loaders(root, profile, seed) if loaders else {}
    return StudyData(profile, root, made, results.dataset_label(root))


@dataclass
class Study:
    """The state one notebook's cells share. Each study module subclasses it with what its cells add."""

    notebook: str                          # manifest entry name, e.g. "01_pta_mobilenet"
    profile: Profile
    run_dir: Path
    seeds: tuple[int, ...]
    root: Path | None = None
    dataset: str = ""
    loaders: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)   # the notebook's parameters, as recorded
    started: float = field(default_factory=time.time)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        """The first training seed: the one whose models later notebooks load and ship."""
        return self.seeds[0]

    def record_parameters(self) -> dict[str, Any]:
        """What the manifest records for this run; a study adds what its cells chose (e.g. notebook 03's
        selected KD pair)."""
        return dict(self.parameters)

    def skip_record(self) -> str:
        """A reason not to write a manifest entry (notebook 05 showing a recorded run), or ""."""
        return ""


S = TypeVar("S", bound=Study)


def setup(cls: type[S], notebook: str, profile: str | Profile, data_root: str | None, run_dir: str | Path,
          seeds: Any = None, overrides: Mapping[str, Any] | None = None, loaders: bool = True,
          **fields: Any) -> S:
    """Resolve the notebook's parameters once (profile + overrides, training seeds, dataset) and make its study.

    `fields` are the subclass's own; the recorded parameters are the notebook's (`profile`, `data_root`,
    `run_dir`, `seeds`, and `overrides` when given)."""
    prof = profiles.resolve(profile, overrides)
    seeds_t = profiles.resolve_seeds(prof, seeds)
    d = open_data(prof, data_root, loaders=loaders)
    params: dict[str, Any] = {"profile": prof.name, "data_root": data_root or "", "run_dir": str(run_dir),
                              "seeds": seeds}
    if overrides:
        params["overrides"] = dict(overrides)
    return cls(notebook=notebook, profile=prof, run_dir=Path(run_dir), seeds=seeds_t, root=d.root,
               dataset=d.dataset, loaders=d.loaders, parameters=params, **fields)


class Recordable(Protocol):
    """What `record` needs: a `Study`, or notebook 05's `BranchState` (which may show a recorded run)."""

    notebook: str
    run_dir: Any
    root: Any
    started: float
    outputs: list[Path]

    def record_parameters(self) -> dict[str, Any]: ...

    def skip_record(self) -> str: ...


def record(study: Recordable, outputs: Any = None) -> Path | None:
    """The manifest entry every notebook ends with: its parameters, dataset, versions, wall time, outputs."""
    why = study.skip_record()
    if why:
        print(why)
        return None
    out = list(study.outputs) if outputs is None else list(outputs)
    return results.record_notebook(study.run_dir, study.notebook, study.record_parameters(), study.root,
                                   study.started, out)
