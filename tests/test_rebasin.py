"""Tests for landscape.rebasin: permutations, weight matching and input checks."""

import itertools
import logging

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from _helpers import one_torch_thread, tiny_experiment
from landscape.data import load_digits
from landscape.interpolation import loss_barrier
from landscape.metrics import cosine_matrix
from landscape.model import build_mlp, count_parameters, flatten_parameters
from landscape.rebasin import (
    align_to,
    apply_permutation,
    join_layers,
    split_layers,
    weight_matching,
)
from landscape.train import train_run

DIGITS_WIDTHS = (64, 32, 32, 10)
PAPER_WIDTHS = (784, 128, 128, 128, 10)


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
    experiment = tiny_experiment(name="rebasin", widths=DIGITS_WIDTHS, epochs=8)
    return [train_run(experiment, run, digits).final_weights for run in (0, 1)]


def random_weights(widths, seed):
    return flatten_parameters(build_mlp(widths, seed=seed)).numpy()


def random_perms(widths, seed):
    rng = np.random.default_rng(seed)
    return [rng.permutation(width) for width in widths[1:-1]]


def forward(flat, widths, x):
    """Return the logits of build_mlp(widths) at the weights ``flat``, in float64."""
    model = build_mlp(widths, seed=0).double()
    vector_to_parameters(torch.as_tensor(np.asarray(flat, dtype=np.float64)), model.parameters())
    with torch.no_grad():
        return model(x.double()).numpy()


def cosine(a, b):
    return cosine_matrix(np.stack([a, b]))[0, 1]


def is_identity(perms):
    return all(np.array_equal(perm, np.arange(len(perm))) for perm in perms)


# --------------------------------------------------------------------------
# Flat vectors and layers
# --------------------------------------------------------------------------


def test_split_layers_follows_parameter_order():
    model = build_mlp(DIGITS_WIDTHS, seed=3)
    flat = flatten_parameters(model).numpy()
    layers = split_layers(flat, DIGITS_WIDTHS)
    parameters = [p.detach().numpy() for p in model.parameters()]
    assert len(layers) == len(DIGITS_WIDTHS) - 1
    for (weight, bias), expected_weight, expected_bias in zip(layers, parameters[::2], parameters[1::2]):
        assert weight.dtype == np.float64
        np.testing.assert_array_equal(weight, expected_weight)
        np.testing.assert_array_equal(bias, expected_bias)


def test_join_layers_inverts_split_layers():
    flat = random_weights(DIGITS_WIDTHS, seed=4)
    joined = join_layers(split_layers(flat, DIGITS_WIDTHS))
    assert joined.dtype == np.float64
    np.testing.assert_array_equal(joined, flat)


def test_join_layers_rejects_mismatched_fan_in():
    layers = [(np.zeros((3, 2)), np.zeros(3)), (np.zeros((2, 4)), np.zeros(2))]
    with pytest.raises(ValueError, match="layer 1 has fan-in 4, but layer 0 has 3 outputs"):
        join_layers(layers)


def test_join_layers_rejects_bias_shape():
    with pytest.raises(ValueError, match=r"layer 0 must be .* got shapes \(3, 2\) and \(2,\)"):
        join_layers([(np.zeros((3, 2)), np.zeros(2))])


# --------------------------------------------------------------------------
# Permutations
# --------------------------------------------------------------------------


def test_apply_permutation_preserves_function():
    flat = random_weights(PAPER_WIDTHS, seed=5)
    perms = random_perms(PAPER_WIDTHS, seed=6)
    permuted = apply_permutation(flat, PAPER_WIDTHS, perms)
    x = torch.randn(256, PAPER_WIDTHS[0], generator=torch.Generator().manual_seed(7))

    assert not np.array_equal(permuted, flat)
    np.testing.assert_array_equal(np.sort(permuted), np.sort(flat))
    np.testing.assert_allclose(
        forward(permuted, PAPER_WIDTHS, x), forward(flat, PAPER_WIDTHS, x), rtol=0, atol=1e-5
    )


