"""Tests for landscape.pca: principal-component planes of trajectories."""

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.decomposition import PCA

from landscape.directions import project
from landscape.pca import joint_pca_plane, pca_plane


def random_walk(n_snapshots, n_params, seed):
    """A float32 trajectory that drifts in one direction with noise, like training."""
    rng = np.random.default_rng(seed)
    drift = rng.normal(size=n_params)
    steps = 0.3 * drift + rng.normal(size=(n_snapshots, n_params))
    return np.cumsum(steps, axis=0).astype(np.float32)


def assert_same_axis(found, expected, name):
    """Assert two unit vectors span the same axis (they may differ in sign)."""
    cosine = abs(np.dot(found, expected)) / (np.linalg.norm(found) * np.linalg.norm(expected))
    assert cosine == pytest.approx(1.0, abs=1e-9), f"{name}: |cosine| {cosine:.12f}, expected 1"


def top_two_eigenvectors(centered):
    """Eigen-decompose the (P, P) scatter matrix directly, as an independent oracle."""
    eigenvalues, eigenvectors = np.linalg.eigh(centered.T @ centered)
    order = np.argsort(eigenvalues)[::-1]
    return eigenvectors[:, order[:2]].T, eigenvalues[order] / eigenvalues.sum()


@pytest.mark.parametrize(("n_snapshots", "n_params", "seed"), [(12, 40, 0), (31, 60, 1), (5, 8, 2)])
def test_pca_plane_mean_matches_sklearn(n_snapshots, n_params, seed):
    snapshots = random_walk(n_snapshots, n_params, seed)
    plane = pca_plane(snapshots, center="mean")
    reference = PCA(n_components=2, svd_solver="full").fit(snapshots.astype(np.float64))
    assert_same_axis(plane.d1, reference.components_[0], "d1")
    assert_same_axis(plane.d2, reference.components_[1], "d2")
    np.testing.assert_allclose(
        plane.metadata["explained_variance_ratio"], reference.explained_variance_ratio_, rtol=1e-9
    )


@pytest.mark.parametrize(("n_snapshots", "n_params", "seed"), [(12, 40, 0), (31, 60, 1), (4, 6, 3)])
def test_pca_plane_final_matches_direct_eigendecomposition(n_snapshots, n_params, seed):
    snapshots = random_walk(n_snapshots, n_params, seed).astype(np.float64)
    plane = pca_plane(snapshots, center="final")
    expected, ratios = top_two_eigenvectors(snapshots - snapshots[-1])
    assert_same_axis(plane.d1, expected[0], "d1")
    assert_same_axis(plane.d2, expected[1], "d2")
    np.testing.assert_allclose(plane.metadata["explained_variance_ratio"], ratios[:2], rtol=1e-8)


def test_pca_plane_final_differs_from_mean():
    snapshots = random_walk(12, 40, seed=0)
    final, mean = pca_plane(snapshots, center="final"), pca_plane(snapshots, center="mean")
    cosine = abs(np.dot(final.d1, mean.d1))
    assert cosine < 0.999, f"centering changed nothing (|cosine| of first axes {cosine:.6f})"


@pytest.mark.parametrize("center", ["final", "mean"])
def test_pca_plane_origin_is_final_snapshot(center):
    snapshots = random_walk(10, 30, seed=4)
    plane = pca_plane(snapshots, center=center)
    np.testing.assert_array_equal(plane.origin, snapshots[-1].astype(np.float64))
    coords, _ = project(snapshots, plane)
    np.testing.assert_allclose(coords[-1], [0.0, 0.0], atol=1e-12)


@pytest.mark.parametrize("center", ["final", "mean"])
def test_pca_plane_directions_are_orthonormal_and_signed(center):
    plane = pca_plane(random_walk(10, 30, seed=5), center=center)
    gram = np.array([[np.dot(a, b) for b in (plane.d1, plane.d2)] for a in (plane.d1, plane.d2)])
    np.testing.assert_allclose(gram, np.eye(2), atol=1e-12)
    assert abs(plane.cosine) < 1e-12
    for name in ("d1", "d2"):
        direction = getattr(plane, name)
        assert direction[np.argmax(np.abs(direction))] > 0, f"{name}: largest entry is negative"


