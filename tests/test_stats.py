"""Tests of the bootstrap intervals and verdicts in landscape.stats."""

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from landscape import metrics, stats
from landscape.stats import Interval

RESAMPLES = 2000


def mean_over_runs(samples):
    return samples.mean(axis=1)


def variance_over_runs(samples):
    return samples.var(axis=1)


def interval(low, high, value=None):
    value = (low + high) / 2 if value is None else value
    return Interval(value=value, low=low, high=high, confidence=0.95, n_resamples=1000)


@given(st.integers(0, 2**32 - 1), st.integers(4, 20))
def test_bootstrap_runs_interval_contains_point_mean(data_seed, n_runs):
    values = np.random.default_rng(data_seed).normal(0.9, 0.05, n_runs)

    result = stats.bootstrap_runs(values, mean_over_runs, n_resamples=RESAMPLES, seed=1)

    assert result.value == pytest.approx(values.mean(), abs=1e-15)
    assert result.low <= result.value <= result.high


def test_bootstrap_runs_interval_contains_point_variance():
    values = np.random.default_rng(5).normal(0.97, 0.01, 8)

    result = stats.bootstrap_runs(values, variance_over_runs, n_resamples=RESAMPLES)

    assert result.value == pytest.approx(values.var())
    assert result.low < result.value < result.high


def test_bootstrap_runs_narrow_when_runs_agree():
    rng = np.random.default_rng(2)
    agreeing = 0.9 + 1e-6 * rng.normal(size=8)
    scattered = 0.9 + 1e-1 * rng.normal(size=8)

    tight = stats.bootstrap_runs(agreeing, mean_over_runs, n_resamples=RESAMPLES)
    wide = stats.bootstrap_runs(scattered, mean_over_runs, n_resamples=RESAMPLES)

    assert tight.high - tight.low < 1e-5
    assert wide.high - wide.low > 1e-2


def test_bootstrap_runs_identical_runs_give_point_interval():
    result = stats.bootstrap_runs(np.full(6, 0.25), mean_over_runs, n_resamples=RESAMPLES)

    assert (result.value, result.low, result.high) == (0.25, 0.25, 0.25)


def test_bootstrap_runs_accepts_multidimensional_values():
    values = np.arange(12.0).reshape(4, 3)

    result = stats.bootstrap_runs(
        values, lambda samples: samples.sum(axis=2).mean(axis=1), n_resamples=RESAMPLES
    )

    assert result.value == pytest.approx(values.sum(axis=1).mean())
    assert result.low <= result.value <= result.high


def test_bootstrap_runs_reports_settings():
    result = stats.bootstrap_runs(
        np.arange(5.0), mean_over_runs, confidence=0.9, n_resamples=500
    )

    assert result.confidence == 0.9
    assert result.n_resamples == 500


def test_bootstrap_runs_wider_at_higher_confidence():
    values = np.random.default_rng(4).normal(size=10)

    narrow = stats.bootstrap_runs(values, mean_over_runs, confidence=0.5, n_resamples=RESAMPLES)
    wide = stats.bootstrap_runs(values, mean_over_runs, confidence=0.99, n_resamples=RESAMPLES)

    assert wide.low < narrow.low
    assert wide.high > narrow.high


def test_bootstrap_runs_reproducible_with_seed():
    values = np.random.default_rng(6).normal(size=8)

    first = stats.bootstrap_runs(values, mean_over_runs, n_resamples=RESAMPLES, seed=11)
    again = stats.bootstrap_runs(values, mean_over_runs, n_resamples=RESAMPLES, seed=11)
    other = stats.bootstrap_runs(values, mean_over_runs, n_resamples=RESAMPLES, seed=12)

    assert first == again
    assert (first.low, first.high) != (other.low, other.high)


def test_bootstrap_runs_default_seed_is_fixed():
    values = np.random.default_rng(6).normal(size=8)

    assert stats.bootstrap_runs(values, mean_over_runs, n_resamples=RESAMPLES) == (
        stats.bootstrap_runs(values, mean_over_runs, n_resamples=RESAMPLES, seed=stats.DEFAULT_SEED)
    )


def test_bootstrap_runs_accepts_generator():
    values = np.random.default_rng(6).normal(size=8)

    from_generator = stats.bootstrap_runs(
        values, mean_over_runs, n_resamples=RESAMPLES, seed=np.random.default_rng(3)
    )

    assert from_generator == stats.bootstrap_runs(values, mean_over_runs, n_resamples=RESAMPLES, seed=3)


def test_bootstrap_pairwise_mean_never_pairs_run_with_itself():
    # Self-pairs would be 1; every pair of distinct runs is 0.
    matrix = np.eye(8)

    result = stats.bootstrap_pairwise_mean(matrix, n_resamples=RESAMPLES)

    assert (result.value, result.low, result.high) == (0.0, 0.0, 0.0)


@given(st.integers(2, 8), st.floats(-1, 1, allow_subnormal=False))
def test_bootstrap_pairwise_mean_of_constant_pairs(n_runs, level):
    matrix = np.full((n_runs, n_runs), level)
    np.fill_diagonal(matrix, 1.0)

    result = stats.bootstrap_pairwise_mean(matrix, n_resamples=200)

    assert result.value == pytest.approx(level, abs=1e-12)
    assert result.low == pytest.approx(level, abs=1e-12)
    assert result.high == pytest.approx(level, abs=1e-12)


@given(st.integers(0, 2**32 - 1), st.integers(3, 10))
def test_bootstrap_pairwise_mean_interval_contains_point(data_seed, n_runs):
    series = np.random.default_rng(data_seed).normal(size=(n_runs, 12))
    matrix = metrics.cosine_matrix(series)

    result = stats.bootstrap_pairwise_mean(matrix, n_resamples=RESAMPLES, seed=0)

    assert result.value == pytest.approx(metrics.mean_off_diagonal(matrix), abs=1e-12)
    assert result.low <= result.value <= result.high
    assert -1.0 <= result.low
    assert result.high <= 1.0


