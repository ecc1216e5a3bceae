"""Tests for landscape.surface: grid axes, both engines, validation, files and logging."""

import copy
import doctest
import json
import logging
from unittest.mock import patch

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize, vector_to_parameters

from landscape import surface
from landscape.data import load_digits
from landscape.directions import Plane, random_plane
from landscape.model import build_mlp
from landscape.surface import (
    Surface,
    grid_axis,
    load_surface,
    loss_surface,
    mlp_layers,
    mlp_widths,
    save_surface,
)
from landscape.train import evaluate

# float32 logits carry about 1e-7 relative rounding, and the engines round
# differently, so a loss close to 0 can differ by about 1e-7 in absolute terms.
LOSS_RTOL = 1e-5
LOSS_ATOL = 1e-6


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


def make_data(n_samples, n_features, n_classes, seed, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n_samples, n_features, generator=generator, dtype=dtype)
    y = torch.randint(0, n_classes, (n_samples,), generator=generator)
    return x, y


def model_at(model, weights):
    """Return a copy of ``model`` with its parameters set to the flat float64 ``weights``."""
    moved = copy.deepcopy(model)
    parameter = next(moved.parameters())
    vector_to_parameters(torch.tensor(weights, dtype=parameter.dtype), moved.parameters())
    return moved


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Run this module's tiny tensor operations on one intra-op thread.

    With two threads, every parallel operation waits for both. When another
    process occupies one of the cores, each such wait can last a scheduler
    time slice (about 8 ms), and on a busy 2-core machine this module then
    took about a minute instead of 7 seconds. The tests check values, which do
    not depend on the thread count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def digits_setup(digits):
    model = build_mlp((64, 32, 32, 10), seed=0)
    plane = random_plane(model, seed=0)
    return model, plane, digits.x_test, digits.y_test


# --------------------------------------------------------------------------
# grid_axis
# --------------------------------------------------------------------------


def test_grid_axis_symmetric_odd_contains_exact_zero():
    axis = grid_axis(-1.0, 1.0, 21)
    assert axis.dtype == np.float64
    assert axis.shape == (21,)
    assert axis[10] == 0.0
    assert axis[0] == -1.0
    assert axis[-1] == 1.0


def test_grid_axis_snaps_linspace_residue_to_zero():
    assert np.linspace(-0.7, 0.3, 11)[7] != 0.0, "the case needs a linspace residue"
    axis = grid_axis(-0.7, 0.3, 11)
    assert axis[7] == 0.0
    np.testing.assert_allclose(axis, np.linspace(-0.7, 0.3, 11), atol=1e-15)


def test_grid_axis_without_zero_is_linspace():
    np.testing.assert_array_equal(grid_axis(0.5, 2.0, 4), np.linspace(0.5, 2.0, 4))
    assert not np.any(grid_axis(-3.0, -1.0, 3) == 0.0)


def test_grid_axis_zero_endpoints_are_exact():
    assert grid_axis(0.0, 1.0, 4)[0] == 0.0
    assert grid_axis(-1.3, 0.0, 4)[-1] == 0.0


def test_grid_axis_single_point():
    np.testing.assert_array_equal(grid_axis(0.0, 0.0, 1), [0.0])
    np.testing.assert_array_equal(grid_axis(0.25, 0.25, 1), [0.25])


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(2, 60),
    data=st.data(),
    step=st.floats(1e-3, 1e3),
)
def test_grid_axis_puts_zero_on_its_grid_point(n, data, step):
    index = data.draw(st.integers(0, n - 1))
    axis = grid_axis(-index * step, (n - 1 - index) * step, n)
    assert axis[index] == 0.0
    assert len(axis) == n
    assert np.all(np.diff(axis) > 0)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ((-1.0, 1.0, 20), ValueError, r"0 lies between grid points.*index 9\.5.*use n=21"),
        ((-1.0, 2.0, 5), ValueError, r"index 1\.333.*use n=7"),
        ((1.0, 1.0, 3), ValueError, "lo must be less than hi, got lo=1.0, hi=1.0"),
        ((2.0, 1.0, 3), ValueError, "lo must be less than hi"),
        ((0.0, 1.0, 0), ValueError, "n must be at least 1, got n=0"),
        ((0.0, 1.0, 1), ValueError, r"a 1-point axis needs lo == hi"),
        ((0.0, 1.0, 3.0), TypeError, "n must be an int, got float"),
        ((0.0, float("inf"), 3), ValueError, "lo and hi must be finite"),
    ],
)
def test_grid_axis_rejects_invalid_arguments(arguments, error, message):
    with pytest.raises(error, match=message):
        grid_axis(*arguments)


