"""scikit-learn estimators: semi-supervised neural networks trained with VAT.

- :class:`VATClassifier`: classification; rows labeled ``-1`` (or ``unlabeled_label``) are
  unlabeled, as in :mod:`sklearn.semi_supervised`.
- :class:`VATRegressor`: regression with a Gaussian likelihood; NaN targets are unlabeled.
- :class:`LabeledKFold`: cross-validation on the labeled rows, every unlabeled row in every
  training fold (``cross_val_score``, ``GridSearchCV`` over ``eps``, VAT against supervised).

Both train :class:`torchvat.train.Trainer` on an :class:`torchvat.models.MLP` or any
``torch.nn.Module``, pass ``sklearn.utils.estimator_checks``, and work in pipelines and
grid searches. They do not rescale ``X``: put a scaler in front of them, a ``StandardScaler`` for
measurements in different units, a ``MinMaxScaler`` for columns that are almost constant (pixels;
they warn with :class:`torchvat.data.FeatureScaleWarning` when such columns were standardized).
"""

from torchvat._extras import require

require("sklearn", extra="sklearn", feature="torchvat.sklearn")  # a missing extra is named before any import

from torchvat.sklearn._estimators import VATClassifier, VATRegressor  # noqa: E402
from torchvat.sklearn._model_selection import LabeledKFold  # noqa: E402

__all__ = ["LabeledKFold", "VATClassifier", "VATRegressor"]