def test_pca_plane_metadata():
    plane = pca_plane(random_walk(7, 20, seed=6))
    assert plane.kind == "pca"
    assert plane.metadata["center"] == "final"
    assert plane.metadata["n_snapshots"] == 7
    assert len(plane.metadata["singular_values"]) == 7
    ratios = plane.metadata["explained_variance_ratio"]
    assert len(ratios) == 2
    assert 1.0 >= ratios[0] >= ratios[1] > 0.0


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_snapshots=st.integers(3, 15),
    n_params=st.integers(3, 60),
    center=st.sampled_from(["final", "mean"]),
)
def test_pca_plane_contains_planar_trajectory(seed, n_snapshots, n_params, center):
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=(2, n_params))
    coefficients = rng.normal(size=(n_snapshots, 2))
    coefficients[-1] = 0.0
    coefficients[0] = [1.0, 0.0]
    coefficients[1] = [0.0, 1.0]
    final = rng.normal(size=n_params)
    snapshots = final + coefficients @ np.stack([u, v])
    plane = pca_plane(snapshots, center=center)
    _, residual = project(snapshots, plane)
    scale = np.abs(snapshots).max()
    np.testing.assert_allclose(residual, 0.0, atol=1e-9 * scale)
    assert sum(plane.metadata["explained_variance_ratio"]) == pytest.approx(1.0, abs=1e-9)


def test_pca_plane_accepts_tensor():
    snapshots = random_walk(6, 12, seed=7)
    from_tensor = pca_plane(torch.from_numpy(snapshots))
    from_array = pca_plane(snapshots)
    np.testing.assert_array_equal(from_tensor.d1, from_array.d1)


def test_pca_plane_handles_many_parameters_without_square_matrix():
    # A (P, P) float64 matrix for P = 300,000 would need 720 GB.
    snapshots = random_walk(6, 300_000, seed=8)
    plane = pca_plane(snapshots)
    assert plane.n_params == 300_000
    assert np.linalg.norm(plane.d1) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("snapshots", "message"),
    [
        (np.zeros(5), r"shape \(n_snapshots, n_params\).*got \(5,\)"),
        (np.zeros((3, 1)), r"n_params >= 2"),
        (np.ones((1, 4)), r"span 0 dimension\(s\)"),
        (np.eye(2, 4), r"span 1 dimension\(s\) around the final snapshot"),
        (np.outer(np.arange(5.0), np.ones(4)), r"span 1 dimension\(s\).*do not lie on one line"),
    ],
    ids=["1-d", "one-parameter", "one-snapshot", "two-snapshots", "collinear"],
)
@pytest.mark.parametrize("method", ["svd", "gram"])
def test_pca_plane_rejects_degenerate_snapshots(snapshots, message, method):
    with pytest.raises(ValueError, match=message):
        pca_plane(snapshots, method=method)


@pytest.mark.parametrize("method", ["svd", "gram"])
def test_pca_plane_rejects_nan_rows(method):
    snapshots = random_walk(6, 10, seed=9).astype(np.float64)
    snapshots[4:] = np.nan
    with pytest.raises(ValueError, match=r"snapshots rows \[4, 5\] contain NaN.*diverged_epoch"):
        pca_plane(snapshots, method=method)


def test_pca_plane_rejects_unknown_method():
    with pytest.raises(ValueError, match=r"method must be one of \('auto', 'svd', 'gram'\), got 'qr'"):
        pca_plane(random_walk(5, 10, seed=0), method="qr")