# --------------------------------------------------------------------------
# Engines agree
# --------------------------------------------------------------------------


@st.composite
def axes(draw):
    """Grid axes as grid_axis builds them: spanning 0, one-sided, or a single point."""
    n = draw(st.integers(1, 4))
    if n == 1:
        value = draw(st.sampled_from([0.0, 0.5, -1.25]))
        return grid_axis(value, value, 1)
    step = draw(st.floats(0.05, 1.5))
    kind = draw(st.sampled_from(["spans zero", "positive", "negative"]))
    if kind == "spans zero":
        index = draw(st.integers(0, n - 1))
        return grid_axis(-index * step, (n - 1 - index) * step, n)
    start = draw(st.floats(0.01, 1.0))
    if kind == "positive":
        return grid_axis(start, start + (n - 1) * step, n)
    return grid_axis(-start - (n - 1) * step, -start, n)


@settings(max_examples=40, deadline=None)
@given(
    hidden=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    n_features=st.integers(1, 8),
    n_classes=st.integers(2, 5),
    n_samples=st.integers(1, 40),
    seeds=st.tuples(st.integers(0, 2**31), st.integers(0, 2**31), st.integers(0, 2**31)),
    ignore_1d=st.booleans(),
    alphas=axes(),
    betas=axes(),
    chunk=st.integers(1, 16),
    block_elements=st.integers(1, 4000),
    data=st.data(),
)
def test_fast_engine_matches_reference(
    hidden, n_features, n_classes, n_samples, seeds, ignore_1d, alphas, betas,
    chunk, block_elements, data,
):
    widths = [n_features, *hidden, n_classes]
    biases = data.draw(st.lists(st.booleans(), min_size=len(widths) - 1, max_size=len(widths) - 1))
    model_seed, data_seed, plane_seed = seeds
    model = make_mlp(widths, biases, model_seed)
    x, y = make_data(n_samples, n_features, n_classes, data_seed)
    try:
        plane = random_plane(model, seed=plane_seed, ignore_1d=ignore_1d)
    except ValueError as error:
        # Tiny layers with one input per unit give directions of signs only,
        # which can be parallel; that case has its own test.
        assume("parallel" not in str(error) and "is zero" not in str(error))
        raise

    # Small chunks and blocks, so that several of each occur even on tiny data.
    with patch.object(surface, "FAST_SAMPLE_CHUNK", chunk), \
            patch.object(surface, "FAST_BLOCK_ELEMENTS", block_elements):
        fast = loss_surface(model, plane, x, y, alphas=alphas, betas=betas, engine="fast")
    reference = loss_surface(model, plane, x, y, alphas=alphas, betas=betas, engine="reference")

    assert fast.loss.shape == reference.loss.shape == (len(alphas), len(betas))
    np.testing.assert_allclose(fast.loss, reference.loss, rtol=LOSS_RTOL, atol=LOSS_ATOL)
    # A sample whose two largest logits tie to within rounding may be
    # classified differently, so allow one sample per cell.
    np.testing.assert_allclose(fast.accuracy, reference.accuracy, rtol=0, atol=1.0001 / n_samples)


