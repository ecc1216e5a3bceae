"""Builders shared by the unit tests: tiny experiments, hand-made runs, one torch thread.

This is a plain module rather than a conftest so that it stays out of
pytest's fixture discovery and can be imported by spawned worker processes.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from landscape.cache import RunCache
from landscape.data import Dataset
from landscape.experiment import Experiment
from landscape.train import Run

TINY_WIDTHS = (64, 16, 10)


def tiny_experiment(**overrides) -> Experiment:
    """Return a digits experiment that trains in a fraction of a second on a CPU."""
    settings = dict(
        name="tiny",
        dataset="digits",
        widths=TINY_WIDTHS,
        optimizer="adam",
        lr=1e-2,
        batch_size=128,
        epochs=2,
        runs=2,
        device="cpu",
    )
    settings.update(overrides)
    return Experiment(**settings)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the previous count.

    The test models are so small that a second thread only adds
    synchronization, and on a busy two-core machine each operation can then
    wait for a descheduled thread. In one measurement, with another process
    busy on both cores, five epochs of a 64-16-10 network took 0.1 s on one
    thread and 6.6 s on two.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def make_run(
    seed: int,
    *,
    grad_norm: np.ndarray,
    final_weights: np.ndarray,
    final_accuracy: float,
    diverged: bool = False,
) -> Run:
    """Build a :class:`Run` by hand, with only the fields the claims read filled in.

    The initial weights are zeros, the test accuracy is constant over epochs
    and ``train_loss`` decreases linearly. A diverged run has NaN from epoch 1
    on, as :func:`landscape.train.train_run` leaves it.
    """
    grad_norm = np.asarray(grad_norm, dtype=np.float64)
    epochs = len(grad_norm)
    final_weights = np.asarray(final_weights, dtype=np.float32)

    snapshots = np.zeros((epochs + 1, final_weights.size), dtype=np.float32)
    snapshots[-1] = final_weights
    train_loss = np.linspace(2.0, 0.1, epochs)
    test_loss = np.linspace(2.3, 0.2, epochs + 1)
    test_accuracy = np.full(epochs + 1, final_accuracy)
    diverged_epoch = None
    if diverged:
        diverged_epoch = 1
        grad_norm = grad_norm.copy()
        for array in (train_loss, grad_norm):
            array[diverged_epoch:] = np.nan
        for array in (snapshots, test_loss, test_accuracy):
            array[diverged_epoch + 1 :] = np.nan

    return Run(
        experiment="hand-made",
        run=seed // 1000,
        seed=seed,
        snapshots=snapshots,
        train_loss=train_loss,
        grad_norm=grad_norm,
        test_loss=test_loss,
        test_accuracy=test_accuracy,
        diverged=diverged,
        diverged_epoch=diverged_epoch,
    )


def get_run_in_worker(
    cache_dir: Path, experiment: Experiment, dataset: Dataset, barrier, results
) -> None:
    """Fetch run 0 through a fresh :class:`RunCache`, as a separate process would.

    Waits on ``barrier`` so that all workers call ``get`` together, then puts
    ``(cache status, start time, end time, snapshots bytes)`` on ``results``.
    """
    torch.set_num_threads(1)
    barrier.wait(timeout=60)
    started = time.time()
    run = RunCache(cache_dir).get(experiment, 0, dataset)
    results.put((run.metadata["cache"], started, time.time(), run.snapshots.tobytes()))
