"""Tests of the pairwise statistics and convergence measures in landscape.metrics."""

import re

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats as scipy_stats
from sklearn.metrics.pairwise import cosine_similarity

from landscape import metrics

# Values of the size of losses, gradient norms and weights. Subnormal numbers
# are left out because their squares underflow to zero.
values = st.floats(-100, 100, allow_nan=False, allow_subnormal=False)
positive_factors = st.floats(0.1, 10, allow_subnormal=False)
offsets = st.floats(-10, 10, allow_subnormal=False)


def stacks(min_columns=2):
    return hnp.arrays(
        np.float64,
        st.tuples(st.integers(2, 6), st.integers(min_columns, 12)),
        elements=values,
    )


def series_stacks():
    """Stacks whose rows each vary enough for Pearson r to be well conditioned."""
    return stacks(min_columns=3).filter(lambda rows: np.ptp(rows, axis=1).min() > 1e-2)


def vector_stacks():
    """Stacks whose rows are all clearly non-zero."""
    return stacks().filter(lambda rows: np.linalg.norm(rows, axis=1).min() > 1e-2)


def assert_similarity_matrix(matrix, n_rows):
    assert matrix.shape == (n_rows, n_rows)
    np.testing.assert_allclose(matrix, matrix.T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.diag(matrix), 1.0, rtol=0, atol=1e-12)
    assert matrix.min() >= -1.0
    assert matrix.max() <= 1.0


@given(series_stacks())
def test_pearson_matrix_symmetric_bounded_unit_diagonal(rows):
    assert_similarity_matrix(metrics.pearson_matrix(rows), len(rows))


@given(series_stacks())
def test_pearson_matrix_matches_numpy_corrcoef(rows):
    np.testing.assert_allclose(metrics.pearson_matrix(rows), np.corrcoef(rows), rtol=0, atol=1e-9)


def test_pearson_matrix_matches_scipy_pearsonr():
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(3, 30))
    rows[1] += 0.8 * rows[0]

    matrix = metrics.pearson_matrix(rows)

    for i, j in [(0, 1), (0, 2), (1, 2)]:
        expected = scipy_stats.pearsonr(rows[i], rows[j]).statistic
        assert matrix[i, j] == pytest.approx(expected, abs=1e-12)


@given(
    series_stacks(),
    st.lists(positive_factors, min_size=6, max_size=6),
    st.lists(offsets, min_size=6, max_size=6),
)
def test_pearson_matrix_invariant_to_positive_affine_maps(rows, scales, shifts):
    n_rows = len(rows)
    mapped = np.array(scales[:n_rows])[:, None] * rows + np.array(shifts[:n_rows])[:, None]

    np.testing.assert_allclose(
        metrics.pearson_matrix(mapped), metrics.pearson_matrix(rows), rtol=0, atol=1e-7
    )


@given(series_stacks())
def test_pearson_matrix_flips_sign_with_negated_row(rows):
    flipped = rows.copy()
    flipped[0] = -flipped[0]

    original = metrics.pearson_matrix(rows)
    negated = metrics.pearson_matrix(flipped)

    np.testing.assert_allclose(negated[0, 1:], -original[0, 1:], rtol=0, atol=1e-12)
    np.testing.assert_allclose(negated[1:, 1:], original[1:, 1:], rtol=0, atol=1e-12)


@given(
    series_stacks(),
    st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False),
    st.integers(0, 5),
)
def test_pearson_matrix_rejects_constant_row(rows, level, position):
    index = position % len(rows)
    rows = rows.copy()
    rows[index] = level

    with pytest.raises(ValueError, match=re.escape(f"rows [{index}] are constant; Pearson r is undefined")):
        metrics.pearson_matrix(rows)


def test_pearson_matrix_rejects_constant_row_with_inexact_mean():
    # The mean of three 0.1s is not exactly 0.1 in binary floating point.
    rows = np.array([[0.1, 0.1, 0.1], [1.0, 2.0, 3.0]])

    with pytest.raises(ValueError, match=re.escape("rows [0] are constant")):
        metrics.pearson_matrix(rows)


