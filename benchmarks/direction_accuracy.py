"""How accurately each probe finds the virtual adversarial direction, by precision.

On a float32 3072-512-10 ReLU MLP (the shape of the core issue's test), for inputs whose exact
Hessian has lambda_1 / lambda_2 >= 1.25 (so 20 power steps resolve the top eigenvector in exact
arithmetic), the |cosine| between the direction after ``--n-power`` power iterations and the top
eigenvector of the float64 Hessian J^T A J, for: the paper's absolute xi = 1e-6, torchvat's
``xi="auto"`` finite difference, the exact Gauss-Newton product, and the default (``probe="auto"``),
in float32 and under bf16 autocast.

    python benchmarks/direction_accuracy.py --samples 16 --n-power 20
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from torchvat import virtual_adversarial_perturbation


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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--n-power", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
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