def test_fast_engine_matches_reference_without_hidden_layer():
    model = make_mlp([5, 3], [True], seed=0)
    x, y = make_data(30, 5, 3, seed=1)
    plane = random_plane(model, seed=2)
    kwargs = dict(alphas=grid_axis(-2.0, 2.0, 5), betas=grid_axis(-1.0, 0.5, 4))
    fast = loss_surface(model, plane, x, y, engine="fast", **kwargs)
    reference = loss_surface(model, plane, x, y, engine="reference", **kwargs)
    np.testing.assert_allclose(fast.loss, reference.loss, rtol=LOSS_RTOL, atol=LOSS_ATOL)
    np.testing.assert_array_equal(fast.accuracy, reference.accuracy)


def test_fast_engine_matches_reference_on_digits(digits_setup):
    model, plane, x, y = digits_setup
    kwargs = dict(alphas=grid_axis(-1.0, 1.0, 5), betas=grid_axis(-0.5, 1.0, 4))
    fast = loss_surface(model, plane, x, y, engine="fast", **kwargs)
    reference = loss_surface(model, plane, x, y, engine="reference", **kwargs)
    np.testing.assert_allclose(fast.loss, reference.loss, rtol=LOSS_RTOL, atol=LOSS_ATOL)
    np.testing.assert_allclose(fast.accuracy, reference.accuracy, rtol=0, atol=1.0001 / len(y))


def test_fast_engine_matches_reference_on_paper_architecture():
    # 600 samples span two chunks of FAST_SAMPLE_CHUNK and nine points two blocks.
    model = build_mlp((784, 128, 128, 128, 10), seed=0)
    x, y = make_data(600, 784, 10, seed=3)
    plane = random_plane(model, seed=1)
    kwargs = dict(alphas=grid_axis(-1.0, 1.0, 3), betas=grid_axis(-1.0, 1.0, 3))
    fast = loss_surface(model, plane, x, y, engine="fast", **kwargs)
    reference = loss_surface(model, plane, x, y, engine="reference", **kwargs)
    np.testing.assert_allclose(fast.loss, reference.loss, rtol=LOSS_RTOL, atol=LOSS_ATOL)
    np.testing.assert_allclose(fast.accuracy, reference.accuracy, rtol=0, atol=1.0001 / len(y))


def test_fast_engine_matches_reference_in_float64():
    model = make_mlp([6, 7, 5, 3], [True, False, True], seed=4).double()
    x, y = make_data(25, 6, 3, seed=5, dtype=torch.float64)
    plane = random_plane(model, seed=6)
    kwargs = dict(alphas=grid_axis(-1.0, 1.0, 3), betas=grid_axis(-1.0, 2.0, 4))
    fast = loss_surface(model, plane, x, y, engine="fast", **kwargs)
    reference = loss_surface(model, plane, x, y, engine="reference", **kwargs)
    np.testing.assert_allclose(fast.loss, reference.loss, rtol=1e-12)
    np.testing.assert_array_equal(fast.accuracy, reference.accuracy)


# --------------------------------------------------------------------------
# Grid contract
# --------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_surface_origin_cell_equals_plain_evaluation(digits_setup, engine):
    model, plane, x, y = digits_setup
    result = loss_surface(
        model, plane, x, y,
        alphas=grid_axis(-1.0, 1.0, 5), betas=grid_axis(-0.5, 1.0, 4), engine=engine,
    )
    assert result.origin_index == (2, 1)
    expected_loss, expected_accuracy = evaluate(model, x, y)
    if engine == "reference":
        # Same weights, same batches, same summation: bit-for-bit equal.
        assert result.loss[2, 1] == expected_loss
    else:
        assert result.loss[2, 1] == pytest.approx(expected_loss, rel=1e-6)
    assert result.accuracy[2, 1] == expected_accuracy


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_surface_cell_is_alpha_row_beta_column(digits_setup, engine):
    model, plane, x, y = digits_setup
    alphas, betas = grid_axis(-1.0, 1.0, 3), grid_axis(0.0, 1.5, 4)
    result = loss_surface(model, plane, x, y, alphas=alphas, betas=betas, engine=engine)
    assert result.shape == (3, 4)
    assert result.loss.shape == result.accuracy.shape == (3, 4)
    for i, j in [(0, 3), (2, 1), (1, 2)]:
        moved = model_at(model, plane.point(alphas[i], betas[j]))
        expected_loss, expected_accuracy = evaluate(moved, x, y)
        assert result.loss[i, j] == pytest.approx(expected_loss, rel=1e-5), f"cell [{i}, {j}]"
        assert result.accuracy[i, j] == pytest.approx(expected_accuracy, abs=1.0001 / len(y))


