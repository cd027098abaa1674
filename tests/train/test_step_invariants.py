"""What a training step and a resume keep: the clean pass's dropout masks, the schedule, the model's mode,
the whole state, the logged lines, the entropy term's gradient and the pass count."""

import warnings

import pytest
import torch
from torch import nn

from torchvat.train import Batch, IterationSchedule, TrainConfig, build_optimizer, get_method
from torchvat.train.trainer import compute_method_loss

from .conftest import assert_same_tree


# trainer passes share the clean masks
@pytest.mark.parametrize(
    ("name", "regularize"),
    [
        ("vat", "unlabeled"),
        ("vat", "all"),
        ("at", "unlabeled"),
        ("at+vat", "unlabeled"),
        ("vat+ent", "unlabeled"),
        ("pgd-at", "unlabeled"),
        ("trades", "unlabeled"),
        ("trades", "all"),
    ],
)
def test_trainer_searches_replay_the_clean_pass_masks(name, regularize, dropout_net, mask_recorder):
    model = dropout_net()
    masks = mask_recorder(model)
    torch.manual_seed(1)
    batch = Batch(torch.randn(8, 6), torch.randint(0, 3, (8,)), torch.randn(24, 6))
    method = get_method(name, eps=0.5, regularize=regularize)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, clean = compute_method_loss(
            model, method, batch, method.weights, generator=torch.Generator().manual_seed(0)
        )
    n_clean = 1 if clean.unlabeled_x is None else 2
    by_rows = {}
    for m in masks[:n_clean]:
        by_rows[m.shape[0]] = m
    for i, m in enumerate(masks[n_clean:], n_clean):
        # the AT search of a joint pass sees the labeled rows of the joint pass
        ref = by_rows.get(m.shape[0])
        if ref is None:
            ref = masks[0][: m.shape[0]]
        assert torch.equal(m, ref), f"{name}: pass {i} ({m.shape[0]} rows) drew another dropout mask"


# schedule is a pure function of the step
def test_schedule_values_do_not_depend_on_the_order_of_apply():
    cfg = TrainConfig(iterations=12, lr=1e-3, decay_fraction=0.25)
    opt = build_optimizer(nn.Linear(2, 2), cfg)
    sched = IterationSchedule(opt, cfg)
    forward = []
    for t in range(13):
        sched.apply(t)
        forward.append((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]))
    backward = []
    for t in reversed(range(13)):
        sched.apply(t)
        backward.append((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]))
    assert backward[::-1] == forward


# predict/evaluate keep the caller's mode
def test_predict_and_evaluate_keep_the_models_mode_and_use_eval_mode():
    from torchvat.train import Trainer

    torch.manual_seed(0)
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.Linear(16, 3))
    trainer = Trainer(model, x_labeled=x[:8], y_labeled=y[:8], method="supervised", iterations=1, progress=False)
    for mode in (True, False):
        model.train(mode)
        a = trainer.predict_logits(x)
        assert model.training is mode and all(m.training is mode for m in model.modules())
        trainer.evaluate(x, y)
        assert model.training is mode
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(a, model(x))  # eval-mode logits, deterministic


# state round trip is the identity
def _moons():
    from sklearn.datasets import make_moons

    x, y = make_moons(300, noise=0.1, random_state=0)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    return dict(x_labeled=x[:8], y_labeled=y[:8], x_unlabeled=x[:200], x_test=x[200:], y_test=y[200:])


def _net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))


