"""Argument checks and small tensor helpers shared by the core losses."""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from torchvat import params

Reduction = Literal["none", "mean", "sum"]
#: the valid values, as declared once in :mod:`torchvat.params`
REDUCTIONS = params.choices("reduction")
NORMS = params.choices("norm")
#: appended to the errors for a categorical output without a class dimension
CLASS_DIM_HINT = (
    " (softmax over dim 1 needs a class dimension of size 2 or more; for one logit per sample use"
    " likelihood='bernoulli')"
)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def check_nonnegative(name: str, value: float | Tensor, *, positive: bool = False) -> None:
    """Raise unless ``value`` (a number or a tensor of numbers) is finite and >= 0 (> 0 if ``positive``).

    A number is any real number but a ``bool``: Python's ``int`` and ``float``, NumPy scalars
    (``np.float32(0.5)``), ``fractions.Fraction``.
    """
    if isinstance(value, Tensor):
        if not value.is_floating_point() and value.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"{name} must be a float or a floating-point tensor, got dtype {value.dtype}")
        bad = ~torch.isfinite(value) | (value <= 0 if positive else value < 0)
        if bool(bad.any()):
            bound = "> 0" if positive else ">= 0"
            raise ValueError(f"{name} must be finite and {bound} everywhere, got {value.flatten()[:8].tolist()}")
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def check_xi(xi: float | Tensor | str) -> None:
    """``xi`` is ``"auto"`` or a finite number > 0 (a number, or a tensor of them: one per sample).

    Checked for every probe, also the exact one that does not use it, so that a typo such as
    ``xi="1e-6"`` is an error wherever it is passed.
    """
    if isinstance(xi, str):
        if xi != "auto":
            raise ValueError(f"xi must be 'auto' or a finite number > 0, got {xi!r}")
        return
    if not isinstance(xi, Tensor) and (isinstance(xi, bool) or not isinstance(xi, numbers.Real)):
        raise TypeError(f"xi must be 'auto' or a finite number > 0, got {type(xi).__name__} ({xi!r})")
    check_nonnegative("xi", xi, positive=True)


