"""Tests for landscape.directions: filter-normalized random directions, planes, projection."""

import doctest

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from landscape import directions
from landscape.directions import (
    Plane,
    direction_seeds,
    filter_normalize,
    join_tensors,
    make_generator,
    project,
    random_direction,
    random_plane,
    split_vector,
)
from landscape.model import build_mlp, flatten_parameters

WIDTHS = (6, 5, 4, 3)


def weight_slices(model):
    """Yield (parameter, slice of the flat vector) pairs in parameters() order."""
    start = 0
    for parameter in model.parameters():
        yield parameter, slice(start, start + parameter.numel())
        start += parameter.numel()


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# --------------------------------------------------------------------------
# random_direction and filter_normalize
# --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2**63 + 5])
def test_random_direction_rows_match_model_row_norms(seed):
    model = build_mlp(WIDTHS, seed=3)
    direction = random_direction(model, seed=seed)
    for parameter, piece in weight_slices(model):
        if parameter.dim() < 2:
            continue
        rows = direction[piece].view(parameter.shape[0], -1)
        np.testing.assert_allclose(
            rows.norm(dim=1).numpy(), parameter.detach().norm(dim=1).numpy(), rtol=1e-5,
            err_msg=f"row norms differ for a parameter of shape {tuple(parameter.shape)}",
        )


def test_random_direction_rescales_bias_as_one_vector():
    model = build_mlp(WIDTHS, seed=3)
    direction = random_direction(model, seed=0)
    for parameter, piece in weight_slices(model):
        if parameter.dim() != 1:
            continue
        assert direction[piece].norm().item() == pytest.approx(parameter.norm().item(), rel=1e-5)
        # Rescaled as a whole, not entry by entry: magnitudes differ from the bias's.
        assert not torch.allclose(direction[piece].abs(), parameter.detach().abs())


def test_random_direction_ignore_1d_zeroes_biases():
    model = build_mlp(WIDTHS, seed=3)
    direction = random_direction(model, seed=0, ignore_1d=True)
    for parameter, piece in weight_slices(model):
        if parameter.dim() == 1:
            assert torch.count_nonzero(direction[piece]) == 0
        else:
            assert torch.count_nonzero(direction[piece]) == parameter.numel()


def test_random_direction_zero_row_stays_zero():
    model = build_mlp(WIDTHS, seed=3)
    with torch.no_grad():
        model[0].weight[2].zero_()
    direction = random_direction(model, seed=0)
    rows = direction[: model[0].weight.numel()].view_as(model[0].weight)
    assert torch.count_nonzero(rows[2]) == 0
    assert torch.all(rows[[0, 1, 3, 4]].norm(dim=1) > 0)


def test_random_direction_is_filter_normalized_gaussian_draw():
    model = build_mlp(WIDTHS, seed=3)
    n_params = sum(p.numel() for p in model.parameters())
    noise = torch.randn(n_params, generator=make_generator(11))
    expected = filter_normalize(noise, model)
    assert torch.equal(random_direction(model, seed=11), expected)
    # Gaussian, so both signs occur (a uniform [0, 1) draw would be all positive).
    assert (noise < 0).any()
    assert (noise > 0).any()


def test_random_direction_same_seed_reproduces():
    model = build_mlp(WIDTHS, seed=3)
    assert torch.equal(random_direction(model, seed=5), random_direction(model, seed=5))


def test_random_direction_different_seeds_differ():
    model = build_mlp(WIDTHS, seed=3)
    first, second = random_direction(model, seed=5), random_direction(model, seed=6)
    cosine = torch.dot(first, second) / (first.norm() * second.norm())
    assert abs(cosine.item()) < 0.5, f"seeds 5 and 6 gave directions with cosine {cosine.item():.3f}"


