"""Loss functions against values computed by hand with plain `math` on tiny tensors."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from paperkit.losses import (
    IGNORE_LABEL,
    check_kd_params,
    kd_hinton_loss,
    kd_loss_fn,
    kd_soft_term,
    kd_weighted_loss,
    reduced_focal_loss,
    soft_weight,
    teacher_loss_fn,
)


def softmax(z: list[float], tau: float = 1.0) -> list[float]:
    e = [math.exp(v / tau) for v in z]
    s = sum(e)
    return [v / s for v in e]


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def rfl_term(p: float, gamma: float, th: float) -> float:
    factor = ((1 - p) / th) ** gamma if p >= th else 1.0
    return -factor * math.log(p)


# ------------------------------------------------------------------------------------------ focal loss
def test_focal_multiclass_hand_computed() -> None:
    logits = [[2.0, 0.0], [0.0, 1.0], [1.0, 3.0]]
    targets = [0, 0, 1]
    # sample 0: p = softmax[0] ~ 0.881 >= 0.5 -> reduced; sample 1: p ~ 0.269 < 0.5 -> plain CE
    expected = sum(rfl_term(softmax(z)[t], 2.0, 0.5) for z, t in zip(logits, targets)) / 3
    got = reduced_focal_loss(torch.tensor(logits), torch.tensor(targets), gamma=2.0, threshold=0.5)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_focal_three_classes_and_threshold() -> None:
    z, t = [0.5, 1.5, -1.0], 1
    p = softmax(z)[t]                      # ~0.69
    for th in (0.3, 0.5, 0.8):
        got = reduced_focal_loss(torch.tensor([z]), torch.tensor([t]), gamma=3.0, threshold=th)
        assert got.item() == pytest.approx(rfl_term(p, 3.0, th), rel=1e-6)


def test_focal_equals_ce_when_gamma_zero() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 2, generator=g)
    targets = torch.randint(0, 2, (8,), generator=g)
    got = reduced_focal_loss(logits, targets, gamma=0.0)
    assert got.item() == pytest.approx(nn.functional.cross_entropy(logits, targets).item(), rel=1e-6)
    b_logits = torch.randn(4, 7, generator=g)
    b_t = torch.randint(0, 2, (4, 7), generator=g)
    got_b = reduced_focal_loss(b_logits, b_t, gamma=0.0)
    ref = nn.functional.binary_cross_entropy_with_logits(b_logits, b_t.float())
    assert got_b.item() == pytest.approx(ref.item(), rel=1e-6)


def test_reduction_is_one_below_threshold() -> None:
    # p(target) = sigmoid(-1) ~ 0.27 < 0.5: the loss is exactly the cross-entropy, whatever gamma is
    z = torch.tensor([[1.0, 0.0]])
    y = torch.tensor([1])
    ce = -math.log(softmax([1.0, 0.0])[1])
    for gamma in (0.0, 1.0, 2.0, 5.0):
        assert reduced_focal_loss(z, y, gamma=gamma).item() == pytest.approx(ce, rel=1e-6)
    per = reduced_focal_loss(z, y, gamma=2.0, reduction="none")
    assert per.shape == (1,)


def test_reduction_continuous_at_threshold_half() -> None:
    # at p = th = 0.5 the factor ((1-p)/th)^gamma = 1: no jump
    got = reduced_focal_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([0]), gamma=2.0, threshold=0.5)
    assert got.item() == pytest.approx(math.log(2), rel=1e-6)


def test_focal_binary_with_ignored_entries() -> None:
    logits = [[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]]
    targets = [[1, -1, 0], [-1, 1, -1]]
    terms = []
    for zr, tr in zip(logits, targets):
        for z, t in zip(zr, tr):
            if t == -1:
                continue
            p = sigmoid(z) if t == 1 else 1 - sigmoid(z)
            terms.append(rfl_term(p, 2.0, 0.5))
    expected = sum(terms) / len(terms)      # mean over the 3 known entries, not over 6
    got = reduced_focal_loss(torch.tensor(logits), torch.tensor(targets), gamma=2.0)
    assert len(terms) == 3
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # the value of an ignored logit does not matter, and gets no gradient
    lt = torch.tensor(logits, requires_grad=True)
    reduced_focal_loss(lt, torch.tensor(targets)).backward()
    assert lt.grad[0, 1] == 0 and lt.grad[1, 0] == 0 and lt.grad[1, 2] == 0
    assert lt.grad[0, 0] != 0


def test_focal_all_ignored_is_zero_not_nan() -> None:
    z = torch.randn(2, 7, requires_grad=True)
    loss = reduced_focal_loss(z, torch.full((2, 7), -1))
    assert loss.item() == 0.0
    loss.backward()


def test_focal_bad_inputs() -> None:
    with pytest.raises(ValueError, match="threshold"):
        reduced_focal_loss(torch.zeros(1, 2), torch.tensor([0]), threshold=0.0)
    with pytest.raises(ValueError, match="gamma"):
        reduced_focal_loss(torch.zeros(1, 2), torch.tensor([0]), gamma=-1.0)
    with pytest.raises(ValueError, match="must be"):
        reduced_focal_loss(torch.zeros(2, 2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="shape|must be"):
        reduced_focal_loss(torch.zeros(2, 3), torch.zeros(3))


# ------------------------------------------------------------------------------------------ teacher loss
class _TwoHead(nn.Module):
    """Stand-in teacher: fixed logits, so the loss can be computed by hand."""

    def __init__(self, logits: list[list[float]], cue_logits: list[list[float]]) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(logits))
        self.b = nn.Parameter(torch.tensor(cue_logits))

    def forward_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a * 1.0, self.b * 1.0


def test_teacher_loss_fn_hand_computed_with_ignored_cues() -> None:
    logits = [[1.0, -1.0], [0.2, 0.4]]
    cue_logits = [[0.5, -0.5, 1.0, 0.0, 2.0, -1.0, 0.3], [0.0] * 7]
    y = [0, 1]
    cues = [[1, 0, -1, -1, 1, 0, -1], [-1] * 7]
    ls = sum(rfl_term(softmax(z)[t], 2.0, 0.5) for z, t in zip(logits, y)) / 2
    terms = []
    for zr, tr in zip(cue_logits, cues):
        for z, t in zip(zr, tr):
            if t != -1:
                terms.append(rfl_term(sigmoid(z) if t == 1 else 1 - sigmoid(z), 2.0, 0.5))
    expected = ls + 0.5 * sum(terms) / len(terms)
    model = _TwoHead(logits, cue_logits)
    loss, out = teacher_loss_fn(2.0, 0.5, cue_weight=0.5)(model, torch.zeros(2, 3, 4, 4), torch.tensor(y),
                                                           torch.tensor(cues))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.shape == (2, 2)
    loss.backward()
    assert torch.all(model.b.grad[1] == 0)       # the all-unknown row got no gradient


def test_teacher_loss_fn_needs_heads() -> None:
    with pytest.raises(TypeError, match="forward_heads"):
        teacher_loss_fn()(nn.Linear(2, 2), torch.zeros(1, 2), torch.tensor([0]), torch.zeros(1, 7))


# ------------------------------------------------------------------------------------------ distillation
S = [[1.0, -0.5], [0.3, 0.8]]
T = [[2.0, -1.0], [-0.5, 1.5]]
Y = [0, 1]


def test_kd_weighted_hand_computed() -> None:
    tau, alpha = 2.0, 0.7
    ce = sum(-math.log(softmax(s)[y]) for s, y in zip(S, Y)) / 2
    soft = sum(-sum(pt * math.log(ps) for pt, ps in zip(softmax(t, tau), softmax(s, tau)))
               for s, t in zip(S, T)) / 2
    expected = (1 - alpha) * ce + alpha * soft
    got = kd_weighted_loss(torch.tensor(S), torch.tensor(T), torch.tensor(Y), tau, alpha)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_kd_hinton_hand_computed() -> None:
    tau, alpha = 3.0, 0.4
    ce = sum(-math.log(softmax(s)[y]) for s, y in zip(S, Y)) / 2
    kl = sum(sum(pt * math.log(pt / ps) for pt, ps in zip(softmax(t, tau), softmax(s, tau)))
             for s, t in zip(S, T)) / 2
    expected = (1 - alpha) * ce + alpha * tau ** 2 * kl
    got = kd_hinton_loss(torch.tensor(S), torch.tensor(T), torch.tensor(Y), tau, alpha)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_kd_alpha_zero_is_ce_and_identical_logits_have_zero_kl() -> None:
    s, y = torch.tensor(S), torch.tensor(Y)
    ce = nn.functional.cross_entropy(s, y).item()
    assert kd_weighted_loss(s, torch.tensor(T), y, 4.0, 0.0).item() == pytest.approx(ce)
    assert kd_hinton_loss(s, s.clone(), y, 4.0, 1.0).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("tau,alpha", [(0.0, 0.5), (-1.0, 0.5), (float("nan"), 0.5), (2.0, -0.1), (2.0, 1.5)])
def test_kd_bad_params(tau: float, alpha: float) -> None:
    match = "tau" if not (tau > 0) else "alpha"
    with pytest.raises(ValueError, match=match):
        check_kd_params(tau, alpha)
    with pytest.raises(ValueError, match=r"\[0, 1\]|> 0"):
        kd_loss_fn(nn.Linear(2, 2), "weighted", tau, alpha)
    with pytest.raises(ValueError):
        kd_hinton_loss(torch.tensor(S), torch.tensor(T), torch.tensor(Y), tau, alpha)


def test_kd_unknown_kind() -> None:
    with pytest.raises(ValueError, match="hinton"):
        kd_loss_fn(nn.Linear(2, 2), "fancy")


class _Flat(nn.Module):
    def __init__(self, out: int, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(3 * 4 * 4, out)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x.flatten(1)))


@pytest.mark.parametrize("kind", ["weighted", "hinton"])
def test_kd_gradients_reach_only_the_student(kind: str) -> None:
    teacher, student = _Flat(2, 0), _Flat(2, 1)
    teacher.train()
    fn = kd_loss_fn(teacher, kind, tau=2.0, alpha=0.5)
    assert not teacher.training
    x = torch.randn(4, 3, 4, 4)
    loss, logits = fn(student, x, torch.tensor([0, 1, 0, 1]), torch.zeros(4, 7, dtype=torch.long))
    loss.backward()
    assert logits.shape == (4, 2)
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    # teacher in eval mode: deterministic (dropout off) across calls
    with torch.no_grad():
        assert torch.equal(teacher(x), teacher(x))


def test_kd_teacher_with_other_classes_is_refused() -> None:
    fn = kd_loss_fn(_Flat(3, 0), "weighted", tau=2.0, alpha=0.5)
    with pytest.raises(ValueError, match="3 classes"):
        fn(_Flat(2, 1), torch.randn(2, 3, 4, 4), torch.tensor([0, 1]), torch.zeros(2, 7))


def test_kd_cached_teacher_logits_are_used_and_miss_falls_back() -> None:
    calls = {"n": 0}

    class Counting(_Flat):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            return super().forward(x)

    teacher, student = Counting(2, 0), _Flat(2, 1)
    x, y = torch.randn(2, 3, 4, 4), torch.tensor([0, 1])
    t_logits = torch.tensor(T)
    fn = kd_loss_fn(teacher, "weighted", tau=2.0, alpha=0.7, cached_logits=lambda _: t_logits)
    loss, s_logits = fn(student, x, y, torch.zeros(2, 7))
    assert calls["n"] == 0
    assert loss.item() == pytest.approx(kd_weighted_loss(s_logits, t_logits, y, 2.0, 0.7).item(), rel=1e-6)
    fn_miss = kd_loss_fn(teacher, "weighted", tau=2.0, alpha=0.7, cached_logits=lambda _: None)
    fn_miss(student, x, y, torch.zeros(2, 7))
    assert calls["n"] == 1


# ------------------------------------------------------------------------------------------ gradient scale
def _soft_grad(kind: str, s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
    z = s.clone().double().requires_grad_(True)
    kd_soft_term(z, t.double(), tau, kind).backward()
    return z.grad


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0, 8.0])
def test_kd_soft_gradient_scale_is_tau_squared(tau: float) -> None:
    """Issue 9: Hinton's soft term carries tau^2 relative to seed 001's printed form; both match the analytic
    gradient (q_S - q_T) / (tau N) x {1, tau^2} and a central finite difference."""
    g = torch.Generator().manual_seed(3)
    s = torch.randn(5, 2, generator=g, dtype=torch.float64) * 2
    t = torch.randn(5, 2, generator=g, dtype=torch.float64) * 3
    gw, gh = _soft_grad("weighted", s, t, tau), _soft_grad("hinton", s, t, tau)
    q_s, q_t = torch.softmax(s / tau, 1), torch.softmax(t / tau, 1)
    analytic = (q_s - q_t) / (tau * len(s))
    assert torch.allclose(gw, analytic, atol=1e-12)
    assert torch.allclose(gh, tau ** 2 * analytic, atol=1e-12)
    assert torch.allclose(gh, tau ** 2 * gw, rtol=1e-9, atol=1e-15)
    # finite difference on one logit, independent of autograd
    eps = 1e-6
    for kind, grad in (("weighted", gw), ("hinton", gh)):
        up, dn = s.clone(), s.clone()
        up[2, 1] += eps
        dn[2, 1] -= eps
        fd = (kd_soft_term(up, t, tau, kind) - kd_soft_term(dn, t, tau, kind)).item() / (2 * eps)
        assert fd == pytest.approx(grad[2, 1].item(), rel=1e-5, abs=1e-10)
    # the full losses at alpha = 1 are the soft terms: the printed form's gradient is tau^2 weaker
    zw = s.clone().requires_grad_(True)
    zh = s.clone().requires_grad_(True)
    y = torch.tensor([0, 1, 0, 1, 1])
    kd_weighted_loss(zw, t, y, tau, 1.0).backward()
    kd_hinton_loss(zh, t, y, tau, 1.0).backward()
    assert torch.allclose(zh.grad, tau ** 2 * zw.grad, rtol=1e-9, atol=1e-15)


def test_printed_soft_gradient_shrinks_with_tau_hinton_does_not() -> None:
    """Near-agreeing logits: the printed form's soft gradient falls ~ 1/tau^2, Hinton's stays ~ constant."""
    s, t = torch.tensor([[0.05, -0.05]], dtype=torch.float64), torch.tensor([[0.15, -0.15]], dtype=torch.float64)
    w1, w4 = (_soft_grad("weighted", s, t, tau).abs().sum().item() for tau in (1.0, 4.0))
    h1, h4 = (_soft_grad("hinton", s, t, tau).abs().sum().item() for tau in (1.0, 4.0))
    assert w1 / w4 == pytest.approx(16.0, rel=0.05)
    assert h1 / h4 == pytest.approx(1.0, rel=0.05)
    assert soft_weight(4.0, 0.7) == pytest.approx(0.7 / 0.3 / 16)
    assert soft_weight(4.0, 0.7, "hinton") == pytest.approx(0.7 / 0.3)
    assert soft_weight(2.0, 1.0) == math.inf


# ------------------------------------------------------------------------------------------ unlabelled images
@pytest.mark.parametrize("fn", [kd_weighted_loss, kd_hinton_loss])
def test_unlabelled_images_get_the_soft_term_only(fn) -> None:
    tau, alpha = 2.0, 0.6
    s, t = torch.tensor(S + [[0.1, 0.4]]), torch.tensor(T + [[1.0, -1.0]])
    y = torch.tensor([0, IGNORE_LABEL, 1])
    kind = "weighted" if fn is kd_weighted_loss else "hinton"
    ce_labelled = (-math.log(softmax(S[0])[0]) - math.log(softmax([0.1, 0.4])[1])) / 3   # sum / batch size
    expected = (1 - alpha) * ce_labelled + alpha * kd_soft_term(s, t, tau, kind).item()
    assert fn(s, t, y, tau, alpha).item() == pytest.approx(expected, rel=1e-6)
    # fully labelled batch: the usual mean form
    y_all = torch.tensor([0, 1, 1])
    ce = nn.functional.cross_entropy(s, y_all).item()
    expected = (1 - alpha) * ce + alpha * kd_soft_term(s, t, tau, kind).item()
    assert fn(s, t, y_all, tau, alpha).item() == pytest.approx(expected, rel=1e-6)
    # no label at all: the soft term alone, finite, and the unlabelled logits still get a gradient
    z = s.clone().requires_grad_(True)
    none = fn(z, t, torch.full((3,), IGNORE_LABEL), tau, alpha)
    assert none.item() == pytest.approx(alpha * kd_soft_term(s, t, tau, kind).item(), rel=1e-6)
    none.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_labels_must_match_the_batch() -> None:
    with pytest.raises(ValueError, match="labels"):
        kd_weighted_loss(torch.tensor(S), torch.tensor(T), torch.tensor([0, 1, 1]), 2.0, 0.5)
