"""Every training loss, and the training contract's type `LossFn`: loss_fn(model, x, y, cues) -> (loss, logits).

- `cross_entropy_loss`: the default of `paperkit.train.fit` (PTA models, students trained alone, the texture
  ablation).
- `fourier_loss_fn` (seed 002): CE + weight x MSE(predicted spectrum, `paperkit.fourier.spectrum_target`).
  The target is computed from the SAME augmented batch the classifier sees (a spectrum of the un-augmented
  image teaches the head to predict something the input no longer shows).
- `reduced_focal_loss` (Sergievskiy & Ponamarev, used by seed 001 for the teacher): cross-entropy whose
  easy examples are down-weighted only once they are already classified with confidence >= threshold:
  factor ((1 - p) / threshold) ** gamma where p >= threshold, else 1. Unlike the plain focal loss, hard
  examples keep their full cross-entropy gradient.
- `kd_weighted_loss` (seed 001, after SimCLR v2): (1 - alpha) CE on labels + alpha soft-target CE at
  temperature tau (no tau^2 factor).
- `kd_hinton_loss` (seed 003, Hinton et al.): (1 - alpha) CE + alpha tau^2 KL(teacher_tau || student_tau).
  The two KD forms differ by the teacher's entropy (constant for the student) and the tau^2 scale.

Gradient scale (why the study tunes tau/alpha for seed 001's form): w.r.t. the student's logits z the soft
term of the printed form has gradient (alpha / tau) (q_S - q_T), Hinton's alpha tau (q_S - q_T), with
q = softmax(z / tau); since q_S - q_T itself shrinks ~ 1/tau, the printed soft term weighs ~ alpha / tau^2
against the hard term's (1 - alpha): at tau=4, alpha=0.7 about 16x less than Hinton's (`soft_weight`).

Unlabelled images (seed 001's semi-supervised part: CE sums over the labelled set D^L, the soft term over
all of D): a label of `IGNORE_LABEL` (-1) drops that image from the hard term only. Both sums are divided by
the batch size, so a fully labelled batch gives exactly the mean form and a batch without labels gives the
soft term alone (never NaN).

The `*_fn` builders return the training contract's `loss_fn(model, x, y, cues) -> (loss, logits)`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import device as devices
from .fourier import spectrum_target

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
KD_KINDS = ("weighted", "hinton")
IGNORE_LABEL = -1   # a withheld label (unlabelled pool): the image gets the soft term only


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cues: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain cross-entropy on the model's logits (cues unused): `train.fit`'s loss when none is given."""
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def _check_focal(gamma: float, threshold: float) -> None:
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"focal gamma must be a finite number >= 0, got {gamma!r}")
    if not (isinstance(threshold, (int, float)) and 0 < threshold <= 1):
        raise ValueError(f"focal threshold must be in (0, 1], got {threshold!r}")