@given(vector_stacks())
def test_cosine_matrix_symmetric_bounded_unit_diagonal(rows):
    assert_similarity_matrix(metrics.cosine_matrix(rows), len(rows))


@given(vector_stacks())
def test_cosine_matrix_matches_sklearn(rows):
    np.testing.assert_allclose(metrics.cosine_matrix(rows), cosine_similarity(rows), rtol=0, atol=1e-9)


@given(vector_stacks(), st.lists(st.floats(1e-3, 1e3), min_size=6, max_size=6))
def test_cosine_matrix_invariant_to_positive_scaling(rows, scales):
    scaled = np.array(scales[: len(rows)])[:, None] * rows

    np.testing.assert_allclose(
        metrics.cosine_matrix(scaled), metrics.cosine_matrix(rows), rtol=0, atol=1e-9
    )


def test_cosine_matrix_of_orthogonal_and_opposite_vectors():
    rows = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])

    np.testing.assert_allclose(
        metrics.cosine_matrix(rows),
        [[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 1.0]],
        atol=1e-15,
    )


def test_cosine_matrix_rejects_zero_vector():
    rows = np.array([[1.0, 2.0], [0.0, 0.0], [3.0, 1.0], [0.0, 0.0]])

    with pytest.raises(ValueError, match=re.escape("rows [1, 3] are zero vectors; cosine similarity is undefined")):
        metrics.cosine_matrix(rows)


@pytest.mark.parametrize(
    "function", [metrics.pearson_matrix, metrics.cosine_matrix, metrics.normalized_distance_matrix]
)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_pairwise_functions_reject_non_finite_values(function, bad):
    rows = np.array([[1.0, 2.0, 3.0], [2.0, bad, 1.0]])

    with pytest.raises(ValueError, match="contains NaN or infinite values"):
        function(rows)


@pytest.mark.parametrize(
    "function", [metrics.pearson_matrix, metrics.cosine_matrix, metrics.normalized_distance_matrix]
)
@pytest.mark.parametrize(
    "shape", [(1, 5), (5,), (2, 3, 4)], ids=["one-run", "one-dimensional", "three-dimensional"]
)
def test_pairwise_functions_reject_bad_shape(function, shape):
    with pytest.raises(ValueError, match=re.escape(f"with n_runs >= 2, got {shape}")):
        function(np.ones(shape))


@given(stacks())
def test_normalized_distance_bounded_symmetric_zero_diagonal(rows):
    matrix = metrics.normalized_distance_matrix(rows)

    assert matrix.shape == (len(rows), len(rows))
    assert matrix.min() >= 0.0
    assert matrix.max() <= 1.0
    np.testing.assert_array_equal(np.diag(matrix), 0.0)
    np.testing.assert_array_equal(matrix, matrix.T)


@given(stacks())
def test_normalized_distance_matrix_matches_definition(rows):
    norms = np.linalg.norm(rows, axis=1)
    assume(norms.min() > 1e-2)
    expected = np.array(
        [
            [np.linalg.norm(a - b) / (np.linalg.norm(a) + np.linalg.norm(b)) for b in rows]
            for a in rows
        ]
    )

    np.testing.assert_allclose(metrics.normalized_distance_matrix(rows), expected, rtol=0, atol=1e-12)


@given(hnp.arrays(np.float64, st.integers(1, 12), elements=values), st.integers(2, 5))
def test_normalized_distance_matrix_is_zero_for_identical_rows(row, copies):
    matrix = metrics.normalized_distance_matrix(np.tile(row, (copies, 1)))

    np.testing.assert_array_equal(matrix, 0.0)


def test_normalized_distance_matrix_hand_values():
    rows = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])

    matrix = metrics.normalized_distance_matrix(rows)

    assert matrix[0, 1] == pytest.approx(1.0)  # opposite vectors
    assert matrix[0, 2] == pytest.approx(np.sqrt(2) / 2)  # orthogonal unit vectors
    assert matrix[0, 3] == pytest.approx(1.0)  # a vector and the origin
    assert matrix[3, 3] == 0.0


