"""Fixtures for the loss-surface benchmarks: the cached run, its PCA grid, thread counts.

Every benchmark evaluates the grid that the report draws for paper-adam: run
0's trajectory plane from :func:`landscape.pca.pca_plane`, 21 x 21 points
spanning 1.25 times the farthest projected snapshot on both axes, on the
10,000 MNIST test images. The run comes from the run cache and is never
trained here; without a cache entry the benchmarks are skipped.

Each benchmark stores its fastest round in a session table, and the run ends
with a summary of the speed ratios (see :func:`pytest_terminal_summary`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import vector_to_parameters

from landscape import experiment as experiments
from landscape.cache import CorruptEntryError, RunCache, load_run, run_key
from landscape.data import DATA_ROOT_ENV, Dataset, DataError, load_mnist
from landscape.directions import Plane, project
from landscape.model import build_mlp
from landscape.pca import pca_plane
from landscape.planes import GRID_POINTS, MARGIN
from landscape.surface import grid_axis
from landscape.train import Run

EXPERIMENT = "paper-adam"
REPOSITORY = Path(__file__).resolve().parents[1]

# Fastest round in seconds per benchmark, keyed by the names in RATIOS.
TIMINGS = pytest.StashKey[dict[str, float]]()

# Speed ratios reported at the end: (label, slower benchmark, faster benchmark).
RATIOS = (
    ("fast vs reference, 1 thread", "reference[threads=1]", "fast[threads=1]"),
    ("fast vs reference, 2 threads", "reference[threads=2]", "fast[threads=2]"),
    ("fast 1 thread vs group's approach (2 workers)", "group", "fast[threads=1]"),
    ("fast 2 threads vs group's approach (2 workers)", "group", "fast[threads=2]"),
    ("fast vs loss-landscapes, 1 thread", "loss_landscapes[threads=1]", "fast[threads=1]"),
    ("engine K=8 vs K=1, per model-epoch", "engine[K=1]", "engine[K=8]"),
    ("engine K=1 vs group's pipeline, per model-epoch", "group_pipeline", "engine[K=1]"),
    ("capture every step vs every epoch, K=1 (time ratio)", "capture[K=1,every-step]",
     "capture[K=1,every-epoch]"),
    ("capture every step vs every epoch, K=8 (time ratio)", "capture[K=8,every-step]",
     "capture[K=8,every-epoch]"),
)

# Achieved GFLOP/s per benchmark key, for the shares of the matmul rate.
RATES = pytest.StashKey[dict[str, float]]()

# Shares reported at the end: (label, benchmark, matmul benchmark at the same thread count).
SHARES = (
    ("engine K=1 share of matmul GFLOP/s", "engine[K=1]"),
    ("engine K=8 share of matmul GFLOP/s", "engine[K=8]"),
    ("fast engine, 1 thread, share of matmul GFLOP/s", "fast[threads=1]"),
    ("fast engine, 2 threads, share of matmul GFLOP/s", "fast[threads=2]"),
)


@dataclass(frozen=True)
class Grid:
    """The benchmark grid and everything needed to evaluate it."""

    model: nn.Sequential  # weights at the plane's origin
    plane: Plane
    x: torch.Tensor  # float32, (n_samples, 784)
    y: torch.Tensor  # int64, (n_samples,)
    alphas: np.ndarray  # float64, (21,), 0.0 in the middle
    betas: np.ndarray  # float64, (21,)

    @property
    def n_points(self) -> int:
        return len(self.alphas) * len(self.betas)

    def reference_flops(self) -> float:
        """Return the FLOPs of one full forward pass per grid point over all samples.

        Each multiply-add counts as 2 FLOPs; biases, ReLUs and the loss are
        left out. For 784-128-128-128-10, 10,000 samples and 441 points that
        is 2 * 134,400 * 10,000 * 441 = 1.19e12.
        """
        multiply_adds = sum(layer.weight.numel() for layer in self.model if isinstance(layer, nn.Linear))
        return 2.0 * multiply_adds * len(self.x) * self.n_points


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Return the MNIST data root: $LANDSCAPE_DATA_ROOT, else ./data."""
    return Path(os.environ.get(DATA_ROOT_ENV) or REPOSITORY / "data")


@pytest.fixture(scope="session")
def mnist(data_root: Path) -> Dataset:
    root = data_root
    try:
        return load_mnist(root)
    except DataError as error:
        pytest.skip(f"MNIST is not available under {root}: {error}")


