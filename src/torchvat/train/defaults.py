"""The engine's data- and model-dependent defaults, in one place.

Every door (:class:`~torchvat.train.Trainer`, the command line, the scikit-learn estimators,
Lightning's ``VATModule``) reads these functions instead of writing its own rule:

- :func:`derive_eps`: the perturbation size ``eps=None`` stands for, from the data;
- :func:`resolve_regularize`: the rows a regularizer covers when ``regularize="auto"``, from the
  model (one joint clean pass with BatchNorm).

Example:
    >>> import torch
    >>> from torch import nn
    >>> resolve_regularize("auto", nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4)))
    'all'
    >>> resolve_regularize("auto", nn.Linear(2, 4))
    'unlabeled'
    >>> resolve_regularize("unlabeled", nn.BatchNorm1d(4))
    'unlabeled'
    >>> x_l, x_u = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0], [0.0, 2.0], [0.0, 4.0]])
    >>> round(derive_eps(x_l, x_u), 4)  # 0.75 x the median of the distances 5, 2 and 4
    3.0
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from torchvat.core import suggest_eps
from torchvat.params import check

__all__ = [
    "DEFAULT_LABELED_STATS",
    "DEFAULT_REGULARIZE",
    "EPS_RULE",
    "derive_eps",
    "has_batch_norm",
    "resolve_regularize",
]

#: the :func:`torchvat.suggest_eps` rule of ``eps=None``: 0.75 x the median distance from an
#: unlabeled point to its nearest labeled point
EPS_RULE = "labeled"
#: the rows a regularizer covers by default: separate clean passes, the unlabeled pool regularized.
#: ``"auto"`` (a joint pass with BatchNorm) is opt-in: on BatchNorm MLPs it removes the collapse of
#: separate passes with 50 labels on digits (86.5 vs 62 %) but collapses on Fashion-MNIST with 100
#: labels (73 % test error at 4,000 iterations against 22 % with separate passes; BENCHMARKS.md §6)
DEFAULT_REGULARIZE = "unlabeled"
#: the statistics BatchNorm normalizes the labeled rows of separate clean passes with:
#: ``"own"`` (their own batch's; the VAT authors' code) or ``"unlabeled"`` (the unlabeled batch's,
#: which the running statistics then follow: :mod:`torchvat.train.batch_statistics`)
DEFAULT_LABELED_STATS = "own"

#: seconds a collective operation of a distributed run waits for the other processes before it
#: fails (``TrainConfig.dist_timeout``, ``--dist-timeout``): 30 minutes, PyTorch's own default for
#: gloo, stated so that NCCL (10 minutes by default) waits as long. The other processes wait in
#: their next collective while rank 0 works alone: an evaluation's files, a checkpoint of a large
#: model on a slow shared file system, the final report; a peer that stopped answering is found
#: after this long
DEFAULT_DIST_TIMEOUT = 1800.0


def derive_eps(x_labeled: Tensor, x_unlabeled: Tensor | None) -> float:
    """The perturbation size the engine uses for ``eps=None``.

    ``suggest_eps(x_unlabeled, rule="labeled", labeled=x_labeled)``: 0.75 x the median distance
    from an unlabeled point to its nearest labeled point (without unlabeled rows, from each
    labeled point to its nearest other labeled one). The global random generators are left as
    they were (the rule subsamples large sets).

    Args:
        x_labeled: The labeled inputs ``[N_l, ...]``.
        x_unlabeled: The unlabeled inputs ``[N_u, ...]``, or ``None``.

    Returns:
        eps, a positive float.

    Raises:
        ValueError: As :func:`torchvat.suggest_eps` (for example, if every row is the same point).
    """
    with torch.random.fork_rng(devices=[]):
        if x_unlabeled is not None:
            return float(suggest_eps(x_unlabeled, rule=EPS_RULE, labeled=x_labeled))
        return float(suggest_eps(x_labeled, rule=EPS_RULE))


def has_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` has a batch normalization layer (any ``BatchNorm*d``, ``SyncBatchNorm``)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def resolve_regularize(regularize: str, model: nn.Module) -> str:
    """The rows a regularizer covers: ``"auto"`` resolved by the model, other values as given.

    ``"auto"`` is ``"all"`` (one joint clean pass over the labeled and unlabeled rows, every row
    regularized) for a model with BatchNorm, and ``"unlabeled"`` (separate passes) otherwise. With
    BatchNorm, separate passes normalize the labeled batch (a few dozen rows drawn from the few
    labeled ones) and the unlabeled batch by statistics of their own, so the supervised term
    trains a network the regularizer never sees, and with 50 labels VAT fell 2-38 points below
    supervised training (BENCHMARKS.md section 6); the joint pass gives every row the same
    statistics.

    Args:
        regularize: ``"auto"``, ``"unlabeled"`` or ``"all"``.
        model: The network to train.

    Returns:
        ``"unlabeled"`` or ``"all"``.

    Raises:
        ValueError: If ``regularize`` is not one of the three.
    """
    check("regularize", regularize)
    if regularize != "auto":
        return regularize
    return "all" if has_batch_norm(model) else "unlabeled"
