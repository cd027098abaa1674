"""Input preprocessing fitted on training inputs: ZCA (optionally after contrast normalization), standardization."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from torchvat.data.arrays import warn_inflated_columns
from torchvat.data.container import SemiSupervisedData

__all__ = [
    "ZCA",
    "GlobalContrastZCA",
    "Standardizer",
    "fit_transform_data",
    "global_contrast_normalize",
    "standardize",
]


class _Transformer(Protocol):
    def fit(self, x: Tensor) -> _Transformer: ...

    def transform(self, x: Tensor) -> Tensor: ...


def _flat(x: Tensor, shape: tuple[int, ...] | None, arg: str = "x") -> Tensor:
    """``[N, ...]`` -> ``[N, D]``, checking the per-example shape when known."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{arg} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"{arg} must have shape [N, ...] with N examples, got {tuple(x.shape)}")
    if shape is not None and tuple(x.shape[1:]) != shape:
        raise ValueError(f"{arg} must have per-example shape {shape}, got {tuple(x.shape[1:])}")
    return x.reshape(x.shape[0], -1)


class _Fitted:
    """Shared state handling of the fitted transformers."""

    _tensors: tuple[str, ...] = ()
    input_shape: tuple[int, ...] | None
    eps: float

    def _check_fitted(self) -> None:
        if self.input_shape is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(x) first")

    def __call__(self, x: Tensor) -> Tensor:
        """Alias of ``transform``."""
        return self.transform(x)  # type: ignore[attr-defined]

    def to(self, device: torch.device | str) -> _Fitted:
        """Move the fitted tensors to ``device`` (in place).

        Args:
            device: Target device.

        Returns:
            ``self``.
        """
        for name in self._tensors:
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.to(device))
        return self

    def state_dict(self) -> dict[str, Tensor]:
        """The fitted state as tensors (for checkpoints loaded with ``weights_only``).

        Returns:
            Mapping of names to tensors.
        """
        self._check_fitted()
        assert self.input_shape is not None
        state = {name: getattr(self, name) for name in self._tensors}
        state["input_shape"] = torch.tensor(self.input_shape, dtype=torch.int64)
        state["eps"] = torch.tensor(self.eps, dtype=torch.float64)
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore a state produced by :meth:`state_dict`.

        Args:
            state: The mapping returned by ``state_dict``.

        Raises:
            KeyError: If an entry is missing.
        """
        missing = [k for k in (*self._tensors, "input_shape", "eps") if k not in state]
        if missing:
            raise KeyError(f"state lacks the entries {missing}")
        for name in self._tensors:
            setattr(self, name, state[name].clone())
        self.input_shape = tuple(int(s) for s in state["input_shape"].tolist())
        self.eps = float(state["eps"])


class ZCA(_Fitted):
    r"""ZCA whitening, fitted on training inputs.

    With the centred training inputs :math:`X` (``[N, D]``) and the eigendecomposition
    :math:`\Sigma = X^\top X / N = U \,\mathrm{diag}(s)\, U^\top`, inputs are mapped to

    .. math::
        z = (x - \mu)\, U \,\mathrm{diag}\!\left(1/\sqrt{s + \epsilon}\right) U^\top.

    The regularizer ``eps`` keeps near-zero eigenvalues from blowing up noise; it shrinks the
    directions of variance below ``eps``, so it also sets the scale of the whitened inputs (and
    of a perturbation size ``eps`` chosen for them). ``eps=0`` whitens fully, every direction to
    unit variance, as the VAT authors' CIFAR-10 code does (its ``1e-6`` is added after the square
    root, where it changes nothing): the paper's ``eps = 8`` for CIFAR-10 is relative to that scale
    (a whitened image's norm is then about :math:`\sqrt{D} \approx 55`). Directions of zero
    variance (numerically: below ``1e-12`` times the largest) are mapped to 0 when ``eps=0``.

    Args:
        eps: Added to the eigenvalues before the inverse square root (pixel variances of images
            in ``[0, 1]`` are about 0.06; the default ``1e-2`` whitens partially).

    Example:
        >>> import torch
        >>> x = torch.randn(500, 3) @ torch.tensor([[2.0, 0, 0], [1, 1, 0], [0, 0, 3]])
        >>> zca = ZCA(eps=1e-5).fit(x)
        >>> z = zca.transform(x)
        >>> torch.allclose(z.T @ z / 500, torch.eye(3), atol=1e-3)
        True
    """

    _tensors = ("mean", "components")

    def __init__(self, eps: float = 1e-2) -> None:
        if not eps >= 0:
            raise ValueError(f"eps must be non-negative, got {eps}")
        self.eps = float(eps)
        self.mean: Tensor | None = None
        self.components: Tensor | None = None
        self.input_shape: tuple[int, ...] | None = None

    def fit(self, x: Tensor) -> ZCA:
        """Estimate the mean and the whitening matrix (in float64) from ``x``.

        Args:
            x: Training inputs, shape ``[N, ...]``.

        Returns:
            ``self``.
        """
        flat = _flat(x, None).to(torch.float64)
        mean = flat.mean(dim=0)
        centred = flat - mean
        sigma = centred.T @ centred / flat.shape[0]
        s, u = torch.linalg.eigh(sigma)
        s = s.clamp_min(0.0)
        if self.eps > 0:
            scale = 1.0 / torch.sqrt(s + self.eps)
        else:  # full whitening; a direction without variance has nothing to whiten
            null = s <= 1e-12 * s.max().clamp_min(torch.finfo(s.dtype).tiny)
            scale = torch.where(null, torch.zeros_like(s), 1.0 / torch.sqrt(s.clamp_min(torch.finfo(s.dtype).tiny)))
        components = (u * scale) @ u.T
        self.mean = mean.to(x.dtype)
        self.components = components.to(x.dtype)
        self.input_shape = tuple(x.shape[1:])
        return self

    def transform(self, x: Tensor) -> Tensor:
        """Whiten ``x``.

        Args:
            x: Inputs with the per-example shape seen in ``fit``.

        Returns:
            Whitened inputs, same shape as ``x``.
        """
        self._check_fitted()
        assert self.mean is not None and self.components is not None
        flat = _flat(x, self.input_shape)
        mean = self.mean.to(device=x.device, dtype=x.dtype)
        comp = self.components.to(device=x.device, dtype=x.dtype)
        return ((flat - mean) @ comp).reshape(x.shape)

    def inverse_transform(self, z: Tensor) -> Tensor:
        """Undo :meth:`transform` (exact up to rounding, except along directions of zero variance).

        Args:
            z: Whitened inputs.

        Returns:
            Inputs in the original space.
        """
        self._check_fitted()
        assert self.mean is not None and self.components is not None
        flat = _flat(z, self.input_shape, "z")
        comp = self.components.to(device=z.device, dtype=torch.float64)
        restored = flat.to(torch.float64) @ torch.linalg.pinv(comp, hermitian=True)  # directions mapped to 0 stay 0
        return (restored.to(z.dtype) + self.mean.to(z.device, z.dtype)).reshape(z.shape)


def global_contrast_normalize(x: Tensor, *, scale: float = 55.0, eps: float = 1e-10) -> Tensor:
    r"""Global contrast normalization of each example: its own mean removed, its norm set to ``scale``.

    .. math::
        g(x) = s\,\frac{x - \bar x}{\lVert x - \bar x \rVert_2},

    with :math:`\bar x` the mean of the example's entries (every pixel of every channel). An
    example whose centred norm is below ``eps`` (a constant image) is only centred and multiplied by
    ``s``, that is mapped to 0. Oliver et al. 2018 apply it with :math:`s = 55` before ZCA on
    CIFAR-10 (brain-research/realistic-ssl-evaluation ``lib/dataset_utils.py``, ``gcn``:
    ``multiplier=55, eps=1e-10``; ``build_tfrecords.py:165-173``); it needs no fitting.

    Args:
        x: Inputs ``[N, ...]``.
        scale: The norm :math:`s` of every normalized example (> 0).
        eps: Centred norms below it are not divided by.

    Returns:
        The normalized inputs, same shape and dtype (computed in float64 at least).

    Raises:
        ValueError: If ``scale`` is not a positive number or ``x`` has no example dimension.

    Example:
        >>> z = global_contrast_normalize(torch.tensor([[1.0, 2.0, 3.0, 6.0]]), scale=2.0)
        >>> [round(v, 4) for v in z[0].tolist()], round(float(z.norm()), 6)  # 2 (x - 3) / sqrt(14)
        ([-1.069, -0.5345, 0.0, 1.6036], 2.0)
    """
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise ValueError(f"scale must be a number > 0, got {scale!r}")
    flat = _flat(x, None).to(torch.promote_types(x.dtype, torch.float64))
    centred = flat - flat.mean(dim=1, keepdim=True)
    norm = centred.norm(dim=1, keepdim=True)
    norm = torch.where(norm < eps, torch.ones_like(norm), norm)
    return (scale * centred / norm).to(x.dtype).reshape(x.shape)


class GlobalContrastZCA(ZCA):
    """:func:`global_contrast_normalize`, then :class:`ZCA` fitted on the normalized training inputs.

    Oliver et al. 2018's CIFAR-10 preprocessing (brain-research/realistic-ssl-evaluation
    ``build_tfrecords.py:165-173``, ``lib/dataset_utils.py``: ``gcn`` with scale 55, then ZCA with
    0.1 added to the covariance); ``torchvat train --preprocess gcn-zca`` with ``[data] gcn_scale``
    and ``zca_eps``. :meth:`inverse_transform` undoes the ZCA only: it returns the contrast-normalized
    examples (each example's own mean and norm are not kept).

    Args:
        eps: Added to the eigenvalues of the covariance (see :class:`ZCA`).
        gcn_scale: The norm of every example after contrast normalization (55 in Oliver et al.).

    Example:
        >>> x = torch.rand(200, 4) @ torch.tensor([[1.0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 3]])
        >>> t = GlobalContrastZCA(eps=0.1, gcn_scale=55.0).fit(x)
        >>> torch.allclose(t.transform(x), ZCA(eps=0.1).fit(global_contrast_normalize(x)).transform(
        ...     global_contrast_normalize(x)))
        True
    """

    def __init__(self, eps: float = 1e-2, gcn_scale: float = 55.0) -> None:
        super().__init__(eps)
        if isinstance(gcn_scale, bool) or not isinstance(gcn_scale, int | float) or not gcn_scale > 0:
            raise ValueError(f"gcn_scale must be a number > 0, got {gcn_scale!r}")
        self.gcn_scale = float(gcn_scale)

    def fit(self, x: Tensor) -> GlobalContrastZCA:
        """Fit the ZCA on the contrast-normalized ``x``.

        Args:
            x: Training inputs, shape ``[N, ...]``.

        Returns:
            ``self``.
        """
        super().fit(global_contrast_normalize(x, scale=self.gcn_scale))
        return self

    def transform(self, x: Tensor) -> Tensor:
        """Contrast-normalize ``x``, then whiten it.

        Args:
            x: Inputs with the per-example shape seen in ``fit``.

        Returns:
            The preprocessed inputs, same shape as ``x``.
        """
        self._check_fitted()
        _flat(x, self.input_shape)  # the per-example shape seen in fit
        return super().transform(global_contrast_normalize(x, scale=self.gcn_scale))

    def state_dict(self) -> dict[str, Tensor]:
        """The fitted state, with ``gcn_scale``.

        Returns:
            Mapping of names to tensors.
        """
        return {**super().state_dict(), "gcn_scale": torch.tensor(self.gcn_scale, dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore a state produced by :meth:`state_dict`.

        Args:
            state: The mapping returned by ``state_dict``.

        Raises:
            KeyError: If an entry is missing.
        """
        if "gcn_scale" not in state:
            raise KeyError("state lacks the entries ['gcn_scale']")
        super().load_state_dict(state)
        self.gcn_scale = float(state["gcn_scale"])


class Standardizer(_Fitted):
    """Per-feature standardization ``(x - mean) / (std + eps)``, fitted on training inputs.

    Features are the entries of one example (each pixel of an image is a feature).

    Args:
        eps: Added to the standard deviation (guards constant features).

    Example:
        >>> import torch
        >>> x = torch.randn(100, 4) * 5 + 3
        >>> z = Standardizer().fit(x).transform(x)
        >>> bool(z.mean(0).abs().max() < 1e-4), bool((z.std(0, correction=0) - 1).abs().max() < 1e-4)
        (True, True)
    """

    _tensors = ("mean", "std")

    def __init__(self, eps: float = 1e-8) -> None:
        if not eps >= 0:
            raise ValueError(f"eps must be non-negative, got {eps}")
        self.eps = float(eps)
        self.mean: Tensor | None = None
        self.std: Tensor | None = None
        self.input_shape: tuple[int, ...] | None = None

    def fit(self, x: Tensor) -> Standardizer:
        """Estimate the per-feature mean and (population) standard deviation.

        Args:
            x: Training inputs, shape ``[N, ...]``.

        Returns:
            ``self``.
        """
        flat = _flat(x, None).to(torch.float64)
        self.mean = flat.mean(dim=0).to(x.dtype)
        self.std = flat.std(dim=0, correction=0).to(x.dtype)
        self.input_shape = tuple(x.shape[1:])
        return self

    def transform(self, x: Tensor) -> Tensor:
        """Standardize ``x``.

        Args:
            x: Inputs with the per-example shape seen in ``fit``.

        Returns:
            Standardized inputs, same shape as ``x``.
        """
        self._check_fitted()
        assert self.mean is not None and self.std is not None
        flat = _flat(x, self.input_shape)
        mean = self.mean.to(device=x.device, dtype=x.dtype)
        std = self.std.to(device=x.device, dtype=x.dtype)
        return ((flat - mean) / (std + self.eps)).reshape(x.shape)

    def inverse_transform(self, z: Tensor) -> Tensor:
        """Undo :meth:`transform`.

        Args:
            z: Standardized inputs.

        Returns:
            Inputs in the original space.
        """
        self._check_fitted()
        assert self.mean is not None and self.std is not None
        flat = _flat(z, self.input_shape, "z")
        std = self.std.to(device=z.device, dtype=z.dtype)
        return (flat * (std + self.eps) + self.mean.to(z.device, z.dtype)).reshape(z.shape)


def fit_transform_data(data: SemiSupervisedData, transformer: _Transformer) -> SemiSupervisedData:
    """Fit ``transformer`` on the training inputs of ``data`` and apply it to every split.

    The fit sees each training input once (:meth:`SemiSupervisedData.train_inputs`), never
    the test or validation inputs.

    Args:
        data: The problem to preprocess.
        transformer: An object with ``fit(x)`` and ``transform(x)``, e.g. :class:`ZCA`.

    Returns:
        A new container with transformed inputs.

    Example:
        >>> from torchvat.data.synthetic import make_moons_data
        >>> data = fit_transform_data(make_moons_data(n_samples=100, n_test=0), Standardizer())
        >>> round(float(data.x_unlabeled.mean()), 4) == 0.0
        True
    """
    transformer.fit(data.train_inputs())
    return data.map_inputs(transformer.transform)


def standardize(data: SemiSupervisedData, *, eps: float = 1e-8) -> SemiSupervisedData:
    """Standardize every feature with the mean and std of the training inputs.

    Args:
        data: The problem to preprocess.
        eps: Added to the standard deviation.

    Returns:
        A new container with standardized inputs.

    Warns:
        FeatureScaleWarning: If standardization inflated the rare values of almost constant
            columns (:func:`torchvat.data.warn_inflated_columns`).
    """
    out = fit_transform_data(data, Standardizer(eps=eps))
    warn_inflated_columns(out.train_inputs(), where=f"{data.name} after standardize()")
    return out
