"""``labeled_stats="unlabeled"``: the labeled rows normalized with the unlabeled batch's BatchNorm statistics."""

import warnings

import pytest
import torch
from torch import nn

from torchvat.models import TrimmedBatchNorm1d
from torchvat.train import Batch, TrainConfig, Trainer, get_method
from torchvat.train.batch_statistics import batch_statistics, captured_batch_statistics, normalized_with
from torchvat.train.trainer import compute_method_loss


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).train()


def _step(model: nn.Module, batch: Batch, labeled_stats: str, name: str = "vat"):
    """``compute_method_loss`` of method ``name`` (eps 0.5) with ``labeled_stats``: (loss, terms, clean)."""
    method = get_method(name, eps=0.5)
    generator = torch.Generator().manual_seed(0)
    return compute_method_loss(model, method, batch, method.weights, generator=generator, labeled_stats=labeled_stats)


def _far_batch() -> Batch:
    torch.manual_seed(1)
    # the unlabeled rows are far from the labeled ones, so the two batches' statistics differ
    return Batch(torch.randn(8, 4), torch.randint(0, 3, (8,)), torch.randn(24, 4) * 3.0 + 5.0)


@pytest.mark.parametrize(
    "layer",
    [nn.BatchNorm1d(5), nn.BatchNorm2d(5), TrimmedBatchNorm1d(5), nn.BatchNorm1d(5, momentum=None)],
    ids=["bn1d", "bn2d", "trimmed", "cumulative"],
)
def test_normalized_with_the_captured_statistics_is_the_training_pass(layer):
    torch.manual_seed(0)
    x = torch.randn(16, 5, 3, 3) if isinstance(layer, nn.BatchNorm2d) else torch.randn(16, 5)
    x[0] += 50.0  # a far row: the trimmed layer leaves it out of its statistics
    layer.train()
    with captured_batch_statistics(layer) as stats:
        expected = layer(x)
    running = (layer.running_mean.clone(), layer.running_var.clone())
    with normalized_with(stats):
        again = layer(x)
    torch.testing.assert_close(again, expected, atol=1e-5, rtol=1e-5)
    # the replayed pass updates nothing and leaves the layer as it was
    assert layer.training and int(layer.num_batches_tracked) == 1
    torch.testing.assert_close(layer.running_mean, running[0])
    torch.testing.assert_close(layer.running_var, running[1])


def test_trimmed_batch_statistics_leave_the_far_row_out():
    layer = TrimmedBatchNorm1d(1)
    x = torch.cat([torch.linspace(-1.0, 1.0, 15), torch.tensor([100.0])]).unsqueeze(1)
    mean, var = batch_statistics(layer, x)
    plain_mean, _ = batch_statistics(nn.BatchNorm1d(1), x)
    assert abs(float(mean)) < 1e-6 and float(plain_mean) > 6.0
    assert float(var) == pytest.approx(float(x[:15].var(unbiased=False)))


def test_sync_batchnorm_and_eval_layers_are_not_shared():
    model = nn.Sequential(nn.BatchNorm1d(3), nn.SyncBatchNorm(3), nn.BatchNorm1d(3).eval())
    model[0].train()
    model[1].train()
    with captured_batch_statistics(model) as stats:
        model[0](torch.randn(4, 3))
    assert list(stats) == [model[0]]


def test_unlabeled_layout_normalizes_the_labeled_rows_with_the_unlabeled_batch():
    model, batch = _bn_net(), _far_batch()
    reference = _bn_net()
    _, _, clean = _step(model, batch, "unlabeled")
    bn, ref_bn = model[1], reference[1]
    # the running statistics follow the unlabeled pass, once
    with torch.no_grad():
        reference(batch.x_unlabeled)
    assert int(bn.num_batches_tracked) == 1 and bn.training
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean)
    torch.testing.assert_close(bn.running_var, ref_bn.running_var)
    # the labeled logits: the labeled rows normalized with the unlabeled batch's statistics
    h = reference[0](batch.x_unlabeled)
    mean, var = h.mean(0), h.var(0, unbiased=False)
    g = (reference[0](batch.x_labeled) - mean) / torch.sqrt(var + ref_bn.eps) * ref_bn.weight + ref_bn.bias
    torch.testing.assert_close(clean.labeled_logits, reference[3](reference[2](g)), atol=1e-5, rtol=1e-5)
    assert clean.labeled_logits.requires_grad and not clean.unlabeled_logits.requires_grad
    # and not with their own batch's (the "own" layout)
    own = _bn_net()
    _, _, own_clean = _step(own, batch, "own")
    assert not torch.allclose(own_clean.labeled_logits, clean.labeled_logits, atol=1e-3)
    torch.testing.assert_close(own_clean.unlabeled_logits, clean.unlabeled_logits)


