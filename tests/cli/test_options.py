"""Options of the data and the model are checked against what receives them; errors name the option."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from torchvat.cli import main
from torchvat.cli.train import no_held_out_hint
from torchvat.runs import DataSpec, ModelSpec, RunConfig, UsageError, build_run_model


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    y[20:] = -1
    np.savez(tmp_path / "d.npz", X=x, y=y)
    return tmp_path / "d.npz"


def _error(capsys, args):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("torchvat: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('download = "false"', "data.download (--download) must be true or false, got 'false'"),
        ("download = 1", "data.download (--download) must be true or false, got 1"),
        ("path = 3", "data.path (--data) must be a string, got 3"),
        ("root = [1]", r"data.root (--data-root) must be a string, got [1]"),
        ("dataset = 7", "data.dataset (--dataset) must be a string, got 7"),
        ("options = 3", "data.options must be a table of loader options (--data-option KEY=VALUE), got int 3"),
    ],
)
def test_data_section_values_are_checked(tmp_path, capsys, section, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[data]\n{section}\n")
    with pytest.raises(UsageError, match=f"^{re.escape(message)}$"):
        RunConfig.from_toml(cfg)
    assert message in _error(capsys, ["train", "--config", str(cfg), "--out", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()


def test_a_string_download_never_reaches_the_loader(tmp_path, capsys, monkeypatch):
    from torchvat.cli.train import train_run

    # the module that loads the data for the command (not a copy a doctest collection may import)
    build = train_run.__globals__["load_run_data"].__globals__
    monkeypatch.setitem(build, "load_dataset", lambda *a, **k: pytest.fail("the loader was called"))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\ndataset = "mnist"\ndownload = "false"\nroot = "{tmp_path / "none"}"\n')
    assert "must be true or false, got 'false'" in _error(capsys, ["train", "--config", str(cfg), "--iters", "3"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--dataset", "moons", "--data-option", "n_samples=abc"],
            "--data-option / [data] options: option 'n_samples' of dataset 'moons' must be an integer, got 'abc'",
        ),
        (
            ["--dataset", "digits", "--data-option", "n_val=0.5"],
            "option 'n_val' of dataset 'digits' must be an integer, got 0.5",
        ),
        (
            ["--dataset", "moons", "--data-option", "seed=3"],
            "--data-option / [data] options: 'seed' is set by --data-seed (or [data] seed), not as an option of "
            "dataset 'moons'",
        ),
        (
            ["--data", "NPZ", "--data-option", "bogus=1"],
            "--data-option / [data] options: a .npz file (torchvat.data.load_npz) takes the options ['n_classes', "
            "'val_fraction', 'unlabeled_includes_labeled', 'allow_nonfinite', 'name'], got ['bogus'] besides",
        ),
        (
            ["--data", "NPZ", "--data-option", "seed=3"],
            "'seed' is set by --data-seed (or [data] seed), not as an option of a .npz file",
        ),
        (
            ["--data", "NPZ", "--data-option", "val_fraction=big"],
            "option 'val_fraction' of a .npz file (torchvat.data.load_npz) must be a number, got 'big'",
        ),
        (
            ["--model", "mlp", "--model-option", "hidden=64"],
            "--model-option / [model] kwargs: model 'mlp' (MLP) takes the options ['hidden_sizes', 'activation', "
            "'batch_norm', 'bn_trim', 'top_bn', 'dropout', 'noise_std'], got ['hidden'] besides",
        ),
        (
            ["--model", "mlp", "--model-option", "hidden_sizes=64"],
            "option 'hidden_sizes' of model 'mlp' (MLP) must be a list of values that are each an integer, got 64",
        ),
        (
            ["--model", "conv-small", "--model-option", "in_channels=3"],
            "--model-option / [model] kwargs: 'in_channels' is set by the data's input shape, not as an option of "
            "model 'conv-small' (ConvSmall)",
        ),
        (
            ["--model-option", "dropout=high"],
            "option 'dropout' of model 'small-mlp' (MLP) must be a number, got 'high'",
        ),
    ],
)
def test_loader_and_model_options_are_checked_against_their_signature(tmp_path, capsys, npz, args, message):
    args = [str(npz) if a == "NPZ" else a for a in args]
    out = tmp_path / "r"
    assert message in _error(capsys, ["train", *args, "--iters", "3", "--out", str(out), "--no-progress"])
    assert not out.exists()


def test_model_kwargs_must_be_a_table(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\nkwargs = 3\n")
    message = "model.kwargs must be a table of the model's constructor arguments (--model-option KEY=VALUE), got int 3"
    with pytest.raises(UsageError, match=r"^model\.kwargs must be a table .* got int 3$"):
        RunConfig.from_toml(cfg)
    assert message in _error(capsys, ["train", "--config", str(cfg), "--iters", "3"])
    cfg.write_text('[model]\nname = "resnet"\n')
    assert "--model must be one of conv-large, conv-small, mlp" in _error(capsys, ["train", "--config", str(cfg)])


def test_valid_options_pass_the_checks(tmp_path):
    DataSpec(dataset="digits", options={"n_val": 10, "as_images": True}).validate()
    DataSpec(dataset="cifar10", options={"n_val": 10, "balanced": False}).validate()
    DataSpec(dataset=None, path=str(tmp_path), options={"size": [16, 16], "val_fraction": 1}).validate()
    ModelSpec("mlp", {"hidden_sizes": [16, 8], "dropout": 0, "activation": "relu"}).validate()
    _, name = build_run_model(ModelSpec(None, {"dropout": 0.1}), (2,), 2)
    assert name == "small-mlp"
    with pytest.raises(UsageError, match=r"option 'size' of an image folder .* must be an integer or a list of 2"):
        DataSpec(dataset=None, path=str(tmp_path), options={"size": "big"}).validate()


def test_the_download_hint_is_given_for_missing_data_only(tmp_path, capsys):
    err = _error(capsys, ["train", "--iters", "3", "--out", "/proc/torchvat-cannot-exist/run"])
    assert "output directory" in err and "--download" not in err
    empty = tmp_path / "empty"
    err = _error(capsys, ["train", "--dataset", "mnist", "--data-root", str(empty), "--out", str(tmp_path / "r")])
    assert "use --download to fetch it (torchvision) or --data-root DIR" in err
    assert not (tmp_path / "r").exists()
    missing = tmp_path / "nope.npz"
    err = _error(capsys, ["train", "--data", str(missing), "--out", str(tmp_path / "r")])
    assert f"data file not found: {missing}" in err and "--download" not in err  # not a torchvision set


def test_the_resume_of_a_missing_checkpoint_gets_no_download_hint(tmp_path, capsys):
    args = ["train", "--resume", str(tmp_path / "x" / "last.pt"), "--out", str(tmp_path / "y"), "--dataset", "mnist"]
    err = _error(capsys, args)  # a branch from a checkpoint that is not there
    assert "checkpoint to resume not found" in err and "--download" not in err


def test_compile_help_names_the_accepted_forms(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--compile alone uses the default mode, --compile MODE one of default, reduce-overhead" in text
    assert "--no-compile (the default)" in text and "False, True" not in text
    for form in (["--compile"], ["--compile", "max-autotune"], ["--no-compile"]):
        from torchvat.cli.main import build_parser

        build_parser().parse_args(["train", *form])
    assert main(["train", "--compile", "false"]) == 2
    assert "invalid choice: 'false'" in capsys.readouterr().err


def test_the_no_held_out_hint_fits_the_kind_of_data(tmp_path):
    (tmp_path / "imgs").mkdir()
    npz = no_held_out_hint(DataSpec(dataset=None, path=str(tmp_path / "a.npz")))
    csv = no_held_out_hint(DataSpec(dataset=None, path=str(tmp_path / "a.csv")))
    images = no_held_out_hint(DataSpec(dataset=None, path=str(tmp_path / "imgs")))
    for hint in (npz, csv, images):
        assert hint.startswith("To evaluate, hold out labeled rows with --data-option val_fraction=0.2, or ")
    assert npz.endswith("or add X_test and y_test to the .npz.")
    assert csv.endswith("or give a labeled test file with --data-option test_path=FILE.csv.") and ".npz" not in csv
    assert images.endswith("with --data-option test_dir=DIR.") and ".npz" not in images
    assert (
        no_held_out_hint(DataSpec(dataset="digits")) == "To evaluate, hold out labeled rows with --data-option n_val=N."
    )


@pytest.mark.filterwarnings("ignore:y contains no unlabeled rows")  # every image is labeled
def test_an_image_folder_run_without_held_out_data_says_test_dir(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(8):
        c = ("cat", "dog")[i % 2]
        (tmp_path / "pets" / c).mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((12, 12, 3)) * 255).astype(np.uint8)).save(tmp_path / "pets" / c / f"{i}.png")
    args = ["train", "--data", str(tmp_path / "pets"), "--model", "mlp", "--out", str(tmp_path / "r")]
    assert main([*args, "--iters", "4", "--batch-size", "4", "--unlabeled-batch-size", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "no held-out data: nothing evaluated." in printed and "--data-option test_dir=DIR" in printed
    assert "X_test" not in printed and "test_dir=DIR" in (tmp_path / "r" / "report.md").read_text()


def test_a_model_option_another_model_derives_is_an_unknown_option_of_this_one():
    # depth is derived only by wrn-28-2's name; MLP has no such parameter
    with pytest.raises(UsageError) as info:
        ModelSpec("mlp", {"depth": 3}).validate()
    assert str(info.value) == (
        "--model-option / [model] kwargs: model 'mlp' (MLP) takes the options ['hidden_sizes', 'activation', "
        "'batch_norm', 'bn_trim', 'top_bn', 'dropout', 'noise_std'], got ['depth'] besides"
    )
    with pytest.raises(UsageError, match=r"'depth' is set by the model name, not as an option of model 'wrn-28-2'"):
        ModelSpec("WRN_28_2", {"depth": 16}).validate()
    with pytest.raises(UsageError, match=r"'in_features' is set by the data's input shape, .* model 'small-mlp'"):
        ModelSpec(None, {"in_features": 3}).validate("small-mlp")


def test_dataset_aliases_take_the_options_of_their_dataset():
    DataSpec(dataset="Two_Moons", options={"n_samples": 50}).validate()
    DataSpec(dataset="CIFAR-10", options={"balanced": False}).validate()
    with pytest.raises(UsageError, match=r"'name' is set by the dataset, not as an option of dataset 'cifar10'"):
        DataSpec(dataset="cifar-10", options={"name": "svhn"}).validate()
    with pytest.raises(UsageError, match=r"^unknown dataset 'two moons'; known datasets: moons, circles"):
        DataSpec(dataset="two moons").validate()
