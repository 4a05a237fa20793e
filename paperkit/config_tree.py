"""Every PTA configuration evaluated in one pass, each with its own BatchNorm statistics: the configuration tree.

Why a tree: a PTA MobileNetV2 has three PTA blocks, each Heavy / Light / Both, so 27 configurations. The
layers before the first PTA block are the same in every configuration (most of the compute at 128 px),
and what PTA block d and the plain layers after it compute depends only on the modes of blocks 0..d. So
each image goes through the shared prefix once and the PTA blocks are evaluated as a tree (3 + 9 + 27
block runs instead of 27 x 3), for the calibration crops (`staged_bn_states`) as for the val/test images
(`staged_scores`).

BatchNorm: every configuration is evaluated with its own statistics, re-estimated on clean training crops
(`paperkit.batchnorm`; the running averages training leaves behind mix the sampled configurations). The
statistics of the layers in PTA block d and the plain layers after it depend only on the modes of blocks
0..d (their inputs do), so they are estimated once per node of the tree (`StagedBN`) and folded into the
convolutions node by node for the scoring pass. A check against a plain `model(x)` (with that
configuration's full statistics loaded) guards the staging against any change of the model's forward.

Used by notebook 01 (Table 3: the paper's six configurations, `paperkit.studies.pta_mobilenet`) and by
notebook 05 (all 27, `paperkit.studies.compare_branches`).
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from paperkit import quiet
from paperkit.batchnorm import CALIBRATION_IMAGES, bn_buffers, bn_layers, fold_bn, load_bn_buffers
from paperkit.models.pta import CONFIGS, MODES, PTABlock, PTAMobileNetV2, parse_config

__all__ = ["ALL_CONFIGS", "REFERENCE", "StagedBN", "staged_bn_states", "staged_scores"]

#: Every configuration of three PTA blocks, each Heavy / Light / Both: 27, the paper's six first.
ALL_CONFIGS: tuple[str, ...] = CONFIGS + tuple(
    c for c in ("".join(p) for p in itertools.product(MODES, repeat=3)) if c not in CONFIGS)
#: The No-PTA MobileNetV2 of notebook 01: another model, scored in the same pass under this key.
REFERENCE = "NoPTA"


def _stages(model: PTAMobileNetV2) -> tuple[nn.Module, list[PTABlock], list[nn.Module]]:
    """Split `features` into the shared prefix, the PTA blocks, and the plain layers after each block."""
    feats = list(model.features)
    idx = [i for i, m in enumerate(feats) if isinstance(m, PTABlock)]
    if not idx:
        raise TypeError("model has no PTA blocks; pass a PTAMobileNetV2")
    ends = idx[1:] + [len(feats)]
    tails: list[nn.Module] = [nn.Sequential(*feats[i + 1:e]) for i, e in zip(idx, ends)]
    return nn.Sequential(*feats[:idx[0]]), [feats[i] for i in idx], tails


def _head(model: PTAMobileNetV2, h: Tensor) -> Tensor:
    """What `PTAMobileNetV2._forward_impl` does after `features`."""
    h = nn.functional.adaptive_avg_pool2d(h, (1, 1))
    return model.classifier(torch.flatten(h, 1))


def _spoof(logits: Tensor) -> np.ndarray:
    return torch.softmax(logits.float(), dim=1)[:, 1].numpy()


@dataclass
class StagedBN:
    """BatchNorm statistics of the configuration tree: `prefix` (layers before the first PTA block, the
    same for every configuration) and one entry per tree node, e.g. "L", "LH", "LHB": the statistics of
    PTA block d's active branch(es) and of the plain layers after it, given the modes of blocks 0..d."""

    prefix: dict[str, Tensor]
    nodes: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    n_images: int = 0
    seconds: float = 0.0

    def covers(self, config: str) -> bool:
        return all(config[:d] in self.nodes for d in range(1, len(config) + 1))

    def full(self, config: str) -> dict[str, Tensor]:
        """Every statistic `config` uses, as `recalibrate_bn(model.configure(config), calib)` would set them."""
        out = dict(self.prefix)
        for d in range(1, len(config) + 1):
            out.update(self.nodes[config[:d]])
        return out


