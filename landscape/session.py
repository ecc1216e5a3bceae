"""Run-wide state of a claims session: options, loaded data, runs and results.

One :class:`ClaimsSession` lives in ``config.stash`` for the whole pytest
run. It loads each dataset and each experiment's runs once, collects the
:class:`~landscape.claims.ClaimResult` of every claim test, and hands all of
it to the report at the end.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from landscape import experiment as registry
from landscape.baseline import load_baseline
from landscape.cache import RunCache
from landscape.claims import ClaimResult, summarize_runs
from landscape.data import Dataset, load_dataset
from landscape.evidence import Evidence
from landscape.experiment import Experiment

logger = logging.getLogger(__name__)


@dataclass
class SessionOptions:
    """Resolved ``--landscape-*`` options."""

    experiments: list[str]
    data_root: Path
    cache_dir: Path
    report_dir: Path
    retrain: bool = False
    landscapes: bool = True
    baseline_path: Path | None = None
    accept_baseline: bool = False


@dataclass
class ClaimsSession:
    """Datasets, runs and claim results shared by all tests of one pytest run."""

    options: SessionOptions
    datasets: dict[str, Dataset] = field(default_factory=dict)
    evidence: dict[str, Evidence] = field(default_factory=dict)
    results: list[ClaimResult] = field(default_factory=list)
    report_paths: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cache = RunCache(self.options.cache_dir)
        self.baseline: dict = {}
        path = self.options.baseline_path
        if path is not None and path.exists():
            self.baseline = load_baseline(path)
        self._started = time.perf_counter()

    def selected_experiments(self) -> list[Experiment]:
        return [registry.get(name) for name in self.options.experiments]

    def dataset(self, name: str) -> Dataset:
        if name not in self.datasets:
            logger.info("loading dataset %s from %s", name, self.options.data_root)
            self.datasets[name] = load_dataset(name, self.options.data_root)
        return self.datasets[name]

    def evidence_for(self, experiment: Experiment) -> Evidence:
        """Return the experiment's runs, training the ones not yet cached."""
        if experiment.name not in self.evidence:
            dataset = self.dataset(experiment.dataset)
            runs = self.cache.get_all(experiment, dataset, retrain=self.options.retrain)
            self._log_progress(experiment)
            self.evidence[experiment.name] = Evidence(
                experiment=experiment,
                runs=runs,
                dataset=dataset,
                summary=summarize_runs(runs),
                cache_dir=self.options.cache_dir,
            )
        return self.evidence[experiment.name]

    def record(self, result: ClaimResult) -> None:
        self.results.append(result)

    def _log_progress(self, experiment: Experiment) -> None:
        """Log how many experiments have their runs ready, and an estimate of the time left."""
        done = len(self.evidence) + 1
        total = len(self.options.experiments)
        elapsed = time.perf_counter() - self._started
        logger.info(
            "runs of %s ready: %d/%d experiments, %.0f s elapsed, about %.0f s left "
            "for the remaining runs",
            experiment.name, done, total, elapsed, elapsed / done * (total - done),
        )
