from __future__ import annotations

import logging
import warnings

import pytest
import torch
from torch import nn

from torchvat.train import CollapseWarning, TrainConfig, Trainer
from torchvat.train.defaults import resolve_regularize


def test_alpha_zero_vat_equals_supervised(moons, mlp, tiny, same_state):
    models = {}
    for method, alpha in (("supervised", 1.0), ("vat", 0.0), ("vat+ent", 0.0)):
        models[method] = mlp(0, batch_norm=True, dropout=0.2)
        Trainer(models[method], moons, method=method, alpha=alpha, beta=0.0, **tiny(eps=None)).fit()
    same_state(models["supervised"], models["vat"])
    same_state(models["supervised"], models["vat+ent"])


def test_alpha_nonzero_differs_from_supervised(moons, mlp, tiny):
    a, b = mlp(0), mlp(0)
    Trainer(a, moons, method="supervised", **tiny()).fit()
    Trainer(b, moons, method="vat", alpha=1.0, **tiny()).fit()
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_same_seed_same_run_other_seed_differs(moons, mlp, tiny, same_state):
    runs = []
    for seed in (3, 3, 4):
        model = mlp(0, batch_norm=True, dropout=0.2)
        result = Trainer(model, moons, method="vat+ent", seed=seed, **tiny()).fit()
        runs.append((model, result))
    same_state(runs[0][0], runs[1][0])
    assert runs[0][1].history == runs[1][1].history
    assert runs[0][1].history != runs[2][1].history


def test_no_unlabeled_data_warns(moons, mlp, tiny):
    with pytest.warns(UserWarning, match="uses unlabeled data but x_unlabeled is None or empty"):
        Trainer(mlp(), x_labeled=moons.x_labeled, y_labeled=moons.y_labeled, method="vat", **tiny())
    with pytest.warns(UserWarning, match="x_unlabeled is None or empty"):
        Trainer(mlp(), moons, x_unlabeled=torch.empty(0, 2), method="vat", **tiny())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(mlp(), x_labeled=moons.x_labeled, y_labeled=moons.y_labeled, method="supervised", **tiny())


def test_eps_derived_from_data_and_logged(moons, mlp, tiny, caplog):
    from torchvat import core

    with caplog.at_level(logging.INFO, logger="torchvat.train.trainer"):
        trainer = Trainer(mlp(), moons, method="vat", **tiny(eps=None))
    expected = core.suggest_eps(moons.x_unlabeled, rule="labeled", labeled=moons.x_labeled)
    assert trainer.eps == pytest.approx(expected)
    assert trainer.method.eps == trainer.eps
    assert f"eps={expected:.6g}" in caplog.text
    assert trainer.fit().eps == trainer.eps
    explicit = Trainer(mlp(), moons, method="vat", **tiny(eps=0.7))
    assert explicit.eps == 0.7 and explicit.method.eps == 0.7
    assert Trainer(mlp(), moons, method="supervised", **tiny(eps=None)).eps is None


def test_result_history_and_evaluate(moons, mlp, tiny):
    trainer = Trainer(mlp(), moons, method="vat", x_val=moons.x_test[:50], y_val=moons.y_test[:50], **tiny())
    result = trainer.fit()
    assert [r["step"] for r in result.history] == [4, 8, 12]
    assert result.final == result.history[-1]
    assert result.best in result.history
    assert result.best["val_error"] == min(r["val_error"] for r in result.history)
    for record in result.history:
        assert {"val_error", "test_error", "test_accuracy", "train_ce", "train_vat", "lr"} <= set(record)
        assert record["test_error"] == pytest.approx(1 - record["test_accuracy"])
    metrics = trainer.evaluate(moons.x_test, moons.y_test)
    pred = trainer.predict(moons.x_test)
    assert pred.dtype == torch.int64 and pred.shape == moons.y_test.shape
    assert metrics["accuracy"] == pytest.approx((pred == moons.y_test).float().mean().item())
    assert metrics["error"] == pytest.approx(result.final["test_error"])
    assert metrics["n"] == len(moons.y_test)
    with pytest.raises(ValueError, match="same, non-zero number of rows, got 200 and 3"):
        trainer.evaluate(moons.x_test, moons.y_test[:3])