def test_apply_permutation_keeps_float32_values():
    flat = random_weights(DIGITS_WIDTHS, seed=8)
    permuted = apply_permutation(flat, DIGITS_WIDTHS, random_perms(DIGITS_WIDTHS, seed=9))
    assert permuted.dtype == np.float64
    np.testing.assert_array_equal(permuted.astype(np.float32).astype(np.float64), permuted)


def test_apply_permutation_inverse_restores_weights():
    flat = random_weights(DIGITS_WIDTHS, seed=10)
    perms = random_perms(DIGITS_WIDTHS, seed=11)
    inverse = [np.argsort(perm) for perm in perms]
    restored = apply_permutation(apply_permutation(flat, DIGITS_WIDTHS, perms), DIGITS_WIDTHS, inverse)
    np.testing.assert_array_equal(restored, flat)


def test_apply_permutation_does_not_modify_input():
    flat = random_weights(DIGITS_WIDTHS, seed=12).astype(np.float64)
    before = flat.copy()
    apply_permutation(flat, DIGITS_WIDTHS, random_perms(DIGITS_WIDTHS, seed=13))
    np.testing.assert_array_equal(flat, before)


@given(
    widths=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    seed=st.integers(0, 2**16),
)
def test_apply_permutation_any_mlp(widths, seed):
    rng = np.random.default_rng(seed)
    flat = rng.standard_normal(count_parameters(widths))
    perms = [rng.permutation(width) for width in widths[1:-1]]
    x = torch.from_numpy(rng.standard_normal((16, widths[0])))

    permuted = apply_permutation(flat, widths, perms)

    np.testing.assert_allclose(forward(permuted, widths, x), forward(flat, widths, x), rtol=0, atol=1e-10)
    np.testing.assert_array_equal(np.sort(permuted), np.sort(flat))


@given(
    widths=st.lists(st.integers(1, 6), min_size=3, max_size=5),
    seed=st.integers(0, 2**16),
)
def test_weight_matching_any_mlp_fixed_point(widths, seed):
    rng = np.random.default_rng(seed)
    reference = rng.standard_normal(count_parameters(widths))
    other = rng.standard_normal(count_parameters(widths))
    x = torch.from_numpy(rng.standard_normal((16, widths[0])))

    aligned = align_to(reference, other, widths)
    again = weight_matching(reference, aligned, widths)

    assert is_identity(again), [perm.tolist() for perm in again]
    assert np.dot(reference, aligned) >= np.dot(reference, other) - 1e-12
    np.testing.assert_allclose(forward(aligned, widths, x), forward(other, widths, x), rtol=0, atol=1e-10)


