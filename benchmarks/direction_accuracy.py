"""How accurately each probe finds the virtual adversarial direction, by precision.

On a float32 3072-512-10 ReLU MLP (the shape of the core issue's test), for inputs whose exact
Hessian has lambda_1 / lambda_2 >= 1.25 (so 20 power steps resolve the top eigenvector in exact
arithmetic), the |cosine| between the direction after ``--n-power`` power iterations and the top
eigenvector of the float64 Hessian J^T A J, for: the paper's absolute xi = 1e-6, torchvat's
``xi="auto"`` finite difference, the exact Gauss-Newton product, and the default (``probe="auto"``),
in float32 and under bf16 autocast.

    python benchmarks/direction_accuracy.py --samples 16 --n-power 20

``--one-step``: the quality of one power step (``n_power = 1``, the training setting) in float32,
under bf16 autocast, and in TF32, the
arithmetic of float32 convolutions on Ampere and later GPUs (cuDNN's default) and of float32 matmuls
after ``torch.set_float32_matmul_precision("high")``. TF32 is emulated on the CPU: the operands of
every matmul and convolution are rounded to 10 mantissa bits (forward, backward and forward-mode
tangents), as the tensor cores do, and the products accumulate in float32. Reported: |cosine| between
the direction after one step and that of the exact float64 product H d from the same start d, on the
MLP and on WRN-28-2 (random weights, BatchNorm in eval mode, 32x32 inputs).

    python benchmarks/direction_accuracy.py --one-step --samples 8

``--bn-train``: one exact-probe power step under CPU bf16 autocast against the float32 exact
step from the same start, on ResNet-18 (torchvision, random weights, 32x32 inputs, so its last
BatchNorm layers normalize over the batch alone) with BatchNorm in training mode at batch 4 and
8, and in eval mode. Besides the probe as it is, two diagnostics: the BatchNorm layers computed in
float32 inside the bf16 probe (the candidate fix), and the float32 direction of the same network
with only its weights and input rounded to bf16 (every operation in float32: what the rounding
of the model's operands alone does). Also reported: the curvature the bf16 direction reaches,
d^T H d over that of the float32 direction (H of the float64 network, by a small finite
difference of the divergence; a random direction gets ~0.002).

    python benchmarks/direction_accuracy.py --bn-train --samples 16 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from torchvat import virtual_adversarial_perturbation
from torchvat.core.perturbation import l2_normalize
from torchvat.models import build_model


def top_eigvecs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m64 = copy.deepcopy(model).double()
    vecs, ratios = [], []
    for i in range(x.shape[0]):
        xi = x[i : i + 1].double()
        jac = torch.autograd.functional.jacobian(m64, xi).reshape(10, -1)
        p = torch.softmax(m64(xi), 1)[0]
        a_evals, a_evecs = torch.linalg.eigh(torch.diag(p) - torch.outer(p, p))
        b = (a_evecs * a_evals.clamp_min(0).sqrt()) @ a_evecs.T @ jac
        evals, evecs = torch.linalg.eigh(b @ b.T)
        v = b.T @ evecs[:, -1]
        vecs.append(v / v.norm())
        ratios.append((evals[-1] / evals[-2]).item())
    return torch.stack(vecs), torch.tensor(ratios)


def round_tf32(t: torch.Tensor) -> torch.Tensor:
    """``t`` (float32) rounded to TF32: 10 explicit mantissa bits, to nearest (ties away from zero)."""
    bits = t.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


class _TF32(torch.autograd.Function):
    """Rounds to TF32 in the forward pass, the gradient in the backward pass, the tangent in forward mode."""

    @staticmethod
    def forward(t):
        return round_tf32(t)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return round_tf32(g)

    @staticmethod
    def jvp(ctx, t):
        return round_tf32(t)


def tf32_emulated(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose linear and convolution layers round their operands to TF32."""
    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, nn.Linear):
            mod.forward = lambda x, mod=mod: F.linear(_TF32.apply(x), _TF32.apply(mod.weight), mod.bias)
        elif isinstance(mod, nn.Conv2d):
            mod.forward = lambda x, mod=mod: mod._conv_forward(_TF32.apply(x), _TF32.apply(mod.weight), mod.bias)
    return m


