"""Shared fixtures: hand-made tiny CelebA-Spoof trees (no dependency on paperkit.synth).

- ``tiny_celeba``: a tree with every problem kind the reader handles; ``tiny_celeba_expected`` holds the
  counts ``paperkit.index.summary`` must report for it.
- ``tiny_celeba_clean``: a problem-free tree (6 train + 2 test subjects, live and several attack types,
  domain side files) for tests of other modules that just need loaders to run.
- ``tiny_celeba_builder``: the builder itself, ``build(root, problems=..., train_subjects=..., ...)``.
"""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytest

IMG_W, IMG_H = 64, 48
CUES = ["print", "screen", "moire", "glare", "cutout", "paper_texture", "low_quality"]


def label_vector(spoof_type: int, illumination: int = 1, environment: int = 1) -> list[int]:
    """44 ints: 40 zero attributes, spoof type, illumination, environment, live(0)/spoof(1)."""
    live = spoof_type == 0
    return [0] * 40 + [spoof_type, 0 if live else illumination, 0 if live else environment, 0 if live else 1]


def face_image(seed: int, w: int = IMG_W, h: int = IMG_H) -> np.ndarray:
    """A smooth BGR image with a bright ellipse 'face' in the middle (distinct per seed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 120, 3).astype(np.float32)
    img = base + 40 * np.sin(xx[..., None] / (5 + seed % 7) + np.arange(3)) + 0.5 * yy[..., None]
    cv2.ellipse(img, (w // 2, h // 2), (w // 6, h // 4), 0, 0, 360, (200, 180, 170), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of width x height (all black): a few KB on disk, huge when decoded."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    raw = zlib.compress(row * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def _write(root: Path, key: str, kind: str, seed: int, bb: str | None) -> None:
    """Write one image of ``kind`` (jpg, png, gray, rgba, png16, zero, corrupt, truncated, bomb, none)
    and its _BB.txt (None = no BB file)."""
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    img = face_image(seed)
    if kind in ("jpg", "png"):
        cv2.imwrite(str(path), img)
    elif kind == "gray":
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    elif kind == "rgba":
        cv2.imwrite(str(path), np.dstack([img, np.full(img.shape[:2], 128, np.uint8)]))
    elif kind == "png16":
        cv2.imwrite(str(path), img.astype(np.uint16) * 257)
    elif kind == "zero":
        path.write_bytes(b"")
    elif kind == "corrupt":
        path.write_bytes(np.random.default_rng(seed).bytes(2000))
    elif kind == "truncated":
        ok, buf = cv2.imencode(".jpg", img)
        path.write_bytes(buf.tobytes()[: len(buf) // 2])
    elif kind == "bomb":
        path.write_bytes(png_bomb(8000, 8000))  # 64 M pixels > paperkit.index.MAX_PIXELS
    elif kind != "none":
        raise ValueError(kind)
    if bb is not None:
        path.with_name(path.stem + "_BB.txt").write_text(bb)


GOOD_BB = "56 42 112 140 0.99\n"   # in the 224 frame -> x=16 y=9 w=32 h=30 px on a 64x48 image

# (split, subject, live|spoof, id, image kind, spoof type, BB text or None)
PROBLEM_TREE: list[tuple[str, str, str, int, str, int, str | None]] = [
    ("train", "1001", "live", 1, "jpg", 0, GOOD_BB),
    ("train", "1001", "live", 2, "gray", 0, GOOD_BB),         # grayscale PNG (works)
    ("train", "1001", "spoof", 3, "rgba", 7, GOOD_BB),        # RGBA PNG (works)
    ("train", "1001", "spoof", 4, "png16", 1, GOOD_BB),       # 16-bit PNG (works)
    ("train", "1002", "live", 5, "jpg", 0, None),             # missing_bb
    ("train", "1002", "live", 6, "jpg", 0, ""),               # empty_bb
    ("train", "1002", "spoof", 7, "jpg", 8, "abc def\n"),     # malformed -> empty_bb
    ("train", "1002", "spoof", 8, "jpg", 9, "-10 -5 120 130 0.9\n"),  # negative_bb (clipped, used)
    ("train", "1003", "live", 9, "jpg", 0, "10 10 1 1 0.5\n"),  # tiny_bb
    ("train", "1003", "spoof", 10, "zero", 2, GOOD_BB),       # unreadable: zero bytes
    ("train", "1003", "spoof", 11, "corrupt", 3, GOOD_BB),    # unreadable: not an image
    ("train", "1004", "live", 12, "truncated", 0, GOOD_BB),   # unreadable: truncated JPEG
    ("train", "1004", "spoof", 13, "none", 7, GOOD_BB),       # missing_image
    ("train", "1004", "live", 14, "bomb", 0, GOOD_BB),        # unreadable: decompression bomb
    ("train", "1005", "live", 15, "jpg", 0, GOOD_BB),
    ("train", "1005", "spoof", 16, "jpg", 8, GOOD_BB),
    ("test", "2001", "live", 101, "jpg", 0, GOOD_BB),
    ("test", "2001", "spoof", 102, "jpg", 9, GOOD_BB),
    ("test", "2002", "live", 103, "png", 0, GOOD_BB),
    ("test", "2002", "spoof", 104, "jpg", 2, None),           # missing_bb
]

PROBLEM_EXPECTED: dict[str, Any] = {
    "splits": {
        "train": {"images": 16, "live": 8, "spoof": 8,
                  "spoof_types": {"0": 8, "1": 1, "2": 1, "3": 1, "7": 2, "8": 2, "9": 1}},
        "test": {"images": 4, "live": 2, "spoof": 2, "spoof_types": {"0": 2, "2": 1, "9": 1}},
    },
    "problems": {"missing_bb": 2, "empty_bb": 2, "negative_bb": 1, "tiny_bb": 1,
                 "unreadable_image": 4, "missing_image": 1},
}


def clean_tree(train_subjects: int = 6, test_subjects: int = 2, per_subject: int = 4
               ) -> list[tuple[str, str, str, int, str, int, str | None]]:
    """Problem-free entries: per subject half live, half spoof (types cycle print/PC/phone/poster)."""
    rows = []
    attack_types = [1, 7, 9, 2]
    n = 0
    for split, count, base in (("train", train_subjects, 3000), ("test", test_subjects, 4000)):
        for s in range(count):
            for k in range(per_subject):
                n += 1
                live = k % 2 == 0
                st = 0 if live else attack_types[(s + k // 2) % len(attack_types)]
                kind = "png" if n % 5 == 0 else "jpg"
                rows.append((split, str(base + s), "live" if live else "spoof", n, kind, st, GOOD_BB))
    return rows


def build_tiny_celeba(root: Path, rows: list[tuple[str, str, str, int, str, int, str | None]] | None = None,
                      side_files: bool = True) -> Path:
    """Write a CelebA-Spoof tree from ``rows`` (default: PROBLEM_TREE) under ``root`` and return it."""
    rows = PROBLEM_TREE if rows is None else rows
    labels: dict[str, dict[str, list[int]]] = {"train": {}, "test": {}}
    samples, cues = {}, {}
    domain_labels: dict[str, dict[str, list[int]]] = {}
    for split, subject, kind_dir, ident, kind, st, bb in rows:
        ext = "png" if kind in ("png", "gray", "rgba", "png16", "bomb") else "jpg"
        key = f"Data/{split}/{subject}/{kind_dir}/{ident:06d}.{ext}"
        _write(root, key, kind, ident, bb)
        vec = label_vector(st, illumination=1 + ident % 4, environment=1 + ident % 2)
        labels[split][key] = vec
        domain = "A" if int(subject) % 2 else "B"
        samples[key] = {"domain": domain, "video": f"{split}/{subject}/{kind_dir}/{st}"}
        cues[key] = [0] * 7 if st == 0 else [int(st in (1, 2, 3)), int(st in (7, 8, 9)), -1, -1, 0, -1, -1]
        domain_labels.setdefault(f"{domain}_{split}", {})[key] = vec
    metas = root / "metas"
    (metas / "intra_test").mkdir(parents=True, exist_ok=True)
    for split, d in labels.items():
        (metas / "intra_test" / f"{split}_label.json").write_text(json.dumps(d, indent=1))
    if side_files:
        (metas / "paperkit").mkdir(parents=True, exist_ok=True)
        (metas / "paperkit" / "samples.json").write_text(json.dumps(samples))
        (metas / "paperkit" / "attack_cues.json").write_text(json.dumps({"cues": CUES, "labels": cues}))
        (metas / "protocol_domain").mkdir(parents=True, exist_ok=True)
        for name, d in domain_labels.items():
            (metas / "protocol_domain" / f"{name}_label.json").write_text(json.dumps(d))
    return root


@pytest.fixture
def tiny_celeba(tmp_path: Path) -> Path:
    """A tiny CelebA-Spoof tree with every problem kind (see PROBLEM_TREE)."""
    return build_tiny_celeba(tmp_path / "celeba")


@pytest.fixture
def tiny_celeba_expected() -> dict[str, Any]:
    """What ``paperkit.index.summary(tiny_celeba)`` must return."""
    return json.loads(json.dumps(PROBLEM_EXPECTED))


@pytest.fixture
def tiny_celeba_clean(tmp_path: Path) -> Path:
    """A problem-free tiny tree: 6 train subjects, 2 test subjects, 4 images each (64x48)."""
    return build_tiny_celeba(tmp_path / "celeba_clean", clean_tree())


@pytest.fixture
def tiny_celeba_builder() -> Callable[..., Path]:
    """``build(root, rows=None, side_files=True)``; rows via ``clean_tree(...)`` or PROBLEM_TREE-style tuples."""
    def build(root: Path, rows: Any = None, side_files: bool = True, **clean_kw: Any) -> Path:
        if rows is None and clean_kw:
            rows = clean_tree(**clean_kw)
        return build_tiny_celeba(Path(root), rows, side_files)
    return build


def tiny_colour_onnx(out: Path, weights: np.ndarray | None = None) -> Path:
    """A hand-built 32x32 ONNX model: logits = mean colour @ W, so scores spread out, react to colour and
    brightness, and load instantly (no training, no export). ``weights`` (3x2) gives another model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    W = np.array([[2.0, -2.0], [-1.0, 3.0], [0.5, -0.5]], np.float32) if weights is None else weights
    w = numpy_helper.from_array(np.asarray(W, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, out)
    return out