def test_surface_loss_is_mean_cross_entropy_in_nats():
    # A model with zero weights gives uniform logits: loss ln(n_classes).
    model = make_mlp([3, 4], [True], seed=0)
    plane = Plane(
        origin=np.zeros(16), d1=np.eye(16)[0], d2=np.eye(16)[1], kind="custom"
    )
    x, y = make_data(10, 3, 4, seed=0)
    for engine in ("fast", "reference"):
        result = loss_surface(model, plane, x, y, alphas=[0.0], betas=[0.0], engine=engine)
        assert result.loss[0, 0] == pytest.approx(np.log(4), rel=1e-6)


def test_surface_origin_index_is_none_without_zero():
    result = Surface(
        alphas=[0.5, 1.0], betas=[0.0], loss=np.zeros((2, 1)), accuracy=np.zeros((2, 1))
    )
    assert result.origin_index is None


def test_surface_rejects_inconsistent_shapes():
    with pytest.raises(ValueError, match=r"Surface.loss has shape \(1, 2\), expected .* \(2, 1\)"):
        Surface(alphas=[0.0, 1.0], betas=[0.0], loss=np.zeros((1, 2)), accuracy=np.zeros((2, 1)))


def test_reference_engine_handles_other_modules(digits):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))
    plane = random_plane(model, seed=0)
    result = loss_surface(
        model, plane, digits.x_test, digits.y_test, alphas=[-0.5, 0.0], betas=[0.0, 0.5]
    )
    assert result.metadata["engine"] == "reference"
    assert result.metadata["model"]["widths"] is None
    assert result.loss[1, 0] == evaluate(model, digits.x_test, digits.y_test)[0]


def test_auto_engine_picks_fast_for_mlp(digits_setup):
    model, plane, x, y = digits_setup
    result = loss_surface(model, plane, x, y, alphas=[0.0], betas=[0.0])
    assert result.metadata["engine"] == "fast"


# --------------------------------------------------------------------------
# No hidden mutation
# --------------------------------------------------------------------------


def snapshot_state(model):
    return {
        "state": {name: value.clone() for name, value in model.state_dict().items()},
        "pointers": [p.data_ptr() for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "modes": [module.training for module in model.modules()],
    }


def assert_state_unchanged(model, before):
    after = snapshot_state(model)
    for name, value in before["state"].items():
        assert torch.equal(after["state"][name], value), f"{name} changed"
    assert after["pointers"] == before["pointers"], "parameters were replaced"
    assert after["requires_grad"] == before["requires_grad"]
    assert all(grad is None for grad in after["grads"])
    assert after["modes"] == before["modes"], "train/eval modes changed"


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_loss_surface_leaves_model_and_rng_unchanged(engine):
    model = build_mlp((8, 6, 5, 4), seed=0)
    model.train()
    model[1].eval()
    model[0].weight.requires_grad_(False)
    plane = random_plane(model, seed=0)
    x, y = make_data(20, 8, 4, seed=1)
    before = snapshot_state(model)
    rng = torch.get_rng_state()

    loss_surface(
        model, plane, x, y, alphas=grid_axis(-1.0, 1.0, 3), betas=grid_axis(-1.0, 1.0, 3),
        engine=engine,
    )

    assert_state_unchanged(model, before)
    assert torch.equal(torch.get_rng_state(), rng), "the global RNG state changed"


def test_reference_engine_keeps_batchnorm_and_dropout_models_unchanged():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)
        )
    model.train()
    plane = random_plane(model, seed=0)
    x, y = make_data(16, 6, 3, seed=1)
    before = snapshot_state(model)
    rng = torch.get_rng_state()
    kwargs = dict(alphas=grid_axis(-1.0, 1.0, 3), betas=[0.0])

    first = loss_surface(model, plane, x, y, **kwargs)
    second = loss_surface(model, plane, x, y, **kwargs)

    assert_state_unchanged(model, before)
    assert torch.equal(torch.get_rng_state(), rng)
    # Eval mode during the loop: dropout off, so repeated calls agree exactly.
    np.testing.assert_array_equal(first.loss, second.loss)


