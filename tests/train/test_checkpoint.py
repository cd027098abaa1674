from __future__ import annotations

import pytest
import torch

import torchvat.train.checkpoint as ckpt_module
from torchvat.train import Callback, Trainer, load_checkpoint, save_checkpoint

from .conftest import assert_same_tree


class StopAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, **kwargs):
        if kwargs["step"] == self.step:
            kwargs["trainer"].should_stop = True


@pytest.mark.parametrize(("method", "stop"), [("vat", 5), ("vat+ent", 8), ("at+vat", 1), ("at", 6)])
def test_resume_is_bitwise_identical(method, stop, moons, mlp, tiny, same_state, tmp_path):
    options = tiny(iterations=12, eval_every=4, log_every=3, warmup_iters=5)
    full = mlp(0, batch_norm=True, dropout=0.2)
    expected = Trainer(full, moons, method=method, **options).fit()

    first = Trainer(mlp(0, batch_norm=True, dropout=0.2), moons, method=method, callbacks=[StopAt(stop)], **options)
    interrupted = first.fit()
    assert interrupted.stopped_early and interrupted.steps == stop
    path = save_checkpoint(first.state_dict(), tmp_path / "state.pt")

    # as in a new process: another initialization, the global generators elsewhere
    torch.manual_seed(1234)
    resumed_model = mlp(7, batch_norm=True, dropout=0.2)
    resumed = Trainer(resumed_model, moons, method=method, **options)
    torch.rand(100)
    result = resumed.fit(resume=str(path))

    same_state(full, resumed_model)
    assert result.history == expected.history
    assert result.steps == 12 and not result.stopped_early


def test_resume_from_checkpoint_callback_files(moons, mlp, tiny, same_state, tmp_path):
    options = tiny(iterations=12, eval_every=4, checkpoint_every=3, out_dir=str(tmp_path / "a"))
    full = mlp(0)
    Trainer(full, moons, method="vat", **options).fit()

    out = tmp_path / "b"
    options["out_dir"] = str(out)
    result = Trainer(mlp(0), moons, method="vat", callbacks=[StopAt(7)], **options).fit()
    assert result.paths["last"] == str(out / "last.pt")
    assert load_checkpoint(out / "last.pt")["step"] == 7  # written when training ended early
    resumed_model = mlp(3)
    resumed = Trainer(resumed_model, moons, method="vat", **options).fit(resume=result.paths["last"])
    same_state(full, resumed_model)
    best = load_checkpoint(resumed.paths["best"])
    assert best["best"]["test_error"] == resumed.best["test_error"]
    assert best["step"] == resumed.best["step"]


def test_checkpoint_loads_with_weights_only(moons, mlp, tiny, tmp_path):
    trainer = Trainer(mlp(0, batch_norm=True), moons, method="vat", **tiny(iterations=3))
    trainer.fit()
    path = save_checkpoint(trainer.state_dict(), tmp_path / "c.pt")
    state = torch.load(path, weights_only=True)
    assert state["step"] == 3
    assert state["config"]["method"] == "vat"
    assert isinstance(state["rng"]["torch"], torch.Tensor)
    assert set(state["samplers"]) == {"labeled", "unlabeled"}
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(state["model"][key], value)


def test_failed_write_keeps_previous_checkpoint(monkeypatch, tmp_path):
    path = save_checkpoint({"step": 1, "w": torch.ones(3)}, tmp_path / "last.pt")
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        real_save({"partial": torch.zeros(1000)}, f)  # some bytes reach the temp file
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_failed_write_leaves_no_file_when_none_existed(monkeypatch, tmp_path):
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint({"step": 0}, tmp_path / "sub" / "c.pt")
    assert list((tmp_path / "sub").iterdir()) == []


def test_save_uses_fsync_and_replace(monkeypatch, tmp_path):
    calls = []
    real_fsync, real_replace = ckpt_module.os.fsync, ckpt_module.os.replace
    monkeypatch.setattr(ckpt_module.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(ckpt_module.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    save_checkpoint({"step": 0}, tmp_path / "c.pt")
    assert calls[:2] == ["fsync", "replace"]


def test_load_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_load_state_dict_rejects_other_method(moons, mlp, tiny):
    state = Trainer(mlp(), moons, method="vat", **tiny()).state_dict()
    with pytest.raises(ValueError, match="checkpoint was written by method 'vat', but this trainer runs 'at'"):
        Trainer(mlp(), moons, method="at", **tiny()).load_state_dict(state)


def test_resume_with_augmentation_is_bitwise_identical(tiny, same_state, tmp_path):
    """The augmentation's generator is part of the state: a resumed run draws the shifts and flips it would have."""
    from torch import nn

    from torchvat.data import RandomTranslateFlip

    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean(dim=(1, 2)) > x[:, 0, 4:].mean(dim=(1, 2))).long()
    data = {"x_labeled": x[:16], "y_labeled": y[:16], "x_unlabeled": x, "x_test": x[16:], "y_test": y[16:]}

    def model(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2))

    options = tiny(iterations=10, eval_every=5, log_every=5)
    full = model(0)
    expected = Trainer(full, **data, method="vat", augment=RandomTranslateFlip(max_shift=2, seed=5), **options).fit()
    first = Trainer(
        model(0),
        **data,
        method="vat",
        augment=RandomTranslateFlip(max_shift=2, seed=5),
        callbacks=[StopAt(4)],
        **options,
    )
    first.fit()
    path = save_checkpoint(first.state_dict(), tmp_path / "state.pt")
    resumed_model = model(9)
    resumed = Trainer(resumed_model, **data, method="vat", augment=RandomTranslateFlip(max_shift=2, seed=5), **options)
    result = resumed.fit(resume=str(path))
    same_state(full, resumed_model)
    assert result.history == expected.history