def check_kd_params(tau: float, alpha: float) -> None:
    """tau is a temperature (> 0, finite); alpha mixes hard and soft targets ([0, 1])."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"distillation temperature tau must be a finite number > 0 (e.g. 1-8), got {tau!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"distillation balance alpha must be in [0, 1] (0 = labels only, 1 = teacher only), "
                         f"got {alpha!r}")


def reduced_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0, threshold: float = 0.5,
                       ignore_index: int = -1, reduction: str = "mean") -> torch.Tensor:
    """Reduced Focal Loss, multi-class or binary.

    Multi-class: `logits` [N, C], `targets` [N] class indices; p = softmax probability of the target.
    Binary (independent sigmoids, e.g. the 7 cue heads): `logits` and `targets` of the same shape, targets
    in {0, 1}; p = probability of the target value.
    Entries equal to `ignore_index` (unknown cues) contribute nothing and are not counted in the mean;
    when every entry is ignored the loss is 0 (still attached to the graph).
    """
    _check_focal(gamma, threshold)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if logits.shape == targets.shape:                           # binary heads
        valid = targets != ignore_index
        t = torch.where(valid, targets, torch.zeros_like(targets)).to(logits.dtype)
        if ((t != 0) & (t != 1)).any():
            raise ValueError("binary focal targets must be 0, 1 or ignore_index "
                             f"({ignore_index}); got values {sorted(set(targets.unique().tolist()))}")
        # log p_t = log sigmoid(z) for t=1, log sigmoid(-z) for t=0
        log_p = F.logsigmoid(torch.where(t > 0.5, logits, -logits))
    elif logits.dim() == 2 and targets.dim() == 1 and logits.shape[0] == targets.shape[0]:
        valid = targets != ignore_index
        t = torch.where(valid, targets, torch.zeros_like(targets)).long()
        if (t < 0).any() or (t >= logits.shape[1]).any():
            raise ValueError(f"class targets must be in [0, {logits.shape[1] - 1}] or ignore_index "
                             f"({ignore_index}); got values {sorted(set(targets.unique().tolist()))}")
        log_p = F.log_softmax(logits, dim=1).gather(1, t[:, None]).squeeze(1)
    else:
        raise ValueError(f"reduced_focal_loss: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} "
                         "must be [N, C] + [N] (multi-class) or equal shapes (binary)")
    p = log_p.exp()
    factor = torch.where(p >= threshold, ((1.0 - p) / threshold).clamp_min(0.0) ** gamma, torch.ones_like(p))
    loss = -factor * log_p * valid.to(logits.dtype)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum().clamp_min(1)


def teacher_loss_fn(gamma: float = 2.0, threshold: float = 0.5, cue_weight: float = 1.0) -> LossFn:
    """Training-contract loss for a teacher: focal loss on live/spoof + cue_weight x focal loss on the cues.

    The cue term is the mean over known (!= -1) cue entries of the batch, so unknown cues neither count as
    0 nor dilute the known ones. `cue_weight=0` trains the live/spoof head only (ablation).
    """
    _check_focal(gamma, threshold)
    if not (math.isfinite(cue_weight) and cue_weight >= 0):
        raise ValueError(f"cue_weight must be a finite number >= 0, got {cue_weight!r}")

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                cues: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not hasattr(model, "forward_heads"):
            raise TypeError(f"teacher_loss_fn needs a model with forward_heads() (a paperkit Teacher), "
                            f"got {type(model).__name__}")
        logits, cue_logits = model.forward_heads(x)
        loss = reduced_focal_loss(logits, y, gamma, threshold)
        if cue_weight > 0:
            if cues.shape != cue_logits.shape:
                raise ValueError(f"cue labels {tuple(cues.shape)} do not match the model's cue heads "
                                 f"{tuple(cue_logits.shape)}")
            loss = loss + cue_weight * reduced_focal_loss(cue_logits, cues.to(cue_logits.device), gamma, threshold)
        return loss, logits

    return loss_fn


def _check_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} and student logits "
                         f"{tuple(student_logits.shape)} differ: the teacher was trained on "
                         f"{teacher_logits.shape[-1]} classes, the student predicts {student_logits.shape[-1]}; "
                         "use a teacher trained for the same classes")


def _hard_term(student_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum of CE over labelled images / batch size (labels == IGNORE_LABEL are unlabelled)."""
    if targets.shape != student_logits.shape[:1]:
        raise ValueError(f"labels {tuple(targets.shape)} do not match student logits {tuple(student_logits.shape)}")
    ce = F.cross_entropy(student_logits, targets, ignore_index=IGNORE_LABEL, reduction="sum")
    return ce / max(1, student_logits.shape[0])


