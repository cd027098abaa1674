"""The class dimension of the output (``class_dim``) and positions left out of the losses (``output_mask``)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchvat import (
    AdversarialLoss,
    EntropyLoss,
    VATLoss,
    adversarial_loss,
    adversarial_perturbation,
    entropy_loss,
    vat_loss,
    virtual_adversarial_perturbation,
)
from torchvat.core import categorical_kl


class TokenNet(nn.Module):
    """[B, T, E] -> [B, T, C]: per-token layers and a causal running mean that mixes the positions."""

    def __init__(self, e: int = 5, c: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(e, 12)
        self.out = nn.Linear(12, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        steps = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype).view(1, -1, 1)
        return self.out(torch.tanh(h.cumsum(1) / steps))


class Shifted(nn.Module):
    """``net``'s logits plus a per-position constant, the same for every class (softmax unchanged)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        t = logits.shape[1]
        fixed = 50.0 * torch.arange(t, dtype=x.dtype).view(1, t, 1)
        depends_on_x = 3.0 * x.sum(-1, keepdim=True) ** 2  # a shift may even depend on the input
        return logits + fixed + depends_on_x


class Transposed(nn.Module):
    """``net``'s [B, T, C] output as [B, C, T]."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).transpose(1, 2)


class Garbage(nn.Module):
    """``net``'s output, changed at the positions where ``keep`` is 0 by a steep function of the input."""

    def __init__(self, net: nn.Module, keep: torch.Tensor) -> None:
        super().__init__()
        self.net, self.keep = net, keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = 40.0 * torch.sin(30.0 * x[..., :1]) * torch.arange(4, dtype=x.dtype)
        return torch.where(self.keep.bool().unsqueeze(-1), self.net(x), noise)


def _net(dtype=torch.float64):
    torch.manual_seed(0)
    return TokenNet().to(dtype)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("probe", ["finite_difference", "exact"])
def test_lds_is_invariant_to_a_per_position_constant_on_all_class_logits(probe):
    net = _net()
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    kw = {"eps": 0.5, "probe": probe, "class_dim": -1, "reduction": "none", "xi": 1e-4}
    plain = vat_loss(net, x, generator=_gen(), **kw)
    shifted = vat_loss(Shifted(net), x, generator=_gen(), **kw)
    assert bool((plain > 1e-4).all())
    torch.testing.assert_close(shifted, plain, rtol=1e-6, atol=1e-9)
    # with logits given, too
    given = vat_loss(Shifted(net), x, logits=Shifted(net)(x), generator=_gen(), **kw)
    torch.testing.assert_close(given, plain, rtol=1e-6, atol=1e-9)


def test_softmax_over_positions_would_not_be_invariant():
    """The test above has teeth: over dim 1 (the positions), the same shift changes the LDS."""
    net = _net()
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    plain = vat_loss(net, x, eps=0.5, generator=_gen(), reduction="none")
    shifted = vat_loss(Shifted(net), x, eps=0.5, generator=_gen(), reduction="none")
    assert not torch.allclose(plain, shifted, rtol=1e-3)


@pytest.mark.parametrize("probe", ["finite_difference", "exact"])
def test_one_token_sequences_work(probe):
    net = _net()
    x = torch.randn(4, 1, 5, dtype=torch.float64)
    lds = vat_loss(net, x, eps=0.5, probe=probe, class_dim=-1, reduction="none", generator=_gen())
    assert lds.shape == (4,) and bool((lds > 0).all())
    r = virtual_adversarial_perturbation(net, x, eps=0.5, probe=probe, class_dim=-1, generator=_gen())
    torch.testing.assert_close(r.flatten(1).norm(dim=1), torch.full((4,), 0.5, dtype=torch.float64))
    assert entropy_loss(net(x), class_dim=-1, reduction="none").shape == (4,)
    y = torch.tensor([[0], [1], [2], [3]])
    assert adversarial_loss(net, x, y, eps=0.5, class_dim=-1, reduction="none").shape == (4,)


