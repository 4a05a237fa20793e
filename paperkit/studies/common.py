"""What every study's setup shares: the profile, the dataset root (synthetic by default) and its loaders."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paperkit import data, results
from paperkit.profiles import Profile, get_profile


@dataclass(frozen=True)
class StudyData:
    profile: Profile
    root: Path
    loaders: dict[str, Any]
    dataset: str  # results.dataset_label(root): says "synthetic" for the embedded dataset

    def sizes(self) -> dict[str, int]:
        return {k: len(v.dataset) for k, v in self.loaders.items()}


def open_data(profile: str | Profile, data_root: str | None, seed: int | None = None) -> StudyData:
    """Resolve the profile and dataset (the embedded one when `data_root` is empty) and build the loaders.

    `seed` builds the dataset and the subject split; None means `profile.data_seed`, which stays fixed
    across training seeds so that seed-to-seed spread measures training, not a reshuffled split."""
    prof = get_profile(profile)
    seed = prof.data_seed if seed is None else int(seed)
    root = Path(data.resolve_root(data_root or None, prof, seed))
    return StudyData(prof, root, data.make_loaders(root, prof, seed), results.dataset_label(root))