def assert_same_plane(found, expected, rtol=1e-5):
    """Assert two PCA planes agree in origin, signed directions and explained variance."""
    np.testing.assert_allclose(found.origin, expected.origin, rtol=0, atol=0)
    scale = max(np.abs(expected.d1).max(), np.abs(expected.d2).max())
    np.testing.assert_allclose(found.d1, expected.d1, rtol=0, atol=rtol * scale)
    np.testing.assert_allclose(found.d2, expected.d2, rtol=0, atol=rtol * scale)
    np.testing.assert_allclose(
        found.metadata["explained_variance_ratio"],
        expected.metadata["explained_variance_ratio"], rtol=rtol,
    )


@settings(max_examples=30, deadline=None)
@given(
    n_snapshots=st.integers(3, 40),
    n_params=st.integers(3, 300),
    block_bytes=st.sampled_from([8, 1000, 64 * 2**20]),
    center=st.sampled_from(["final", "mean"]),
    seed=st.integers(0, 2**16),
)
def test_gram_pca_equals_svd_pca(n_snapshots, n_params, block_bytes, center, seed):
    snapshots = random_walk(n_snapshots, n_params, seed)
    svd = pca_plane(snapshots, center=center, method="svd")
    singular_values = svd.metadata["singular_values"]
    # Leave out draws whose second and third components are too close to order.
    assume(len(singular_values) == 2 or singular_values[2] < 0.9 * singular_values[1])

    gram = pca_plane(snapshots, center=center, method="gram", block_bytes=block_bytes)

    assert_same_plane(gram, svd)
    assert gram.metadata["method"] == "gram"


def test_gram_pca_reads_a_memory_mapped_trajectory(tmp_path):
    snapshots = random_walk(31, 5000, seed=4)
    path = tmp_path / "trajectory.npy"
    np.save(path, snapshots)
    mapped = np.load(path, mmap_mode="r")

    plane = pca_plane(mapped, block_bytes=31 * 8 * 700)  # "auto" picks the Gram path

    assert plane.metadata["method"] == "gram"
    assert_same_plane(plane, pca_plane(snapshots, method="svd"))


def test_pca_plane_rejects_unknown_center():
    with pytest.raises(ValueError, match=r"center must be one of \('final', 'mean'\), got 'first'"):
        pca_plane(random_walk(5, 10, seed=0), center="first")


# --------------------------------------------------------------------------
# joint_pca_plane
# --------------------------------------------------------------------------


def test_joint_pca_plane_mean_matches_sklearn_on_stack():
    a, b = random_walk(8, 30, seed=10), random_walk(6, 30, seed=11)
    plane = joint_pca_plane(a, b, center="mean")
    reference = PCA(n_components=2, svd_solver="full").fit(np.concatenate([a, b]).astype(np.float64))
    assert_same_axis(plane.d1, reference.components_[0], "d1")
    assert_same_axis(plane.d2, reference.components_[1], "d2")
    np.testing.assert_allclose(
        plane.metadata["explained_variance_ratio"], reference.explained_variance_ratio_, rtol=1e-9
    )


def test_joint_pca_plane_final_centers_on_first_trajectory():
    a, b = random_walk(8, 30, seed=12), random_walk(6, 30, seed=13)
    plane = joint_pca_plane(a, b)
    stacked = np.concatenate([a, b]).astype(np.float64)
    expected, _ = top_two_eigenvectors(stacked - stacked[len(a) - 1])
    assert_same_axis(plane.d1, expected[0], "d1")
    assert_same_axis(plane.d2, expected[1], "d2")
    np.testing.assert_array_equal(plane.origin, a[-1].astype(np.float64))
    assert plane.kind == "joint_pca"
    assert plane.metadata["n_snapshots_a"] == 8
    assert plane.metadata["n_snapshots_b"] == 6
    assert plane.metadata["n_snapshots"] == 14


def test_joint_pca_plane_rejects_mismatched_parameters():
    with pytest.raises(ValueError, match="trajectory_a has 30 parameters per snapshot and trajectory_b 31"):
        joint_pca_plane(random_walk(4, 30, seed=0), random_walk(4, 31, seed=1))