@pytest.mark.parametrize("probe", ["finite_difference", "exact"])
@pytest.mark.parametrize("with_logits", [False, True])
def test_class_dim_last_equals_class_dim_1_on_the_transposed_output(probe, with_logits):
    net = _net()
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    kw = {"eps": 0.5, "probe": probe, "reduction": "none"}
    last = vat_loss(net, x, logits=net(x) if with_logits else None, class_dim=-1, generator=_gen(), **kw)
    tnet = Transposed(net)
    first = vat_loss(tnet, x, logits=tnet(x) if with_logits else None, generator=_gen(), **kw)
    torch.testing.assert_close(last, first, rtol=1e-10, atol=1e-12)
    r_last = virtual_adversarial_perturbation(net, x, eps=0.5, probe=probe, class_dim=2, generator=_gen())
    r_first = virtual_adversarial_perturbation(tnet, x, eps=0.5, probe=probe, generator=_gen())
    torch.testing.assert_close(r_last, r_first, rtol=1e-10, atol=1e-12)


def test_class_dim_last_equals_class_dim_1_for_the_other_losses():
    net = _net()
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    y = torch.randint(0, 4, (3, 6))
    logits = net(x)
    torch.testing.assert_close(
        categorical_kl(logits, logits.flip(0), class_dim=-1),
        categorical_kl(logits.transpose(1, 2), logits.flip(0).transpose(1, 2)),
    )
    torch.testing.assert_close(
        entropy_loss(logits, class_dim=-1, reduction="none"),
        entropy_loss(logits.transpose(1, 2), reduction="none"),
    )
    tnet = Transposed(net)
    torch.testing.assert_close(
        adversarial_perturbation(net, x, y, eps=0.3, class_dim=-1),
        adversarial_perturbation(tnet, x, y, eps=0.3),
    )
    torch.testing.assert_close(
        adversarial_loss(net, x, y, eps=0.3, class_dim=-1, reduction="none"),
        adversarial_loss(tnet, x, y, eps=0.3, reduction="none"),
    )


