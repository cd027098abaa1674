"""The valid values of torchvat's options, declared once.

Every door reads this table: the core's argument checks, :class:`~torchvat.train.TrainConfig`,
the command line's ``choices``, the scikit-learn estimators' ``_parameter_constraints`` and the
integrations' arguments. A name, a range or a list of choices is written here and nowhere else, as
scikit-learn's ``validate_params`` reads each estimator's ``_parameter_constraints``.

This module imports nothing from torchvat (nor torch), so the lowest layer (:mod:`torchvat.core`)
can read it.

Example:
    >>> check("norm", "l2")
    >>> check("norm", "l3")
    Traceback (most recent call last):
    ...
    ValueError: norm must be one of 'l2', 'linf', got 'l3'
    >>> PARAMS["n_power"].describe()
    'an integer >= 0'
    >>> canonical_method("at+vat")
    'at+vat'
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BUILTIN_METHODS",
    "METHOD_SPELLINGS",
    "PARAMS",
    "Boolean",
    "Choice",
    "Constraint",
    "Integer",
    "Real",
    "canonical_method",
    "check",
    "choices",
]


class Constraint:
    """The valid values of one option: :meth:`check` raises naming the option, the expectation and the value."""

    def describe(self) -> str:
        """What is expected, in words (the middle of every error message)."""
        raise NotImplementedError

    def accepts(self, value: object) -> bool:
        """Whether ``value`` is valid."""
        raise NotImplementedError

    def error(self, name: str, value: object) -> Exception:
        """The exception for an invalid ``value`` of option ``name``."""
        return ValueError(f"{name} must be {self.describe()}, got {value!r}")

    def check(self, name: str, value: object) -> None:
        """Raise :meth:`error` unless ``value`` is valid."""
        if not self.accepts(value):
            raise self.error(name, value)


@dataclass(frozen=True)
class Choice(Constraint):
    """One of a fixed set of values (strings, or ``None`` / ``bool`` where listed)."""

    values: tuple[Any, ...]

    def describe(self) -> str:
        """``one of 'a', 'b'``."""
        return "one of " + ", ".join(map(repr, self.values))

    def accepts(self, value: object) -> bool:
        """Whether ``value`` is one of :attr:`values` (``True`` is not ``1``)."""
        return any(type(value) is type(v) and value == v for v in self.values)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Real(Constraint):
    """A finite real number (not a ``bool``) in an interval; ``low``/``high`` of ``None`` are open."""

    low: float | None = None
    high: float | None = None
    low_closed: bool = True
    high_closed: bool = True
    #: another accepted value besides the numbers (``"auto"`` for ``xi``, ``None`` for a derived eps)
    special: tuple[Any, ...] = ()

    def describe(self) -> str:
        """``a finite number > 0``, ``a number in [0, 1)``, ..."""
        if self.low is not None and self.high is not None:
            left, right = "[" if self.low_closed else "(", "]" if self.high_closed else ")"
            text = f"a number in {left}{self.low:g}, {self.high:g}{right}"
        elif self.low is not None:
            text = f"a finite number {'>=' if self.low_closed else '>'} {self.low:g}"
        elif self.high is not None:
            text = f"a finite number {'<=' if self.high_closed else '<'} {self.high:g}"
        else:
            text = "a finite number"
        if self.special:
            text = " or ".join([*map(repr, self.special), text])
        return text

    def accepts(self, value: object) -> bool:
        """Whether ``value`` is a listed special value or a number in the interval."""
        if any(type(value) is type(v) and value == v for v in self.special) or (value is None and None in self.special):
            return True
        if not _is_real(value) or not math.isfinite(float(value)):  # type: ignore[arg-type]  # checked real
            return False
        v = float(value)  # type: ignore[arg-type]  # checked real
        if self.low is not None and (v < self.low or (v == self.low and not self.low_closed)):
            return False
        return not (self.high is not None and (v > self.high or (v == self.high and not self.high_closed)))


@dataclass(frozen=True)
class Integer(Constraint):
    """An integer (not a ``bool``; NumPy integers count) of at least ``low``, or ``None`` where allowed."""

    low: int = 0
    none: bool = False

    def describe(self) -> str:
        """``an integer >= 1`` (``or None`` where allowed)."""
        return f"an integer >= {self.low}" + (" or None" if self.none else "")

    def accepts(self, value: object) -> bool:
        """Whether ``value`` is an integer >= :attr:`low` (or ``None``, where allowed)."""
        if value is None:
            return self.none
        return isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= self.low


@dataclass(frozen=True)
class Boolean(Constraint):
    """``True`` or ``False`` (not ``0``/``1``)."""

    def describe(self) -> str:
        """``a bool``."""
        return "a bool"

    def accepts(self, value: object) -> bool:
        """Whether ``value`` is a ``bool``."""
        return isinstance(value, bool)


#: the training modes torchvat defines, by their one name (``torchvat.train.available_methods`` adds
#: the ones a user registers)
BUILTIN_METHODS = ("supervised", "rpt", "at", "vat", "vat+ent", "at+vat", "pgd-at", "trades")
#: earlier or other spellings of a method name, each read as the name it stands for with a
#: ``DeprecationWarning`` naming that one
METHOD_SPELLINGS = {"vat+at": "at+vat"}

#: every option with a fixed set of valid values, by the name every door uses
PARAMS: Mapping[str, Constraint] = {
    # the perturbation searches and losses (torchvat.core)
    "eps": Real(0.0, special=(None,)),
    "xi": Real(0.0, low_closed=False, special=("auto",)),
    "n_power": Integer(0),
    "norm": Choice(("l2", "linf")),
    "probe": Choice(("auto", "finite_difference", "exact")),
    "reduction": Choice(("none", "mean", "sum")),
    "likelihood": Choice(("categorical", "bernoulli", "gaussian")),
    "divergence": Choice(("kl", "symmetric_kl")),
    # the order of the VAT family's KL: "clean-perturbed", KL(p(x) || p(x + r)) (the VAT papers), or
    # "perturbed-clean", KL(p(x + r) || p(x)) (Oliver et al. 2018; torchvat.core.divergence.reversed_divergence)
    "kl_direction": Choice(("clean-perturbed", "perturbed-clean")),
    # the multi-step searches (PGD, TRADES: torchvat.core.search)
    "steps": Integer(1),
    "step_size": Real(0.0, low_closed=False, special=(None,)),
    "random_start": Boolean(),
    "keep": Choice(("best", "last")),
    "clean_weight": Real(0.0),
    # the training modes (torchvat.train)
    "alpha": Real(0.0),
    "beta": Real(0.0, special=(None,)),
    # "auto": "all" with BatchNorm, else "unlabeled" (torchvat.train.defaults.resolve_regularize)
    "regularize": Choice(("auto", "unlabeled", "all")),
    # the statistics BatchNorm normalizes the labeled rows of separate clean passes with
    # (torchvat.train.batch_statistics): their own batch's, or the unlabeled batch's
    "labeled_stats": Choice(("own", "unlabeled")),
    # the loop
    "iterations": Integer(1),
    "batch_size": Integer(1),
    "unlabeled_batch_size": Integer(1),
    "optimizer": Choice(("adam", "sgd")),
    "lr": Real(0.0),
    "beta1": Real(0.0, 1.0, high_closed=False),
    "decay_beta1": Real(0.0, 1.0, high_closed=False),
    "momentum": Real(0.0, 1.0, high_closed=False),
    "nesterov": Boolean(),
    "weight_decay": Real(0.0),
    "schedule": Choice(("paper", "cosine", "constant", "step")),
    "decay_fraction": Real(0.0, 1.0),
    "warmup_iters": Integer(0),
    # the "step" schedule: lr x lr_decay every lr_decay_every iterations (None: not set)
    "lr_decay": Real(0.0, 1.0, low_closed=False),
    "lr_decay_every": Integer(1, none=True),
    # the "cosine" schedule's lr x cos(pi f t / T), f at most a quarter period (None: (1 + cos(pi t / T)) / 2)
    "cosine_fraction": Real(0.0, 0.5, low_closed=False, special=(None,)),
    # the shape of the regularizer weights' warm-up (torchvat.train.optim.warmup_factor)
    "warmup_shape": Choice(("linear", "sigmoid")),
    "eval_every": Integer(1),
    "eval_batch_size": Integer(1),
    "log_every": Integer(1),
    "checkpoint_every": Integer(1, none=True),
    "collapse_patience": Integer(0),
    "nonfinite": Choice(("stop", "skip", "ignore")),
    "seed": Integer(0),
    # seconds a collective operation of a distributed run waits for the other processes
    "dist_timeout": Real(0.0, low_closed=False),
    # fp16: autocast in float16 with a GradScaler (torchvat.train.Trainer)
    "amp": Choice((None, "bf16", "fp16")),
    "compile": Choice((False, True, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")),
    # the decay of the exponential moving average of the weights (torchvat.train.ema); None: no average
    "ema": Real(0.0, 1.0, low_closed=False, high_closed=False, special=(None,)),
    # which weights of a run are evaluated (torchvat evaluate --weights, torchvat.runs.load_run)
    "weights": Choice(("ema", "raw")),
    # BatchNorm statistics re-estimated before each evaluation (torchvat.train.recalibrate); None: the
    # running averages; the split passed, how many batches (None: one pass over it) and their size
    "bn_recalibrate": Choice((None, "labeled", "unlabeled")),
    "bn_recalibrate_batches": Integer(1, none=True),
    "bn_recalibrate_batch_size": Integer(1),
}


def check(name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is valid for option ``name`` (see :data:`PARAMS`).

    Args:
        name: An option name from :data:`PARAMS`.
        value: The value given.

    Raises:
        KeyError: If ``name`` is not declared here (a programming error, not a user's).
        ValueError: If ``value`` is not valid; the message names the option, what it must be and
            what it got.
    """
    PARAMS[name].check(name, value)


def choices(name: str) -> tuple[Any, ...]:
    """The valid values of a :class:`Choice` option (for a command line's ``choices=``).

    Args:
        name: An option name whose constraint is a :class:`Choice`.

    Returns:
        The values, in their declared order.

    Raises:
        TypeError: If the option is not a choice among fixed values.
    """
    constraint = PARAMS[name]
    if not isinstance(constraint, Choice):
        raise TypeError(f"option {name!r} is {constraint.describe()}, not a choice among fixed values")
    return constraint.values


def canonical_method(name: str, *, stacklevel: int = 2) -> str:
    """The one name of a training mode given by another spelling (with a ``DeprecationWarning``).

    Args:
        name: A method name as a user wrote it.
        stacklevel: Passed to :func:`warnings.warn` (2: the caller's caller).

    Returns:
        ``name`` itself, or the name it is another spelling of.
    """
    new = METHOD_SPELLINGS.get(name)
    if new is None:
        return name
    warnings.warn(
        f"method {name!r} is spelled {new!r} in torchvat; {name!r} is read as {new!r} and will be refused "
        "in a later version",
        DeprecationWarning,
        stacklevel=stacklevel + 1,
    )
    return new
