"""The attack-cue vocabulary: the names, and their order, of every cue vector.

One definition for the three places that must agree on it: the generator that writes
``metas/paperkit/attack_cues.json`` (:mod:`paperkit.synth`), the reader that checks that file and derives
cues on CelebA-Spoof (:mod:`paperkit.celeba`), and the teacher's cue heads (:mod:`paperkit.models.teacher`).
A module of its own, with no imports, so the synthetic renderer's workers need not load torch to use it.
"""
from __future__ import annotations

CUE_NAMES: tuple[str, ...] = ("print", "screen", "moire", "glare", "cutout", "paper_texture", "low_quality")