@pytest.mark.parametrize("probe", ["finite_difference", "exact"])
def test_masked_positions_contribute_nothing(probe):
    net = _net()
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    keep = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    kw = {"eps": 0.5, "probe": probe, "class_dim": -1, "output_mask": keep, "reduction": "none", "xi": 1e-4}
    masked = vat_loss(net, x, generator=_gen(), **kw)
    garbage = Garbage(net, keep)
    # whatever the model puts at the left-out positions, nothing changes: loss, direction, gradient
    torch.testing.assert_close(vat_loss(garbage, x, generator=_gen(), **kw), masked, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(
        vat_loss(garbage, x, logits=garbage(x), generator=_gen(), **kw), masked, rtol=1e-9, atol=1e-12
    )
    r_kw = {k: v for k, v in kw.items() if k != "reduction"}
    torch.testing.assert_close(
        virtual_adversarial_perturbation(garbage, x, generator=_gen(), **r_kw),
        virtual_adversarial_perturbation(net, x, generator=_gen(), **r_kw),
        rtol=1e-9,
        atol=1e-12,
    )
    # and without the mask the garbage does count
    unmasked = {k: v for k, v in kw.items() if k != "output_mask"}
    assert not torch.allclose(vat_loss(garbage, x, generator=_gen(), **unmasked), masked, rtol=1e-3)
    # the gradient of a left-out position's output is zero
    xg = x.clone()
    out = garbage(xg)
    out.retain_grad()
    lds = vat_loss(garbage, xg, logits=out, generator=_gen(), **{**kw, "reduction": "sum"})
    lds.backward()
    # logits are detached: the gradient reaches the parameters through the perturbed pass only
    assert out.grad is None
    garbage.zero_grad()
    vat_loss(garbage, x, generator=_gen(), **{**kw, "reduction": "sum"}).backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    vat_loss(net, x, generator=_gen(), **{**kw, "reduction": "sum"}).backward()
    for g, ref in zip(grads, (p.grad for p in net.parameters()), strict=True):
        torch.testing.assert_close(g, ref, rtol=1e-9, atol=1e-12)


def test_a_fully_masked_sample_has_zero_lds_and_a_one_dim_mask_keeps_whole_samples():
    net = _net()
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    keep = torch.tensor([[1] * 6, [0] * 6, [1] * 6])
    lds = vat_loss(net, x, eps=0.5, class_dim=-1, output_mask=keep, reduction="none", generator=_gen())
    assert lds[1].item() == 0.0 and bool((lds[[0, 2]] > 0).all())
    per_sample = vat_loss(
        net, x, eps=0.5, class_dim=-1, output_mask=torch.tensor([1, 0, 1]), reduction="none", generator=_gen()
    )
    torch.testing.assert_close(per_sample, lds)


def test_masked_positions_contribute_nothing_to_entropy_and_adversarial_loss():
    net = _net()
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    keep = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    garbage = Garbage(net, keep)
    torch.testing.assert_close(
        entropy_loss(garbage(x), class_dim=-1, output_mask=keep, reduction="none"),
        entropy_loss(net(x), class_dim=-1, output_mask=keep, reduction="none"),
    )
    h = -(F.log_softmax(net(x), -1).exp() * F.log_softmax(net(x), -1)).sum(-1)
    torch.testing.assert_close(
        entropy_loss(net(x), class_dim=-1, output_mask=keep, reduction="none"), (h * keep).sum(1)
    )
    y = torch.randint(0, 4, (3, 6))
    y_padded = torch.where(keep.bool(), y, torch.full_like(y, 3))
    kw = {"eps": 0.3, "class_dim": -1, "output_mask": keep, "reduction": "none"}
    adv = adversarial_loss(net, x, y, **kw)
    torch.testing.assert_close(adversarial_loss(garbage, x, y_padded, **kw), adv)
    # the mean over the positions that count
    r = adversarial_perturbation(net, x, y, eps=0.3, class_dim=-1, output_mask=keep)
    ce = F.cross_entropy(net(x + r).transpose(1, 2), y, reduction="none")
    torch.testing.assert_close(adv, (ce * keep).sum(1) / keep.sum(1))


def test_module_twins_take_class_dim_and_output_mask():
    net = _net()
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    keep = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    crit = VATLoss(eps=0.5, class_dim=-1)
    assert "class_dim=-1" in repr(crit)
    torch.testing.assert_close(
        crit(net, x, output_mask=keep, generator=_gen()),
        vat_loss(net, x, eps=0.5, class_dim=-1, output_mask=keep, generator=_gen()),
    )
    torch.testing.assert_close(
        EntropyLoss(class_dim=-1)(net(x), output_mask=keep), entropy_loss(net(x), class_dim=-1, output_mask=keep)
    )
    y = torch.randint(0, 4, (3, 6))
    torch.testing.assert_close(
        AdversarialLoss(eps=0.3, class_dim=-1)(net, x, y, output_mask=keep),
        adversarial_loss(net, x, y, eps=0.3, class_dim=-1, output_mask=keep),
    )


def test_bad_class_dim_and_output_mask_are_named():
    net = _net()
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"class_dim must name a non-batch dimension .* got class_dim=0"):
        vat_loss(net, x, class_dim=0)
    with pytest.raises(ValueError, match=r"class_dim=3 for an output of shape \(3, 6, 4\)"):
        vat_loss(net, x, class_dim=3)
    with pytest.raises(TypeError, match="class_dim must be an integer"):
        vat_loss(net, x, class_dim=-1.0)
    with pytest.raises(
        ValueError, match=r"class_dim=-1 needs a model output with a class dimension.* got shape \(3,\)"
    ):
        vat_loss(lambda v: v.sum((1, 2)), x, class_dim=-1, likelihood="gaussian")
    with pytest.raises(TypeError, match="class_dim must be an integer"):
        VATLoss(class_dim=True)
    with pytest.raises(ValueError, match=r"output_mask must have the shape .* \[3, 6\] here.* got \(3, 5\)"):
        vat_loss(net, x, class_dim=-1, output_mask=torch.ones(3, 5))
    with pytest.raises(TypeError, match="output_mask must be a tensor or None, got list"):
        vat_loss(net, x, class_dim=-1, output_mask=[[1] * 6] * 3)
    with pytest.raises(ValueError, match=r"classes in dimension -1, got shape \(3, 6, 1\)"):
        categorical_kl(torch.zeros(3, 6, 1), torch.zeros(3, 6, 1), class_dim=-1)
    with pytest.raises(ValueError, match="with output_mask, loss_fn must return one loss per position"):
        adversarial_loss(
            net,
            x,
            torch.zeros(3, 6, dtype=torch.long),
            class_dim=-1,
            output_mask=torch.ones(3, 6),
            loss_fn=lambda out, y: F.cross_entropy(out, y, reduction="none").mean(1),
        )


