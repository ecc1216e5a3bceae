"""Tests of retraining from a point of a plane (landscape.perturb) and of train_run's initial_weights."""

import numpy as np
import pytest

from _helpers import one_torch_thread, tiny_experiment
from landscape.data import load_digits
from landscape.directions import Plane, project
from landscape.model import build_mlp, count_parameters, flatten_parameters
from landscape.perturb import PerturbedRun, start_weights, train_from_plane
from landscape.train import train_run

RECORDED_ARRAYS = ("snapshots", "train_loss", "grad_norm", "test_loss", "test_accuracy")


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Run this module's small tensor operations on one torch thread (see _helpers)."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def tiny():
    """A digits experiment of 3 epochs; not named `experiment`, which the plugin reserves for claims."""
    return tiny_experiment(name="perturb", epochs=3)


@pytest.fixture(scope="module")
def reference(tiny, digits):
    """Run 1 of the tiny experiment, trained normally."""
    return train_run(tiny, 1, digits)


def plane_through(origin, seed=0):
    """A plane through ``origin`` along two Gaussian directions of norm about 1."""
    generator = np.random.default_rng(seed)
    n = len(origin)
    d1, d2 = generator.standard_normal((2, n)) / np.sqrt(n)
    return Plane(origin=origin, d1=d1, d2=d2)


def test_train_from_plane_origin_reproduces_train_run(tiny, digits, reference):
    plane = plane_through(reference.initial_weights)

    perturbed = train_from_plane(tiny, digits, plane, 0.0, 0.0, run=1)

    for name in RECORDED_ARRAYS:
        expected = getattr(reference, name)
        actual = getattr(perturbed.run, name)
        assert actual.tobytes() == expected.tobytes(), name
    assert perturbed.run.seed == reference.seed
    assert perturbed.run.metadata["initial_weights"] == "given"
    assert "initial_weights" not in reference.metadata


def test_initial_weights_equal_to_seeded_are_identical(tiny, digits, reference):
    again = train_run(tiny, 1, digits, initial_weights=reference.initial_weights)

    for name in RECORDED_ARRAYS:
        assert getattr(again, name).tobytes() == getattr(reference, name).tobytes(), name


def test_train_from_plane_starts_at_the_point(tiny, digits, reference):
    plane = plane_through(reference.final_weights.astype(np.float64), seed=3)
    alpha, beta = 2.5, -1.5

    perturbed = train_from_plane(tiny, digits, plane, alpha, beta, run=0)

    assert isinstance(perturbed, PerturbedRun)
    assert (perturbed.alpha, perturbed.beta) == (alpha, beta)
    # float32 rounding of weights of size about 0.3 moves the point by about
    # 1e-8 per entry, far below these tolerances.
    np.testing.assert_allclose(perturbed.coords[0], [alpha, beta], atol=1e-5)
    assert perturbed.residual_norm[0] < 1e-5
    np.testing.assert_array_equal(perturbed.run.snapshots[0], start_weights(plane, alpha, beta))
    assert perturbed.coords.shape == (tiny.epochs + 1, 2)
    assert perturbed.residual_norm.shape == (tiny.epochs + 1,)


def test_train_from_plane_coords_match_project(tiny, digits, reference):
    plane = plane_through(reference.final_weights.astype(np.float64), seed=4)

    perturbed = train_from_plane(tiny, digits, plane, 1.0, 0.5, run=1, epochs=2)

    coords, residual = project(perturbed.run.snapshots, plane)
    np.testing.assert_array_equal(perturbed.coords, coords)
    np.testing.assert_array_equal(perturbed.residual_norm, residual)
    assert len(perturbed.run.snapshots) == 3
    assert perturbed.run.metadata["config"]["epochs"] == 2
    assert perturbed.run.metadata["perturbation"] == {
        "alpha": 1.0, "beta": 0.5, "source_run": 1, "plane": {"kind": "custom"},
    }
    # Training moves the weights off the plane.
    assert perturbed.residual_norm[-1] > 1e-3


