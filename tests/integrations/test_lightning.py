"""The Lightning integration: a tiny two-moons run through ``lightning.Trainer`` on CPU."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities import CombinedLoader
from sklearn.datasets import make_moons
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchvat import suggest_eps
from torchvat.integrations.lightning import parse_batch, vat_module
from torchvat.train import Batch, VirtualAdversarialTraining
from torchvat.train.defaults import derive_eps


def moons(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = make_moons(n, noise=0.1, random_state=seed)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def bn_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(2, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2)
    )


def lightning_trainer(steps: int = 20) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def combined_loaders(x: torch.Tensor, y: torch.Tensor) -> CombinedLoader:
    labeled = DataLoader(TensorDataset(x[:8], y[:8]), batch_size=8, shuffle=True)
    unlabeled = DataLoader(TensorDataset(x), batch_size=32, shuffle=True)
    return CombinedLoader({"labeled": labeled, "unlabeled": unlabeled}, mode="max_size_cycle")


def test_vat_run_with_combined_loader_logs_terms_and_keeps_bn_stats_clean():
    x, y = moons()
    model = bn_mlp()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    module = vat_module(model, "vat", eps=0.3, n_power=2, lr=1e-2)
    trainer = lightning_trainer(20)
    trainer.fit(module, train_dataloaders=combined_loaders(x, y))
    assert trainer.global_step == 20
    logged = trainer.logged_metrics
    assert {"train_ce", "train_vat", "train_loss", "train_acc"} <= set(logged)
    assert all(math.isfinite(float(logged[k])) for k in ("train_ce", "train_vat", "train_loss"))
    assert float(logged["train_vat"]) > 0
    assert float(logged["train_loss"]) == pytest.approx(
        float(logged["train_ce"]) + float(logged["train_vat"]), rel=1e-5
    )
    after = model.state_dict()
    assert not torch.equal(after["0.weight"], before["0.weight"])
    # BatchNorm's running statistics come from the labeled pass only (the default separate passes: the
    # unlabeled pass normalizes with its own batch and leaves them), one update per step
    assert module.method.regularize == "unlabeled"
    assert int(after["1.num_batches_tracked"]) == 20
    assert not torch.equal(after["1.running_mean"], before["1.running_mean"])


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_perturbed_passes_do_not_move_running_statistics():
    """Same run with eps=0 vs eps>0 starting from the same state: identical running mean after one step."""
    x, y = moons()
    stats = []
    for eps in (0.0, 1.0):
        model = bn_mlp()
        module = vat_module(model, "vat", eps=eps, lr=1e-2)
        module.train()
        batch = (x[:8], y[:8], x[:32])
        torch.manual_seed(0)
        loss = module.training_step(batch, 0)
        assert torch.isfinite(loss)
        stats.append(model[1].running_mean.clone())
    torch.testing.assert_close(stats[0], stats[1], rtol=0, atol=0)


def test_tuple_batches_and_method_instance_and_validation():
    x, y = moons()
    data = TensorDataset(x[:16], y[:16], x[:16])  # (x_l, y_l, x_u) per row: regularize every row
    model = bn_mlp(1)
    before = model[0].weight.detach().clone()
    module = vat_module(model, VirtualAdversarialTraining(eps=0.3, alpha=2.0, regularize="all"))
    val = DataLoader(TensorDataset(x[200:], y[200:]), batch_size=100)
    trainer = lightning_trainer(6)
    trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=8), val_dataloaders=val)
    metrics = trainer.callback_metrics
    assert {"train_vat", "val_loss", "val_acc"} <= set(metrics)
    assert 0.0 <= float(metrics["val_acc"]) <= 1.0
    assert not torch.equal(model[0].weight, before)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_eps_derived_from_first_batch_and_supervised_ignores_unlabeled():
    x, y = moons()
    module = vat_module(bn_mlp(), "vat", lr=1e-2)
    module.train()
    module.training_step({"x_labeled": x[:8], "y_labeled": y[:8], "x_unlabeled": x[:64]}, 0)
    assert module.method.eps is not None and module.method.eps > 0
    sup = vat_module(bn_mlp(), "supervised")
    sup.train()
    torch.manual_seed(0)
    loss = sup.training_step((x[:8], y[:8], x[:64]), 0)
    assert int(sup.model[1].num_batches_tracked) == 1  # the unlabeled rows were not used
    torch.manual_seed(0)  # same dropout mask: the loss is the plain cross-entropy
    assert loss.item() == pytest.approx(nn.functional.cross_entropy(sup.model(x[:8]), y[:8]).item(), rel=1e-6)


def test_derived_eps_is_the_trainers_rule_on_the_first_batch():
    x, y = moons()
    module = vat_module(bn_mlp(), "vat", lr=1e-2)
    module._ensure_eps(parse_batch({"x_labeled": x[:8], "y_labeled": y[:8], "x_unlabeled": x[:64]}))
    # the engine's function (Trainer's eps=None), on the batch's labeled and unlabeled rows
    assert module.method.eps == pytest.approx(derive_eps(x[:8], x[:64]))
    assert module.method.eps == pytest.approx(float(suggest_eps(x[:64], rule="labeled", labeled=x[:8])))


def test_regularize_defaults_to_the_engines_and_auto_is_resolved_by_the_model():
    assert vat_module(bn_mlp(), "vat").method.regularize == "unlabeled"  # the engine's default
    assert vat_module(bn_mlp(), "vat", regularize="auto").method.regularize == "all"  # BatchNorm: one joint pass
    plain = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    assert vat_module(plain, "vat", regularize="auto").method.regularize == "unlabeled"
    module = vat_module(bn_mlp(), "vat", regularize="unlabeled")  # an explicit value is kept
    assert module.method.regularize == "unlabeled"
    assert vat_module(bn_mlp(), "vat", regularize="auto").hparams["regularize"] == "all"  # saved resolved


def test_parse_batch_layouts_and_errors():
    xl, yl, xu = torch.zeros(2, 3), torch.tensor([0, 1]), torch.ones(4, 3)
    assert parse_batch(Batch(xl, yl, xu)).x_unlabeled is xu
    assert parse_batch((xl, yl, xu)).x_unlabeled is xu
    assert parse_batch({"labeled": [xl, yl], "unlabeled": (xu, torch.zeros(4))}).x_unlabeled is xu
    with pytest.raises(ValueError, match="got length 4"):
        parse_batch((xl, yl, xu, xu))
    with pytest.raises(TypeError, match=r"got keys \['a'\]"):
        parse_batch({"a": 1})
    with pytest.raises(TypeError, match="got int"):
        parse_batch(3)
    with pytest.raises(TypeError, match=r"method must be a name or a torchvat\.train\.Method, got int"):
        vat_module(bn_mlp(), 3)
    with pytest.raises(ValueError, match="lr must be a number > 0, got 0"):
        vat_module(bn_mlp(), lr=0)


def test_checkpoint_keeps_the_method_its_derived_eps_and_generator(tmp_path):
    from torchvat.integrations.lightning import VATModule

    x, y = moons()
    module = vat_module(bn_mlp(), "vat+ent", beta=0.5, lr=1e-2)  # eps derived from the first batch
    trainer = lightning_trainer(3)
    trainer.fit(module, train_dataloaders=DataLoader(TensorDataset(x[:64], y[:64], x[:64]), batch_size=16))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    eps = module.method.eps
    assert eps is not None and eps > 0
    loaded = VATModule.load_from_checkpoint(path, model=bn_mlp(1))
    assert type(loaded.method) is type(module.method) and loaded.method.weights == module.method.weights
    assert loaded.method.eps == eps  # not derived again from another batch
    state = module._method_generator(torch.device("cpu")).get_state()
    assert torch.equal(loaded._method_generator(torch.device("cpu")).get_state(), state)


def test_a_hyperparameter_the_method_does_not_take_is_an_error():
    with pytest.raises(ValueError, match=r"method 'vat' takes the hyperparameters .* got \['alhpa'\] besides"):
        vat_module(bn_mlp(), "vat", alhpa=2.0)


def test_a_generator_state_of_another_device_type_reseeds_instead_of_failing():
    module = vat_module(bn_mlp(), "vat", eps=0.3)
    module._generator_state = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state, read on CPU
    g = module._method_generator(torch.device("cpu"))
    assert g.device.type == "cpu" and module._generator_state is None
    torch.rand(3, generator=g)  # usable


@pytest.mark.parametrize("given", [0.1, None], ids=["given-eps", "derived-eps"])
def test_an_eps_passed_to_load_from_checkpoint_overrides_the_saved_one(tmp_path, given):
    from torchvat.integrations.lightning import VATModule

    x, y = moons()
    module = vat_module(bn_mlp(), "vat", lr=1e-2, **({} if given is None else {"eps": given}))
    trainer = lightning_trainer(2)
    trainer.fit(module, train_dataloaders=DataLoader(TensorDataset(x[:32], y[:32], x[:32]), batch_size=16))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    saved = module.method.eps
    assert saved is not None and saved != 0.5
    loaded = VATModule.load_from_checkpoint(path, model=bn_mlp(1), eps=0.5)
    assert loaded.hparams["eps"] == 0.5 and loaded.method.eps == 0.5
    assert VATModule.load_from_checkpoint(path, model=bn_mlp(1)).method.eps == saved  # no override: the saved one


def test_a_method_instance_keeps_its_own_eps_but_takes_a_derived_one_from_the_checkpoint(tmp_path):
    from torchvat.integrations.lightning import VATModule

    x, y = moons()
    module = vat_module(bn_mlp(), VirtualAdversarialTraining(), lr=1e-2)  # eps derived from the first batch
    trainer = lightning_trainer(2)
    trainer.fit(module, train_dataloaders=DataLoader(TensorDataset(x[:32], y[:32], x[:32]), batch_size=16))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    saved = module.method.eps
    derived = VATModule.load_from_checkpoint(path, model=bn_mlp(1), method=VirtualAdversarialTraining())
    assert derived.method.eps == saved
    explicit = VATModule.load_from_checkpoint(path, model=bn_mlp(1), method=VirtualAdversarialTraining(eps=0.5))
    assert explicit.method.eps == 0.5


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_labeled_stats_reaches_the_step_and_is_checked():
    x, y = moons()
    means = {}
    for labeled_stats in ("own", "unlabeled"):
        model = bn_mlp()
        module = vat_module(model, "vat", eps=0.3, lr=1e-2, labeled_stats=labeled_stats)
        assert module.hparams["labeled_stats"] == labeled_stats
        module.train()
        torch.manual_seed(0)
        # the unlabeled rows shifted: their statistics differ from the labeled rows'
        assert torch.isfinite(module.training_step((x[:8], y[:8], x[:32] + 3.0), 0))
        means[labeled_stats] = model[1].running_mean.clone()
    reference = bn_mlp()
    with torch.no_grad():
        reference[:2].train()(x[:32] + 3.0)  # the unlabeled pass's update
    torch.testing.assert_close(means["unlabeled"], reference[1].running_mean)
    assert not torch.allclose(means["own"], means["unlabeled"])
    with pytest.raises(ValueError, match="labeled_stats"):
        vat_module(bn_mlp(), "vat", labeled_stats="both")
