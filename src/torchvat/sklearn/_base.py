"""The shared machinery of the scikit-learn estimators: validation, the network, training.

Training runs through :class:`torchvat.train.Trainer` (one :meth:`~torchvat.train.Trainer.fit`
per ``fit`` / ``partial_fit`` call) with the engine's defaults: its network for vectors
(:func:`torchvat.models.default_model`), its eps rule (the trainer derives ``eps`` when it is
``None``), its unlabeled pool (every training row, labeled ones included, as the data loaders
build it) and its schedule. This module only translates: scikit-learn inputs into the
trainer's tensors, ``hidden_layer_sizes`` into the network's widths, the loss curve and the
early stopping into callbacks.
"""

from __future__ import annotations

import copy
import logging
import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d, validate_data
from torch import Tensor, nn

from torchvat import params
from torchvat.data.arrays import warn_inflated_columns
from torchvat.models import default_model
from torchvat.train import (
    Callback,
    Method,
    TrainConfig,
    Trainer,
    get_rng_state,
    seed_everything,
    select_device,
    set_rng_state,
)
from torchvat.train.defaults import resolve_regularize

__all__ = ["ENGINE_DEFAULTS", "BaseVATEstimator"]

logger = logging.getLogger("torchvat.sklearn")

#: the engine's defaults, which the estimators' parameters take (one declaration: ``TrainConfig``)
ENGINE_DEFAULTS = TrainConfig()
#: Rows per forward pass at prediction time.
PREDICT_BATCH_SIZE = 4096
_MAX_SEED = 2**31 - 1


