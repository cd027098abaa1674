from __future__ import annotations

import pytest
from PIL import Image


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
