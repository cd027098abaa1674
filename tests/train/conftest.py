from __future__ import annotations

import pytest
import torch
from sklearn.datasets import make_moons
from torch import nn


class MoonsData:
    """Duck-typed stand-in for torchvat.data.SemiSupervisedData."""

    def __init__(self, n_labeled_per_class: int = 4, n: int = 600, seed: int = 0) -> None:
        x, y = make_moons(n, noise=0.1, random_state=seed)
        x = torch.tensor(x, dtype=torch.float32)
        y = torch.tensor(y, dtype=torch.int64)
        g = torch.Generator().manual_seed(seed)
        train, test = slice(0, 2 * n // 3), slice(2 * n // 3, n)
        x_train, y_train = x[train], y[train]
        idx = torch.cat(
            [
                torch.nonzero(y_train == c)[:, 0][
                    torch.randperm(int((y_train == c).sum()), generator=g)[:n_labeled_per_class]
                ]
                for c in (0, 1)
            ]
        )
        self.x_labeled, self.y_labeled = x_train[idx], y_train[idx]
        self.x_unlabeled = x_train
        self.x_test, self.y_test = x[test], y[test]
        self.x_val = self.y_val = None
        self.n_classes = 2


def make_mlp(seed: int = 0, *, batch_norm: bool = False, dropout: float = 0.0, width: int = 32) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(2, width)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(width))
    layers.append(nn.ReLU())
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2)]
    return nn.Sequential(*layers)


@pytest.fixture(scope="session")
def moons() -> MoonsData:
    return MoonsData()


@pytest.fixture
def mlp():
    return make_mlp


def small(**overrides):
    """Options of a tiny, fast run."""
    options = dict(
        eps=0.3,
        iterations=12,
        eval_every=4,
        log_every=2,
        batch_size=8,
        unlabeled_batch_size=16,
        progress=False,
    )
    options.update(overrides)
    return options


@pytest.fixture
def tiny():
    return small


def assert_same_tree(a, b, path: str = "state") -> None:
    """Two nested states (dicts, lists, tuples, tensors, plain values) are equal: types, dtypes, values."""
    assert type(a) is type(b), path
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same_tree(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            assert_same_tree(u, v, f"{path}[{i}]")
    else:
        assert a == b, path


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.fixture
def same_state():
    return assert_same_state
