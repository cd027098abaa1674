"""``load_run``: a trained model and its data, rebuilt from a run folder."""

from __future__ import annotations

import json
import os
from typing import Any

from torch import nn

from torchvat.data import (
    SemiSupervisedData,
)
from torchvat.runs.build import build_run_model, load_run_data_and_transform
from torchvat.runs.config import DataSpec, ModelSpec
from torchvat.runs.errors import UsageError
from torchvat.runs.folders import RUN_FILE, find_checkpoint
from torchvat.train.checkpoint import (
    load_checkpoint,
)

__all__ = ["load_run"]


def load_run(
    path: str | os.PathLike[str], *, device: str = "cpu"
) -> tuple[nn.Module, SemiSupervisedData, dict[str, Any]]:
    """Rebuild a trained model and its data from a checkpoint and the ``run.json`` beside it.

    Args:
        path: A checkpoint file or a run folder.
        device: Where to put the model.

    Returns:
        The model (eval mode, weights loaded), the data (prepared as in training) and the
        run description (``run.json`` plus ``checkpoint``, ``step``, ``eps``, ``norm`` and ``transform``, the
        fitted preprocessing or ``None``).

    Raises:
        FileNotFoundError: If the checkpoint or its ``run.json`` is missing.
        UsageError: If ``run.json`` is unreadable.
    """
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
    data, transform = load_run_data_and_transform(spec, int(info.get("seed", 0)))
    model, _ = build_run_model(model_spec, data.input_shape, data.n_classes)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    info = {
        **info,
        "checkpoint": str(ckpt),
        "step": int(state.get("step", 0)),
        "eps": state.get("eps", info.get("eps")),
        "norm": (state.get("config") or {}).get("norm", "l2"),
        "transform": transform,  # the fitted preprocessing (None for none): its inverse gives the data's own space
    }
    return model, data, info
