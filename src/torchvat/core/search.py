r"""Projected gradient ascent in a norm ball: the multi-step search of PGD and TRADES.

One search serves every multi-step perturbation in torchvat: it maximizes any per-sample
objective of the perturbed input,

.. math::
    r^\star = \arg\max_{\lVert r \rVert \le \epsilon,\ lo \le x + r \le hi} J(x + r),

by steps in the gradient's sign (L-inf) or its L2-normalized direction (L2), each projected back
onto the :math:`\epsilon`-ball (and the input bounds, if any):

.. math::
    r_{k+1} = \Pi\big(r_k + a\, \overline{\nabla_r J(x + r_k)}\big).

The objective is the supervised loss for PGD (Madry et al. 2018, :func:`torchvat.adversarial_loss`
with ``steps > 1``) and the divergence between the clean and the perturbed prediction for TRADES
(Zhang et al. 2019, :func:`torchvat.trades_loss`), where VAT's search (:func:`torchvat.vat_loss`)
maximizes the same divergence by power iteration on its curvature at :math:`r = 0` instead.

The search knows nothing of models: the objective is a closure that runs the model (under the
caller's BatchNorm guard, replaying the caller's dropout masks) and returns one value per
sample. Only input gradients are taken (``torch.autograd.grad``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from torchvat import params
from torchvat.core._checks import check_choice, check_nonnegative, per_sample_scale
from torchvat.core.perturbation import _grad_or_zero, l2_normalize, project_direction

__all__ = ["check_search", "default_step_size", "projected_gradient_ascent"]

Keep = Literal["best", "last"]
KEEPS = params.choices("keep")
#: the step size of the default rule is this many times ``eps / steps`` (Madry et al. 2018)
STEP_SIZE_FACTOR = 2.5
_TINY = 1e-30


def default_step_size(eps: float | Tensor, steps: int) -> float | Tensor:
    r"""The default step size :math:`a = 2.5\,\epsilon / K` (Madry et al. 2018) for ``steps`` :math:`= K`.

    Large enough that :math:`K` steps can cross the ball (2.5 diameters' worth of travel: a
    search starting anywhere reaches the boundary), small enough to follow the loss. With one step it is
    :math:`2.5\,\epsilon`, so the single step from ``x`` is projected to the full step of size
    :math:`\epsilon`: the one-step perturbation of Goodfellow et al. (2015).

    Example:
        >>> default_step_size(1.0, 10)
        0.25
    """
    if isinstance(eps, Tensor):
        return eps * (STEP_SIZE_FACTOR / steps)
    return STEP_SIZE_FACTOR * float(eps) / steps


def check_search(
    steps: int,
    step_size: float | Tensor | None,
    random_start: bool,
    clamp: tuple[float, float] | None,
    keep: str,
) -> None:
    """Validate the arguments of a multi-step search (raise ``ValueError``/``TypeError`` naming each).

    The valid values are declared in :data:`torchvat.params.PARAMS` (``steps``, ``step_size``,
    ``random_start``, ``keep``); ``clamp`` is ``None`` or a pair ``(lo, hi)`` of numbers with
    ``lo < hi``.

    Example:
        >>> check_search(10, None, True, (0.0, 1.0), "best")
        >>> check_search(0, None, True, None, "best")
        Traceback (most recent call last):
        ...
        ValueError: steps must be an integer >= 1, got 0
    """
    params.check("steps", steps)
    if isinstance(step_size, Tensor):
        check_nonnegative("step_size", step_size, positive=True)
    else:
        params.check("step_size", step_size)
    params.check("random_start", random_start)
    check_choice("keep", keep, KEEPS)
    check_clamp(clamp)


def check_clamp(clamp: object) -> None:
    """``clamp`` is ``None`` or a pair ``(lo, hi)`` of finite numbers with ``lo < hi``."""
    if clamp is None:
        return
    expected = "clamp must be None or a pair (lo, hi) of finite numbers with lo < hi"
    if not isinstance(clamp, tuple | list) or len(clamp) != 2:
        raise ValueError(f"{expected}, got {clamp!r}")
    lo, hi = clamp
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not float("-inf") < float(v) < float("inf"):
            raise ValueError(f"{expected}, got {clamp!r}")
    if not lo < hi:
        raise ValueError(f"{expected}, got {clamp!r} (lo >= hi)")


def _project(r: Tensor, eps: float | Tensor, norm: str) -> Tensor:
    """``r`` projected onto the ``eps``-ball of ``norm`` (per sample; ``eps`` a number or [B, 1, ...])."""
    if norm == "linf":
        if isinstance(eps, Tensor):
            return torch.maximum(torch.minimum(r, eps), -eps)
        return r.clamp(-eps, eps)
    flat = r.reshape(r.shape[0], -1).to(torch.promote_types(r.dtype, torch.float32))
    size = torch.linalg.vector_norm(flat, dim=1).view(-1, *([1] * (r.ndim - 1)))
    factor: Tensor = (eps / size.clamp_min(_TINY)).clamp_max(1.0)
    return (r * factor).to(r.dtype)


def _bound(r: Tensor, x: Tensor, clamp: tuple[float, float] | None, mask: Tensor | None) -> Tensor:
    """``r`` such that ``x + r`` lies in ``[lo, hi]``; unperturbable positions (``mask == 0``) stay 0."""
    if clamp is not None:
        r = (x + r).clamp(clamp[0], clamp[1]) - x
    if mask is not None and clamp is not None:
        r = torch.where(mask == 0, torch.zeros_like(r), r)
    return r


def random_start_in_ball(
    x: Tensor, eps: float | Tensor, norm: str, mask: Tensor | None, generator: torch.Generator | None
) -> Tensor:
    r"""A random point of the ``eps``-ball, of ``x``'s shape, dtype and device.

    L-inf: uniform in the box :math:`[-\epsilon, \epsilon]^d` (Madry et al. 2018). L2: uniform in
    the ball, a uniform direction at radius :math:`\epsilon\, U^{1/d}`. With a ``generator``, drawn
    in float32 whatever ``x``'s dtype, so the same seed gives the same start in every precision.
    """
    shape = x.shape
    device = x.device if generator is None else generator.device
    draw_rand = torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
    draw_randn = torch.randn(shape, generator=generator, device=device, dtype=torch.float32) if norm == "l2" else None
    radius = torch.rand(shape[0], generator=generator, device=device, dtype=torch.float32) if norm == "l2" else None
    if norm == "linf":
        r = (2 * draw_rand.to(x.device) - 1).to(x.dtype) * per_sample_scale(eps, x)
    else:
        assert draw_randn is not None and radius is not None
        d = draw_randn.to(x.device)
        if mask is not None:
            d = d * mask.to(torch.float32)
        dims = max(1, x[0].numel())
        u = radius.to(x.device).pow(1.0 / dims).view(-1, *([1] * (x.ndim - 1)))
        r = (l2_normalize(d) * u).to(x.dtype) * per_sample_scale(eps, x)
    return r if mask is None else r * mask


def _value_and_gradient(objective: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """The objective's per-sample values at ``x`` (detached) and the gradient of their sum in ``x``."""
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        value = _checked_value(objective(xr), x)
        g = _grad_or_zero(value.sum(), xr)
    return value.detach(), g