def check_grad_mode(caller: str) -> None:
    """Raise ``RuntimeError`` under ``torch.inference_mode()``, where no input gradient can be taken.

    ``torch.enable_grad()`` has no effect inside inference mode: every gradient of a perturbation
    search would be silently zero (no adversarial direction; VAT would keep its random start).
    ``torch.no_grad()`` is fine: the searches enable gradients for their own passes. One flag read,
    no device work.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{caller} cannot take input gradients under torch.inference_mode(): "
            "torch.is_inference_mode_enabled() must be False, got True (torch.enable_grad() has no "
            "effect there, so the perturbation would come from a zero gradient); use torch.no_grad() "
            "instead, or call it outside the inference_mode context"
        )


def check_n_power(n_power: int) -> None:
    """``n_power`` is a non-negative integer: an ``int`` or an integer scalar such as ``np.int64(2)``, not a bool."""
    try:
        valid = not isinstance(n_power, bool) and operator.index(n_power) >= 0
    except TypeError:
        valid = False
    if not valid:
        raise ValueError(f"n_power must be an integer >= 0, got {n_power!r}")


def reduce(per_sample: Tensor, reduction: str) -> Tensor:
    """Apply a ``reduction`` (``"none" | "mean" | "sum"``) to a per-sample loss of shape [B]."""
    check_choice("reduction", reduction, REDUCTIONS)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def per_sample_scale(value: float | Tensor, like: Tensor, name: str = "eps") -> float | Tensor:
    """Broadcast a scalar or per-sample [B] value against ``like`` ([B, ...]).

    A tensor is detached: a size is a constant of the search, never a path for gradients.

    Args:
        value: a number, a 0-dim tensor or a per-sample tensor [B].
        like: the input the value scales, [B, ...].
        name: the argument ``value`` was given as (``"eps"`` or ``"xi"``), for the error message.
    """
    if isinstance(value, Tensor) and value.ndim > 0:
        if value.ndim != 1 or value.shape[0] != like.shape[0]:
            raise ValueError(
                f"a per-sample {name} tensor must have shape [{like.shape[0]}] (the batch size of x), "
                f"got {tuple(value.shape)}"
            )
        return value.detach().to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))
    return float(value.detach() if isinstance(value, Tensor) else value)


def extract_output(output: Any, output_fn: Callable[[Any], Tensor] | None) -> Tensor:
    """The prediction tensor in a model's output.

    By default a tensor is used as is, a mapping's ``"logits"`` entry, an object's ``.logits``
    attribute (Hugging Face outputs), or the first element of a tuple or list.
    """
    if output_fn is not None:
        pred = output_fn(output)
        source = "output_fn(model output)"
    elif isinstance(output, Tensor):
        return output
    elif isinstance(output, Mapping):
        if "logits" not in output:
            raise TypeError(
                "the model returned a mapping without a 'logits' entry "
                f"(keys: {sorted(map(str, output.keys()))}); pass output_fn to select the prediction"
            )
        pred = output["logits"]
        source = "model output['logits']"
    elif hasattr(output, "logits"):
        pred = output.logits
        source = "model output .logits"
    elif isinstance(output, tuple | list) and len(output) > 0:
        pred = output[0]
        source = "model output[0]"
    else:
        raise TypeError(
            "cannot read a prediction tensor from the model output of type "
            f"{type(output).__name__}; expected a tensor, a mapping with 'logits', an object with "
            ".logits, or a tuple; pass output_fn to select it"
        )
    if not isinstance(pred, Tensor):
        raise TypeError(f"{source} must be a tensor, got {type(pred).__name__}")
    return pred


class ModelInput:
    """The tensor to perturb inside ``x`` and how to call the model with a replacement for it.

    ``x`` is a tensor (the model is called as ``model(x)``) or a mapping of tensors (the model is
    called as ``model(**x)`` with ``x[input_key]`` replaced; the other entries pass through).
    """

    __slots__ = ("key", "mapping", "tensor")

    def __init__(self, x: Tensor | Mapping[str, Any], input_key: str | None) -> None:
        if isinstance(x, Mapping):
            if input_key is None:
                raise ValueError(
                    "input_key must name the entry to perturb when x is a mapping "
                    f"(keys: {sorted(map(str, x.keys()))}), got None"
                )
            if input_key not in x:
                raise ValueError(f"input_key {input_key!r} is not in x (keys: {sorted(map(str, x.keys()))})")
            tensor = x[input_key]
            self.mapping: Mapping[str, Any] | None = x
            self.key: str | None = input_key
        elif isinstance(x, Tensor):
            if input_key is not None:
                raise ValueError(
                    f"input_key is only used when x is a mapping; x is a tensor but input_key={input_key!r}"
                )
            tensor = x
            self.mapping = None
            self.key = None
        else:
            raise TypeError(f"x must be a tensor or a mapping of tensors, got {type(x).__name__}")
        if not isinstance(tensor, Tensor):
            raise TypeError(f"the perturbed input x[{input_key!r}] must be a tensor, got {type(tensor).__name__}")
        if not tensor.is_floating_point():
            hint = (
                " For text, perturb the embeddings instead of the token ids: pass a mapping such as "
                "{'inputs_embeds': model.get_input_embeddings()(input_ids), 'attention_mask': ...} "
                "with input_key='inputs_embeds'."
            )
            raise TypeError(
                f"the perturbed input must be a floating-point tensor, got dtype {tensor.dtype}"
                f"{' (integer token ids?)' if not tensor.is_complex() else ''}.{hint}"
            )
        if tensor.ndim < 1 or tensor.shape[0] == 0:
            raise ValueError(
                f"the perturbed input must have a non-empty batch dimension, got shape {tuple(tensor.shape)}"
            )
        self.tensor: Tensor = tensor

    def call(self, model: Callable[..., Any], value: Tensor) -> Any:
        """Call ``model`` with ``value`` in place of the perturbed input."""
        if self.mapping is None:
            return model(value)
        assert self.key is not None  # set with mapping in __init__ (not user input)
        return model(**{**self.mapping, self.key: value})


def broadcast_mask(mask: Tensor | None, like: Tensor) -> Tensor | None:
    """Check and broadcast a perturbation mask (1 = may be perturbed) to ``like``'s shape."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a tensor or None, got {type(mask).__name__}")
    m = mask.to(device=like.device, dtype=like.dtype)
    while m.ndim < like.ndim:
        m = m.unsqueeze(-1)
    try:
        return m.expand_as(like)
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} cannot be broadcast to the perturbed input's shape "
            f"{tuple(like.shape)} (trailing dimensions are added to the mask)"
        ) from None


