"""Smoke and correctness tests of the step-cost benchmark (no timing assertions)."""

import copy

import pytest
import torch
from torch import nn

from ._bench import load as _load

step_cost = _load("step_cost")
seed_vat = _load("_seed_vat")


@pytest.fixture(scope="module")
def quick_result():
    return step_cost.main(["--quick"])


def test_quick_run_reports_every_step_type(quick_result, capsys):
    rows = {r.name: r for r in quick_result["rows"]}
    assert tuple(rows) == step_cost.STEP_TYPES
    for name in step_cost.STEP_TYPES:
        assert f"| {name} |" in quick_result["table"]
        assert len(quick_result["times"][name]) == 2
        assert rows[name].median_ms > 0 and rows[name].gflop > 0 and rows[name].rows_per_s > 0
    assert rows["supervised"].ratio == pytest.approx(1.0)
    assert quick_result["speedup"] > 0


def test_pass_counts(quick_result):
    rows = {r.name: r for r in quick_result["rows"]}
    # seed: labeled, clean no-grad, probe, perturbed; the trainer's VAT: labeled, unlabeled clean
    # (no grad, the target), probe, perturbed; AT: clean labeled, perturbed labeled
    assert (rows["supervised"].forward, rows["supervised"].backward) == (1, 1)
    assert rows["seed-vat"].forward == 4
    assert (rows["torchvat-vat"].forward, rows["torchvat-vat"].backward) == (4, 3)
    assert rows["torchvat-vat-train-step"].forward == 4
    assert rows["torchvat-at"].forward == 2
    # the entropy term backpropagates the unlabeled clean pass too
    assert rows["torchvat-vat+ent"].backward == rows["torchvat-vat"].backward + 1
    # the seed's probe backward also computes parameter gradients; the trainer's probe does not
    assert rows["seed-vat"].gflop > rows["torchvat-vat"].gflop
    assert rows["torchvat-vat-train-step"].gflop == pytest.approx(rows["torchvat-vat"].gflop)


def test_pass_bound_counts_forward_equivalents():
    # 32 labeled rows at 3 forward-equivalents, 128 unlabeled at 7 (seed) or 6 (input-only probe)
    assert step_cost.pass_bound("seed-vat", 32, 128) == pytest.approx((32 * 3 + 128 * 7) / (160 * 3))
    assert step_cost.pass_bound("torchvat-vat", 32, 128) == pytest.approx((32 * 3 + 128 * 6) / (160 * 3))
    assert step_cost.pass_bound("supervised", 5, 7) == 1.0


