"""Seeded training that records a run's trajectory.

A :class:`Run` holds, per epoch, the weight snapshot, the mean training loss,
the mean gradient norm, and the test loss and accuracy. Training is
deterministic: the same experiment and seed on the same machine reproduce
bit-identical results.

:func:`train_runs` trains several runs of an experiment at once as one stacked
ensemble (:class:`landscape.stacked.StackedMLP`): each mini-batch step is one
batched forward and backward pass and one optimizer step for all of them.
Each run still gets its own initialization, batch order and optimizer state,
so a run comes out bit for bit the same whether it is trained alone or in a
stack, on one machine. :func:`train_run` is the case of one run.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from landscape.data import Dataset
from landscape.experiment import Experiment
from landscape.model import count_parameters
from landscape.stacked import StackedMLP
from landscape.trajectory import Capture, TrajectoryWriter

logger = logging.getLogger(__name__)

# Bump when a change to this module changes what a run records, so that cached
# runs trained by older code are retrained.
TRAINING_VERSION = "2"

EVAL_BATCH_SIZE = 10_000
# Run r draws its dropout masks from a generator seeded with seed(r) + this.
DROPOUT_SEED_OFFSET = 1
# Activation elements per chunk in evaluate_stack.
STACK_EVAL_ELEMENTS = 2**20


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


def make_optimizer(
    experiment: Experiment, parameters, *, fused: bool = False, phase: int = 0
) -> torch.optim.Optimizer:
    """Return the optimizer of one of the experiment's training phases over ``parameters``.

    ``phase`` indexes :meth:`Experiment.phases`: 0 for the optimizer an
    experiment starts with, 1 for the one after ``switch_epoch``. With
    ``fused=True``, Adam and SGD update each tensor in one kernel instead of
    about ten elementwise passes. The arithmetic is the same up to rounding,
    and on a 2-core CPU it made a step of 8 stacked runs about 5% faster.
    RMSprop has no fused form and ignores ``fused``.
    """
    _, name, lr, momentum = experiment.phases()[phase]
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, fused=fused or None)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, fused=fused or None)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}")


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


@torch.no_grad()
def evaluate_stack(
    stack: StackedMLP, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Return each run's mean cross-entropy (nats) and accuracy on ``(x, y)``, as ``(K,)`` arrays.

    The sums are taken per run as :func:`evaluate` takes them for one model.
    """
    n_runs = stack.n_runs
    # Keep each chunk's activations near 4 MB: chunks of 10,000 samples for
    # 8 runs made 41 MB activations whose allocation and page faults took
    # longer than the products.
    width = max(stack.widths[1:])
    batch_size = max(1, min(batch_size, STACK_EVAL_ELEMENTS // (n_runs * width)))
    total_loss = torch.zeros(n_runs, dtype=torch.float64, device=x.device)
    correct = torch.zeros(n_runs, dtype=torch.int64, device=x.device)
    for start in range(0, len(x), batch_size):
        logits = stack(x[start : start + batch_size])  # (K, b, C)
        target = y[start : start + batch_size]
        losses = F.cross_entropy(
            logits.flatten(0, 1), target.repeat(n_runs), reduction="none"
        ).view(n_runs, -1)
        total_loss += losses.sum(dim=1).to(torch.float64)
        correct += (logits.argmax(dim=2) == target).sum(dim=1)
    return total_loss.cpu().numpy() / len(x), correct.cpu().numpy() / len(x)


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
    capture: Capture | None = None,
) -> Run:
    """Train run ``run`` of ``experiment`` on ``dataset`` and record its trajectory.

    This is :func:`train_runs` with one run: the result is bit-identical to
    that run's entry when it is trained together with others.

    Parameters
    ----------
    initial_weights : np.ndarray, optional
        Flat weights, shape ``(n_params,)`` in ``model.parameters()`` order,
        to start from in place of the seeded initialization. They are cast to
        float32. The seed still fixes the mini-batch order, and the optimizer
        starts with fresh state. ``metadata["initial_weights"]`` is then
        ``"given"``.
    capture : Capture, optional
        Also stream snapshots to disk (see :func:`train_runs`).
    """
    weights = None if initial_weights is None else [initial_weights]
    return train_runs(
        experiment, [run], dataset, device=device, initial_weights=weights, capture=capture
    )[0]


def train_runs(
    experiment: Experiment,
    runs: Sequence[int],
    dataset: Dataset,
    *,
    device: torch.device | str | None = None,
    initial_weights: Sequence[np.ndarray | None] | None = None,
    capture: Capture | None = None,
) -> list[Run]:
    """Train several runs of ``experiment`` at once as one stacked ensemble.

    The runs' parameters are stacked (:class:`landscape.stacked.StackedMLP`)
    and every mini-batch step is one batched forward and backward pass and
    one optimizer step over the stacked tensors. Each run keeps what it has
    when trained alone: the initialization and mini-batch order from its seed
    (:meth:`Experiment.seed`), its own optimizer state (the optimizers are
    elementwise), and its own loss and gradient norm per step. One run is
    the same code path with a stack of one. The caller's global RNG state
    is left as it was.

    Parameters
    ----------
    runs : sequence of int
        Distinct run indices of ``experiment``.
    device : torch.device or str, optional
        Defaults to :meth:`Experiment.resolve_device`.
    initial_weights : sequence of (np.ndarray or None), optional
        One entry per run: flat float32 weights in ``model.parameters()``
        order to start from, or None for the seeded initialization.
    capture : Capture, optional
        Stream each run's snapshots, every epoch or every N steps, to a
        ``.npy`` file in ``capture.directory`` (see
        :mod:`landscape.trajectory`); ``metadata["trajectory"]`` then contains
        the file's path and the step of its first two rows. The per-epoch
        :attr:`Run.snapshots` are recorded either way.

    Returns
    -------
    list of Run
        In the order of ``runs``. A run whose training loss became NaN or
        infinite is ``diverged`` from the end of that epoch on, and its later
        entries are NaN; the other runs go on.

    Raises
    ------
    TypeError
        If an initial weight vector is not an array of numbers.
    ValueError
        If ``runs`` is empty, repeats a run or names one the experiment does
        not have, the dataset does not fit the experiment's widths, or an
        initial weight vector has the wrong shape or contains NaN or infinity.
    """
    runs = [int(r) for r in runs]
    if not runs:
        raise ValueError("runs is empty; pass at least one run index")
    if len(set(runs)) != len(runs):
        raise ValueError(f"runs {runs} repeats a run; pass each run index once")
    seeds = [experiment.seed(r) for r in runs]  # raises for a run out of range
    _check_dataset(experiment, dataset)
    if initial_weights is not None:
        if len(initial_weights) != len(runs):
            raise ValueError(
                f"initial_weights has {len(initial_weights)} entries for {len(runs)} runs; "
                "give one array or None per run"
            )
        initial_weights = [
            None if w is None else _check_initial_weights(w, experiment) for w in initial_weights
        ]
    device = torch.device(device) if device is not None else experiment.resolve_device()
    n_runs = len(runs)
    epochs = experiment.epochs

    stack = _initial_stack(experiment, seeds, initial_weights, device)
    run_parameters = stack.run_parameters()
    switch_epochs = {first: index for index, (first, *_) in enumerate(experiment.phases())}
    orders = [torch.Generator().manual_seed(seed) for seed in seeds]
    dropout_generators = None
    if experiment.dropout:
        # Separate from the data order, so that adding dropout to an
        # experiment leaves its batches as they were.
        dropout_generators = [
            torch.Generator(device=device).manual_seed(seed + DROPOUT_SEED_OFFSET) for seed in seeds
        ]

    x_train = dataset.x_train.to(device)
    y_train = dataset.y_train.to(device)
    x_test = dataset.x_test.to(device)
    y_test = dataset.y_test.to(device)
    n_train = len(x_train)
    batch_size = experiment.batch_size
    n_batches = math.ceil(n_train / batch_size)
    n_params = count_parameters(experiment.widths)
    # The batches are gathered into buffers allocated once: a fresh 6 MB
    # tensor per step (K = 8) costs page faults that took longer than the
    # gather itself.
    x_batch = torch.empty((n_runs * batch_size, x_train.shape[1]), dtype=x_train.dtype, device=device)
    y_batch = torch.empty(n_runs * batch_size, dtype=y_train.dtype, device=device)

    snapshots = np.full((n_runs, epochs + 1, n_params), np.nan, np.float32)
    train_loss = np.full((n_runs, epochs), np.nan)
    grad_norm = np.full((n_runs, epochs), np.nan)
    test_loss = np.full((n_runs, epochs + 1), np.nan)
    test_accuracy = np.full((n_runs, epochs + 1), np.nan)
    diverged_epoch: list[int | None] = [None] * n_runs

    flat = stack.flat().cpu().numpy()
    snapshots[:, 0] = flat
    test_loss[:, 0], test_accuracy[:, 0] = evaluate_stack(stack, x_test, y_test)

    writers = []
    stride = None
    if capture is not None:
        stride = capture.stride(n_batches)
        n_snapshots = capture.n_snapshots(epochs * n_batches, n_batches)
        writers = [
            TrajectoryWriter(capture.path(experiment.name, r, n_batches), n_snapshots, n_params)
            for r in runs
        ]
        for writer, row in zip(writers, flat):
            writer.write(row)

    label = f"{experiment.name} {describe_runs(runs, experiment.runs)}"
    started = time.perf_counter()
    step = 0
    try:
        for epoch in range(epochs):
            if epoch in switch_epochs:  # fresh optimizer state at each phase
                optimizer = make_optimizer(
                    experiment, run_parameters, fused=True, phase=switch_epochs[epoch]
                )
            epoch_started = time.perf_counter()
            active = [k for k in range(n_runs) if diverged_epoch[k] is None]
            if not active:
                break
            permutations = torch.stack(
                [torch.randperm(n_train, generator=order) for order in orders]
            ).to(device)  # (K, n_train)
            loss_sum = torch.zeros(n_runs, dtype=torch.float64, device=device)
            norm_sum = torch.zeros(n_runs, dtype=torch.float64, device=device)
            for start in range(0, n_train, batch_size):
                index = permutations[:, start : start + batch_size].reshape(-1)  # (K * B,)
                rows = len(index)
                torch.index_select(x_train, 0, index, out=x_batch[:rows])
                torch.index_select(y_train, 0, index, out=y_batch[:rows])
                losses = stack.loss_and_gradients(
                    x_batch[:rows].view(n_runs, -1, x_train.shape[1]),
                    y_batch[:rows].view(n_runs, -1),
                    dropout=experiment.dropout,
                    generators=dropout_generators,
                )  # (K,)
                norm_sum += stack.grad_norms().to(torch.float64)
                optimizer.step()
                loss_sum += losses.detach().to(torch.float64)
                step += 1
                if writers and step % stride == 0:
                    # Written from this thread: a writer thread made capture slower
                    # on a 2-core CPU, where training keeps both cores busy.
                    tensors = [p.detach().cpu().numpy() for p in stack.parameters()]
                    for k in active:  # a diverged run's file is NaN from here on
                        writers[k].write_parts([t[k] for t in tensors])

            # One synchronization per epoch: a NaN or inf loss anywhere in
            # the epoch makes that run's sum non-finite.
            mean_loss = loss_sum.cpu().numpy() / n_batches
            mean_norm = norm_sum.cpu().numpy() / n_batches
            flat = stack.flat().cpu().numpy()
            epoch_loss, epoch_accuracy = evaluate_stack(stack, x_test, y_test)
            for k in active:
                if not math.isfinite(mean_loss[k]):
                    diverged_epoch[k] = epoch
                    logger.warning(
                        "%s run %d (seed %d) diverged in epoch %d: mean training loss %s",
                        experiment.name, runs[k], seeds[k], epoch + 1, mean_loss[k],
                    )
                    continue
                train_loss[k, epoch] = mean_loss[k]
                grad_norm[k, epoch] = mean_norm[k]
                snapshots[k, epoch + 1] = flat[k]
                test_loss[k, epoch + 1] = epoch_loss[k]
                test_accuracy[k, epoch + 1] = epoch_accuracy[k]
            logged = [k for k in active if diverged_epoch[k] is None]
            if logged:
                elapsed = time.perf_counter() - started
                logger.info(
                    "%s epoch %d/%d: train loss %s, grad norm %s, test acc %s "
                    "(%.1f s, about %.0f s left)",
                    label, epoch + 1, epochs,
                    _spread(train_loss[logged, epoch], "%.4f"),
                    _spread(grad_norm[logged, epoch], "%.3f"),
                    _spread(100 * test_accuracy[logged, epoch + 1], "%.2f%%"),
                    time.perf_counter() - epoch_started,
                    elapsed / (epoch + 1) * (epochs - epoch - 1),
                )
        paths = [writer.close() for writer in writers]
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    common = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_seconds": (time.perf_counter() - started) / n_runs,
        "stacked_runs": n_runs,
        "dataset": dataset.name,
        "dataset_checksum": dataset.checksum,
        "training_version": TRAINING_VERSION,
        "config": experiment.training_config(),
    }
    results = []
    for k, (run, seed) in enumerate(zip(runs, seeds)):
        metadata = dict(common)
        if initial_weights is not None and initial_weights[k] is not None:
            metadata["initial_weights"] = "given"
        if paths:
            metadata["trajectory"] = {"path": str(paths[k]), "every_steps": stride}
        results.append(Run(
            experiment=experiment.name,
            run=run,
            seed=seed,
            snapshots=snapshots[k],
            train_loss=train_loss[k],
            grad_norm=grad_norm[k],
            test_loss=test_loss[k],
            test_accuracy=test_accuracy[k],
            diverged=diverged_epoch[k] is not None,
            diverged_epoch=diverged_epoch[k],
            metadata=metadata,
        ))
    return results


