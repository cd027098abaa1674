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
