import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Run these small CPU models on one thread: faster on a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
