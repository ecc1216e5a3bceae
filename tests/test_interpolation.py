"""Tests for landscape.interpolation: the t grid, both engines, the barrier and pair choice."""

import copy
import doctest
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import vector_to_parameters

from _helpers import one_torch_thread, tiny_experiment
from landscape import interpolation
from landscape.data import load_digits
from landscape.interpolation import (
    Interpolation,
    interpolation_losses,
    loss_barrier,
    pairs_for_barrier,
)
from landscape.model import build_mlp, count_parameters, flatten_parameters
from landscape.rebasin import apply_permutation
from landscape.train import evaluate, train_run

WIDTHS = (64, 32, 32, 10)
# float32 logits carry about 1e-7 relative rounding, and the engines group the
# first layer's arithmetic differently.
LOSS_RTOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Run this module's small tensor operations on one torch thread (see _helpers)."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def trained_pair(digits):
    """Final weights of two digits MLPs trained from different seeds (about 1 s)."""
    experiment = tiny_experiment(name="interpolation", widths=WIDTHS, epochs=8)
    return [train_run(experiment, run, digits).final_weights for run in (0, 1)]


def model_at(widths, flat):
    model = build_mlp(widths, seed=0)
    vector_to_parameters(torch.as_tensor(flat, dtype=torch.float32), model.parameters())
    return model


def make_mlp(widths, biases, seed):
    """Build Linear/ReLU layers with the given bias flags, without touching the global RNG."""
    layers = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(fan_in, fan_out, bias=biases[index]))
            if index < len(widths) - 2:
                layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class FlattenThenMLP(nn.Module):
    """A model the fast engine does not support, so "auto" picks the reference engine."""

    def __init__(self):
        super().__init__()
        self.mlp = build_mlp(WIDTHS, seed=0)

    def forward(self, x):
        return self.mlp(x.reshape(len(x), -1))


# --------------------------------------------------------------------------
# Grid and endpoints
# --------------------------------------------------------------------------


def test_interpolation_t_grid_includes_both_ends(digits, trained_pair):
    curve = interpolation_losses(WIDTHS, *trained_pair, digits.x_test, digits.y_test)
    assert curve.t.shape == curve.loss.shape == curve.accuracy.shape == (25,)
    assert curve.t[0] == 0.0
    assert curve.t[-1] == 1.0
    np.testing.assert_array_equal(curve.t, np.linspace(0, 1, 25))
    assert curve.metadata["engine"] == "fast"
    assert curve.metadata["widths"] == list(WIDTHS)


def test_reference_endpoints_equal_evaluate(digits, trained_pair):
    w_i, w_j = trained_pair
    curve = interpolation_losses(WIDTHS, w_i, w_j, digits.x_train, digits.y_train, engine="reference")
    assert (curve.loss[0], curve.accuracy[0]) == evaluate(model_at(WIDTHS, w_i), digits.x_train, digits.y_train)
    assert (curve.loss[-1], curve.accuracy[-1]) == evaluate(model_at(WIDTHS, w_j), digits.x_train, digits.y_train)


def test_fast_endpoints_match_evaluate(digits, trained_pair):
    w_i, w_j = trained_pair
    curve = interpolation_losses(WIDTHS, w_i, w_j, digits.x_train, digits.y_train, engine="fast")
    for index, weights in ((0, w_i), (-1, w_j)):
        loss, accuracy = evaluate(model_at(WIDTHS, weights), digits.x_train, digits.y_train)
        assert curve.loss[index] == pytest.approx(loss, rel=LOSS_RTOL)
        assert curve.accuracy[index] == accuracy


@pytest.mark.parametrize(
    "widths, biases",
    [
        (WIDTHS, (True, True, True)),
        (WIDTHS, (False, True, False)),
        ((64, 10), (True,)),
        ((64, 7, 10), (True, True)),
    ],
    ids=["digits-mlp", "some-biases-off", "no-hidden-layer", "narrow"],
)
def test_fast_engine_matches_reference(digits, widths, biases):
    model = make_mlp(widths, biases, seed=1)
    w_i = flatten_parameters(model).numpy()
    w_j = flatten_parameters(make_mlp(widths, biases, seed=2)).numpy() * 3.0
    x, y = digits.x_train, digits.y_train

    fast = interpolation_losses(model, w_i, w_j, x, y, n_points=11, engine="fast")
    reference = interpolation_losses(model, w_i, w_j, x, y, n_points=11, engine="reference")

    np.testing.assert_allclose(fast.loss, reference.loss, rtol=LOSS_RTOL)
    # A sample whose two largest logits nearly tie may flip under rounding.
    np.testing.assert_allclose(fast.accuracy, reference.accuracy, atol=2 / len(x))


