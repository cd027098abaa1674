r"""An exponential moving average (EMA) of a model's weights, for evaluation.

:class:`WeightEMA` keeps a copy of the model whose parameters follow

.. math::

    \theta_{\text{ema}} \leftarrow \delta\,\theta_{\text{ema}} + (1 - \delta)\,\theta

after every optimizer step that was applied, with a constant decay :math:`\delta` (``Trainer(ema=0.999)``,
``torchvat train --ema 0.999``). The choices, and where they come from:

* **Buffers are copied, not averaged.** BatchNorm's running statistics are already running averages,
  and they are the statistics of the raw weights' activations; the copy holds the raw model's buffers
  after each applied step. USB / TorchSSL do the same (``semilearn/core/utils/misc.py``, class ``EMA``:
  parameters averaged, buffers cloned in ``update``), and so does Oliver et al.'s Mean Teacher, the only
  model of theirs with an EMA (``lib/ssl_framework.py`` of brain-research/realistic-ssl-evaluation:
  ``tf.train.ExponentialMovingAverage`` over the trainable variables only; the running statistics are
  shared with the raw model). Their VAT has no EMA.
* **No warm-up of the decay.** The average starts from the initial weights with the full decay from
  the first step, as USB's ``EMA`` does (TensorFlow's ``num_updates`` warm-up,
  ``min(decay, (1 + t) / (10 + t))``, is not used): with 0.999 the initial weights weigh
  :math:`0.999^t`, 37% after 1000 steps and nothing after 10000, far below the 2^20 iterations of the
  runs that use it.
* **Only applied steps count.** A step the trainer skips (a non-finite loss, a step GradScaler skips)
  leaves the average unchanged; the update is masked on the device flag, without a host read.
* **Distributed**: the average is of the unwrapped module (``Trainer.model``, not the DDP wrapper); its
  parameters are the same on every process (the gradients are all-reduced) and its buffers are rank 0's
  before every evaluation, as the raw model's are.

The copy is always in eval mode and never requires gradients; :meth:`state_dict` holds the decay, the
number of applied updates and the copy's ``state_dict``, so a resumed run continues it bitwise.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from torchvat import params
from torchvat.train.distributed import is_distributed
from torchvat.train.state import check_saved_model

__all__ = ["WeightEMA"]


class WeightEMA:
    r"""An exponential moving average of a model's parameters, with its buffers copied.

    Args:
        model: The model whose weights are averaged (the plain module, not a DDP wrapper). Its current
            weights start the average.
        decay: The decay :math:`\delta`, in (0, 1) (0.999 in USB / TorchSSL).

    Raises:
        ValueError: If ``decay`` is not a number in (0, 1).
        TypeError: If ``model`` is not an ``nn.Module``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(1, 1, bias=False)
        >>> _ = nn.init.zeros_(model.weight)
        >>> ema = WeightEMA(model, decay=0.5)
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(1.0)
        >>> ema.update(model)
        >>> ema.update(model, ok=torch.tensor(False))  # a skipped step: no change
        >>> ema.module.weight.item(), int(ema.updates)
        (0.5, 1)
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if decay is None:
            raise ValueError(f"ema must be {params.PARAMS['ema'].describe()} for WeightEMA, got None")
        params.check("ema", decay)
        self.decay = float(decay)
        #: the averaged copy of the model (eval mode, no gradients)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.grad = None
            p.requires_grad_(False)
        device = next(iter(self.module.parameters()), torch.zeros(())).device
        #: the number of applied updates (a device int64 scalar)
        self.updates = torch.zeros((), dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, model: nn.Module, ok: Tensor | None = None) -> None:
        """One step of the average, after an optimizer step (device operations only).

        Args:
            model: The trained model (the same structure as the one given to the constructor).
            ok: A device bool: the optimizer step was applied (``None``: it was). Where it is false,
                neither the parameters nor the buffers of the average change.
        """
        mine: list[Tensor] = list(self.module.parameters())
        theirs: list[Tensor] = [p.detach() for p in model.parameters()]
        if len(mine) != len(theirs):
            raise ValueError(f"model has {len(theirs)} parameters, but the average was made of {len(mine)}")
        if mine:
            device = mine[0].device
            applied = torch.ones((), dtype=torch.bool, device=device) if ok is None else ok.to(device)
            weight = applied.to(torch.float32) * (1.0 - self.decay)
            diffs: list[Tensor] = list(torch._foreach_sub(theirs, mine))
            torch._foreach_mul_(diffs, weight)
            torch._foreach_add_(mine, diffs)
            self.updates += applied.to(torch.int64)
        for own, buffer in zip(self.module.buffers(), model.buffers(), strict=True):
            # the trainer restores the model's buffers after a skipped step, so a copy is right either way
            own.copy_(buffer if ok is None else torch.where(ok.to(buffer.device), buffer, own))

    @torch.no_grad()
    def copy_from(self, model: nn.Module) -> None:
        """Start the average again from ``model``'s weights (a resumed run saved without an average)."""
        self.module.load_state_dict(model.state_dict())
        self.updates.zero_()

    def broadcast(self, src: int = 0) -> None:
        """Copy process ``src``'s average (parameters and buffers) to every process (nothing when not distributed)."""
        if not is_distributed():
            return
        for tensor in self.module.state_dict().values():
            dist.broadcast(tensor, src=src)

    def state_dict(self) -> dict[str, Any]:
        """The decay, the number of applied updates and the averaged weights."""
        return {"decay": self.decay, "updates": self.updates.detach().cpu(), "model": self.module.state_dict()}

    def check_state_dict(self, state: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` unless ``state`` is a :meth:`state_dict` that fits this average's model."""
        if not isinstance(state, Mapping) or "model" not in state:
            raise ValueError(f"the checkpoint's 'ema' entry is not a WeightEMA state, got {type(state).__name__}")
        try:
            check_saved_model(self.module, state["model"])
        except ValueError as err:
            raise ValueError(f"the checkpoint's EMA weights do not fit: {err}") from err

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the decay stays this average's own (the config's)."""
        self.check_state_dict(state)
        self.module.load_state_dict(state["model"])
        self.updates.copy_(torch.as_tensor(state.get("updates", 0), dtype=torch.int64))
