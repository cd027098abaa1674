from __future__ import annotations

import subprocess
import sys

import pytest

import torchvat
from torchvat.cli import main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"torchvat {torchvat.__version__}"


def test_no_subcommand_prints_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for sub in ("demo", "train", "compare", "evaluate", "visualize", "env"):
        assert sub in out


def test_unknown_subcommand_is_one_line_usage_error(capsys):
    assert main(["fly"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("torchvat: error:") and err.count("\n") == 1


def test_unknown_dataset_lists_known_ones(capsys):
    assert main(["train", "--dataset", "imagenet", "--iters", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("torchvat: error: unknown dataset 'imagenet'")
    assert "moons" in err and "cifar10" in err and "Traceback" not in err


def test_missing_data_file_names_path(tmp_path, capsys):
    missing = tmp_path / "nope.npz"
    assert main(["train", "--data", str(missing), "--iters", "5", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and err.startswith("torchvat: error:")


def test_out_of_range_option(capsys):
    assert main(["train", "--labels", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err
    assert main(["train", "--batch-size", "0", "--iters", "5"]) == 2
    assert "batch_size must be an integer >= 1, got 0" in capsys.readouterr().err


def test_debug_reraises(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["train", "--debug", "--data", str(tmp_path / "x.csv"), "--iters", "5"])


def test_python_dash_m(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "torchvat", "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"torchvat {torchvat.__version__}"


def test_train_help_shows_values_not_python_markup(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--norm {l2,linf}" in text and "--optimizer {adam,sgd}" in text and "--device DEVICE" in text
    assert ":func:" not in text and "T_NORM" not in text and "None derives" not in text
