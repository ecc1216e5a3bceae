"""Benchmarks of loss-surface evaluation on one 21 x 21 PCA-plane grid.

Four ways to compute the same surface run side by side in one pytest run:

1. ``loss_surface(engine="fast")``, at 1 and 2 torch threads;
2. ``loss_surface(engine="reference")``, one ``functional_call`` per point;
3. the original group's approach (:mod:`group_approach`), a joblib loop over
   deep copies of the model;
4. ``loss_landscapes.planar_interpolation`` from loss-landscapes 3.0.6,
   skipped when that package is not installed.

A 4096 x 4096 float32 matrix product gives the machine's measured GFLOP/s.
Each benchmark stores its fastest round, and ``conftest.py`` turns those into
speed ratios in the terminal summary and in the JSON output. Run them with
``scripts/bench.sh``. With the training benchmarks, the whole run took 3 min
42 s on a quiet 2-core AMD EPYC VM.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import vector_to_parameters

from group_approach import N_JOBS, group_surface, start_workers
from landscape.surface import loss_surface

# The fast engine and the matmul take several rounds. The other methods took
# 8 to 16 s per round on a 2-core VM, so they get one.
FAST_ROUNDS = 3
SLOW_ROUNDS = 1
MATMUL_SIZE = 4096
MATMUL_ROUNDS = 3

# Loss tolerances against the fast engine, as in tests/test_surface.py.
LOSS_RTOL = 1e-5
LOSS_ATOL = 1e-6
# loss-landscapes walks the grid by repeated in-place float32 additions, so
# its weights drift from the exact grid points by some ulps per step.
WALK_RTOL = 1e-4


@pytest.fixture(scope="session")
def expected_loss(grid) -> np.ndarray:
    """Return the fast engine's surface, untimed, to check every other method against."""
    return loss_surface(grid.model, grid.plane, grid.x, grid.y, alphas=grid.alphas,
                        betas=grid.betas, engine="fast").loss


def record(benchmark, timings: dict[str, float], key: str, n_points: int | None = None) -> float:
    """Store the fastest round under ``key`` and describe the run in ``extra_info``.

    The load average includes the benchmark's own process, so about 1.0 is a
    quiet machine at one thread.
    """
    fastest = benchmark.stats.stats.min
    timings[key] = fastest
    benchmark.extra_info["key"] = key
    benchmark.extra_info["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    if n_points is not None:
        benchmark.extra_info["ms_per_point"] = round(1000 * fastest / n_points, 2)
    return fastest


@pytest.mark.benchmark(group="matmul")
def test_matmul_gflops(benchmark, torch_threads, timings, rates):
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=generator)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=generator)

    benchmark.pedantic(torch.mm, args=(a, b), rounds=MATMUL_ROUNDS, warmup_rounds=1)

    fastest = record(benchmark, timings, f"matmul[threads={torch_threads}]")
    benchmark.extra_info["torch_threads"] = torch_threads
    benchmark.extra_info["size"] = MATMUL_SIZE
    benchmark.extra_info["gflops"] = round(2 * MATMUL_SIZE**3 / fastest / 1e9, 1)
    rates[f"matmul[threads={torch_threads}]"] = 2 * MATMUL_SIZE**3 / fastest / 1e9


@pytest.mark.benchmark(group="surface-21x21")
def test_fast_engine(benchmark, torch_threads, grid, expected_loss, timings, rates):
    surface = benchmark.pedantic(
        loss_surface, args=(grid.model, grid.plane, grid.x, grid.y),
        kwargs=dict(alphas=grid.alphas, betas=grid.betas, engine="fast"),
        rounds=FAST_ROUNDS,
    )

    np.testing.assert_allclose(surface.loss, expected_loss, rtol=LOSS_RTOL, atol=LOSS_ATOL)
    fastest = record(benchmark, timings, f"fast[threads={torch_threads}]", grid.n_points)
    benchmark.extra_info["torch_threads"] = torch_threads
    # Throughput credited with the FLOPs of a full forward pass per point,
    # which the fast engine avoids, so it can exceed the matmul GFLOP/s.
    benchmark.extra_info["effective_gflops"] = round(grid.reference_flops() / fastest / 1e9, 1)
    key = f"fast[threads={torch_threads}]"
    rates[key] = grid.reference_flops() / fastest / 1e9
    rates[f"{key}:threads"] = torch_threads