def _names(model: nn.Module) -> dict[int, str]:
    return {id(m): n for n, m in model.named_modules()}


def _node_buffers(model: nn.Module, modules: Sequence[nn.Module], names: Mapping[int, str]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for mod in modules:
        for sub in mod.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                base = names[id(sub)]
                for b in ("running_mean", "running_var", "num_batches_tracked"):
                    out[f"{base}.{b}"] = getattr(sub, b).detach().clone()
    return out


def _reset(modules: Sequence[nn.Module]) -> None:
    for mod in modules:
        for sub in mod.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                sub.reset_running_stats()


@torch.no_grad()
def staged_bn_states(model: PTAMobileNetV2, calib: Iterable[Any], configs: Sequence[str] = ALL_CONFIGS,
                     max_images: int = CALIBRATION_IMAGES, existing: StagedBN | None = None) -> StagedBN:
    """Re-estimate BatchNorm statistics for every configuration in `configs` on the calibration crops,
    walking the configuration tree depth first (the prefix once, then 3 + 9 + 27 block runs for all 27).

    Gives, per configuration, exactly what `paperkit.batchnorm.recalibrate_bn` computes for it (same
    crops, same batches, cumulative average); tests check that. The model is left as it was. `existing`
    is extended with the nodes it lacks. Long because it is one function on purpose: the model's modes,
    momenta, statistics and configuration are saved before the walk and restored after it by a single
    try/finally.
    """
    t0 = time.perf_counter()
    configs = tuple(dict.fromkeys("".join(parse_config(c)) for c in configs))
    prefix, blocks, tails = _stages(model)
    names = _names(model)
    n_blocks = len(blocks)
    wanted = {c[:d] for c in configs for d in range(1, n_blocks + 1)}
    if existing is not None:
        wanted -= set(existing.nodes)
    layers = bn_layers(model)
    saved_bn, saved_cfg = bn_buffers(model), model.config
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in layers.values()}
    nodes: dict[str, dict[str, Tensor]] = {}
    try:
        model.eval()
        for m in layers.values():
            m.momentum = None
            m.train()
        _reset([prefix])
        acts0: list[Tensor] = []
        n = 0
        for batch in calib:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = x[: max_images - n]
            if len(x) < 2:
                break
            acts0.append(prefix(x))
            n += len(x)
            if n >= max_images:
                break
        if not acts0:
            raise ValueError("staged_bn_states got no calibration batch of >= 2 images")
        prefix_state = _node_buffers(model, [prefix], names)

        def visit(path: str, parent: list[Tensor]) -> None:
            d = len(path) - 1
            blocks[d].mode = path[-1]
            mods = [*blocks[d].active_branches(), tails[d]]
            _reset(mods)
            acts = [tails[d](blocks[d](a)) for a in parent]
            nodes[path] = _node_buffers(model, mods, names)
            for m in MODES:
                if path + m in wanted or any(w.startswith(path + m) for w in wanted):
                    visit(path + m, acts)

        for m in MODES:
            if any(w.startswith(m) for w in wanted):
                visit(m, acts0)
    finally:
        for m, mom in momenta.items():
            m.momentum = mom
        for m, was in modes.items():
            m.training = was
        load_bn_buffers(model, saved_bn)
        model.configure(saved_cfg)
    seconds = time.perf_counter() - t0
    if existing is not None:
        existing.nodes.update(nodes)
        existing.seconds += seconds
        return existing
    return StagedBN(prefix=prefix_state, nodes=nodes, n_images=n, seconds=seconds)