def test_resume_uses_the_hyperparameters_given_now_and_refuses_another_optimizer(moons, mlp, tiny, tmp_path):
    options = tiny(iterations=4, schedule="constant", lr=1e-3, eps=0.3)
    first = Trainer(mlp(0), moons, method="vat", **options)
    first.fit()
    path = save_checkpoint(first.state_dict(), tmp_path / "state.pt")

    changed = {**options, "iterations": 6, "lr": 0.1, "weight_decay": 0.5, "eps": 2.0}
    resumed = Trainer(mlp(1), moons, method="vat", **changed)
    resumed.load_state_dict(load_checkpoint(path))
    assert resumed.step == 4
    assert [g["lr"] for g in resumed.optimizer.param_groups] == [0.1]
    assert [g["weight_decay"] for g in resumed.optimizer.param_groups] == [0.5]
    assert resumed.eps == 2.0 and resumed.method.eps == 2.0

    same = Trainer(mlp(1), moons, method="vat", **{**options, "eps": None})  # eps None: the saved run's
    same.load_state_dict(load_checkpoint(path))
    assert same.eps == 0.3 and [g["lr"] for g in same.optimizer.param_groups] == [1e-3]

    sgd = Trainer(mlp(1), moons, method="vat", **{**options, "optimizer": "sgd"})
    with pytest.raises(
        ValueError, match="checkpoint was written with optimizer='adam', but this trainer has optimizer='sgd'"
    ):
        sgd.load_state_dict(load_checkpoint(path))
    wider = Trainer(mlp(1), moons, method="vat", **{**options, "batch_size": 4})
    with pytest.raises(ValueError, match="batch_size=8, but this trainer has batch_size=4"):
        wider.load_state_dict(load_checkpoint(path))


def test_an_early_stop_on_a_checkpoint_iteration_keeps_the_older_previous_file(moons, mlp, tiny, tmp_path):
    options = tiny(iterations=12, eval_every=50, checkpoint_every=3, out_dir=str(tmp_path))
    Trainer(mlp(0), moons, method="vat", callbacks=[StopAt(6)], **options).fit()
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 6
    assert load_checkpoint(tmp_path / "last.prev.pt")["step"] == 3  # not a second copy of step 6


def test_checkpoints_and_run_files_get_the_mode_of_ordinary_files(tmp_path):
    import os
    import stat

    from torchvat.train.checkpoint import write_text_atomic

    umask = os.umask(0o022)
    try:
        ckpt = save_checkpoint({"w": torch.ones(2)}, tmp_path / "c.pt")
        text = write_text_atomic(tmp_path / "config.toml", "a = 1\n")
    finally:
        os.umask(umask)
    for path in (ckpt, text):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path  # mkstemp alone gives 0600
    assert text.read_text() == "a = 1\n"


def test_resume_that_turns_momentum_on_gives_fused_sgd_zero_buffers(moons, mlp, tiny, tmp_path):
    options = tiny(iterations=3, optimizer="sgd", momentum=0.0, lr=0.1)
    first = Trainer(mlp(0), moons, method="vat", **options)
    first.fit()
    path = save_checkpoint(first.state_dict(), tmp_path / "s.pt")
    resumed = Trainer(mlp(1), moons, method="vat", **{**options, "momentum": 0.9, "iterations": 5})
    resumed.load_state_dict(load_checkpoint(path))
    group = resumed.optimizer.param_groups[0]
    assert group["momentum"] == 0.9
    if group.get("fused"):  # a skipped first fused step leaves its buffers as they are: zeros, not torch.empty
        for p in group["params"]:
            assert torch.equal(resumed.optimizer.state[p]["momentum_buffer"], torch.zeros_like(p))
    assert resumed.fit().steps == 5


