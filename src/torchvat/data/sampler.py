"""Batching of in-memory tensors without per-example Python: resumable shuffled streams."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

__all__ = ["InfiniteBatchSampler", "InfiniteTensorLoader", "iter_batches"]


def _check_positive(value: int, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arg} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{arg} must be a positive integer, got {value}")
    return value


class InfiniteBatchSampler:
    """Endless stream of shuffled index batches over ``n`` examples, resumable exactly.

    Every epoch is a fresh permutation of ``range(n)`` drawn from a seeded CPU
    ``torch.Generator``; batches are consecutive slices of the concatenated epochs, so
    every batch has ``batch_size`` indices (a batch may straddle two epochs, or several
    when ``n < batch_size``) and every index appears exactly once per epoch.

    :meth:`state_dict` records the epoch, the position inside it and the generator state
    at the epoch's start; :meth:`load_state_dict` redraws that epoch's permutation, so an
    interrupted run continues with exactly the batches it would have seen.

    Args:
        n: Number of examples.
        batch_size: Indices per batch.
        seed: Seed of the shuffling.
        device: Device of the returned index tensors (that of the data they index).

    Example:
        >>> sampler = InfiniteBatchSampler(5, 2, seed=0)
        >>> batches = [next(sampler) for _ in range(5)]  # two epochs and a half
        >>> sorted(torch.cat(batches)[:5].tolist())
        [0, 1, 2, 3, 4]
    """

    def __init__(self, n: int, batch_size: int, *, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.n = _check_positive(n, "n")
        self.batch_size = _check_positive(batch_size, "batch_size")
        self.seed = int(seed)
        self.device = torch.device(device)
        self._generator = torch.Generator().manual_seed(self.seed)
        self.epoch = 0
        self.position = 0
        self._start_epoch()

    def _start_epoch(self) -> None:
        """Remember the generator state, then draw this epoch's permutation."""
        self._epoch_generator_state = self._generator.get_state()
        self._perm = torch.randperm(self.n, generator=self._generator).to(self.device)

    def __iter__(self) -> InfiniteBatchSampler:
        return self

    def __next__(self) -> Tensor:
        """The next ``batch_size`` indices (an ``int64`` tensor on ``device``)."""
        pieces = []
        need = self.batch_size
        while need:
            if self.position == self.n:
                self.epoch += 1
                self.position = 0
                self._start_epoch()
            take = min(need, self.n - self.position)
            pieces.append(self._perm[self.position : self.position + take])
            self.position += take
            need -= take
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    @property
    def batches_per_epoch(self) -> float:
        """Number of batches per pass over the data (may be fractional)."""
        return self.n / self.batch_size

    def state_dict(self) -> dict[str, Any]:
        """The exact position of the stream.

        Returns:
            ``n``, ``batch_size``, ``seed``, ``epoch``, ``position`` and the generator
            state (a ``uint8`` tensor) at the start of the current epoch.
        """
        return {
            "n": self.n,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "generator_state": self._epoch_generator_state.clone(),
        }

    def check_state_dict(self, state: dict[str, Any]) -> None:
        """Check, without changing anything, that :meth:`load_state_dict` accepts ``state``.

        Args:
            state: A state from :meth:`state_dict`.

        Raises:
            ValueError: If the state was saved for a different ``n`` or ``batch_size``.

        Example:
            >>> InfiniteBatchSampler(5, 2).check_state_dict(InfiniteBatchSampler(6, 2).state_dict())
            Traceback (most recent call last):
            ...
            ValueError: state was saved with n=6, but this sampler has n=5
        """
        for key in ("n", "batch_size"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"state was saved with {key}={int(state[key])}, but this sampler has {key}={getattr(self, key)}"
                )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a position saved by :meth:`state_dict`.

        Args:
            state: The saved state.

        Raises:
            ValueError: If the state was saved for a different ``n`` or ``batch_size`` (the
                sampler is then unchanged).
        """
        self.check_state_dict(state)
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._generator.set_state(state["generator_state"].clone())
        self._start_epoch()


class InfiniteTensorLoader:
    """Endless shuffled mini-batches of in-memory tensors, one gather per tensor and batch.

    Wraps an :class:`InfiniteBatchSampler`; each batch is ``tuple(t[idx] for t in
    tensors)`` with the indices on the tensors' device.

    Args:
        *tensors: Tensors with the same number of rows, on one device.
        batch_size: Rows per batch.
        seed: Seed of the shuffling.

    Example:
        >>> x, y = torch.randn(10, 3), torch.arange(10)
        >>> loader = InfiniteTensorLoader(x, y, batch_size=4, seed=0)
        >>> xb, yb = next(loader)
        >>> xb.shape, bool((xb == x[yb]).all())
        (torch.Size([4, 3]), True)
    """

    def __init__(self, *tensors: Tensor, batch_size: int, seed: int = 0) -> None:
        if not tensors:
            raise ValueError("InfiniteTensorLoader needs at least one tensor, got none")
        n = tensors[0].shape[0]
        device = tensors[0].device
        for i, t in enumerate(tensors):
            if t.shape[0] != n:
                raise ValueError(f"all tensors must have {n} rows like tensors[0], got {t.shape[0]} for tensors[{i}]")
            if t.device != device:
                raise ValueError(f"all tensors must be on {device} like tensors[0], got {t.device} for tensors[{i}]")
        self.tensors = tensors
        self.sampler = InfiniteBatchSampler(n, batch_size, seed=seed, device=device)

    def __iter__(self) -> InfiniteTensorLoader:
        return self

    def __next__(self) -> tuple[Tensor, ...]:
        """The next batch, one tensor per wrapped tensor."""
        idx = next(self.sampler)
        return tuple(t[idx] for t in self.tensors)

    @property
    def epoch(self) -> int:
        """Index of the current epoch (starts at 0)."""
        return self.sampler.epoch

    def state_dict(self) -> dict[str, Any]:
        """The sampler's state (see :meth:`InfiniteBatchSampler.state_dict`).

        Returns:
            The state mapping.
        """
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved state.

        Args:
            state: The mapping returned by :meth:`state_dict`.
        """
        self.sampler.load_state_dict(state)


def iter_batches(*tensors: Tensor, batch_size: int) -> Iterator[tuple[Tensor, ...]]:
    """One pass over tensors in stored order (for evaluation); the last batch may be short.

    Batches are slices, i.e. views without copies.

    Args:
        *tensors: Tensors with the same number of rows.
        batch_size: Rows per batch.

    Returns:
        An iterator of tuples with one slice per tensor.

    Example:
        >>> x = torch.arange(5)
        >>> [b.tolist() for (b,) in iter_batches(x, batch_size=2)]
        [[0, 1], [2, 3], [4]]
    """
    _check_positive(batch_size, "batch_size")
    if not tensors:
        raise ValueError("iter_batches needs at least one tensor, got none")
    n = tensors[0].shape[0]
    for i, t in enumerate(tensors):
        if t.shape[0] != n:
            raise ValueError(f"all tensors must have {n} rows like tensors[0], got {t.shape[0]} for tensors[{i}]")
    return (tuple(t[s : s + batch_size] for t in tensors) for s in range(0, n, batch_size))
