r"""Perturbation searches: the virtual adversarial direction and the adversarial direction.

The adversarial direction is that of Goodfellow et al. (2015).

The virtual adversarial perturbation of Miyato et al. (TPAMI 2018) is

.. math::
    r_{\mathrm{vadv}} = \arg\max_{\lVert r \rVert \le \epsilon} D\big[p(y \mid x),\, p(y \mid x + r)\big]
                      \approx \epsilon\, \overline{u_1(H)},\qquad H = \nabla_r^2 D \big|_{r=0},

found by power iteration on :math:`H` from a random unit direction :math:`d`:
:math:`d \leftarrow \overline{H d}`. :math:`H d` is taken either by a finite difference of the gradient
(:math:`H d \approx \nabla_r D|_{r = \xi d} / \xi`, as in the paper) or exactly: at :math:`r = 0`,
:math:`H = J^\top A J` (the Gauss-Newton matrix, :math:`J` the input Jacobian of the output and
:math:`A` the Fisher matrix of the likelihood at the clean output), so :math:`H d` is a Jacobian-vector
product, a product with :math:`A`, and a vector-Jacobian product, with no finite difference at all.

Only gradients with respect to the probe direction are taken (``torch.autograd.grad``); parameter
gradients are never computed nor touched.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Literal

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor, nn

from torchvat import params
from torchvat.core._checks import (
    NORMS,
    ModelInput,
    OutputLayout,
    broadcast_mask,
    check_choice,
    check_grad_mode,
    check_n_power,
    check_nonnegative,
    check_xi,
    extract_output,
    masked_position_mean,
    per_sample_scale,
)
from torchvat.core.divergence import (
    Divergence,
    checked_divergence,
    fisher_product,
    resolve_divergence,
)
from torchvat.core.guards import RNGSnapshot, guarded_module, running_stats_guard

Norm = Literal["l2", "linf"]
Probe = Literal["auto", "finite_difference", "exact"]
PROBES = params.choices("probe")
_LOW_PRECISION_EPS = 1e-4  # machine epsilon above which "auto" uses the exact product (bf16, fp16, TF32)
_TF32_EPS = 2.0**-10  # TF32 keeps 10 explicit mantissa bits
_TINY = 1e-30
_MODEL_OUTPUT = "the model's output"  # names a prediction of this call's own passes in errors


def l2_normalize(v: Tensor) -> Tensor:
    """Scale each sample of ``v`` ([B, ...]) to unit L2 norm over its non-batch dimensions.

    Divides by the per-sample maximum magnitude first, so tiny or huge gradients neither underflow
    nor overflow when squared; an all-zero sample stays zero. Computed in float32 at least.

    Example:
        >>> l2_normalize(torch.tensor([[3.0, 4.0], [0.0, 0.0]])).tolist()
        [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    return _l2_normalize_with_max(v)[0]


def _l2_normalize_with_max(v: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`l2_normalize` and the per-sample maximum magnitude of ``v`` ([B, 1], float32 at least)."""
    flat = v.reshape(v.shape[0], -1).to(torch.promote_types(v.dtype, torch.float32))  # [B] -> [B, 1]
    # max |v| without a |v| temporary (the L-inf vector_norm is ~8x slower on CPU)
    vmax = torch.maximum(flat.amax(1, keepdim=True), flat.amin(1, keepdim=True).neg())
    flat = flat / vmax.clamp_min(_TINY)
    flat = flat / torch.linalg.vector_norm(flat, dim=1, keepdim=True).clamp_min(_TINY)
    return flat.view(v.shape).to(v.dtype), vmax


def project_direction(d: Tensor, norm: str) -> Tensor:
    """Turn a direction into a unit step for the given ``norm``: L2-normalized, or its sign for L-inf."""
    if norm == "linf":
        return torch.sign(d)
    return l2_normalize(d)


def _compute_dtype(t: Tensor) -> torch.dtype:
    """The least precise dtype the model will compute ``t`` in (autocast included).

    Autocast casts floating-point tensors other than float64 (which it leaves alone): a float64
    input counts as float64 under autocast too.
    """
    dtype = t.dtype
    device_type = t.device.type
    if (
        dtype != torch.float64
        and torch.amp.is_autocast_available(device_type)
        and torch.is_autocast_enabled(device_type)
    ):
        cast = torch.get_autocast_dtype(device_type)
        if torch.finfo(cast).eps > torch.finfo(dtype).eps:
            dtype = cast
    return dtype


def float32_compute_eps(device: torch.device, convolutions: bool = True) -> float:
    """Machine epsilon of the arithmetic that float32 matmuls (and convolutions) get on ``device``.

    On CUDA, cuDNN convolutions run in TF32 by default (``torch.backends.cudnn.allow_tf32``), and
    matmuls do with ``torch.set_float32_matmul_precision("high")`` (``"medium"``: bfloat16): their
    inputs keep 10 (7) mantissa bits, not 23. On PyTorch 2.9+ the ``fp32_precision`` settings
    are read (``torch.backends.cuda.matmul.fp32_precision = "tf32"`` and the like), which the
    legacy calls set too.
    Elsewhere: float32's.

    Args:
        device: Where the model computes.
        convolutions: Whether the model has convolutions (count cuDNN's TF32 setting).

    Example:
        >>> float32_compute_eps(torch.device("cpu")) == torch.finfo(torch.float32).eps
        True
    """
    eps = torch.finfo(torch.float32).eps
    if device.type != "cuda":
        return eps
    matmul, conv = _cuda_float32_precisions()
    lowest = {"ieee": eps, "tf32": _TF32_EPS, "bf16": torch.finfo(torch.bfloat16).eps}
    eps = max(eps, lowest[matmul])
    if convolutions:
        eps = max(eps, lowest[conv])
    return eps


def _cuda_float32_precisions() -> tuple[str, str]:
    """How CUDA computes float32 matmuls and cuDNN convolutions: ``"ieee"``, ``"tf32"`` or ``"bf16"``.

    PyTorch 2.9+ keeps both APIs' settings in its ``fp32_precision`` attributes (a setting of
    ``"none"`` defers to its parent's; the legacy flags can be stale there, or refuse to be read
    once the two APIs were mixed), so those are read when they exist; older versions have the
    legacy flags only.
    """
    backends = torch.backends
    if hasattr(backends.cuda.matmul, "fp32_precision"):
        matmul = _fp32_precision(backends.cuda.matmul, backends)
        conv = _fp32_precision(getattr(backends.cudnn, "conv", None), backends.cudnn, backends)
        return matmul, conv
    precision = torch.get_float32_matmul_precision()
    matmul = {"medium": "bf16", "high": "tf32"}.get(precision, "ieee")
    if matmul == "ieee" and backends.cuda.matmul.allow_tf32:
        matmul = "tf32"
    return matmul, "tf32" if backends.cudnn.allow_tf32 else "ieee"


def _fp32_precision(*chain: object) -> str:
    for backend in chain:
        value = getattr(backend, "fp32_precision", None)
        if value is None:
            return "tf32"  # cannot tell: assume the lower precision
        if value != "none":
            return value if value in ("ieee", "tf32", "bf16") else "tf32"
    return "ieee"


def probe_scale(t: Tensor, xi: float | Tensor | str, eps: float | Tensor) -> float | Tensor:
    r"""The finite-difference step (L2 norm of the probe) for each sample.

    ``xi="auto"`` gives :math:`\xi_i = \sqrt{u}\,\max(\lVert x_i \rVert_2, 1)`, with :math:`u` the machine
    epsilon (``torch.finfo(dtype).eps``) of the dtype the model computes in, capped at ``eps``:
    :math:`\sqrt{u}` is :math:`3.5\times10^{-4}` for float32 and :math:`8.8\times10^{-2}` for bfloat16
    (under autocast). The probe then changes each input element by far more than its rounding error,
    yet stays in the region where the divergence is quadratic.
    A number is used as the absolute step, as in the paper (``xi=1e-6``), which in float32 mostly
    measures rounding noise.
    """
    if isinstance(xi, str):
        check_xi(xi)  # "auto" is the only string
        c = math.sqrt(torch.finfo(_compute_dtype(t)).eps)
        size = torch.linalg.vector_norm(t.detach().reshape(t.shape[0], -1).float(), dim=1).clamp_min(1.0)
        step = (c * size).to(t.dtype).view(-1, *([1] * (t.ndim - 1)))
        eps_b = per_sample_scale(eps, t, "eps")
        if isinstance(eps_b, Tensor):
            return torch.minimum(step, eps_b.clamp_min(_TINY))
        capped: Tensor = step.clamp_max(eps_b) if eps_b > 0 else step
        return capped
    return per_sample_scale(xi, t, "xi")


def _random_unit(t: Tensor, mask: Tensor | None, generator: torch.Generator | None) -> Tensor:
    """The random unit start direction of the power iteration, of ``t``'s shape, dtype and device.

    With a ``generator``, drawn in float32 whatever ``t``'s dtype: torch's normal sampler draws
    other values for float64 (and half precision) from the same seed, so the same seed gives the
    same start in every precision.
    """
    if generator is None:
        d = torch.randn_like(t, memory_format=torch.contiguous_format)
    else:
        d = torch.randn(t.shape, generator=generator, device=generator.device, dtype=torch.float32)
        d = d.to(device=t.device, dtype=t.dtype)
    if mask is not None:
        d = d * mask
    return l2_normalize(d)


def _float16_range(t: Tensor) -> bool:
    """Whether the model computes ``t`` in float16 (autocast included), whose range the probe's backward underflows.

    float16 keeps numbers down to 6.1e-5 (subnormals to 6e-8); the probe's output gradient is the
    divergence's, of the order of the probabilities of the classes a sample is not predicted to be
    (1e-4 to 1e-8 for a confident prediction), and the gradients behind it are smaller still: they
    flush to zero, and the power iteration keeps its random start (TorchSSL issue #28). bfloat16 has
    float32's range.
    """
    return _compute_dtype(t) == torch.float16


def _unit_rows(g: Tensor) -> Tensor:
    """``g`` in float32 with each sample's entries divided by their largest magnitude (zero rows stay zero).

    The power iteration normalizes each sample's direction, so a positive factor per sample leaves it as it is.
    """
    g = g.detach().float()
    peak = g.abs().reshape(g.shape[0], -1).amax(1).clamp_min(torch.finfo(torch.float32).tiny)
    return g / peak.view(-1, *([1] * (g.ndim - 1)))


def _scaled_output_grad(value_of: Callable[[Tensor], Tensor], pred: Tensor) -> Tensor | None:
    """The gradient of ``value_of(pred)`` in ``pred``, computed in float32 and scaled per sample by :func:`_unit_rows`.

    ``None`` when the value does not depend on ``pred``.
    """
    out = pred.detach().float().requires_grad_(True)
    with torch.enable_grad():
        value = value_of(out)
    if not value.requires_grad:
        return None
    (g,) = torch.autograd.grad(value, out, allow_unused=True)
    return None if g is None else _unit_rows(g)


def _grad_or_zero(value: Tensor, wrt: Tensor, **kwargs: Any) -> Tensor:
    if not value.requires_grad:
        return torch.zeros_like(wrt)
    (g,) = torch.autograd.grad(value, wrt, allow_unused=True, **kwargs)
    return torch.zeros_like(wrt) if g is None else g


def _update(d: Tensor, g: Tensor, mask: Tensor | None) -> Tensor:
    """New unit direction from ``g``; samples whose ``g`` is exactly zero keep ``d``."""
    if mask is not None:
        g = g * mask
    unit, gmax = _l2_normalize_with_max(g.detach())
    zero = gmax == 0  # [B, 1]: the maximum magnitude the normalization computed anyway
    # no host sync: the where runs whether or not a sample's gradient vanished
    return torch.where(zero.view(-1, *([1] * (d.ndim - 1))), d, unit)


@functools.cache
def _load_forward_ad() -> None:
    """Let torch load its forward-mode decompositions now, without the warning that loading gives.

    On first use, forward-mode AD scripts its decompositions with ``torch.jit.script``, which torch
    2.14 deprecates with a ``FutureWarning`` about torch's own code: noise for every user of the
    exact probe, and an error where warnings are errors (``pytest -W error``). Only that warning,
    and only during that load, is silenced.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        with fwAD.dual_level():
            _make_dual(torch.zeros(1), torch.zeros(1))


def _make_dual(primal: Tensor, tangent: Tensor) -> Tensor:
    """``torch.autograd.forward_ad.make_dual``, typed."""
    dual: Tensor = fwAD.make_dual(primal, tangent)  # type: ignore[no-untyped-call]  # unannotated in torch
    return dual


def _unpack_dual(tensor: Tensor) -> tuple[Tensor, Tensor | None]:
    """``torch.autograd.forward_ad.unpack_dual`` as ``(primal, tangent)``, typed."""
    primal, tangent = fwAD.unpack_dual(tensor)  # type: ignore[no-untyped-call]  # unannotated in torch
    return primal, tangent


def _cast_tangent(module: nn.Module, inputs: Any, output: Any) -> Any:
    if not isinstance(output, Tensor):
        return None
    primal, tangent = _unpack_dual(output)
    if tangent is None or tangent.dtype == primal.dtype:
        return None
    return _make_dual(primal, tangent.to(primal.dtype))


@contextlib.contextmanager
def _tangent_dtype_fix(t: Tensor) -> Iterator[None]:
    """Under autocast, keep each module's output tangent in its primal's dtype.

    Some operations (BatchNorm among them) return a bf16 primal with a float32 tangent under
    autocast, and the next matmul then fails on mixed dtypes.
    """
    if _compute_dtype(t) == t.dtype:
        yield
        return
    handle = nn.modules.module.register_module_forward_hook(_cast_tangent)
    try:
        yield
    finally:
        handle.remove()


class _ExactHvp:
    r""":math:`H d = J^\top A J d` at r = 0, by forward-mode AD (double backward if unsupported)."""

    #: models on which forward-mode AD failed once; they use the double-backward product
    no_forward_ad: ClassVar[weakref.WeakSet[Any]] = weakref.WeakSet()  # any weak-referenceable callable

    @staticmethod
    def forward_ad_failed_for(model: object) -> bool:
        try:
            return model in _ExactHvp.no_forward_ad
        except TypeError:  # not weak-referenceable
            return False

    @staticmethod
    def remember_failure(model: object) -> None:
        with contextlib.suppress(TypeError):
            _ExactHvp.no_forward_ad.add(model)

    @staticmethod
    def hvp(
        model: Callable[..., Any],
        inp: ModelInput,
        x0: Tensor,
        d: Tensor,
        target: Tensor | None,
        likelihood: str,
        divergence: Divergence | None,
        output_fn: Callable[[Any], Tensor] | None,
        rng: RNGSnapshot,
        source: str = _MODEL_OUTPUT,
    ) -> tuple[Tensor, Tensor]:
        """``(H d, target)``; a ``target`` of ``None`` is taken from this pass's clean output (its primal).

        Every pass replays ``rng``: the double-backward pass after a forward-mode pass that failed
        midway draws the same dropout masks as the clean pass.

        Only the forward-mode pass itself is tried: if it raises ``NotImplementedError`` or
        ``RuntimeError`` (an operation without a forward-mode formula, or one that mixes dtypes
        under autocast), the double-backward product is computed instead, and only once that
        succeeded is the model remembered and a warning given. When the double-backward pass fails
        too, the error is the model's own (a shape mismatch, say): the forward-mode pass's error is
        raised, chained to the fallback's, and the model is not remembered. Out-of-memory errors
        are never caught.
        """
        xr = x0.detach().requires_grad_(True)
        forward_error: NotImplementedError | RuntimeError | None = None
        if not _ExactHvp.forward_ad_failed_for(model):
            _load_forward_ad()
            try:
                with rng.replay(), fwAD.dual_level(), _tangent_dtype_fix(x0):
                    pred = extract_output(inp.call(model, _make_dual(xr, d)), output_fn)
                    primal, jd = _unpack_dual(pred)
            except torch.OutOfMemoryError:
                raise
            except (NotImplementedError, RuntimeError) as err:
                forward_error = err
            else:
                target = _checked_target(primal, inp, _MODEL_OUTPUT) if target is None else target
                check_same_shape(target, primal, source)
                if jd is None:
                    return torch.zeros_like(x0), target
                av = fisher_product(likelihood, divergence, target, jd)
                av = (_unit_rows(av) if _float16_range(x0) else av).to(primal.dtype)
                return _grad_or_zero(primal, xr, grad_outputs=av), target
        if forward_error is None:
            return _ExactHvp.double_backward_hvp(
                model, inp, xr, d, target, likelihood, divergence, output_fn, rng, source
            )
        try:
            result = _ExactHvp.double_backward_hvp(
                model, inp, xr, d, target, likelihood, divergence, output_fn, rng, source
            )
        except torch.OutOfMemoryError:
            raise
        except Exception as fallback_error:
            # both ways failed: the model itself is at fault, and its first error is the one to see
            raise forward_error from fallback_error
        _ExactHvp.remember_failure(model)
        warnings.warn(
            f"probe='exact': forward-mode AD failed on this model ({str(forward_error).splitlines()[0]}); "
            "using the double-backward Jacobian-vector product for it instead",
            RuntimeWarning,
            stacklevel=4,
        )
        return result

    @staticmethod
    def double_backward_hvp(
        model: Callable[..., Any],
        inp: ModelInput,
        xr: Tensor,
        d: Tensor,
        target: Tensor | None,
        likelihood: str,
        divergence: Divergence | None,
        output_fn: Callable[[Any], Tensor] | None,
        rng: RNGSnapshot,
        source: str | None = None,
    ) -> tuple[Tensor, Tensor]:
        r""":meth:`hvp` without forward-mode AD: :math:`J d` as the gradient of :math:`u^\top J` in ``u``.

        ``xr`` is the detached input, requiring grad.
        """
        with rng.replay():
            pred = extract_output(inp.call(model, xr), output_fn)
        target = _checked_target(pred, inp, _MODEL_OUTPUT) if target is None else target
        check_same_shape(target, pred, _MODEL_OUTPUT if source is None else source)
        if not pred.requires_grad:
            return torch.zeros_like(xr), target
        u = torch.zeros_like(pred, requires_grad=True)
        (jt_u,) = torch.autograd.grad(pred, xr, grad_outputs=u, create_graph=True)
        jd = _grad_or_zero(jt_u, u, grad_outputs=d)
        av = fisher_product(likelihood, divergence, target, jd)
        av = (_unit_rows(av) if _float16_range(xr) else av).to(pred.dtype)
        return _grad_or_zero(pred, xr, grad_outputs=av), target


def _search(
    model: Callable[..., Any],
    inp: ModelInput,
    target: Tensor | None,
    *,
    eps: float | Tensor,
    xi: float | Tensor | str,
    n_power: int,
    norm: str,
    likelihood: str,
    divergence: Divergence | None,
    probe: str,
    output_fn: Callable[[Any], Tensor] | None,
    mask: Tensor | None,
    generator: torch.Generator | None,
    rng: RNGSnapshot,
    source: str = _MODEL_OUTPUT,
) -> tuple[Tensor, Tensor]:
    """Power iteration; returns ``(r_vadv, target)`` (both detached). Runs inside the caller's guards.

    ``source`` names where ``target`` came from, for :func:`check_same_shape`.

    ``probe`` is resolved (:func:`resolve_probe`). ``target`` may be ``None`` only with the exact
    probe and ``n_power >= 1`` (see :func:`_reuses_probe_pass`): the first probe pass's primal output
    is then the clean target.
    """
    x0 = inp.tensor.detach()
    div = resolve_divergence(likelihood, divergence)
    d = _random_unit(x0, mask, generator)
    if probe == "exact":
        for _ in range(n_power):
            with torch.enable_grad():
                g, target = _ExactHvp.hvp(model, inp, x0, d, target, likelihood, divergence, output_fn, rng, source)
            d = _update(d, g, mask)
    else:
        assert target is not None, "the finite-difference probe needs the clean target"
        h = probe_scale(x0, xi, eps)
        scaled = _float16_range(x0)
        for _ in range(n_power):
            d.requires_grad_(True)
            with rng.replay(), torch.enable_grad():
                pred = extract_output(inp.call(model, x0 + h * d), output_fn)
                check_same_shape(target, pred, source)
                if scaled:  # float16: the output gradient in float32, each sample's scaled to a maximum of 1
                    gp = _scaled_output_grad(lambda out: checked_divergence(div, target, out).sum(), pred)
                    g = torch.zeros_like(d) if gp is None else _grad_or_zero(pred, d, grad_outputs=gp.to(pred.dtype))
                else:
                    value = checked_divergence(div, target, pred).sum()
                    g = _grad_or_zero(value, d)
            d = _update(d.detach(), g, mask)
    assert target is not None
    # d is a unit vector already (the random start and every update are L2-normalized)
    unit = d if norm == "l2" else project_direction(d, norm)
    return per_sample_scale(eps, x0) * unit.to(x0.dtype), target


def _reuses_probe_pass(logits: Any, eps: float | Tensor, n_power: int, probe: str) -> bool:
    """Whether the clean target can come from the exact probe's first pass instead of a pass of its own.

    The forward-mode pass of the exact probe at ``x`` computes the clean output as its primal, with the
    same random state and BatchNorm guard as a separate clean pass would: without ``logits``, that
    saves one forward pass per call. ``probe`` is resolved.
    """
    return logits is None and probe == "exact" and n_power >= 1 and (isinstance(eps, Tensor) or eps != 0)


def resolve_probe(probe: str, t: Tensor, model: object = None) -> str:
    """``"auto"``: finite differences in float32/float64, the exact product in lower precision.

    Lower precision is bf16/fp16 (autocast included) and float32 computed in TF32 or bf16 on
    CUDA (:func:`float32_compute_eps`): matmuls after ``torch.set_float32_matmul_precision``
    ``"high"``/``"medium"``, and, when ``model`` has convolution layers (or is not an
    ``nn.Module``, so cannot be looked into), cuDNN convolutions, which use TF32 by default on
    Ampere and later GPUs (``torch.backends.cudnn.allow_tf32 = False`` gives float32
    convolutions and the cheaper finite difference back).

    Measured on a 3072-512-10 ReLU MLP after 20 power iterations (|cosine| with the top eigenvector
    of the exact Hessian, four samples): finite differences with ``xi="auto"`` reach 0.987-1.0 in
    float32 but only 0.82-0.98 under bf16 autocast, where the exact product keeps 0.987-1.0. One
    power step (``benchmarks/direction_accuracy.py --one-step``, 16 inputs), mean |cosine| with
    the direction of the float64 product, MLP / WRN-28-2: finite difference 1.00 / 0.99 in float32,
    0.63 / 0.62 in TF32 (emulated), 0.96 / 0.53 under bf16 autocast; exact product 1.00 / 0.98 in
    TF32 and 1.00 / 0.83 under bf16.
    """
    if probe != "auto":
        return probe
    dtype = _compute_dtype(t)
    eps = torch.finfo(dtype).eps
    if dtype == torch.float32 and t.device.type == "cuda":
        eps = max(eps, float32_compute_eps(t.device, convolutions=_has_convolutions(model)))
    return "exact" if eps > _LOW_PRECISION_EPS else "finite_difference"


def _has_convolutions(model: object) -> bool:
    """Whether ``model`` may run convolutions: conv layers, or a graph with a convolution call.

    A bound method or ``functools.partial`` of a module is looked into as that module. A model that
    cannot be looked into (a plain callable, a TorchScript module) counts as convolutional; a
    module calling ``F.conv2d`` on parameters of its own is not detected.
    """
    model = guarded_module(model) or model
    if not isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule):
        return True
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return True
        if isinstance(m, torch.fx.GraphModule) and any(
            node.op == "call_function" and "conv" in str(node.target) for node in m.graph.nodes
        ):
            return True
    return False


def check_common(eps: float | Tensor, xi: float | Tensor | str, n_power: int, norm: str, probe: str) -> None:
    """Validate the hyperparameters shared by the VAT functions (``xi`` also where the probe ignores it)."""
    check_nonnegative("eps", eps)
    check_xi(xi)
    check_n_power(n_power)
    check_choice("norm", norm, NORMS)
    check_choice("probe", probe, PROBES)


def _check_batch_size(output: Tensor, inp: ModelInput, source: str) -> None:
    """Raise ``ValueError`` unless ``output`` has the batch size of the input in dimension 0.

    ``source`` names ``output`` in the message: ``"logits"`` for the caller's clean output,
    :data:`_MODEL_OUTPUT` for a pass of this call (after ``output_fn``, if any).
    """
    if output.ndim < 1 or output.shape[0] != inp.tensor.shape[0]:
        raise ValueError(
            f"{source} must have the batch size of x ({inp.tensor.shape[0]}) in dimension 0, "
            f"got shape {tuple(output.shape)}"
        )


def check_same_shape(target: Tensor, pred: Tensor, source: str) -> None:
    """Raise ``ValueError`` unless the clean ``target`` has the shape of a pass's output ``pred``.

    ``source`` names where ``target`` came from (``"logits"``, or :data:`_MODEL_OUTPUT`). A shape
    test only: no device work.
    """
    if target.shape != pred.shape:
        raise ValueError(
            f"{source} must have the shape of the model's output on x, {tuple(pred.shape)}, got "
            f"{tuple(target.shape)}"
            + (" (another number of classes?)" if target.ndim > 1 and target.shape[1] != pred.shape[1] else "")
        )


def _checked_target(target: Tensor, inp: ModelInput, source: str) -> Tensor:
    """``target`` detached, after :func:`_check_batch_size`."""
    _check_batch_size(target, inp, source)
    return target.detach()


#: BatchNorm layers in training mode normalizing over fewer values per channel than this, under
#: bf16/fp16, give a direction far from float32's (BENCHMARKS.md section 1)
LOW_PRECISION_BATCHNORM_MIN = 16
_LOW_PRECISION_SECTION = "BENCHMARKS.md, section 1 ('bf16 with BatchNorm in training mode')"
#: modules whose BatchNorm batches were measured once under low precision
_low_precision_checked: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def _record_values_per_channel(sizes: list[int], module: nn.Module, args: tuple[Any, ...]) -> None:
    x = args[0] if args else None
    if isinstance(x, Tensor) and x.ndim >= 2 and x.shape[1] > 0:
        sizes.append(x.numel() // x.shape[1])


@contextlib.contextmanager
def low_precision_batchnorm_check(model: object, t: Tensor, caller: str) -> Iterator[None]:
    """Warn once per model when a search runs in bf16/fp16 through BatchNorm over few values per channel.

    Under bf16 (or fp16) autocast, a BatchNorm layer in training mode that normalizes over few
    values per channel (the batch times the spatial positions at its input) makes the network's
    input curvature, and so the virtual adversarial direction, depend strongly on the rounding
    of its operands: on ResNet-18 (CPU bf16), mean |cos| with the float32 direction is 0.48 at 4
    values per channel and 0.82 at 8, 0.97 with BatchNorm in eval mode, whatever the probe and
    even with the statistics computed in float32 (BENCHMARKS.md section 1). On the first such
    call for a module, forward pre-hooks on its BatchNorm layers in training mode record the
    values per channel of the search's passes; a warning names the smallest when it is below
    :data:`LOW_PRECISION_BATCHNORM_MIN`. Float32 and float64 searches, and later calls, cost a
    dtype test and, under low precision, a weak-set lookup.
    """
    if torch.finfo(_compute_dtype(t)).eps <= _LOW_PRECISION_EPS:  # float32/64 (TF32 does not count here)
        yield
        return
    module = guarded_module(model)
    layers: list[nn.Module] = []
    if module is not None:
        try:
            if module not in _low_precision_checked:
                _low_precision_checked.add(module)
                layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
        except TypeError:  # not weak-referenceable
            pass
    if not layers:
        yield
        return
    sizes: list[int] = []
    handles = [m.register_forward_pre_hook(functools.partial(_record_values_per_channel, sizes)) for m in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
    if sizes and min(sizes) < LOW_PRECISION_BATCHNORM_MIN:
        warnings.warn(
            f"{caller} under {_compute_dtype(t)} with BatchNorm in training mode normalizing over "
            f"{min(sizes)} values per channel (batch x positions): the virtual adversarial direction then "
            "depends on the rounding of the low-precision arithmetic of the model itself (ResNet-18, bf16: "
            "mean |cos| with the float32 direction 0.48 at 4 values per channel, 0.82 at 8, 0.97 with "
            f"BatchNorm in eval mode). Use batches of {LOW_PRECISION_BATCHNORM_MIN} or more per BatchNorm "
            f"channel, or call it outside autocast (a float32 search). See {_LOW_PRECISION_SECTION}. Checked on "
            "the first low-precision call for each model only.",
            RuntimeWarning,
            stacklevel=4,
        )


class TargetMismatchWarning(UserWarning):
    """The ``logits`` given to a VAT loss are not the model's clean output on ``x`` (BatchNorm's batch)."""


#: the README section that explains the batch composition of the VAT target
_BATCHNORM_SECTION = "README.md, 'Three things to get right: BatchNorm, dropout, and the size of ε'"
#: modules whose given logits were compared with their own clean pass once (the first call with logits)
_checked_targets: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def draws_random_numbers(module: nn.Module) -> bool:
    """Whether ``module`` itself draws random numbers in its forward pass as it is now.

    Dropout with ``p > 0`` in training mode, and any module in training mode that declares
    ``draws_random_in_training = True`` (a noise layer such as
    :class:`torchvat.models.GaussianNoise`). A clean pass of such a model is reproducible only by
    replaying the generator state it drew from (:class:`RNGSnapshot`).

    Example:
        >>> draws_random_numbers(nn.Dropout(0.5)), draws_random_numbers(nn.Dropout(0.5).eval())
        (True, False)
    """
    if not module.training:
        return False
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return module.p > 0
    return bool(getattr(module, "draws_random_in_training", False))


def _check_target_composition(
    model: Callable[..., Any],
    inp: ModelInput,
    target: Tensor,
    output_fn: Callable[[Any], Tensor] | None,
    rng: RNGSnapshot,
    replays_clean_pass: bool,
) -> None:
    r"""Warn once per model when the given ``logits`` do not match its own clean pass on ``x`` (BatchNorm).

    A VAT target must come from a pass with the batch composition of the perturbed passes:
    BatchNorm in training mode normalizes by the batch, so a target from a joint labeled +
    unlabeled pass, searched on the unlabeled rows alone, makes the divergence at r = 0 non-zero.
    On the first call with ``logits`` for a module that has BatchNorm layers in training mode,
    one no-grad pass on ``x`` (under the caller's BatchNorm guard, replaying ``rng``: the clean
    pass's dropout masks when the caller gave its snapshot) is compared with ``target``. Nothing
    is consumed or changed: the generator states are restored after the replay, the running
    statistics are frozen, and every buffer is put back as found (a model counting its passes in
    a buffer, say). Later calls cost one weak-set lookup. Models with active dropout whose
    clean pass cannot be replayed (no ``rng`` given) are not checked, nor are other models that draw
    random numbers in training (:func:`draws_random_numbers`): their masks or noise differ anyway.

    The tolerance is :math:`\max(4u, 10^{-4})` times the largest clean logit (at least 1), with
    :math:`u` the machine epsilon of the least precise of the logits' dtype and the dtype the
    model computes in (bf16: 0.031); a mismatched batch moves the logits by 7-15% of the largest
    one (BatchNorm MLP, 8 labeled + 32 unlabeled rows, float32 and bf16 alike), and recomputing
    the same pass on the CPU gives the same bits.
    """
    module = guarded_module(model)
    if module is None:
        return
    try:
        if module in _checked_targets:
            return
        _checked_targets.add(module)
    except TypeError:  # not weak-referenceable
        return
    layers = list(module.modules())
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in layers):
        return
    if not replays_clean_pass and any(draws_random_numbers(m) for m in layers):
        return
    # a model may change its own buffers in a pass (a counter, say): the check leaves them as found
    buffers = [
        (owner, name, b, b._version, b.clone())
        for owner in layers
        for name, b in owner._buffers.items()
        if b is not None
    ]
    try:
        with rng.replay(), torch.no_grad():
            own = extract_output(inp.call(model, inp.tensor.detach()), output_fn)
    finally:
        with torch.no_grad():
            for owner, name, buffer, version, value in buffers:
                if owner._buffers.get(name) is not buffer:
                    owner._buffers[name] = buffer  # replaced: the original object, untouched
                if buffer._version != version:  # changed in place (a copy would break saved graphs)
                    buffer.copy_(value)
    if own.shape != target.shape:
        return  # named by the shape check of the search
    u = max(torch.finfo(target.dtype).eps, torch.finfo(_compute_dtype(inp.tensor)).eps)
    if own.device.type == "cuda":
        u = max(u, float32_compute_eps(own.device, _has_convolutions(model)))
    tol = max(4 * u, 1e-4)
    diff = (own.float() - target.float()).abs().amax()
    scale = target.float().abs().amax().clamp_min(1.0)
    if bool(diff > tol * scale):
        warnings.warn(
            f"the given logits are not the model's own clean output on x: they differ by up to "
            f"{diff.item():.3g} (allowed: {tol * scale.item():.3g}), with BatchNorm in training mode. The "
            "target must come from a pass with the batch composition of x (a joint labeled + unlabeled "
            "pass, with x the unlabeled rows alone, gives BatchNorm other statistics, and the divergence at "
            f"r = 0 is not 0); give x its own clean pass or regularize every row of the joint pass. See "
            f"{_BATCHNORM_SECTION}. Checked on the first call with logits for each model only.",
            TargetMismatchWarning,
            stacklevel=4,
        )


def clean_target(
    model: Callable[..., Any],
    inp: ModelInput,
    logits: Any,
    output_fn: Callable[[Any], Tensor] | None,
    rng: RNGSnapshot,
    replays_clean_pass: bool = True,
) -> Tensor:
    """The detached clean prediction: from ``logits`` if given, else one no-grad forward pass.

    Given ``logits`` are compared with the model's own clean pass on the first call for a model
    with BatchNorm in training mode (:func:`_check_target_composition`); ``replays_clean_pass``
    says whether ``rng`` is the caller's snapshot of its clean pass.
    """
    if logits is None:
        with rng.replay(), torch.no_grad():
            target = extract_output(inp.call(model, inp.tensor.detach()), output_fn)
        return _checked_target(target, inp, _MODEL_OUTPUT)
    target = _checked_target(extract_output(logits, output_fn), inp, "logits")
    _check_target_composition(model, inp, target, output_fn, rng, replays_clean_pass)
    return target


def virtual_adversarial_perturbation(
    model: Callable[..., Any],
    x: Tensor | Mapping[str, Any],
    *,
    logits: Any = None,
    eps: float | Tensor = 1.0,
    xi: float | Tensor | str = "auto",
    n_power: int = 1,
    norm: Norm = "l2",
    likelihood: str = "categorical",
    divergence: Divergence | None = None,
    probe: Probe = "auto",
    input_key: str | None = None,
    output_fn: Callable[[Any], Tensor] | None = None,
    mask: Tensor | None = None,
    class_dim: int = 1,
    output_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    rng: RNGSnapshot | None = None,
) -> Tensor:
    r"""The virtual adversarial perturbation :math:`r_{\mathrm{vadv}}` of Miyato et al. (TPAMI 2018).

    Power iteration on the Hessian of the divergence at :math:`r = 0`; see :func:`torchvat.vat_loss`
    for every argument. The model is left exactly as found (parameter gradients, BatchNorm and
    InstanceNorm running statistics, training mode, RNG state apart from the random start) when it
    is a module, a bound method of one (``model.forward``) or a ``functools.partial`` of either.
    Any other callable (a lambda, a function calling the model) cannot be looked into: the running
    statistics of the layers it runs are updated by every pass of the search; pass the module itself.

    Returns:
        Detached tensor with the shape of the perturbed input, with ``||r_i|| = eps`` per sample in
        the chosen norm (0 where ``eps`` is 0 or the sample is masked out).

    Example:
        >>> model = torch.nn.Linear(4, 3)
        >>> r = virtual_adversarial_perturbation(model, torch.randn(5, 4), eps=2.0)
        >>> r.shape, torch.allclose(r.norm(dim=1), torch.full((5,), 2.0))
        (torch.Size([5, 4]), True)
    """
    check_grad_mode("virtual_adversarial_perturbation")
    check_common(eps, xi, n_power, norm, probe)
    output_fn = OutputLayout(class_dim, output_mask).output_fn(output_fn)
    inp = ModelInput(x, input_key)
    m = broadcast_mask(mask, inp.tensor)
    replays = rng is not None
    rng = rng if rng is not None else RNGSnapshot.capture(inp.tensor.device)
    with running_stats_guard(model):
        probe = resolve_probe(probe, inp.tensor, model)  # type: ignore[assignment]
        reuse = _reuses_probe_pass(logits, eps, n_power, probe)
        target = None if reuse else clean_target(model, inp, logits, output_fn, rng, replays)
        with low_precision_batchnorm_check(model, inp.tensor, "virtual_adversarial_perturbation"):
            r, _ = _search(
                model,
                inp,
                target,
                eps=eps,
                xi=xi,
                n_power=n_power,
                norm=norm,
                likelihood=likelihood,
                divergence=divergence,
                probe=probe,
                output_fn=output_fn,
                mask=m,
                generator=generator,
                rng=rng,
                source=_MODEL_OUTPUT if logits is None else "logits",
            )
        return r


def check_class_indices(y: Tensor, n_classes: int) -> None:
    """Raise ``ValueError`` naming ``y`` unless its entries are class indices in [0, ``n_classes``) or -100.

    -100 is ``F.cross_entropy``'s ``ignore_index``. Checked for a ``y`` on the CPU only, where it
    costs no host synchronization; on an accelerator torch's own device-side check applies.
    """
    if y.device.type != "cpu" or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        return
    bad = ((y < 0) | (y >= n_classes)) & (y != -100)
    if bool(bad.any()):
        value = y[bad][0].item()
        hint = " (unlabeled rows are for vat_loss, not adversarial_loss)" if value == -1 else ""
        raise ValueError(
            f"y must hold class indices in [0, {n_classes}) (the model's output has {n_classes} classes) or "
            f"-100 (ignored), got {value} in {int(bad.sum())} entr{'y' if int(bad.sum()) == 1 else 'ies'}{hint}"
        )


def default_loss_fn(output: Tensor, y: Tensor) -> Tensor:
    """Cross entropy per sample and position (float32 at least), ``output`` of shape [B, C, *positions].

    Integer targets on the CPU are checked first (:func:`check_class_indices`).
    """
    if isinstance(y, Tensor) and output.ndim >= 2:
        check_class_indices(y, output.shape[1])
    return F.cross_entropy(output.to(torch.promote_types(output.dtype, torch.float32)), y, reduction="none")


def per_sample_loss(
    loss_fn: Callable[[Tensor, Tensor], Tensor], pred: Tensor, y: Any, positions: Tensor | None = None
) -> Tensor:
    """``loss_fn(pred, y)`` reduced to one value per sample: the mean over its positions.

    ``positions`` (bool, of the loss's shape) marks the positions that count (see
    :meth:`OutputLayout.position_mask`); it needs ``loss_fn`` to return one loss per position.
    """
    loss = loss_fn(pred, y)
    if not isinstance(loss, Tensor) or loss.ndim < 1 or loss.shape[0] != pred.shape[0]:
        got = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(
            f"loss_fn must return per-sample losses of shape [{pred.shape[0]}, ...] (use reduction='none'), got {got}"
        )
    if positions is not None and loss.shape != positions.shape:
        raise ValueError(
            f"with output_mask, loss_fn must return one loss per position, of shape {tuple(positions.shape)} "
            f"(the output without its class dimension), got {tuple(loss.shape)}"
        )
    return masked_position_mean(loss, positions)


def one_step_adversarial_perturbation(
    model: Callable[..., Any],
    x: Tensor | Mapping[str, Any],
    y: Any,
    *,
    logits: Any = None,
    eps: float | Tensor = 1.0,
    norm: Norm = "l2",
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    input_key: str | None = None,
    output_fn: Callable[[Any], Tensor] | None = None,
    mask: Tensor | None = None,
    class_dim: int = 1,
    output_mask: Tensor | None = None,
    rng: RNGSnapshot | None = None,
) -> Tensor:
    r"""The adversarial perturbation of Goodfellow et al. (ICLR 2015).

    .. math::
        r_{\mathrm{adv}} = \epsilon\, \frac{g}{\lVert g \rVert_2} \ (\text{L2}),\qquad
        r_{\mathrm{adv}} = \epsilon\, \mathrm{sign}(g) \ (\text{L-inf, FGSM}),\qquad
        g = \nabla_x \ell\big(f(x), y\big)

    Args:
        model: the model (any callable). BatchNorm and InstanceNorm running statistics are left as
            found when it is a module, a bound method of one (``model.forward``) or a
            ``functools.partial`` of either; any other callable (a lambda, a function calling the
            model) cannot be looked into, and the gradient pass updates the statistics of the layers
            it runs: pass the module itself.
        x: input tensor [B, ...] or a mapping of tensors (see ``input_key``).
        y: targets accepted by ``loss_fn``.
        logits: the clean output, if the caller has it. When ``x`` (the perturbed tensor)
            requires grad and ``logits`` were computed from it, the input gradient is taken through
            that graph (``retain_graph=True``), saving a forward pass. Otherwise, also when
            ``logits`` come from a pass that did not take this ``x`` (say ``model(input_ids=...)``
            while ``x`` holds embeddings computed apart), a forward pass of its own is made.
        eps: perturbation size, a number or a per-sample tensor [B].
        norm: ``"l2"`` or ``"linf"``.
        loss_fn: ``loss_fn(output, y)`` returning per-sample (or per-position) losses, averaged per
            sample over the positions; cross entropy by default. It receives the output with its
            class dimension at 1 (``[B, C, *positions]``, see ``class_dim``).
        input_key: the entry of a mapping ``x`` to perturb.
        output_fn: maps the model output to the prediction tensor.
        mask: 1 where the input may be perturbed, broadcast to the input's shape.
        class_dim: the class dimension of the model's output: 1 (default, ``[B, C, ...]``) or
            -1 for ``[B, T, C]`` token classification; see :func:`torchvat.vat_loss`.
        output_mask: 1 where an output position counts, of the output's shape without its class
            dimension (``[B, T]`` for ``[B, T, C]``): the loss is averaged per sample over the
            positions that count. ``loss_fn`` must then return one loss per position.
        rng: generator state to replay for the gradient pass (same dropout masks as the clean pass).

    Returns:
        Detached tensor with the shape of the perturbed input.

    Example:
        >>> model = torch.nn.Linear(4, 3)
        >>> r = one_step_adversarial_perturbation(model, torch.randn(2, 4), torch.tensor([0, 2]), eps=0.1, norm="linf")
        >>> r.abs().max().item()
        0.10000000149011612
    """
    check_grad_mode("adversarial_perturbation")
    check_nonnegative("eps", eps)
    check_choice("norm", norm, NORMS)
    layout = OutputLayout(class_dim, output_mask, zero_masked=False)
    output_fn = layout.output_fn(output_fn)
    inp = ModelInput(x, input_key)
    m = broadcast_mask(mask, inp.tensor)
    loss_fn = loss_fn or default_loss_fn
    t = inp.tensor
    g = None
    if logits is not None and t.requires_grad:
        pred = extract_output(logits, output_fn)
        if pred.requires_grad:
            _check_batch_size(pred, inp, "logits")
            with torch.enable_grad():
                loss = per_sample_loss(loss_fn, pred, y, layout.position_mask(pred)).sum()
            if loss.requires_grad:
                # None when x is not in the graph of logits: they were computed from other inputs
                (g,) = torch.autograd.grad(loss, t, retain_graph=True, allow_unused=True)
    if g is None:
        rng = rng if rng is not None else RNGSnapshot.capture(t.device)
        xr = t.detach().requires_grad_(True)
        with running_stats_guard(model), rng.replay(), torch.enable_grad():
            pred = extract_output(inp.call(model, xr), output_fn)
            g = _grad_or_zero(per_sample_loss(loss_fn, pred, y, layout.position_mask(pred)).sum(), xr)
    if m is not None:
        g = g * m
    return per_sample_scale(eps, t, "eps") * project_direction(g.detach(), norm).to(t.dtype)
