import pytest
import torch
from torch import nn


class BNDropNet(nn.Module):
    """A small network with every kind of state a perturbation search could disturb."""

    def __init__(self, d_in: int = 6, n_classes: int = 3, p: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, 16)
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(p)
        self.fc2 = nn.Linear(16, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


@pytest.fixture
def bn_net() -> BNDropNet:
    torch.manual_seed(0)
    return BNDropNet().train()
