"""Planes spanned by the principal components of optimization trajectories.

Random directions are nearly orthogonal to the path an optimizer takes, so a
trajectory projected onto a random plane looks like a point. Li et al.,
"Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018,
arXiv:1712.09913, plot trajectories on the plane of the first two principal
components of the weight snapshots instead. Here they come from a thin SVD of
the centered ``(n_snapshots, n_params)`` matrix, which costs
``O(n_snapshots**2 * n_params)`` and never forms a ``(n_params, n_params)``
covariance matrix.

Centering is a choice that changes the directions:

- ``center="final"`` subtracts the final snapshot, so the components describe
  where the weights were relative to where they ended. The study whose claims
  this package re-checks did this.
- ``center="mean"`` subtracts the mean snapshot, as ordinary PCA
  (``sklearn.decomposition.PCA``) does. Li et al.'s code (``projection.py`` in
  tomgoldstein/loss-landscape) passes differences to the final model to
  scikit-learn's PCA, which then subtracts their mean, so it gives these
  directions.

Either way the plane's origin is the final snapshot, so the landscape is drawn
around the trained weights and the final snapshot has coordinates (0, 0).

A long trajectory, such as one snapshot per optimizer step streamed to disk
by :mod:`landscape.trajectory`, does not fit in memory as a float64 matrix
(5,000 snapshots of the paper's MLP take 5.4 GB). For those,
``method="gram"`` reads the snapshots in blocks of columns and accumulates
the ``(n_snapshots, n_snapshots)`` Gram matrix of the centered snapshots.
Its eigenvectors are the left singular vectors, and a second pass over the
blocks turns them into directions. Memory then grows with ``n_snapshots**2``
and the block size, not with the trajectory's size.
"""

from __future__ import annotations

import mmap

import numpy as np
import scipy.linalg
import torch

from landscape.directions import Plane

CENTERS = ("final", "mean")
METHODS = ("auto", "svd", "gram")

# method="auto" takes the Gram path when the float64 snapshot matrix would be
# larger than this.
GRAM_ABOVE_BYTES = 512 * 2**20
# Bytes of one float64 column block on the Gram path.
GRAM_BLOCK_BYTES = 64 * 2**20


def pca_plane(
    snapshots: np.ndarray | torch.Tensor,
    *,
    center: str = "final",
    method: str = "auto",
    block_bytes: int = GRAM_BLOCK_BYTES,
) -> Plane:
    """Build the plane of the first two principal components of a trajectory.

    Parameters
    ----------
    snapshots : array or torch.Tensor, shape (n_snapshots, n_params)
        Flattened weights in time order, such as
        :attr:`landscape.train.Run.snapshots`. Computation is in float64.
    center : {"final", "mean"}, default="final"
        Row subtracted before the SVD (see the module docstring).
    method : {"auto", "svd", "gram"}, default="auto"
        ``"svd"`` takes a thin SVD of the whole centered matrix in memory.
        ``"gram"`` reads ``snapshots`` in column blocks of about
        ``block_bytes`` and never holds the whole matrix; pass a memory map
        (:func:`landscape.trajectory.open_trajectory`) for a trajectory on
        disk. ``"auto"`` takes ``"gram"`` for a memory map or a matrix of more
        than 512 MB in float64, else ``"svd"``. Both give the same plane to
        rounding error.
    block_bytes : int, default=64 MiB
        Size of one float64 column block on the Gram path.

    Returns
    -------
    Plane
        ``kind="pca"``, ``origin`` the final snapshot, ``d1`` and ``d2``
        orthonormal. Each direction is signed so that its entry of largest
        magnitude is positive, the convention of scikit-learn's ``svd_flip``.
        ``metadata`` has ``center``, ``n_snapshots``,
        ``explained_variance_ratio`` (first two components) and
        ``singular_values`` (all of them). A ratio is a component's share of
        the sum of squared distances of the snapshots from the center; for
        ``center="mean"`` it equals scikit-learn's
        ``explained_variance_ratio_``.

    Raises
    ------
    ValueError
        If ``center`` is unknown, the array is not 2-D, a row is NaN or
        infinite, or the centered snapshots span fewer than two dimensions
        (fewer than three distinct snapshots, or all on one line).
    """
    _check_center(center)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        method = "gram" if _prefers_gram(snapshots) else "svd"
    if method == "gram":
        return _gram_pca_plane(snapshots, center, block_bytes)
    matrix = _snapshot_matrix(snapshots, "snapshots")
    reference = matrix[-1] if center == "final" else matrix.mean(axis=0)
    directions, singular_values = _principal_directions(matrix - reference, center)
    return _plane(matrix[-1], directions, singular_values, "pca", center, len(matrix), {})


