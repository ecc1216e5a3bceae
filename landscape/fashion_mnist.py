"""Fashion-MNIST as in-memory tensors, fetched and verified once.

Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017, arXiv:1708.07747) has the
shape of MNIST: 60,000 training and 10,000 test images of 28 x 28 pixels in
10 classes, here clothing. It is read through
``torchvision.datasets.FashionMNIST`` from ``<root>/FashionMNIST/raw``.
Missing files come, in this order, from Debian's package
``dataset-fashion-mnist`` when it is installed (``/usr/share/datasets/
fashion-mnist``), from torchvision's download, and from the same Debian
package fetched with ``apt-get download`` and unpacked with ``dpkg -x``,
which works wherever a Debian mirror is reachable. The package ships the
files gzipped; they are decompressed and checked against known SHA-256
digests before use.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from landscape.data import (
    DataError,
    Dataset,
    dataset_checksum,
    default_data_root,
    fetch_until_verified,
    normalize_images,
    verify_files,
)
from landscape.idx import IDXError, read_idx

logger = logging.getLogger(__name__)

# SHA-256 of the uncompressed IDX files.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
# Pixel mean and std of the 60,000 training images, scaled to [0, 1].
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def ensure_fashion_mnist(root: str | Path | None = None, *, system_dir: Path = DEBIAN_DIR) -> Path:
    """Make sure the four Fashion-MNIST IDX files are in ``<root>/FashionMNIST/raw`` and valid.

    Tries, in order: files already there, the installed Debian package in
    ``system_dir``, torchvision's download, and ``apt-get download`` of the
    Debian package. Returns the raw directory.

    Raises
    ------
    DataError
        If no source works (the message lists every attempt and how to place
        the files by hand), or a file has the wrong SHA-256.
    """
    root = Path(root) if root is not None else default_data_root()
    raw_dir = root / "FashionMNIST" / "raw"
    missing = verify_files(raw_dir, FASHION_MNIST_SHA256)
    if not missing:
        return raw_dir

    sources = (
        (f"installed package in {system_dir}", lambda: _decompress_from(system_dir, raw_dir)),
        ("torchvision download", lambda: _fetch_with_torchvision(root)),
        (f"apt-get download {DEBIAN_PACKAGE}", lambda: _fetch_with_apt(root, raw_dir)),
    )
    return fetch_until_verified("Fashion-MNIST", raw_dir, FASHION_MNIST_SHA256, sources, missing)


def load_fashion_mnist(root: str | Path | None = None) -> Dataset:
    """Return Fashion-MNIST (60,000 training and 10,000 test images) as tensors.

    Files are fetched and verified by :func:`ensure_fashion_mnist` first.
    Pixels are scaled to [0, 1] and normalized with the training set's mean
    0.2860 and std 0.3530.
    """
    from torchvision.datasets import FashionMNIST

    root = Path(root) if root is not None else default_data_root()
    raw_dir = ensure_fashion_mnist(root)
    for name in FASHION_MNIST_SHA256:
        try:
            read_idx(raw_dir / name)
        except IDXError as error:
            raise DataError(str(error)) from error

    train = FashionMNIST(str(root), train=True, download=False)
    test = FashionMNIST(str(root), train=False, download=False)
    return Dataset(
        name="fashion-mnist",
        x_train=normalize_images(train.data, FASHION_MNIST_MEAN, FASHION_MNIST_STD),
        y_train=train.targets.to(torch.int64),
        x_test=normalize_images(test.data, FASHION_MNIST_MEAN, FASHION_MNIST_STD),
        y_test=test.targets.to(torch.int64),
        test_images=test.data.clone(),
        checksum=dataset_checksum(FASHION_MNIST_SHA256),
    )


def _decompress_from(directory: Path, raw_dir: Path) -> None:
    """Decompress ``<name>.gz`` from ``directory`` into ``raw_dir``, each file renamed into place."""
    if not directory.is_dir():
        raise DataError(f"{directory} does not exist (the Debian package is not installed)")
    for name in FASHION_MNIST_SHA256:
        source = directory / f"{name}.gz"
        if not source.is_file():
            raise DataError(f"{source} is missing")
        target = raw_dir / name
        partial = target.with_name(target.name + ".partial")
        try:
            with gzip.open(source, "rb") as compressed, open(partial, "wb") as sink:
                shutil.copyfileobj(compressed, sink)
        except (OSError, EOFError) as error:
            partial.unlink(missing_ok=True)
            raise DataError(f"{source} could not be decompressed: {error}") from error
        os.replace(partial, target)


def _fetch_with_torchvision(root: Path) -> None:
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(root), train=True, download=True)
    FashionMNIST(str(root), train=False, download=True)


def _fetch_with_apt(root: Path, raw_dir: Path) -> None:
    """Fetch the Debian package with ``apt-get download``, unpack it with ``dpkg -x`` under ``root``."""
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise DataError(f"{tool} is not installed (no '{tool}' on PATH)")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="landscape-deb-", dir=root.resolve()) as scratch:
        logger.info("fetching %s with apt-get download", DEBIAN_PACKAGE)
        _run(["apt-get", "download", DEBIAN_PACKAGE], cwd=scratch)
        packages = list(Path(scratch).glob(f"{DEBIAN_PACKAGE}_*.deb"))
        if len(packages) != 1:
            raise DataError(f"'apt-get download {DEBIAN_PACKAGE}' produced no single .deb in {scratch}")
        unpacked = Path(scratch) / "unpacked"
        _run(["dpkg", "-x", str(packages[0]), str(unpacked)], cwd=scratch)
        _decompress_from(unpacked / DEBIAN_DIR.relative_to("/"), raw_dir)


def _run(command: list[str], cwd: str) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise DataError(
            f"'{' '.join(command)}' failed with exit code {result.returncode}: "
            f"{result.stderr.strip()[-500:]}"
        )
