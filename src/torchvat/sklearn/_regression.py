"""Regression (Gaussian likelihood) versions of the trainer's methods, and a trainer for them.

The trainer's built-in methods and evaluation assume a classifier (cross-entropy, accuracy).
For :class:`~torchvat.sklearn.VATRegressor` the supervised term is the Gaussian negative
log-likelihood with unit variance (half the squared error, up to a constant) and the VAT
divergence is :func:`torchvat.gaussian_divergence`. The methods keep the trainer's term
names (``"ce"`` is the supervised term), so the trainer's loop, weights and warm-up apply
unchanged; :class:`RegressionTrainer` only relaxes the label checks and evaluates with the
mean squared error.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from torchvat.train import (
    AdversarialTraining,
    Batch,
    CleanPass,
    Method,
    Supervised,
    Trainer,
    VirtualAdversarialTraining,
)

__all__ = ["REGRESSION_METHODS", "RegressionTrainer", "make_regression_method"]


def _half_squared_error(output: Tensor, y: Tensor) -> Tensor:
    """Per-sample ``0.5 * (output[:, 0] - y) ** 2`` (Gaussian NLL with unit variance)."""
    return 0.5 * (output.float()[:, 0] - y.float()).pow(2)


def _supervised_term(batch: Batch, clean: CleanPass) -> Tensor:
    """Mean half squared error of the labeled rows of the clean pass."""
    return _half_squared_error(clean.labeled_logits, batch.y_labeled).mean()


class _GaussianSupervised(Supervised):
    """Plain regression: half the squared error on the labeled batch."""

    cross_entropy = staticmethod(_supervised_term)


class _GaussianVAT(VirtualAdversarialTraining):
    """VAT for regression: half squared error plus ``alpha`` times the Gaussian LDS."""

    cross_entropy = staticmethod(_supervised_term)

    likelihood = "gaussian"


class _GaussianRPT(_GaussianVAT):
    """Random perturbation training for regression (VAT with no power iteration)."""

    name = "rpt"
    term = "rpt"

    def __init__(self, eps: float | None = None, alpha: float = 1.0, norm: str = "l2", **_: Any) -> None:
        super().__init__(eps=eps, alpha=alpha, n_power=0, norm=norm)


class _GaussianAT(AdversarialTraining):
    """Adversarial training for regression: the squared error at the adversarial input."""

    cross_entropy = staticmethod(_supervised_term)

    loss_fn = staticmethod(_half_squared_error)


REGRESSION_METHODS = ("at", "rpt", "supervised", "vat")


def make_regression_method(name: str, *, eps: float | None, xi: float | str, alpha: float, n_power: int) -> Method:
    """Build the Gaussian-likelihood version of a training method.

    Args:
        name: One of :data:`REGRESSION_METHODS`.
        eps: Perturbation size.
        xi: Finite-difference step or ``"auto"``.
        alpha: Weight of the regularizer.
        n_power: Power iterations of the VAT search.

    Returns:
        The method.

    Raises:
        ValueError: If ``name`` is not a regression method.

    Example:
        >>> make_regression_method("vat", eps=1.0, xi="auto", alpha=1.0, n_power=1).weights
        {'ce': 1.0, 'vat': 1.0}
    """
    if name == "supervised":
        return _GaussianSupervised()
    if name == "vat":
        return _GaussianVAT(eps=eps, xi=xi, alpha=alpha, n_power=n_power)
    if name == "rpt":
        return _GaussianRPT(eps=eps, alpha=alpha)
    if name == "at":
        return _GaussianAT(eps=eps, alpha=alpha)
    raise ValueError(f"method must be one of {', '.join(map(repr, REGRESSION_METHODS))}, got {name!r}")


class RegressionTrainer(Trainer):
    """The trainer with real-valued targets ``[N]`` and mean-squared-error evaluation.

    Only the label checks and :meth:`evaluate` differ from :class:`~torchvat.train.Trainer`;
    the model must return one output per row (``[B, 1]``) and the method must come from
    :func:`make_regression_method`. The trainer's ``train_acc`` metric has no meaning here.
    """

    @staticmethod
    def _check_data(t: dict[str, Tensor | None]) -> None:
        targets = {k: t[k] for k in ("y_labeled", "y_val", "y_test")}
        for key, y in targets.items():
            if y is not None:
                if y.ndim != 1 or y.is_complex() or y.dtype == torch.bool:
                    raise ValueError(f"{key} must be a 1-D real tensor, got dtype {y.dtype} and shape {tuple(y.shape)}")
                # integer placeholders of the same length let the parent check the shapes
                t[key] = torch.zeros(y.shape[0], dtype=torch.int64)
        Trainer._check_data(t)
        for key, y in targets.items():
            if y is not None:
                t[key] = y.float()

    def evaluate(self, x: Tensor, y: Tensor, batch_size: int | None = None) -> dict[str, float]:
        """Mean squared error on ``(x, y)``.

        Args:
            x: Inputs ``[N, ...]``.
            y: Targets ``[N]``.
            batch_size: Rows per forward pass.

        Returns:
            ``{"error": mse, "loss": mse / 2, "n": N}``.

        Raises:
            ValueError: If ``x`` and ``y`` have different numbers of rows or are empty.
        """
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(f"x and y must have the same, non-zero number of rows, got {x.shape[0]} and {y.shape[0]}")
        pred = self.predict_logits(x, batch_size)[:, 0]
        mse = float((pred - y.to(pred.device).float()).pow(2).mean())
        return {"error": mse, "loss": mse / 2, "n": int(y.shape[0])}
