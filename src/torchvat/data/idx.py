"""Reader and writer for the IDX format of (Fashion-)MNIST, gzipped or not.

An IDX file starts with a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then
``ndim`` big-endian ``uint32`` dimension sizes, then the data in big-endian C order.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["read_idx", "write_idx"]

_CODE_TO_DTYPE: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_DTYPE_TO_CODE = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: c for c, dt in _CODE_TO_DTYPE.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def _open(path: Path, mode: str) -> IO[bytes]:
    """Open ``path``, transparently through gzip when it is gzip-compressed."""
    if "r" in mode:
        with open(path, "rb") as f:
            gz = f.read(2) == _GZIP_MAGIC
    else:
        gz = path.suffix == ".gz"
    if gz:
        return gzip.open(path, mode)  # type: ignore[return-value]
    return open(path, mode)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (as used by MNIST and Fashion-MNIST) into a numpy array.

    Gzip compression is detected from the file's content, not its name.

    Args:
        path: Path of the ``.idx`` / ``-ubyte`` file, gzipped or not.

    Returns:
        The array, in native byte order, with the shape stored in the header.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the magic number is not an IDX magic number or the file is truncated.

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "a-idx3-ubyte.gz")
        >>> write_idx(path, np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
        >>> read_idx(path).shape
        (2, 3, 4)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    with _open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise ValueError(f"{path} is not an IDX file: only {len(raw)} bytes")
    magic = int.from_bytes(raw[:4], "big")
    code, ndim = raw[2], raw[3]
    if raw[0] != 0 or raw[1] != 0 or code not in _CODE_TO_DTYPE:
        raise ValueError(
            f"{path} is not an IDX file: bad magic number 0x{magic:08X} "
            "(expected 0x0000TTDD with type code TT in "
            f"{[hex(c) for c in _CODE_TO_DTYPE]} and DD dimensions)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: header needs {header} bytes, got {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _CODE_TO_DTYPE[code]
    count = int(np.prod(dims, dtype=np.int64))
    expected = header + count * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path} has {len(raw)} bytes but its header {dims} of {dtype} implies {expected}")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``.

    Args:
        path: Destination path; parent directories must exist.
        array: Array of dtype ``uint8``, ``int8``, ``int16``, ``int32``, ``float32`` or
            ``float64`` with at most 255 dimensions.

    Raises:
        TypeError: If the dtype has no IDX type code.

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
        >>> write_idx(path, np.array([3, 1, 4], dtype=np.uint8))
        >>> read_idx(path).tolist()
        [3, 1, 4]
    """
    arr = np.asarray(array)
    native = arr.dtype.newbyteorder("=") if arr.dtype.itemsize > 1 else arr.dtype
    if native not in _DTYPE_TO_CODE:
        raise TypeError(f"array dtype must be one of {sorted(str(d) for d in _DTYPE_TO_CODE)}, got {arr.dtype}")
    code = _DTYPE_TO_CODE[native]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(arr, dtype=_CODE_TO_DTYPE[code]).tobytes()
    with _open(Path(path), "wb") as f:
        f.write(header + body)
