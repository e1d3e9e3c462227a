"""Objective algebra, batched targets, and hooks that never leak."""
import pytest
import torch
from torch import nn

from workers.engine import objectives as obj
from workers.engine.errors import InvalidInput


def ctx(logits):
    return obj.ObjectiveContext(inputs={}, logits=torch.tensor(logits))


def test_class_logit_picks_a_different_class_per_row():
    value = obj.class_logit([2, 0])(ctx([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    assert value.tolist() == [3.0, 4.0]


def test_objectives_add_subtract_and_scale():
    a = obj.class_logit([0])
    b = obj.class_logit([1])
    c = ctx([[2.0, 5.0]])
    assert (a + b)(c).item() == 7.0
    assert (a - 0.5 * b)(c).item() == pytest.approx(-0.5)
    assert (-a + 1)(c).item() == -1.0
    assert (3 * a * 2)(c).item() == 12.0  # scales compose, they do not compound twice


def test_per_row_tensor_weight():
    a = obj.class_logit([0, 0])
    value = (torch.tensor([1.0, 10.0]) * a)(ctx([[2.0, 0.0], [3.0, 0.0]]))
    assert value.tolist() == [2.0, 30.0]


def test_contrast_one_is_log_odds():
    value = obj.class_logit([0], contrast=1.0)(ctx([[2.0, 0.0, 0.0]])).item()
    assert value == pytest.approx(2.0 - torch.logsumexp(torch.tensor([0.0, 0.0]), 0).item())


def test_partner_contrast_subtracts_the_partners_log_sum_exp_from_rows_that_have_partners():
    logits = [[2.0, 1.0, 0.5, 3.0], [2.0, 1.0, 0.5, 3.0]]
    plain = obj.class_logit([0, 0], contrast=0.5)(ctx(logits))
    paired = obj.class_logit([0, 0], contrast=0.5, partners=[(1, 3), ()], partner_contrast=2.0)(ctx(logits))
    partners = torch.logsumexp(torch.tensor([1.0, 3.0]), 0).item()
    assert paired[0].item() == pytest.approx(plain[0].item() - 2.0 * partners)
    assert paired[1].item() == pytest.approx(plain[1].item())          # no partners: the plain unit
    unweighted = obj.class_logit([0, 0], partners=[(1,), (2,)], partner_contrast=0.0)(ctx(logits))
    assert unweighted.tolist() == [2.0, 2.0]


def test_partner_contrast_leaves_a_finite_gradient_on_rows_without_partners():
    logits = torch.tensor([[2.0, 1.0, 0.5], [0.3, 1.0, 0.5]], requires_grad=True)
    value = obj.class_logit([0, 0], partners=[(1,), ()], partner_contrast=1.0)(
        obj.ObjectiveContext(inputs={}, logits=logits))
    value.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[1].tolist() == [1.0, 0.0, 0.0] and logits.grad[0].tolist() == [1.0, -1.0, 0.0]


def test_partner_contrast_refuses_a_class_as_its_own_partner_or_lists_that_do_not_match_the_rows():
    with pytest.raises(ValueError, match="own partner"):
        obj.class_logit([1], partners=[(1, 2)], partner_contrast=1.0)
    with pytest.raises(ValueError, match="2 partner lists for 1 targets"):
        obj.class_logit([1], partners=[(0,), (2,)], partner_contrast=1.0)


def test_channel_objective_reads_the_hooked_layer_and_hooks_are_removed():
    model = nn.Sequential(nn.Conv3d(1, 4, 1), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(2, 1, 2, 3, 3)
    model(x)
    objective = obj.channel("0", [1, 3])
    with obj.capture_activations(model, objective.layers) as acts:
        logits = model(x)
        value = objective(obj.ObjectiveContext(inputs={}, logits=logits, activations=acts))
        expected = torch.stack([acts["0"][0, 1].mean(), acts["0"][1, 3].mean()])
    assert torch.allclose(value, expected)
    assert all(not m._forward_hooks for m in model.modules())


def test_hooks_are_removed_when_the_block_raises():
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(RuntimeError):
        with obj.capture_activations(model, {"0"}):
            raise RuntimeError("boom")
    assert not model[0]._forward_hooks


def test_unknown_layer_names_the_closest_ones():
    model = nn.Sequential()
    model.add_module("fusion", nn.Linear(2, 2))
    with pytest.raises(InvalidInput, match="did you mean fusion"):
        with obj.capture_activations(model, {"fuson"}):
            pass