def _is_nan(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isnan(float(value))


def unlabeled_mask(y: np.ndarray, unlabeled_label: Any) -> np.ndarray:
    """Boolean mask of the rows of ``y`` that carry ``unlabeled_label``.

    NaN as ``unlabeled_label`` matches NaN and ``None``; for string and object labels the
    value also matches its string form (``-1`` matches ``"-1"``).

    Args:
        y: 1-D labels.
        unlabeled_label: The marker of unlabeled rows.

    Returns:
        A boolean array like ``y``.

    Example:
        >>> unlabeled_mask(np.array(["a", "-1", "b"]), -1).tolist()
        [False, True, False]
    """
    if _is_nan(unlabeled_label):
        if y.dtype.kind == "f":
            return np.isnan(y)
        if y.dtype.kind == "O":
            return np.array([v is None or _is_nan(v) for v in y], dtype=bool)
        return np.zeros(y.shape, dtype=bool)
    if y.dtype.kind in "OUS":
        text = str(unlabeled_label)
        return np.array([v == unlabeled_label or str(v) == text for v in y.tolist()], dtype=bool)
    if y.dtype.kind in "biuf" and isinstance(unlabeled_label, numbers.Real):
        return y == unlabeled_label
    return np.zeros(y.shape, dtype=bool)


def sklearn_constraints(name: str) -> list[Any]:
    """The valid values of option ``name`` (:data:`torchvat.params.PARAMS`) in scikit-learn's terms.

    The one declaration translated into :mod:`sklearn.utils._param_validation`'s constraints
    (``Interval``, ``StrOptions``, ``None``, ``"boolean"``), for the estimators'
    ``_parameter_constraints``.

    Args:
        name: An option name declared in :mod:`torchvat.params`.

    Returns:
        The list of constraints, any of which a valid value satisfies.

    Example:
        >>> [str(c) for c in sklearn_constraints("n_power")]
        ['an int in the range [0, inf)']
    """
    constraint = params.PARAMS[name]
    out: list[Any] = []
    if isinstance(constraint, params.Choice):
        strings = {v for v in constraint.values if isinstance(v, str)}
        if strings:
            out.append(StrOptions(strings))
        if any(isinstance(v, bool) for v in constraint.values):
            out.append("boolean")
        if None in constraint.values:
            out.append(None)
    elif isinstance(constraint, params.Real):
        closed = {(True, True): "both", (True, False): "left", (False, True): "right", (False, False): "neither"}
        left = constraint.low_closed and constraint.low is not None
        right = constraint.high_closed and constraint.high is not None
        out.append(Interval(numbers.Real, constraint.low, constraint.high, closed=closed[(left, right)]))
        strings = {v for v in constraint.special if isinstance(v, str)}
        if strings:
            out.append(StrOptions(strings))
        if None in constraint.special:
            out.append(None)
    elif isinstance(constraint, params.Integer):
        out.append(Interval(numbers.Integral, constraint.low, None, closed="left"))
        if constraint.none:
            out.append(None)
    elif isinstance(constraint, params.Boolean):
        out.append("boolean")
    else:  # a new kind of constraint in params: translate it here
        raise TypeError(f"no scikit-learn translation of {type(constraint).__name__} (option {name!r})")
    return out


#: each entry of ``hidden_layer_sizes``
_HIDDEN = params.Integer(1)


def _to_cpu(obj: Any) -> Any:
    """Copy the tensors of a nested container to the CPU."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _predict_float64(model: nn.Module, x: Tensor) -> Tensor:
    """The model's output on ``x`` computed in float64 (float32 if the model cannot).

    In float64 a row's prediction does not depend, to float32 precision, on which other
    rows share its batch (float32 matrix products vary with the batch size in the last bits).
    """
    state: dict[str, Tensor] = dict(model.named_parameters())
    state.update(model.named_buffers())
    try:
        as_double = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
        out = torch.func.functional_call(model, as_double, (x.double(),))
    except (RuntimeError, TypeError):  # a device or model without float64 support
        out = model(x)
    return out.double().cpu()


class _LossRecorder(Callback):
    """Keep every iteration's training loss on the device; read them once at the end."""

    def __init__(self) -> None:
        self.losses: list[Tensor] = []

    def on_step_end(self, **kwargs: Any) -> None:
        self.losses.append(kwargs["metrics"]["loss"])

    def values(self) -> list[float]:
        return torch.stack(self.losses).float().cpu().tolist() if self.losses else []


class _EarlyStopping(Callback):
    """Stop when the validation error has not improved for ``patience`` evaluations.

    The weights of the best evaluation are kept and restored by :meth:`restore`.
    """

    def __init__(self, patience: int, tol: float) -> None:
        self.patience = patience
        self.tol = tol
        self.best = math.inf
        self.best_step = 0
        self.best_state: dict[str, Tensor] | None = None
        self.scores: list[float] = []
        self.bad = 0

    def on_eval_end(self, **kwargs: Any) -> None:
        error = kwargs["metrics"].get("val_error")
        if error is None:
            return
        trainer: Trainer = kwargs["trainer"]
        self.scores.append(float(error))
        if error < self.best - self.tol:
            self.best, self.best_step, self.bad = float(error), trainer.step, 0
            self.best_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        else:
            self.bad += 1
            if self.bad >= self.patience:
                trainer.should_stop = True

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


class BaseVATEstimator(BaseEstimator):
    """Common parameters and training of :class:`VATClassifier` and :class:`VATRegressor`.

    Subclasses define ``_METHODS`` and the target handling (``_prepare_targets``,
    ``_n_outputs``, ``_make_method``, ``_trainer_class``, ``_stratify``).
    """

    _METHODS: tuple[str, ...] = ()
    #: the fitted network (set by ``fit``; declared for type checkers, not an attribute before it)
    module_: nn.Module
    #: scikit-learn's parameter constraints, checked in ``fit`` by ``_validate_params``: the
    #: engine's options read from :mod:`torchvat.params` (subclasses add ``method``)
    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "hidden_layer_sizes": [None, Interval(numbers.Integral, 1, None, closed="left"), "array-like"],
        "module": [None, callable],
        "eps": sklearn_constraints("eps"),
        "xi": sklearn_constraints("xi"),
        "alpha": sklearn_constraints("alpha"),
        "beta": sklearn_constraints("beta"),
        "n_power": sklearn_constraints("n_power"),
        "max_iter": sklearn_constraints("iterations"),
        "batch_size": sklearn_constraints("batch_size"),
        "unlabeled_batch_size": sklearn_constraints("unlabeled_batch_size"),
        "learning_rate_init": sklearn_constraints("lr"),
        "weight_decay": sklearn_constraints("weight_decay"),
        "random_state": ["random_state"],
        "device": [str, torch.device],
        "verbose": ["verbose"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "warm_start": ["boolean"],
        "unlabeled_label": "no_validation",
        "labeled_stats": sklearn_constraints("labeled_stats"),
    }
    _UNLABELED_WARNING = (
        "y contains no unlabeled samples (rows whose label is unlabeled_label={label!r}); "
        "method {method!r} then applies its regularizer to the labeled rows only"
    )

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle; an estimator pickled before ``labeled_stats`` existed gets the value it trained with ("own")."""
        state.setdefault("labeled_stats", "own")
        super().__setstate__(state)

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's tags: results are reproducible bit for bit only on the CPU."""
        tags = super().__sklearn_tags__()
        try:
            tags.non_deterministic = select_device(self.device).type != "cpu"
        except (ValueError, TypeError):
            tags.non_deterministic = False
        return tags

    # ------------------------------------------------------------ validation
    def _check_params(self) -> None:
        """scikit-learn's validation of :attr:`_parameter_constraints`, then what it cannot say."""
        self._validate_params()
        if self.module is None and self.hidden_layer_sizes is not None:
            sizes = self.hidden_layer_sizes
            if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
                sizes = (sizes,)
            if isinstance(sizes, str | bytes) or not isinstance(sizes, Sequence):
                raise ValueError(f"hidden_layer_sizes must be None or a sequence of positive integers, got {sizes!r}")
            for i, h in enumerate(sizes):
                _HIDDEN.check(f"hidden_layer_sizes[{i}]", h)

    def _validate_fit_data(self, X: Any, y: Any, *, reset: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        X = validate_data(self, X, reset=reset, dtype=[np.float32, np.float64], ensure_min_samples=1)
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        mask = unlabeled_mask(y, self.unlabeled_label)
        if mask.all():
            raise ValueError(
                f"y has no labeled rows: all {y.shape[0]} rows carry unlabeled_label={self.unlabeled_label!r}; "
                f"{type(self).__name__} needs at least one labeled row"
            )
        return np.asarray(X, dtype=np.float32), y, mask

    # ----------------------------------------------------------------- model
    def _build_module(self, n_features: int, n_outputs: int) -> nn.Module:
        if self.module is None:
            # the engine's network for vectors: its family and batch normalization per input size
            sizes = self.hidden_layer_sizes
            if sizes is None:
                return default_model((n_features,), n_outputs)
            sizes = (sizes,) if isinstance(sizes, numbers.Integral) else tuple(sizes)
            return default_model((n_features,), n_outputs, hidden_sizes=tuple(int(h) for h in sizes))
        model = self.module(n_features, n_outputs)
        if not isinstance(model, nn.Module):
            raise TypeError(f"module(n_features, n_outputs) must return a torch.nn.Module, got {type(model).__name__}")
        return model

    def _needs_eps(self) -> bool:
        # ``alpha`` weighs every term that perturbs the input (``beta`` weighs vat+ent's entropy)
        return self.method != "supervised" and self.alpha != 0

    def _method_eps(self, n_rows: int, *, first: bool) -> float | None:
        """The ``eps`` handed to the method: ``None`` lets the trainer derive it by the engine's rule.

        An explicit ``eps`` is used as given on every fit (a ``set_params(eps=...)`` between warm
        fits or ``partial_fit`` calls takes effect). ``eps=None`` is derived by the trainer
        (:class:`~torchvat.train.Trainer`, ``suggest_eps(rule="labeled")`` over its unlabeled
        pool) on the first fit that needs one (a cold fit, or a warm one after a method without
        eps); :meth:`_fit` keeps that value for the later warm fits and ``partial_fit`` calls,
        so the regularizer does not change its scale with each batch.
        """
        if first:
            self._derived_eps: float | None = None
        if not self._needs_eps():
            return None if self.eps is None else float(self.eps)
        if self.eps is not None:
            return float(self.eps)
        derived: float | None = getattr(self, "_derived_eps", None)  # set by an earlier fit (absent before one)
        if derived is not None:
            return float(derived)
        if n_rows < 2:
            raise ValueError(
                f"eps=None derives eps from the distances between rows, which needs n_samples >= 2, "
                f"got n_samples={n_rows}; pass eps explicitly"
            )
        return None

    # ---------------------------------------------------------------- fitting
    def _fit(self, X: Any, y: Any, *, incremental: bool, classes: Any = None) -> BaseVATEstimator:
        self._check_params()
        first = not (incremental or self.warm_start) or not hasattr(self, "module_")
        X, y, unlabeled = self._validate_fit_data(X, y, reset=first)
        labeled_rows = np.flatnonzero(~unlabeled)
        targets = self._prepare_targets(y[labeled_rows], first=first, classes=classes, incremental=incremental)
        # the engine's unlabeled pool: every training row, the labeled ones included (as the data
        # loaders build it); rows held out for early stopping are in neither
        pool = np.ones(X.shape[0], dtype=bool)
        x_val = y_val = None
        if self.early_stopping and not incremental:  # as scikit-learn's MLP: partial_fit does not stop early
            train_pos, val_pos = self._validation_split(targets)
            pool[labeled_rows[val_pos]] = False
            x_val, y_val = X[labeled_rows[val_pos]], targets[val_pos]
            labeled_rows, targets = labeled_rows[train_pos], targets[train_pos]
        x_labeled, x_pool = X[labeled_rows], X[pool]

        if first:
            self.n_iter_ = 0
            self.loss_curve_: list[float] = []
            self._optimizer_state = None
            self._seed = self._base_seed()
        method_eps = self._method_eps(X.shape[0], first=first)
        method = self._make_method(method_eps)
        # the method knows which of its terms draw unlabeled batches (vat+ent's entropy does with alpha=0)
        uses_unlabeled = bool(method.uses_unlabeled)
        if uses_unlabeled and not unlabeled.any():
            warnings.warn(
                self._UNLABELED_WARNING.format(label=self.unlabeled_label, method=self.method),
                UserWarning,
                stacklevel=3,
            )
        if uses_unlabeled and first:
            warn_inflated_columns(
                torch.from_numpy(np.ascontiguousarray(X)), feature_names=getattr(self, "feature_names_in_", None)
            )
        if incremental:  # one epoch over the labeled rows and the pool
            n_batches = max(
                math.ceil(x_labeled.shape[0] / self.batch_size),
                math.ceil(x_pool.shape[0] / self.unlabeled_batch_size) if uses_unlabeled else 0,
            )
            iterations = max(1, n_batches)
        else:
            iterations = int(self.max_iter)
        seed = (self._seed + self.n_iter_) % _MAX_SEED

        device = select_device(self.device)
        rng_state = get_rng_state(device)
        try:
            seed_everything(seed)  # the initialization depends on random_state only
            model: nn.Module = self._build_module(X.shape[1], self._n_outputs()) if first else self.module_
            if hasattr(method, "regularize"):  # the engine's rows for this network (joint pass with BatchNorm)
                method.regularize = resolve_regularize(ENGINE_DEFAULTS.regularize, model)
            recorder = _LossRecorder()
            callbacks: list[Callback] = [recorder]
            stopper = None
            if x_val is not None:
                stopper = _EarlyStopping(self.n_iter_no_change, self.tol)
                callbacks.append(stopper)
            eval_every = max(1, min(50, iterations // 20)) if x_val is not None else iterations
            try:
                trainer = self._trainer_class(
                    model,
                    x_labeled=torch.from_numpy(np.ascontiguousarray(x_labeled)),
                    y_labeled=torch.from_numpy(np.ascontiguousarray(targets)),
                    x_unlabeled=torch.from_numpy(np.ascontiguousarray(x_pool)),
                    x_val=None if x_val is None else torch.from_numpy(np.ascontiguousarray(x_val)),
                    y_val=None if y_val is None else torch.from_numpy(np.ascontiguousarray(y_val)),
                    method=method,
                    callbacks=callbacks,
                    iterations=iterations,
                    batch_size=int(self.batch_size),
                    unlabeled_batch_size=int(self.unlabeled_batch_size),
                    lr=float(self.learning_rate_init),
                    weight_decay=float(self.weight_decay),
                    labeled_stats=str(self.labeled_stats),
                    schedule="constant" if incremental else ENGINE_DEFAULTS.schedule,
                    seed=seed,
                    device=str(self.device),
                    progress=bool(self.verbose),
                    eval_every=eval_every,
                    log_every=max(1, min(50, iterations)),
                    collapse_patience=0,
                )
            except ValueError as err:  # the engine's eps rule on rows that are all the same point
                if method_eps is None and self._needs_eps() and "identical" in str(err):
                    raise ValueError(f"cannot derive eps from X ({err}); pass eps explicitly") from err
                raise
            if self._needs_eps():
                self.eps_ = trainer.eps
                if self.eps is None:
                    self._derived_eps = trainer.eps
            else:
                self.eps_ = method_eps
            if incremental and self._optimizer_state is not None:
                trainer.optimizer.load_state_dict(self._optimizer_state)
            result = trainer.fit()
        finally:
            set_rng_state(rng_state, device)

        if stopper is not None:
            stopper.restore(model)
            self.validation_scores_ = [1.0 - e for e in stopper.scores] if self._is_classifier() else stopper.scores
            self.best_iteration_ = self.n_iter_ + stopper.best_step
        self.module_ = model.eval()
        self.n_iter_ += result.steps
        self.loss_curve_ = list(self.loss_curve_) + recorder.values()
        self._optimizer_state = trainer.optimizer.state_dict() if incremental else None
        if self.verbose:
            logger.info(
                "%s: %d iterations, eps=%s, final loss %.4g",
                type(self).__name__,
                result.steps,
                self.eps_,
                self.loss_curve_[-1] if self.loss_curve_ else float("nan"),
            )
        return self

    def _base_seed(self) -> int:
        """The trainer's seed: ``random_state`` itself when it is an int, else one drawn from it."""
        rs = self.random_state
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool) and 0 <= int(rs) < _MAX_SEED:
            return int(rs)
        return int(check_random_state(rs).randint(_MAX_SEED))

    def _is_classifier(self) -> bool:
        return False

    def _validation_split(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (in ``targets``) of the labeled rows kept for training and of those held out."""
        n = targets.shape[0]
        n_val = math.ceil(self.validation_fraction * n)
        if n_val < 1 or n - n_val < 1:
            raise ValueError(
                f"early_stopping needs at least 2 labeled rows to hold out validation_fraction="
                f"{self.validation_fraction} of them, got {n} labeled rows"
            )
        stratify = self._stratify(targets, n_val)
        train_pos, val_pos = train_test_split(
            np.arange(n), test_size=n_val, random_state=check_random_state(self.random_state), stratify=stratify
        )
        self._check_train_split(targets[train_pos])
        return np.sort(train_pos), np.sort(val_pos)

    def _check_train_split(self, targets: np.ndarray) -> None:
        """Raise if the labeled rows left for training after the validation split are unusable."""

    # -------------------------------------------------------------- predicting
    def _forward(self, X: Any) -> np.ndarray:
        """The network's outputs on ``X`` in evaluation mode, as float64."""
        check_is_fitted(self, "module_")
        X = validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        model = self.module_
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
        model.eval()
        outs = []
        with torch.no_grad():
            for start in range(0, x.shape[0], PREDICT_BATCH_SIZE):
                outs.append(_predict_float64(model, x[start : start + PREDICT_BATCH_SIZE].to(device)))
        return torch.cat(outs).numpy() if outs else np.zeros((0, self._n_outputs()))

    # ---------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        module = state.get("module_")
        if module is not None and any(p.device.type != "cpu" for p in module.parameters()):
            state["module_"] = copy.deepcopy(module).cpu()
        if state.get("_optimizer_state") is not None:
            state["_optimizer_state"] = _to_cpu(state["_optimizer_state"])
        return state

    # ------------------------------------------------------- subclass interface
    def _prepare_targets(self, y: np.ndarray, *, first: bool, classes: Any, incremental: bool) -> np.ndarray:
        raise NotImplementedError

    def _n_outputs(self) -> int:
        raise NotImplementedError

    def _make_method(self, eps: float | None) -> Method:
        raise NotImplementedError

    def _stratify(self, targets: np.ndarray, n_val: int) -> np.ndarray | None:
        return None

    _trainer_class: type[Trainer] = Trainer
