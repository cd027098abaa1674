"""Training metrics on the device, and the collapse monitor that reads them.

- :class:`MetricAccumulator`: sums and counts of per-iteration metrics, kept on the device and
  averaged over the processes only when read.
- :func:`effective_classes`: how many classes a distribution spreads over.
- :class:`CollapseMonitor` and :class:`CollapseWarning`: the two ways a regularizer collapses,
  watched over consecutive evaluations.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from torchvat.train.distributed import all_reduce_mean

__all__ = ["CollapseMonitor", "CollapseWarning", "MetricAccumulator", "effective_classes"]

logger = logging.getLogger("torchvat.train.trainer")


class CollapseWarning(UserWarning):
    """The held-out error rose while the training loss fell over consecutive evaluations."""


class MetricAccumulator:
    """Sums of per-iteration metrics kept on the device; synchronized only by :meth:`means`.

    Each metric is averaged over the iterations that returned it (a custom method may return
    a term on some iterations only). An iteration can be added with a device weight (0 for an
    iteration whose update was skipped, so its NaN terms do not reach the means) without
    reading it on the host.

    The counts live in groups of metrics that were returned together every time since the
    last reset, one device tensor per group: with the same metrics at every iteration (the
    built-in methods) an iteration costs one addition for the counts, as a single count would.
    """

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self._groups: dict[frozenset[str], Tensor] = {}
        self.count = 0

    def add(self, metrics: Mapping[str, Tensor], ok: Tensor | None = None) -> None:
        """Add one iteration's metrics (weighted by the device flag ``ok``: 0 leaves them out)."""
        if not metrics:
            self.count += 1
            return
        device = None
        for key, value in metrics.items():
            value = value.detach().float()
            device = value.device
            if ok is not None:
                value = torch.where(ok.to(value.device), value, torch.zeros_like(value))
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
        step: Tensor | float = 1.0 if ok is None else ok.float().to(device)
        present = frozenset(metrics)
        if len(self._groups) == 1 and present in self._groups:  # the same metrics as before
            self._groups[present] = self._groups[present] + step
            self.count += 1
            return
        groups: dict[frozenset[str], Tensor] = {}
        seen: set[str] = set()
        for members, weight in self._groups.items():
            inside = members & present
            if inside:
                groups[inside] = weight + step
            if len(inside) < len(members):
                groups[members - inside] = weight
            seen |= members
        fresh = present - seen
        if fresh:
            groups[frozenset(fresh)] = torch.zeros((), device=device) + step
        self._groups = groups
        self.count += 1

    def weights(self) -> dict[str, Tensor]:
        """Each metric's number (device float) of counted iterations since the reset."""
        return {key: weight for members, weight in self._groups.items() for key in members}

    def means(self) -> dict[str, float]:
        """Means since the last reset, averaged over the processes when distributed.

        Every process has the same keys and weights (same iterations, same per-process batch
        size, the same skipped iterations), so the mean of the per-process means is the mean
        over the global batches. A metric none of whose iterations counted (every one that
        returned it was skipped) is left out; empty when every iteration since the reset was.
        """
        if not self.sums:
            return {}
        keys = list(self.sums)
        weights = self.weights()
        device = self.sums[keys[0]].device
        sums = torch.stack([self.sums[k] for k in keys])
        counts = torch.stack([weights[k].to(device) for k in keys])
        values = all_reduce_mean(torch.cat([sums / counts.clamp_min(1), counts])).tolist()
        n = len(keys)
        return {k: v for k, v, c in zip(keys, values[:n], values[n:], strict=True) if c != 0}

    def reset(self) -> None:
        """Forget every sum and count."""
        self.sums = {}
        self._groups = {}
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        """The sums, the count and each metric's weight, on the CPU."""
        weights = self.weights()
        return {
            "sums": {k: v.cpu() for k, v in self.sums.items()},
            "count": self.count,
            "weights": {k: weights[k].cpu() for k in self.sums},
        }

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        """Restore :meth:`state_dict` (also the layouts written before per-metric weights) onto ``device``."""
        self.sums = {k: v.to(device) for k, v in state["sums"].items()}
        self.count = int(state["count"])
        weights = state.get("weights")
        if weights is None:  # written with one count for every metric
            weight = state.get("weight")
            if weight is None:  # written before weights existed: every iteration counted
                weight = torch.tensor(float(self.count))
            weights = {k: weight for k in self.sums}
        # metrics with equal counts share a group: the next iterations add to them alike
        by_value: dict[float, list[str]] = {}
        for key, weight in weights.items():
            by_value.setdefault(float(weight), []).append(key)
        self._groups = {frozenset(keys): weights[keys[0]].to(device) for keys in by_value.values()}


