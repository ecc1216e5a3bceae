"""Tests of the Fashion-MNIST source files, with made-up files and no download."""

from __future__ import annotations

import gzip

import pytest

from landscape.data import DataError
from landscape.fashion_mnist import FASHION_MNIST_SHA256, _decompress_from, ensure_fashion_mnist


def write_gz_files(directory, content=b"not the real data"):
    directory.mkdir(parents=True)
    for name in FASHION_MNIST_SHA256:
        with gzip.open(directory / f"{name}.gz", "wb") as handle:
            handle.write(content)


def test_installed_files_with_wrong_digest_are_rejected(tmp_path):
    system_dir = tmp_path / "system"
    write_gz_files(system_dir)

    with pytest.raises(DataError, match=r"train-images-idx3-ubyte has SHA-256 [0-9a-f]{64}, "
                       r"expected c59f468a.*delete it and run again"):
        ensure_fashion_mnist(tmp_path / "root", system_dir=system_dir)


def test_decompress_names_a_truncated_archive(tmp_path):
    source = tmp_path / "source"
    write_gz_files(source, content=b"x" * 10_000)
    damaged = source / "train-labels-idx1-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:20])
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()

    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz could not be decompressed"):
        _decompress_from(source, raw_dir)

    assert not list(raw_dir.glob("*.partial"))


def test_decompress_reports_a_missing_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist .the Debian package is not installed."):
        _decompress_from(tmp_path / "nowhere", tmp_path)
