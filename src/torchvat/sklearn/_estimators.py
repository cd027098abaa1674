"""``VATClassifier`` and ``VATRegressor``: semi-supervised scikit-learn estimators."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils import _safe_indexing, assert_all_finite
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.multiclass import check_classification_targets
from torch import nn

from torchvat import params
from torchvat.sklearn._base import ENGINE_DEFAULTS, BaseVATEstimator, unlabeled_mask
from torchvat.sklearn._regression import REGRESSION_METHODS, RegressionTrainer, make_regression_method
from torchvat.train import Method, get_method

__all__ = ["VATClassifier", "VATRegressor"]

#: every training mode of the engine (torchvat.params declares them once)
CLASSIFIER_METHODS = tuple(sorted(params.BUILTIN_METHODS))

_COMMON_ARGS = """
        hidden_layer_sizes: Widths of the hidden layers of the engine's network for vectors
            (:func:`torchvat.models.default_model`, as the trainer and the CLI build it), or
            ``None`` for its own widths: an :class:`torchvat.models.MLP` with ReLU activations,
            widths 100-100 and no batch normalization for at most 16 features, and widths from
            :func:`torchvat.models.scaled_hidden_sizes` with batch normalization for more.
            Given widths replace the widths only; the batch normalization stays the engine's
            choice for the number of features. Ignored when ``module`` is given.
        module: ``None`` for the MLP, or a callable ``module(n_features, n_outputs)``
            returning any ``torch.nn.Module`` that maps ``[B, n_features]`` float32 inputs to
            ``[B, n_outputs]`` outputs.
        method: Training method: ``"vat"`` (virtual adversarial training), ``"at"``
            (adversarial training on the labeled rows), ``"rpt"`` (random perturbations),
            ``"supervised"`` (labeled rows only), and for the classifier also ``"vat+ent"``
            (VAT plus entropy minimization) and ``"at+vat"``.
        eps: Perturbation size (L2 norm, in the units of ``X``). ``None`` derives it from the
            training rows by the trainer's rule (:class:`torchvat.train.Trainer`,
            ``suggest_eps(rule="labeled")``): 0.75 times the median distance from a training
            row to its nearest labeled row, the labeled rows themselves left out, so it follows
            the scale of ``X``. The estimator does not rescale ``X``; put a scaler in front
            of it: ``StandardScaler`` for measurements in different units, but not for columns
            that are almost constant (pixels that are nearly always 0, rare one-hot categories),
            whose rare values it inflates to tens of standard deviations; the rows holding them
            then set the BatchNorm statistics of every batch they are in: on scikit-learn's
            digits with 50 labels VAT reaches 73% accuracy after ``StandardScaler`` (79%
            supervised) and 89% after ``MinMaxScaler`` (83%); see BENCHMARKS.md section 6. An
            explicit ``eps`` is used as given by every ``fit`` and ``partial_fit`` call (also
            one changed with ``set_params`` between warm-started fits). With ``None`` it is
            derived once, on the first call that needs one (a cold ``fit``, the first
            ``partial_fit``, or a warm-started call after a method without ``eps``), from that
            call's rows, and kept by the later ``partial_fit`` calls and warm-started fits, so
            the regularizer keeps its scale from batch to batch; a cold ``fit`` derives it anew.
            To choose it on held-out labels, as the VAT papers did, search a few multiples of
            the derived ``eps_`` with ``GridSearchCV(..., cv=LabeledKFold())``
            (:class:`torchvat.sklearn.LabeledKFold`); the same folds compare ``method="vat"``
            with ``method="supervised"`` on one's own data.
        xi: Finite-difference step of the power iteration, or ``"auto"``.
        alpha: Weight of the regularizer (0 turns it off).
        n_power: Power iterations of the VAT search.
        max_iter: The budget of ``fit`` in training iterations (optimizer steps, not epochs),
            the trainer's ``iterations`` and its default; each draws ``batch_size`` labeled rows
            and ``unlabeled_batch_size`` rows of the unlabeled pool.
        batch_size: Labeled rows per iteration (the labeled rows are cycled).
        unlabeled_batch_size: Rows per iteration from the unlabeled pool, which holds every
            training row, the labeled ones included (as the trainer's data loaders build it).
        learning_rate_init: Adam's learning rate; over the last third of ``fit`` it decays
            linearly to 0 (the trainer's ``"paper"`` schedule, the VAT papers'). ``partial_fit``
            uses it constantly.
        weight_decay: L2 weight decay of the optimizer.
        random_state: Seed (int), ``numpy.random.RandomState`` or ``None``; fixes the
            initialization, the batches and the perturbation search. An int is the trainer's
            ``seed`` itself (``Trainer(..., seed=random_state)`` with the network built after
            ``seed_everything(random_state)`` trains the same network). ``fit`` and
            ``partial_fit`` leave the global random generators (PyTorch's, NumPy's, Python's)
            as they found them.
        device: ``"auto"`` (CUDA, then MPS, then CPU) or a torch device string.
        verbose: Show a progress bar and log a summary.
        early_stopping: Hold out ``validation_fraction`` of the labeled rows, evaluate them
            regularly and stop when the validation error has not improved by ``tol`` for
            ``n_iter_no_change`` evaluations; the best weights are kept. ``partial_fit``
            does not stop early (as scikit-learn's ``MLPClassifier``): it trains on every
            labeled row it is given.
        validation_fraction: Fraction of the labeled rows held out for early stopping.
        n_iter_no_change: Evaluations without improvement before stopping.
        tol: Minimum improvement of the validation error.
        warm_start: Continue from the fitted network in the next ``fit`` call.
        labeled_stats: With BatchNorm, the statistics the labeled rows are normalized with:
            ``"own"`` (their own batch's, the engine's default) or ``"unlabeled"`` (the
            unlabeled batch's; the trainer's ``labeled_stats``, BENCHMARKS.md section 6)."""


class VATClassifier(ClassifierMixin, BaseVATEstimator):
    __doc__ = f"""Semi-supervised neural-network classifier trained with VAT (Miyato et al., TPAMI 2018).

    Rows whose label is ``unlabeled_label`` (``-1`` by default, scikit-learn's convention) are
    unlabeled: they enter the training only through the regularizer (the local
    distributional smoothness of VAT, which makes the prediction robust to small input
    perturbations in the most sensitive direction). Labels may be integers or strings.

    Training runs :class:`torchvat.train.Trainer` with the engine's defaults (its network for
    vectors, eps rule, unlabeled pool, schedule and iteration budget), so the estimator and the
    trainer give the same model for the same data, seed and settings, and the same
    ``random_state`` gives the same model on the same device.

    Args:{_COMMON_ARGS}
        beta: Weight of the entropy term of ``method="vat+ent"`` (``None``: the engine's default, 1).
        unlabeled_label: The label that marks unlabeled rows (also matched as a string:
            ``-1`` matches ``"-1"``).

    Attributes:
        classes_: The class labels (sorted), from the labeled rows.
        n_features_in_: Number of features seen in ``fit``.
        feature_names_in_: Column names when ``X`` was a DataFrame with string columns.
        module_: The trained ``torch.nn.Module`` (in evaluation mode).
        eps_: The perturbation size of the last ``fit`` / ``partial_fit`` (``None`` for methods
            without one); see ``eps``.
        n_iter_: Training iterations done (accumulated over ``partial_fit`` and warm starts).
        loss_curve_: The training loss of every iteration.
        validation_scores_: Validation accuracy at each evaluation (``early_stopping`` only).
        best_iteration_: Iteration of the kept weights (``early_stopping`` only).

    Example:
        >>> from sklearn.datasets import make_moons
        >>> from sklearn.pipeline import make_pipeline
        >>> from sklearn.preprocessing import StandardScaler
        >>> X, y = make_moons(200, noise=0.1, random_state=0)
        >>> y_semi = y.copy(); y_semi[10:] = -1  # 10 labels, 190 unlabeled rows
        >>> clf = make_pipeline(StandardScaler(), VATClassifier(max_iter=200, random_state=0))
        >>> clf = clf.fit(X, y_semi)
        >>> clf.predict_proba(X[:3]).shape
        (3, 2)
    """

    _METHODS = CLASSIFIER_METHODS
    _parameter_constraints: ClassVar[dict[str, Any]] = {
        **BaseVATEstimator._parameter_constraints,
        "method": [StrOptions(set(CLASSIFIER_METHODS))],
    }

    def __init__(
        self,
        hidden_layer_sizes: tuple[int, ...] | None = None,
        *,
        module: Callable[[int, int], nn.Module] | None = None,
        method: str = ENGINE_DEFAULTS.method,
        eps: float | None = ENGINE_DEFAULTS.eps,
        xi: float | str = ENGINE_DEFAULTS.xi,
        alpha: float = ENGINE_DEFAULTS.alpha,
        n_power: int = ENGINE_DEFAULTS.n_power,
        max_iter: int = ENGINE_DEFAULTS.iterations,
        batch_size: int = ENGINE_DEFAULTS.batch_size,
        unlabeled_batch_size: int = ENGINE_DEFAULTS.unlabeled_batch_size,
        learning_rate_init: float = ENGINE_DEFAULTS.lr,
        weight_decay: float = ENGINE_DEFAULTS.weight_decay,
        random_state: int | np.random.RandomState | None = None,
        device: str = "auto",
        verbose: bool = False,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        tol: float = 1e-4,
        warm_start: bool = False,
        beta: float | None = ENGINE_DEFAULTS.beta,
        unlabeled_label: Any = -1,
        labeled_stats: str = ENGINE_DEFAULTS.labeled_stats,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.module = module
        self.method = method
        self.eps = eps
        self.xi = xi
        self.alpha = alpha
        self.n_power = n_power
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.unlabeled_batch_size = unlabeled_batch_size
        self.learning_rate_init = learning_rate_init
        self.weight_decay = weight_decay
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.beta = beta
        self.unlabeled_label = unlabeled_label
        self.labeled_stats = labeled_stats

    def fit(self, X: Any, y: Any) -> VATClassifier:
        """Train on labeled and unlabeled rows.

        Args:
            X: Array-like or DataFrame ``[n_samples, n_features]``.
            y: Labels ``[n_samples]``; rows equal to ``unlabeled_label`` are unlabeled.

        Returns:
            The fitted estimator.

        Raises:
            ValueError: For invalid parameters or data (scikit-learn's messages for the
                arrays), no labeled rows, or fewer than two classes among the labeled rows.
        """
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> VATClassifier:
        """Train one pass over ``(X, y)``, continuing the current network and optimizer.

        One pass is ``max(ceil(n_labeled / batch_size), ceil(n_samples /
        unlabeled_batch_size))`` iterations (an epoch over the labeled rows and over the
        unlabeled pool, which holds every row) with a constant learning rate.

        Args:
            X: Array-like ``[n_samples, n_features]``.
            y: Labels; rows equal to ``unlabeled_label`` are unlabeled.
            classes: Every class label; required on the first call. ``unlabeled_label`` is
                dropped from it, so ``np.unique(y)`` of semi-supervised ``y`` can be passed.

        Returns:
            The estimator.

        Raises:
            ValueError: If ``classes`` is missing on the first call, or ``y`` holds a label
                outside ``classes_``.
        """
        return self._fit(X, y, incremental=True, classes=classes)

    def _is_classifier(self) -> bool:
        return True

    def _prepare_targets(self, y: np.ndarray, *, first: bool, classes: Any, incremental: bool) -> np.ndarray:
        if y.dtype.kind == "f":
            assert_all_finite(y, input_name="y")
        check_classification_targets(y)
        if first:
            if classes is None and incremental:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            if classes is None:
                labels = np.unique(y)
            else:  # np.unique(y) of semi-supervised y, the usual idiom, includes the unlabeled marker
                labels = np.asarray(classes)
                labels = np.unique(labels[~unlabeled_mask(labels, self.unlabeled_label)])
            if labels.shape[0] < 2:
                raise ValueError(
                    f"{type(self).__name__} needs labeled rows of at least 2 classes, got 1 class: {labels.tolist()}"
                )
            self.classes_ = labels
        elif classes is not None and not np.array_equal(
            np.unique(np.asarray(classes)[~unlabeled_mask(np.asarray(classes), self.unlabeled_label)]), self.classes_
        ):
            raise ValueError(
                f"classes={list(classes)!r} is not the same as on the first call, {self.classes_.tolist()}"
            )
        codes = np.searchsorted(self.classes_, y)
        codes = np.clip(codes, 0, self.classes_.shape[0] - 1)
        unknown = self.classes_[codes] != y
        if unknown.any():
            raise ValueError(
                f"y contains labels not in classes_ {self.classes_.tolist()}: {np.unique(y[unknown]).tolist()}"
            )
        return codes.astype(np.int64)

    def _n_outputs(self) -> int:
        return int(self.classes_.shape[0])

    def _make_method(self, eps: float | None) -> Method:
        beta = None if self.beta is None else float(self.beta)  # None: the method's own weight (get_method)
        return get_method(
            self.method, eps=eps, xi=self.xi, alpha=float(self.alpha), n_power=int(self.n_power), beta=beta
        )

    def _stratify(self, targets: np.ndarray, n_val: int) -> np.ndarray | None:
        counts = np.bincount(targets)
        counts = counts[counts > 0]
        if counts.min() >= 2 and n_val >= counts.shape[0] and targets.shape[0] - n_val >= counts.shape[0]:
            return targets
        return None

    def _check_train_split(self, targets: np.ndarray) -> None:
        missing = np.setdiff1d(np.arange(self.classes_.shape[0]), targets)
        if missing.size:
            raise ValueError(
                f"early_stopping held out every labeled row of the classes {self.classes_[missing].tolist()} "
                f"(validation_fraction={self.validation_fraction}); label more rows or set early_stopping=False"
            )

    def decision_function(self, X: Any) -> np.ndarray:
        """The network's logits.

        Args:
            X: Array-like ``[n_samples, n_features]``.

        Returns:
            ``[n_samples, n_classes]`` logits, or for two classes ``[n_samples]`` scores of
            ``classes_[1]`` (the logit difference; positive means ``classes_[1]``).

        Raises:
            sklearn.exceptions.NotFittedError: Before ``fit``.
        """
        logits = self._forward(X)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (softmax of the logits), columns in the order of ``classes_``.

        Args:
            X: Array-like ``[n_samples, n_features]``.

        Returns:
            ``[n_samples, n_classes]`` probabilities.

        Raises:
            sklearn.exceptions.NotFittedError: Before ``fit``.
        """
        logits = self._forward(X)
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of :meth:`predict_proba` (computed stably).

        Args:
            X: Array-like ``[n_samples, n_features]``.

        Returns:
            ``[n_samples, n_classes]`` log-probabilities.
        """
        logits = self._forward(X)
        logits = logits - logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class of each row.

        Args:
            X: Array-like ``[n_samples, n_features]``.

        Returns:
            ``[n_samples]`` labels from ``classes_``.

        Raises:
            sklearn.exceptions.NotFittedError: Before ``fit``.
        """
        scores = self._forward(X)
        return self.classes_[scores.argmax(axis=1)]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy on the labeled rows of ``(X, y)``: rows labeled ``unlabeled_label`` are left out.

        Rows whose label is ``unlabeled_label`` (``-1`` by default) are left out, so the
        semi-supervised ``y`` that ``fit`` takes can be scored as it is (``GridSearchCV``,
        ``cross_val_score``); counted, every unlabeled row would be an error. On data where
        ``-1`` is a real class, its rows are therefore not scored and the score overstates
        the accuracy (every row of that class is missing from it): construct the estimator
        with ``unlabeled_label`` set to a value that is not a class (``None``, for example), or
        score with ``sklearn.metrics.accuracy_score(y, clf.predict(X))``.

        Args:
            X: Array-like ``[n_samples, n_features]``.
            y: True labels; rows equal to ``unlabeled_label`` are not scored.
            sample_weight: Optional weights of the rows.

        Returns:
            The accuracy over the rows not labeled ``unlabeled_label``.

        Raises:
            ValueError: If ``y`` has no labeled rows.
        """
        return super().score(*_labeled_rows(X, y, sample_weight, self.unlabeled_label))


class VATRegressor(RegressorMixin, BaseVATEstimator):
    __doc__ = f"""Semi-supervised neural-network regressor trained with VAT (Gaussian likelihood).

    The supervised term is half the squared error (the Gaussian negative log-likelihood with
    unit variance) and the VAT divergence is the half squared difference of the outputs
    (:func:`torchvat.gaussian_divergence`). The targets are standardized internally (and
    predictions mapped back), so ``eps`` and ``alpha`` do not depend on the units of ``y``.
    Rows whose target is ``unlabeled_label`` (NaN by default: ``-1`` is a legitimate target)
    are unlabeled.

    Args:{_COMMON_ARGS}
        unlabeled_label: The target value that marks unlabeled rows (default NaN).

    Attributes:
        n_features_in_: Number of features seen in ``fit``.
        feature_names_in_: Column names when ``X`` was a DataFrame with string columns.
        module_: The trained ``torch.nn.Module`` (in evaluation mode), on standardized targets.
        eps_: The perturbation size of the last ``fit`` / ``partial_fit`` (``None`` for methods
            without one); see ``eps``.
        n_iter_: Training iterations done (accumulated over ``partial_fit`` and warm starts).
        loss_curve_: The training loss of every iteration.
        validation_scores_: Validation mean squared error (standardized targets) at each
            evaluation (``early_stopping`` only).
        best_iteration_: Iteration of the kept weights (``early_stopping`` only).

    Example:
        >>> import numpy as np
        >>> rng = np.random.RandomState(0)
        >>> X = rng.uniform(-2, 2, size=(200, 1)); y = np.sin(X[:, 0])
        >>> y_semi = y.copy(); y_semi[20:] = np.nan  # 20 labeled rows
        >>> reg = VATRegressor(hidden_layer_sizes=(32,), max_iter=200, random_state=0).fit(X, y_semi)
        >>> reg.predict(X[:4]).shape
        (4,)
    """

    _METHODS = REGRESSION_METHODS
    _parameter_constraints: ClassVar[dict[str, Any]] = {
        **BaseVATEstimator._parameter_constraints,
        "method": [StrOptions(set(REGRESSION_METHODS))],
    }
    _trainer_class = RegressionTrainer

    def __init__(
        self,
        hidden_layer_sizes: tuple[int, ...] | None = None,
        *,
        module: Callable[[int, int], nn.Module] | None = None,
        method: str = ENGINE_DEFAULTS.method,
        eps: float | None = ENGINE_DEFAULTS.eps,
        xi: float | str = ENGINE_DEFAULTS.xi,
        alpha: float = ENGINE_DEFAULTS.alpha,
        n_power: int = ENGINE_DEFAULTS.n_power,
        max_iter: int = ENGINE_DEFAULTS.iterations,
        batch_size: int = ENGINE_DEFAULTS.batch_size,
        unlabeled_batch_size: int = ENGINE_DEFAULTS.unlabeled_batch_size,
        learning_rate_init: float = ENGINE_DEFAULTS.lr,
        weight_decay: float = ENGINE_DEFAULTS.weight_decay,
        random_state: int | np.random.RandomState | None = None,
        device: str = "auto",
        verbose: bool = False,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        tol: float = 1e-4,
        warm_start: bool = False,
        unlabeled_label: Any = np.nan,
        labeled_stats: str = ENGINE_DEFAULTS.labeled_stats,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.module = module
        self.method = method
        self.eps = eps
        self.xi = xi
        self.alpha = alpha
        self.n_power = n_power
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.unlabeled_batch_size = unlabeled_batch_size
        self.learning_rate_init = learning_rate_init
        self.weight_decay = weight_decay
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.unlabeled_label = unlabeled_label
        self.labeled_stats = labeled_stats

    def fit(self, X: Any, y: Any) -> VATRegressor:
        """Train on labeled and unlabeled rows.

        Args:
            X: Array-like or DataFrame ``[n_samples, n_features]``.
            y: Real targets ``[n_samples]``; rows equal to ``unlabeled_label`` are unlabeled.

        Returns:
            The fitted estimator.

        Raises:
            ValueError: For invalid parameters or data, or no labeled rows.
        """
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X: Any, y: Any) -> VATRegressor:
        """Train one pass over ``(X, y)``, continuing the current network and optimizer.

        Args:
            X: Array-like ``[n_samples, n_features]``.
            y: Targets; rows equal to ``unlabeled_label`` are unlabeled.

        Returns:
            The estimator.
        """
        return self._fit(X, y, incremental=True)

    def _prepare_targets(self, y: np.ndarray, *, first: bool, classes: Any, incremental: bool) -> np.ndarray:
        try:
            y = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"y must hold real numbers for {type(self).__name__}, got dtype {y.dtype}") from err
        assert_all_finite(y, input_name="y")
        if first:
            self._y_mean = float(y.mean())
            scale = float(y.std())
            self._y_scale = scale if scale > 0 else 1.0
        return ((y - self._y_mean) / self._y_scale).astype(np.float32)

    def _n_outputs(self) -> int:
        return 1

    def _make_method(self, eps: float | None) -> Method:
        return make_regression_method(
            self.method, eps=eps, xi=self.xi, alpha=float(self.alpha), n_power=int(self.n_power)
        )

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets.

        Args:
            X: Array-like ``[n_samples, n_features]``.

        Returns:
            ``[n_samples]`` predictions in the units of ``y``.

        Raises:
            sklearn.exceptions.NotFittedError: Before ``fit``.
        """
        return self._forward(X)[:, 0] * self._y_scale + self._y_mean

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Coefficient of determination on the labeled rows of ``(X, y)`` (``unlabeled_label`` rows left out).

        Raises:
            ValueError: If ``y`` has no labeled rows.
        """
        return super().score(*_labeled_rows(X, y, sample_weight, self.unlabeled_label))


def _labeled_rows(X: Any, y: Any, sample_weight: Any, unlabeled_label: Any) -> tuple[Any, np.ndarray, Any]:
    """``(X, y, sample_weight)`` without the rows marked ``unlabeled_label``."""
    y = np.asarray(y)
    keep = np.flatnonzero(~unlabeled_mask(y, unlabeled_label))
    if keep.size == 0:
        raise ValueError(f"y has no labeled rows to score: all {y.shape[0]} carry unlabeled_label={unlabeled_label!r}")
    if keep.size == y.shape[0]:
        return X, y, sample_weight
    weights = None if sample_weight is None else _safe_indexing(sample_weight, keep)
    return _safe_indexing(X, keep), y[keep], weights