def test_semisupervised_data_object_accepted(moons, mlp, tiny):
    from torchvat.data.container import SemiSupervisedData

    data = SemiSupervisedData(
        x_labeled=moons.x_labeled,
        y_labeled=moons.y_labeled,
        x_unlabeled=moons.x_unlabeled,
        n_classes=2,
        name="moons",
        x_test=moons.x_test,
        y_test=moons.y_test,
    )
    result = Trainer(mlp(), data, method="vat", **tiny()).fit()
    assert "test_error" in result.final


def test_augment_hook_sees_every_batch(moons, mlp, tiny):
    sizes = []

    def augment(x):
        sizes.append(x.shape[0])
        return x + 0.01 * torch.randn_like(x)

    Trainer(mlp(), moons, method="vat", augment=augment, **tiny(iterations=3)).fit()
    assert sizes == [8, 16] * 3


def test_warmup_ramps_regularizer_weight(moons, mlp, tiny):
    trainer = Trainer(mlp(), moons, method="vat+ent", alpha=2.0, beta=1.0, **tiny(warmup_iters=4))
    ramp = []
    for step in range(6):
        trainer.step = step
        ramp.append(trainer.loss_weights())
    assert [w["vat"] for w in ramp] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert [w["ent"] for w in ramp] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert all(w["ce"] == 1.0 for w in ramp)


def test_bf16_autocast_runs(moons, mlp, tiny):
    result = Trainer(mlp(), moons, method="vat", amp="bf16", **tiny(iterations=4)).fit()
    assert all(v == v for v in result.final.values())  # no NaN


def _scripted(errors):
    class Scripted(Trainer):
        script = iter(errors)

        def evaluate(self, x, y, batch_size=None):
            return {"error": next(self.script), "accuracy": 0.0, "loss": 0.0, "n": 1}

    return Scripted


def test_collapse_warning(moons, mlp, tiny):
    trainer = _scripted([0.1, 0.2, 0.3, 0.4])(
        mlp(), moons, method="vat", lr=1e-2, **tiny(iterations=16, collapse_patience=2)
    )
    with pytest.warns(CollapseWarning, match="test_error rose while the training loss fell over 2"):
        trainer.fit()
    losses = [r["train_loss"] for r in trainer.history]
    assert losses == sorted(losses, reverse=True)  # the premise: training loss fell


@pytest.mark.parametrize(
    ("errors", "patience"), [([0.4, 0.3, 0.2, 0.1], 1), ([0.1, 0.2, 0.1, 0.2], 2), ([0.1, 0.2, 0.3, 0.4], 0)]
)
def test_no_collapse_warning(errors, patience, moons, mlp, tiny):
    trainer = _scripted(errors)(mlp(), moons, method="vat", lr=1e-2, **tiny(iterations=16, collapse_patience=patience))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)
        trainer.fit()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"method": "nope"}, r"method must be one of 'at', 'at\+vat', .*got 'nope'"),
        ({"eps": -1.0}, r"eps must be None or a finite number >= 0, got -1.0"),
        ({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
        ({"unlabeled_batch_size": -3}, r"unlabeled_batch_size must be an integer >= 1, got -3"),
        ({"regularize": "labeled"}, r"regularize must be one of 'auto', 'unlabeled', 'all', got 'labeled'"),
        ({"amp": "fp8"}, r"amp must be one of None, 'bf16', 'fp16', got 'fp8'"),
        ({"bogus": 1}, r"unknown TrainConfig field\(s\) \['bogus'\]"),
    ],
)
def test_trainer_rejects_bad_options(options, match, moons, mlp):
    with pytest.raises(ValueError, match=match):
        Trainer(mlp(), moons, **options)


def test_trainer_rejects_bad_data(moons, mlp):
    with pytest.raises(ValueError, match="x_labeled and y_labeled are required"):
        Trainer(mlp(), x_unlabeled=moons.x_unlabeled)
    with pytest.raises(ValueError, match="x_labeled and y_labeled must have the same number of rows, got 8 and 3"):
        Trainer(mlp(), x_labeled=moons.x_labeled, y_labeled=moons.y_labeled[:3])
    with pytest.raises(ValueError, match=r"x_unlabeled must have input shape \(2,\) like x_labeled, got \(3,\)"):
        Trainer(mlp(), moons, x_unlabeled=torch.zeros(5, 3))
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got str"):
        Trainer("model", moons)
    with pytest.raises(TypeError, match="config must be a TrainConfig, a dict or None, got int"):
        Trainer(mlp(), moons, config=3)


