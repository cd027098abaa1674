"""The hyperparameters of :class:`~torchvat.integrations.hf.VATTrainer`, saved beside the model.

Needs no ``transformers`` import.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchvat import params
from torchvat.core._checks import check_choice, check_nonnegative
from torchvat.core.perturbation import check_common

__all__ = ["VAT_ARGS_FILE", "VATArguments"]

#: the methods of :class:`VATTrainer`: the engine's methods (:data:`torchvat.params.BUILTIN_METHODS`)
#: that this door has, by the engine's names
METHODS = tuple(m for m in params.BUILTIN_METHODS if m in ("supervised", "vat", "at", "at+vat"))
#: the rows VAT applies to: the engine's ``regularize`` option
REGULARIZE = tuple(v for v in params.choices("regularize") if v != "auto")
# (not the engine's "auto": its rule chooses a joint clean pass for BatchNorm models, and a batch here
# always goes through one joint pass; which rows VAT regularizes stays the user's choice, "all" by default)
_DIVERGENCES = params.choices("divergence")
#: spellings of earlier versions and the engine's names for them
_RENAMED_METHODS = params.METHOD_SPELLINGS
_RENAMED_OPTIONS = {"vat_on": "regularize"}

#: the file :class:`VATTrainer` writes the :class:`VATArguments` to, beside a saved model
VAT_ARGS_FILE = "torchvat_vat_args.json"


def _renamed_method(method: Any, where: str, stacklevel: int) -> Any:
    """The engine's name of ``method``, with a ``DeprecationWarning`` for an earlier spelling."""
    if isinstance(method, str) and method in _RENAMED_METHODS:
        new = _RENAMED_METHODS[method]
        warnings.warn(
            f"{where}method={method!r} is deprecated, use method={new!r} (the name torchvat's Trainer, "
            "CLI and estimators use)",
            DeprecationWarning,
            stacklevel=stacklevel + 1,
        )
        return new
    return method


