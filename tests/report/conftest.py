from __future__ import annotations

import pytest
import torch
from PIL import Image


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size


@pytest.fixture
def png_size():
    """Open a PNG with PIL (checks it is a real image) and return its (width, height)."""
    return _png_size
