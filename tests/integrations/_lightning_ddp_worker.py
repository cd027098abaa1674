"""A two-process ``lightning`` DDP run of ``VATModule`` on CPU (gloo); run as a script by ``test_lightning_ddp.py``.

Usage: ``python _lightning_ddp_worker.py OUT_DIR [STEPS]``. The test starts one process (rank 0);
Lightning's ``"ddp"`` strategy re-runs this script for rank 1 with ``LOCAL_RANK=1`` in its environment
(``_SubprocessScriptLauncher``). Each rank writes ``OUT_DIR/rank{R}.pt`` with its model's state, the
metrics Lightning kept (``trainer.callback_metrics``, averaged over ranks by ``sync_dist=True``), the
values each rank logged before that averaging, the batches it trained on, the number of gradient
all-reduces and the world size. Rank 0
then waits for rank 1 and exits with a non-zero status if rank 1 failed.

VAT's random start is replaced by :func:`deterministic_start` (a function of the rows only, as in
``tests/distributed``) so that a one-process replay of the two ranks' batches gives the same numbers.

Importing this module does nothing but define functions (pytest imports it for doctests).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

N_LABELED = 16
N_UNLABELED = 128
LABELED_BATCH = 4
UNLABELED_BATCH = 16
STEPS = 6


def sgd(parameters: Any) -> torch.optim.Optimizer:
    """SGD with momentum: unlike Adam it does not blow rounding noise in near-zero gradients up to full steps.

    Args:
        parameters: The model's parameters.

    Returns:
        The optimizer.
    """
    return torch.optim.SGD(parameters, lr=0.1, momentum=0.9)


# the exact probe: the finite-difference probe's direction (a gradient at a tiny xi) moves visibly with the
# last bits of the parameters, which the order of the gradient averaging changes, so a replay would need a
# loose tolerance on the vat term.
HPARAMS: dict[str, Any] = {
    "method": "vat",
    "eps": None,  # derived from each rank's first batch and averaged over the ranks
    "n_power": 1,
    "probe": "exact",
    "optimizer": sgd,
    "sync_dist": True,
}


def deterministic_start(t: torch.Tensor, mask: torch.Tensor | None, generator: object) -> torch.Tensor:
    """A random-start replacement that depends on the rows only (the same on any process).

    Args:
        t: The inputs.
        mask: Rows to perturb, or ``None``.
        generator: Ignored.

    Returns:
        Unit directions, one per row.

    Example:
        >>> d = deterministic_start(torch.zeros(3, 2), None, None)
        >>> torch.allclose(d.flatten(1).norm(dim=1), torch.ones(3))
        True
    """
    from torchvat.core import l2_normalize

    d = torch.cos(3.0 * t + 1.0)
    return l2_normalize(d if mask is None else d * mask)


def make_model(seed: int = 0) -> nn.Module:
    """A small MLP with BatchNorm (no dropout: a rank's loss depends on its rows and parameters only).

    Args:
        seed: Seed of the initial parameters.

    Returns:
        The model.
    """
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(2, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2)
    )


def make_loaders(seed: int = 0) -> Any:
    """Two moons: a labeled and an unlabeled loader combined the way ``VATModule`` accepts.

    Args:
        seed: Seed of the data.

    Returns:
        A ``CombinedLoader({"labeled": (x, y) batches, "unlabeled": (x,) batches}, mode="max_size_cycle")``;
        Lightning gives each of its loaders a ``DistributedSampler`` under DDP.
    """
    from lightning.pytorch.utilities import CombinedLoader
    from sklearn.datasets import make_moons
    from torch.utils.data import DataLoader, TensorDataset

    x, y = make_moons(N_LABELED + N_UNLABELED, noise=0.1, random_state=seed)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)
    labeled = DataLoader(TensorDataset(x[:N_LABELED], y[:N_LABELED]), batch_size=LABELED_BATCH, shuffle=True)
    unlabeled = DataLoader(TensorDataset(x[N_LABELED:]), batch_size=UNLABELED_BATCH, shuffle=True)
    return CombinedLoader({"labeled": labeled, "unlabeled": unlabeled}, mode="max_size_cycle")


def recording_module(model: nn.Module, **kwargs: Any) -> Any:
    """A ``VATModule`` that also remembers what this rank logged (before ``sync_dist``) and its batches.

    Args:
        model: The classifier.
        **kwargs: ``VATModule`` arguments.

    Returns:
        The module; ``local_logs`` holds one dict per step and ``batches`` one ``(x_l, y_l, x_u)`` per step.
    """
    from torchvat.integrations.lightning import VATModule, parse_batch

    class Recording(VATModule):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            self.local_logs: list[dict[str, float]] = []
            self.batches: list[tuple[torch.Tensor, ...]] = []

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.local_logs.append({})
            b = parse_batch(batch)
            self.batches.append(tuple(t.detach().clone() for t in (b.x_labeled, b.y_labeled, b.x_unlabeled)))
            return super().training_step(batch, batch_idx)

        def log(self, name: str, value: Any, *args: Any, **kw: Any) -> None:
            if self.training and self.local_logs:
                self.local_logs[-1][name] = float(value)
            super().log(name, value, *args, **kw)

    return Recording(model, **kwargs)


def allreduce_counter() -> Any:
    """A Lightning callback that routes DDP's gradient all-reduce through a hook counting its calls.

    Lightning registers ``ddp_comm_hook`` on CUDA only, so the callback registers it on the CPU
    wrapper itself before the first step.

    Returns:
        The callback; ``calls`` is the number of gradient buckets all-reduced, ``wrapper`` the name of the
        wrapper's class during training.
    """
    import lightning as L

    class CountAllReduce(L.Callback):
        def __init__(self) -> None:
            self.calls = 0
            self.wrapper = ""

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            # no annotations: DDP checks them against dist.GradBucket, and they are strings in this module
            def hook(state, bucket):
                self.calls += 1
                tensor = bucket.buffer().div_(torch.distributed.get_world_size())
                fut = torch.distributed.all_reduce(tensor, async_op=True).get_future()
                return fut.then(lambda f: f.value()[0])

            self.wrapper = type(trainer.strategy.model).__name__
            trainer.strategy.model.register_comm_hook(None, hook)

    return CountAllReduce()


def main(argv: list[str]) -> int:
    """Train on two CPU processes and write this rank's results.

    Args:
        argv: ``[OUT_DIR]`` or ``[OUT_DIR, STEPS]``.

    Returns:
        The exit status: 0, or 1 on rank 0 if the rank-1 process failed.
    """
    import lightning as L

    from torchvat.core import perturbation

    torch.set_num_threads(1)
    perturbation._random_unit = deterministic_start
    out = Path(argv[0])
    steps = int(argv[1]) if len(argv) > 1 else STEPS
    model = make_model()
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    module = recording_module(model, **HPARAMS)
    counter = allreduce_counter()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[counter],
    )
    trainer.fit(module, train_dataloaders=make_loaders())
    rank = trainer.global_rank
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "rank": rank,
            "world_size": trainer.world_size,
            "distributed_world_size": torch.distributed.get_world_size(),
            "backend": torch.distributed.get_backend(),
            "global_step": trainer.global_step,
            "initial": initial,
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "parameter_names": [k for k, _ in model.named_parameters()],
            "ddp_wrapper": counter.wrapper,
            "allreduce_calls": counter.calls,
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "local_logs": module.local_logs,
            "batches": module.batches,
            "eps": module.method.eps,
        },
        out / f"rank{rank}.pt",
    )
    trainer.strategy.barrier("saved")
    torch.distributed.destroy_process_group()
    if rank == 0:
        children = getattr(trainer.strategy.launcher, "procs", [])
        codes = [p.wait(timeout=60) for p in children]
        if any(codes):
            print(f"rank-1 process failed with exit status {codes}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
