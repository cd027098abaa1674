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
"""

from __future__ import annotations

import argparse
import copy
import time

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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--n-power", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--one-step", action="store_true", help="one power step: float32, TF32 (emulated), bf16 autocast")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
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