def test_resume_keeps_the_eps_of_a_method_instance_and_takes_a_derived_one_from_the_checkpoint(moons, mlp, tiny):
    from torchvat.train.methods import VirtualAdversarialTraining

    options = tiny(iterations=4, eps=None)
    first = Trainer(mlp(0), moons, method=VirtualAdversarialTraining(eps=1.0), **options)
    first.fit()
    state = first.state_dict()
    assert state["eps"] == 1.0

    own = Trainer(mlp(0), moons, method=VirtualAdversarialTraining(eps=2.0, alpha=3.0), **{**options, "iterations": 6})
    own.load_state_dict(state)
    assert own.method.eps == 2.0 and own.eps == 2.0 and own.method.weights["vat"] == 3.0
    assert own.fit().eps == 2.0

    derived = Trainer(mlp(0), moons, method=VirtualAdversarialTraining(), **options)  # eps derived from the data
    assert derived.eps != 1.0
    derived.load_state_dict(state)
    assert derived.method.eps == 1.0 and derived.eps == 1.0


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"x_labeled": 6}, r"checkpoint has 8 labeled rows, x_labeled has 6; a resumed run needs the data it was"),
        ({"x_unlabeled": 300}, r"checkpoint has 400 unlabeled rows, x_unlabeled has 300"),
        ({"x_unlabeled": None}, r"checkpoint has 400 unlabeled rows, x_unlabeled is None or empty"),
        ({"width": 16}, r"checkpoint's model does not fit this trainer's model: '0.weight' has shape \(32, 2\) in "
                        r"the checkpoint, \(16, 2\) here"),
    ],
)  # fmt: skip
def test_a_refused_resume_leaves_the_trainer_as_it_was(change, match, moons, mlp, tiny):
    import warnings

    options = tiny(iterations=6)
    first = Trainer(mlp(0), moons, method="vat", **options)
    first.fit()
    state = first.state_dict()

    data = {"x_labeled": moons.x_labeled, "y_labeled": moons.y_labeled, "x_unlabeled": moons.x_unlabeled}
    if "x_labeled" in change:
        n = change["x_labeled"]
        data["x_labeled"], data["y_labeled"] = moons.x_labeled[:n], moons.y_labeled[:n]
    if "x_unlabeled" in change:
        n = change["x_unlabeled"]
        data["x_unlabeled"] = None if n is None else moons.x_unlabeled[:n]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no unlabeled data for vat
        other = Trainer(mlp(5, width=change.get("width", 32)), **data, method="vat", **options)
    before = other.state_dict()
    with pytest.raises(ValueError, match=match):
        other.load_state_dict(state)
    assert_same_tree(before, other.state_dict())  # weights, optimizer, schedule, samplers, step, ...
    assert other.step == 0 and len(other.optimizer.state) == 0


def test_a_resume_without_unlabeled_data_in_the_checkpoint_is_refused_naming_it(moons, mlp, tiny):
    options = tiny(iterations=3)
    state = Trainer(mlp(0), moons, method="vat", **options).state_dict()
    state["samplers"]["unlabeled"] = None
    other = Trainer(mlp(1), moons, method="vat", **options)
    with pytest.raises(ValueError, match=r"checkpoint has no unlabeled rows, x_unlabeled has 400"):
        other.load_state_dict(state)


def test_resume_of_a_run_saved_with_lr_0_uses_the_new_lr(moons, mlp, tiny, tmp_path):
    options = tiny(iterations=4, lr=0.0)
    first = Trainer(mlp(0), moons, method="vat", **options)
    first.fit()
    path = save_checkpoint(first.state_dict(), tmp_path / "s.pt")
    for schedule in ("constant", "paper"):
        model = mlp(0)
        resumed = Trainer(model, moons, method="vat", **{**options, "lr": 1e-3, "iterations": 8, "schedule": schedule})
        resumed.load_state_dict(load_checkpoint(path))
        assert resumed.schedule.base_lrs == [1e-3]
        assert resumed.optimizer.param_groups[0]["lr"] == 1e-3  # iteration 4 of 8: before the decay
        w = model[0].weight.clone()
        resumed.fit()
        assert not torch.equal(w, model[0].weight)


def test_fit_of_a_complete_run_rewrites_no_checkpoint(moons, mlp, tiny, tmp_path):
    options = tiny(iterations=8, eval_every=4, out_dir=str(tmp_path))
    trainer = Trainer(mlp(0), moons, method="vat", **options)
    trainer.fit()
    files = {name: (tmp_path / name).read_bytes() for name in ("last.pt", "last.prev.pt", "best.pt")}
    assert load_checkpoint(tmp_path / "last.prev.pt")["step"] == 4

    result = Trainer(mlp(0), moons, method="vat", **options).fit(resume=tmp_path / "last.pt")  # nothing to train
    again = trainer.fit()  # a second fit of the same trainer
    for r in (result, again):
        assert r.steps == 8 and r.paths["last"] == str(tmp_path / "last.pt")
    assert {name: (tmp_path / name).read_bytes() for name in files} == files
    assert load_checkpoint(tmp_path / "last.prev.pt")["step"] == 4