class FailingForward(nn.Module):
    """A linear model whose forward raises on its ``fail_on``-th call."""

    def __init__(self, fail_on):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.calls = 0
        self.fail_on = fail_on

    def forward(self, inputs):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("forward failed on purpose")
        return self.linear(inputs)


def test_reference_engine_restores_mode_after_error():
    model = FailingForward(fail_on=3)
    model.train()
    plane = random_plane(model, seed=0)
    x, y = make_data(4, 3, 2, seed=0)
    with pytest.raises(RuntimeError, match="on purpose"):
        loss_surface(model, plane, x, y, alphas=grid_axis(-1.0, 1.0, 3), betas=[0.0])
    assert model.training
    assert model.linear.training


# --------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------


def valid_arguments():
    model = build_mlp((8, 6, 4), seed=0)
    x, y = make_data(20, 8, 4, seed=1)
    return dict(
        model=model,
        plane=random_plane(model, seed=0),
        x=x,
        y=y,
        alphas=grid_axis(-1.0, 1.0, 3),
        betas=grid_axis(-1.0, 1.0, 3),
    )


def dropout_mlp():
    return nn.Sequential(nn.Linear(8, 6), nn.Dropout(0.1), nn.Linear(6, 4))


INVALID_CASES = [
    ("model", lambda a: "not a model", TypeError, "model must be an nn.Module, got str"),
    ("plane", lambda a: np.zeros(3), TypeError, r"plane must be a landscape\.directions\.Plane"),
    (
        "plane",
        lambda a: Plane(np.zeros(10), np.eye(10)[0], np.eye(10)[1]),
        ValueError,
        "plane has 10 entries per vector but the model has 82 parameters",
    ),
    ("x", lambda a: a["x"].numpy(), TypeError, "x must be a torch.Tensor, got ndarray"),
    (
        "x",
        lambda a: a["x"].double(),
        TypeError,
        r"x has dtype torch.float64 but the model's parameters have torch.float32; pass x.to",
    ),
    ("x", lambda a: a["x"][:, 0], ValueError, r"x must have shape \(n_samples, \.\.\.\)"),
    (
        "x",
        lambda a: a["x"][:, :7],
        ValueError,
        r"x must have shape \(n_samples, 8\) for this MLP, got \(20, 7\)",
    ),
    ("x", lambda a: a["x"].to("meta"), ValueError, r"x is on meta.*move them with \.to\('cpu'\)"),
    ("y", lambda a: a["y"].float(), TypeError, r"int64 class labels, got dtype torch.float32; pass y.long"),
    ("y", lambda a: a["y"][:19], ValueError, r"y must have shape \(n_samples,\) = \(20,\).*got \(19,\)"),
    ("y", lambda a: a["y"] - 5, ValueError, "y contains negative labels"),
    ("y", lambda a: a["y"] + 3, ValueError, r"y contains label [4-6], but the model has 4 outputs"),
    ("alphas", lambda a: np.linspace(-0.7, 0.3, 11), ValueError, "alphas spans 0 but does not contain 0.0"),
    ("betas", lambda a: [1.0, 0.0, -1.0], ValueError, "betas must be strictly increasing"),
    ("alphas", lambda a: [0.0, np.nan], ValueError, "alphas contains NaN"),
    ("betas", lambda a: [], ValueError, "betas must be 1-D with at least one value"),
    ("betas", lambda a: [["a"]], TypeError, "betas must be a 1-D array of numbers"),
    ("engine", lambda a: "gpu", ValueError, r"engine must be one of \('auto', 'fast', 'reference'\), got 'gpu'"),
    ("batch_size", lambda a: 0, ValueError, "batch_size must be a positive int, got 0"),
]


