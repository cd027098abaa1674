import io

import pytest
import torch

from torchvat.data import InfiniteBatchSampler, InfiniteTensorLoader, iter_batches


@pytest.mark.parametrize(("n", "batch_size"), [(12, 4), (10, 3), (3, 8)])
def test_every_index_once_per_epoch(n, batch_size):
    sampler = InfiniteBatchSampler(n, batch_size, seed=0)
    n_epochs = 4
    batches = [next(sampler) for _ in range(n_epochs * n // batch_size + 1)]
    assert {b.numel() for b in batches} == {batch_size}
    stream = torch.cat(batches)
    epochs = [stream[e * n : (e + 1) * n].tolist() for e in range(n_epochs)]
    assert all(sorted(epoch) == list(range(n)) for epoch in epochs)
    # Each epoch is reshuffled.
    assert len({tuple(epoch) for epoch in epochs}) > 1


def test_batches_have_fixed_size_and_epoch_counter():
    sampler = InfiniteBatchSampler(10, 3, seed=1)
    sizes = {next(sampler).numel() for _ in range(7)}
    assert sizes == {3} and sampler.epoch == 2 and sampler.position == 1


def test_resume_from_state_dict_gives_the_same_batches():
    reference = InfiniteBatchSampler(10, 4, seed=5)
    expected = [next(reference) for _ in range(12)]
    interrupted = InfiniteBatchSampler(10, 4, seed=5)
    for _ in range(5):
        next(interrupted)
    buf = io.BytesIO()
    torch.save(interrupted.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    resumed = InfiniteBatchSampler(10, 4, seed=123)  # the seed comes from the state
    resumed.load_state_dict(state)
    assert (resumed.epoch, resumed.position) == (1, 10)  # 20 indices drawn
    for want in expected[5:]:
        assert torch.equal(next(resumed), want)


def test_state_for_another_size_is_rejected():
    state = InfiniteBatchSampler(10, 4).state_dict()
    with pytest.raises(ValueError, match="state was saved with n=10, but this sampler has n=11"):
        InfiniteBatchSampler(11, 4).load_state_dict(state)


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        InfiniteBatchSampler(5, 0)
    with pytest.raises(TypeError, match="n must be an int, got float"):
        InfiniteBatchSampler(5.0, 2)


def test_tensor_loader_gathers_matching_rows_and_resumes():
    x = torch.randn(9, 2, 3)
    y = torch.arange(9) * 10
    loader = InfiniteTensorLoader(x, y, batch_size=4, seed=0)
    xb, yb = next(loader)
    assert xb.shape == (4, 2, 3) and torch.equal(xb, x[yb // 10])
    state = loader.state_dict()
    after = [next(loader)[1] for _ in range(3)]
    other = InfiniteTensorLoader(x, y, batch_size=4, seed=0)
    other.load_state_dict(state)
    assert all(torch.equal(next(other)[1], want) for want in after)
    with pytest.raises(ValueError, match=r"all tensors must have 9 rows like tensors\[0\]"):
        InfiniteTensorLoader(x, y[:5], batch_size=2)


def test_iter_batches_in_fixed_order():
    x, y = torch.arange(7).float(), torch.arange(7)
    batches = list(iter_batches(x, y, batch_size=3))
    assert [b[1].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        iter_batches(x, batch_size=-1)