def test_bootstrap_pairwise_mean_drops_samples_without_pair():
    # With two runs, half of all samples draw one run twice and have no pair.
    matrix = np.array([[1.0, 0.3], [0.3, 1.0]])

    result = stats.bootstrap_pairwise_mean(matrix, n_resamples=RESAMPLES)

    assert 0.4 * RESAMPLES < result.n_resamples < 0.6 * RESAMPLES
    assert (result.low, result.high) == (0.3, 0.3)


def test_bootstrap_pairwise_mean_reproducible_with_seed():
    matrix = metrics.pearson_matrix(np.random.default_rng(7).normal(size=(6, 10)))

    first = stats.bootstrap_pairwise_mean(matrix, n_resamples=RESAMPLES, seed=5)

    assert first == stats.bootstrap_pairwise_mean(matrix, n_resamples=RESAMPLES, seed=5)
    assert first != stats.bootstrap_pairwise_mean(matrix, n_resamples=RESAMPLES, seed=6)


def test_bootstrap_pairwise_mean_rejects_non_square_matrix():
    with pytest.raises(ValueError, match=re.escape("pairwise matrix must be square, got shape (2, 3)")):
        stats.bootstrap_pairwise_mean(np.zeros((2, 3)))


def test_bootstrap_pairwise_mean_rejects_asymmetric_matrix():
    with pytest.raises(ValueError, match="pairwise matrix must be symmetric"):
        stats.bootstrap_pairwise_mean(np.array([[1.0, 0.2], [0.5, 1.0]]))


def test_bootstrap_runs_rejects_single_run():
    with pytest.raises(ValueError, match="a bootstrap over runs needs at least 2 runs, got 1"):
        stats.bootstrap_runs(np.array([0.9]), mean_over_runs)


def test_bootstrap_pairwise_mean_rejects_single_run():
    with pytest.raises(ValueError, match="needs at least 2 runs, got 1"):
        stats.bootstrap_pairwise_mean(np.ones((1, 1)))


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.1, 95])
def test_bootstrap_rejects_confidence_outside_unit_interval(confidence):
    message = re.escape(f"confidence must lie in (0, 1), got {confidence}")

    with pytest.raises(ValueError, match=message):
        stats.bootstrap_runs(np.arange(4.0), mean_over_runs, confidence=confidence)
    with pytest.raises(ValueError, match=message):
        stats.bootstrap_pairwise_mean(np.eye(4), confidence=confidence)


def test_bootstrap_rejects_too_few_resamples():
    with pytest.raises(ValueError, match="n_resamples must be at least 100, got 99"):
        stats.bootstrap_runs(np.arange(4.0), mean_over_runs, n_resamples=99)


@pytest.mark.parametrize(
    ("low", "high", "threshold", "expected"),
    [
        (0.6, 0.9, 0.5, "supported"),
        (0.5, 0.9, 0.5, "inconclusive"),  # low end touches the threshold
        (0.4, 0.6, 0.5, "inconclusive"),
        (0.1, 0.5, 0.5, "refuted"),  # high end touches the threshold
        (0.1, 0.4, 0.5, "refuted"),
        (0.5, 0.5, 0.5, "refuted"),
    ],
)
def test_verdict_greater_than(low, high, threshold, expected):
    assert stats.verdict(interval(low, high), threshold, ">") == expected


@pytest.mark.parametrize(
    ("low", "high", "threshold", "expected"),
    [
        (0.1, 0.4, 0.5, "supported"),
        (0.1, 0.5, 0.5, "inconclusive"),  # high end touches the threshold
        (0.4, 0.6, 0.5, "inconclusive"),
        (0.5, 0.9, 0.5, "refuted"),  # low end touches the threshold
        (0.6, 0.9, 0.5, "refuted"),
        (0.5, 0.5, 0.5, "refuted"),
    ],
)
def test_verdict_less_than(low, high, threshold, expected):
    assert stats.verdict(interval(low, high), threshold, "<") == expected


def test_verdict_ignores_point_value():
    outside = interval(0.6, 0.9, value=0.1)

    assert stats.verdict(outside, 0.5, ">") == "supported"


@pytest.mark.parametrize("direction", ["=", ">=", "", "gt"])
def test_verdict_rejects_unknown_direction(direction):
    with pytest.raises(ValueError, match=re.escape(f"direction must be '>' or '<', got {direction!r}")):
        stats.verdict(interval(0.1, 0.2), 0.5, direction)


def test_tightest_threshold_is_interval_end():
    result = interval(0.2, 0.7)

    assert stats.tightest_threshold(result, ">") == 0.2
    assert stats.tightest_threshold(result, "<") == 0.7


@given(
    st.floats(-10, 10, allow_subnormal=False),
    st.floats(0, 5, allow_subnormal=False),
    st.sampled_from([">", "<"]),
)
def test_tightest_threshold_is_supported_boundary(low, width, direction):
    result = interval(low, low + width)
    bound = stats.tightest_threshold(result, direction)
    step = 1e-6 if direction == ">" else -1e-6

    # Thresholds beyond the bound on the claimed side are supported; the bound is not.
    assert stats.verdict(result, bound - step, direction) == "supported"
    assert stats.verdict(result, bound, direction) != "supported"


def test_tightest_threshold_rejects_unknown_direction():
    with pytest.raises(ValueError, match=re.escape("direction must be '>' or '<', got '='")):
        stats.tightest_threshold(interval(0.1, 0.2), "=")