def test_the_cross_entropy_reaches_the_weights_through_the_unlabeled_statistics():
    model, batch = _bn_net(), _far_batch()
    reference = _bn_net()
    _, terms, _ = _step(model, batch, "unlabeled")
    terms["ce"].backward()
    # by hand: the statistics of the unlabeled rows, with their graph
    h = reference[0](batch.x_unlabeled)
    mean, var = h.mean(0), h.var(0, unbiased=False)
    bn = reference[1]
    g = (reference[0](batch.x_labeled) - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias
    nn.functional.cross_entropy(reference[3](reference[2](g)), batch.y_labeled).backward()
    torch.testing.assert_close(model[0].weight.grad, reference[0].weight.grad, atol=1e-5, rtol=1e-4)
    # with the statistics detached the first layer's gradient is another one
    detached = _bn_net()
    g = (detached[0](batch.x_labeled) - mean.detach()) / torch.sqrt(var.detach() + bn.eps) * detached[1].weight
    nn.functional.cross_entropy(detached[3](detached[2](g + detached[1].bias)), batch.y_labeled).backward()
    assert not torch.allclose(detached[0].weight.grad, reference[0].weight.grad, atol=1e-4)


def test_unlabeled_layout_trains_every_parameter():
    model, batch = _bn_net(), _far_batch()
    loss, _, _ = _step(model, batch, "unlabeled")
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", ["vat", "vat+ent", "trades", "at+vat"])
def test_unlabeled_layout_replays_the_clean_pass_masks(name, dropout_net, mask_recorder):
    model = dropout_net()
    masks = mask_recorder(model)
    torch.manual_seed(1)
    batch = Batch(torch.randn(8, 6), torch.randint(0, 3, (8,)), torch.randn(24, 6))
    method = get_method(name, eps=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compute_method_loss(
            model, method, batch, method.weights, generator=torch.Generator().manual_seed(0), labeled_stats="unlabeled"
        )
    by_rows = {m.shape[0]: m for m in masks[:2]}
    assert sorted(by_rows) == [8, 24]
    for i, m in enumerate(masks[2:], 2):
        assert torch.equal(m, by_rows[m.shape[0]]), f"{name}: pass {i} ({m.shape[0]} rows) drew another dropout mask"


def test_joint_and_supervised_passes_ignore_labeled_stats():
    for name, regularize in (("vat", "all"), ("supervised", "unlabeled")):
        outputs = []
        for labeled_stats in ("own", "unlabeled"):
            model, batch = _bn_net(), _far_batch()
            method = get_method(name, eps=0.5, regularize=regularize) if name != "supervised" else get_method(name)
            loss, _, _ = compute_method_loss(
                model,
                method,
                batch if method.uses_unlabeled else Batch(batch.x_labeled, batch.y_labeled),
                method.weights,
                generator=torch.Generator().manual_seed(0),
                labeled_stats=labeled_stats,
            )
            outputs.append((loss.detach(), model[1].running_mean.clone()))
        torch.testing.assert_close(outputs[0], outputs[1])


def test_bad_labeled_stats_is_refused_with_its_name():
    model, batch = _bn_net(), _far_batch()
    method = get_method("vat", eps=0.5)
    with pytest.raises(ValueError, match=r"labeled_stats.*'batch'"):
        compute_method_loss(model, method, batch, method.weights, labeled_stats="batch")
    with pytest.raises(ValueError, match="labeled_stats"):
        TrainConfig(labeled_stats="labeled")


def test_trainer_passes_labeled_stats_on():
    torch.manual_seed(0)
    x_l, y_l, x_u = torch.randn(16, 4), torch.randint(0, 3, (16,)), torch.randn(64, 4) * 3.0 + 5.0
    means = {}
    for labeled_stats in ("own", "unlabeled"):
        trainer = Trainer(
            _bn_net(),
            x_labeled=x_l,
            y_labeled=y_l,
            x_unlabeled=x_u,
            iterations=3,
            batch_size=8,
            unlabeled_batch_size=32,
            eval_every=3,
            progress=False,
            device="cpu",
            labeled_stats=labeled_stats,
        )
        trainer.fit()
        means[labeled_stats] = float(trainer.model[1].running_mean.mean())
    # the running statistics follow the unlabeled rows (around 5 before the first Linear) only with "unlabeled"
    assert abs(means["unlabeled"] - means["own"]) > 0.1


def test_a_compiled_model_normalizes_with_the_shared_statistics():
    model = _bn_net()
    compiled = torch.compile(model)
    batch = _far_batch()
    with captured_batch_statistics(model) as stats:
        compiled(batch.x_unlabeled)
    with normalized_with(stats):
        shared = compiled(batch.x_labeled)
        eager = model(batch.x_labeled)
    torch.testing.assert_close(shared, eager, rtol=1e-5, atol=1e-5)
    # and after the context the compiled model normalizes with the batch's own statistics again
    torch.testing.assert_close(compiled(batch.x_labeled), model(batch.x_labeled), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(shared, model(batch.x_labeled), atol=1e-3)


def test_without_batchnorm_the_unlabeled_layout_is_the_own_one():
    """No statistics to share: the same passes in the same order, and no graph kept for the unlabeled pass."""
    batch = _far_batch()
    results = {}
    for labeled_stats in ("own", "unlabeled"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        loss, _, clean = _step(model, batch, labeled_stats)
        assert not clean.unlabeled_logits.requires_grad
        results[labeled_stats] = loss.detach()
    torch.testing.assert_close(results["own"], results["unlabeled"], rtol=0, atol=0)
