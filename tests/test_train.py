"""Tests of seeded training in landscape.train, on scikit-learn's digits."""

import logging
import re

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from _helpers import TINY_WIDTHS, one_torch_thread, tiny_experiment
from landscape import train
from landscape.data import load_digits
from landscape.model import build_mlp, count_parameters, flatten_parameters
from landscape.train import train_run

RECORDED_ARRAYS = ("snapshots", "train_loss", "grad_norm", "test_loss", "test_accuracy")


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(autouse=True)
def single_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def diverging_experiment():
    # Plain SGD at this step size overflows on digits within a few epochs.
    return tiny_experiment(name="diverging", optimizer="sgd", lr=1e6, epochs=4)


def test_train_run_is_bit_identical_when_repeated(digits):
    experiment = tiny_experiment(epochs=3)

    first = train_run(experiment, 1, digits)
    second = train_run(experiment, 1, digits)

    for name in RECORDED_ARRAYS:
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    assert (first.seed, first.diverged) == (second.seed, second.diverged)


def test_train_run_differs_between_runs(digits):
    experiment = tiny_experiment(epochs=3)

    run0 = train_run(experiment, 0, digits)
    run1 = train_run(experiment, 1, digits)

    assert (run0.seed, run1.seed) == (42, 1042)
    assert not np.array_equal(run0.initial_weights, run1.initial_weights)
    assert not np.array_equal(run0.final_weights, run1.final_weights)
    assert not np.array_equal(run0.train_loss, run1.train_loss)


def test_train_run_ignores_global_rng(digits):
    experiment = tiny_experiment()

    torch.manual_seed(0)
    first = train_run(experiment, 0, digits)
    torch.manual_seed(12345)
    second = train_run(experiment, 0, digits)

    assert np.array_equal(first.snapshots, second.snapshots)


def test_train_run_leaves_global_rng_state_unchanged(digits):
    torch.manual_seed(2024)
    before = torch.get_rng_state()

    train_run(tiny_experiment(), 0, digits)

    assert torch.equal(torch.get_rng_state(), before)


def test_train_run_shapes_and_dtypes(digits):
    epochs = 3
    run = train_run(tiny_experiment(epochs=epochs), 0, digits)

    n_params = count_parameters(TINY_WIDTHS)
    assert run.snapshots.shape == (epochs + 1, n_params)
    assert run.snapshots.dtype == np.float32
    for name in ("train_loss", "grad_norm"):
        assert getattr(run, name).shape == (epochs,), name
        assert getattr(run, name).dtype == np.float64, name
    for name in ("test_loss", "test_accuracy"):
        assert getattr(run, name).shape == (epochs + 1,), name
        assert getattr(run, name).dtype == np.float64, name


def test_train_run_records_finite_healthy_run(digits):
    run = train_run(tiny_experiment(epochs=3), 0, digits)

    assert not run.diverged
    assert run.diverged_epoch is None
    for name in RECORDED_ARRAYS:
        assert np.all(np.isfinite(getattr(run, name))), name
    assert np.all((run.test_accuracy >= 0) & (run.test_accuracy <= 1))
    assert np.all(run.grad_norm > 0)
    # Three epochs of Adam on digits learn far beyond chance (0.1).
    assert run.final_accuracy > 0.5
    assert run.test_loss[-1] < run.test_loss[0]


def test_train_run_starts_from_seeded_initialization(digits):
    experiment = tiny_experiment()

    run = train_run(experiment, 1, digits)

    expected = flatten_parameters(build_mlp(TINY_WIDTHS, seed=experiment.seed(1))).numpy()
    assert np.array_equal(run.initial_weights, expected)


