"""Seeded training that records a run's trajectory.

A :class:`Run` holds, per epoch, the weight snapshot, the mean training loss,
the mean gradient norm, and the test loss and accuracy. Training is
deterministic: the same experiment and seed on the same machine reproduce
bit-identical results.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from landscape.data import Dataset
from landscape.experiment import Experiment
from landscape.model import build_mlp, count_parameters, flatten_parameters

logger = logging.getLogger(__name__)

# Bump when a change to this module changes what a run records, so that cached
# runs trained by older code are retrained.
TRAINING_VERSION = "1"

EVAL_BATCH_SIZE = 10_000


@dataclass
class Run:
    """One trained run and its per-epoch record.

    Arrays indexed by snapshot have ``epochs + 1`` entries (entry 0 is the
    initialization, entry ``e`` the weights after epoch ``e``); arrays indexed
    by epoch have ``epochs`` entries. After a divergence, the remaining
    entries are NaN.

    Attributes
    ----------
    snapshots : np.ndarray
        float32, shape ``(epochs + 1, n_params)``: flattened parameters in
        ``model.parameters()`` order.
    train_loss : np.ndarray
        float64, shape ``(epochs,)``: mean cross-entropy (nats) over the
        epoch's mini-batches.
    grad_norm : np.ndarray
        float64, shape ``(epochs,)``: mean over the epoch's mini-batches of the
        global L2 norm of the gradient, taken after ``backward()`` and before
        the optimizer step.
    test_loss, test_accuracy : np.ndarray
        float64, shape ``(epochs + 1,)``: mean cross-entropy (nats) and
        accuracy (fraction) on the test set at each snapshot.
    diverged : bool
        True when a training loss became NaN or infinite; such a run is never
        evidence for a claim.
    """

    experiment: str
    run: int
    seed: int
    snapshots: np.ndarray
    train_loss: np.ndarray
    grad_norm: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    diverged: bool = False
    diverged_epoch: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def initial_weights(self) -> np.ndarray:
        return self.snapshots[0]

    @property
    def final_weights(self) -> np.ndarray:
        return self.snapshots[-1]

    @property
    def final_accuracy(self) -> float:
        return float(self.test_accuracy[-1])

    @property
    def final_train_loss(self) -> float:
        return float(self.train_loss[-1])


def make_optimizer(experiment: Experiment, parameters) -> torch.optim.Optimizer:
    """Return the experiment's optimizer over ``parameters``."""
    if experiment.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=experiment.lr)
    if experiment.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=experiment.lr, momentum=experiment.momentum)
    raise ValueError(f"unknown optimizer {experiment.optimizer!r}")


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE
) -> tuple[float, float]:
    """Return mean cross-entropy (nats) and accuracy of ``model`` on ``(x, y)``."""
    total_loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        total_loss += F.cross_entropy(logits, target, reduction="sum").to(torch.float64)
        correct += (logits.argmax(dim=1) == target).sum()
    return total_loss.item() / len(x), correct.item() / len(x)


def _global_grad_norm(parameters: list[torch.Tensor]) -> torch.Tensor:
    squares = [p.grad.detach().pow(2).sum() for p in parameters if p.grad is not None]
    return torch.stack(squares).sum().sqrt()


