"""The trained runs of one experiment, gathered for claims, figures and reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from landscape.data import Dataset
from landscape.experiment import Experiment
from landscape.train import Run


@dataclass
class Evidence:
    """An experiment with its runs, its data and the summary statistics of its runs.

    ``summary`` is :func:`landscape.claims.summarize_runs` of ``runs``.
    ``derived`` memoizes quantities computed from the runs, such as
    :func:`landscape.geometry.geometry_of`, which stores them under
    ``cache_dir`` when it is set.
    """

    experiment: Experiment
    runs: list[Run]
    dataset: Dataset
    summary: dict = field(default_factory=dict)
    cache_dir: Path | None = None
    derived: dict = field(default_factory=dict)