def test_train_run_matches_manual_sgd_step(digits):
    # With one mini-batch per epoch, epoch 1 of plain SGD is a single
    # full-batch gradient step that can be recomputed here.
    lr = 0.05
    experiment = tiny_experiment(optimizer="sgd", lr=lr, batch_size=4096, epochs=1)

    run = train_run(experiment, 0, digits)

    model = build_mlp(TINY_WIDTHS, seed=experiment.seed(0))
    initial_test_loss = F.cross_entropy(model(digits.x_test), digits.y_test).item()
    loss = F.cross_entropy(model(digits.x_train), digits.y_train)
    loss.backward()
    gradient = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    stepped = flatten_parameters(model) - lr * gradient

    assert run.train_loss[0] == pytest.approx(loss.item(), rel=1e-5)
    assert run.grad_norm[0] == pytest.approx(gradient.norm().item(), rel=1e-5)
    assert run.test_loss[0] == pytest.approx(initial_test_loss, rel=1e-5)
    np.testing.assert_allclose(run.snapshots[1], stepped.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_train_run_records_metadata(digits):
    experiment = tiny_experiment()

    run = train_run(experiment, 0, digits)

    assert run.experiment == "tiny"
    assert run.run == 0
    assert run.metadata["dataset"] == "digits"
    assert run.metadata["dataset_checksum"] == digits.checksum
    assert run.metadata["training_version"] == train.TRAINING_VERSION
    assert run.metadata["config"] == experiment.training_config()
    assert run.metadata["device"] == "cpu"


def test_train_run_marks_divergence_with_nan(digits, diverging_experiment, caplog):
    caplog.set_level(logging.WARNING, logger="landscape.train")

    run = train_run(diverging_experiment, 1, digits)

    assert run.diverged
    epoch = run.diverged_epoch
    assert epoch is not None and 0 <= epoch < diverging_experiment.epochs
    # Epoch ``epoch`` (0-based) produced the non-finite loss; snapshot
    # ``epoch + 1`` would have followed it.
    assert np.all(np.isnan(run.train_loss[epoch:]))
    assert np.all(np.isnan(run.grad_norm[epoch:]))
    assert np.all(np.isnan(run.snapshots[epoch + 1 :]))
    assert np.all(np.isnan(run.test_loss[epoch + 1 :]))
    assert np.all(np.isnan(run.test_accuracy[epoch + 1 :]))
    assert np.all(np.isfinite(run.train_loss[:epoch]))
    assert np.all(np.isfinite(run.snapshots[: epoch + 1]))
    assert np.all(np.isfinite(run.test_loss[: epoch + 1]))
    assert f"diverged in epoch {epoch + 1}" in caplog.text


def test_train_run_divergence_is_reproducible(digits, diverging_experiment):
    first = train_run(diverging_experiment, 0, digits)
    second = train_run(diverging_experiment, 0, digits)

    assert first.diverged and second.diverged
    assert first.diverged_epoch == second.diverged_epoch
    for name in RECORDED_ARRAYS:
        assert np.array_equal(getattr(first, name), getattr(second, name), equal_nan=True), name


def test_train_run_rejects_input_width_mismatch(digits):
    experiment = tiny_experiment(widths=(784, 16, 10))
    message = "experiment 'tiny' expects 784 input features but dataset 'digits' has 64"

    with pytest.raises(ValueError, match=re.escape(message)):
        train_run(experiment, 0, digits)


def test_train_run_rejects_too_few_outputs(digits):
    experiment = tiny_experiment(widths=(64, 16, 5))
    message = "experiment 'tiny' has 5 outputs but dataset 'digits' has 10 classes"

    with pytest.raises(ValueError, match=re.escape(message)):
        train_run(experiment, 0, digits)


def test_train_run_rejects_run_outside_experiment(digits):
    with pytest.raises(ValueError, match=re.escape("has runs 0..1, got run 2")):
        train_run(tiny_experiment(), 2, digits)


def test_evaluate_does_not_depend_on_batch_size(digits):
    model = build_mlp(TINY_WIDTHS, seed=3)

    whole = train.evaluate(model, digits.x_test, digits.y_test)
    batched = train.evaluate(model, digits.x_test, digits.y_test, batch_size=7)

    assert batched[0] == pytest.approx(whole[0], rel=1e-6)
    assert batched[1] == whole[1]
    assert whole[1] == pytest.approx(
        (model(digits.x_test).argmax(dim=1) == digits.y_test).float().mean().item()
    )


@pytest.mark.parametrize(
    ("overrides", "optimizer_type", "momentum"),
    [
        ({"optimizer": "adam"}, torch.optim.Adam, None),
        ({"optimizer": "sgd", "momentum": 0.9}, torch.optim.SGD, 0.9),
    ],
    ids=["adam", "sgd"],
)
def test_make_optimizer_uses_experiment_settings(overrides, optimizer_type, momentum):
    experiment = tiny_experiment(lr=0.125, **overrides)
    model = build_mlp(TINY_WIDTHS, seed=0)

    optimizer = train.make_optimizer(experiment, model.parameters())

    assert type(optimizer) is optimizer_type
    assert optimizer.param_groups[0]["lr"] == 0.125
    if momentum is not None:
        assert optimizer.param_groups[0]["momentum"] == momentum


def test_build_mlp_leaves_global_rng_state_unchanged():
    before = torch.get_rng_state()

    build_mlp(TINY_WIDTHS, seed=9)

    assert torch.equal(torch.get_rng_state(), before)


def test_count_parameters_matches_model():
    model = build_mlp((64, 16, 16, 10))

    assert count_parameters((64, 16, 16, 10)) == sum(p.numel() for p in model.parameters())
    assert count_parameters((784, 128, 128, 128, 10)) == 134_794
    assert flatten_parameters(model).numel() == count_parameters((64, 16, 16, 10))
