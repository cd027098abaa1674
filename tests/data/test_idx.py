import gzip

import numpy as np
import pytest

from torchvat.data import read_idx, write_idx


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_round_trip(tmp_path, dtype, name):
    arr = (np.arange(60).reshape(3, 4, 5) % 100).astype(dtype)
    write_idx(tmp_path / name, arr)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.dtype(dtype) and back.shape == (3, 4, 5)
    np.testing.assert_array_equal(back, arr)


def test_header_layout_is_big_endian(tmp_path):
    write_idx(tmp_path / "x", np.array([[1, 2, 3]], dtype=np.int32))
    raw = (tmp_path / "x").read_bytes()
    assert raw[:4] == bytes([0, 0, 0x0C, 2])
    assert raw[4:12] == bytes([0, 0, 0, 1, 0, 0, 0, 3])
    assert raw[12:16] == bytes([0, 0, 0, 1])


def test_gzip_detected_from_content(tmp_path):
    write_idx(tmp_path / "x.gz", np.array([7, 8], dtype=np.uint8))
    (tmp_path / "x.gz").rename(tmp_path / "plain-name")
    assert read_idx(tmp_path / "plain-name").tolist() == [7, 8]


def test_bad_magic(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01" + bytes(8))
    with pytest.raises(ValueError, match="bad magic number 0x12340801"):
        read_idx(tmp_path / "bad")
    with gzip.open(tmp_path / "bad.gz", "wb") as f:
        f.write(b"\x00\x00\x07\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="bad magic number 0x00000701"):
        read_idx(tmp_path / "bad.gz")


def test_truncated_and_missing(tmp_path):
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(ValueError, match="implies 13"):
        read_idx(tmp_path / "short")
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        read_idx(tmp_path / "nothing-here")


def test_write_rejects_int64(tmp_path):
    with pytest.raises(TypeError, match="got int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