@dataclass(init=False)
class VATArguments:
    """Hyperparameters of :class:`VATTrainer` (checked on construction).

    Args:
        method: ``"vat"`` (supervised + ``alpha`` * VAT), ``"at"`` (supervised + ``at_alpha`` * AT on
            labeled rows), ``"at+vat"`` (both, as in Miyato et al. 2017) or ``"supervised"`` (the
            supervised term alone). The engine's names (:func:`torchvat.train.available_methods`);
            ``"vat+at"``, the name of earlier versions, still works, with a ``DeprecationWarning``.
        eps: VAT perturbation size, over each embedded sequence (L2) or per element (L-inf).
        xi: finite-difference step of the probe (``"auto"`` or a number); see :func:`torchvat.vat_loss`.
        n_power: power-iteration steps (0: random perturbation training).
        alpha: weight of the VAT term; 0 switches VAT off (not computed).
        at_eps: AT perturbation size; ``None`` uses ``eps``.
        at_alpha: weight of the AT term; 0 switches AT off.
        norm: ``"l2"`` or ``"linf"`` (SMART-style L-inf ball), for both VAT and AT.
        divergence: ``"kl"`` (the paper's) or ``"symmetric_kl"`` (SMART).
        probe: ``"auto"`` | ``"finite_difference"`` | ``"exact"``; see :func:`torchvat.vat_loss`.
        regularize: the rows (sequences) VAT applies to: ``"all"`` (labeled and unlabeled, the
            paper's) or ``"unlabeled"`` (sequences without labels; see :class:`VATTrainer`). The
            engine's option (``TrainConfig.regularize``); its default is ``"all"`` here because the
            engine's unlabeled pool holds the labeled rows too, while a batch here holds each row
            once.
        vat_on: the name of ``regularize`` in earlier versions: still accepted, with a
            ``DeprecationWarning`` (keyword only; reading ``vat_on`` gives ``regularize``, warned too).

    Example:
        >>> VATArguments(method="at+vat", eps=2.0).at_eps is None
        True
        >>> VATArguments(method="mixup")
        Traceback (most recent call last):
        ...
        ValueError: method must be one of 'supervised', 'at', 'vat', 'at+vat', got 'mixup'
    """

    method: str = "vat"
    eps: float = 1.0
    xi: float | str = "auto"
    n_power: int = 1
    alpha: float = 1.0
    at_eps: float | None = None
    at_alpha: float = 1.0
    norm: str = "l2"
    divergence: str = "kl"
    probe: str = "auto"
    regularize: str = "all"

    def __init__(
        self,
        method: str = "vat",
        eps: float = 1.0,
        xi: float | str = "auto",
        n_power: int = 1,
        alpha: float = 1.0,
        at_eps: float | None = None,
        at_alpha: float = 1.0,
        norm: str = "l2",
        divergence: str = "kl",
        probe: str = "auto",
        regularize: str = "all",
        *,
        vat_on: str | None = None,
    ) -> None:
        if vat_on is not None:
            warnings.warn(
                f"VATArguments(vat_on={vat_on!r}) is deprecated, use regularize={vat_on!r} (the engine's name)",
                DeprecationWarning,
                stacklevel=2,
            )
            if regularize not in ("all", vat_on):
                raise ValueError(
                    f"pass regularize or its deprecated name vat_on, not both: got regularize={regularize!r} "
                    f"and vat_on={vat_on!r}"
                )
            regularize = vat_on
        self.method = _renamed_method(method, "VATArguments: ", stacklevel=2)
        self.eps = eps
        self.xi = xi
        self.n_power = n_power
        self.alpha = alpha
        self.at_eps = at_eps
        self.at_alpha = at_alpha
        self.norm = norm
        self.divergence = divergence
        self.probe = probe
        self.regularize = regularize
        self.__post_init__()

    def __post_init__(self) -> None:
        """Check every value (also run by :func:`dataclasses.replace`, through ``__init__``)."""
        check_choice("method", self.method, METHODS)
        check_common(self.eps, self.xi, self.n_power, self.norm, self.probe)
        check_nonnegative("alpha", self.alpha)
        if self.at_eps is not None:
            check_nonnegative("at_eps", self.at_eps)
        check_nonnegative("at_alpha", self.at_alpha)
        check_choice("divergence", self.divergence, _DIVERGENCES)
        check_choice("regularize", self.regularize, REGULARIZE)

    @property
    def vat_on(self) -> str:
        """Deprecated name of :attr:`regularize` (warns)."""
        warnings.warn(
            "VATArguments.vat_on is deprecated, read VATArguments.regularize (the engine's name)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.regularize

    @property
    def uses_vat(self) -> bool:
        """Whether the VAT term is computed."""
        return self.method in ("vat", "at+vat") and self.alpha > 0

    @property
    def uses_at(self) -> bool:
        """Whether the AT term is computed."""
        return self.method in ("at", "at+vat") and self.at_alpha > 0

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the arguments as :data:`VAT_ARGS_FILE` (JSON) in ``directory``.

        :class:`VATTrainer` does so beside every saved model and checkpoint.

        Returns:
            The file.
        """
        path = Path(directory) / VAT_ARGS_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> VATArguments:
        """Read the arguments :meth:`save` wrote in ``directory`` (a saved model or a checkpoint folder).

        A file written by an earlier version (``"vat_on"``, ``method="vat+at"``) loads as the same
        arguments under the engine's names, with one ``DeprecationWarning`` naming the file and the
        new names (saving again writes them).

        Raises:
            FileNotFoundError: If ``directory`` holds no ``VAT_ARGS_FILE``.
            ValueError: If the file does not hold a JSON object.

        Example:
            >>> import tempfile
            >>> with tempfile.TemporaryDirectory() as d:
            ...     _ = VATArguments(method="at+vat", eps=2.0).save(d)
            ...     VATArguments.load(d).eps
            2.0
        """
        path = Path(directory) / VAT_ARGS_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{VAT_ARGS_FILE} not found in {directory} (it is written by VATTrainer.save_model)"
            )
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, Mapping):
            raise ValueError(f"{path} must hold a JSON object of VATArguments, got {type(data).__name__}")
        data, renamed = _current_names(data)
        if renamed:
            warnings.warn(
                f"{path} uses names of an earlier torchvat version: {', '.join(renamed)}; loaded under the new "
                "names (save the arguments again to update the file)",
                DeprecationWarning,
                stacklevel=2,
            )
        return cls(**data)


def _current_names(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``data`` with earlier option names and method spellings replaced, and a note per replacement."""
    out: dict[str, Any] = {}
    renamed: list[str] = []
    for key, value in data.items():
        new_key = _RENAMED_OPTIONS.get(key, key)
        if new_key != key:
            if new_key in data:
                raise ValueError(f"VATArguments: got both {key!r} and its new name {new_key!r}")
            renamed.append(f"{key!r} -> {new_key!r}")
        out[new_key] = value
    method = out.get("method")
    if isinstance(method, str) and method in _RENAMED_METHODS:
        out["method"] = _RENAMED_METHODS[method]
        renamed.append(f"method {method!r} -> {out['method']!r}")
    return out, renamed