def test_random_direction_leaves_global_rng_alone():
    model = build_mlp(WIDTHS, seed=3)
    state = torch.get_rng_state()
    random_direction(model, seed=5)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_direction_follows_device_and_dtype(device, dtype):
    model = build_mlp(WIDTHS, seed=3).to(device=device, dtype=dtype)
    direction = random_direction(model, seed=0)
    assert direction.device.type == device
    assert direction.dtype == dtype
    assert direction.shape == (sum(p.numel() for p in model.parameters()),)


def test_random_direction_accepts_parameter_list():
    model = build_mlp(WIDTHS, seed=3)
    from_model = random_direction(model, seed=4)
    from_list = random_direction(list(model.parameters()), seed=4)
    assert torch.equal(from_model, from_list)


def test_random_direction_handles_conv_filters():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 3))
    direction = random_direction(model, seed=0)
    kernel = direction[: model[0].weight.numel()].view_as(model[0].weight)
    np.testing.assert_allclose(
        kernel.flatten(1).norm(dim=1).numpy(),
        model[0].weight.detach().flatten(1).norm(dim=1).numpy(),
        rtol=1e-5,
    )


def test_filter_normalize_leaves_input_unchanged():
    model = build_mlp(WIDTHS, seed=3)
    noise = torch.randn(sum(p.numel() for p in model.parameters()), generator=make_generator(0))
    copy = noise.clone()
    filter_normalize(noise, model)
    assert torch.equal(noise, copy)


def test_random_direction_rejects_mixed_dtypes():
    model = build_mlp(WIDTHS, seed=3)
    model[0].double()
    with pytest.raises(ValueError, match=r"share one device and dtype.*model\.to"):
        random_direction(model, seed=0)


def test_random_direction_rejects_model_without_parameters():
    with pytest.raises(ValueError, match="no parameters"):
        random_direction(nn.ReLU(), seed=0)


def test_random_direction_rejects_single_tensor():
    with pytest.raises(TypeError, match="wrap it in a list"):
        random_direction(torch.zeros(3, 3), seed=0)


@pytest.mark.parametrize(
    ("seed", "error", "message"),
    [
        ("1", TypeError, "seed must be an int, got str"),
        (1.5, TypeError, "seed must be an int, got float"),
        (True, TypeError, "seed must be an int, got bool"),
        (-1, ValueError, r"seed must be in \[0, 2\*\*64 - 1\], got -1"),
        (2**64, ValueError, r"seed must be in \[0, 2\*\*64 - 1\]"),
    ],
)
def test_random_direction_rejects_bad_seed(seed, error, message):
    model = build_mlp(WIDTHS, seed=3)
    with pytest.raises(error, match=message):
        random_direction(model, seed=seed)


# --------------------------------------------------------------------------
# split_vector and join_tensors
# --------------------------------------------------------------------------


def test_split_vector_round_trips_through_join_tensors():
    model = build_mlp(WIDTHS, seed=3)
    flat = flatten_parameters(model)
    pieces = split_vector(flat, [p.shape for p in model.parameters()])
    for piece, parameter in zip(pieces, model.parameters()):
        assert torch.equal(piece, parameter.detach())
    assert torch.equal(join_tensors(pieces), flat)


def test_split_vector_rejects_wrong_length():
    with pytest.raises(ValueError, match=r"vector has shape \(5,\), expected \(6,\)"):
        split_vector(torch.zeros(5), [torch.Size([2, 3])])


# --------------------------------------------------------------------------
# random_plane and Plane
# --------------------------------------------------------------------------


def test_random_plane_axes_are_orthogonal():
    model = build_mlp(WIDTHS, seed=3)
    plane = random_plane(model, seed=0)
    assert abs(plane.cosine) < 1e-12
    assert abs(np.dot(plane.d1, plane.d2)) < 1e-12 * np.linalg.norm(plane.d1) * np.linalg.norm(plane.d2)