@pytest.mark.parametrize(
    ("name", "replace", "error", "message"),
    INVALID_CASES,
    ids=[f"{case[0]}-{index}" for index, case in enumerate(INVALID_CASES)],
)
def test_loss_surface_rejects_invalid_input_before_evaluating(name, replace, error, message):
    arguments = valid_arguments()
    arguments[name] = replace(arguments)
    engine_ran = AssertionError("an engine ran before the inputs were validated")
    with patch.object(surface, "_fast_engine", side_effect=engine_ran), \
            patch.object(surface, "_reference_engine", side_effect=engine_ran):
        with pytest.raises(error, match=message):
            loss_surface(**arguments)


def test_loss_surface_rejects_fast_engine_for_unsupported_model():
    arguments = valid_arguments()
    arguments["model"] = dropout_mlp()
    with pytest.raises(ValueError, match=r"engine='fast' does not support this model: layer 1 is Dropout"):
        loss_surface(**arguments, engine="fast")


def test_reference_engine_rejects_labels_beyond_outputs():
    arguments = valid_arguments()
    arguments["y"] = arguments["y"] + 3
    with pytest.raises(ValueError, match=r"y contains label [4-6], but the model has 4 outputs"):
        loss_surface(**arguments, engine="reference")


def test_reference_engine_rejects_non_logit_output():
    model = nn.Sequential(nn.Linear(3, 2), nn.Flatten(0))
    x, y = make_data(5, 3, 2, seed=0)
    with pytest.raises(ValueError, match=r"logits of shape \(batch, n_classes\), got \(2,\)"):
        loss_surface(model, random_plane(model, seed=0), x, y, alphas=[0.0], betas=[0.0])


# --------------------------------------------------------------------------
# mlp_layers
# --------------------------------------------------------------------------


class ScaledLinear(nn.Linear):
    def forward(self, inputs):
        return 2 * super().forward(inputs)


def hooked_mlp():
    model = build_mlp((4, 3, 2), seed=0)
    model[2].register_forward_hook(lambda module, inputs, output: output)
    return model


class Identity(nn.Module):
    def forward(self, weight):
        return weight


def parametrized_mlp():
    model = build_mlp((4, 2), seed=0)
    parametrize.register_parametrization(model[0], "weight", Identity())
    return model


def mlp_with_extra_parameter():
    model = build_mlp((4, 3, 2), seed=0)
    model.register_parameter("temperature", nn.Parameter(torch.ones(1)))
    return model


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: nn.Linear(4, 2), "not an nn.Sequential"),
        (lambda: nn.Sequential(), "empty"),
        (lambda: nn.Sequential(nn.Linear(4, 3), nn.ReLU()), "last layer is ReLU"),
        (lambda: nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)), "layer 1 is Tanh, expected ReLU"),
        (lambda: nn.Sequential(ScaledLinear(4, 2)), "layer 0 is ScaledLinear, expected Linear"),
        (parametrized_mlp, "layer 0 is ParametrizedLinear, expected Linear"),
        (hooked_mlp, "layer 2 has forward hooks"),
        (mlp_with_extra_parameter, "parameters outside its Linear layers"),
    ],
    ids=[
        "linear", "empty", "trailing-relu", "tanh", "linear-subclass", "parametrized",
        "hooks", "extra-parameter",
    ],
)
def test_mlp_layers_explains_unsupported_models(build, reason):
    layers, found = mlp_layers(build())
    assert layers is None
    assert reason in found


def test_mlp_layers_and_widths_of_build_mlp():
    model = build_mlp((784, 128, 128, 128, 10), seed=0)
    layers, reason = mlp_layers(model)
    assert reason == ""
    assert layers == [model[0], model[2], model[4], model[6]]
    assert mlp_widths(model) == [784, 128, 128, 128, 10]
    assert mlp_widths(dropout_mlp()) is None