def _checked_value(value: object, x: Tensor) -> Tensor:
    if not isinstance(value, Tensor) or value.shape != (x.shape[0],):
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"the search's objective must return one value per sample, of shape [{x.shape[0]}], got {got}")
    return value


class _Best:
    """The per-sample best candidate seen so far (the earliest among equals; NaN never wins)."""

    __slots__ = ("r", "value")

    def __init__(self) -> None:
        self.r: Tensor | None = None
        self.value: Tensor | None = None

    def offer(self, r: Tensor, value: Tensor) -> None:
        value = value.detach().float()
        if self.r is None or self.value is None:
            self.r, self.value = r, value
            return
        better = (value > self.value) | (torch.isnan(self.value) & ~torch.isnan(value))
        self.value = torch.where(better, value, self.value)
        self.r = torch.where(better.view(-1, *([1] * (r.ndim - 1))), r, self.r)


def projected_gradient_ascent(
    objective: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    eps: float | Tensor = 1.0,
    norm: str = "l2",
    steps: int = 10,
    step_size: float | Tensor | None = None,
    random_start: bool = True,
    clamp: tuple[float, float] | None = None,
    keep: Keep = "best",
    mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    first_direction: Tensor | None = None,
) -> Tensor:
    r"""Maximize a per-sample ``objective(x + r)`` over the ``eps``-ball by projected gradient ascent.

    .. math::
        r_0 = 0 \text{ or random},\qquad
        r_{k+1} = \Pi_{\lVert r \rVert \le \epsilon,\ lo \le x + r \le hi}
                  \big(r_k + a\, \overline{\nabla_r J(x + r_k)}\big),\quad k = 0, \dots, K - 1

    with :math:`\overline{g}` the sign of :math:`g` (``norm="linf"``) or :math:`g / \lVert g \rVert_2`
    (``norm="l2"``), per sample; a sample whose gradient is exactly 0 does not move. The projection
    onto the ball is exact (the box for L-inf, a rescaling for L2). With input bounds ``clamp``, each
    step is clipped to them first and then projected onto the ball, as the Adversarial Robustness
    Toolbox does: for L-inf the exact projection onto the intersection, for L2 a point of it (when
    ``x`` lies within the bounds, the rescaling keeps ``x + r`` within them). Without bounds, a step
    from ``x`` itself (no random start) is projected in closed form, to
    :math:`\min(a, \epsilon)\,\overline{g}`.

    ``keep="best"`` returns, per sample, the candidate of highest objective among the iterates
    :math:`r_1, \dots, r_K` and, without a random start, the one-step perturbation
    :math:`\epsilon\,\overline{\nabla J(x)}` (the full step from ``x``, what ``steps=1`` returns
    with the default step size): more steps never give a smaller objective than one step. It costs
    one forward pass for :math:`r_K` and one for the one-step candidate (when :math:`a < \epsilon` or with bounds).
    ``keep="last"`` returns :math:`r_K`, as other libraries do. The objective of a sample must not
    depend on the other samples of the batch for the per-sample choice to keep this promise
    (BatchNorm in training mode couples them).

    Args:
        objective: ``objective(x_perturbed) -> Tensor[B]``, differentiable in its argument; called
            once per step (and for the candidates of ``keep="best"``), the first call's argument
            possibly under ``torch.no_grad()``.
        x: the input [B, ...] (detached here).
        eps: the radius of the ball, a number or a per-sample tensor [B].
        norm: ``"l2"`` or ``"linf"``.
        steps: the number of gradient steps :math:`K \ge 1`.
        step_size: the step :math:`a` (a number or a per-sample tensor [B]); default
            :func:`default_step_size`, :math:`2.5\,\epsilon / K`.
        random_start: start from a uniform random point of the ball
            (:func:`random_start_in_ball`) instead of ``x``.
        clamp: ``(lo, hi)`` bounds of the perturbed input (``[0, 1]`` for images), or ``None``
            (default: inputs may be embeddings or points of any range).
        keep: ``"best"`` or ``"last"`` (see above).
        mask: 1 where the input may be perturbed, of ``x``'s shape (0 elsewhere: never moved).
        generator: the generator of the random start.
        first_direction: the unit step direction at ``x`` if the caller has it (from a gradient
            through its own clean pass); only used without a random start. It saves one pass.

    Returns:
        The detached perturbation ``r``, of ``x``'s shape and dtype.

    Example:
        >>> x = torch.zeros(2, 3)
        >>> target = torch.tensor([[1.0, 2.0, 2.0], [0.0, 0.0, 3.0]])
        >>> objective = lambda v: -(v - target).pow(2).sum(1)  # largest at target
        >>> r = projected_gradient_ascent(objective, x, eps=1.0, steps=5, random_start=False)
        >>> torch.allclose(r.norm(dim=1), torch.ones(2))
        True
        >>> torch.allclose(r, target / target.norm(dim=1, keepdim=True))
        True
    """
    check_nonnegative("eps", eps)
    check_choice("norm", norm, params.choices("norm"))
    check_search(steps, step_size, random_start, clamp, keep)
    x0 = x.detach()
    eps_b = per_sample_scale(eps, x0, "eps")
    a = per_sample_scale(default_step_size(eps, steps) if step_size is None else step_size, x0, "step_size")
    best = _Best() if keep == "best" else None
    if random_start:
        r = _project(_bound(random_start_in_ball(x0, eps, norm, mask, generator), x0, clamp, mask), eps_b, norm)
    else:
        r = torch.zeros_like(x0)
    for k in range(steps):
        if k == 0 and not random_start and first_direction is not None:
            unit = first_direction.to(x0.dtype)
        else:
            value, g = _value_and_gradient(objective, x0 + r)
            if best is not None and k > 0:
                best.offer(r, value)
            if mask is not None:
                g = g * mask
            unit = project_direction(g.detach(), norm).to(x0.dtype)
        if k == 0 and not random_start:
            r = _step_from_x(x0, unit, a, eps_b, norm, clamp, mask)
            if best is not None and (steps > 1 or step_size is not None) and (clamp is not None or _smaller(a, eps_b)):
                # the one-step perturbation (steps=1, default step size) differs from r_1: a candidate
                one_step = _step_from_x(x0, unit, default_step_size(eps_b, 1), eps_b, norm, clamp, mask)
                with torch.no_grad():
                    best.offer(one_step, _checked_value(objective(x0 + one_step), x0))
        else:
            r = _project(_bound(r + a * unit, x0, clamp, mask), eps_b, norm)
    if best is None or best.r is None:  # keep="last", or r_K is the only candidate
        return r.detach()
    with torch.no_grad():
        best.offer(r, _checked_value(objective(x0 + r), x0))
    assert best.r is not None
    return best.r.detach()