def test_random_plane_reports_cosine_before_orthogonalization():
    model = build_mlp(WIDTHS, seed=3)
    plane = random_plane(model, seed=0)
    first, second = (random_direction(model, seed=s).double() for s in plane.metadata["direction_seeds"])
    cosine = (torch.dot(first, second) / (first.norm() * second.norm())).item()
    assert plane.metadata["cosine_before_orthogonalization"] == pytest.approx(cosine, abs=1e-12)
    assert cosine != pytest.approx(0.0, abs=1e-6), "the test needs correlated raw directions"


def test_random_plane_keeps_d1_and_length_of_d2():
    model = build_mlp(WIDTHS, seed=3)
    plane = random_plane(model, seed=0)
    first, second = (random_direction(model, seed=s).double().numpy() for s in direction_seeds(0))
    np.testing.assert_array_equal(plane.d1, first)
    assert np.linalg.norm(plane.d2) == pytest.approx(np.linalg.norm(second), rel=1e-12)


def test_random_plane_origin_is_model_weights():
    model = build_mlp(WIDTHS, seed=3)
    plane = random_plane(model, seed=0)
    assert plane.origin.dtype == np.float64
    np.testing.assert_array_equal(plane.origin.astype(np.float32), flatten_parameters(model).numpy())


def test_random_plane_metadata_records_seeds():
    model = build_mlp(WIDTHS, seed=3)
    plane = random_plane(model, seed=7, ignore_1d=True)
    assert plane.kind == "random"
    assert plane.metadata["seed"] == 7
    assert plane.metadata["direction_seeds"] == list(direction_seeds(7))
    assert plane.metadata["ignore_1d"] is True
    assert plane.metadata["normalization"] == "filter"


def test_random_plane_same_seed_reproduces():
    model = build_mlp(WIDTHS, seed=3)
    first, second = random_plane(model, seed=9), random_plane(model, seed=9)
    np.testing.assert_array_equal(first.d1, second.d1)
    np.testing.assert_array_equal(first.d2, second.d2)


def test_random_plane_adjacent_seeds_share_no_direction():
    model = build_mlp(WIDTHS, seed=3)
    first, second = random_plane(model, seed=0), random_plane(model, seed=1)
    for a in (first.d1, first.d2):
        for b in (second.d1, second.d2):
            cosine = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
            assert abs(cosine) < 0.9, f"planes of seeds 0 and 1 share a direction (cosine {cosine:.3f})"


def test_random_plane_leaves_global_rng_alone():
    model = build_mlp(WIDTHS, seed=3)
    state = torch.get_rng_state()
    random_plane(model, seed=5)
    assert torch.equal(torch.get_rng_state(), state)


def test_random_plane_rejects_zero_directions():
    model = build_mlp(WIDTHS, seed=3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    with pytest.raises(ValueError, match="random direction is zero"):
        random_plane(model, seed=0, ignore_1d=True)


def test_plane_vectors_are_read_only_copies():
    d1 = np.array([1.0, 0.0, 0.0])
    plane = Plane(origin=np.zeros(3), d1=d1, d2=np.array([0.0, 1.0, 0.0]))
    d1[0] = 5.0
    assert plane.d1[0] == 1.0
    with pytest.raises(ValueError, match="read-only"):
        plane.d1[0] = 2.0


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        ((np.zeros(3), np.ones(3), np.ones(4)), "one length"),
        ((np.zeros(3), np.zeros(3), np.ones(3)), r"Plane\.d1 is the zero vector"),
        ((np.zeros(3), np.ones(3), 2 * np.ones(3)), "parallel"),
        ((np.zeros(3), np.ones(3), np.array([1.0, np.nan, 0.0])), r"Plane\.d2 contains NaN"),
        ((np.zeros((3, 1)), np.ones(3), np.ones(3)), r"Plane\.origin must be 1-D"),
    ],
)
def test_plane_rejects_invalid_vectors(vectors, message):
    with pytest.raises(ValueError, match=message):
        Plane(*vectors)


