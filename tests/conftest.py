"""Settings shared by the whole test suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny networks train fastest on one thread on a shared 2-core machine; restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def mask_recorder() -> Callable[[nn.Module], list[torch.Tensor]]:
    """``mask_recorder(model)`` returns a list that every later pass appends its dropout masks to (one per layer)."""

    def record(model: nn.Module) -> list[torch.Tensor]:
        masks: list[torch.Tensor] = []

        def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            primal = fwAD.unpack_dual(output).primal  # the exact probe's forward-mode pass carries a dual
            masks.append((primal.detach() != 0).clone())

        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.register_forward_hook(hook)
        return masks

    return record


@pytest.fixture
def dropout_net() -> Callable[[], nn.Module]:
    """A seeded 6-32-3 network with dropout 0.5, in train mode."""

    def build() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Dropout(0.5), nn.Linear(32, 3)).train()

    return build


@pytest.fixture
def sometimes_method() -> Callable[..., object]:
    """``sometimes_method(nan_at=None)``: a custom method returning ``l2`` on even calls only.

    ``l2`` is NaN on call ``nan_at``.
    """
    from torchvat.train import Method

    class Sometimes(Method):
        name = "sometimes"

        def __init__(self, nan_at: int | None) -> None:
            self.weights = {"ce": 1.0, "l2": 0.01}
            self.calls = 0
            self.nan_at = nan_at

        def loss_terms(self, model, batch, clean):
            self.calls += 1
            terms = {"ce": self.cross_entropy(batch, clean)}
            if self.calls % 2 == 0:
                nan = float("nan") if self.calls == self.nan_at else 1.0
                terms["l2"] = clean.logits.pow(2).mean() * nan
            return terms

    return lambda nan_at=None: Sometimes(nan_at)
