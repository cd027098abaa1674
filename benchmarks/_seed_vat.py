"""The seed article's VAT, reimplemented exactly as its PyTorch snippet is written (the baseline).

This is the "seed VAT" the step-cost benchmark compares torchvat against. It follows the snippet
line by line, defects included, so that the benchmark measures what users of that snippet pay:

* ``d = torch.rand(x.shape).sub(0.5).to(x.device)``: a uniform start drawn on the CPU and copied to
  the device on every call;
* ``xi = 10`` is an absolute probe length: with ``eps = 1`` the finite-difference probe is ten times
  longer than the perturbation it looks for, so it does not measure the curvature at ``r = 0``;
* the probe calls ``adv_distance.backward()``, which computes gradients for every parameter (wasted
  work: only ``d.grad`` is used), and then ``model.zero_grad()``, which wipes any gradient the user
  had accumulated before the call (gradient accumulation silently breaks);
* the clean pass for ``pred``, the probe pass and the perturbed pass all run with BatchNorm in
  training mode, so the running statistics are updated by perturbed inputs (three updates per step
  from the unlabeled batch, two of them from perturbed inputs);
* ``pred`` needs its own no-grad forward pass: the clean logits of a pass the caller already made
  cannot be passed in;
* dropout draws different masks in the clean, probe and perturbed passes.

A training step in the seed's style (:func:`seed_vat_step`): labeled forward and cross entropy, the
VAT loss on the unlabeled batch (clean no-grad forward for ``pred``, ``ip`` power iterations, the
perturbed forward), ``loss = CE + alpha * lds``, ``loss.backward()``, ``optimizer.step()``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SeedVATLoss", "seed_vat_step"]


def _l2_normalize(d: Tensor) -> Tensor:
    """Scale each sample of ``d`` to unit L2 norm (``+ 1e-8`` in the denominator, no rescaling first)."""
    norm = torch.linalg.vector_norm(d.reshape(d.shape[0], -1), dim=1)
    return d / (norm.view(-1, *([1] * (d.dim() - 1))) + 1e-8)


class SeedVATLoss(nn.Module):
    """The seed's ``VATLoss``: ``forward(model, x)`` returns the LDS (``reduction='batchmean'`` KL).

    Args:
        xi: absolute length of the finite-difference probe (the seed uses 10).
        eps: length of the perturbation (the seed uses 1).
        ip: number of power iterations (the seed uses 1).
    """

    def __init__(self, xi: float = 10.0, eps: float = 1.0, ip: int = 1) -> None:
        super().__init__()
        self.xi = xi
        self.eps = eps
        self.ip = ip

    def forward(self, model: nn.Module, x: Tensor) -> Tensor:
        """The LDS of ``model`` at ``x``; calls ``model.zero_grad()`` after every probe."""
        with torch.no_grad():
            pred = F.softmax(model(x), dim=1)

        # the seed's snippet, line by line
        d = torch.rand(x.shape).sub(0.5).to(x.device)
        d = _l2_normalize(d)
        for _ in range(self.ip):
            d.requires_grad_()
            pred_hat = model(x + self.xi * d)
            logp_hat = F.log_softmax(pred_hat, dim=1)
            adv_distance = F.kl_div(logp_hat, pred, reduction="batchmean")
            adv_distance.backward()
            d = _l2_normalize(d.grad)
            model.zero_grad()

        r_adv = d * self.eps
        pred_hat = model(x + r_adv)
        logp_hat = F.log_softmax(pred_hat, dim=1)
        lds = F.kl_div(logp_hat, pred, reduction="batchmean")
        return lds


def seed_vat_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x_l: Tensor,
    y_l: Tensor,
    x_u: Tensor,
    *,
    vat: SeedVATLoss | None = None,
    alpha: float = 1.0,
) -> Tensor:
    """One training step in the seed's style; returns the (detached) total loss.

    ``optimizer.zero_grad()``, labeled forward + cross entropy, the seed's VAT loss on ``x_u``,
    ``loss = CE + alpha * lds``, one ``backward()`` and ``optimizer.step()``.
    """
    vat = vat if vat is not None else SeedVATLoss()
    optimizer.zero_grad()
    output = model(x_l)
    classification_loss = F.cross_entropy(output, y_l)
    lds = vat(model, x_u)
    loss = classification_loss + alpha * lds
    loss.backward()
    optimizer.step()
    return loss.detach()