@pytest.fixture(scope="session")
def cached_run(mnist: Dataset) -> Run:
    """Return run 0 of paper-adam from the run cache, or skip the benchmark without training."""
    experiment = experiments.get(EXPERIMENT)
    cache = RunCache()
    key = run_key(experiment, 0, mnist.checksum)
    path = cache.path(key)
    if not path.is_file():
        pytest.skip(
            f"{EXPERIMENT} run 0 is not in the run cache (no {path}); the benchmarks "
            f"do not train. Train it first with `landscape train {EXPERIMENT}`"
        )
    # RunCache.get retrains an entry it cannot read, so check the entry first.
    try:
        load_run(path, key)
    except CorruptEntryError as error:
        pytest.skip(
            f"the cache entry of {EXPERIMENT} run 0 is unreadable and the benchmarks "
            f"do not retrain it: {error}"
        )
    return cache.get(experiment, 0, mnist)


@pytest.fixture(scope="session")
def grid(mnist: Dataset, cached_run: Run) -> Grid:
    plane = pca_plane(cached_run.snapshots)
    coordinates, _ = project(cached_run.snapshots, plane)  # (n_snapshots, 2)
    extent = MARGIN * float(np.max(np.abs(coordinates)))
    axis = grid_axis(-extent, extent, GRID_POINTS)

    model = build_mlp(experiments.get(EXPERIMENT).widths)
    vector_to_parameters(torch.from_numpy(plane.origin.astype(np.float32)), model.parameters())
    return Grid(model, plane, mnist.x_test, mnist.y_test, axis, axis.copy())


@pytest.fixture(params=[1, 2], ids=lambda n: f"threads={n}")
def torch_threads(request: pytest.FixtureRequest) -> int:
    """Set torch's intra-op thread count for one benchmark, then restore it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def timings(request: pytest.FixtureRequest) -> dict[str, float]:
    """Return the session table of fastest rounds in seconds."""
    table = request.config.stash.get(TIMINGS, None)
    if table is None:
        table = request.config.stash[TIMINGS] = {}
    return table


@pytest.fixture(scope="session")
def rates(request: pytest.FixtureRequest) -> dict[str, float]:
    """Return the session table of achieved GFLOP/s, with ``threads`` beside each entry."""
    table = request.config.stash.get(RATES, None)
    if table is None:
        table = request.config.stash[RATES] = {}
    return table


def matmul_shares(rates: dict[str, float]) -> dict[str, float]:
    """Return each share of SHARES whose benchmark and matching matmul both ran."""
    shares = {}
    for label, key in SHARES:
        threads = rates.get(f"{key}:threads")
        matmul = rates.get(f"matmul[threads={threads}]")
        if key in rates and matmul:
            shares[f"{label} ({threads} threads)"] = rates[key] / matmul
    return shares


def speed_ratios(table: dict[str, float]) -> dict[str, float]:
    """Return each ratio of RATIOS whose two benchmarks both ran."""
    return {
        label: table[slower] / table[faster]
        for label, slower, faster in RATIOS
        if slower in table and faster in table
    }


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    table = config.stash.get(TIMINGS, {})
    ratios = speed_ratios(table)
    shares = matmul_shares(config.stash.get(RATES, {}))
    if not ratios and not shares:
        return
    terminalreporter.section("speed ratios (fastest rounds)")
    for label, ratio in ratios.items():
        terminalreporter.write_line(f"{label:60s} {ratio:6.2f}x")
    for label, share in shares.items():
        terminalreporter.write_line(f"{label:60s} {100 * share:6.1f}%")


def pytest_benchmark_update_json(config, benchmarks, output_json) -> None:
    """Add the speed ratios to the JSON output, overall and in each faster benchmark's ``extra_info``."""
    table = config.stash.get(TIMINGS, {})
    output_json["speed_ratios"] = speed_ratios(table)
    output_json["matmul_shares"] = matmul_shares(config.stash.get(RATES, {}))
    by_key = {entry["extra_info"].get("key"): entry for entry in output_json["benchmarks"]}
    for label, slower, faster in RATIOS:
        if slower in table and faster in table and faster in by_key:
            by_key[faster]["extra_info"][f"speedup_vs_{slower}"] = round(table[slower] / table[faster], 2)
