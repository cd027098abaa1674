from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import torchvat
from torchvat.cli import main
from torchvat.train import Callback, Trainer


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


@contextlib.contextmanager
def terminal_logging():
    """Logging as ``torchvat`` in a terminal finds it: no handler yet, so main() installs its own (on stderr)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()  # pytest's own handler comes back below
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_a_collapse_warning_is_shown_once(tmp_path, capsys):
    args = ["train", "--iters", "100", "--eval-every", "25", "--out", str(tmp_path / "run"), "--no-progress"]
    with terminal_logging():
        assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("the regularizer may be collapsing") == 1, err
    assert "torchvat: test_error rose while the training loss fell over 3 consecutive evaluations" in err
    assert not logging.getLogger("torchvat.train.trainer").filters  # main() leaves the logger as it found it


@pytest.mark.filterwarnings("default")  # the CLI's own display of warnings, as a user sees it
def test_a_library_warning_other_than_a_collapse_is_still_shown_once(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    np.savez(tmp_path / "all.npz", X=x, y=(x[:, 0] > 0).astype(np.int64))  # every row labeled: from_arrays warns
    args = ["train", "--data", str(tmp_path / "all.npz"), "--method", "supervised", "--iters", "4", "--no-progress"]
    with terminal_logging():
        assert main([*args, "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert err.count("torchvat: warning: y contains no unlabeled rows") == 1, err


class _SendSigterm(Callback):
    def on_step_end(self, **kwargs):
        if kwargs["step"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)


def test_the_sigterm_notice_is_printed_once(tmp_path, capsys, monkeypatch):
    from torchvat.cli.train import train_run

    run = train_run.__globals__  # the module the command runs (not a copy a doctest collection may import)
    monkeypatch.setitem(run, "Trainer", functools.partial(Trainer, callbacks=[_SendSigterm()]))
    out = tmp_path / "run"
    with terminal_logging():
        assert main(["train", "--iters", "50", "--out", str(out), "--no-progress"]) == 143
    err = capsys.readouterr().err
    assert err.count("SIGTERM received") == 1, err
    assert "torchvat train: SIGTERM received, stopped after iteration 3 of 50" in err
    assert f"Resume with: torchvat train --resume --out {out}" in err
    assert not logging.getLogger("torchvat.train.trainer").filters
