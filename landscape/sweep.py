"""Sweeps: train every run of several experiments, in this process or on a Dask cluster.

A run is the unit of work. In this process, the missing runs of each
experiment are trained together as one stack (:func:`landscape.train.train_runs`).
Given the address of a ``dask.distributed`` scheduler, each missing run
becomes one task, and the workers write the results to the same run cache,
which must be a folder that every worker can reach (on one machine, any
folder). A run comes out bit for bit the same trained alone or in a stack,
so both ways give identical results.

A finished run is in the cache the moment its task ends. So a worker lost
mid-sweep costs only the runs it was training, which Dask runs again on
another worker, and running the sweep again trains only what is missing.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from landscape.cache import RunCache, run_key
from landscape.data import Dataset, default_data_root, load_dataset
from landscape.experiment import Experiment

logger = logging.getLogger(__name__)


class SweepError(RuntimeError):
    """A sweep could not run, for example without dask.distributed for a scheduler."""


@dataclass
class SweepResult:
    """The outcome of a sweep: which runs it trained and how long it took.

    Attributes
    ----------
    experiments : list of str
    total_runs : int
        Runs of all experiments.
    trained : list of (str, int)
        ``(experiment, run)`` of the runs this sweep trained.
    seconds : float
        Wall time of the sweep.
    """

    experiments: list[str]
    total_runs: int
    trained: list[tuple[str, int]] = field(default_factory=list)
    seconds: float = 0.0


def sweep(
    experiments: Sequence[Experiment],
    *,
    cache_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    scheduler: str | None = None,
    threads_per_run: int = 1,
) -> SweepResult:
    """Train the runs of ``experiments`` that the cache does not hold yet.

    Parameters
    ----------
    cache_dir : path, optional
        The run cache; defaults to :func:`landscape.cache.default_cache_dir`.
        With a scheduler, every worker must be able to reach it.
    data_root : path, optional
        Where the datasets are; defaults to
        :func:`landscape.data.default_data_root`. Workers load the datasets
        from there themselves.
    scheduler : str, optional
        Address of a ``dask.distributed`` scheduler, such as
        ``tcp://127.0.0.1:8786``. None trains in this process.
    threads_per_run : int, default=1
        Torch intra-op threads of each task on a worker. One thread per task
        and one task per core avoids the oversubscription that makes small
        products many times slower. Ignored in this process, which keeps
        torch's own setting.

    Returns
    -------
    SweepResult
    """
    started = time.perf_counter()
    # Absolute, so that workers started in another folder find the same data.
    data_root = Path(data_root if data_root is not None else default_data_root()).resolve()
    cache = RunCache(Path(cache_dir).resolve() if cache_dir is not None else None)
    datasets = {e.dataset: _load(e.dataset, _root(data_root)) for e in experiments}
    units = [(e, r) for e in experiments for r in range(e.runs)]
    missing = [
        (e, r) for e, r in units
        if not cache.path(run_key(e, r, datasets[e.dataset].checksum)).exists()
    ]
    result = SweepResult([e.name for e in experiments], len(units))
    logger.info(
        "sweep of %d experiments: %d runs, %d in the cache, %d to train%s",
        len(experiments), len(units), len(units) - len(missing), len(missing),
        f" on {scheduler}" if scheduler else " in this process",
    )
    progress = _Progress(len(missing))
    if scheduler is None:
        for experiment in experiments:
            runs = [r for e, r in missing if e is experiment]
            if runs:
                cache.get_many(experiment, runs, datasets[experiment.dataset])
                result.trained.extend((experiment.name, r) for r in runs)
                progress.advance(len(runs))
    else:
        result.trained.extend(
            _sweep_on_cluster(missing, scheduler, cache.directory, data_root, threads_per_run,
                              progress)
        )
    result.seconds = time.perf_counter() - started
    logger.info("sweep done: trained %d runs in %.0f s", len(result.trained), result.seconds)
    return result


def train_one_run(
    experiment: Experiment,
    run: int,
    cache_dir: str,
    data_root: str | None,
    threads: int,
) -> tuple[str, int, str]:
    """Train or load one run into the cache; the task a Dask worker runs.

    Returns ``(experiment name, run, metadata["cache"])``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        dataset = _load(experiment.dataset, _root(data_root))
        trained = RunCache(cache_dir).get_many(experiment, [run], dataset)[0]
    finally:
        torch.set_num_threads(previous)
    return experiment.name, run, trained.metadata["cache"]


def _sweep_on_cluster(missing, scheduler, cache_dir, data_root, threads, progress):
    try:
        from distributed import Client, as_completed
    except ImportError as error:
        raise SweepError(
            "a sweep on a scheduler needs dask.distributed; install it with "
            "pip install 'distributed>=2024.1'"
        ) from error
    trained = []
    root = None if data_root is None else str(data_root)
    with Client(scheduler) as client:
        futures = [
            # A key per run: a run that two sweeps submit at once is trained once.
            client.submit(train_one_run, experiment, run, str(cache_dir), root, threads,
                          key=f"landscape-train-{experiment.name}-{run}-{experiment.config_hash()}",
                          retries=2)
            for experiment, run in missing
        ]
        for future in as_completed(futures):
            name, run, status = future.result()
            trained.append((name, run))
            progress.advance(1, f"{name} run {run + 1} ({status})")
    return trained


class _Progress:
    """Logs runs done of the total and an estimate of the time left."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.started = time.perf_counter()

    def advance(self, count: int, detail: str = "") -> None:
        self.done += count
        elapsed = time.perf_counter() - self.started
        left = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        logger.info(
            "sweep: %d/%d runs done%s, %.0f s elapsed, about %.0f s left",
            self.done, self.total, f" ({detail})" if detail else "", elapsed, left,
        )


def _root(data_root: str | Path | None) -> Path | None:
    return None if data_root is None else Path(data_root)


@functools.lru_cache(maxsize=4)
def _load(name: str, root: Path | None) -> Dataset:
    """Load a dataset once per process, so that a worker's later tasks reuse it."""
    return load_dataset(name, root)
