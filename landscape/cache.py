"""An on-disk cache of trained runs.

Each run is one ``.npz`` file under ``<cache>/runs/``, named by a key made
from the experiment's training configuration, the run's seed, the dataset
checksum and :data:`landscape.train.TRAINING_VERSION`. Entries are written to a
temporary file and renamed into place, so a reader never sees a half-written
entry, and a file lock per key makes concurrent processes (for example
pytest-xdist workers) train each run once. The runs of one request that are
missing are trained together as one stack. An entry that fails to load is
reported, moved aside and retrained.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
from filelock import FileLock

from landscape.data import Dataset
from landscape.experiment import Experiment
from landscape.train import TRAINING_VERSION, Run, describe_runs, train_runs
from landscape.trajectory import Capture

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "LANDSCAPE_CACHE_DIR"

_ARRAYS = ("snapshots", "train_loss", "grad_norm", "test_loss", "test_accuracy")


class CorruptEntryError(ValueError):
    """A cache entry exists but cannot be read back as a valid run."""


class RunNotCachedError(LookupError):
    """A run was requested from the cache without training, but it has no entry."""


def default_cache_dir() -> Path:
    """Return ``$LANDSCAPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/landscape``, else ``~/.cache/landscape``."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "landscape"


def run_key(experiment: Experiment, run: int, dataset_checksum: str) -> str:
    """Return the cache key of run ``run`` of ``experiment``."""
    identity = {
        "config": experiment.training_config(),
        "seed": experiment.seed(run),
        "dataset_checksum": dataset_checksum,
        "training_version": TRAINING_VERSION,
    }
    text = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def save_run(path: Path, run: Run, key: str) -> None:
    """Write ``run`` to ``path`` atomically: a temporary file, then a rename."""
    header = {
        "key": key,
        "experiment": run.experiment,
        "run": run.run,
        "seed": run.seed,
        "diverged": run.diverged,
        "diverged_epoch": run.diverged_epoch,
        "metadata": run.metadata,
    }
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            np.savez(
                handle,
                header=np.array(json.dumps(header)),
                **{name: getattr(run, name) for name in _ARRAYS},
            )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_run(path: Path, key: str | None = None) -> Run:
    """Read a run written by :func:`save_run`.

    Raises
    ------
    CorruptEntryError
        If the file is unreadable, truncated, fails its CRC check, has missing
        arrays or inconsistent shapes, or belongs to another key.
    """
    try:
        # np.load checks a member's CRC only when it reads the member to its
        # end, so a damaged shape in an array header could yield a shorter
        # array unnoticed. testzip reads every member whole first.
        with zipfile.ZipFile(path) as entry:
            damaged = entry.testzip()
        if damaged is None:
            with np.load(path, allow_pickle=False) as archive:
                header = json.loads(str(archive["header"]))
                arrays = {name: archive[name] for name in _ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, NotImplementedError, RuntimeError,
            zipfile.BadZipFile) as error:
        # zipfile raises NotImplementedError for a damaged compression method
        # or version field, and RuntimeError when a damaged flag marks a
        # member as encrypted.
        raise CorruptEntryError(f"{path}: {type(error).__name__}: {error}") from error
    if damaged is not None:
        raise CorruptEntryError(f"{path}: member {damaged!r} fails its CRC-32 check")

    if key is not None and header.get("key") != key:
        raise CorruptEntryError(f"{path}: entry has key {header.get('key')!r}, expected {key!r}")
    epochs = arrays["train_loss"].shape[0]
    expected_lengths = {
        "snapshots": epochs + 1,
        "grad_norm": epochs,
        "test_loss": epochs + 1,
        "test_accuracy": epochs + 1,
    }
    for name, length in expected_lengths.items():
        if arrays[name].shape[0] != length:
            raise CorruptEntryError(
                f"{path}: {name} has {arrays[name].shape[0]} entries, expected {length}"
            )
    if arrays["snapshots"].ndim != 2 or arrays["snapshots"].dtype != np.float32:
        raise CorruptEntryError(f"{path}: snapshots are not a 2-D float32 array")

    return Run(
        experiment=header["experiment"],
        run=header["run"],
        seed=header["seed"],
        diverged=header["diverged"],
        diverged_epoch=header["diverged_epoch"],
        metadata=header["metadata"],
        **arrays,
    )


