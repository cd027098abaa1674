"""The flags of the step schedule, the fractional cosine and the warm-up's shape (issue 18)."""

from __future__ import annotations

import pytest

from torchvat.cli import main
from torchvat.cli.main import build_parser
from torchvat.cli.train import _train_overrides


def test_schedule_flags_parse_into_the_train_config_fields():
    flags = ["--schedule", "step", "--lr-decay", "0.9", "--lr-decay-every", "500", "--warmup-shape", "sigmoid"]
    args = build_parser().parse_args(["train", "--dataset", "moons", *flags, "--cosine-fraction", "0.4375"])
    overrides = _train_overrides(args)
    assert {k: overrides[k] for k in ("schedule", "lr_decay", "lr_decay_every", "warmup_shape", "cosine_fraction")} == {
        "schedule": "step",
        "lr_decay": 0.9,
        "lr_decay_every": 500,
        "warmup_shape": "sigmoid",
        "cosine_fraction": 0.4375,
    }
    args = build_parser().parse_args(["train", "--dataset", "moons", "--lr-decay-every", "none"])
    assert _train_overrides(args)["lr_decay_every"] is None
    # not given: the fields keep their defaults (no override)
    args = build_parser().parse_args(["train", "--dataset", "moons"])
    assert not {"lr_decay", "lr_decay_every", "cosine_fraction", "warmup_shape"} & set(_train_overrides(args))


def test_an_unknown_warmup_shape_is_refused_by_the_parser(capsys):
    assert main(["train", "--dataset", "moons", "--warmup-shape", "cosine"]) == 2
    assert "invalid choice: 'cosine'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--schedule", "step"], "lr_decay_every must be an integer >= 1 with schedule='step', got None"),
        (["--cosine-fraction", "0.9"], "cosine_fraction must be None or a number in (0, 0.5], got 0.9"),
    ],
)
def test_bad_schedule_values_are_usage_errors_naming_the_field(tmp_path, capsys, flags, message):
    assert main(["train", "--dataset", "moons", "--out", str(tmp_path / "r"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
