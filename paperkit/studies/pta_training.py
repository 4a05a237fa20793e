"""How notebook 01 trains PTA MobileNetV2 beside No-PTA, and how it times a training step (Table 5).

Training samples a branch configuration per step (seed 000 Table 2), so the BatchNorm running statistics
it leaves mix configurations. `PTAFitHooks` plugs into `paperkit.train.fit` (which stays generic): it
samples the configuration before each step and validates in HHH with BatchNorm recalibrated on clean
training crops, keeping the training (shared) statistics beside the checkpoint so training continues
exactly as without recalibration.

Timing: `warm_up` takes the process's one-off start-up costs before the first timed epoch, and
`step_timing` measures train-step times interleaved (ABBA) on cached batches inside `quiet.timing`, so a
neighbour notebook's compute does not land in the measurement.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from paperkit import quiet
from paperkit.batchnorm import (CalibrationSet, SharedStatsStore, bn_buffers, load_bn_buffers, recalibrate_bn,
                                weights_fingerprint)
from paperkit.models.pta import PTA_TRAIN_PROBS

__all__ = ["VALIDATION_CONFIG", "STEP_TIMING_STEPS", "PTAFitHooks", "warm_up", "first_batches", "step_timing"]

#: Configuration the paper validates PTA in (Figure 2; = No-PTA in size).
VALIDATION_CONFIG = "HHH"
#: Train steps per model per round of the interleaved step-time benchmark (Table 5).
STEP_TIMING_STEPS = 3


# --------------------------------------------------------------------------------------------------
# fit hooks: per-step sampling, HHH validation with recalibrated BatchNorm
# --------------------------------------------------------------------------------------------------
@dataclass
class PTAFitHooks:
    """`before_step` / `eval_config` for `paperkit.train.fit` (train.py is untouched).

    eval_config (after every epoch, and once when fit ends): configure HHH, keep the *training*
    running statistics in the store (and the validation ACER they give, for Figure 2's second curve),
    then recalibrate BatchNorm for HHH on the cached clean training crops. fit then validates and
    saves that state, so the best epoch is chosen with statistics that belong to HHH.
    before_step (first step after a validation): give the model back its training running statistics,
    so training (and the paper-literal shared statistics) continue exactly as without recalibration.
    Entries are keyed by the weights' fingerprint, which makes this exact across resumes.
    """

    calib: CalibrationSet
    store: SharedStatsStore
    val_loader: Any
    channels_last: bool = True
    config: str = VALIDATION_CONFIG
    probs: dict[str, float] | None = None   # per-step configuration sampler; None: seed 000 Table 2
    recalibration_s: list[float] = field(default_factory=list)
    _need_restore: bool = True

    @property
    def _kind(self) -> str:
        return f"recalibrated:{self.config}:{self.calib.n_images}"

    def before_step(self, model: nn.Module, generator: torch.Generator) -> None:
        if self._need_restore:
            shared = self.store.get(weights_fingerprint(model), "shared")
            if shared is not None:
                load_bn_buffers(model, shared)
            self._need_restore = False
        model.sample_config(generator, self.probs)  # type: ignore[operator]

    def eval_config(self, model: nn.Module) -> None:
        from paperkit.train import evaluate_model

        rng = torch.get_rng_state()  # iterating a DataLoader draws from torch's RNG: keep training's stream
        try:
            self._eval_config(model, evaluate_model)
        finally:
            torch.set_rng_state(rng)

    def _eval_config(self, model: nn.Module, evaluate_model: Any) -> None:
        fp = weights_fingerprint(model)
        model.configure(self.config)  # type: ignore[operator]
        if self.store.get(fp, "shared") is None:  # weights fresh from a training epoch
            epoch = sum(1 for e in self.store.entries.values() if "shared_val" in e) + 1
            self.store.put(fp, "shared", bn_buffers(model))
            m = evaluate_model(model, self.val_loader, channels_last=self.channels_last)
            self.store.put(fp, "shared_val", {"epoch": torch.tensor(epoch),
                                              "val_acer": torch.tensor(m["acer"], dtype=torch.float64),
                                              "val_accuracy": torch.tensor(m["accuracy"], dtype=torch.float64)})
        rec = self.store.get(fp, self._kind)
        if rec is not None:  # fit's last call (best weights reloaded) or a rerun: no need to recompute
            load_bn_buffers(model, rec)
        else:
            t0 = time.perf_counter()
            recalibrate_bn(model, self.calib, channels_last=self.channels_last)
            self.recalibration_s.append(time.perf_counter() - t0)
            self.store.put(fp, self._kind, bn_buffers(model))
        self._need_restore = True

    def shared_curve(self) -> dict[int, tuple[float, float]]:
        """epoch -> (val ACER, val accuracy) with the shared statistics, as fractions."""
        out = {}
        for e in self.store.entries.values():
            v = e.get("shared_val")
            if v is not None:
                out[int(v["epoch"])] = (float(v["val_acer"]), float(v["val_accuracy"]))
        return out


# --------------------------------------------------------------------------------------------------
# Before the first timed epoch
# --------------------------------------------------------------------------------------------------
def warm_up(models: dict[str, nn.Module], loader: Any, channels_last: bool, steps: int = 2) -> None:
    """A few untimed forward/backward passes on throwaway copies (the trained weights are untouched)."""
    import torch.nn.functional as F

    batches = first_batches(loader, steps)
    for model in models.values():
        m = copy.deepcopy(model).train()
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        for x, y in batches:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            F.cross_entropy(m(x), y).backward()


def first_batches(loader: Any, n: int) -> list[tuple[Tensor, Tensor]]:
    """Images and labels of the first `n` batches of a paperkit loader (cached, so timings exclude loading)."""
    out = []
    for i, (x, y, _) in enumerate(loader):
        out.append((x, y))
        if i + 1 >= n:
            break
    return out


# --------------------------------------------------------------------------------------------------
# Table 5's train-step benchmark
# --------------------------------------------------------------------------------------------------
@quiet.timing("training step time (Table 5)")
def step_timing(models: dict[str, nn.Module], loader: Any, rounds: int, steps: int = STEP_TIMING_STEPS,
                channels_last: bool = True, lr: float = 1e-3, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per training step of each model, per round, measured interleaved (ABBA: the order flips
    every round) on the same cached batches, on throwaway copies (the trained weights are untouched).

    PTA samples its configuration per step with seed 000's Table 2 probabilities, as in training.
    Data loading is excluded (the batches are cached): this times the models, the epoch time the loop.
    """
    import torch.nn.functional as F

    if rounds < 1 or steps < 1:
        raise ValueError(f"rounds and steps must be >= 1, got {rounds}, {steps}")
    batches = first_batches(loader, steps)
    if channels_last:
        batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
    copies = {k: copy.deepcopy(m).train() for k, m in models.items()}
    if channels_last:
        copies = {k: m.to(memory_format=torch.channels_last) for k, m in copies.items()}
    opts = {k: torch.optim.Adam(m.parameters(), lr=lr) for k, m in copies.items()}
    gen = torch.Generator().manual_seed(seed)

    def run_steps(k: str) -> None:
        m, opt = copies[k], opts[k]
        for x, y in batches:
            if hasattr(m, "sample_config"):
                m.sample_config(gen, PTA_TRAIN_PROBS)
            loss = F.cross_entropy(m(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    for k in copies:  # untimed warm-up (allocator, kernel selection)
        run_steps(k)
    times: dict[str, list[float]] = {k: [] for k in copies}
    order = list(copies)
    for r in range(rounds):
        for k in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            run_steps(k)
            times[k].append((time.perf_counter() - t0) / len(batches))
    return times


