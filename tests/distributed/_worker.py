"""One process of a distributed test job; run as a script by ``launch`` (see conftest.py).

Usage: ``python _worker.py SCENARIO OUT_DIR [JSON_OPTIONS]`` with the environment ``torchrun``
would set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). The
trainer initializes the gloo process group itself, in ``Trainer.setup`` (not in its constructor).
Each process writes ``rank{R}.pt``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

from torchvat.core import (
    l2_normalize,
    perturbation,
)
from torchvat.train import Callback, NonFiniteLossError, Supervised, Trainer
from torchvat.train.distributed import destroy_distributed, wrap_model


def deterministic_start(t: torch.Tensor, mask: torch.Tensor | None, generator: object) -> torch.Tensor:
    """A random-start replacement that depends on the rows only (same on any process layout)."""
    d = torch.cos(3.0 * t + 1.0)
    return l2_normalize(d if mask is None else d * mask)


def make_data(n: int = 240, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    y = ((x[:, 0] * x[:, 1]) > 0).long()
    return {
        "x_labeled": x[:24],
        "y_labeled": y[:24],
        "x_unlabeled": x[: 2 * n // 3],
        "x_test": x[2 * n // 3 :],
        "y_test": y[2 * n // 3 :],
    }


def make_model(*, batch_norm: bool = False, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(2, 16)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(16))
    layers.append(nn.Tanh())
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(16, 2))
    return nn.Sequential(*layers)


class NaNAt(Supervised):
    """Supervised training whose loss is NaN at one iteration, on every process."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.calls, self.at = 0, at

    def loss_terms(self, model, batch, clean):
        self.calls += 1
        terms = super().loss_terms(model, batch, clean)
        if self.calls == self.at:
            terms["ce"] = terms["ce"] * float("nan")
        return terms


class Record(Callback):
    """Remember which hooks ran and every logged training line."""

    def __init__(self) -> None:
        self.logs: list[dict[str, float]] = []

    def on_step_end(self, **kwargs: object) -> None:
        logs = kwargs.get("logs")
        if logs:
            self.logs.append(dict(logs))  # type: ignore[arg-type]


def main() -> None:
    torch.set_num_threads(1)
    scenario, out = sys.argv[1], Path(sys.argv[2])
    options = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    if options.pop("deterministic_start", False):
        perturbation._random_unit = deterministic_start
    model_options = options.pop("model", {})
    if options.pop("seed_per_rank", False):  # another initialization on every process (DDP broadcasts rank 0's)
        model_options["seed"] = int(os.environ["RANK"])
    resume = options.pop("resume", None)
    nan_at = options.pop("nan_at", None)
    if nan_at is not None:
        options["method"] = NaNAt(nan_at)
    trainer = Trainer(make_model(**model_options), **make_data(), progress=False, **options)
    rank = trainer.rank
    built = {"initialized": torch.distributed.is_initialized(), "ddp": trainer.ddp is not None}
    trainer.setup()  # the group and the DDP wrapper, made here so that the hook can be registered before fit
    calls = {"n": 0}
    if trainer.ddp is not None:

        def counting_allreduce(state, bucket):
            calls["n"] += 1
            tensor = bucket.buffer().div_(torch.distributed.get_world_size())
            fut = torch.distributed.all_reduce(tensor, async_op=True).get_future()
            return fut.then(lambda f: f.value()[0])

        trainer.ddp.register_comm_hook(None, counting_allreduce)
    record = Record()
    trainer.callbacks.append(record)
    nonfinite = None
    try:
        result = trainer.fit(resume=resume)
    except NonFiniteLossError as err:
        nonfinite, result = {"iteration": err.iteration, "step": trainer.step}, None
    try:  # SyncBatchNorm is CUDA-only: asking for it on CPU must fail clearly
        wrap_model(make_model(batch_norm=True), torch.device("cpu"), sync_batchnorm=True)
        sync_bn_error = ""
    except ValueError as err:
        sync_bn_error = str(err)
    torch.save(
        {
            "scenario": scenario,
            "rank": rank,
            "world_size": trainer.world_size,
            "initialized_process_group": trainer.initialized_process_group,
            "initialized_at_construction": built["initialized"],
            "ddp_at_construction": built["ddp"],
            "params": {k: v.detach().clone() for k, v in trainer.model.named_parameters()},
            "buffers": {k: v.detach().clone() for k, v in trainer.model.named_buffers()},
            "ema": None if trainer.ema is None else {k: v.clone() for k, v in trainer.ema.module.state_dict().items()},
            "allreduce_calls": calls["n"],
            "history": trainer.history if result is None else result.history,
            "logs": record.logs,
            "paths": dict(trainer.paths if result is None else result.paths),
            "steps": trainer.step if result is None else result.steps,
            "nonfinite": nonfinite,
            "labeled_state": trainer.labeled_sampler.state_dict(),
            "sync_bn_error": sync_bn_error,
        },
        out / f"rank{rank}.pt",
    )
    destroy_distributed(wait=True)  # no process tears its gloo connections down while another still works


if __name__ == "__main__":
    main()
