import pytest
import torch

from torchvat.data import SemiSupervisedData


def make(**kw):
    args = dict(
        x_labeled=torch.zeros(4, 3),
        y_labeled=torch.tensor([0, 1, 1, 0]),
        x_unlabeled=torch.ones(6, 3),
        n_classes=2,
        name="toy",
    )
    args.update(kw)
    return SemiSupervisedData(**args)


def test_helpers():
    data = make(x_test=torch.zeros(2, 3), y_test=torch.tensor([1, 0]), classes=["a", "b"])
    assert data.input_shape == (3,)
    assert (data.n_labeled, data.n_unlabeled) == (4, 6)
    text = data.summary()
    assert "toy: 2 classes" in text and "per class: 2, 2" in text and "test:      2" in text
    moved = data.to("cpu")
    assert moved is not data and torch.equal(moved.x_test, data.x_test)


def test_train_inputs_and_map_inputs():
    data = make(unlabeled_includes_labeled=False)
    assert data.train_inputs().shape == (10, 3)
    doubled = make(x_val=torch.ones(1, 3), y_val=torch.tensor([1])).map_inputs(lambda x: 2 * x)
    assert float(doubled.x_unlabeled.max()) == 2.0 and float(doubled.x_val.max()) == 2.0
    assert make().train_inputs().shape == (6, 3)


def test_validation_errors():
    with pytest.raises(ValueError, match="same number of rows"):
        make(y_labeled=torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="int64"):
        make(y_labeled=torch.tensor([0, 1, 1, 0], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\)"):
        make(y_labeled=torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="x_unlabeled must have input shape"):
        make(x_unlabeled=torch.zeros(6, 4))
    with pytest.raises(ValueError, match="both be tensors or both be None"):
        make(x_test=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="classes must list n_classes=2"):
        make(classes=["a"])