def _prefers_gram(snapshots: np.ndarray | torch.Tensor) -> bool:
    if isinstance(snapshots, np.memmap):
        return True
    shape = tuple(snapshots.shape)
    return len(shape) == 2 and 8 * shape[0] * shape[1] > GRAM_ABOVE_BYTES


def _gram_pca_plane(snapshots: np.ndarray | torch.Tensor, center: str, block_bytes: int) -> Plane:
    """:func:`pca_plane` through the Gram matrix of the centered snapshots, read in column blocks."""
    if isinstance(snapshots, torch.Tensor):
        snapshots = snapshots.detach().cpu().numpy()
    if not hasattr(snapshots, "shape") or len(snapshots.shape) != 2:
        snapshots = np.asarray(snapshots)
    if snapshots.ndim != 2 or snapshots.shape[0] < 1 or snapshots.shape[1] < 2:
        raise ValueError(
            "snapshots must have shape (n_snapshots, n_params) with n_params >= 2, "
            f"got {snapshots.shape}"
        )
    if not isinstance(block_bytes, int) or block_bytes < 1:
        raise ValueError(f"block_bytes must be a positive integer, got {block_bytes!r}")
    n_snapshots, n_params = snapshots.shape
    if n_snapshots < 2:
        raise ValueError(
            f"the snapshots span 0 dimension(s) around the {center} snapshot; PCA needs "
            "at least three distinct snapshots that do not lie on one line"
        )
    width = max(1, min(n_params, block_bytes // (8 * n_snapshots)))

    def blocks():
        """Yield ``(columns, centered float64 block)`` over all columns."""
        bad = np.zeros(n_snapshots, dtype=bool)
        for start in range(0, n_params, width):
            columns = slice(start, min(start + width, n_params))
            block = np.asarray(snapshots[:, columns], dtype=np.float64)
            _release_pages(snapshots)
            bad |= ~np.all(np.isfinite(block), axis=1)
            if bad.any():
                raise ValueError(
                    f"snapshots rows {np.flatnonzero(bad).tolist()[:10]} contain NaN or "
                    "infinite values; drop them first (for a diverged run, use "
                    "run.snapshots[: run.diverged_epoch + 1])"
                )
            reference = block[-1] if center == "final" else block.mean(axis=0)
            block -= reference
            yield columns, block

    gram = np.zeros((n_snapshots, n_snapshots))
    for _, block in blocks():
        gram += block @ block.T
    # The top two eigenvectors first, on a copy of the Gram matrix, then all
    # eigenvalues in place. A full eigendecomposition would also hold all
    # n_snapshots**2 eigenvectors: 200 MB more for 5,000 snapshots.
    top = scipy.linalg.eigh(gram, subset_by_index=[n_snapshots - 2, n_snapshots - 1])[1][:, ::-1]
    eigenvalues = scipy.linalg.eigh(gram, eigvals_only=True, overwrite_a=True)[::-1]
    del gram
    singular_values = np.sqrt(np.clip(eigenvalues, 0.0, None))

    # Eigenvalues carry an absolute error of about eps * largest, so singular
    # values below sqrt(n * eps) * largest are indistinguishable from zero.
    tolerance = singular_values[0] * np.sqrt(max(n_snapshots, n_params) * np.finfo(np.float64).eps)
    rank = int(np.sum(singular_values > tolerance))
    if rank < 2:
        raise ValueError(
            f"the snapshots span {rank} dimension(s) around the {center} snapshot "
            f"(singular values {singular_values[:3].tolist()}); PCA needs at least "
            "three distinct snapshots that do not lie on one line"
        )

    # Right singular vectors: v_k = centered^T u_k / s_k, block by block.
    left = top / singular_values[:2]
    directions = np.empty((2, n_params))
    for columns, block in blocks():
        directions[:, columns] = left.T @ block
    largest = np.argmax(np.abs(directions), axis=1)
    directions *= np.sign(directions[np.arange(2), largest])[:, None]

    origin = np.asarray(snapshots[-1], dtype=np.float64)
    _release_pages(snapshots)
    return _plane(origin, directions, singular_values, "pca", center, n_snapshots,
                  {"method": "gram"})


def _release_pages(array: np.ndarray) -> None:
    """Drop the pages of a memory-mapped array that this process has read.

    Pages of a file mapping count toward the process's resident memory while
    mapped, so reading a 3 GB trajectory through its map would make the
    process look 3 GB large. The kernel keeps them in its page cache, so a
    later read is still fast. Arrays that are not memory maps are left alone.
    """
    handle = getattr(array, "_mmap", None)  # set by np.memmap and its slices
    if isinstance(handle, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        handle.madvise(mmap.MADV_DONTNEED)


def joint_pca_plane(
    trajectory_a: np.ndarray | torch.Tensor,
    trajectory_b: np.ndarray | torch.Tensor,
    *,
    center: str = "final",
) -> Plane:
    """Build the principal-component plane of two trajectories stacked together.

    The snapshots of both are stacked into one ``(n_a + n_b, n_params)``
    matrix, so both trajectories can be drawn in one plane, for example two
    optimizers started from one initialization.

    Parameters
    ----------
    trajectory_a, trajectory_b : array or torch.Tensor, shape (n_a, n_params) and (n_b, n_params)
    center : {"final", "mean"}, default="final"
        ``"final"`` subtracts the final snapshot of ``trajectory_a``;
        ``"mean"`` subtracts the mean of all stacked snapshots.

    Returns
    -------
    Plane
        ``kind="joint_pca"``, ``origin`` the final snapshot of
        ``trajectory_a``. ``metadata`` is as in :func:`pca_plane`, with
        ``n_snapshots_a`` and ``n_snapshots_b`` added.

    Raises
    ------
    ValueError
        As :func:`pca_plane`, or if the two have different ``n_params``.
    """
    matrix_a = _snapshot_matrix(trajectory_a, "trajectory_a")
    matrix_b = _snapshot_matrix(trajectory_b, "trajectory_b")
    if matrix_a.shape[1] != matrix_b.shape[1]:
        raise ValueError(
            f"trajectory_a has {matrix_a.shape[1]} parameters per snapshot and "
            f"trajectory_b {matrix_b.shape[1]}; both must come from one architecture"
        )
    _check_center(center)
    stacked = np.concatenate([matrix_a, matrix_b])
    reference = matrix_a[-1] if center == "final" else stacked.mean(axis=0)
    directions, singular_values = _principal_directions(stacked - reference, center)
    counts = {"n_snapshots_a": len(matrix_a), "n_snapshots_b": len(matrix_b)}
    return _plane(
        matrix_a[-1], directions, singular_values, "joint_pca", center, len(stacked), counts
    )


def _check_center(center: str) -> None:
    if center not in CENTERS:
        raise ValueError(f"center must be one of {CENTERS}, got {center!r}")


def _snapshot_matrix(snapshots: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """Return ``snapshots`` as a float64 ``(n_snapshots, n_params)`` array, validated."""
    if isinstance(snapshots, torch.Tensor):
        snapshots = snapshots.detach().cpu().numpy()
    matrix = np.asarray(snapshots, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 2:
        raise ValueError(
            f"{name} must have shape (n_snapshots, n_params) with n_params >= 2, "
            f"got {matrix.shape}"
        )
    bad_rows = np.flatnonzero(~np.all(np.isfinite(matrix), axis=1))
    if bad_rows.size:
        raise ValueError(
            f"{name} rows {bad_rows.tolist()} contain NaN or infinite values; drop "
            "them first (for a diverged run, use run.snapshots[: run.diverged_epoch + 1])"
        )
    return matrix


def _principal_directions(centered: np.ndarray, center: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the first two right singular vectors ``(2, P)`` and all singular values."""
    # Thin SVD: U is (T, k), Vt is (k, P) with k = min(T, P).
    _, singular_values, vt = np.linalg.svd(centered, full_matrices=False)
    tolerance = singular_values[0] * max(centered.shape) * np.finfo(np.float64).eps
    rank = int(np.sum(singular_values > tolerance))
    if rank < 2:
        raise ValueError(
            f"the snapshots span {rank} dimension(s) around the {center} snapshot "
            f"(singular values {singular_values[:3].tolist()}); PCA needs at least "
            "three distinct snapshots that do not lie on one line"
        )
    directions = vt[:2].copy()

    # Sign each direction so that its entry of largest magnitude is positive.
    largest = np.argmax(np.abs(directions), axis=1)
    directions *= np.sign(directions[np.arange(2), largest])[:, None]
    return directions, singular_values


def _plane(
    origin: np.ndarray,
    directions: np.ndarray,
    singular_values: np.ndarray,
    kind: str,
    center: str,
    n_snapshots: int,
    extra: dict,
) -> Plane:
    ratios = singular_values**2 / np.sum(singular_values**2)
    return Plane(
        origin=origin,
        d1=directions[0],
        d2=directions[1],
        kind=kind,
        metadata={
            "center": center,
            "n_snapshots": n_snapshots,
            **extra,
            "explained_variance_ratio": [float(r) for r in ratios[:2]],
            "singular_values": [float(s) for s in singular_values],
        },
    )