def check_class_dim(class_dim: int) -> None:
    """``class_dim`` is an integer (``int`` or an integer scalar such as ``np.int64(-1)``), not a bool."""
    try:
        valid = not isinstance(class_dim, bool) and operator.index(class_dim) == class_dim
    except TypeError:
        valid = False
    if not valid:
        raise TypeError(
            f"class_dim must be an integer (1 for [B, C, ...] outputs, -1 for [B, T, C]), got {class_dim!r}"
        )


class OutputLayout:
    """Where the classes are in a model's output, and which of its positions count.

    The core computes in one layout, the PyTorch convention ``[B, C, *positions]``: an output
    whose classes are in another dimension (``class_dim=-1`` for ``[B, T, C]`` token
    classification or ``[B, T, V]`` language-model heads) is viewed with that dimension moved to 1
    (:meth:`torch.Tensor.movedim`, no copy). An ``output_mask`` over the output without its class
    dimension (``[B, T]`` for ``[B, T, C]``) marks the positions that count (1) and those left out
    (0, e.g. padded tokens); :meth:`apply` sets the outputs at left-out positions to 0 in every pass,
    so that a divergence :math:`D(p, p) = 0` gets nothing from them, and no gradient flows through
    them.

    Args:
        class_dim: the class dimension of the model's output (negative counts from the end).
        output_mask: 1 where a position counts, of the output's shape without ``class_dim``
            (broadcast to it); ``None``: every position counts.
        zero_masked: whether :meth:`apply` zeroes the left-out positions (divergences); a loss
            weighted per position (:func:`masked_position_mean`) leaves them.
    """

    __slots__ = ("_mask", "class_dim", "output_mask", "zero_masked")

    def __init__(self, class_dim: int = 1, output_mask: Tensor | None = None, *, zero_masked: bool = True) -> None:
        check_class_dim(class_dim)
        if output_mask is not None and not isinstance(output_mask, Tensor):
            raise TypeError(f"output_mask must be a tensor or None, got {type(output_mask).__name__}")
        self.class_dim = int(class_dim)
        self.output_mask = output_mask
        self.zero_masked = zero_masked
        self._mask: Tensor | None = None

    @property
    def is_identity(self) -> bool:
        """Whether :meth:`apply` returns its input unchanged (``class_dim=1``, no mask)."""
        return self.class_dim == 1 and self.output_mask is None

    def canonical(self, pred: Tensor) -> Tensor:
        """``pred`` with its class dimension moved to 1; a ``[B]`` output with ``class_dim=1`` as is."""
        if pred.ndim < 2 and self.class_dim == 1:
            return pred  # one value per sample (a binary classifier, a regression): no class dimension
        if pred.ndim < 2:
            raise ValueError(
                f"class_dim={self.class_dim} needs a model output with a class dimension, [B, ...] with 2 or "
                f"more dimensions, got shape {tuple(pred.shape)} (one value per sample: use class_dim=1)"
            )
        dim = self.class_dim + pred.ndim if self.class_dim < 0 else self.class_dim
        if not 1 <= dim < pred.ndim:
            raise ValueError(
                f"class_dim must name a non-batch dimension of the model's output (1 to {pred.ndim - 1}, "
                f"or -1 to {1 - pred.ndim}), got class_dim={self.class_dim} for an output of shape "
                f"{tuple(pred.shape)}"
            )
        return pred if dim == 1 else pred.movedim(dim, 1)

    def position_mask(self, pred: Tensor) -> Tensor | None:
        """The output mask as a bool tensor of ``pred``'s positions (canonical layout), or ``None``.

        The positions are ``pred``'s shape without its class dimension 1 (all of a ``[B]`` output's
        shape); a mask of fewer dimensions is broadcast over the trailing ones (a ``[B]`` mask
        keeps or leaves out whole samples).
        """
        if self.output_mask is None:
            return None
        mask = self._mask
        if mask is None or mask.device != pred.device:
            mask = self.output_mask.to(device=pred.device) != 0
            self._mask = mask
        positions = (pred.shape[0], *pred.shape[2:]) if pred.ndim >= 2 else tuple(pred.shape)
        try:
            if mask.ndim == 0 or mask.ndim > len(positions) or mask.shape[0] != positions[0]:
                raise RuntimeError
            while mask.ndim < len(positions):
                mask = mask.unsqueeze(-1)
            return mask.expand(positions)
        except RuntimeError:
            raise ValueError(
                "output_mask must have the shape of the model's output without its class dimension "
                f"(class_dim={self.class_dim}: {list(positions)} here, class dimension moved to 1), "
                f"got {tuple(self.output_mask.shape)}"
            ) from None

    def mask_for(self, pred: Tensor) -> Tensor | None:
        """:meth:`position_mask` broadcast over ``pred``'s class dimension (canonical layout)."""
        m = self.position_mask(pred)
        if m is None or pred.ndim < 2:
            return m
        return m.unsqueeze(1).expand(pred.shape)

    def apply(self, pred: Tensor) -> Tensor:
        """``pred`` in the canonical layout, left-out positions set to 0 (if ``zero_masked``)."""
        pred = self.canonical(pred)
        if self.zero_masked:
            m = self.mask_for(pred)
            if m is not None:
                pred = torch.where(m, pred, pred.new_zeros(()))
        return pred

    def output_fn(self, output_fn: Callable[[Any], Tensor] | None) -> Callable[[Any], Tensor] | None:
        """``output_fn`` followed by :meth:`apply`; ``output_fn`` itself when the layout changes nothing."""
        if self.is_identity:
            return output_fn

        def layout_output(output: Any) -> Tensor:
            return self.apply(extract_output(output, output_fn))

        return layout_output


def masked_position_mean(loss: Tensor, mask: Tensor | None) -> Tensor:
    """A per-position loss ``[B, *positions]`` averaged per sample over the positions that count.

    Without a mask, the mean over all positions; a sample with no position left counts 0.
    """
    if loss.ndim < 2:
        return loss if mask is None else torch.where(mask.reshape(loss.shape), loss, loss.new_zeros(()))
    flat = loss.flatten(1)
    if mask is None:
        return flat.mean(1)
    m = mask.reshape(flat.shape)
    kept = torch.where(m, flat, flat.new_zeros(())).sum(1)
    return kept / m.sum(1).clamp_min(1).to(kept.dtype)


class EpsModule(torch.nn.Module):
    """Base of the loss modules with an ``eps``: a tensor ``eps`` is a buffer, a number an attribute.

    As a buffer, a tensor ``eps`` (one per sample, or a 0-dim tensor) is in ``state_dict`` and
    follows ``.to()``; assigning a number or another tensor later replaces it either way.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "eps" and "_buffers" in self.__dict__:
            self._buffers.pop("eps", None)
            self.__dict__.pop("eps", None)
            if isinstance(value, Tensor):
                self.register_buffer("eps", value.detach())
                return
        super().__setattr__(name, value)