def test_train_from_plane_diverged_run_nan_coords(digits):
    diverging = tiny_experiment(name="perturb-diverging", optimizer="sgd", lr=1e6, epochs=4)
    origin = flatten_parameters(build_mlp(diverging.widths, seed=diverging.seed(0))).numpy()
    plane = plane_through(origin.astype(np.float64))

    perturbed = train_from_plane(diverging, digits, plane, 0.0, 0.0)

    assert perturbed.run.diverged
    last = perturbed.run.diverged_epoch
    assert np.all(np.isfinite(perturbed.coords[: last + 1]))
    assert np.all(np.isnan(perturbed.coords[last + 1 :]))
    assert len(perturbed.finite_snapshots) == last + 1


def test_start_weights_origin_bit_identical():
    origin = np.array([-0.0, 1.5, -2.25, 3.0e-8])
    plane = Plane(origin=origin, d1=[1.0, 0.0, 0.0, 0.0], d2=[0.0, 1.0, 0.0, 0.0])

    weights = start_weights(plane, 0.0, 0.0)

    assert weights.dtype == np.float32
    assert weights.tobytes() == origin.astype(np.float32).tobytes()


@pytest.mark.parametrize(
    ("alpha", "beta", "match"),
    [(np.nan, 0.0, "alpha and beta must be finite"), (0.0, np.inf, "alpha and beta must be finite")],
    ids=["nan-alpha", "inf-beta"],
)
def test_train_from_plane_rejects_non_finite_point(tiny, digits, reference, alpha, beta, match):
    plane = plane_through(reference.initial_weights)

    with pytest.raises(ValueError, match=match):
        train_from_plane(tiny, digits, plane, alpha, beta)


def test_train_from_plane_rejects_plane_of_other_model(tiny, digits):
    plane = plane_through(np.zeros(7))

    with pytest.raises(ValueError, match=r"plane has 7 entries per vector but experiment 'perturb'"):
        train_from_plane(tiny, digits, plane, 0.0, 0.0)


@pytest.mark.parametrize("epochs", [0, -1, 1.5, True], ids=["zero", "negative", "float", "bool"])
def test_train_from_plane_rejects_bad_epochs(tiny, digits, reference, epochs):
    plane = plane_through(reference.initial_weights)

    with pytest.raises(ValueError, match="epochs must be a positive int"):
        train_from_plane(tiny, digits, plane, 0.0, 0.0, epochs=epochs)


def test_train_from_plane_rejects_unknown_run(tiny, digits, reference):
    plane = plane_through(reference.initial_weights)

    with pytest.raises(ValueError, match=r"has runs 0..1, got run 5"):
        train_from_plane(tiny, digits, plane, 0.0, 0.0, run=5)


def test_initial_weights_rejects_wrong_length(tiny, digits):
    n_params = count_parameters(tiny.widths)

    with pytest.raises(ValueError, match=rf"initial_weights has shape \(10,\), expected \({n_params},\)"):
        train_run(tiny, 0, digits, initial_weights=np.zeros(10, np.float32))


def test_initial_weights_rejects_two_dimensional_array(tiny, digits):
    n_params = count_parameters(tiny.widths)

    with pytest.raises(ValueError, match=rf"initial_weights has shape \(1, {n_params}\)"):
        train_run(tiny, 0, digits, initial_weights=np.zeros((1, n_params), np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "minus-inf"])
def test_initial_weights_rejects_non_finite_values(tiny, digits, bad):
    weights = np.zeros(count_parameters(tiny.widths), np.float32)
    weights[[3, 8]] = bad

    with pytest.raises(ValueError, match=rf"initial_weights contains 2 NaN or infinite values \(first at index 3: {bad}\)"):
        train_run(tiny, 0, digits, initial_weights=weights)


def test_initial_weights_rejects_non_numbers(tiny, digits):
    with pytest.raises(TypeError, match="initial_weights must be an array of numbers"):
        train_run(tiny, 0, digits, initial_weights=["a", "b"])


def test_initial_weights_float64_are_rounded_to_float32(tiny, digits, reference):
    weights = reference.initial_weights.astype(np.float64) + 1e-12

    run = train_run(tiny, 1, digits, initial_weights=weights)

    np.testing.assert_array_equal(run.snapshots[0], weights.astype(np.float32))
