"""Statistics of trained runs: correlations, similarities, distances, convergence.

Pairwise functions take a stack of per-run vectors, shape ``(n_runs, d)``,
and return a symmetric ``(n_runs, n_runs)`` matrix; :func:`mean_off_diagonal`
turns one into the mean over distinct pairs.
"""

from __future__ import annotations

import numpy as np


def _as_rows(vectors: np.ndarray, name: str) -> np.ndarray:
    rows = np.asarray(vectors, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] < 2:
        raise ValueError(
            f"{name} must have shape (n_runs, d) with n_runs >= 2, got {rows.shape}"
        )
    if not np.all(np.isfinite(rows)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return rows


def pearson_matrix(series: np.ndarray) -> np.ndarray:
    """Return the Pearson correlation between every pair of rows of ``series``.

    Parameters
    ----------
    series : array, shape (n_runs, n_epochs)

    Raises
    ------
    ValueError
        If a row is constant, since its correlation is undefined.
    """
    rows = _as_rows(series, "series")
    if rows.shape[1] < 3:
        raise ValueError(
            f"series have {rows.shape[1]} points; Pearson r of 2 points is always "
            "+1 or -1, so at least 3 are needed"
        )
    centered = rows - rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centered, axis=1)
    # Check the values themselves too, because rounding in the mean leaves a
    # constant row such as [0.1, 0.1, 0.1] with a tiny non-zero norm.
    degenerate = (np.ptp(rows, axis=1) == 0) | (norms == 0)
    if np.any(degenerate):
        constant = np.flatnonzero(degenerate).tolist()
        raise ValueError(f"rows {constant} are constant; Pearson r is undefined for them")
    unit = centered / norms[:, None]
    return np.clip(unit @ unit.T, -1.0, 1.0)


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Return the cosine similarity between every pair of rows of ``vectors``."""
    rows = _as_rows(vectors, "vectors")
    norms = np.linalg.norm(rows, axis=1)
    if np.any(norms == 0):
        zero = np.flatnonzero(norms == 0).tolist()
        raise ValueError(f"rows {zero} are zero vectors; cosine similarity is undefined")
    unit = rows / norms[:, None]
    return np.clip(unit @ unit.T, -1.0, 1.0)


def normalized_distance_matrix(vectors: np.ndarray) -> np.ndarray:
    """Return ``||w_i - w_j|| / (||w_i|| + ||w_j||)`` for every pair of rows.

    Values lie in [0, 1]: 0 for equal vectors, 1 for opposite ones.
    """
    rows = _as_rows(vectors, "vectors")
    norms = np.linalg.norm(rows, axis=1)
    # Subtract the vectors themselves: expanding ||w_i - w_j||^2 through dot
    # products cancels badly for close vectors (errors near sqrt(machine
    # epsilon) relative to the norms) and gives a slightly asymmetric matrix.
    n_rows = len(rows)
    ratio = np.zeros((n_rows, n_rows))
    for i in range(n_rows):
        for j in range(i + 1, n_rows):
            denominator = norms[i] + norms[j]
            if denominator > 0:
                ratio[i, j] = ratio[j, i] = np.linalg.norm(rows[i] - rows[j]) / denominator
    return np.clip(ratio, 0.0, 1.0)


def mean_off_diagonal(matrix: np.ndarray) -> float:
    """Return the mean of ``matrix`` over distinct pairs ``i != j``."""
    matrix = np.asarray(matrix, dtype=np.float64)
    n = matrix.shape[0]
    if matrix.shape != (n, n) or n < 2:
        raise ValueError(f"expected a square matrix of size >= 2, got shape {matrix.shape}")
    return float(matrix[~np.eye(n, dtype=bool)].mean())


def convergence_epoch(losses: np.ndarray, *, tolerance: float = 1e-3, window: int = 4,
                      first: int = 5) -> int:
    """Return the first epoch at which the training loss has settled.

    That is the smallest 0-based index ``i >= first`` whose ``window``
    preceding changes ``|L[j] - L[j-1]|``, ``j = i-window ... i-1``, are all
    below ``tolerance``; if there is none, the last index. This is the
    definition the original study used.
    """
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 1 or len(losses) == 0:
        raise ValueError(f"losses must be a non-empty 1-D array, got shape {losses.shape}")
    # The earliest change counted for index i is |L[i-window] - L[i-window-1]|,
    # which exists only for i > window.
    if first <= window:
        raise ValueError(f"first ({first}) must be > window ({window})")
    changes = np.abs(np.diff(losses))  # changes[k] = |L[k+1] - L[k]|
    for i in range(first, len(losses)):
        # Changes at j = i-window .. i-1 are changes[j-1].
        if np.all(changes[i - window - 1 : i - 1] < tolerance):
            return i
    return len(losses) - 1


def convex_score(
    accuracy_std: float,
    final_loss_std: float,
    convergence_epoch_std: float,
    mean_grad_norm_correlation: float,
) -> float:
    """Return the original study's "convex score".

    ``0.3/(1+std acc) + 0.3/(1+std final loss) + 0.2/(1+std convergence epoch/10)
    + 0.2*(mean gradient-norm correlation)``. It is reported for comparison
    only; it has no units and no threshold.
    """
    return (
        0.3 / (1 + accuracy_std)
        + 0.3 / (1 + final_loss_std)
        + 0.2 / (1 + convergence_epoch_std / 10)
        + 0.2 * mean_grad_norm_correlation
    )
