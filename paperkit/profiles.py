"""Profiles: every knob of a run in one frozen dataclass, chosen by name.

`smoke` checks wiring in CI, `default` measures trends on the embedded synthetic
dataset on a 2-core CPU, `paper` uses the seeds' hyperparameters on real CelebA-Spoof.
Each study owns one section of fields (prefix = study); add knobs there, not elsewhere.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Profile:
    name: str
    # --- embedded synthetic dataset (paperkit.synth) -------------------------------
    synth_identities: int = 160          # subjects; 80/20 train/test by subject
    synth_live_per_identity: int = 12    # bona fide captures per subject
    synth_spoof_per_identity: int = 20   # attack captures per subject
    synth_image_size: int = 224          # side of the written images (CelebA-Spoof BB frame is 224)
    synth_difficulty: float = 0.25       # 0 = blatant attacks, 1 = barely visible cues (0.25: ~6% test ACER, MobileNetV2 4 epochs)
    # --- data loading (paperkit.data) ---------------------------------------------
    input_size: int = 128                # face crop side fed to every model (seed 000)
    batch_size: int = 32
    num_workers: int = 1
    val_fraction: float = 0.2            # train/val split by subject
    max_train_images: int | None = None  # cap for quick runs on big real data
    max_test_images: int | None = None
    # --- shared training loop (paperkit.train) ----------------------------------------
    channels_last: bool = True
    # --- PTA MobileNetV2 study (seed 000) -----------------------------------------
    pta_epochs: int = 4
    pta_lr: float = 1e-3
    # --- Fourier texture study (seed 002) -----------------------------------------
    texture_epochs: int = 6
    texture_lr: float = 2e-3
    fourier_weight: float = 1.0
    calib_images: int = 256              # INT8 calibration crops from the train split
    # --- teacher / distillation study (seeds 001, 003) ----------------------------
    teacher_epochs: int = 3
    teacher_lr: float = 1e-3
    student_epochs: int = 4
    student_lr: float = 2e-3
    kd_tau: float = 4.0
    kd_alpha: float = 0.7
    focal_gamma: float = 2.0
    focal_threshold: float = 0.5
    # --- benchmarks ---------------------------------------------------------------
    latency_rounds: int = 7
    latency_iters: int = 30

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        synth_identities=10,
        synth_live_per_identity=4,
        synth_spoof_per_identity=6,
        synth_image_size=160,
        input_size=64,
        batch_size=16,
        num_workers=0,
        pta_epochs=1,
        texture_epochs=1,
        teacher_epochs=1,
        student_epochs=1,
        calib_images=16,
        latency_rounds=2,
        latency_iters=3,
    ),
    "default": Profile(name="default"),
    "paper": Profile(
        name="paper",
        input_size=128,
        batch_size=32,
        num_workers=4,
        pta_epochs=20,
        pta_lr=1e-4,
        texture_epochs=20,
        texture_lr=1e-3,
        teacher_epochs=3,
        teacher_lr=1e-4,
        student_epochs=20,
        student_lr=1e-3,
        calib_images=1024,
        latency_rounds=11,
        latency_iters=100,
    ),
}


def get_profile(name: str | Profile, **overrides: Any) -> Profile:
    """Look a profile up by name; unknown names and unknown overrides are errors that list what exists."""
    if isinstance(name, Profile):
        base = name
    else:
        if name not in PROFILES:
            raise KeyError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
        base = PROFILES[name]
    known = set(base.to_dict())
    bad = sorted(set(overrides) - known)
    if bad:
        raise TypeError(f"unknown profile field(s) {bad}; known fields: {sorted(known)}")
    return replace(base, **overrides) if overrides else base