def test_config_dict_and_overrides(moons, mlp):
    cfg = TrainConfig(method="at", eps=0.2, iterations=5, progress=False)
    model = mlp()
    trainer = Trainer(model, moons, config=cfg.to_dict(), batch_size=4)
    # "auto" is resolved by the model, once, and recorded as the resolved value
    assert trainer.config == cfg.replace(batch_size=4, regularize=resolve_regularize("auto", model))
    assert trainer.method.name == "at"


@pytest.mark.parametrize("bad", ["eps", "alpha", "beta"])
def test_config_negative_numbers(bad):
    # eps=None: derived from the data; beta=None: the method's own default weight
    expected = "None or a finite number >= 0" if bad in ("eps", "beta") else "a finite number >= 0"
    with pytest.raises(ValueError, match=f"{bad} must be {expected}, got -0.5"):
        TrainConfig(**{bad: -0.5})


def test_config_roundtrip_and_messages():
    cfg = TrainConfig(method="vat+ent", xi=1e-6, amp="bf16", out_dir="runs/x", extra={"k": 1})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="xi must be 'auto' or a finite number > 0, got 0"):
        TrainConfig(xi=0)
    with pytest.raises(ValueError, match=r"decay_fraction must be a number in \[0, 1\], got 1\.5"):
        TrainConfig(decay_fraction=1.5)
    with pytest.raises(ValueError, match=r"beta1 must be a number in \[0, 1\), got 1"):
        TrainConfig(beta1=1)
    with pytest.raises(ValueError, match=r"n_power must be an integer >= 0, got 1\.5"):
        TrainConfig(n_power=1.5)
    with pytest.raises(ValueError, match="optimizer must be one of 'adam', 'sgd', got 'rmsprop'"):
        TrainConfig(optimizer="rmsprop")


def test_vat_beats_supervised_on_two_moons(moons, mlp):
    """8 labels on two moons: VAT's smoothness along the unlabeled manifold wins."""
    options = dict(
        eps=0.3, lr=1e-2, iterations=400, eval_every=400, batch_size=8, unlabeled_batch_size=64, progress=False
    )
    errors = {}
    for method in ("supervised", "vat"):
        errors[method] = Trainer(mlp(0, width=64), moons, method=method, **options).fit().final["test_error"]
    assert errors["vat"] < errors["supervised"]
    assert errors["vat"] < 0.05


def test_labeled_stream_cycles_and_batches_pair(moons, mlp, tiny):
    trainer = Trainer(mlp(), moons, method="vat", **tiny(batch_size=3, unlabeled_batch_size=5))
    rows = []
    for _ in range(8):
        batch = trainer.next_batch()
        assert batch.x_labeled.shape == (3, 2) and batch.x_unlabeled.shape == (5, 2)
        match = (batch.x_labeled[:, None, :] == moons.x_labeled[None, :, :]).all(-1)
        assert torch.equal(moons.y_labeled[match.float().argmax(1)], batch.y_labeled)
        rows += match.float().argmax(1).tolist()
    for start in range(0, 24, 8):  # every pass over the 8 labels holds each once
        assert sorted(rows[start : start + 8]) == list(range(8))
    assert Trainer(mlp(), moons, method="supervised", **tiny()).next_batch().x_unlabeled is None