def test_trainer_state_round_trip_is_the_identity():
    from torchvat.train import Callback, Trainer

    class StopAt(Callback):
        def on_step_end(self, **kw):
            if kw["step"] == 5:
                kw["trainer"].should_stop = True

    # a state with everything non-trivial: a log accumulator holding steps 4-5, a collapse streak,
    # a derived eps, skipped steps
    opts = dict(
        method="vat",
        iterations=12,
        eval_every=2,
        log_every=3,
        batch_size=8,
        unlabeled_batch_size=16,
        progress=False,
        collapse_patience=5,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = Trainer(_net(0), **_moons(), callbacks=[StopAt()], **opts)
        first.fit()
        first._collapse.collapse_streak, first._collapse.class_streak, first.skipped_steps = 1, 2, 3
        state = first.state_dict()
        other = Trainer(_net(9), **_moons(), **opts)
        other.load_state_dict(state)
    assert_same_tree(other.state_dict(), state)


def test_resumed_run_logs_the_same_training_lines():
    from torchvat.train import Callback, Trainer

    class Logs(Callback):
        def __init__(self, stop=None):
            self.lines, self.stop = {}, stop

        def on_step_end(self, **kw):
            if kw["logs"] is not None:
                self.lines[kw["step"]] = kw["logs"]
            if kw["step"] == self.stop:
                kw["trainer"].should_stop = True

    opts = dict(
        method="vat", iterations=12, eval_every=4, log_every=3, batch_size=8, unlabeled_batch_size=16, progress=False
    )
    full = Logs()
    Trainer(_net(0), **_moons(), callbacks=[full], **opts).fit()
    first = Trainer(_net(0), **_moons(), callbacks=[Logs(stop=5)], **opts)
    first.fit()
    state = first.state_dict()
    rest = Logs()
    resumed = Trainer(_net(3), **_moons(), callbacks=[rest], **opts)
    resumed.load_state_dict(state)
    resumed.fit()
    assert rest.lines == {k: v for k, v in full.lines.items() if k > 5}


# VAT+EntMin's entropy term
@pytest.mark.parametrize("regularize", ["unlabeled", "all"])
def test_entmin_term_is_the_entropy_of_the_regularized_rows_with_gradient(regularize):
    from torchvat import entropy_loss

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    batch = Batch(torch.randn(8, 6), torch.randint(0, 3, (8,)), torch.randn(24, 6))
    method = get_method("vat+ent", eps=0.5, regularize=regularize)
    _, terms, _ = compute_method_loss(model, method, batch, method.weights, generator=torch.Generator().manual_seed(0))
    rows = batch.x_unlabeled if regularize == "unlabeled" else torch.cat([batch.x_labeled, batch.x_unlabeled])
    torch.testing.assert_close(terms["ent"], entropy_loss(model(rows)))
    assert terms["ent"].requires_grad
    grads = torch.autograd.grad(terms["ent"], list(model.parameters()))
    ref = torch.autograd.grad(entropy_loss(model(rows)), list(model.parameters()))
    for g, r in zip(grads, ref, strict=True):
        torch.testing.assert_close(g, r)


# cost of a training step
class _Counting(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
        self.calls = []

    def forward(self, x):
        self.calls.append((x.shape[0], torch.is_grad_enabled()))
        return self.net(x)


def test_at_step_reuses_the_clean_graph_and_vat_target_pass_has_no_graph():
    model = _Counting()
    batch = Batch(torch.randn(8, 6), torch.randint(0, 3, (8,)), torch.randn(24, 6))
    method = get_method("at", eps=0.5)
    compute_method_loss(model, method, Batch(batch.x_labeled, batch.y_labeled), method.weights)
    assert len(model.calls) == 2  # clean + perturbed: the input gradient comes from the clean graph
    model.calls.clear()
    method = get_method("vat", eps=0.5)
    _, _, clean = compute_method_loss(model, method, batch, method.weights, generator=torch.Generator())
    assert model.calls[1] == (24, False) and not clean.unlabeled_logits.requires_grad


# BatchNorm's running statistics are those the cross entropy is fitted under
@pytest.mark.parametrize(
    ("name", "regularize"),
    [("vat", "unlabeled"), ("vat+ent", "unlabeled"), ("trades", "unlabeled"), ("vat", "all"), ("trades", "all")],
)
def test_running_statistics_come_from_the_pass_of_the_cross_entropy(name, regularize):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).train()
    reference = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8)).train()
    reference.load_state_dict(model[:2].state_dict())
    # the unlabeled rows are far from the labeled ones: their statistics would show in the running mean
    batch = Batch(torch.randn(8, 4), torch.randint(0, 3, (8,)), torch.randn(24, 4) + 5.0)
    method = get_method(name, eps=0.5, regularize=regularize)
    compute_method_loss(model, method, batch, method.weights, generator=torch.Generator().manual_seed(0))
    joint = method.joint_clean_pass
    with torch.no_grad():  # the pass the cross entropy is fitted under: joint, or the labeled rows alone
        reference(torch.cat([batch.x_labeled, batch.x_unlabeled]) if joint else batch.x_labeled)
    bn, ref_bn = model[1], reference[1]
    assert int(bn.num_batches_tracked) == 1
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean)
    torch.testing.assert_close(bn.running_var, ref_bn.running_var)