class RunCache:
    """Trained runs on disk, trained on first request.

    Parameters
    ----------
    directory : path, optional
        Defaults to :func:`default_cache_dir`.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.directory / "runs" / f"{key}.npz"

    def get(
        self,
        experiment: Experiment,
        run: int,
        dataset: Dataset,
        *,
        retrain: bool = False,
    ) -> Run:
        """Return run ``run`` of ``experiment``, training and storing it if needed.

        With ``retrain=True`` the run is trained again and the entry replaced.
        The run's ``metadata["cache"]`` records whether it was ``"hit"``,
        ``"trained"`` or ``"retrained"``.
        """
        return self.get_many(experiment, [run], dataset, retrain=retrain)[0]

    def get_many(
        self,
        experiment: Experiment,
        runs: Sequence[int],
        dataset: Dataset,
        *,
        retrain: bool = False,
        capture: Capture | None = None,
    ) -> list[Run]:
        """Return several runs of ``experiment``, training the missing ones together.

        The runs not in the cache (all of them with ``retrain=True``) are
        trained as one stack by :func:`landscape.train.train_runs`, which
        gives each run the same result as training it alone, and each is
        stored in its own entry. The locks of all requested entries are held
        meanwhile. They are taken in key order, so two processes that request
        overlapping sets cannot deadlock, and the second one then finds the
        entries written.

        With ``capture``, a run whose trajectory file (see
        :mod:`landscape.trajectory`) does not exist yet counts as missing: it
        is trained again, which reproduces its cache entry bit for bit, and
        its snapshots are streamed to that file.

        Returns
        -------
        list of Run
            In the order of ``runs``, each with ``metadata["cache"]`` set as
            in :meth:`get`.
        """
        runs = [int(r) for r in runs]
        for run in runs:
            experiment.seed(run)  # raises for a run the experiment does not have
        keys = {run: run_key(experiment, run, dataset.checksum) for run in runs}
        (self.directory / "runs").mkdir(parents=True, exist_ok=True)
        locks = [FileLock(str(self.path(key).with_suffix(".lock"))) for key in sorted(set(keys.values()))]

        with contextlib.ExitStack() as held:
            for lock in locks:
                held.enter_context(lock)
            found: dict[int, Run] = {}
            if not retrain:
                for run in runs:
                    cached = self._read_or_set_aside(experiment, run, keys[run])
                    if cached is not None:
                        found[run] = cached
            if capture is not None:
                steps_per_epoch = math.ceil(len(dataset.x_train) / experiment.batch_size)
                for run in runs:
                    if not capture.path(experiment.name, run, steps_per_epoch).exists():
                        found.pop(run, None)
            missing = [run for run in dict.fromkeys(runs) if run not in found]
            if missing:
                logger.info(
                    "training %s %s together (seeds %s)",
                    experiment.name, describe_runs(missing, experiment.runs),
                    ", ".join(str(experiment.seed(r)) for r in missing),
                )
                for trained in train_runs(experiment, missing, dataset, capture=capture):
                    key = keys[trained.run]
                    trained.metadata["cache_key"] = key
                    save_run(self.path(key), trained, key)
                    trained.metadata["cache"] = "retrained" if retrain else "trained"
                    found[trained.run] = trained
        return [found[run] for run in runs]

    def _read_or_set_aside(self, experiment: Experiment, run: int, key: str) -> Run | None:
        """Return the cached run, or None when it is missing or corrupt (then moved aside)."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            cached = load_run(path, key)
        except CorruptEntryError as error:
            aside = path.with_name(path.name + ".corrupt")
            os.replace(path, aside)
            logger.warning(
                "cache entry for %s run %d is corrupt and was moved to %s; "
                "retraining. Cause: %s",
                experiment.name, run, aside, error,
            )
            return None
        cached.experiment = experiment.name
        cached.metadata["cache"] = "hit"
        logger.debug("cache hit for %s run %d: %s", experiment.name, run, path)
        return cached

    def load(self, experiment: Experiment, run: int, dataset_checksum: str) -> Run:
        """Return run ``run`` of ``experiment`` from the cache, never training it.

        Unlike :meth:`get`, this leaves the cache as it is: a corrupt entry is
        reported, not moved aside. No lock is taken, because entries are
        renamed into place whole, so a reader sees an entry either complete
        or not at all.

        Parameters
        ----------
        dataset_checksum : str
            :attr:`landscape.data.Dataset.checksum` of the data the run was
            trained on; part of the cache key.

        Returns
        -------
        Run
            With ``metadata["cache"] == "hit"``.

        Raises
        ------
        RunNotCachedError
            If the run has no entry; the message names the command that trains it.
        CorruptEntryError
            If the entry cannot be read back as a valid run.
        ValueError
            If ``run`` is not a run index of ``experiment``.
        """
        key = run_key(experiment, run, dataset_checksum)
        path = self.path(key)
        if not path.exists():
            raise RunNotCachedError(
                f"run {run} of experiment {experiment.name!r} is not in the cache "
                f"{self.directory} (no {path.name}); train it first with "
                f"`landscape train {experiment.name}`, with the same --cache-dir and "
                "--experiments-file options, if any"
            )
        try:
            cached = load_run(path, key)
        except CorruptEntryError as error:
            raise CorruptEntryError(
                f"{error}; run `landscape train {experiment.name}` to move the entry "
                "aside and train the run again"
            ) from error
        cached.experiment = experiment.name
        cached.metadata["cache"] = "hit"
        logger.debug("loaded %s run %d from %s", experiment.name, run, path)
        return cached

    def get_all(
        self,
        experiment: Experiment,
        dataset: Dataset,
        *,
        retrain: bool = False,
        capture: Capture | None = None,
    ) -> list[Run]:
        """Return all runs of ``experiment`` in run order, training the missing ones as one stack."""
        return self.get_many(
            experiment, range(experiment.runs), dataset, retrain=retrain, capture=capture
        )
