"""``load_run``: a trained model and its data, rebuilt from a run folder."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from torchvat import params
from torchvat.data import SemiSupervisedData
from torchvat.runs.build import build_run_model, load_run_data_and_transform
from torchvat.runs.config import DataSpec, ModelSpec
from torchvat.runs.errors import UsageError
from torchvat.runs.folders import RUN_FILE, find_checkpoint
from torchvat.train.checkpoint import load_checkpoint

__all__ = ["load_run"]


def load_run(
    path: str | os.PathLike[str], *, device: str = "cpu", weights: str | None = None
) -> tuple[nn.Module, SemiSupervisedData, dict[str, Any]]:
    """Rebuild a trained model and its data from a checkpoint and the ``run.json`` beside it.

    Args:
        path: A checkpoint file or a run folder.
        device: Where to put the model.
        weights: ``"ema"`` (the moving average of the weights of a run trained with ``--ema``),
            ``"raw"`` (the trained weights themselves) or ``None`` (the default: ``"ema"`` when
            the checkpoint has an average, else ``"raw"``; checkpoints written before the
            average existed have none).

    Returns:
        The model (eval mode, weights loaded), the data (prepared as in training) and the
        run description (``run.json`` plus ``checkpoint``, ``step``, ``eps``, ``norm``, ``weights``
        (the weights loaded: ``"ema"`` or ``"raw"``) and ``transform``, the fitted preprocessing or
        ``None``).

    A run written when a file's classes were the integers ``0..max(y)`` (its ``run.json`` has
    ``classes: null``; labels {0, 2, 5} trained 6 logits) is reloaded as it trained: its data keep
    the label values as class indices, with the run's ``n_classes``.

    Raises:
        FileNotFoundError: If the checkpoint or its ``run.json`` is missing.
        UsageError: If ``run.json`` is unreadable, or its classes do not fit the reloaded data, or
            ``weights="ema"`` for a checkpoint without an average of the weights.
        ValueError: If ``weights`` is not ``"ema"``, ``"raw"`` or ``None``.
    """
    if weights is not None:
        params.check("weights", weights)
    ckpt = find_checkpoint(path)
    info_path = ckpt.parent / RUN_FILE
    if not info_path.is_file():
        raise FileNotFoundError(
            f"{RUN_FILE} not found beside the checkpoint: {info_path} (it is written by `torchvat train`; "
            "a checkpoint written by another program lacks the model and data description)"
        )
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        spec = DataSpec(**info["data"])
        model_spec = ModelSpec(name=info["model"]["name"], kwargs=dict(info["model"].get("kwargs", {})))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise UsageError(f"{info_path} is not a valid run description: {err}") from err
    state = load_checkpoint(ckpt, map_location="cpu")
    averaged = state.get("ema")
    if weights == "ema" and averaged is None:
        raise UsageError(
            f"{ckpt} has no EMA weights: its run was trained without --ema (TrainConfig.ema=None); "
            "evaluate its weights with --weights raw"
        )
    use = weights or ("ema" if averaged is not None else "raw")
    data, transform = load_run_data_and_transform(spec, int(info.get("seed", 0)), reload=True)
    data = _in_the_runs_classes(data, info, info_path)
    model, _ = build_run_model(model_spec, data.input_shape, data.n_classes)
    model.load_state_dict(state["model"] if averaged is None or use == "raw" else averaged["model"])
    recalibrated = state.get("bn_recalibrated")
    if recalibrated and (averaged is None) == (use == "raw"):  # the statistics of the weights evaluated in training
        model.load_state_dict({**model.state_dict(), **recalibrated})
    model.to(device).eval()
    info = {
        **info,
        "checkpoint": str(ckpt),
        "step": int(state.get("step", 0)),
        "eps": state.get("eps", info.get("eps")),
        "norm": (state.get("config") or {}).get("norm", "l2"),
        "weights": use,
        "transform": transform,  # the fitted preprocessing (None for none): its inverse gives the data's own space
    }
    return model, data, info


def _in_the_runs_classes(data: SemiSupervisedData, info: Mapping[str, Any], where: Path) -> SemiSupervisedData:
    """The reloaded data in the classes the run trained on.

    Runs written before a file's classes were the label values present (``classes`` null in
    ``run.json``) trained one logit per integer ``0..max(y)``; their data now come with the values
    present as ``classes`` and labels ``0..len(classes)-1``. The labels are mapped back to the values,
    which were the class indices of those runs' logits.
    """
    saved = info.get("n_classes")
    if info.get("classes") is not None or data.classes is None or saved is None or saved == data.n_classes:
        return data
    try:
        values = torch.tensor([int(c) for c in data.classes])
    except ValueError:
        values = None
    if values is None or int(values.min()) < 0 or int(values.max()) >= int(saved):
        raise UsageError(
            f"{where}: the run trained {saved} classes (classes not named), but its data now have the "
            f"classes {data.classes}, which are not class indices below {saved}"
        )

    def back(y: Tensor) -> Tensor:
        return torch.where(y >= 0, values[y.clamp(min=0)], y)

    def maybe_back(y: Tensor | None) -> Tensor | None:
        return None if y is None else back(y)

    return dataclasses.replace(
        data,
        y_labeled=back(data.y_labeled),
        y_test=maybe_back(data.y_test),
        y_val=maybe_back(data.y_val),
        n_classes=int(saved),
        classes=None,
    )
