"""Reading and checking IDX files, the format MNIST ships in.

An IDX file starts with two zero bytes, a type code, the number of dimensions
and one big-endian uint32 per dimension; the data follows. Format description:
Y. LeCun, C. Cortes and C. Burges, "The MNIST database of handwritten digits".
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np

# Type code -> big-endian NumPy dtype.
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IDXError(ValueError):
    """An IDX file is malformed, truncated or not the file expected."""


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Return the hex SHA-256 digest of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file into a NumPy array in native byte order.

    Raises
    ------
    IDXError
        If the magic number is wrong or the file is shorter or longer than its
        header says. The message names the file.
    """
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) < 4:
        raise IDXError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or type_code not in _DTYPES or ndim == 0:
        raise IDXError(
            f"{path}: bad IDX magic number {raw[:4].hex()}; expected 0000 followed "
            "by a type code (08-0e) and the number of dimensions"
        )
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise IDXError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    dtype = _DTYPES[type_code]
    expected = header_size + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise IDXError(
            f"{path}: file has {len(raw)} bytes but its header (shape {shape}) "
            f"requires {expected}; the file is truncated or corrupt. Delete it and "
            "fetch it again"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` as an IDX file (used by tests and tools)."""
    array = np.asarray(array)
    for code, dtype in _DTYPES.items():
        if dtype.newbyteorder("=") == array.dtype.newbyteorder("="):
            break
    else:
        raise ValueError(f"dtype {array.dtype} has no IDX type code")
    header = struct.pack(">HBB", 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    Path(path).write_bytes(header + array.astype(dtype).tobytes())