def _step_from_x(
    x: Tensor,
    unit: Tensor,
    a: float | Tensor,
    eps: float | Tensor,
    norm: str,
    clamp: tuple[float, float] | None,
    mask: Tensor | None,
) -> Tensor:
    """The first step from ``x`` itself, of size ``a`` in the unit direction ``unit``, bounded and projected.

    Without bounds, in closed form: the projection of ``a * unit`` onto the ball is
    ``min(a, eps) * unit`` (exactly the one-step perturbation ``eps * unit`` when ``a >= eps``).
    """
    if clamp is None:
        return _min(a, eps) * unit
    return _project(_bound(a * unit, x, clamp, mask), eps, norm)


def _min(a: float | Tensor, b: float | Tensor) -> float | Tensor:
    """The elementwise minimum of two step sizes, each a number or a per-sample tensor [B, 1, ...]."""
    if isinstance(a, Tensor):
        return torch.minimum(a, b) if isinstance(b, Tensor) else a.clamp_max(b)
    return b.clamp_max(a) if isinstance(b, Tensor) else min(a, b)


def _smaller(a: float | Tensor, b: float | Tensor) -> bool:
    """Whether the step ``a`` is below the radius ``b`` for some sample (one host read for tensors)."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return bool(torch.as_tensor(a < b).any())
    return a < b