def test_mean_off_diagonal_averages_distinct_pairs():
    matrix = np.array([[100.0, 1.0, 2.0], [1.0, 100.0, 3.0], [2.0, 3.0, 100.0]])

    assert metrics.mean_off_diagonal(matrix) == pytest.approx(2.0)


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (4,)])
def test_mean_off_diagonal_rejects_bad_shape(shape):
    with pytest.raises(ValueError, match=re.escape(f"got shape {shape}")):
        metrics.mean_off_diagonal(np.zeros(shape))


def test_convergence_epoch_never_returns_before_first():
    # A loss that is flat from the start settles at once, but indices below
    # ``first`` (5) are not candidates.
    assert metrics.convergence_epoch(np.full(12, 0.3)) == 5


def test_convergence_epoch_returns_last_index_without_settling():
    losses = np.linspace(2.0, 1.0, 10)  # every change is about 0.11

    assert metrics.convergence_epoch(losses) == 9


def test_convergence_epoch_waits_for_full_window():
    # Changes |L[j] - L[j-1]| are 1 for j = 1..6 and 0 from j = 7 on, so the
    # first index whose four preceding changes (j = i-4 .. i-1) are all 0 is 11.
    losses = np.array([10, 9, 8, 7, 6, 5, 4, 4, 4, 4, 4, 4, 4, 4], dtype=float)

    assert metrics.convergence_epoch(losses) == 11


def test_convergence_epoch_needs_changes_strictly_below_tolerance():
    losses = np.arange(10) * 0.5  # every change is exactly 0.5

    assert metrics.convergence_epoch(losses, tolerance=0.5) == 9
    assert metrics.convergence_epoch(losses, tolerance=0.5000001) == 5


def test_convergence_epoch_custom_window_and_first():
    losses = np.array([5, 4, 3, 3, 3, 3, 3, 3], dtype=float)

    # Changes are 0 from j = 3 on; window 2 needs j = i-2 >= 3.
    assert metrics.convergence_epoch(losses, window=2, first=3) == 5
    assert metrics.convergence_epoch(losses, window=2, first=6) == 6


def test_convergence_epoch_of_short_sequence_is_last_index():
    # No index reaches ``first``, so the documented fallback applies.
    assert metrics.convergence_epoch(np.array([3.0, 2.0, 1.0])) == 2


@given(
    hnp.arrays(
        np.float64,
        st.integers(6, 30),
        elements=st.sampled_from([0.0, 1e-4, 5e-4, 2e-3, 0.1]),
    ).map(np.cumsum),
    st.integers(1, 4),
    st.integers(0, 3),
)
def test_convergence_epoch_matches_definition(losses, window, extra):
    first = window + 1 + extra
    tolerance = 1e-3

    def settled(i):
        return all(abs(losses[j] - losses[j - 1]) < tolerance for j in range(i - window, i))

    candidates = [i for i in range(first, len(losses)) if settled(i)]
    expected = candidates[0] if candidates else len(losses) - 1

    assert metrics.convergence_epoch(losses, tolerance=tolerance, window=window, first=first) == expected


@pytest.mark.parametrize("first", [2, 4])
def test_convergence_epoch_rejects_first_not_after_window(first):
    with pytest.raises(ValueError, match=re.escape(f"first ({first}) must be > window (4)")):
        metrics.convergence_epoch(np.ones(10), window=4, first=first)


@pytest.mark.parametrize("losses", [np.array([]), np.ones((3, 3))], ids=["empty", "two-dimensional"])
def test_convergence_epoch_rejects_bad_shape(losses):
    with pytest.raises(ValueError, match=re.escape(f"non-empty 1-D array, got shape {losses.shape}")):
        metrics.convergence_epoch(losses)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ((0.0, 0.0, 0.0, 1.0), 1.0),
        ((1.0, 1.0, 10.0, 0.0), 0.15 + 0.15 + 0.1),
        ((0.02, 0.05, 3.0, 0.9), 0.3 / 1.02 + 0.3 / 1.05 + 0.2 / 1.3 + 0.18),
        ((0.0, 0.0, 0.0, -1.0), 0.6),
    ],
)
def test_convex_score_formula(arguments, expected):
    assert metrics.convex_score(*arguments) == pytest.approx(expected, rel=1e-12)
