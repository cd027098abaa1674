"""Previous checkpoint versions rotate in order, also with more than two kept."""


# rotation with more than two versions
def test_keep_previous_rotates_three_versions(tmp_path):
    from torchvat.train import load_checkpoint, save_checkpoint
    from torchvat.train.checkpoint import previous_checkpoints

    path = tmp_path / "last.pt"
    for step in range(1, 6):
        save_checkpoint({"step": step}, path, keep_previous=3)
    assert [load_checkpoint(p)["step"] for p in (path, *previous_checkpoints(path, 3))] == [5, 4, 3, 2]