def test_a_tensor_eps_is_a_buffer_in_state_dict():
    crit = VATLoss(eps=torch.tensor([0.5, 1.0, 2.0]))
    assert "eps" in crit.state_dict() and torch.equal(crit.state_dict()["eps"], torch.tensor([0.5, 1.0, 2.0]))
    other = VATLoss(eps=torch.zeros(3))
    other.load_state_dict(crit.state_dict())
    assert torch.equal(other.eps, torch.tensor([0.5, 1.0, 2.0]))
    assert crit.double().eps.dtype == torch.float64  # follows .to() like any buffer
    crit.eps = 0.25  # a number replaces the buffer
    assert crit.eps == 0.25 and "eps" not in crit.state_dict()
    crit.eps = torch.tensor(3.0)
    assert torch.equal(crit.state_dict()["eps"], torch.tensor(3.0))
    assert "eps" in AdversarialLoss(eps=torch.tensor(0.1)).state_dict()
    assert "eps" not in VATLoss(eps=1.0).state_dict()


# issue 17, items 12 and 13: wrong shapes and labels are named


@pytest.mark.parametrize("probe", ["finite_difference", "exact"])
def test_logits_with_another_number_of_classes_are_named(probe):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x = torch.randn(5, 4)
    wrong = torch.randn(5, 4)
    with pytest.raises(
        ValueError, match=r"^logits must have the shape of the model's output on x, \(5, 3\), got \(5, 4\)"
    ):
        vat_loss(model, x, logits=wrong, probe=probe)
    with pytest.raises(
        ValueError, match=r"^logits must have the shape of the model's output on x, \(5, 3\), got \(5, 4\)"
    ):
        virtual_adversarial_perturbation(model, x, logits=wrong, probe=probe)
    with pytest.raises(ValueError, match=r"^logits must have the shape .* got \(5, 4\)"):
        vat_loss(model, x, logits=wrong, n_power=0)


@pytest.mark.parametrize("bad", [-1, 3, 7])
def test_adversarial_loss_names_a_label_out_of_range(bad):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, bad, 0])
    with pytest.raises(ValueError, match=rf"^y must hold class indices in \[0, 3\) .* got {bad} in 1 entry"):
        adversarial_loss(model, x, y)
    with pytest.raises(ValueError, match=rf"got {bad} in 1 entry"):
        adversarial_loss(model, x, y, logits=model(x.requires_grad_()))
    # -100 is cross entropy's ignore_index, and stays allowed
    assert torch.isfinite(adversarial_loss(model, x, torch.tensor([0, 1, 2, -100, 0])))


def test_the_same_generator_seed_gives_the_same_start_in_float32_and_float64():
    torch.manual_seed(0)
    x = torch.randn(4, 40)
    model = nn.Linear(40, 3)
    kw = {"eps": 1.0, "n_power": 0}  # the random start itself
    r32 = virtual_adversarial_perturbation(model, x, generator=_gen(7), **kw)
    r64 = virtual_adversarial_perturbation(model.double(), x.double(), generator=_gen(7), **kw)
    assert r64.dtype == torch.float64
    torch.testing.assert_close(r64.float(), r32, rtol=1e-6, atol=1e-7)
