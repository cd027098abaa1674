"""Damaged, foreign and malicious checkpoint files; fallback to the previous good one."""

from __future__ import annotations

import os
import pickle
import warnings

import pytest
import torch

from torchvat.cli.main import main
from torchvat.train import Trainer, load_checkpoint, save_checkpoint
from torchvat.train.checkpoint import (
    CheckpointError,
    load_latest_checkpoint,
    previous_checkpoints,
    remove_stale_temporaries,
)

from ._helpers import assert_same_state, make_mlp, small


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_tensor_bytes(path):
    data = bytearray(path.read_bytes())
    # the tensors' bytes sit in the middle of the zip archive; flipping them keeps it readable
    start = len(data) // 2
    for i in range(start, start + 64):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _empty(path):
    path.write_bytes(b"")


def _text(path):
    path.write_text("step = 3\n")


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (_truncate, r"is unreadable: the file is \d+ bytes, not the zip archive torch.save writes"),
        (_flip_tensor_bytes, "is corrupted: its contents do not match the checksum"),
        (_empty, "is unreadable: the file is empty"),
        (_text, r"is unreadable: the file is 9 bytes, not the zip archive"),
    ],
)
def test_damaged_checkpoint_is_refused_naming_the_file(damage, match, tmp_path):
    path = save_checkpoint({"w": torch.arange(4096, dtype=torch.float32), "step": 3}, tmp_path / "last.pt")
    damage(path)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_checksum_covers_plain_values(tmp_path):
    path = save_checkpoint({"w": torch.ones(3), "step": 7}, tmp_path / "c.pt")
    state = torch.load(path, weights_only=True)
    state["step"] = 8  # a consistent zip file whose contents were changed
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        load_checkpoint(path)


def test_keep_previous_rotates_versions(tmp_path):
    path = tmp_path / "last.pt"
    for step in range(1, 5):
        save_checkpoint({"step": step}, path, keep_previous=2)
    prev, prev2 = previous_checkpoints(path, 2)
    assert [load_checkpoint(p)["step"] for p in (path, prev, prev2)] == [4, 3, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.prev.pt", "last.prev2.pt", "last.pt"]
    with pytest.raises(ValueError, match="keep_previous must be an integer >= 0, got -1"):
        save_checkpoint({"step": 0}, path, keep_previous=-1)


def test_keep_previous_when_both_names_are_one_file(tmp_path):
    # a run killed after keeping the previous version leaves last.pt and last.prev.pt as one file
    path = save_checkpoint({"step": 1}, tmp_path / "last.pt")
    os.link(path, tmp_path / "last.prev.pt")
    save_checkpoint({"step": 2}, path, keep_previous=1)
    assert load_checkpoint(path)["step"] == 2 and load_checkpoint(tmp_path / "last.prev.pt")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.prev.pt", "last.pt"]


def test_fallback_to_previous_good_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    for step in (1, 2, 3):
        save_checkpoint({"step": step}, path, keep_previous=2)
    _truncate(path)
    _empty(previous_checkpoints(path, 1)[0])
    with pytest.warns(UserWarning, match=r"last\.pt' is unreadable.*last\.prev\.pt' is unreadable.*using the previous"):
        used, state = load_latest_checkpoint(path)
    assert used.name == "last.prev2.pt" and state["step"] == 1


def test_fallback_when_newest_is_missing(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)
    save_checkpoint({"step": 2}, path, keep_previous=1)
    path.unlink()
    with pytest.warns(UserWarning, match="no checkpoint at"):
        used, state = load_latest_checkpoint(path)
    assert used.name == "last.prev.pt" and state["step"] == 1


def test_no_usable_checkpoint(tmp_path):
    path = save_checkpoint({"step": 1}, tmp_path / "last.pt")
    _truncate(path)
    with pytest.raises(CheckpointError, match=r"no usable checkpoint: checkpoint .*last\.pt' is unreadable"):
        load_latest_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="nor a previous version"):
        load_latest_checkpoint(tmp_path / "none.pt")


def test_trainer_resume_from_damaged_file_is_refused(moons, tmp_path):
    options = small(out_dir=str(tmp_path))
    Trainer(make_mlp(0), moons, method="vat", **options).fit()
    _truncate(tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=r"last\.pt' is unreadable"):
        Trainer(make_mlp(0), moons, method="vat", **options).fit(resume=tmp_path / "last.pt")


