"""Batched image augmentation of the VAT papers' CIFAR-10/SVHN runs, on the data's device.

The authors' code (github.com/takerum/vat_tf, ``dataset_utils.transform``) pads the images by 2
pixels with zeros of its centred input space (the mean of ZCA-whitened CIFAR-10, mid-gray for
SVHN's ``(x - 127.5) / 255``), crops a random 32x32 window and flips at random. The CLI and the
recipes pad alike: zeros after whitening or standardization, ``0.5`` for pixels in ``[0, 1]``
(``padding_mode="constant"``); ``"reflect"`` is the padding of Oliver et al. (2018).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["RandomTranslateFlip", "augment_translate_flip", "translate_flip"]

_PADDING_MODES = ("reflect", "zeros", "constant", "replicate")


def _check_images(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of images [N, C, H, W], got shape {tuple(x.shape)}")


def translate_flip(
    x: Tensor,
    shifts: Tensor,
    flips: Tensor | None = None,
    *,
    max_shift: int = 2,
    padding_mode: str = "reflect",
    fill: float = 0.0,
) -> Tensor:
    """Shift each image by its own offset and mirror the chosen ones, in one gather.

    Before flipping, output pixel ``(h, w)`` of image ``n`` is input pixel
    ``(h - shifts[n, 0], w - shifts[n, 1])``, with pixels beyond the edges given by
    ``padding_mode``; images with ``flips[n]`` are then mirrored left to right.

    Args:
        x: Images, shape ``[N, C, H, W]``.
        shifts: Integer offsets ``(dy, dx)`` per image, shape ``[N, 2]``, each in
            ``[-max_shift, max_shift]``; positive moves the content down/right.
        flips: Boolean ``[N]``: mirror the image horizontally; ``None`` for no flips.
        max_shift: Padding width, the largest allowed ``|shift|``.
        padding_mode: ``"reflect"``, ``"zeros"``, ``"constant"`` (the value ``fill``) or
            ``"replicate"`` for pixels shifted in.
        fill: The value of ``"constant"`` padding.

    Returns:
        Augmented images, same shape, dtype and device as ``x``.

    Raises:
        ValueError: On a bad shape, ``padding_mode`` or shift range.

    Example:
        >>> import torch
        >>> x = torch.arange(9.0).reshape(1, 1, 3, 3)
        >>> translate_flip(x, torch.tensor([[0, 1]]), max_shift=1, padding_mode="zeros")[0, 0]
        tensor([[0., 0., 1.],
                [0., 3., 4.],
                [0., 6., 7.]])
    """
    _check_images(x)
    n = x.shape[0]
    _check_padding(x, max_shift, padding_mode)
    if shifts.shape != (n, 2):
        raise ValueError(f"shifts must have shape {(n, 2)}, got {tuple(shifts.shape)}")
    shifts = shifts.to(device=x.device, dtype=torch.long)
    if n and int(shifts.abs().max()) > max_shift:
        raise ValueError(f"shifts must lie in [-{max_shift}, {max_shift}], got {shifts.tolist()}")
    if flips is not None and flips.shape != (n,):
        raise ValueError(f"flips must have shape {(n,)}, got {tuple(flips.shape)}")
    return _gather(x, shifts, flips, max_shift, padding_mode, fill)


def _check_padding(x: Tensor, max_shift: int, padding_mode: str) -> None:
    h, w = x.shape[-2:]
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
    if max_shift < 0:
        raise ValueError(f"max_shift must be non-negative, got {max_shift}")
    if padding_mode == "reflect" and max_shift >= min(h, w):
        raise ValueError(f"max_shift must be smaller than the image size {(h, w)} for reflect padding, got {max_shift}")


def _gather(
    x: Tensor, shifts: Tensor, flips: Tensor | None, max_shift: int, padding_mode: str, fill: float = 0.0
) -> Tensor:
    """Pad once, then read every output pixel with a single advanced-indexing gather."""
    n, c, h, w = x.shape
    m = max_shift
    if padding_mode in ("zeros", "constant"):
        padded = F.pad(x, (m, m, m, m), value=fill if padding_mode == "constant" else 0.0)
    else:
        padded = F.pad(x, (m, m, m, m), mode=padding_mode)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    row_idx = rows.unsqueeze(0) + (m - shifts[:, :1])  # [N, H]
    col_src = cols.unsqueeze(0)
    if flips is not None:
        col_src = torch.where(flips.to(x.device).unsqueeze(1), (w - 1) - cols, cols)  # [N, W]
    col_idx = col_src + (m - shifts[:, 1:])  # [N, W]
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, chan, row_idx.view(n, 1, h, 1), col_idx.view(n, 1, 1, w)]


def augment_translate_flip(
    x: Tensor,
    *,
    max_shift: int = 2,
    flip: bool = True,
    padding_mode: str = "reflect",
    generator: torch.Generator | None = None,
    fill: float = 0.0,
) -> Tensor:
    """Random translation by up to ``max_shift`` pixels and random horizontal flip.

    The augmentation of the VAT paper's CIFAR-10 and SVHN experiments (2-pixel
    translation; flips for CIFAR-10 only, pass ``flip=False`` for SVHN). Vectorized over
    the batch: one random draw per batch and one gather, on ``x``'s device.

    Args:
        x: Images, shape ``[N, C, H, W]``.
        max_shift: Largest shift in pixels, drawn uniformly in
            ``[-max_shift, max_shift]`` per axis and image.
        flip: Mirror each image with probability 1/2.
        padding_mode: ``"reflect"``, ``"zeros"``, ``"constant"`` (the value ``fill``) or ``"replicate"``.
        generator: Random generator (on any device; the draw happens on its device),
            for reproducible augmentation.
        fill: The value of ``"constant"`` padding.

    Returns:
        Augmented images, same shape, dtype and device as ``x``.

    Example:
        >>> import torch
        >>> x = torch.rand(8, 3, 32, 32)
        >>> g = torch.Generator().manual_seed(0)
        >>> augment_translate_flip(x, generator=g).shape
        torch.Size([8, 3, 32, 32])
    """
    _check_images(x)
    _check_padding(x, max_shift, padding_mode)
    n = x.shape[0]
    device = generator.device if generator is not None else x.device
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator, device=device).to(x.device)
    flips = None
    if flip:
        flips = (torch.rand(n, generator=generator, device=device) < 0.5).to(x.device)
    return _gather(x, shifts, flips, max_shift, padding_mode, fill)


class RandomTranslateFlip:
    """:func:`augment_translate_flip` with a generator of its own, whose state checkpoints keep.

    A training run's augmentation draws from its own generator so that it does not depend on
    the model's random draws; that generator is part of the run's state:
    :class:`torchvat.train.Trainer` saves :meth:`state_dict` in its checkpoints and restores it on
    resume (and calls :meth:`manual_seed` on the processes other than rank 0 of a distributed run),
    so a resumed run draws the augmentations the uninterrupted run would have drawn.

    Args:
        max_shift: Largest shift in pixels (per axis).
        flip: Mirror each image with probability 1/2.
        padding_mode: ``"reflect"``, ``"zeros"``, ``"constant"`` (the value ``fill``) or ``"replicate"``.
        seed: Seed of the generator.
        fill: The value of ``"constant"`` padding.

    Example:
        >>> aug = RandomTranslateFlip(max_shift=2, flip=False, seed=0)
        >>> state = aug.state_dict()
        >>> x = torch.rand(4, 1, 8, 8)
        >>> a = aug(x)
        >>> aug.load_state_dict(state)
        >>> torch.equal(aug(x), a)
        True
    """

    def __init__(
        self, max_shift: int = 2, flip: bool = True, padding_mode: str = "reflect", seed: int = 0, fill: float = 0.0
    ) -> None:
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
            raise ValueError(f"max_shift must be an integer >= 0, got {max_shift!r}")
        self.max_shift = max_shift
        self.flip = bool(flip)
        self.padding_mode = padding_mode
        self.fill = float(fill)
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, x: Tensor) -> Tensor:
        """Augment an image batch ``[N, C, H, W]`` (see :func:`augment_translate_flip`)."""
        return augment_translate_flip(
            x,
            max_shift=self.max_shift,
            flip=self.flip,
            padding_mode=self.padding_mode,
            generator=self.generator,
            fill=self.fill,
        )

    def manual_seed(self, seed: int) -> None:
        """Reseed the generator."""
        self.generator.manual_seed(int(seed))

    def state_dict(self) -> dict[str, Tensor]:
        """The generator's state."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore a state from :meth:`state_dict`."""
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return (
            f"RandomTranslateFlip(max_shift={self.max_shift}, flip={self.flip}, "
            f"padding_mode={self.padding_mode!r}, fill={self.fill})"
        )