# --------------------------------------------------------------------------
# save_surface and load_surface
# --------------------------------------------------------------------------


def small_surface():
    model = build_mlp((8, 6, 4), seed=0)
    x, y = make_data(20, 8, 4, seed=1)
    return loss_surface(
        model, random_plane(model, seed=3), x, y,
        alphas=grid_axis(-1.0, 1.0, 3), betas=grid_axis(-0.5, 1.0, 4), dataset_name="random",
    )


def test_save_surface_round_trips(tmp_path):
    original = small_surface()
    path = save_surface(original, tmp_path / "surface.npz")
    loaded = load_surface(path)
    for name in ("alphas", "betas", "loss", "accuracy"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(original, name))
        assert getattr(loaded, name).dtype == np.float64
    assert loaded.metadata == json.loads(json.dumps(original.metadata))
    assert loaded.origin_index == original.origin_index == (1, 1)


def test_saved_surface_records_what_figures_need(tmp_path):
    loaded = load_surface(save_surface(small_surface(), tmp_path / "surface.npz"))
    metadata = loaded.metadata
    assert metadata["dataset"] == "random"
    assert metadata["n_samples"] == 20
    assert metadata["model"]["widths"] == [8, 6, 4]
    assert metadata["plane"]["kind"] == "random"
    assert metadata["plane"]["seed"] == 3
    assert len(metadata["plane"]["direction_seeds"]) == 2
    assert metadata["engine"] == "fast"


def test_save_surface_replaces_file_without_leftovers(tmp_path):
    path = tmp_path / "surface.npz"
    path.write_bytes(b"old contents")
    save_surface(small_surface(), path)
    assert load_surface(path).shape == (3, 4)
    assert [p.name for p in tmp_path.iterdir()] == ["surface.npz"]


def test_save_surface_rejects_unserializable_metadata(tmp_path):
    broken = small_surface()
    broken.metadata["callback"] = print
    with pytest.raises(TypeError, match="not JSON-serializable"):
        save_surface(broken, tmp_path / "surface.npz")
    assert list(tmp_path.iterdir()) == []


def test_load_surface_rejects_other_files(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="is not a surface file written by save_surface"):
        load_surface(path)


def test_load_surface_rejects_other_format_version(tmp_path):
    path = tmp_path / "future.npz"
    header = json.dumps({"format_version": 99, "metadata": {}})
    zeros = np.zeros((1, 1))
    np.savez(path, header=np.array(header), alphas=[0.0], betas=[0.0], loss=zeros, accuracy=zeros)
    with pytest.raises(ValueError, match="format version 99"):
        load_surface(path)


def test_load_surface_reports_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no surface file at"):
        load_surface(tmp_path / "missing.npz")


# --------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_loss_surface_logs_progress_of_long_grids(caplog, capsys, engine):
    arguments = valid_arguments()
    # An interval of 0 s makes every grid "long".
    with patch.object(surface, "PROGRESS_INTERVAL_SECONDS", 0.0), \
            patch.object(surface, "FAST_BLOCK_ELEMENTS", 1):
        with caplog.at_level(logging.INFO, logger="landscape.surface"):
            loss_surface(**arguments, engine=engine)
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("grid rows 1/3 done (3/9 points") for message in messages), messages
    assert messages[-1].startswith("grid of 9 points done in")
    assert capsys.readouterr() == ("", "")


def test_loss_surface_logs_short_grids_at_debug_only(caplog):
    arguments = valid_arguments()
    with caplog.at_level(logging.DEBUG, logger="landscape.surface"):
        loss_surface(**arguments)
    levels = {record.getMessage().split(" ")[0]: record.levelno for record in caplog.records}
    assert levels == {"evaluating": logging.DEBUG, "grid": logging.DEBUG}
    assert caplog.records[0].getMessage() == (
        "evaluating a 3 x 3 grid (9 points) on 20 samples with the fast engine"
    )


def test_surface_docstring_examples_run():
    failures, _ = doctest.testmod(surface, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert failures == 0