def effective_classes(probs: Tensor) -> Tensor:
    """``exp`` of the entropy of a class distribution: how many classes it spreads over.

    1 for a distribution on one class, ``K`` for the uniform one on ``K`` classes; the trainer
    computes it for the mean prediction on each unlabeled batch (metric ``unlabeled_classes``).

    Args:
        probs: Probabilities ``[K]`` (summing to 1).

    Returns:
        A scalar tensor in ``[1, K]``.

    Example:
        >>> round(float(effective_classes(torch.tensor([0.5, 0.5, 0.0]))), 4)
        2.0
    """
    return torch.special.entr(probs).sum().exp()


class CollapseMonitor:
    """Watch the evaluation records for the two ways a regularizer collapses (:class:`CollapseWarning`).

    Over ``patience`` consecutive evaluations: the held-out error rose while the training loss
    fell; or the predictions on the unlabeled batches spread over fewer than
    ``1 + (L - 1) / 2`` classes (``unlabeled_classes``, the exponential of the entropy of the
    mean prediction), ``L`` being that number for the labels: the model puts most unlabeled
    data into a few classes, where the divergence is small. The second check needs no held-out
    data. Its streaks are part of the trainer's resumable state.
    """

    def __init__(self) -> None:
        #: consecutive evaluations whose monitored error rose while the training loss fell
        self.collapse_streak = 0
        #: consecutive evaluations whose unlabeled predictions spread over too few classes
        self.class_streak = 0

    def check(
        self,
        history: Sequence[Mapping[str, float]],
        monitor: str | None,
        *,
        patience: int,
        labeled_classes: float | None,
        step: int,
        stacklevel: int = 2,
    ) -> None:
        """Update the streaks with the last record of ``history`` and warn when one reaches ``patience``.

        Args:
            history: The evaluation records, the newest last.
            monitor: The held-out error to watch (``None``: no held-out data).
            patience: Consecutive evaluations before a warning; 0 disables both checks.
            labeled_classes: The labels' effective number of classes (``None``: regression).
            step: The iteration, for the message.
            stacklevel: Passed to :func:`warnings.warn`.
        """
        if patience == 0 or not history:
            return
        cur = history[-1]
        seen = cur.get("train_unlabeled_classes")
        floor = 1.0 + ((labeled_classes or 1.0) - 1.0) / 2.0
        if seen is not None and math.isfinite(seen) and seen < floor:
            self.class_streak += 1
        else:
            self.class_streak = 0
        if self.class_streak == patience:
            message = (
                f"the predictions on the unlabeled data spread over {seen:.3g} classes (exp of the entropy "
                f"of the mean prediction) against {labeled_classes:.3g} for the labels, over "
                f"{patience} consecutive evaluations (step {step}): the regularizer may be collapsing "
                "the unlabeled data into a few classes (try a larger eps, a smaller alpha or learning "
                "rate, more labels per batch, or method='vat+ent')"
            )
            logger.warning("torchvat: %s", message)
            warnings.warn(message, CollapseWarning, stacklevel=stacklevel + 1)
        if monitor is None or len(history) < 2:
            return
        prev = history[-2]
        if cur[monitor] > prev[monitor] and cur.get("train_loss", math.inf) < prev.get("train_loss", -math.inf):
            self.collapse_streak += 1
        else:
            self.collapse_streak = 0
        if self.collapse_streak == patience:
            message = (
                f"{monitor} rose while the training loss fell over {patience} consecutive "
                f"evaluations (step {step}: {monitor}={cur[monitor]:.4g}, "
                f"train_loss={cur['train_loss']:.4g}); the regularizer may be collapsing "
                "(check eps, alpha and the learning rate)"
            )
            logger.warning("torchvat: %s", message)
            warnings.warn(message, CollapseWarning, stacklevel=stacklevel + 1)