def test_fast_engine_uneven_chunks(digits, trained_pair, monkeypatch):
    # Chunks and point blocks that do not divide the counts evenly.
    monkeypatch.setattr(interpolation, "FAST_SAMPLE_CHUNK", 100)
    monkeypatch.setattr(interpolation, "FAST_POINT_BLOCK", 4)
    x, y = digits.x_test, digits.y_test
    fast = interpolation_losses(WIDTHS, *trained_pair, x, y, n_points=9, engine="fast")
    reference = interpolation_losses(WIDTHS, *trained_pair, x, y, n_points=9, engine="reference")
    np.testing.assert_allclose(fast.loss, reference.loss, rtol=LOSS_RTOL)
    np.testing.assert_allclose(fast.accuracy, reference.accuracy, atol=2 / len(x))


def test_module_and_widths_give_same_curve(digits, trained_pair):
    x, y = digits.x_test, digits.y_test
    from_widths = interpolation_losses(WIDTHS, *trained_pair, x, y)
    from_module = interpolation_losses(build_mlp(WIDTHS, seed=5), *trained_pair, x, y)
    np.testing.assert_array_equal(from_widths.loss, from_module.loss)
    np.testing.assert_array_equal(from_widths.accuracy, from_module.accuracy)


def test_unsupported_module_uses_reference_engine(digits, trained_pair):
    x, y = digits.x_test.reshape(-1, 8, 8), digits.y_test
    curve = interpolation_losses(FlattenThenMLP(), *trained_pair, x, y, n_points=5)
    expected = interpolation_losses(WIDTHS, *trained_pair, digits.x_test, y, n_points=5, engine="reference")
    assert curve.metadata["engine"] == "reference"
    assert curve.metadata["widths"] is None
    np.testing.assert_array_equal(curve.loss, expected.loss)


def test_interpolation_leaves_model_unchanged(digits, trained_pair):
    model = build_mlp(WIDTHS, seed=6)
    model.train()
    model[2].weight.requires_grad_(False)
    state = copy.deepcopy(model.state_dict())
    w_i, w_j = (w.copy() for w in trained_pair)

    for engine in ("fast", "reference"):
        interpolation_losses(model, w_i, w_j, digits.x_test, digits.y_test, n_points=3, engine=engine)

    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    assert all(module.training for module in model.modules())
    assert [p.requires_grad for p in model.parameters()] == [True, True, False, True, True, True]
    np.testing.assert_array_equal(w_i, trained_pair[0])
    np.testing.assert_array_equal(w_j, trained_pair[1])


# --------------------------------------------------------------------------
# Barrier
# --------------------------------------------------------------------------


def test_barrier_is_zero_for_identical_endpoints(digits, trained_pair):
    w = trained_pair[0]
    x, y = digits.x_train, digits.y_train
    # Weights are interpolated in float64, so every w(t) is w bit for bit and
    # the reference engine repeats one computation.
    assert loss_barrier(WIDTHS, w, w, x, y, engine="reference") == 0.0
    fast = interpolation_losses(WIDTHS, w, w, x, y, engine="fast")
    assert abs(fast.barrier) <= 1e-6, f"fast-engine barrier {fast.barrier:.3g} nats"
    np.testing.assert_allclose(fast.loss, fast.loss[0], rtol=LOSS_RTOL)


def test_barrier_positive_for_independent_runs(digits, trained_pair):
    curve = interpolation_losses(WIDTHS, *trained_pair, digits.x_train, digits.y_train)
    assert curve.barrier > 0.0
    assert curve.barrier == pytest.approx(float(np.max(curve.loss - np.linspace(curve.loss[0], curve.loss[-1], 25))))
    assert 0.0 < curve.barrier_t < 1.0