def exact_product(model: nn.Module, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """H d = J^T A J d in float64 (softmax likelihood), per sample of a row-independent model."""
    m64, x64 = copy.deepcopy(model).double(), x.double()
    out, jd = torch.func.jvp(m64, (x64,), (d.double(),))
    p = out.softmax(1)
    ajd = p * jd - p * (p * jd).sum(1, keepdim=True)
    return torch.func.vjp(m64, x64)[1](ajd)[0]


def one_step_table(samples: int) -> list[str]:
    """Markdown rows: |cos| of one power step with H d, float32 and TF32-emulated, per model and probe."""
    torch.manual_seed(0)
    cases = [
        (
            "MLP 3072-512-10",
            nn.Sequential(nn.Linear(3072, 512), nn.ReLU(), nn.Linear(512, 10)),
            torch.randn(samples, 3072, generator=torch.Generator().manual_seed(5)),
        ),
        (
            "WRN-28-2",
            build_model("wrn-28-2", input_shape=(3, 32, 32), n_classes=10).eval(),
            torch.randn(samples, 3, 32, 32, generator=torch.Generator().manual_seed(5)),
        ),
    ]
    utf32 = 2.0**-10
    rows = [
        "| model | probe | float32 min / mean |cos| | TF32 (emulated) min / mean |cos| "
        "| bf16 autocast min / mean |cos| |",
        "|---|---|---|---|---|",
    ]
    for name, model, x in cases:
        seed = 1
        d = l2_normalize(torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)))
        ref = exact_product(model, x, d).flatten(1)
        size = x.flatten(1).norm(dim=1).clamp_min(1.0)
        probes = [
            ("finite difference, xi = 'auto'", {"probe": "finite_difference", "xi": "auto"}),
            ("finite difference, TF32-sized step", {"probe": "finite_difference", "xi": utf32**0.5 * size}),
            ("exact Gauss-Newton product", {"probe": "exact"}),
        ]
        for label, kwargs in probes:
            cells = []
            for m, bf16 in ((model, False), (tf32_emulated(model), False), (model, True)):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    r = virtual_adversarial_perturbation(
                        m, x, eps=1e3, n_power=1, generator=torch.Generator().manual_seed(seed), **kwargs
                    )
                cos = F.cosine_similarity(r.flatten(1).double(), ref, dim=1).abs()
                cells.append(f"{cos.min():.3f} / {cos.mean():.3f}")
            rows.append(f"| {name} | {label} | {' | '.join(cells)} |")
    return rows