@given(
    fan_in=st.integers(1, 6),
    hidden=st.integers(1, 7),
    fan_out=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_weight_matching_one_hidden_layer_recovery(fan_in, hidden, fan_out, seed):
    # With one hidden layer the objective is a single assignment problem, so
    # the permutation is recovered whenever the units are distinct.
    widths = (fan_in, hidden, fan_out)
    rng = np.random.default_rng(seed)
    flat = rng.standard_normal(count_parameters(widths))
    perm = rng.permutation(hidden)
    shuffled = apply_permutation(flat, widths, [perm])

    (found,) = weight_matching(flat, shuffled, widths)

    np.testing.assert_array_equal(found, np.argsort(perm))
    np.testing.assert_array_equal(apply_permutation(shuffled, widths, [found]), flat)


# --------------------------------------------------------------------------
# Weight matching
# --------------------------------------------------------------------------


@pytest.mark.parametrize("widths", [DIGITS_WIDTHS, PAPER_WIDTHS], ids=["digits", "paper"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weight_matching_recovers_random_permutation(widths, seed):
    reference = random_weights(widths, seed=100 + seed)
    perms = random_perms(widths, seed=200 + seed)
    shuffled = apply_permutation(reference, widths, perms)

    found = weight_matching(reference, shuffled, widths, seed=seed)
    aligned = apply_permutation(shuffled, widths, found)

    for layer, (perm, inverse) in enumerate(zip(found, perms)):
        np.testing.assert_array_equal(perm, np.argsort(inverse), err_msg=f"hidden layer {layer}")
    np.testing.assert_array_equal(aligned, reference)
    assert cosine(reference, shuffled) < 0.5
    assert cosine(reference, aligned) == pytest.approx(1.0, abs=1e-6)


def test_aligned_trained_copy_zero_barrier(digits, trained_pair):
    widths = DIGITS_WIDTHS
    reference = trained_pair[0]
    shuffled = apply_permutation(reference, widths, random_perms(widths, seed=14))
    x, y = digits.x_train, digits.y_train

    aligned = align_to(reference, shuffled, widths)
    raw_barrier = loss_barrier(widths, reference, shuffled, x, y)
    aligned_barrier = loss_barrier(widths, reference, aligned, x, y)

    np.testing.assert_array_equal(aligned, reference)
    assert raw_barrier > 0.05, f"raw barrier {raw_barrier:.4g} nats is too small to show alignment matters"
    assert abs(aligned_barrier) <= 1e-6, f"aligned barrier {aligned_barrier:.3g} nats"


def test_weight_matching_reaches_fixed_point(trained_pair):
    reference, other = trained_pair
    aligned = align_to(reference, other, DIGITS_WIDTHS)

    again = weight_matching(reference, aligned, DIGITS_WIDTHS, seed=5)

    assert is_identity(again), [perm.tolist() for perm in again]


def test_weight_matching_increases_inner_product(trained_pair):
    reference, other = trained_pair
    aligned = align_to(reference, other, DIGITS_WIDTHS)
    before = float(np.dot(reference.astype(np.float64), other.astype(np.float64)))
    after = float(np.dot(reference.astype(np.float64), aligned))
    assert after > before, f"inner product {before:.6g} before matching, {after:.6g} after"
    assert cosine(reference, aligned) > cosine(reference, other)


def test_weight_matching_single_hidden_layer_is_exact():
    widths = (3, 5, 2)
    reference = random_weights(widths, seed=15)
    other = random_weights(widths, seed=16)

    found = weight_matching(reference, other, widths)
    matched = np.dot(reference, apply_permutation(other, widths, found))

    best = max(
        np.dot(reference, apply_permutation(other, widths, [np.array(perm)]))
        for perm in itertools.permutations(range(widths[1]))
    )
    assert matched == pytest.approx(best, rel=1e-12)


def test_weight_matching_is_deterministic(trained_pair):
    reference, other = trained_pair
    first = weight_matching(reference, other, DIGITS_WIDTHS, seed=3)
    second = weight_matching(reference, other, DIGITS_WIDTHS, seed=3)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_weight_matching_tied_units_identity(caplog):
    # Units 0 and 1 of the hidden layer are identical, so swapping them gives
    # the same objective; matching must neither swap them nor loop.
    widths = (4, 3, 2)
    layers = split_layers(random_weights(widths, seed=17), widths)
    (w1, b1), (w2, b2) = layers
    w1[1], b1[1], w2[:, 1] = w1[0], b1[0], w2[:, 0]
    flat = join_layers([(w1, b1), (w2, b2)])

    with caplog.at_level(logging.WARNING, logger="landscape.rebasin"):
        found = weight_matching(flat, flat, widths, max_iter=3)

    assert is_identity(found), [perm.tolist() for perm in found]
    assert not caplog.records


def test_weight_matching_warns_at_max_iter(trained_pair, caplog):
    reference, other = trained_pair
    with caplog.at_level(logging.WARNING, logger="landscape.rebasin"):
        weight_matching(reference, other, DIGITS_WIDTHS, max_iter=1)
    assert any("did not converge in max_iter=1" in r.getMessage() for r in caplog.records)


def test_weight_matching_without_hidden_layers_returns_no_perms():
    widths = (4, 3)
    flat = random_weights(widths, seed=18)
    assert weight_matching(flat, flat, widths) == []
    np.testing.assert_array_equal(apply_permutation(flat, widths, []), flat)


def test_weight_matching_accepts_tensors():
    flat = random_weights(DIGITS_WIDTHS, seed=19)
    perms = random_perms(DIGITS_WIDTHS, seed=20)
    shuffled = torch.from_numpy(apply_permutation(flat, DIGITS_WIDTHS, perms))
    aligned = align_to(torch.from_numpy(flat), shuffled, DIGITS_WIDTHS)
    np.testing.assert_array_equal(aligned, flat)


def test_flat_layout_matches_parameters_to_vector():
    # The flat layout the module assumes is the one torch's own helper uses.
    model = build_mlp(DIGITS_WIDTHS, seed=21)
    np.testing.assert_array_equal(
        parameters_to_vector(model.parameters()).detach().numpy(), flatten_parameters(model).numpy()
    )


# --------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "other_length, message",
    [
        (3465, r"other_flat has 3465 entries, but an MLP with widths \[64, 32, 32, 10\] has 3466"),
        (3471, "other_flat has 3471 entries"),
    ],
)
def test_weight_matching_rejects_length_mismatch(other_length, message):
    reference = np.zeros(count_parameters(DIGITS_WIDTHS))
    with pytest.raises(ValueError, match=message):
        weight_matching(reference, np.zeros(other_length), DIGITS_WIDTHS)


def test_weight_matching_rejects_widths_mismatch():
    flat = random_weights(DIGITS_WIDTHS, seed=22)
    with pytest.raises(ValueError, match=r"reference_flat has 3466 entries, but an MLP with widths \[64, 32, 10\] has 2410"):
        weight_matching(flat, flat, (64, 32, 10))


@pytest.mark.parametrize(
    "widths, error, message",
    [
        ((64,), ValueError, r"widths \[64\] must list at least two positive sizes"),
        ((64, 0, 10), ValueError, r"widths \[64, 0, 10\] must list"),
        ((64, 32.0, 10), TypeError, "widths must contain ints, got float 32.0"),
        (64, TypeError, "widths must be a sequence of ints, got int 64"),
    ],
)
def test_weight_matching_rejects_bad_widths(widths, error, message):
    with pytest.raises(error, match=message):
        weight_matching(np.zeros(10), np.zeros(10), widths)


def test_weight_matching_rejects_nan():
    flat = random_weights(DIGITS_WIDTHS, seed=23)
    broken = flat.copy()
    broken[5] = np.nan
    with pytest.raises(ValueError, match="other_flat contains NaN or infinite values"):
        weight_matching(flat, broken, DIGITS_WIDTHS)


def test_weight_matching_rejects_2d_vector():
    flat = random_weights(DIGITS_WIDTHS, seed=24)
    with pytest.raises(ValueError, match=r"reference_flat must be a flat 1-D vector, got shape \(1, 3466\)"):
        weight_matching(flat[None, :], flat, DIGITS_WIDTHS)


@pytest.mark.parametrize(
    "keywords, error, message",
    [
        ({"max_iter": 0}, ValueError, "max_iter must be at least 1, got 0"),
        ({"max_iter": 2.5}, TypeError, "max_iter must be an int, got float 2.5"),
        ({"seed": -1}, ValueError, "seed must be non-negative, got -1"),
        ({"seed": None}, TypeError, "seed must be an int, got NoneType None"),
    ],
)
def test_weight_matching_rejects_bad_options(keywords, error, message):
    flat = random_weights(DIGITS_WIDTHS, seed=25)
    with pytest.raises(error, match=message):
        weight_matching(flat, flat, DIGITS_WIDTHS, **keywords)


@pytest.mark.parametrize(
    "perms, message",
    [
        ([np.arange(32)], "expected 2 permutations, one per hidden layer of widths"),
        ([np.arange(32), np.arange(31)], r"perms\[1\] must be an integer array of shape \(32,\)"),
        ([np.arange(32), np.zeros(32, dtype=int)], r"perms\[1\] is not a permutation of 0..31"),
        ([np.arange(32.0), np.arange(32)], r"perms\[0\] must be an integer array .* dtype float64"),
    ],
)
def test_apply_permutation_rejects_bad_perms(perms, message):
    flat = random_weights(DIGITS_WIDTHS, seed=26)
    with pytest.raises(ValueError, match=message):
        apply_permutation(flat, DIGITS_WIDTHS, perms)
