"""Optimizers and iteration-based schedules (learning rate, Adam's beta1, regularizer warm-up)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from torchvat import params
from torchvat.train.config import TrainConfig

__all__ = ["EXTEND_MODES", "IterationSchedule", "build_optimizer", "planned_rate", "warmup_factor"]

#: what a resumed run whose ``iterations`` changed does with its schedule (:attr:`IterationSchedule.extend`)
EXTEND_MODES = ("recompute", "continue")


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
    ``"cosine"``: ``lr * (1 + cos(pi * t / T)) / 2``, or with ``cosine_fraction`` ``f``,
    ``lr * cos(pi * f * t / T)``. ``"constant"``: ``lr``. ``"step"``:
    ``lr * lr_decay ** (t // lr_decay_every)``.

    The values depend on the iteration only, so resuming needs nothing but the step count;
    :meth:`state_dict` records it anyway, with the plan it followed (``total``, ``decay_start``).

    **Extending a run.** A run resumed with another number of iterations (a finished run of 150
    continued to 300) follows, by default (``extend="recompute"``), the schedule of a run planned
    for the new total from the resumed iteration on: with ``"paper"``, a run whose decay had begun
    goes back to the full rate and ``beta1`` until the new decay phase. With ``extend="continue"``
    the learning rate never goes back up: it stays at the rate of the last iteration trained
    (and ``beta1`` at ``decay_beta1`` if the decay had begun) until the schedule over the new total
    comes down to it. Set :attr:`extend` before :meth:`load_state_dict`.

    Args:
        optimizer: The optimizer whose parameter groups are set.
        config: The training options (``schedule``, ``lr``, ``iterations``,
            ``decay_fraction``, ``beta1``, ``decay_beta1``, ``lr_decay``, ``lr_decay_every``,
            ``cosine_fraction``).

    Example:
        >>> opt = torch.optim.Adam(nn.Linear(2, 2).parameters(), lr=1e-3)
        >>> sched = IterationSchedule(opt, TrainConfig(iterations=10, decay_fraction=0.5))
        >>> sched.apply(0); opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]
        (0.001, 0.9)
        >>> sched.apply(10); opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]
        (0.0, 0.5)

    Attributes:
        extend: ``"recompute"`` or ``"continue"`` (see above).
        cap: ``(step, factor, decayed)`` of a run extended with ``"continue"``: from ``step`` on
            the factor is at most ``factor``, and ``beta1`` is ``decay_beta1`` if ``decayed``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig) -> None:
        self.optimizer = optimizer
        self.kind = config.schedule
        self.total = config.iterations
        self.base_lrs = [config.lr for _ in optimizer.param_groups]
        self.beta1 = config.beta1
        self.decay_beta1 = config.decay_beta1
        self.decay_start = self.total - round(config.decay_fraction * self.total)
        self.lr_decay = config.lr_decay
        self.lr_decay_every = config.lr_decay_every
        self.cosine_fraction = config.cosine_fraction
        self.step = 0
        self.extend = "recompute"
        self.cap: tuple[int, float, bool] | None = None

    def lr_factor(self, step: int) -> float:
        """Multiplier of the base learning rate before iteration ``step`` (0-based).

        Args:
            step: Iterations done so far; ``iterations`` gives the value after the end.

        Returns:
            The factor in ``[0, 1]``.
        """
        factor = self._plan_factor(step, self.total, self.decay_start)
        if self.cap is not None and step >= self.cap[0]:
            factor = min(factor, self.cap[1])
        return factor

    def _plan_factor(self, step: int, total: int, decay_start: int) -> float:
        """This schedule's factor before iteration ``step`` of a plan over ``total`` iterations."""
        return _plan_factor(
            self.kind,
            step,
            total,
            decay_start,
            lr_decay=self.lr_decay,
            lr_decay_every=self.lr_decay_every,
            cosine_fraction=self.cosine_fraction,
        )

    def in_decay(self, step: int) -> bool:
        """Whether iteration ``step`` is in the decay phase of the ``"paper"`` schedule."""
        if self.cap is not None and step >= self.cap[0] and self.cap[2]:
            return True
        return _plan_in_decay(self.kind, step, self.total, self.decay_start)

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
        """Return ``{"step", "base_lrs", "total", "decay_start", "cap"}`` (the step, the rates and the plan)."""
        cap = None if self.cap is None else [self.cap[0], self.cap[1], self.cap[2]]
        return {
            "step": self.step,
            "base_lrs": list(self.base_lrs),
            "total": self.total,
            "decay_start": self.decay_start,
            "cap": cap,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` and re-apply it.

        A state saved with another ``total`` (the run is extended) keeps the cap of an earlier
        ``"continue"`` extension and, with :attr:`extend` ``"continue"``, caps the rate at the one
        of the last iteration the saved plan trained; with ``"recompute"`` the plan over this
        ``total`` applies as it is. A state without ``total`` (written before it was recorded)
        counts as the same plan.

        Args:
            state: A state from :meth:`state_dict`.

        Raises:
            ValueError: If :attr:`extend` is not one of :data:`EXTEND_MODES`.
        """
        if self.extend not in EXTEND_MODES:
            raise ValueError(f"extend must be one of {EXTEND_MODES}, got {self.extend!r}")
        step = int(state["step"])
        saved_cap = state.get("cap")
        cap = None if saved_cap is None else (int(saved_cap[0]), float(saved_cap[1]), bool(saved_cap[2]))
        saved_total = state.get("total")
        if saved_total is not None and int(saved_total) != self.total:
            if self.extend == "continue" and step > 0:
                total, start = int(saved_total), int(state.get("decay_start", saved_total))
                last = step - 1  # the last iteration trained
                factor = self._plan_factor(last, total, start)
                decayed = _plan_in_decay(self.kind, last, total, start)
                if cap is not None and last >= cap[0]:
                    factor, decayed = min(factor, cap[1]), decayed or cap[2]
                cap = (step, factor, decayed)
            elif self.extend == "recompute":
                cap = None
        self.cap = cap
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self.apply(step)


def planned_rate(
    state: dict[str, Any],
    step: int,
    *,
    kind: str,
    beta1: float,
    decay_beta1: float,
    lr_decay: float = TrainConfig.lr_decay,
    lr_decay_every: int | None = None,
    cosine_fraction: float | None = None,
) -> tuple[float, float]:
    """The learning rate (of the first parameter group) and Adam ``beta1`` of a saved schedule at an iteration.

    Args:
        state: A state from :meth:`IterationSchedule.state_dict` (with ``total``).
        step: Iterations done before the one asked about.
        kind: The schedule (``"paper"``, ``"cosine"``, ``"constant"``, ``"step"``).
        beta1: Adam's ``beta1`` outside the decay phase.
        decay_beta1: Its value in the decay phase.
        lr_decay: The ``"step"`` schedule's factor (:attr:`TrainConfig.lr_decay`).
        lr_decay_every: Its interval (:attr:`TrainConfig.lr_decay_every`).
        cosine_fraction: The ``"cosine"`` schedule's fraction (:attr:`TrainConfig.cosine_fraction`).

    Returns:
        ``(lr, beta1)``.

    Example:
        >>> state = {"step": 9, "base_lrs": [1e-3], "total": 9, "decay_start": 6, "cap": None}
        >>> planned_rate(state, 8, kind="paper", beta1=0.9, decay_beta1=0.5)
        (0.0003333333333333333, 0.5)
    """
    total = int(state["total"])
    start = int(state.get("decay_start", total))
    factor = _plan_factor(
        kind, step, total, start, lr_decay=lr_decay, lr_decay_every=lr_decay_every, cosine_fraction=cosine_fraction
    )
    decayed = _plan_in_decay(kind, step, total, start)
    cap = state.get("cap")
    if cap is not None and step >= int(cap[0]):
        factor, decayed = min(factor, float(cap[1])), decayed or bool(cap[2])
    return float(state["base_lrs"][0]) * factor, decay_beta1 if decayed else beta1


def _plan_factor(
    kind: str,
    step: int,
    total: int,
    decay_start: int,
    *,
    lr_decay: float = TrainConfig.lr_decay,
    lr_decay_every: int | None = None,
    cosine_fraction: float | None = None,
) -> float:
    """The learning-rate factor of schedule ``kind`` planned over ``total`` iterations, before iteration ``step``."""
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        if cosine_fraction is None:
            return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        # the first cosine_fraction (<= 0.5) of a half period: it ends at cos(pi * fraction) >= 0
        return max(0.0, math.cos(math.pi * cosine_fraction * min(step, total) / total))
    if kind == "step":
        # the same plan whatever the total: lr_decay after every lr_decay_every iterations
        return 1.0 if lr_decay_every is None else lr_decay ** (step // lr_decay_every)
    if step < decay_start or decay_start >= total:
        return 1.0
    return max(0.0, (total - step) / (total - decay_start))


def _plan_in_decay(kind: str, step: int, total: int, decay_start: int) -> bool:
    """Whether iteration ``step`` of a ``"paper"`` schedule over ``total`` iterations is in its decay phase."""
    return kind == "paper" and decay_start < total and step >= decay_start


def warmup_factor(step: int, warmup_iters: int, shape: str = "linear") -> float:
    r"""Ramp of the regularizer weights over ``warmup_iters`` iterations.

    ``"linear"``: ``min(1, (step + 1) / warmup_iters)``. ``"sigmoid"``: the sigmoid-shaped ramp of
    Laine & Aila 2017 and Mean Teacher (Tarvainen & Valpola 2017, Appendix B.1) that Oliver et al.
    2018 apply to the consistency weight (brain-research/realistic-ssl-evaluation
    ``lib/ssl_framework.py``, the step count before the update):

    .. math::

        \exp\bigl(-5\,(1 - \min(t, T) / T)^2\bigr)

    which starts at ``exp(-5) = 0.0067`` and is 1 from ``step = warmup_iters`` on.

    Args:
        step: Iterations done before the current one.
        warmup_iters: Length of the ramp (0: no ramp).
        shape: ``"linear"`` or ``"sigmoid"``.

    Returns:
        The factor in ``(0, 1]``.

    Raises:
        ValueError: If ``shape`` is not one of the declared shapes.

    Example:
        >>> [warmup_factor(t, 4) for t in range(5)]
        [0.25, 0.5, 0.75, 1.0, 1.0]
        >>> [round(warmup_factor(t, 4, "sigmoid"), 4) for t in range(5)]
        [0.0067, 0.0601, 0.2865, 0.7316, 1.0]
    """
    params.check("warmup_shape", shape)
    if warmup_iters <= 0:
        return 1.0
    if shape == "sigmoid":
        phase = 1.0 - min(step, warmup_iters) / warmup_iters
        return math.exp(-5.0 * phase * phase)
    return min(1.0, (step + 1) / warmup_iters)
