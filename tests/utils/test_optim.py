"""WarmupClipAdamW's learning-rate schedule: the warm-up as a fraction of the run, the
cosine decay after it, its state across a resume, and its refusals."""

from __future__ import annotations

import math

import pytest
import torch

from utils.optim import WarmupClipAdamW, describe_optimizer, last_step_lr


def _expected_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    factor = min(1.0, step / warmup) if warmup else 1.0
    if schedule == "cosine" and step > warmup:
        factor *= 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))
    return factor


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
@pytest.mark.parametrize("warmup", [0, 3])
def test_steps_equal_adamw_at_the_scheduled_rate(schedule: str, warmup: int) -> None:
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    reference = torch.nn.Parameter(weight.detach().clone())
    ours = WarmupClipAdamW([weight], lr=0.1, warmup_steps=warmup, lr_schedule=schedule,
                           weight_decay=0.01)
    ours.plan_run(10)
    plain = torch.optim.AdamW([reference], lr=0.1, weight_decay=0.01)
    for step in range(1, 11):
        grad = torch.randn(4, dtype=torch.float64)
        weight.grad, reference.grad = grad.clone(), grad.clone()
        rate = 0.1 * _expected_factor(step, warmup, 10, schedule)
        plain.param_groups[0]["lr"] = rate
        assert ours.lr_factor(step) * 0.1 == pytest.approx(rate, abs=1e-15)
        ours.step()
        plain.step()
        torch.testing.assert_close(weight, reference, rtol=0, atol=1e-14)
        assert ours.param_groups[0]["lr"] == 0.1  # the base rate is kept
    if schedule == "cosine":
        assert ours.lr_factor(10) == pytest.approx(0.0, abs=1e-15)
        assert ours.lr_factor(3 + warmup) < 1.0


def test_the_warmup_fraction_and_the_cosine_share_the_plan() -> None:
    optimizer = WarmupClipAdamW([torch.nn.Parameter(torch.zeros(1))], warmup_steps=None,
                                warmup_fraction=0.1, max_warmup_steps=5,
                                lr_schedule="cosine")
    optimizer.plan_run(100)
    assert optimizer.warmup_steps == 5 and optimizer.total_steps == 100
    assert optimizer.lr_factor(5) == 1.0
    halfway = 0.5 * (1 + math.cos(math.pi * 47 / 95))
    assert optimizer.lr_factor(5 + 47) == pytest.approx(halfway)


def test_a_resumed_cosine_run_continues_exactly() -> None:
    grads = [torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.1]), torch.tensor([-0.3, 0.7])] * 2

    def fresh() -> tuple[torch.nn.Parameter, WarmupClipAdamW]:
        weight = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
        optimizer = WarmupClipAdamW([weight], lr=0.1, warmup_steps=2, lr_schedule="cosine")
        optimizer.plan_run(len(grads))
        return weight, optimizer

    whole, optimizer = fresh()
    for grad in grads:
        whole.grad = grad.double()
        optimizer.step()
    cut, first = fresh()
    for grad in grads[:3]:
        cut.grad = grad.double()
        first.step()
    resumed_weight, resumed = fresh()
    with torch.no_grad():
        resumed_weight.copy_(cut)
    resumed.load_state_dict(first.state_dict())
    for grad in grads[3:]:
        resumed_weight.grad = grad.double()
        resumed.step()
    torch.testing.assert_close(resumed_weight, whole, rtol=0, atol=0)


def test_refusals_name_what_was_expected() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        WarmupClipAdamW(params, lr_schedule="linear")
    optimizer = WarmupClipAdamW(params, lr_schedule="cosine")
    params[0].grad = torch.ones(1)
    with pytest.raises(RuntimeError, match="call plan_run"):
        optimizer.step()
    assert optimizer.param_groups[0]["warmup_step"] == 0 and not optimizer.state
    with pytest.raises(ValueError, match="total_steps must be non-negative"):
        optimizer.plan_run(-1)


def test_the_run_header_and_log_name_the_schedule_and_the_rate_of_the_last_step() -> None:
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = WarmupClipAdamW([weight], lr=0.1, warmup_steps=2, lr_schedule="cosine",
                                weight_decay=0.0)
    optimizer.plan_run(6)
    assert describe_optimizer(optimizer) == \
        "WarmupClipAdamW(lr=0.1, betas=(0.9, 0.999), warmup_steps=2, lr_schedule=cosine)"
    assert last_step_lr(optimizer) == 0.1  # no step yet: the base rate
    rates = []
    for _ in range(6):
        weight.grad = torch.ones(2)
        optimizer.step()
        rates.append(last_step_lr(optimizer))
    expected = [0.1 * _expected_factor(step, 2, 6, "cosine") for step in range(1, 7)]
    assert rates == pytest.approx(expected, abs=1e-15) and rates[-1] == pytest.approx(0.0)
    plain = torch.optim.SGD([weight], lr=0.5, momentum=0.9)
    assert describe_optimizer(plain) == "SGD(lr=0.5, momentum=0.9)"
    assert last_step_lr(plain) == 0.5
