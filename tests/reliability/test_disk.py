"""Full disk and unwritable output directories: clear errors, before training where possible."""

from __future__ import annotations

import errno

import pytest
import torch

import torchvat.train.checkpoint as ckpt
from torchvat.cli.main import main
from torchvat.train import Trainer, load_checkpoint

from ._helpers import make_mlp, small


def test_too_little_free_space_is_detected_before_training(moons, tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda path: type("U", (), {"free": 10_000})())
    trainer = Trainer(make_mlp(0), moons, method="vat", **small(out_dir=str(tmp_path / "run")))
    with pytest.raises(OSError, match=r"not enough free space in output directory .*run'.*MiB are free") as info:
        trainer.fit()
    assert info.value.errno == errno.ENOSPC
    assert trainer.step == 0
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []  # nothing written


def test_unwritable_output_directory_is_detected_before_training(moons, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(ckpt.tempfile, "mkstemp", refuse)
    trainer = Trainer(make_mlp(0), moons, method="vat", **small(out_dir=str(tmp_path / "run")))
    with pytest.raises(PermissionError, match=r"output directory .*run' is not writable: Permission denied"):
        trainer.fit()
    assert trainer.step == 0


def test_output_path_that_is_a_file(moons, tmp_path):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        trainer = Trainer(make_mlp(0), moons, method="vat", **small(out_dir=str(out)))
        with pytest.raises(NotADirectoryError, match=r"output directory .*file"):
            trainer.fit()
        assert trainer.step == 0


def test_cli_output_path_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["train", "--dataset", "moons", "--iters", "2", "--out", str(tmp_path / "file")]) == 2
    assert f"torchvat: error: output directory '{tmp_path / 'file'}' exists and is not a directory" in (
        capsys.readouterr().err
    )


def test_disk_full_during_a_checkpoint_write_keeps_the_last_good_one(moons, tmp_path, monkeypatch):
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if obj.get("step") == 9:  # the third last.pt (no evaluation, so no best.pt, at step 9)
            f.write(b"partial bytes")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    trainer = Trainer(make_mlp(0), moons, method="vat", **small(checkpoint_every=3, out_dir=str(run)))
    with pytest.raises(OSError, match=r"cannot write checkpoint .*last\.pt': No space left on device") as info:
        trainer.fit()
    assert info.value.errno == errno.ENOSPC
    assert trainer.step == 9
    assert load_checkpoint(run / "last.pt")["step"] == 6  # the last good checkpoint, intact
    assert load_checkpoint(run / "last.prev.pt")["step"] == 3
    assert not list(run.glob(".*.tmp"))  # no partial file left