@pytest.mark.parametrize("scale", [0.0, 0.5, 2.0])
def test_barrier_is_never_negative(digits, trained_pair, scale):
    # Endpoints from convex combinations of the trained runs and a rescaled
    # copy, including pairs whose loss is convex along the segment.
    w_i, w_j = trained_pair
    start = 0.3 * w_i + 0.7 * w_j
    end = scale * w_i
    barrier = loss_barrier(WIDTHS, start, end, digits.x_test, digits.y_test, n_points=9)
    assert barrier >= 0.0


def test_loss_barrier_equals_curve_barrier(digits, trained_pair):
    x, y = digits.x_test, digits.y_test
    curve = interpolation_losses(WIDTHS, *trained_pair, x, y, n_points=7)
    assert loss_barrier(WIDTHS, *trained_pair, x, y, n_points=7) == curve.barrier


def test_barrier_of_hand_made_curve():
    bump = Interpolation(t=[0.0, 0.5, 1.0], loss=[1.0, 3.0, 2.0], accuracy=[1.0, 0.5, 1.0])
    assert bump.barrier == 1.5
    assert bump.barrier_t == 0.5
    np.testing.assert_array_equal(bump.excess, [0.0, 1.5, 0.0])

    convex = Interpolation(t=[0.0, 0.5, 1.0], loss=[1.0, 0.2, 2.0], accuracy=[1.0, 1.0, 1.0])
    assert convex.barrier == 0.0
    assert convex.barrier_t == 0.0


@given(seed=st.integers(0, 2**16), depth=st.integers(1, 3), width=st.integers(1, 6))
def test_interpolation_permuted_endpoints_invariant(digits, seed, depth, width):
    # Permuting both endpoints alike permutes every point on the segment, so
    # the network function, and with it the whole curve, is unchanged.
    widths = (64,) + (width,) * depth + (10,)
    rng = np.random.default_rng(seed)
    w_i = rng.standard_normal(count_parameters(widths)).astype(np.float32)
    w_j = rng.standard_normal(count_parameters(widths)).astype(np.float32)
    perms = [rng.permutation(w) for w in widths[1:-1]]
    x, y = digits.x_test[:64], digits.y_test[:64]

    plain = interpolation_losses(widths, w_i, w_j, x, y, n_points=5, engine="reference")
    permuted = interpolation_losses(
        widths, apply_permutation(w_i, widths, perms), apply_permutation(w_j, widths, perms),
        x, y, n_points=5, engine="reference",
    )

    np.testing.assert_allclose(permuted.loss, plain.loss, rtol=1e-5)
    np.testing.assert_array_equal(permuted.accuracy, plain.accuracy)


# --------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_points, error, message",
    [
        (1, ValueError, "n_points must be at least 2 so that both endpoints are evaluated, got 1"),
        (0, ValueError, "n_points must be at least 2 .* got 0"),
        (2.0, TypeError, "n_points must be an int, got float 2.0"),
    ],
)
def test_interpolation_rejects_bad_n_points(digits, trained_pair, n_points, error, message):
    with pytest.raises(error, match=message):
        interpolation_losses(WIDTHS, *trained_pair, digits.x_test, digits.y_test, n_points=n_points)


def test_interpolation_rejects_length_mismatch(digits, trained_pair):
    w_i, w_j = trained_pair
    with pytest.raises(ValueError, match="w_i and w_j must have the same length, got 3466 and 3465"):
        interpolation_losses(WIDTHS, w_i, w_j[:-1], digits.x_test, digits.y_test)


def test_interpolation_rejects_widths_mismatch(digits, trained_pair):
    with pytest.raises(ValueError, match="w_i and w_j have 3466 entries, but the model has 2410 parameters"):
        interpolation_losses((64, 32, 10), *trained_pair, digits.x_test, digits.y_test)


