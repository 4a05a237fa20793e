"""The embedded default dataset: bona fide faces and physically simulated attacks in CelebA-Spoof layout.

No face anti-spoofing data can be downloaded here, so paperkit renders one from a seed (docs/design.md section 2).
Bona fide captures are procedural identities (optionally, a fraction of them photographs: bundled portraits
warped and re-toned per identity, ``scene.PHOTO_FRACTION``) over crops of real photographs shipped inside
installed packages; attacks show the same identity through a medium (print, screen, cut-out) and re-capture it.
Every image, live or spoof, goes through the *same* camera model, so what separates the classes is the
medium, not the pipeline.

Determinism: every image is a pure function of (seed, subject, index) and of a per-session plan drawn in
the parent process; workers only compute, the parent writes in a fixed order, and JPEG encoding uses fixed
parameters. Same seed -> byte-identical tree (on the same OpenCV/libjpeg build).

The package is split along what it simulates:

============== ==================================================================================
``identity``   who is in front of the camera: identities, their CelebA attributes, capture poses
``person``     drawing a person (head, features, hair, skin texture, lighting) with landmarks
``photoface``  photographic identities (off by default): bundled portraits, one warp and tone shift each
``photos``     a user's own photos as identities (``--faces``)
``backgrounds`` bundled background photographs and crops of them
``scene``      the bona fide scene before the camera: person over background, or a user's photo
``media``      the attack media: print tone and texture, screen display, paper cut-outs
``camera``     homographies, lens blur, auto-exposure, the sensor back-end (noise, noise reduction), JPEG
``noise``      fixed-seed noise banks shared by skin, paper and sensor
``plan``       what gets rendered: splits, sessions, attack decks, every session's parameters
``frame``      one image from its job: live or one function per attack kind, labels, cues
``builder``    the tree on disk, the cache folder, the benchmark and ``paperkit data synth``
============== ==================================================================================
"""
from __future__ import annotations

import cv2

from .builder import GENERATOR, MARKER, VERSION, bench, build, cache_dir, cli_synth, default_root, synth_key

__all__ = ["GENERATOR", "MARKER", "VERSION", "bench", "build", "cache_dir", "cli_synth", "default_root", "synth_key"]

# Serial OpenCV in every process that renders: its thread pool deadlocks in processes forked after it ran
# (DataLoader workers), and the spawn pool parallelises across images instead.
cv2.setNumThreads(1)
