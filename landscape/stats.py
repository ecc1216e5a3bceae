"""Bootstrap confidence intervals over runs, and verdicts against a threshold.

Runs are the unit of resampling: a bootstrap sample draws ``n_runs`` run
indices with replacement. Per-run statistics are recomputed on the drawn runs;
pairwise statistics average a precomputed pairwise matrix over the pairs of
draws that are different runs, so a run is never paired with its own
duplicate. Intervals are percentile intervals (Efron and Tibshirani, "An
Introduction to the Bootstrap", 1993, ch. 13).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

DEFAULT_RESAMPLES = 10_000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval."""

    value: float
    low: float
    high: float
    confidence: float
    n_resamples: int


def _generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(DEFAULT_SEED if seed is None else seed)


def _check_settings(n_runs: int, confidence: float, n_resamples: int) -> None:
    if n_runs < 2:
        raise ValueError(f"a bootstrap over runs needs at least 2 runs, got {n_runs}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_resamples < 100:
        raise ValueError(f"n_resamples must be at least 100, got {n_resamples}")


def _interval(value: float, replicates: np.ndarray, confidence: float) -> Interval:
    replicates = replicates[np.isfinite(replicates)]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha])
    return Interval(float(value), float(low), float(high), confidence, len(replicates))


def bootstrap_runs(
    values: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int | np.random.Generator | None = None,
) -> Interval:
    """Bootstrap a statistic of per-run values.

    Parameters
    ----------
    values : array, shape (n_runs,) or (n_runs, ...)
        One entry per run.
    statistic : callable
        Maps an array of shape ``(n_samples, n_runs, ...)`` to ``(n_samples,)``,
        reducing over axis 1, e.g. ``lambda x: x.var(axis=1)``.
    seed : int or numpy.random.Generator, optional
        Resampling seed; ``None`` uses a fixed default so reports are
        reproducible.
    """
    values = np.asarray(values, dtype=np.float64)
    n_runs = values.shape[0]
    _check_settings(n_runs, confidence, n_resamples)
    rng = _generator(seed)
    point = float(statistic(values[None])[0])
    draws = rng.integers(0, n_runs, size=(n_resamples, n_runs))
    replicates = np.asarray(statistic(values[draws]), dtype=np.float64)
    return _interval(point, replicates, confidence)


def bootstrap_pairwise_mean(
    matrix: np.ndarray,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int | np.random.Generator | None = None,
) -> Interval:
    """Bootstrap the mean over distinct run pairs of a symmetric pairwise matrix.

    In each bootstrap sample, pairs of draws that are the same run are left
    out, so duplicates never contribute a trivial self-similarity. A sample
    that draws a single run throughout has no pair and is dropped.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    n_runs = matrix.shape[0]
    if matrix.shape != (n_runs, n_runs):
        raise ValueError(f"pairwise matrix must be square, got shape {matrix.shape}")
    if not np.allclose(matrix, matrix.T, equal_nan=True):
        raise ValueError("pairwise matrix must be symmetric")
    _check_settings(n_runs, confidence, n_resamples)
    rng = _generator(seed)

    off_diagonal = ~np.eye(n_runs, dtype=bool)
    point = float(matrix[off_diagonal].mean())
    draws = rng.integers(0, n_runs, size=(n_resamples, n_runs))
    pair_values = matrix[draws[:, :, None], draws[:, None, :]]
    distinct = draws[:, :, None] != draws[:, None, :]
    counts = distinct.sum(axis=(1, 2))
    sums = np.where(distinct, pair_values, 0.0).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        replicates = np.where(counts > 0, sums / counts, np.nan)
    return _interval(point, replicates, confidence)


def verdict(interval: Interval, threshold: float, direction: str) -> str:
    """Judge a claim ``statistic <direction> threshold`` from its interval.

    Returns ``"supported"`` when the whole interval lies strictly on the
    claimed side of ``threshold``, ``"refuted"`` when it lies wholly on the
    other side (touching the threshold counts as the other side), and
    ``"inconclusive"`` when it straddles the threshold.
    """
    if direction == ">":
        if interval.low > threshold:
            return "supported"
        if interval.high <= threshold:
            return "refuted"
        return "inconclusive"
    if direction == "<":
        if interval.high < threshold:
            return "supported"
        if interval.low >= threshold:
            return "refuted"
        return "inconclusive"
    raise ValueError(f"direction must be '>' or '<', got {direction!r}")


def tightest_threshold(interval: Interval, direction: str) -> float:
    """Return the strictest threshold the interval still supports.

    For ``statistic > t`` that is the interval's lower end; for
    ``statistic < t`` its upper end. A claim with any threshold beyond that
    bound, on the claimed side, would be supported.
    """
    if direction == ">":
        return interval.low
    if direction == "<":
        return interval.high
    raise ValueError(f"direction must be '>' or '<', got {direction!r}")