def test_stale_temporaries_removed(tmp_path):
    for name in (".last.pt.abc.tmp", ".last.prev.pt.def.tmp", ".best.pt.x.tmp", "keep.tmp", ".other.pt.y.tmp"):
        (tmp_path / name).write_bytes(b"x")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted([".best.pt.x.tmp", ".last.pt.abc.tmp", ".last.prev.pt.def.tmp"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.pt.y.tmp", "keep.tmp"]


CLI = ["train", "--dataset", "moons", "--iters", "20", "--checkpoint-every", "5", "--eval-every", "10"]
CLI += ["--batch-size", "8", "--unlabeled-batch-size", "16", "--no-progress", "--seed", "1"]


def test_cli_resume_falls_back_to_previous_checkpoint(tmp_path, capsys):
    full, run = tmp_path / "full", tmp_path / "run"
    assert main([*CLI, "--out", str(full)]) == 0
    # a run stopped at 10 (its last.pt at 10, last.prev.pt at 5), whose last.pt was then damaged
    assert main([*CLI, "--iters", "10", "--out", str(run)]) == 0
    (run / "config.toml").write_text((full / "config.toml").read_text())  # the 20-iteration config
    _truncate(run / "last.pt")
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"checkpoint '{run / 'last.pt'}' is unreadable" in err
    assert f"using the previous checkpoint '{run / 'last.prev.pt'}' instead" in err
    assert_same_state(load_checkpoint(run / "last.pt")["model"], load_checkpoint(full / "last.pt")["model"])


def test_cli_resume_with_every_checkpoint_damaged(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*CLI, "--iters", "10", "--out", str(run)]) == 0
    _truncate(run / "last.pt")
    _empty(run / "last.prev.pt")
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "torchvat: error: no usable checkpoint" in err and "last.prev.pt' is unreadable" in err


# ------------------------------------------------------------------------- malicious files
class _Payload:
    """Unpickling this runs ``exec``: it would create the file ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_without_running_it(writer, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    state = {"step": 1, "model": {"w": torch.ones(2)}, "payload": _Payload(marker)}
    if writer == "torch.save":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state, protocol=2))
    with pytest.raises(CheckpointError, match="was refused: loading it would run code"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="was refused"):
        load_latest_checkpoint(path)
    assert not marker.exists()


def test_malicious_checkpoint_via_cli_resume_and_evaluate(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*CLI, "--iters", "5", "--out", str(run)]) == 0
    marker = tmp_path / "pwned"
    state = load_checkpoint(run / "last.pt")
    state["payload"] = _Payload(marker)
    torch.save(state, run / "last.pt")
    (run / "last.prev.pt").unlink(missing_ok=True)
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 2
    assert "was refused" in capsys.readouterr().err
    assert main(["evaluate", str(run / "last.pt")]) == 2
    assert "was refused" in capsys.readouterr().err
    assert not marker.exists()


def test_a_trainer_state_saved_again_without_its_checksum_is_refused(moons, tmp_path):
    options = small(iterations=8, eval_every=4, out_dir=str(tmp_path))
    Trainer(make_mlp(0), moons, method="vat", **options).fit()
    state = load_checkpoint(tmp_path / "last.pt")  # the checksum is checked and dropped
    state["model"]["0.weight"].mul_(100.0)
    torch.save(state, tmp_path / "last.pt")  # edited and saved again without torchvat
    message = (
        r"last\.pt' is a trainer state without a checksum: .* written, or edited and saved again, with plain "
        r"torch\.save and cannot be verified; if you trust its contents, re-save it with "
        r"torchvat\.train\.save_checkpoint\(torch\.load\(path, weights_only=True\), path\)"
    )
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=message):
        Trainer(make_mlp(0), moons, method="vat", **options).fit(resume=tmp_path / "last.pt")
    with pytest.warns(UserWarning, match="without a checksum.*using the previous checkpoint"):
        used, previous = load_latest_checkpoint(tmp_path / "last.pt")
    assert used.name == "last.prev.pt" and previous["step"] == 4
    # the way the message gives: re-saved with torchvat, it loads
    save_checkpoint(torch.load(tmp_path / "last.pt", weights_only=True), tmp_path / "last.pt")
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 8
    # a state that is not a trainer's (plain weights) still loads without a checksum
    torch.save({"w": torch.ones(2)}, tmp_path / "weights.pt")
    assert torch.equal(load_checkpoint(tmp_path / "weights.pt")["w"], torch.ones(2))