@pytest.mark.benchmark(group="surface-21x21")
def test_reference_engine(benchmark, torch_threads, grid, expected_loss, timings):
    surface = benchmark.pedantic(
        loss_surface, args=(grid.model, grid.plane, grid.x, grid.y),
        kwargs=dict(alphas=grid.alphas, betas=grid.betas, engine="reference"),
        rounds=SLOW_ROUNDS,
    )

    np.testing.assert_allclose(surface.loss, expected_loss, rtol=LOSS_RTOL, atol=LOSS_ATOL)
    fastest = record(benchmark, timings, f"reference[threads={torch_threads}]", grid.n_points)
    benchmark.extra_info["torch_threads"] = torch_threads
    benchmark.extra_info["gflops"] = round(grid.reference_flops() / fastest / 1e9, 1)


@pytest.mark.benchmark(group="surface-21x21")
def test_group_approach(benchmark, grid, expected_loss, timings):
    """The group's joblib loop with N_JOBS workers of one thread each.

    The workers are started and import torch before the timed round, so the
    time excludes process start-up.
    """
    vectors = [v.astype(np.float32) for v in (grid.plane.origin, grid.plane.d1, grid.plane.d2)]
    loss = benchmark.pedantic(
        group_surface,
        args=(grid.model, *vectors, grid.x.numpy(), grid.y.numpy(), grid.alphas, grid.betas),
        kwargs=dict(n_jobs=N_JOBS),
        setup=start_workers,
        rounds=SLOW_ROUNDS,
    )

    np.testing.assert_allclose(loss, expected_loss, rtol=LOSS_RTOL, atol=LOSS_ATOL)
    fastest = record(benchmark, timings, "group", grid.n_points)
    benchmark.extra_info["n_jobs"] = N_JOBS
    benchmark.extra_info["threads_per_worker"] = 1
    benchmark.extra_info["gflops"] = round(grid.reference_flops() / fastest / 1e9, 1)


@pytest.mark.benchmark(group="surface-21x21")
@pytest.mark.parametrize("torch_threads", [1], indirect=True, ids=lambda n: f"threads={n}")
def test_loss_landscapes_planar_interpolation(benchmark, torch_threads, grid, expected_loss, timings):
    """``loss_landscapes.planar_interpolation`` on the same 21 x 21 points, where it can.

    Its start point is the grid corner ``(alphas[0], betas[0])`` and each end
    point lies 21 grid steps away along one direction, so its steps match
    ours. It differs from our grid in three ways, all from its loop in
    loss-landscapes 3.0.6:

    - Along ``d2`` it steps before its first evaluation in even rows, so
      those rows hold ``betas[1:]`` plus one point beyond the grid, and only
      odd rows hold ``betas[0:21]``. Only the 400 matching cells are compared.
    - It moves the weights by repeated in-place additions, so its points
      drift from ours by rounding.
    - It returns only the loss (``nn.CrossEntropyLoss`` over the whole test
      set in one forward pass), not the accuracy.

    The timing covers all 441 evaluations.
    """
    loss_landscapes = pytest.importorskip(
        "loss_landscapes", reason="loss-landscapes is not installed; install the "
        "'bench' extra (pip install -e '.[bench]') to include it"
    )
    from loss_landscapes.metrics import Loss

    origin, d1, d2 = (torch.from_numpy(v.astype(np.float32))
                      for v in (grid.plane.origin, grid.plane.d1, grid.plane.d2))
    step = float(grid.alphas[1] - grid.alphas[0])
    steps = len(grid.alphas)
    start = origin + float(grid.alphas[0]) * d1 + float(grid.betas[0]) * d2
    corners = [start, start + steps * step * d1, start + steps * step * d2]
    models = [_model_at(grid.model, weights) for weights in corners]
    metric = Loss(nn.CrossEntropyLoss(), grid.x, grid.y)

    loss = benchmark.pedantic(
        loss_landscapes.planar_interpolation, args=(*models, metric),
        kwargs=dict(steps=steps, deepcopy_model=True), rounds=SLOW_ROUNDS,
    )

    assert loss.shape == (steps, steps)
    odd, even = slice(1, None, 2), slice(0, None, 2)
    np.testing.assert_allclose(loss[odd], expected_loss[odd], rtol=WALK_RTOL, atol=LOSS_ATOL)
    np.testing.assert_allclose(loss[even, :-1], expected_loss[even, 1:], rtol=WALK_RTOL,
                               atol=LOSS_ATOL)
    fastest = record(benchmark, timings, f"loss_landscapes[threads={torch_threads}]", grid.n_points)
    benchmark.extra_info["torch_threads"] = torch_threads
    benchmark.extra_info["gflops"] = round(grid.reference_flops() / fastest / 1e9, 1)


def _model_at(model: nn.Module, weights: torch.Tensor) -> nn.Module:
    moved = copy.deepcopy(model)
    vector_to_parameters(weights, moved.parameters())
    return moved