def _check_initial_weights(weights: np.ndarray, experiment: Experiment) -> np.ndarray:
    """Return a float32 copy of ``weights``, checked to be flat, finite and of the right length."""
    n_params = count_parameters(experiment.widths)
    try:
        array = np.array(weights, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise TypeError(f"initial_weights must be an array of numbers: {error}") from error
    if array.shape != (n_params,):
        raise ValueError(
            f"initial_weights has shape {array.shape}, expected ({n_params},): one entry "
            f"per parameter of widths {experiment.widths}, in parameters() order"
        )
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(
            f"initial_weights contains {bad.size} NaN or infinite values (first at index "
            f"{bad[0]}: {array[bad[0]]}); pass finite weights"
        )
    return array


def train_run(
    experiment: Experiment,
    run: int,
    dataset: Dataset,
    *,
    device: torch.device | str | None = None,
    initial_weights: np.ndarray | None = None,
) -> Run:
    """Train run ``run`` of ``experiment`` on ``dataset`` and record its trajectory.

    The run's seed (:meth:`Experiment.seed`) fixes the initialization and the
    order of the mini-batches. The caller's global RNG state is left as it was.

    Parameters
    ----------
    initial_weights : np.ndarray, optional
        Flat weights, shape ``(n_params,)`` in ``model.parameters()`` order,
        to start from in place of the seeded initialization. They are cast to
        float32. The seed still fixes the mini-batch order, and the optimizer
        starts with fresh state. ``metadata["initial_weights"]`` is then
        ``"given"``.

    Returns
    -------
    Run
        With ``diverged=True`` if the training loss became NaN or infinite;
        training stops at the end of that epoch.

    Raises
    ------
    TypeError
        If ``initial_weights`` is not an array of numbers.
    ValueError
        If the dataset does not fit the experiment's widths, or
        ``initial_weights`` has the wrong shape or contains NaN or infinity.
    """
    if dataset.n_features != experiment.widths[0]:
        raise ValueError(
            f"experiment {experiment.name!r} expects {experiment.widths[0]} input "
            f"features but dataset {dataset.name!r} has {dataset.n_features}"
        )
    if dataset.n_classes > experiment.widths[-1]:
        raise ValueError(
            f"experiment {experiment.name!r} has {experiment.widths[-1]} outputs but "
            f"dataset {dataset.name!r} has {dataset.n_classes} classes"
        )
    if initial_weights is not None:
        initial_weights = _check_initial_weights(initial_weights, experiment)
    device = torch.device(device) if device is not None else experiment.resolve_device()
    seed = experiment.seed(run)
    epochs = experiment.epochs

    model = build_mlp(experiment.widths, seed=seed).to(device)
    parameters = list(model.parameters())
    if initial_weights is not None:
        with torch.no_grad():
            vector = torch.from_numpy(initial_weights).to(device)
            for parameter, piece in zip(parameters, vector.split([p.numel() for p in parameters])):
                parameter.copy_(piece.view_as(parameter))
    optimizer = make_optimizer(experiment, parameters)
    order = torch.Generator().manual_seed(seed)

    x_train = dataset.x_train.to(device)
    y_train = dataset.y_train.to(device)
    x_test = dataset.x_test.to(device)
    y_test = dataset.y_test.to(device)
    n_train = len(x_train)
    n_batches = math.ceil(n_train / experiment.batch_size)

    snapshots = np.full((epochs + 1, sum(p.numel() for p in parameters)), np.nan, np.float32)
    train_loss = np.full(epochs, np.nan)
    grad_norm = np.full(epochs, np.nan)
    test_loss = np.full(epochs + 1, np.nan)
    test_accuracy = np.full(epochs + 1, np.nan)

    snapshots[0] = flatten_parameters(model).numpy()
    test_loss[0], test_accuracy[0] = evaluate(model, x_test, y_test)
    diverged_epoch = None
    started = time.perf_counter()

    for epoch in range(epochs):
        epoch_started = time.perf_counter()
        model.train()
        permutation = torch.randperm(n_train, generator=order).to(device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        norm_sum = torch.zeros((), dtype=torch.float64, device=device)
        for start in range(0, n_train, experiment.batch_size):
            index = permutation[start : start + experiment.batch_size]
            loss = F.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            norm_sum += _global_grad_norm(parameters).to(torch.float64)
            optimizer.step()
            loss_sum += loss.detach().to(torch.float64)

        # One synchronization per epoch: a NaN or inf loss anywhere in the
        # epoch makes the sum non-finite.
        mean_loss = loss_sum.item() / n_batches
        if not math.isfinite(mean_loss):
            diverged_epoch = epoch
            logger.warning(
                "%s run %d (seed %d) diverged in epoch %d: mean training loss %s",
                experiment.name, run, seed, epoch + 1, mean_loss,
            )
            break

        model.eval()
        train_loss[epoch] = mean_loss
        grad_norm[epoch] = norm_sum.item() / n_batches
        snapshots[epoch + 1] = flatten_parameters(model).numpy()
        test_loss[epoch + 1], test_accuracy[epoch + 1] = evaluate(model, x_test, y_test)
        logger.info(
            "%s run %d/%d epoch %d/%d: train loss %.4f, grad norm %.3f, "
            "test acc %.2f%% (%.1f s)",
            experiment.name, run + 1, experiment.runs, epoch + 1, epochs,
            train_loss[epoch], grad_norm[epoch], 100 * test_accuracy[epoch + 1],
            time.perf_counter() - epoch_started,
        )

    metadata = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_seconds": time.perf_counter() - started,
        "dataset": dataset.name,
        "dataset_checksum": dataset.checksum,
        "training_version": TRAINING_VERSION,
        "config": experiment.training_config(),
    }
    if initial_weights is not None:
        metadata["initial_weights"] = "given"
    return Run(
        experiment=experiment.name,
        run=run,
        seed=seed,
        snapshots=snapshots,
        train_loss=train_loss,
        grad_norm=grad_norm,
        test_loss=test_loss,
        test_accuracy=test_accuracy,
        diverged=diverged_epoch is not None,
        diverged_epoch=diverged_epoch,
        metadata=metadata,
    )
