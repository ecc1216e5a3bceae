"""A re-implementation of the original group's loss-surface loop, as a baseline.

The group evaluated a grid the direct way. They split the grid points into
chunks and deep-copied the model once per chunk. For each point they wrote
the flat weights into the copy with ``torch.nn.utils.vector_to_parameters``
and ran the forward pass over the whole test set. The chunks ran in parallel
with joblib. Their notebook is not part of this repository, so three details
are our choices:

- One chunk per grid row (21 chunks for a 21 x 21 grid), as a notebook loop
  over rows would give, so that two workers finish at about the same time.
- ``n_jobs=2``, one worker per core of the 2-core machine the benchmarks were
  written on, each with one torch thread. joblib's default loky backend sets
  the same thread limit (cores // n_jobs) in its workers.
- The data go to the workers as NumPy arrays, which joblib memory-maps
  instead of pickling 31 MB per chunk. That favors the baseline.

The module is imported by name in joblib's worker processes, so it must stay
importable from the ``benchmarks/`` folder (pytest puts it on ``sys.path``).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from joblib import Parallel, delayed
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import vector_to_parameters

N_JOBS = 2


def group_surface(
    model: nn.Module,
    origin: np.ndarray,
    d1: np.ndarray,
    d2: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    alphas: np.ndarray,
    betas: np.ndarray,
    *,
    n_jobs: int = N_JOBS,
) -> np.ndarray:
    """Return the mean cross-entropy (nats) at ``origin + alphas[i] * d1 + betas[j] * d2``.

    Parameters
    ----------
    model : nn.Module
        Supplies the architecture; its weights are overwritten in copies only.
    origin, d1, d2 : np.ndarray
        float32 flat vectors with one entry per parameter, in
        ``model.parameters()`` order.
    x, y : np.ndarray
        float32 inputs ``(n_samples, n_features)`` and int64 labels ``(n_samples,)``.
    alphas, betas : np.ndarray
        Grid coordinates.
    n_jobs : int, default=2
        joblib worker processes.

    Returns
    -------
    np.ndarray
        float64, shape ``(len(alphas), len(betas))``.
    """
    rows = Parallel(n_jobs=n_jobs)(
        delayed(_evaluate_row)(model, origin, d1, d2, x, y, float(alpha), betas)
        for alpha in alphas
    )
    return np.array(rows, dtype=np.float64)


def _evaluate_row(
    model: nn.Module,
    origin: np.ndarray,
    d1: np.ndarray,
    d2: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    alpha: float,
    betas: np.ndarray,
) -> list[float]:
    """Evaluate one chunk (a grid row) in a worker, on a deep copy of the model."""
    torch.set_num_threads(1)
    moved = copy.deepcopy(model)
    # joblib passes large arrays as read-only memory maps, and torch warns on those.
    inputs, labels = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y))
    origin, d1, d2 = (torch.from_numpy(np.array(v)) for v in (origin, d1, d2))
    losses = []
    with torch.no_grad():
        for beta in betas:
            vector_to_parameters(origin + alpha * d1 + float(beta) * d2, moved.parameters())
            losses.append(F.cross_entropy(moved(inputs), labels).item())
    return losses


def start_workers(n_jobs: int = N_JOBS) -> None:
    """Start joblib's reusable workers and import torch in them, outside any timing."""
    Parallel(n_jobs=n_jobs)(delayed(torch.get_num_threads)() for _ in range(n_jobs))