def test_plane_point_combines_axes():
    plane = Plane(origin=np.array([1.0, 2.0]), d1=np.array([1.0, 0.0]), d2=np.array([1.0, 1.0]))
    np.testing.assert_array_equal(plane.point(2.0, -1.0), [2.0, 1.0])


# --------------------------------------------------------------------------
# project
# --------------------------------------------------------------------------


def skewed_plane(n_params, seed):
    """A plane whose axes are neither orthogonal nor of unit length."""
    rng = np.random.default_rng(seed)
    d1 = rng.normal(size=n_params) * 3.0
    d2 = 0.6 * d1 + rng.normal(size=n_params)
    return Plane(origin=rng.normal(size=n_params), d1=d1, d2=d2)


@settings(max_examples=30, deadline=None)
@given(
    n_params=st.integers(3, 200),
    seed=st.integers(0, 2**32 - 1),
    coords=st.lists(
        st.tuples(st.floats(-5, 5), st.floats(-5, 5)), min_size=1, max_size=6
    ),
)
def test_project_recovers_in_plane_coordinates(n_params, seed, coords):
    plane = skewed_plane(n_params, seed)
    assert abs(plane.cosine) > 0.1, "the property needs non-orthogonal axes"
    points = np.stack([plane.point(a, b) for a, b in coords])
    found, residual = project(points, plane)
    np.testing.assert_allclose(found, np.array(coords), atol=1e-9)
    scale = np.linalg.norm(points, axis=1).max()
    np.testing.assert_allclose(residual, 0.0, atol=1e-9 * max(scale, 1.0))


def test_project_measures_distance_off_plane():
    plane = skewed_plane(50, seed=1)
    basis = np.stack([plane.d1, plane.d2], axis=1)
    normal = np.random.default_rng(2).normal(size=50)
    normal -= basis @ np.linalg.lstsq(basis, normal, rcond=None)[0]
    normal /= np.linalg.norm(normal)
    points = np.stack([plane.point(0.5, -2.0) + 3.0 * normal, plane.point(1.0, 1.0) - 0.25 * normal])
    coords, residual = project(points, plane)
    np.testing.assert_allclose(coords, [[0.5, -2.0], [1.0, 1.0]], atol=1e-10)
    np.testing.assert_allclose(residual, [3.0, 0.25], rtol=1e-10)


def test_project_origin_is_zero():
    model = build_mlp(WIDTHS, seed=3)
    plane = random_plane(model, seed=0)
    coords, residual = project(flatten_parameters(model)[None, :], plane)
    np.testing.assert_array_equal(coords, [[0.0, 0.0]])
    np.testing.assert_array_equal(residual, [0.0])


def test_project_accepts_float32_tensor_trajectory():
    plane = skewed_plane(20, seed=4)
    points = torch.tensor(np.stack([plane.point(1.0, 2.0), plane.origin]), dtype=torch.float32)
    coords, _ = project(points, plane)
    assert coords.shape == (2, 2)
    np.testing.assert_allclose(coords, [[1.0, 2.0], [0.0, 0.0]], atol=1e-5)


def test_project_rejects_nan_rows():
    plane = skewed_plane(5, seed=0)
    trajectory = np.zeros((4, 5))
    trajectory[2:] = np.nan
    with pytest.raises(ValueError, match=r"rows \[2, 3\] contain NaN.*diverged_epoch"):
        project(trajectory, plane)


def test_project_rejects_wrong_shape():
    plane = skewed_plane(5, seed=0)
    with pytest.raises(ValueError, match=r"shape \(n_snapshots, 5\), got \(5,\).*w\[None, :\]"):
        project(np.zeros(5), plane)


def test_directions_docstring_examples_run():
    failures, _ = doctest.testmod(directions, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert failures == 0


def test_random_plane_rejects_parallel_directions():
    # One weight: every filter-normalized direction is +w or -w.
    model = nn.Linear(1, 1, bias=False)
    with pytest.raises(ValueError, match="parallel, so they span no plane"):
        random_plane(model, seed=0)