def test_method_step_is_the_trainers_step():
    # the benchmark's method step updates the model exactly as Trainer.train_step does
    torch.manual_seed(0)
    model = step_cost.MLP(6, 3, hidden_sizes=(8,)).train()
    batch = (torch.randn(4, 6), torch.tensor([0, 1, 2, 0]), torch.randn(8, 6))
    cfg = step_cost.StepConfig(eps=0.5)
    ours = step_cost.make_trainer("torchvat-vat", copy.deepcopy(model), batch, cfg)
    theirs = step_cost.make_trainer("torchvat-vat", copy.deepcopy(model), batch, cfg)
    tb = step_cost.Batch(*batch)
    torch.manual_seed(3)
    loss = step_cost.method_step(ours, tb)
    torch.manual_seed(3)
    metrics = theirs.train_step(tb)
    torch.testing.assert_close(loss, metrics["loss"])
    for p, q in zip(ours.model.parameters(), theirs.model.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert any(not torch.equal(p, q) for p, q in zip(ours.model.parameters(), model.parameters(), strict=True))


def test_operator_counts(quick_result):
    rows = {r.name: r for r in quick_result["rows"]}
    assert all(r.aten_ops > 0 for r in rows.values())
    # the VAT steps make four forward passes where the supervised step makes one
    assert rows["seed-vat"].aten_ops > 2 * rows["supervised"].aten_ops
    assert rows["torchvat-vat-train-step"].aten_ops > rows["torchvat-vat"].aten_ops
    with step_cost.OpCounter() as counter:
        torch.randn(3).add(1).sum()
    assert counter.total == 3


def test_flop_counter_counts_matmuls():
    a, b = torch.randn(3, 4), torch.randn(4, 5)
    with step_cost.FlopCounter() as counter:
        torch.mm(a, b)
    assert counter.total == 2 * 3 * 4 * 5


def test_unknown_step_type_is_rejected():
    with pytest.raises(SystemExit, match="unknown step type 'nope'"):
        step_cost.main(["--quick", "--steps", "supervised,nope"])


@pytest.mark.slow
def test_memory_child_runs_in_a_subprocess():
    mib = step_cost.measure_memory_subprocess(["--quick"], "torchvat-vat", timeout=120)
    assert mib >= 0.0


def test_seed_lds_matches_hand_computation():
    torch.manual_seed(0)
    lin = nn.Linear(5, 3).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    xi, eps = 10.0, 1.0
    torch.manual_seed(123)
    lds = seed_vat.SeedVATLoss(xi=xi, eps=eps, ip=1)(lin, x)

    # by hand: logits z = W x + b, p = softmax(z); the seed draws d ~ U(-0.5, 0.5) in float32
    torch.manual_seed(123)
    d = torch.rand(x.shape).sub(0.5).double()
    d = d / (d.norm(dim=1, keepdim=True) + 1e-8)
    w, b = lin.weight.detach(), lin.bias.detach()
    p = torch.softmax(x @ w.T + b, dim=1)
    q = torch.softmax((x + xi * d) @ w.T + b, dim=1)
    # d/dd of KL(p || q(x + xi d)) / B = xi / B * W^T (q - p), per sample
    g = (xi / x.shape[0]) * (q - p) @ w
    r = eps * g / (g.norm(dim=1, keepdim=True) + 1e-8)
    q_adv = torch.softmax((x + r) @ w.T + b, dim=1)
    expected = (p * (p.log() - q_adv.log())).sum(1).mean()
    assert lds.item() == pytest.approx(expected.item(), rel=1e-6)


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return step_cost.MLP(6, 3, hidden_sizes=(8,)).train()


def test_seed_vat_wipes_accumulated_grads():
    model = _tiny()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    seed_vat.SeedVATLoss(xi=1.0, eps=0.5)(model, torch.randn(8, 6))
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_profile_and_bookkeeping_tables(capsys):
    result = step_cost.main(["--quick", "--steps", "seed-vat,torchvat-vat", "--no-flops", "--profile", "1"])
    out = capsys.readouterr().out
    assert "### profile: seed-vat" in out and "### profile: torchvat-vat" in out
    assert "| RNGSnapshot.capture |" in out and "| frozen_batchnorm_stats (enter+exit) |" in out
    assert "BufferSnapshot + restore |" in out and "_foreach_norm per device and dtype |" in out
    assert "speedup torchvat-vat over seed-vat" in out and result["speedup"] > 0


def test_loss_call_table_compares_both_ways_of_getting_the_target(capsys):
    step_cost.main(["--quick", "--steps", "supervised", "--no-flops", "--loss-call"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| clean pass of its own") or "probe's primal" in line]
    assert len(rows) == 2
    before, now = (int(r.rstrip(" |").rsplit("|", 1)[1]) for r in rows)
    assert now < before  # one forward pass fewer


# The GPU checks (benchmarks/gpu_checks.sh) run the compiled and channels_last paths of this script in
# one short device run; these tests run the same paths on the CPU so that run cannot fail on them.


def _same_step(a: step_cost.Step, b: step_cost.Step, seed: int = 5) -> None:
    """One step of each from the same state and RNG: the same loss and the same updated parameters."""
    torch.manual_seed(seed)
    la = a.run()
    torch.manual_seed(seed)
    lb = b.run()
    torch.testing.assert_close(la, lb, rtol=1e-4, atol=1e-5)
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compiled_steps_train_like_the_eager_ones():
    torch.manual_seed(0)
    model = step_cost.MLP(16, 10, hidden_sizes=(32, 16)).train()
    batch = (torch.rand(4, 16), torch.randint(0, 10, (4,)), torch.rand(8, 16))
    cfg = step_cost.StepConfig(eps=0.5)
    for eager, compiled in (("seed-vat", step_cost.SEED_COMPILED), ("torchvat-vat", step_cost.COMPILED)):
        a, b = step_cost.make_step(eager, model, batch, cfg), step_cost.make_step(compiled, model, batch, cfg)
        torch._dynamo.reset()
        for _ in range(2):  # the first compiles, the second reuses what it compiled
            _same_step(a, b)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0, f"{compiled} compiled nothing"
        # the step moved the parameters: the comparison is not between two untouched models
        assert any(not torch.equal(p, q) for p, q in zip(a.model.parameters(), model.parameters(), strict=True))


@pytest.mark.slow
def test_compile_option_reports_both_compiled_steps(capsys):
    result = step_cost.main(["--quick", "--compile", "--steps", "seed-vat,torchvat-vat", "--no-flops"])
    out = capsys.readouterr().out
    rows = {r.name: r for r in result["rows"]}
    assert set(rows) == {"seed-vat", "torchvat-vat", step_cost.COMPILED, step_cost.SEED_COMPILED}
    assert all(r.median_ms > 0 for r in rows.values())
    assert f"speedup {step_cost.COMPILED} over {step_cost.SEED_COMPILED}" in out
    assert f"compile + 2 warm-up steps of {step_cost.SEED_COMPILED}" in out


def test_channels_last_puts_every_step_type_in_that_format():
    args = step_cost.build_parser().parse_args(
        ["--model", "wrn-28-2", "--image-size", "8", "--labeled", "2", "--unlabeled", "2", "--channels-last"]
    )
    model, x_l, _, x_u = step_cost.build(args)
    assert x_l.is_contiguous(memory_format=torch.channels_last)
    assert x_u.is_contiguous(memory_format=torch.channels_last)
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    plain = step_cost.build(step_cost.build_parser().parse_args(["--model", "wrn-28-2", "--image-size", "8"]))
    assert not plain[1].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_channels_last_steps_give_the_numbers_of_the_default_format():
    # WRN-28-2 on 8x8 images: each step type in channels_last updates the model as in the default format
    base = step_cost.build_parser().parse_args(
        ["--model", "wrn-28-2", "--image-size", "8", "--labeled", "2", "--unlabeled", "3"]
    )
    model, x_l, y_l, x_u = step_cost.build(base)
    model = model.double()
    x_l, x_u = x_l.double(), x_u.double()
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    cl = tuple(t.contiguous(memory_format=torch.channels_last) for t in (x_l, x_u))
    cfg = step_cost.StepConfig(eps=0.5)
    for name in ("supervised", "seed-vat", "torchvat-vat"):
        a = step_cost.make_step(name, model, (x_l, y_l, x_u), cfg)
        b = step_cost.make_step(name, last, (cl[0], y_l, cl[1]), cfg)
        _same_step(a, b)