def _initial_stack(
    experiment: Experiment,
    seeds: list[int],
    initial_weights: list[np.ndarray | None] | None,
    device: torch.device,
) -> StackedMLP:
    """Return the runs' starting weights on ``device``, seeded unless ``initial_weights`` gives a vector."""
    stack = StackedMLP.from_seeds(experiment.widths, seeds)
    if initial_weights is not None and any(w is not None for w in initial_weights):
        flat = stack.flat()
        for k, weights in enumerate(initial_weights):
            if weights is not None:
                flat[k] = torch.from_numpy(weights)
        stack = StackedMLP.from_vectors(experiment.widths, flat)
    return StackedMLP([w.to(device) for w in stack.weights], [b.to(device) for b in stack.biases])


def describe_runs(runs: list[int], total: int) -> str:
    """Describe run indices 1-based for a log line: "run 3/8", "runs 1-8 of 8" or "runs 1, 4 of 8"."""
    if len(runs) == 1:
        return f"run {runs[0] + 1}/{total}"
    if runs == list(range(runs[0], runs[0] + len(runs))):
        return f"runs {runs[0] + 1}-{runs[-1] + 1} of {total}"
    return f"runs {', '.join(str(r + 1) for r in runs)} of {total}"


def _spread(values: np.ndarray, fmt: str) -> str:
    """Format one value, or the range of several, for a progress line."""
    if len(values) == 1:
        return fmt % values[0]
    return f"{fmt % np.min(values)}..{fmt % np.max(values)}"


def _check_dataset(experiment: Experiment, dataset: Dataset) -> None:
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
