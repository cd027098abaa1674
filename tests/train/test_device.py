from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from torchvat.train import Trainer, get_rng_state, seed_everything, select_device, set_rng_state


def test_select_device(monkeypatch):
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto") == torch.device("cuda")
    with pytest.raises(ValueError, match="device must be 'auto' or a torch device string, got 'gpu0'"):
        select_device("gpu0")


def test_rng_state_roundtrip_covers_python_numpy_torch():
    seed_everything(11)
    state = get_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1))  # noqa: NPY002
    seed_everything(0)
    set_rng_state(state)
    got = (random.random(), np.random.rand(), torch.rand(1))  # noqa: NPY002
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


def test_compile_switch_trains_through_compiled_model(moons, mlp, tiny, monkeypatch):
    calls = []

    class Compiled(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            calls.append(x.shape[0])
            return self.inner(x)

    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: Compiled(model))
    model = mlp()
    trainer = Trainer(model, moons, method="vat", compile=True, **tiny(iterations=2, eval_every=10))
    assert isinstance(trainer.forward_model, Compiled) and trainer.model is model
    trainer.fit()
    # per step: a clean pass over the 8 labeled rows, one over the 16 unlabeled rows, then
    # the search and perturbed passes on those 16 rows
    assert calls[:4] == [8, 16, 16, 16]
    assert "inner.0.weight" not in trainer.state_dict()["model"]  # the checkpoint holds the plain model


def test_compile_mode_reaches_torch_compile(moons, mlp, tiny, monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: seen.append(kwargs) or model)
    Trainer(mlp(), moons, method="vat", compile="reduce-overhead", **tiny(iterations=1))
    Trainer(mlp(), moons, method="vat", compile=True, **tiny(iterations=1))
    Trainer(mlp(), moons, method="vat", **tiny(iterations=1))
    assert seen == [{"mode": "reduce-overhead"}, {}]


@pytest.mark.parametrize(("mode", "marks"), [("reduce-overhead", 3), ("max-autotune", 3), ("default", 0)])
def test_cuda_graph_modes_mark_where_each_step_begins(moons, mlp, tiny, monkeypatch, mode, marks):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: model)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: calls.append(1))
    trainer = Trainer(mlp(), moons, method="vat", compile=mode, **tiny(iterations=3, eval_every=10))
    for _ in range(3):
        trainer.train_step(trainer.next_batch())
    assert len(calls) == marks


def test_predicted_logits_survive_a_model_that_reuses_its_output_memory(moons, mlp, tiny, monkeypatch):
    # a CUDA-graph mode writes each call's output into the same memory
    class StaticOutput(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.out = None

        def forward(self, x):
            y = self.inner(x)
            if self.out is None:
                self.out = torch.empty_like(y)
            return self.out.copy_(y)

    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: StaticOutput(model))
    model = mlp()
    trainer = Trainer(model, moons, method="vat", compile=True, **tiny(iterations=1))
    x = torch.randn(10, 2)
    logits = trainer.predict_logits(x, batch_size=5)
    with torch.no_grad():
        expected = model.eval()(x)
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("bad", ["fast", 1, None])
def test_compile_mode_is_checked(moons, mlp, bad):
    with pytest.raises(
        ValueError, match=f"compile must be one of False, True, .default., .reduce-overhead., .*got {bad!r}"
    ):
        Trainer(mlp(), moons, compile=bad)


@pytest.mark.slow
def test_real_torch_compile(moons, mlp, tiny):
    eager, compiled = mlp(0), mlp(0)
    Trainer(eager, moons, method="vat", **tiny(iterations=3)).fit()
    Trainer(compiled, moons, method="vat", compile=True, **tiny(iterations=3)).fit()
    for p, q in zip(eager.parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
