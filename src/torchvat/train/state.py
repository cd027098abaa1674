"""The trainer's resumable state: the checks a saved state passes before it is loaded.

:meth:`Trainer.state_dict <torchvat.train.Trainer.state_dict>` gathers the state of the objects
that own one (model, optimizer, schedule, samplers, generators, metric accumulators, collapse
monitor); the functions here check a saved state against the trainer that loads it, so a
refused state leaves the trainer as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

__all__ = ["STATE_FORMAT", "check_saved_model", "check_state", "sampler_state"]

#: the version of the layout of ``Trainer.state_dict``
STATE_FORMAT = 1


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
