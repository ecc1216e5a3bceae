"""Tests of the IDX reader and writer in landscape.idx."""

import hashlib
import re
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from landscape.idx import IDXError, read_idx, sha256_file, write_idx

IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@given(
    array=st.sampled_from(IDX_DTYPES).flatmap(
        lambda dtype: hnp.arrays(
            dtype, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5)
        )
    )
)
def test_read_idx_round_trips_write_idx(tmp_path_factory, array):
    path = tmp_path_factory.mktemp("idx") / "array-idx"
    write_idx(path, array)

    loaded = read_idx(path)

    assert loaded.shape == array.shape
    assert loaded.dtype == array.dtype
    assert loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, array)


def test_write_idx_writes_big_endian_header(tmp_path):
    path = tmp_path / "labels-idx2-ubyte"
    write_idx(path, np.arange(6, dtype=np.uint8).reshape(2, 3))

    raw = path.read_bytes()

    assert raw[:4] == bytes([0, 0, 0x08, 2])
    assert struct.unpack(">2I", raw[4:12]) == (2, 3)
    assert raw[12:] == bytes(range(6))


def test_write_idx_stores_values_big_endian(tmp_path):
    path = tmp_path / "values-idx1-int"
    write_idx(path, np.array([1, 256], dtype="<i4"))

    assert path.read_bytes()[8:] == b"\x00\x00\x00\x01\x00\x00\x01\x00"


def test_read_idx_accepts_big_endian_input_array(tmp_path):
    path = tmp_path / "values-idx1-int"
    array = np.array([-3, 70000], dtype=">i4")
    write_idx(path, array)

    np.testing.assert_array_equal(read_idx(path), array)


def test_write_idx_rejects_dtype_without_type_code(tmp_path):
    with pytest.raises(ValueError, match="dtype uint16 has no IDX type code"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.uint16))


@pytest.mark.parametrize("missing_bytes", [1, 7, 20])
def test_read_idx_rejects_truncated_data(tmp_path, missing_bytes):
    path = tmp_path / "t10k-images-idx3-ubyte"
    write_idx(path, np.zeros((2, 4, 4), dtype=np.uint8))
    raw = path.read_bytes()
    path.write_bytes(raw[:-missing_bytes])

    with pytest.raises(IDXError, match=re.escape(str(path))) as caught:
        read_idx(path)

    message = str(caught.value)
    assert f"file has {len(raw) - missing_bytes} bytes" in message
    assert f"requires {len(raw)}" in message
    assert "truncated or corrupt" in message


def test_read_idx_rejects_trailing_bytes(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    write_idx(path, np.arange(5, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")

    with pytest.raises(IDXError, match=re.escape(f"{path}: file has 14 bytes")):
        read_idx(path)


def test_read_idx_rejects_truncated_header(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    # Three dimensions declared, but only two sizes present.
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">2I", 10, 28))

    with pytest.raises(IDXError, match=re.escape(f"{path}: truncated IDX header (12 bytes)")):
        read_idx(path)


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x08"])
def test_read_idx_rejects_file_shorter_than_header(tmp_path, content):
    path = tmp_path / "short-idx"
    path.write_bytes(content)

    with pytest.raises(IDXError, match=re.escape(f"{path}: {len(content)} bytes is too short")):
        read_idx(path)


@pytest.mark.parametrize(
    "magic",
    [
        pytest.param(b"\x1f\x8b\x08\x00", id="gzip-magic"),
        pytest.param(b"\x00\x01\x08\x01", id="nonzero-second-byte"),
        pytest.param(b"\x00\x00\x07\x01", id="unknown-type-code"),
        pytest.param(b"\x00\x00\x08\x00", id="zero-dimensions"),
    ],
)
def test_read_idx_rejects_bad_magic(tmp_path, magic):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(magic + struct.pack(">I", 1) + b"\x00")

    with pytest.raises(IDXError, match=re.escape(f"{path}: bad IDX magic number {magic.hex()}")):
        read_idx(path)


def test_idx_error_is_value_error():
    assert issubclass(IDXError, ValueError)


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "blob"
    content = bytes(range(256)) * 1000
    path.write_bytes(content)

    assert sha256_file(path, chunk_size=1000) == hashlib.sha256(content).hexdigest()
