"""Bad input: each case raises the expected exception with a message naming the problem."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from torchvat import adversarial_loss, entropy_loss, vat_loss
from torchvat.data import from_arrays
from torchvat.train import TrainConfig, Trainer, get_method

from ._helpers import make_mlp

_g = torch.Generator().manual_seed(0)
X = torch.randn(40, 2, generator=_g)
Y = (X[:, 0] > 0).long()
OPTIONS = dict(iterations=2, batch_size=4, unlabeled_batch_size=8, progress=False, eps=0.3)


def fit(model=None, **kwargs):
    data = dict(x_labeled=X[:8], y_labeled=Y[:8], x_unlabeled=X)
    data.update(kwargs.pop("data", {}))
    return Trainer(model or make_mlp(0), **data, **{**OPTIONS, **kwargs}).fit()


def trainer(**kwargs):
    return Trainer(make_mlp(0), x_labeled=X[:8], y_labeled=Y[:8], x_unlabeled=X, **{**OPTIONS, **kwargs})


def with_nan(x, value=math.nan):
    x = x.clone()
    x[3, 1] = value
    return x


class ReturnsDict(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = make_mlp(0)

    def forward(self, x):
        return {"logits": self.net(x)}


class ReturnsTuple(ReturnsDict):
    def forward(self, x):
        return (self.net(x),)


class ReturnsHFOutput(ReturnsDict):
    """Like a Hugging Face ``ModelOutput``: an ordered dict with attribute access."""

    def forward(self, x):
        from collections import OrderedDict

        out = OrderedDict(logits=self.net(x))
        return type("SequenceClassifierOutput", (OrderedDict,), {"logits": property(lambda s: s["logits"])})(out)


def bn_mlp():
    return nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


CASES = [
    # (id, call, exception, message pattern)
    ("nan in labeled inputs", lambda: fit(data=dict(x_labeled=with_nan(X[:8]))), ValueError,
     r"x_labeled must be finite, got NaN or Inf in 1 row\(s\), the first at row 3"),
    ("inf in unlabeled inputs", lambda: fit(data=dict(x_unlabeled=with_nan(X, math.inf))), ValueError,
     r"x_unlabeled must be finite, got NaN or Inf in 1 row\(s\), the first at row 3"),
    ("nan in test inputs", lambda: fit(data=dict(x_test=with_nan(X), y_test=Y)), ValueError,
     r"x_test must be finite"),
    ("nan in arrays", lambda: from_arrays(with_nan(X).numpy(), Y.numpy()), ValueError,
     r"X contains NaN or Inf in 1 rows"),
    ("label above the classes", lambda: fit(data=dict(y_labeled=torch.tensor([0, 1, 5, 0, 1, 0, 1, 0]))),
     ValueError, r"y_labeled must hold class indices in \[0, 2\) \(the model returns 2 logits\), got 5"),
    ("test label above the classes", lambda: fit(data=dict(x_test=X[:4], y_test=torch.tensor([0, 1, 2, 0]))),
     ValueError, r"y_test must hold class indices in \[0, 2\)"),
    ("negative label", lambda: fit(data=dict(y_labeled=torch.tensor([0, 1, -1, 0, 1, 0, 1, 0]))), ValueError,
     r"y_labeled must hold class indices >= 0, got -1"),
    ("labels out of range in arrays", lambda: from_arrays(X.numpy(), Y.numpy(), n_classes=1), ValueError,
     r"labels must be in \[0, 1\) or -1 for unlabeled rows, got invalid labels \[1\]"),
    ("all rows unlabeled", lambda: from_arrays(X.numpy(), -np.ones(40, dtype=np.int64)), ValueError,
     r"y has no labeled rows: all 40 rows are -1"),
    ("no labeled rows given to the trainer", lambda: fit(data=dict(x_labeled=X[:0], y_labeled=Y[:0])),
     ValueError, r"x_labeled must have at least one row, got 0"),
    ("empty dataset", lambda: fit(data=dict(x_labeled=X[:0], y_labeled=Y[:0], x_unlabeled=X[:0])), ValueError,
     r"x_labeled must have at least one row, got 0"),
    ("batch size 1 with BatchNorm", lambda: fit(bn_mlp(), method="supervised", batch_size=1), ValueError,
     r"batch_size=1 .* too small for the model's BatchNorm layers .* use batch sizes >= 2"),
    ("integer token ids to vat_loss", lambda: vat_loss(nn.Embedding(10, 4), torch.randint(0, 10, (3, 5)), eps=1.0),
     TypeError, r"must be a floating-point tensor, got dtype torch.int64 \(integer token ids\?\)"),
    ("integer token ids to adversarial_loss",
     lambda: adversarial_loss(nn.Embedding(10, 4), torch.randint(0, 10, (3, 5)), torch.zeros(3).long(), eps=1.0),
     TypeError, r"integer token ids"),
    ("integer inputs to a perturbing method", lambda: fit(data=dict(x_labeled=X[:8].long(), x_unlabeled=X.long())),
     TypeError, r"x_labeled must be a floating-point tensor for method 'vat' \(it perturbs the inputs\)"),
    ("float64 inputs to a float32 model", lambda: fit(data=dict(x_labeled=X[:8].double(), x_unlabeled=X.double())),
     TypeError, r"x_labeled has dtype torch.float64 but the model's parameters are torch.float32"),
    ("integer unlabeled inputs to a perturbing method", lambda: fit(data=dict(x_unlabeled=X.long())), TypeError,
     r"x_unlabeled must be a floating-point tensor for method 'vat' \(it perturbs the inputs\), got dtype torch.int64"),
    ("float64 unlabeled inputs to a float32 model", lambda: fit(data=dict(x_unlabeled=X.double())), TypeError,
     r"x_unlabeled has dtype torch.float64 but the model's parameters are torch.float32; "
     r"convert the inputs \(x_unlabeled.to\(torch.float32\)\)"),
    ("float64 validation inputs to a float32 model", lambda: fit(data=dict(x_val=X.double(), y_val=Y)), TypeError,
     r"x_val has dtype torch.float64 but the model's parameters are torch.float32"),
    ("float64 test inputs to a float32 model", lambda: fit(data=dict(x_test=X.double(), y_test=Y)), TypeError,
     r"x_test has dtype torch.float64 but the model's parameters are torch.float32"),
    ("float labels", lambda: fit(data=dict(y_labeled=Y[:8].float())), ValueError,
     r"y_labeled must be a 1-D integer tensor of class indices, got dtype torch.float32"),
    ("numpy object inputs", lambda: fit(data=dict(x_labeled="not a tensor")), TypeError,
     r"must be a torch.Tensor or numpy array, got str"),
    ("model returning a dict", lambda: fit(ReturnsDict()), TypeError,
     r"the model must return a logits tensor \[B, n_classes\], got dict"),
    ("model returning a tuple", lambda: fit(ReturnsTuple()), TypeError, r"got tuple; wrap a model"),
    ("model returning a Hugging Face output", lambda: fit(ReturnsHFOutput()), TypeError,
     r"got SequenceClassifierOutput"),
    ("model returning one value per batch", lambda: fit(nn.Sequential(make_mlp(0), nn.Flatten(0))), ValueError,
     r"one row of logits per input row"),
    ("labeled and unlabeled shapes differ", lambda: fit(data=dict(x_unlabeled=torch.randn(20, 3))), ValueError,
     r"x_unlabeled must have input shape \(2,\) like x_labeled, got \(3,\)"),
    ("inputs and labels of different lengths", lambda: fit(data=dict(y_labeled=Y[:5])), ValueError,
     r"x_labeled and y_labeled must have the same number of rows, got 8 and 5"),
    ("arrays of different lengths", lambda: from_arrays(X.numpy(), Y[:30].numpy()), ValueError,
     r"X and y must have the same number of rows, got 40 and 30"),
    ("negative eps", lambda: TrainConfig(eps=-1.0), ValueError, r"eps must be None or a finite number >= 0, got -1.0"),
    ("infinite eps", lambda: TrainConfig(eps=math.inf), ValueError,
     r"eps must be None or a finite number >= 0, got inf"),
    ("negative learning rate", lambda: TrainConfig(lr=-0.1), ValueError, r"lr must be a finite number >= 0"),
    ("negative alpha", lambda: TrainConfig(alpha=-1.0), ValueError, r"alpha must be a finite number >= 0"),
    ("zero xi", lambda: TrainConfig(xi=0.0), ValueError, r"xi must be 'auto' or a finite number > 0, got 0.0"),
    ("zero batch size", lambda: TrainConfig(batch_size=0), ValueError, r"batch_size must be an integer >= 1, got 0"),
    ("zero iterations", lambda: TrainConfig(iterations=0), ValueError, r"iterations must be an integer >= 1, got 0"),
    ("negative power iterations", lambda: TrainConfig(n_power=-1), ValueError, r"n_power must be an integer >= 0"),
    ("zero eval_every", lambda: TrainConfig(eval_every=0), ValueError, r"eval_every must be an integer >= 1"),
    ("negative prediction batch size", lambda: trainer().predict_logits(X, batch_size=-1), ValueError,
     r"batch_size must be an integer >= 1 or None, got -1"),
    ("zero evaluation batch size", lambda: trainer().evaluate(X, Y, batch_size=0), ValueError,
     r"batch_size must be an integer >= 1 or None, got 0"),
    ("negative vat_loss eps", lambda: vat_loss(make_mlp(0), X, eps=-1.0), ValueError,
     r"eps must be a finite number >= 0, got -1.0"),
    ("negative vat_loss xi", lambda: vat_loss(make_mlp(0), X, eps=1.0, xi=-1.0), ValueError,
     r"xi must be a finite number > 0, got -1.0"),
    ("negative adversarial eps", lambda: adversarial_loss(make_mlp(0), X, Y, eps=-0.5), ValueError,
     r"eps must be a finite number >= 0"),
    ("unknown reduction", lambda: entropy_loss(torch.randn(3, 2), reduction="avg"), ValueError,
     r"reduction must be one of 'none', 'mean', 'sum', got 'avg'"),
    ("unknown method name", lambda: fit(method="vta"), ValueError, r"method must be one of .*'vat'.*, got 'vta'"),
    ("unknown method in get_method", lambda: get_method("foo"), ValueError, r"method must be one of .*got 'foo'"),
    ("unknown non-finite policy", lambda: TrainConfig(nonfinite="drop"), ValueError,
     r"nonfinite must be one of 'stop', 'skip', 'ignore', got 'drop'"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error", "match"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused(call, error, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error, match=match):
            call()


def test_no_unlabeled_rows_warns_and_trains():
    with pytest.warns(UserWarning, match="uses unlabeled data but x_unlabeled is None or empty"):
        result = fit(data=dict(x_unlabeled=None))
    assert result.steps == 2
    with pytest.warns(UserWarning, match="y contains no unlabeled rows"):
        assert from_arrays(X.numpy(), Y.numpy()).n_unlabeled == 40


def test_zero_eps_is_legal_and_switches_the_regularizer_off():
    assert float(vat_loss(make_mlp(0), X, eps=0.0)) == 0.0
