"""The warning that one raw column holds most of the variance is shown only where it applies."""

from __future__ import annotations

import numpy as np
import pytest

from torchvat.cli import main


def _dominant_column_npz(path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    x[:, 2] *= 1000.0
    y = np.where(np.arange(60) % 3 == 2, -1, (x[:, 0] > 0).astype(np.int64))
    np.savez(path, X=x, y=y, X_test=x[:20], y_test=(x[:20, 0] > 0).astype(np.int64))


@pytest.mark.filterwarnings("default")  # the CLI's own display of warnings, as a user sees it
@pytest.mark.parametrize(("preprocess", "shown"), [("none", True), ("standardize", False), ("zca", False)])
def test_the_scale_warning_is_shown_only_for_raw_columns(tmp_path, capsys, preprocess, shown):
    _dominant_column_npz(tmp_path / "d.npz")
    args = ["train", "--data", str(tmp_path / "d.npz"), "--preprocess", preprocess, "--iters", "3"]
    assert main([*args, "--no-progress", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert ("the column X[:, 2] holds" in err) is shown, err
    # evaluating the run reloads its data: the warning was given when it trained
    assert main(["evaluate", str(tmp_path / "run"), "--eps", "0,0.1", "--max-examples", "10"]) == 0
    err = capsys.readouterr().err
    assert "holds" not in err, err


def _near_constant_column_npz(path) -> None:
    """Three Gaussian columns and a fourth that is 0 in every row but one: harmless raw, inflated standardized."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4)).astype(np.float32)
    x[:, 3] = 0.0
    x[5, 3] = 1.0
    y = np.where(np.arange(400) % 4 == 0, (x[:, 0] > 0).astype(np.int64), -1)
    np.savez(path, X=x, y=y, X_test=x[:20], y_test=(x[:20, 0] > 0).astype(np.int64))


@pytest.mark.filterwarnings("default")
@pytest.mark.parametrize(("preprocess", "shown"), [("none", False), ("standardize", True)])
def test_standardized_near_constant_columns_are_named_after_preprocessing(tmp_path, capsys, preprocess, shown):
    _near_constant_column_npz(tmp_path / "d.npz")
    args = ["train", "--data", str(tmp_path / "d.npz"), "--preprocess", preprocess, "--iters", "3"]
    assert main([*args, "--no-progress", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert ("after --preprocess standardize: 1 of the 4 feature columns (X[:, 3]) hold values" in err) is shown, err
    assert main(["evaluate", str(tmp_path / "run"), "--eps", "0,0.1", "--max-examples", "10"]) == 0
    assert "hold values" not in capsys.readouterr().err  # reloaded: warned when it trained
