"""load_run rebuilds the runs earlier versions of torchvat wrote."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import torch

from torchvat.runs import DataSpec, ModelSpec, build_run_model, load_run
from torchvat.train.checkpoint import save_checkpoint


def _run_folder(tmp_path, x, y, *, n_classes, classes):
    """A run folder written by hand: the data file, a checkpoint of a small-mlp and run.json."""
    np.savez(tmp_path / "d.npz", X=x, y=y, X_test=x[:12], y_test=y[:12].clip(0))
    torch.manual_seed(0)
    model, name = build_run_model(ModelSpec("small-mlp"), (x.shape[1],), n_classes)
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint({"model": model.state_dict(), "step": 7}, run / "last.pt")
    info = {
        "torchvat_version": "0.1.0",
        "model": {"name": name, "kwargs": {}},
        "input_shape": [x.shape[1]],
        "n_classes": n_classes,
        "classes": classes,
        "dataset_name": "d",
        "data": dataclasses.asdict(DataSpec(dataset=None, path=str(tmp_path / "d.npz"))),
        "method": "vat",
        "eps": 1.0,
        "seed": 0,
        "config": "config.toml",
    }
    (run / "run.json").write_text(json.dumps(info))
    return run, model.eval()


def _old_run(tmp_path):
    """A run folder as torchvat wrote it when classes were the integers 0..max(y): labels {0, 2, 5}, 6 logits."""
    x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    y = np.array([0, 2, 5, -1] * 15)
    run, model = _run_folder(tmp_path, x, y, n_classes=6, classes=None)
    return run, model, x, y


def test_a_run_trained_on_the_label_values_as_indices_reloads_with_its_own_classes(tmp_path):
    run, saved, x, y = _old_run(tmp_path)
    model, data, info = load_run(run)
    assert info["n_classes"] == data.n_classes == 6 and data.classes is None
    # the labels are the file's values, the indices of the run's 6 logits
    assert sorted(set(data.y_labeled.tolist())) == [0, 2, 5]
    assert data.y_labeled.tolist() == y[y >= 0].tolist()
    assert data.y_test.tolist() == y[:12].clip(0).tolist()
    with torch.no_grad():
        torch.testing.assert_close(model(torch.from_numpy(x)), saved(torch.from_numpy(x)))


def test_reloading_a_run_does_not_repeat_the_scale_warning(tmp_path):
    x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    x[:, 1] *= 1000.0  # one column holds nearly all of the variance: training warned about it
    y = np.array([0, 1, -1] * 20)
    run, _ = _run_folder(tmp_path, x, y, n_classes=2, classes=["0", "1"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, data, _ = load_run(run)
    assert data.n_classes == 2
