"""Optimizers and iteration-based schedules (learning rate, Adam's beta1, regularizer warm-up)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from torchvat.train.config import TrainConfig

__all__ = ["IterationSchedule", "build_optimizer", "warmup_factor"]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Create the optimizer named by ``config.optimizer``.

    Args:
        model: The model whose parameters are optimized.
        config: The training options (``optimizer``, ``lr``, ``beta1``, ``momentum``,
            ``nesterov``, ``weight_decay``).

    Returns:
        ``torch.optim.Adam`` or ``torch.optim.SGD``, fused where the parameters allow.

    Example:
        >>> opt = build_optimizer(nn.Linear(2, 2), TrainConfig(optimizer="sgd", lr=0.1))
        >>> type(opt).__name__, opt.param_groups[0]["nesterov"]
        ('SGD', True)
    """
    params = [p for p in model.parameters() if p.requires_grad]
    # the fused kernels (one launch for all parameters) where every parameter is a float tensor on
    # a device that has them: the optimizer was ~20% of a VAT step on the MNIST MLP on CPU, and
    # a fused step can be skipped on a device flag (the trainer's non-finite check needs no
    # host synchronization, see torchvat.train.finite)
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda", "mps") for p in params)
    if config.optimizer == "adam":
        return torch.optim.Adam(
            params, lr=config.lr, betas=(config.beta1, 0.999), weight_decay=config.weight_decay, fused=fused or None
        )
    sgd = torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov and config.momentum > 0,
        weight_decay=config.weight_decay,
        fused=fused or None,
    )
    if fused and config.momentum > 0:
        # the fused kernel creates a first step's momentum buffers with torch.empty and fills
        # them in its kernel, which a skipped step (found_inf, see torchvat.train.finite) does
        # not run; zeros give the same first step (buf = momentum * 0 + grad = grad), bitwise
        for p in params:
            sgd.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return sgd


class IterationSchedule:
    """Learning rate (and Adam ``beta1``) as a function of the iteration number.

    ``"paper"``: the schedule of the VAT authors' code: constant ``lr`` until the last
    ``decay_fraction`` of the iterations, then the learning rate falls linearly and reaches
    0 after the last iteration, and Adam's ``beta1`` is ``decay_beta1`` (0.5).
    ``"cosine"``: ``lr * (1 + cos(pi * t / T)) / 2``. ``"constant"``: ``lr``.

    The values depend on the iteration only, so resuming needs nothing but the step count;
    :meth:`state_dict` records it anyway.

    Args:
        optimizer: The optimizer whose parameter groups are set.
        config: The training options (``schedule``, ``lr``, ``iterations``,
            ``decay_fraction``, ``beta1``, ``decay_beta1``).

    Example:
        >>> opt = torch.optim.Adam(nn.Linear(2, 2).parameters(), lr=1e-3)
        >>> sched = IterationSchedule(opt, TrainConfig(iterations=10, decay_fraction=0.5))
        >>> sched.apply(0); opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]
        (0.001, 0.9)
        >>> sched.apply(10); opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]
        (0.0, 0.5)
    """

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig) -> None:
        self.optimizer = optimizer
        self.kind = config.schedule
        self.total = config.iterations
        self.base_lrs = [config.lr for _ in optimizer.param_groups]
        self.beta1 = config.beta1
        self.decay_beta1 = config.decay_beta1
        self.decay_start = self.total - round(config.decay_fraction * self.total)
        self.step = 0

    def lr_factor(self, step: int) -> float:
        """Multiplier of the base learning rate before iteration ``step`` (0-based).

        Args:
            step: Iterations done so far; ``iterations`` gives the value after the end.

        Returns:
            The factor in ``[0, 1]``.
        """
        if self.kind == "constant":
            return 1.0
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(step, self.total) / self.total))
        if step < self.decay_start or self.decay_start >= self.total:
            return 1.0
        return max(0.0, (self.total - step) / (self.total - self.decay_start))

    def in_decay(self, step: int) -> bool:
        """Whether iteration ``step`` is in the decay phase of the ``"paper"`` schedule."""
        return self.kind == "paper" and self.decay_start < self.total and step >= self.decay_start

    def apply(self, step: int) -> None:
        """Set the parameter groups' values for iteration ``step``.

        Args:
            step: Iterations done so far.
        """
        self.step = step
        factor = self.lr_factor(step)
        beta1 = self.decay_beta1 if self.in_decay(step) else self.beta1
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
            if "betas" in group:
                group["betas"] = (beta1, group["betas"][1])

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"step": ..., "base_lrs": ...}``."""
        return {"step": self.step, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` and re-apply it."""
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self.apply(int(state["step"]))


def warmup_factor(step: int, warmup_iters: int) -> float:
    """Linear ramp of the regularizer weights: ``min(1, (step + 1) / warmup_iters)``.

    Args:
        step: Iterations done before the current one.
        warmup_iters: Length of the ramp (0: no ramp).

    Returns:
        The factor in ``(0, 1]``.

    Example:
        >>> [warmup_factor(t, 4) for t in range(5)]
        [0.25, 0.5, 0.75, 1.0, 1.0]
    """
    if warmup_iters <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_iters)