def kd_soft_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float,
                 kind: str = "weighted") -> torch.Tensor:
    """The soft-target term alone, batch mean over every image (labelled or not).

    weighted: -sum_y P_T(y|x;tau) log P_S(y|x;tau) (seed 001 as printed); hinton: tau^2 KL(P_T,tau || P_S,tau).
    """
    if kind not in KD_KINDS:
        raise ValueError(f"unknown distillation kind {kind!r}; choose one of {KD_KINDS}")
    _check_pair(student_logits, teacher_logits)
    log_p_t = F.log_softmax(teacher_logits.detach() / tau, dim=1)
    log_p_s = F.log_softmax(student_logits / tau, dim=1)
    if kind == "weighted":
        return -(log_p_t.exp() * log_p_s).sum(1).mean()
    return tau * tau * (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean()


def soft_weight(tau: float, alpha: float, kind: str = "weighted") -> float:
    """Rough weight of the soft-target gradient relative to the hard one: alpha / ((1 - alpha) tau^2) for the
    printed form (gradient alpha/tau x a difference of tempered softmaxes that shrinks ~ 1/tau), alpha /
    (1 - alpha) for Hinton's (tau^2 cancels it). inf when alpha = 1. A guide for choosing a grid, not a law."""
    check_kd_params(tau, alpha)
    if alpha >= 1.0:
        return math.inf
    return alpha / (1.0 - alpha) / (tau * tau if kind == "weighted" else 1.0)


def kd_weighted_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                     tau: float, alpha: float) -> torch.Tensor:
    """Seed 001: (1 - alpha) CE(student, labels) + alpha * mean_i[-sum_y P_T(y|x;tau) log P_S(y|x;tau)].

    Labels equal to IGNORE_LABEL (-1) are unlabelled images: they contribute to the soft term only."""
    check_kd_params(tau, alpha)
    _check_pair(student_logits, teacher_logits)
    hard = _hard_term(student_logits, targets)
    return (1.0 - alpha) * hard + alpha * kd_soft_term(student_logits, teacher_logits, tau, "weighted")


def kd_hinton_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                   tau: float, alpha: float) -> torch.Tensor:
    """Seed 003 (Hinton): (1 - alpha) CE(student, labels) + alpha * tau^2 * KL(P_T,tau || P_S,tau), batch mean.

    Labels equal to IGNORE_LABEL (-1) contribute to the soft term only."""
    check_kd_params(tau, alpha)
    _check_pair(student_logits, teacher_logits)
    hard = _hard_term(student_logits, targets)
    return (1.0 - alpha) * hard + alpha * kd_soft_term(student_logits, teacher_logits, tau, "hinton")


def kd_loss_fn(teacher: nn.Module, kind: str = "weighted", tau: float = 4.0, alpha: float = 0.7,
               cached_logits: Callable[[torch.Tensor], torch.Tensor | None] | None = None) -> LossFn:
    """Training-contract loss for a student distilled from a frozen teacher.

    The teacher runs in eval mode under no_grad on the same (augmented) batch as the student, so gradients
    reach only the student; its parameters are also marked requires_grad=False. `cached_logits(x)` may
    return the teacher's logits for exactly this batch from a cache (None = not cached: run the teacher).
    """
    if kind not in KD_KINDS:
        raise ValueError(f"unknown distillation kind {kind!r}; choose one of {KD_KINDS}")
    check_kd_params(tau, alpha)
    fn = kd_weighted_loss if kind == "weighted" else kd_hinton_loss
    teacher.requires_grad_(False)
    teacher.eval()

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                cues: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        del cues
        if teacher.training:   # something called .train() on it: a teacher is never updated
            teacher.eval()
        with torch.no_grad():
            t_logits = cached_logits(x) if cached_logits is not None else None
            if t_logits is None:
                if devices.model_device(teacher) != x.device:   # fit moved the student to the compute device
                    teacher.to(x.device)
                t_logits = teacher(x)
        s_logits = model(x)
        return fn(s_logits, t_logits, y, tau, alpha), s_logits

    return loss_fn


def fourier_loss_fn(weight: float = 1.0) -> LossFn:
    """Training-contract loss: CE(logits, y) + weight * MSE(predicted spectrum, target spectrum).

    The model must provide `forward_with_spectrum(x) -> (logits, spec [N,1,h,w])`; the target is
    computed from `x` itself, i.e. the augmented batch the classifier sees.
    """
    if weight < 0:
        raise ValueError(f"fourier weight must be >= 0, got {weight}")

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                cues: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, spec = model.forward_with_spectrum(x)  # type: ignore[operator]
        target = spectrum_target(x, spec.shape[-2:])
        loss = F.cross_entropy(logits, y) + weight * F.mse_loss(spec.float(), target.float())
        return loss, logits

    loss_fn.fourier_weight = weight  # type: ignore[attr-defined]
    return loss_fn