@contextlib.contextmanager
def batchnorm_in_float32(model: nn.Module) -> Iterator[None]:
    """Every BatchNorm layer of ``model`` takes its input in float32 (statistics and output in float32)."""
    handles = [
        m.register_forward_pre_hook(lambda mod, args: (args[0].float(), *args[1:]))
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def operands_rounded(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose convolution and linear weights are rounded to bf16 (kept in float32)."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d | nn.Linear):
                mod.weight.copy_(mod.weight.to(torch.bfloat16).float())
    return m


def curvature(model64: nn.Module, x: torch.Tensor, r: torch.Tensor, t: float = 1e-3) -> float:
    """Sum over the batch of d^T H d for the per-sample unit directions of ``r`` (float64, finite difference)."""
    x64, d = x.double(), r.double()
    d = d / d.flatten(1).norm(dim=1).view(-1, *[1] * (d.ndim - 1))
    with torch.no_grad():
        p, q = F.log_softmax(model64(x64), 1), F.log_softmax(model64(x64 + t * d), 1)
    return 2 * float((p.exp() * (p - q)).sum()) / t**2


def bn_train_table(samples: int) -> list[str]:
    """Markdown rows: bf16 exact probe vs the float32 exact step, ResNet-18 with BatchNorm in train/eval mode."""
    import torchvision  # the benchmark's own dependency (torchvat[vision])

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    x = torch.randn(samples, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    kw = {"eps": 1.0, "n_power": 1, "probe": "exact"}
    rows = [
        "| BatchNorm | bf16 probe: min / mean |cos| | bf16 probe, BatchNorm in float32 | "
        "float32, weights and input rounded to bf16 | curvature reached by the bf16 direction |",
        "|---|---|---|---|---|",
    ]
    for label, train, batch in (("train, batch 4", True, 4), ("train, batch 8", True, 8), ("eval", False, 8)):
        net.train(train)
        net64 = copy.deepcopy(net).double()
        cells: list[list[torch.Tensor]] = [[], [], []]
        ratios = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # torchvat's own warning for this very case
            for i in range(0, samples, batch):
                xb = x[i : i + batch]
                ref = virtual_adversarial_perturbation(net, xb, generator=torch.Generator().manual_seed(1), **kw)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    r16 = virtual_adversarial_perturbation(net, xb, generator=torch.Generator().manual_seed(1), **kw)
                    with batchnorm_in_float32(net):
                        r_bn = virtual_adversarial_perturbation(
                            net, xb, generator=torch.Generator().manual_seed(1), **kw
                        )
                r_rounded = virtual_adversarial_perturbation(
                    operands_rounded(net),
                    xb.to(torch.bfloat16).float(),
                    generator=torch.Generator().manual_seed(1),
                    **kw,
                )
                for cell, r in zip(cells, (r16, r_bn, r_rounded), strict=True):
                    cell.append(F.cosine_similarity(r.flatten(1).double(), ref.flatten(1).double(), dim=1).abs())
                ratios.append(curvature(net64, xb, r16) / curvature(net64, xb, ref))
        text = [f"{torch.cat(c).min():.3f} / {torch.cat(c).mean():.3f}" for c in cells]
        rows.append(f"| {label} | {' | '.join(text)} | {sum(ratios) / len(ratios):.3f} |")
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--n-power", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--one-step", action="store_true", help="one power step: float32, TF32 (emulated), bf16 autocast")
    p.add_argument("--bn-train", action="store_true", help="bf16 exact probe, ResNet-18 with BatchNorm in train mode")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.bn_train:
        print(f"one exact power step, bf16 autocast vs float32 from the same start, {args.samples} inputs")
        print()
        print("\n".join(bn_train_table(args.samples)))
        return
    if args.one_step:
        print(f"one power step from the same start d, {args.samples} inputs; eps = 1000 (the probe step is not capped)")
        print()
        print("\n".join(one_step_table(args.samples)))
        return
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3072, 512), nn.ReLU(), nn.Linear(512, 10))
    x = torch.randn(args.samples, 3072, generator=torch.Generator().manual_seed(5))
    top, ratio = top_eigvecs(model, x)
    keep = ratio >= 1.25
    x, top = x[keep], top[keep]
    settings = [
        ("paper: finite difference, xi = 1e-6", {"probe": "finite_difference", "xi": 1e-6}),
        ("finite difference, xi = 'auto'", {"probe": "finite_difference", "xi": "auto"}),
        ("exact Gauss-Newton product", {"probe": "exact"}),
        ("default (probe='auto')", {}),
    ]
    print(f"{int(keep.sum())} of {args.samples} inputs kept (lambda_1/lambda_2 >= 1.25), n_power = {args.n_power}")
    print()
    print("| probe | float32 min / mean |cos| | bf16 autocast min / mean |cos| | ms per power step (fp32) |")
    print("|---|---|---|---|")
    for name, kwargs in settings:
        cells = []
        for autocast in (False, True):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                virtual_adversarial_perturbation(model, x, eps=1.0, n_power=1, **kwargs)  # warm-up (first-call setup)
                t = time.perf_counter()
                r = virtual_adversarial_perturbation(
                    model, x, eps=1.0, n_power=args.n_power, generator=torch.Generator().manual_seed(1), **kwargs
                )
                dt = (time.perf_counter() - t) / args.n_power * 1e3
            cos = F.cosine_similarity(r.double(), top, dim=1).abs()
            cells.append(f"{cos.min():.3f} / {cos.mean():.3f}")
            if not autocast:
                ms = dt
        print(f"| {name} | {cells[0]} | {cells[1]} | {ms:.1f} |")


if __name__ == "__main__":
    main()