class _OneClass(nn.Module):
    """Predicts class 0 for every input (its parameter gets a zero gradient)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2, 2))

    def forward(self, x):
        return x @ self.w * 0.0 + torch.tensor([8.0, 0.0])


def test_class_collapse_warning_needs_no_held_out_data(moons, tiny):
    trainer = Trainer(
        _OneClass(), moons, method="vat", x_test=None, y_test=None, **tiny(iterations=16, collapse_patience=2)
    )
    assert trainer.labeled_classes == pytest.approx(2.0)  # moons: balanced labels
    with pytest.warns(CollapseWarning, match=r"spread over 1 classes .* against 2 for the labels, over 2"):
        trainer.fit()
    assert all(r["train_unlabeled_classes"] < 1.01 for r in trainer.history)


def test_balanced_unlabeled_predictions_do_not_warn(moons, mlp, tiny):
    trainer = Trainer(mlp(), moons, method="vat", lr=1e-2, **tiny(iterations=16, collapse_patience=1))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=CollapseWarning)  # a rising test error is another matter
        warnings.filterwarnings("error", message="the predictions on the unlabeled data", category=CollapseWarning)
        trainer.fit()
    assert all(r["train_unlabeled_classes"] > 1.5 for r in trainer.history)


# The memory format changes the convolutions' summation order, so the two runs agree up to float32 rounding.
# A finite-difference probe at the automatic xi divides that rounding by xi (the KL at xi*d is a difference of
# nearby logits), and Adam turns the resulting 1e-4 relative change of r_adv into 2e-5 weight changes, over the
# tolerance on some CPUs (AMD EPYC, oneDNN); at xi = 1 or with the exact probe the runs agree to 1e-8.
@pytest.mark.parametrize("probe_options", [{"xi": 1.0}, {"probe": "exact"}], ids=["fd-xi1", "exact"])
def test_channels_last_trains_the_same_numbers_in_the_other_memory_format(probe_options):
    def run(channels_last: bool) -> tuple[Trainer, dict]:
        torch.manual_seed(0)
        model = nn.Sequential(
            # no bias before BatchNorm: its gradient is 0 up to rounding, which Adam would blow up to full steps
            nn.Conv2d(3, 4, 3, padding=1, bias=False),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(144, 3),
        )
        g = torch.Generator().manual_seed(1)
        x, y = torch.rand(40, 3, 6, 6, generator=g), torch.randint(0, 3, (40,), generator=g)
        trainer = Trainer(
            model,
            x_labeled=x[:9],
            y_labeled=y[:9],
            x_unlabeled=x,
            x_test=x,
            y_test=y,
            method="vat",
            eps=0.5,
            iterations=6,
            eval_every=3,
            batch_size=6,
            unlabeled_batch_size=12,
            progress=False,
            channels_last=channels_last,
            **probe_options,
        )
        return trainer, trainer.fit().final

    fast, fast_final = run(True)
    plain, plain_final = run(False)
    assert fast.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    batch = fast.next_batch()
    assert batch.x_labeled.is_contiguous(memory_format=torch.channels_last)
    assert batch.x_unlabeled.is_contiguous(memory_format=torch.channels_last)
    assert not plain.next_batch().x_labeled.is_contiguous(memory_format=torch.channels_last)
    for (name, a), b in zip(fast.model.state_dict().items(), plain.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert fast_final["test_error"] == pytest.approx(plain_final["test_error"], abs=1 / 40 + 1e-9)


def test_config_takes_a_path_like_out_dir_and_a_torch_device(tmp_path):
    cfg = TrainConfig(out_dir=tmp_path / "run", device=torch.device("cpu"))
    assert cfg.out_dir == str(tmp_path / "run") and cfg.device == "cpu"


def test_a_term_returned_on_some_iterations_is_averaged_over_those(moons, mlp, tiny, tmp_path, sometimes_method):
    from torchvat.train import Callback, save_checkpoint

    class Record(Callback):
        def __init__(self):
            self.terms, self.logs = {"ce": [], "l2": []}, []

        def on_step_end(self, **kwargs):
            for key in self.terms:
                if key in kwargs["metrics"]:
                    self.terms[key].append(float(kwargs["metrics"][key]))
            if kwargs["logs"]:
                self.logs.append(kwargs["logs"])

    rec = Record()
    options = tiny(iterations=8, log_every=4, eval_every=8)
    result = Trainer(mlp(0), moons, method=sometimes_method(), callbacks=[rec], **options).fit()
    assert [len(v) for v in rec.terms.values()] == [8, 4]
    for i, logs in enumerate(rec.logs):  # a window of 4 iterations, 2 of them with l2
        assert logs["l2"] == pytest.approx(sum(rec.terms["l2"][2 * i : 2 * i + 2]) / 2, rel=1e-6)
        assert logs["ce"] == pytest.approx(sum(rec.terms["ce"][4 * i : 4 * i + 4]) / 4, rel=1e-6)
    assert result.final["train_l2"] == pytest.approx(sum(rec.terms["l2"]) / 4, rel=1e-6)

    # the counts per term are part of the state: a run stopped mid-window resumes bitwise
    class StopAt(Callback):
        def on_step_end(self, **kwargs):
            kwargs["trainer"].should_stop = kwargs["step"] == 3

    first = Trainer(mlp(0), moons, method=sometimes_method(), callbacks=[StopAt()], **options)
    first.fit()
    path = save_checkpoint(first.state_dict(), tmp_path / "s.pt")
    method = sometimes_method()
    method.calls = 3
    resumed = Trainer(mlp(1), moons, method=method, **options).fit(resume=path)
    assert resumed.history == result.history


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_prediction_batch_size_must_be_a_positive_integer(batch_size, moons, mlp, tiny):
    trainer = Trainer(mlp(0), moons, method="vat", **tiny())
    match = rf"batch_size must be an integer >= 1 or None, got {batch_size!r}"
    x, y = moons.x_test[:10], moons.y_test[:10]
    for call in (trainer.predict_logits, trainer.predict):
        with pytest.raises(ValueError, match=match):
            call(x, batch_size=batch_size)
    with pytest.raises(ValueError, match=match):
        trainer.evaluate(x, y, batch_size=batch_size)
    assert trainer.predict_logits(x, batch_size=3).shape == (10, 2)
    assert trainer.evaluate(x, y, batch_size=None)["n"] == 10


def _global_states() -> tuple:
    import random

    import numpy as np

    kind, keys, pos, gauss, cached = np.random.get_state()  # noqa: NPY002 - the legacy global generator
    return torch.get_rng_state(), (kind, keys.tolist(), pos, gauss, cached), random.getstate()


def test_the_constructor_neither_reseeds_nor_starts_a_process_group(moons, mlp, tiny, monkeypatch):
    """Building a trainer has no global side effect; setup() (called by fit) starts the group and seeds."""
    import socket

    import numpy as np
    import torch.distributed as dist

    from torchvat.train.distributed import destroy_distributed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MASTER_PORT", str(port))
    model = mlp()  # make_mlp seeds torch itself
    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002
    before = _global_states()
    trainer = Trainer(model, moons, method="vat", **tiny(seed=5))
    after = _global_states()
    assert torch.equal(after[0], before[0]) and after[1:] == before[1:]
    assert not dist.is_initialized() and not trainer.initialized_process_group
    try:
        trainer.setup()  # the torchrun environment (one process): the trainer starts the group here
        assert dist.is_initialized() and trainer.initialized_process_group
        assert trainer.ddp is None and trainer.world_size == 1
        seeded = torch.rand(3)
        trainer.setup()  # once only: a second call does not reseed
        following = torch.rand(3)
        torch.manual_seed(5)  # config.seed
        assert torch.equal(seeded, torch.rand(3)) and torch.equal(following, torch.rand(3))
    finally:
        destroy_distributed()


def test_fit_seeds_the_global_generators_whatever_their_state_before(moons, mlp, tiny, same_state):
    runs = []
    for noise in (0, 1):
        model = mlp(0, batch_norm=True, dropout=0.2)
        trainer = Trainer(model, moons, method="vat", seed=3, **tiny())
        torch.manual_seed(100 + noise)  # the caller's draws between construction and fit do not matter
        runs.append((model, trainer.fit()))
    same_state(runs[0][0], runs[1][0])
    assert runs[0][1].history == runs[1][1].history


def test_a_loaded_state_keeps_its_generators_through_fit(moons, mlp, tiny, same_state):
    """fit() after load_state_dict does not reseed: the resumed run continues the saved streams."""
    full_model = mlp(0, dropout=0.2)
    Trainer(full_model, moons, method="vat", **tiny(iterations=6, schedule="constant")).fit()
    first = Trainer(mlp(0, dropout=0.2), moons, method="vat", **tiny(iterations=3, schedule="constant"))
    first.fit()
    state = first.state_dict()
    resumed_model = mlp(0, dropout=0.2)
    resumed = Trainer(resumed_model, moons, method="vat", **tiny(iterations=6, schedule="constant"))
    resumed.load_state_dict(state)
    resumed.fit()  # with a reseed here, the dropout masks would start over
    same_state(full_model, resumed_model)
