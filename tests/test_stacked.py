"""Tests of the stacked-ensemble training engine against plain per-run PyTorch, on digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from _helpers import TINY_WIDTHS, one_torch_thread, tiny_experiment
from landscape.data import load_digits
from landscape.model import build_mlp, count_parameters, flatten_parameters
from landscape.stacked import StackedMLP
from landscape.train import evaluate, evaluate_stack, make_optimizer, train_runs

# digits has 1,437 training images: batches of 144 give 10 steps per epoch,
# so 5 epochs are the 50 steps of the equivalence tests.
BATCH_SIZE = 144
EPOCHS_FOR_50_STEPS = 5
RECORDED_ARRAYS = ("snapshots", "train_loss", "grad_norm", "test_loss", "test_accuracy")


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(autouse=True)
def single_thread():
    with one_torch_thread():
        yield


def plain_run(experiment, run, dataset):
    """Train one run the textbook way: an nn.Module, torch.optim, a seeded permutation per epoch.

    Returns the final flat weights and the per-epoch mean loss and gradient norm.
    """
    seed = experiment.seed(run)
    model = build_mlp(experiment.widths, seed=seed)
    optimizer = make_optimizer(experiment, model.parameters())
    order = torch.Generator().manual_seed(seed)
    losses, norms = [], []
    for _ in range(experiment.epochs):
        permutation = torch.randperm(len(dataset.x_train), generator=order)
        epoch_losses, epoch_norms = [], []
        for start in range(0, len(permutation), experiment.batch_size):
            index = permutation[start : start + experiment.batch_size]
            loss = F.cross_entropy(model(dataset.x_train[index]), dataset.y_train[index])
            optimizer.zero_grad()
            loss.backward()
            gradient = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
            epoch_norms.append(gradient.norm().item())
            optimizer.step()
            epoch_losses.append(loss.item())
        losses.append(np.mean(epoch_losses))
        norms.append(np.mean(epoch_norms))
    return flatten_parameters(model).numpy(), np.array(losses), np.array(norms)


@pytest.mark.parametrize(
    "overrides",
    [
        {"optimizer": "adam", "lr": 1e-2},
        {"optimizer": "sgd", "lr": 0.1},
        {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9},
    ],
    ids=["adam", "sgd", "sgd-momentum"],
)
def test_stack_matches_plain_runs_after_50_steps(digits, overrides):
    experiment = tiny_experiment(
        widths=(64, 32, 16, 10), batch_size=BATCH_SIZE, epochs=EPOCHS_FOR_50_STEPS, runs=4,
        **overrides,
    )
    assert math.ceil(len(digits.x_train) / BATCH_SIZE) * experiment.epochs == 50

    stacked = train_runs(experiment, [0, 1, 2, 3], digits)

    for run in stacked:
        weights, losses, norms = plain_run(experiment, run.run, digits)
        # Relative to the largest weight: Adam divides by sqrt(v), so a weight
        # whose gradients stay near zero can carry a rounding difference that
        # is large next to its own value. Seen: at most 2.8e-6 of the largest
        # weight, with the others below 3e-7.
        scale = np.abs(weights).max()
        np.testing.assert_allclose(run.final_weights, weights, rtol=0, atol=1e-5 * scale)
        np.testing.assert_allclose(run.train_loss, losses, rtol=1e-5)
        np.testing.assert_allclose(run.grad_norm, norms, rtol=1e-5)


def test_run_bit_identical_alone_and_stacked(digits):
    experiment = tiny_experiment(runs=3, epochs=3)

    together = train_runs(experiment, [0, 1, 2], digits)
    alone = train_runs(experiment, [1], digits)[0]

    for name in RECORDED_ARRAYS:
        assert np.array_equal(getattr(together[1], name), getattr(alone, name)), name


def test_train_runs_returns_runs_in_the_order_asked(digits):
    experiment = tiny_experiment(runs=3)

    runs = train_runs(experiment, [2, 0], digits)

    assert [(r.run, r.seed) for r in runs] == [(2, 2042), (0, 42)]
    assert all(r.metadata["stacked_runs"] == 2 for r in runs)


def test_diverging_run_leaves_stack_unchanged(digits):
    # Run 1 starts from huge weights and overflows; run 0 trains normally.
    experiment = tiny_experiment(optimizer="sgd", lr=0.1, epochs=3)
    huge = np.full(count_parameters(TINY_WIDTHS), 1e30, dtype=np.float32)

    together = train_runs(experiment, [0, 1], digits, initial_weights=[None, huge])
    alone = train_runs(experiment, [0], digits)[0]

    assert together[1].diverged and together[1].diverged_epoch == 0
    assert not together[0].diverged
    for name in RECORDED_ARRAYS:
        assert np.array_equal(getattr(together[0], name), getattr(alone, name)), name


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        ([], "runs is empty"),
        ([0, 0], "repeats a run"),
        ([0, 5], "has runs 0..1, got run 5"),
    ],
)
def test_train_runs_rejects_bad_run_lists(digits, runs, message):
    with pytest.raises(ValueError, match=message):
        train_runs(tiny_experiment(), runs, digits)


def test_train_runs_rejects_initial_weights_of_another_length(digits):
    with pytest.raises(ValueError, match="initial_weights has 1 entries for 2 runs"):
        train_runs(tiny_experiment(), [0, 1], digits, initial_weights=[None])


def test_from_seeds_matches_build_mlp():
    seeds = [3, 7, 11]
    stack = StackedMLP.from_seeds(TINY_WIDTHS, seeds)

    assert stack.n_runs == 3
    assert stack.widths == TINY_WIDTHS
    for k, seed in enumerate(seeds):
        expected = flatten_parameters(build_mlp(TINY_WIDTHS, seed=seed))
        assert torch.equal(stack.flat()[k], expected)
        assert torch.equal(flatten_parameters(stack.module(k)), expected)


def test_from_vectors_inverts_flat():
    stack = StackedMLP.from_seeds((5, 4, 3, 2), [1, 2])

    rebuilt = StackedMLP.from_vectors((5, 4, 3, 2), stack.flat())

    assert torch.equal(rebuilt.flat(), stack.flat())


def test_from_vectors_rejects_wrong_length():
    with pytest.raises(ValueError, match=r"expected \(K, 34\)"):
        StackedMLP.from_vectors((5, 4, 2), torch.zeros(2, 33))


@pytest.mark.parametrize("shared_input", [True, False], ids=["shared", "per-run"])
def test_forward_matches_each_module(shared_input):
    generator = torch.Generator().manual_seed(0)
    stack = StackedMLP.from_seeds((6, 5, 4, 3), [1, 2, 3])
    x = torch.randn(3, 7, 6, generator=generator)
    if shared_input:
        x = x[0]

    logits = stack(x)

    assert logits.shape == (3, 7, 3)
    for k in range(3):
        expected = stack.module(k)(x if shared_input else x[k])
        torch.testing.assert_close(logits[k], expected, rtol=1e-6, atol=1e-6)


def test_forward_rejects_wrong_run_count():
    stack = StackedMLP.from_seeds((6, 3), [1, 2])

    with pytest.raises(ValueError, match=r"expected \(B, in\) or \(2, B, in\)"):
        stack(torch.zeros(3, 4, 6))


def test_grad_norms_are_each_runs_global_norm():
    generator = torch.Generator().manual_seed(1)
    stack = StackedMLP.from_seeds((6, 5, 3), [4, 5]).requires_grad_()
    x = torch.randn(2, 9, 6, generator=generator)
    y = torch.randint(0, 3, (2, 9), generator=generator)

    losses = F.cross_entropy(stack(x).flatten(0, 1), y.flatten(), reduction="none").view(2, -1).mean(1)
    losses.sum().backward()

    for k in range(2):
        model = stack.module(k)
        F.cross_entropy(model(x[k]), y[k]).backward()
        expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm()
        torch.testing.assert_close(stack.grad_norms()[k], expected, rtol=1e-6, atol=0)


def test_evaluate_stack_matches_evaluate_per_run(digits):
    stack = StackedMLP.from_seeds(TINY_WIDTHS, [1, 2])

    losses, accuracies = evaluate_stack(stack, digits.x_test, digits.y_test, batch_size=100)

    for k in range(2):
        loss, accuracy = evaluate(stack.module(k), digits.x_test, digits.y_test)
        assert losses[k] == pytest.approx(loss, rel=1e-6)
        assert accuracies[k] == accuracy


def test_constructor_rejects_layers_that_do_not_chain():
    with pytest.raises(ValueError, match="layer 1 takes 4 inputs but layer 0 gives 5 outputs"):
        StackedMLP(
            [torch.zeros(2, 5, 3), torch.zeros(2, 2, 4)],
            [torch.zeros(2, 5), torch.zeros(2, 2)],
        )


def test_dropout_gradients_match_autograd():
    widths, p = (6, 5, 4, 3), 0.3
    generator = torch.Generator().manual_seed(2)
    stack = StackedMLP.from_seeds(widths, [1, 2])
    x = torch.randn(2, 7, 6, generator=generator)
    y = torch.randint(0, 3, (2, 7), generator=generator)

    def generators():
        return [torch.Generator().manual_seed(10), torch.Generator().manual_seed(20)]

    losses = stack.loss_and_gradients(x, y, dropout=p, generators=generators())

    for k, run_generator in enumerate(generators()):
        model = stack.module(k)
        layers = [m for m in model if isinstance(m, torch.nn.Linear)]
        h = x[k]
        for index, layer in enumerate(layers):
            h = layer(h)
            if index < len(layers) - 1:
                h = torch.relu(h)
                keep = torch.rand(h.shape, generator=run_generator) >= p
                h = h * keep / (1 - p)
        loss = F.cross_entropy(h, y[k])
        loss.backward()
        torch.testing.assert_close(losses[k], loss.detach(), rtol=1e-6, atol=0)
        for stacked, parameter in zip(stack.parameters(), model.parameters()):
            torch.testing.assert_close(stacked.grad[k], parameter.grad, rtol=1e-5, atol=1e-7)


def test_dropout_needs_a_generator_per_run():
    stack = StackedMLP.from_seeds((6, 5, 3), [1, 2])
    x, y = torch.zeros(2, 4, 6), torch.zeros(2, 4, dtype=torch.int64)

    with pytest.raises(ValueError, match=r"dropout 0.5 needs one generator per run \(2\), got 1"):
        stack.loss_and_gradients(x, y, dropout=0.5, generators=[torch.Generator()])


@pytest.mark.parametrize(
    "overrides",
    [
        {"dropout": 0.2},
        {"optimizer": "rmsprop", "lr": 1e-3},
        {"optimizer": "sgd", "lr": 0.1, "switch_epoch": 2, "switch_optimizer": "adam",
         "switch_lr": 1e-2},
    ],
    ids=["dropout", "rmsprop", "switch"],
)
def test_variants_are_bit_identical_alone_and_stacked(digits, overrides):
    experiment = tiny_experiment(runs=3, epochs=4, **overrides)

    together = train_runs(experiment, [0, 1, 2], digits)
    alone = train_runs(experiment, [2], digits)[0]

    for name in RECORDED_ARRAYS:
        assert np.array_equal(getattr(together[2], name), getattr(alone, name)), name
    assert not together[2].diverged


def test_switch_starts_the_second_optimizer_with_fresh_state(digits):
    # Adam then Adam at the same rate differs from 4 epochs of Adam only
    # through the reset of the moment estimates at the switch.
    plain = tiny_experiment(epochs=4)
    switched = tiny_experiment(epochs=4, switch_epoch=2, switch_optimizer="adam", switch_lr=1e-2)

    a = train_runs(plain, [0], digits)[0]
    b = train_runs(switched, [0], digits)[0]

    assert np.array_equal(a.snapshots[:3], b.snapshots[:3])
    assert not np.array_equal(a.snapshots[3], b.snapshots[3])
