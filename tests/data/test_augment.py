import itertools

import pytest
import torch

from torchvat.data import augment_translate_flip, translate_flip


def shifted_zero_padded(img, dy, dx):
    """Reference: move the content by (dy, dx) with zeros shifted in, by slicing."""
    out = torch.zeros_like(img)
    h, w = img.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def candidate(img, dy, dx, flipped):
    moved = shifted_zero_padded(img, dy, dx)
    return moved.flip(-1) if flipped else moved


@pytest.fixture
def images():
    return torch.rand(6, 3, 8, 7, generator=torch.Generator().manual_seed(0))


def test_translated_image_equals_shifted_copy(images):
    shifts = torch.tensor([[0, 0], [1, 0], [0, -2], [-2, 2], [2, 1], [-1, -1]])
    out = translate_flip(images, shifts, padding_mode="zeros")
    for i, (dy, dx) in enumerate(shifts.tolist()):
        assert torch.equal(out[i], shifted_zero_padded(images[i], dy, dx))


def test_flip_after_shift(images):
    shifts = torch.tensor([[1, 2]] * 6)
    flips = torch.tensor([True, False] * 3)
    out = translate_flip(images, shifts, flips, padding_mode="zeros")
    ref = shifted_zero_padded(images, 1, 2)
    assert torch.equal(out[0], ref[0].flip(-1)) and torch.equal(out[1], ref[1])


def test_reflect_padding_interior_and_edge(images):
    out = translate_flip(images[:1], torch.tensor([[0, 1]]), max_shift=2)
    assert torch.equal(out[0, :, :, 1:], images[0, :, :, :-1])
    assert torch.equal(out[0, :, :, 0], images[0, :, :, 1])  # reflect: mirror of column 1


def test_augment_shapes_and_determinism(images):
    a = augment_translate_flip(images, generator=torch.Generator().manual_seed(3))
    b = augment_translate_flip(images, generator=torch.Generator().manual_seed(3))
    c = augment_translate_flip(images, generator=torch.Generator().manual_seed(4))
    assert a.shape == images.shape and a.dtype == images.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("flip", [True, False])
def test_augment_output_is_one_of_the_candidates(images, flip):
    g = torch.Generator().manual_seed(0)
    out = augment_translate_flip(images, flip=flip, padding_mode="zeros", generator=g)
    saw_flip = False
    for i in range(images.shape[0]):
        matches = [
            (dy, dx, f)
            for dy, dx in itertools.product(range(-2, 3), repeat=2)
            for f in (False, True)
            if torch.equal(out[i], candidate(images[i], dy, dx, f))
        ]
        assert matches, f"image {i} is no translation/flip of its input"
        saw_flip |= all(m[2] for m in matches)
    assert saw_flip == flip


def test_errors(images):
    with pytest.raises(ValueError, match=r"batch of images \[N, C, H, W\], got shape \(3, 8, 7\)"):
        augment_translate_flip(images[0])
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        augment_translate_flip(images, padding_mode="wrap")
    with pytest.raises(ValueError, match=r"shifts must lie in \[-2, 2\]"):
        translate_flip(images, torch.full((6, 2), 3))
    with pytest.raises(ValueError, match=r"shifts must have shape \(6, 2\)"):
        translate_flip(images, torch.zeros(5, 2))
