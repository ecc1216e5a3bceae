"""Fine-grained trajectories streamed to disk and read back memory-mapped.

A snapshot every epoch fits in memory (31 x 134,794 float32 values, 17 MB,
for the 784-128-128-128-10 MLP), but a snapshot every optimizer step does not: 30
epochs of 235 steps give 7,051 snapshots, 3.8 GB per run. Training with a
:class:`Capture` writes each run's snapshots to one ``.npy`` file as it goes,
row by row, so the trajectory is never held in memory. Read it with
:func:`open_trajectory`, which maps the file instead of loading it, and pass
it to :func:`landscape.pca.pca_plane`, which reads it in blocks.

A file is written under a temporary name and renamed when training ends, so a
file with the final name is complete. The exception is a power loss just
before, because the file is not forced to disk (see
:meth:`TrajectoryWriter.close`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class Capture:
    """The folder and the interval for snapshots that training streams to disk.

    Parameters
    ----------
    directory : path
        Folder for the ``.npy`` files, created if missing.
    every_steps : int, optional
        Take a snapshot after every ``every_steps`` optimizer steps. None
        takes one per epoch. The initialization is always snapshot 0.
    """

    directory: Path
    every_steps: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "directory", Path(self.directory))
        every = self.every_steps
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(
                f"every_steps must be a positive integer or None (one snapshot per "
                f"epoch), got {every!r}"
            )

    def stride(self, steps_per_epoch: int) -> int:
        """Return the number of optimizer steps between two snapshots."""
        return self.every_steps if self.every_steps is not None else steps_per_epoch

    def n_snapshots(self, total_steps: int, steps_per_epoch: int) -> int:
        """Return the number of snapshots of a run of ``total_steps`` steps, the initial one included."""
        return 1 + total_steps // self.stride(steps_per_epoch)

    def path(self, experiment: str, run: int, steps_per_epoch: int) -> Path:
        """Return the file of run ``run``: ``<directory>/<experiment>-run<run>-every<stride>.npy``."""
        return self.directory / f"{experiment}-run{run}-every{self.stride(steps_per_epoch)}.npy"


class TrajectoryWriter:
    """Writes one run's snapshots, in order, as rows of a float32 ``.npy`` file.

    Rows go to ``<path>.partial``; :meth:`close` renames it to ``path``.
    Rows not written by then, such as those after a divergence, are NaN.
    """

    def __init__(self, path: str | Path, n_snapshots: int, n_params: int) -> None:
        if n_snapshots < 1 or n_params < 1:
            raise ValueError(
                f"a trajectory needs n_snapshots >= 1 and n_params >= 1, got "
                f"{n_snapshots} and {n_params}"
            )
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.n_snapshots = n_snapshots
        self.n_params = n_params
        self.written = 0
        self._file = open(self.partial, "wb")
        header = {"descr": "<f4", "fortran_order": False, "shape": (n_snapshots, n_params)}
        np.lib.format.write_array_header_2_0(self._file, header)

    def write(self, row: np.ndarray) -> None:
        """Append the next snapshot, a ``(n_params,)`` array cast to float32."""
        row = np.asarray(row)
        if row.shape != (self.n_params,):
            raise ValueError(f"snapshot has shape {row.shape}, expected ({self.n_params},)")
        self.write_parts([row])

    def write_parts(self, parts: Sequence[np.ndarray]) -> None:
        """Append the next snapshot given in consecutive pieces, such as one array per tensor.

        Writing the pieces as they are avoids concatenating them into one row
        first, a copy of the whole snapshot.
        """
        if self.written >= self.n_snapshots:
            raise ValueError(f"{self.path} already contains all {self.n_snapshots} snapshots")
        arrays = [np.ascontiguousarray(part, dtype="<f4").reshape(-1) for part in parts]
        size = sum(a.size for a in arrays)
        if size != self.n_params:
            raise ValueError(
                f"snapshot pieces contain {size} values in all, expected {self.n_params}"
            )
        for array in arrays:
            self._file.write(memoryview(array).cast("B"))
        self.written += 1

    def close(self) -> Path:
        """Fill the missing rows with NaN, then move the file to its final name and return it."""
        missing = self.n_snapshots - self.written
        if missing:
            nan_row = np.full(self.n_params, np.nan, dtype="<f4")
            for _ in range(missing):
                self._file.write(memoryview(nan_row).cast("B"))
        # No fsync: a snapshot per step for 8 runs writes about 1 GB per
        # epoch of the 784-128-128-128-10 MLP, and forcing that to disk took about as
        # long as the epoch itself on a 2-core VM (380 MB/s). The rename still
        # keeps a half-written file from ever having the final name while
        # the machine stays up.
        # NOTE: after a power loss or kernel crash, a file renamed shortly
        # before may hold zeros where the data had not reached the disk.
        self._file.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file, leaving no file under the final name."""
        self._file.close()
        self.partial.unlink(missing_ok=True)


def open_trajectory(path: str | Path) -> np.memmap:
    """Map a trajectory file read-only as a ``(n_snapshots, n_params)`` float32 array.

    Raises
    ------
    FileNotFoundError
        If there is no such file; a ``.partial`` file beside it means that
        training did not finish.
    ValueError
        If the file is not a 2-D float32 ``.npy`` array, for example truncated.
    """
    path = Path(path)
    if not path.is_file():
        partial = path.with_name(path.name + PARTIAL_SUFFIX)
        hint = (f"; {partial.name} exists, so the training that wrote it did not finish"
                if partial.exists() else "")
        raise FileNotFoundError(f"no trajectory file {path}{hint}")
    try:
        array = np.load(path, mmap_mode="r")
    except ValueError as error:
        raise ValueError(f"{path} is not a readable .npy trajectory: {error}") from error
    if array.ndim != 2 or array.dtype != np.float32:
        raise ValueError(
            f"{path} contains a {array.dtype} array of shape {array.shape}; a trajectory is "
            "2-D float32 (n_snapshots, n_params)"
        )
    return array


def steps_of_snapshots(n_snapshots: int, stride: int) -> np.ndarray:
    """Return the optimizer step after which each snapshot was taken (0 for the initialization)."""
    if n_snapshots < 1 or stride < 1:
        raise ValueError(f"need n_snapshots >= 1 and stride >= 1, got {n_snapshots} and {stride}")
    return np.arange(n_snapshots, dtype=np.int64) * stride