@torch.inference_mode()
def staged_scores(model: PTAMobileNetV2, loader: Iterable[Any], configs: Sequence[str] = ALL_CONFIGS,
                  reference: nn.Module | None = None, check: bool = True, bn: StagedBN | None = None
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """P(spoof) of every configuration in `configs` for every sample of `loader`, in loader order.

    One pass over the data: the shared prefix runs once per image, the PTA blocks as a tree. With `bn`
    (from `staged_bn_states`) each tree node runs with its own BatchNorm statistics, i.e. every
    configuration with the statistics re-estimated for it; without, with the model's current ones.
    When `reference` (the No-PTA model) is given its scores come from the same pass under `REFERENCE`.
    `check` compares the staged scores of two configurations on the first batch with a plain
    `model(x)` (that configuration's full statistics loaded) and raises if they differ. Long because it is
    one function on purpose: building the folded node copies, the data pass and the check all run inside the single
    try/finally that gives the model back its statistics, configuration and mode.
    """
    configs = tuple(dict.fromkeys("".join(parse_config(c)) for c in configs))
    if not configs:
        raise ValueError("no configurations to score")
    if bn is not None:
        lacking = [c for c in configs if not bn.covers(c)]
        if lacking:
            raise KeyError(f"no BatchNorm statistics for {lacking}; run staged_bn_states for them first")
    saved, was_training = model.config, model.training
    saved_bn = bn_buffers(model) if bn is not None else None
    model.eval()
    if reference is not None:
        reference.eval()
    prefix, blocks, tails = _stages(model)
    n_blocks = len(blocks)
    wanted = {c[:d] for c in configs for d in range(1, n_blocks + 1)}
    out: dict[str, list[np.ndarray]] = {c: [] for c in configs}
    if reference is not None:
        out[REFERENCE] = []
    labels: list[np.ndarray] = []
    first: Tensor | None = None
    try:
        # every tree node as an inference copy with its own statistics folded into the convolutions
        # (paperkit.batchnorm.fold_bn): built once, so a batch costs no buffer swaps and no BN passes
        if bn is not None:
            load_bn_buffers(model, bn.prefix)
        run_prefix = fold_bn(prefix)[0]
        run_ref = fold_bn(reference)[0] if reference is not None else None
        run_node: dict[str, nn.Module] = {}
        for path in sorted(wanted, key=len):
            depth = len(path) - 1
            blocks[depth].mode = path[-1]
            if bn is not None:
                load_bn_buffers(model, bn.nodes[path])
            run_node[path] = fold_bn(nn.Sequential(blocks[depth], tails[depth]))[0]
        for batch in loader:
            x, y = batch[0], batch[1]
            quiet.checkpoint()
            if first is None:
                first = x[:4].clone()
            labels.append(np.asarray(y))
            if run_ref is not None:
                out[REFERENCE].append(_spoof(run_ref(x)))
            acts: dict[str, Tensor] = {"": run_prefix(x)}
            for depth in range(n_blocks):
                for path in sorted(p for p in wanted if len(p) == depth + 1):
                    acts[path] = run_node[path](acts[path[:-1]])
            for c in configs:
                out[c].append(_spoof(_head(model, acts[c])))
        if first is None:
            raise ValueError("the evaluation loader is empty: no images in this split")
        if check:
            for c in {configs[0], configs[-1]}:
                if bn is not None:
                    load_bn_buffers(model, bn.full(c))
                direct = _spoof(model.configure(c)(first))
                staged = out[c][0][:len(direct)]
                if not np.allclose(direct, staged, atol=1e-4):
                    raise RuntimeError(
                        f"staged evaluation of {c} differs from model(x) by {np.abs(direct - staged).max():.2e}; "
                        "PTAMobileNetV2's forward changed: update paperkit.config_tree._stages/_head")
    finally:
        if saved_bn is not None:
            load_bn_buffers(model, saved_bn)
        model.configure(saved)
        model.train(was_training)
    return {k: np.concatenate(v) for k, v in out.items()}, np.concatenate(labels)
