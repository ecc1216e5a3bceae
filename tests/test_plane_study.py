"""Tests of landscape.plane_study: grids that cover trajectories, evaluation data, axis labels."""

import doctest

import numpy as np
import pytest

from landscape import plane_study
from landscape.data import dataset_from_arrays
from landscape.directions import Plane
from landscape.plane_study import (
    covering_axis,
    covering_grid,
    evaluation_data,
    pca_axis_labels,
)


def test_doctests_pass():
    result = doctest.testmod(plane_study)

    assert result.attempted >= 2
    assert result.failed == 0


@pytest.mark.parametrize(
    ("low", "high", "n"),
    [(-1.0, 3.0, 5), (-5.058, 28.66, 21), (-0.3, 0.1, 21), (-2.0, 2.0, 4), (-1e-3, 7.0, 3),
     (-7.0, 0.2, 10)],
    ids=["exact", "trajectory-like", "mostly-negative", "even-n", "tiny-negative", "mostly-negative-even"],
)
def test_covering_axis_covers_range_with_zero_on_grid(low, high, n):
    axis = covering_axis(low, high, n)

    assert len(axis) == n
    assert axis[0] <= low
    assert axis[-1] >= high
    assert np.count_nonzero(axis == 0.0) == 1
    assert np.all(np.diff(axis) > 0)
    np.testing.assert_allclose(np.diff(axis), np.diff(axis)[0], rtol=1e-9)


def test_covering_axis_is_no_wider_than_symmetric_range():
    low, high, n = -1.0, 9.0, 21

    axis = covering_axis(low, high, n)

    symmetric_width = 2 * max(-low, high)
    assert axis[-1] - axis[0] < symmetric_width
    # Spacing h = 0.5 puts 0 at index 2 and reaches exactly -1 and 9.
    np.testing.assert_allclose(axis[[0, -1]], [-1.0, 9.0])


def test_covering_axis_widens_range_to_include_zero():
    axis = covering_axis(2.0, 4.0, 5)

    np.testing.assert_allclose(axis, [0.0, 1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize(
    ("low", "high", "n", "match"),
    [
        (-1.0, 1.0, 2, "needs n >= 3"),
        (0.0, 0.0, 5, "span no width"),
        (1.0, -1.0, 5, "need finite low <= high"),
        (np.nan, 1.0, 5, "need finite low <= high"),
        (-1.0, 1.0, 1, "n must be an int of at least 2"),
        (-1.0, 1.0, 5.0, "n must be an int of at least 2"),
    ],
    ids=["n-too-small", "zero-width", "reversed", "nan", "one-point", "float-n"],
)
def test_covering_axis_rejects_bad_input(low, high, n, match):
    with pytest.raises(ValueError, match=match):
        covering_axis(low, high, n)


def test_covering_grid_adds_margin_per_axis():
    coords = np.array([[0.0, 0.0], [10.0, -2.0], [4.0, 1.0]])

    alphas, betas = covering_grid([coords], 11, margin=0.1)

    assert alphas[0] <= -1.0
    assert alphas[-1] >= 11.0
    assert betas[0] <= -2.3
    assert betas[-1] >= 1.3
    assert 0.0 in alphas
    assert 0.0 in betas


def test_covering_grid_skips_non_finite_rows():
    coords = np.array([[-1.0, -1.0], [3.0, 2.0], [np.nan, 50.0]])

    alphas, betas = covering_grid([coords], 5, margin=0.0)

    np.testing.assert_allclose(alphas[[0, -1]], [-1.0, 3.0])
    # 50 sits in a row with a NaN, so only -1 to 2 is covered, with spacing 1.
    np.testing.assert_allclose(np.diff(betas), 1.0)
    assert betas[0] <= -1.0
    assert betas[-1] >= 2.0


def test_covering_grid_widens_flat_axis():
    coords = np.array([[0.0, 0.0], [3.0, 0.0]])

    alphas, betas = covering_grid([coords], 5, margin=0.0)

    assert alphas[-1] >= 3.0
    # Every beta is 0, so the axis is widened to max(|0|, 1) = 1 around 0.
    assert betas[0] <= -0.5
    assert betas[-1] >= 0.5


def test_covering_grid_rejects_no_coordinates():
    with pytest.raises(ValueError, match="no finite trajectory coordinates"):
        covering_grid([np.full((2, 2), np.nan)], 5)


def test_covering_grid_rejects_negative_margin():
    with pytest.raises(ValueError, match="margin must be >= 0"):
        covering_grid([np.zeros((2, 2))], 5, margin=-0.1)


@pytest.fixture(scope="module")
def small_dataset():
    rng = np.random.default_rng(0)
    return dataset_from_arrays(
        "small", rng.standard_normal((8, 4)), np.arange(8) % 3,
        rng.standard_normal((6, 4)), np.arange(6) % 3,
    )


def test_evaluation_data_takes_first_samples(small_dataset):
    x, y = evaluation_data(small_dataset, 4)

    assert x.shape == (4, 4)
    assert np.array_equal(x.numpy(), small_dataset.x_test[:4].numpy())
    assert np.array_equal(y.numpy(), small_dataset.y_test[:4].numpy())


def test_evaluation_data_defaults_to_whole_test_set(small_dataset):
    x, y = evaluation_data(small_dataset)

    assert len(x) == len(y) == 6


@pytest.mark.parametrize("samples", [0, 7, 2.0, True], ids=["zero", "too-many", "float", "bool"])
def test_evaluation_data_rejects_bad_sample_count(small_dataset, samples):
    with pytest.raises(ValueError, match=r"samples must be an int from 1 to 6 \(the size of the small test set\)"):
        evaluation_data(small_dataset, samples)


def test_pca_axis_labels_format_ratios():
    plane = Plane(origin=np.zeros(3), d1=[1.0, 0, 0], d2=[0, 1.0, 0], kind="pca",
                  metadata={"explained_variance_ratio": [0.9512, 0.0301]})

    assert pca_axis_labels(plane) == ("PC1 (95.1% of variance)", "PC2 (3.0% of variance)")


def test_pca_axis_labels_none_without_ratios():
    plane = Plane(origin=np.zeros(3), d1=[1.0, 0, 0], d2=[0, 1.0, 0])

    assert pca_axis_labels(plane) is None