def test_interpolation_rejects_nan_weights(digits, trained_pair):
    w_i, w_j = trained_pair
    broken = w_j.copy()
    broken[0] = np.inf
    with pytest.raises(ValueError, match="w_j contains NaN or infinite values"):
        interpolation_losses(WIDTHS, w_i, broken, digits.x_test, digits.y_test)


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda x, y: (x.double(), y), TypeError, "x has dtype torch.float64 but the model's parameters have torch.float32"),
        (lambda x, y: (x, y.int()), TypeError, "y must contain int64 class labels"),
        (lambda x, y: (x, y[:-1]), ValueError, r"y must have shape \(360,\) to match x, got \(359,\)"),
        (lambda x, y: (x, y + 5), ValueError, "y contains label 14, but the model has 10 outputs"),
        (lambda x, y: (x, y - 1), ValueError, r"y contains negative labels \(minimum -1\)"),
        (lambda x, y: (x[:, :60], y), ValueError, r"x must have shape \(n_samples, 64\) for this MLP"),
    ],
    ids=["x-dtype", "y-dtype", "y-shape", "label-too-large", "label-negative", "x-features"],
)
def test_interpolation_rejects_bad_data(digits, trained_pair, change, error, message):
    x, y = change(digits.x_test, digits.y_test)
    model = build_mlp(WIDTHS, seed=0)
    with pytest.raises(error, match=message):
        interpolation_losses(model, *trained_pair, x, y)


def test_interpolation_rejects_bad_engine(digits, trained_pair):
    with pytest.raises(ValueError, match=r"engine must be one of \('auto', 'fast', 'reference'\), got 'quick'"):
        interpolation_losses(WIDTHS, *trained_pair, digits.x_test, digits.y_test, engine="quick")


def test_fast_engine_rejects_unsupported_model(digits, trained_pair):
    with pytest.raises(ValueError, match="engine='fast' does not support this model: the model is a FlattenThenMLP"):
        interpolation_losses(FlattenThenMLP(), *trained_pair, digits.x_test, digits.y_test, engine="fast")


def test_interpolation_rejects_bad_architecture(digits, trained_pair):
    with pytest.raises(TypeError, match="architecture must be an nn.Module or a sequence of layer widths, got str"):
        interpolation_losses("mlp", *trained_pair, digits.x_test, digits.y_test)


def test_interpolation_result_rejects_bad_grid():
    with pytest.raises(ValueError, match=r"Interpolation.t must increase strictly from 0.0 to 1.0, got 0.0 ... 0.5"):
        Interpolation(t=[0.0, 0.5], loss=[1.0, 1.0], accuracy=[1.0, 1.0])
    with pytest.raises(ValueError, match=r"Interpolation.loss has shape \(3,\), expected \(2,\)"):
        Interpolation(t=[0.0, 1.0], loss=[1.0, 1.0, 1.0], accuracy=[1.0, 1.0])


# --------------------------------------------------------------------------
# Pairs
# --------------------------------------------------------------------------


def test_pairs_for_barrier_ring_of_eight():
    pairs = pairs_for_barrier(8)
    assert pairs == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7), (7, 0)]
    counts = np.bincount(np.array(pairs).ravel(), minlength=8)
    np.testing.assert_array_equal(counts, np.full(8, 2))


@pytest.mark.parametrize("n_runs", [2, 3, 4, 5, 8])
def test_pairs_for_barrier_can_list_every_pair(n_runs):
    available = n_runs * (n_runs - 1) // 2
    pairs = pairs_for_barrier(n_runs, available)
    assert len(pairs) == available
    assert {frozenset(pair) for pair in pairs} == {frozenset(pair) for pair in itertools.combinations(range(n_runs), 2)}
    assert all(i != j for i, j in pairs)
    assert pairs_for_barrier(n_runs, available) == pairs


@pytest.mark.parametrize(
    "n_runs, n_pairs, error, message",
    [
        (1, 1, ValueError, "n_runs must be at least 2 to form a pair, got 1"),
        (3, 8, ValueError, r"n_pairs must be between 1 and 3 \(the number of distinct pairs of 3 runs\), got 8"),
        (4, 0, ValueError, "n_pairs must be between 1 and 6 .* got 0"),
        (4.0, 2, TypeError, "n_runs must be an int, got float 4.0"),
    ],
)
def test_pairs_for_barrier_rejects_bad_counts(n_runs, n_pairs, error, message):
    with pytest.raises(error, match=message):
        pairs_for_barrier(n_runs, n_pairs)


def test_interpolation_docstring_examples():
    result = doctest.testmod(interpolation, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted >= 2
