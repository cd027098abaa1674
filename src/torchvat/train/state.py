"""The trainer's resumable state: the checks a saved state passes before it is loaded, and each process's part.

:meth:`Trainer.state_dict <torchvat.train.Trainer.state_dict>` gathers the state of the objects
that own one (model, optimizer, schedule, samplers, generators, metric accumulators, collapse
monitor); the functions here check a saved state against the trainer that loads it, so a
refused state leaves the trainer as it was.

In a distributed run most of the state is the same on every process (weights, optimizer,
schedule, the samplers' one global stream, history), but some is each process's own: its
global generators (dropout masks), the method's generator (VAT's random starts), the
augmentation's generator and its metric accumulators. :func:`process_state` captures that part;
a checkpoint holds one per rank under ``"ranks"`` (gathered to rank 0, which writes the one file),
and :func:`restore_process_state` gives each process its own back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

from torchvat.train.checkpoint import get_rng_state, set_rng_state

__all__ = [
    "PROCESS_KEYS",
    "STATE_FORMAT",
    "check_saved_model",
    "check_state",
    "process_state",
    "restore_process_state",
    "sampler_state",
]

logger = logging.getLogger(__name__)

#: the version of the layout of ``Trainer.state_dict`` (2: every process's own state under ``"ranks"``)
STATE_FORMAT = 2

#: the keys of one process's own state (:func:`process_state`), each also at the top level of a
#: trainer state (rank 0's there, as in states written before ``"ranks"``)
PROCESS_KEYS = ("rng", "generator", "augment", "accumulators")


def process_state(trainer: Any) -> dict[str, Any]:
    """The part of the trainer's state that is this process's own.

    Args:
        trainer: The :class:`~torchvat.train.Trainer` (typed loosely: this module sits below it).

    Returns:
        ``{"rank", "rng", "generator", "augment", "accumulators"}``: the global generators (Python,
        NumPy, PyTorch's CPU and device generators: dropout masks), the method's generator, the
        augmentation's state (``None`` without ``state_dict``) and the metric accumulators, as
        tensors and plain containers (loadable with ``weights_only=True``).
    """
    augment: Any = trainer.augment  # a function, optionally with state_dict (checked by hasattr)
    return {
        "rank": trainer.rank,
        "rng": get_rng_state(trainer.device),
        "generator": trainer.generator.get_state(),
        "augment": augment.state_dict() if hasattr(augment, "state_dict") else None,
        "accumulators": {"log": trainer._log_acc.state_dict(), "eval": trainer._eval_acc.state_dict()},
    }


def _own_state(state: Mapping[str, Any], rank: int, world_size: int) -> tuple[Mapping[str, Any], bool]:
    """This process's part of a saved state, and whether it is this process's own."""
    saved_world = int(state.get("world_size", 1))
    ranks = state.get("ranks")
    if isinstance(ranks, list | tuple) and len(ranks) == saved_world == world_size:
        return ranks[rank], True
    top = {key: state.get(key) for key in PROCESS_KEYS}  # rank 0's
    return top, rank == 0


def restore_process_state(trainer: Any, state: Mapping[str, Any]) -> bool:
    """Give this process its own saved generators, augmentation state and metric accumulators.

    A state written by as many processes as this run has (its ``"ranks"`` holds one part per
    rank) gives each process its own part: the resumed run continues every random stream and is
    bitwise the uninterrupted one. Otherwise every process takes rank 0's part, which only rank
    0 continues exactly; the caller reseeds the other processes' generators. Rank 0 logs why:
    a state written before per-process parts were saved, or by another number of processes.

    Args:
        trainer: The :class:`~torchvat.train.Trainer` loading ``state`` (checked by :func:`check_state`).
        state: The saved state.

    Returns:
        Whether this process continues its own saved streams (else the caller reseeds it).
    """
    own, exact = _own_state(state, trainer.rank, trainer.world_size)
    trainer.generator.set_state(own["generator"])
    set_rng_state(own["rng"], trainer.device)
    augment: Any = trainer.augment  # a function, optionally with the state methods checked by hasattr
    if own.get("augment") is not None and hasattr(augment, "load_state_dict"):
        augment.load_state_dict(own["augment"])
    trainer._log_acc.load_state_dict(own["accumulators"]["log"], trainer.device)
    trainer._eval_acc.load_state_dict(own["accumulators"]["eval"], trainer.device)
    saved_world = int(state.get("world_size", 1))
    if trainer.rank == 0 and trainer.world_size > 1 and not state.get("ranks"):
        logger.warning(
            "torchvat: the checkpoint holds rank 0's random state only (written before every process's "
            "state was saved): processes other than rank 0 reseed their generators from (seed, rank, step), "
            "so this resumed run is a valid continuation, not bitwise the uninterrupted one"
        )
    elif trainer.rank == 0 and saved_world != trainer.world_size:
        logger.warning(
            "torchvat: the checkpoint was written by %d process(es) and is resumed by %d: the weights, "
            "optimizer, schedule and data stream continue exactly (with the new global batch size); rank "
            "0's random state continues, and the other processes reseed from (seed, rank, step)",
            saved_world,
            trainer.world_size,
        )
    return exact


def sampler_state(saved: Mapping[str, Any], saved_world: int, world_size: int) -> dict[str, Any]:
    """A sampler state written with another number of processes, for this trainer's stream.

    The stream's position (epoch, position in the epoch's permutation) does not depend on
    the batch size; with another world size the global batch size changes, so the saved
    one is replaced (the per-process batch size of the config is what is kept).
    """
    state = dict(saved)
    if saved_world != world_size:
        state["batch_size"] = int(state["batch_size"]) // saved_world * world_size
    return state


def check_state(trainer: Any, state: Mapping[str, Any]) -> None:
    """Every check of ``Trainer.load_state_dict``, made before it changes anything.

    Args:
        trainer: The :class:`~torchvat.train.Trainer` loading ``state`` (typed loosely: this
            module sits below the trainer).
        state: The saved state.

    Raises:
        ValueError: If the state belongs to another method, data size, model, optimizer or batch size.
    """
    if state.get("method") != trainer.method.name:
        raise ValueError(
            f"checkpoint was written by method {state.get('method')!r}, but this trainer runs {trainer.method.name!r}"
        )
    required = ("step", "model", "optimizer", "schedule", "rng", "generator", "samplers", "history", "best")
    missing = [k for k in (*required, "accumulators", "collapse_streak") if k not in state]
    if missing:
        raise ValueError(f"checkpoint is not a trainer state (Trainer.state_dict()): it has no {missing}")
    saved_config = state.get("config") or {}
    for name in ("optimizer", "batch_size", "unlabeled_batch_size"):  # the saved state needs them
        if name in saved_config and saved_config[name] != getattr(trainer.config, name):
            raise ValueError(
                f"checkpoint was written with {name}={saved_config[name]!r}, but this trainer has "
                f"{name}={getattr(trainer.config, name)!r}; a resumed run keeps the saved {name} "
                "(its optimizer state and data streams depend on it): use the saved value or start a new run"
            )
    saved_world = int(state.get("world_size", 1))
    ranks = state.get("ranks")
    if ranks is not None:
        if not isinstance(ranks, list | tuple) or len(ranks) != saved_world:
            raise ValueError(
                f"checkpoint's 'ranks' must hold one state per process ({saved_world}), got "
                f"{len(ranks) if isinstance(ranks, list | tuple) else type(ranks).__name__}"
            )
        for part in ranks:
            lacking = [k for k in PROCESS_KEYS if not isinstance(part, Mapping) or k not in part]
            if lacking:
                raise ValueError(f"checkpoint's 'ranks' has a process state without {lacking}")
    samplers = state["samplers"]
    for split, sampler in (("labeled", trainer.labeled_sampler), ("unlabeled", trainer.unlabeled_sampler)):
        saved = samplers.get(split)
        x = getattr(trainer, f"x_{split}")
        have = f"x_{split} has {int(x.shape[0])}" if x is not None else f"x_{split} is None or empty"
        if saved is None and x is None:
            continue
        if saved is None or x is None or int(saved["n"]) != int(x.shape[0]):
            rows = "no" if saved is None else int(saved["n"])
            raise ValueError(
                f"checkpoint has {rows} {split} rows, {have}; a resumed run needs the data it was saved "
                "with (its data streams index them): pass the same data or start a new run"
            )
        sampler.check_state_dict(sampler_state(saved, saved_world, trainer.world_size))
    check_saved_model(trainer.model, state["model"])
    saved_groups = state["optimizer"].get("param_groups", [])
    sizes = [len(g["params"]) for g in saved_groups]
    own_sizes = [len(g["params"]) for g in trainer.optimizer.param_groups]
    if sizes != own_sizes:
        raise ValueError(
            f"checkpoint's optimizer has parameter groups of {sizes} parameters, but this trainer's optimizer "
            f"has {own_sizes}"
        )


def check_saved_model(model: nn.Module, saved: Mapping[str, Any]) -> None:
    """The saved weights fit ``model``: the same names and shapes (as ``load_state_dict`` strictly needs)."""
    own = model.state_dict()
    problems = []
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    if missing:
        problems.append(f"the checkpoint lacks {missing[:5]}" + (" ..." if len(missing) > 5 else ""))
    if unexpected:
        problems.append(f"the model has no {unexpected[:5]}" + (" ..." if len(unexpected) > 5 else ""))
    for key, value in own.items():
        shape, saved_shape = getattr(value, "shape", None), getattr(saved.get(key), "shape", None)
        if key in saved and shape is not None and saved_shape is not None and tuple(shape) != tuple(saved_shape):
            problems.append(f"{key!r} has shape {tuple(saved_shape)} in the checkpoint, {tuple(shape)} here")
            break
    if problems:
        raise ValueError(f"checkpoint's model does not fit this trainer's model: {'; '.join(problems)}")
