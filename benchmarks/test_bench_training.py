"""Benchmarks of training throughput, snapshot capture and trajectory PCA.

Three ways to train ``paper-adam`` run side by side in one pytest run, each
timed per model-epoch (one epoch of one run over the 60,000 MNIST training
images):

1. the original group's pipeline (:func:`group_epoch`): a torchvision
   ``MNIST`` dataset with a per-sample ``ToTensor`` and ``Normalize`` behind
   a ``DataLoader`` of batch 256, and a plain ``nn.Module`` with Adam;
2. :func:`landscape.train.train_runs` with one run (K = 1);
3. the same with the experiment's 8 runs stacked (K = 8).

Each gets an achieved GFLOP/s, 6 x parameters x samples per model-epoch,
beside the 4096 x 4096 matmul of ``test_bench_surface.py`` at the same torch
thread count. The engine's epochs include its per-epoch test evaluation and
snapshot, which that count leaves out.

Two more groups measure snapshot capture (every step against every epoch,
K = 1 and K = 8) and trajectory PCA of 31 and 5,000 real snapshots, each in
a child process that reports its peak resident memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from landscape import experiment as experiments
from landscape.data import MNIST_MEAN, MNIST_STD
from landscape.model import build_mlp, count_parameters
from landscape.train import train_runs
from landscape.trajectory import Capture, open_trajectory

EXPERIMENT = "paper-adam"
# Epochs per timed engine round. The engine also evaluates the initial
# weights once per round, so each model-epoch carries half an extra
# evaluation, about 3% of its work.
ENGINE_EPOCHS = 2
ENGINE_ROUNDS = 3
GROUP_ROUNDS = 1
CAPTURE_ROUNDS = 3
# 1 + 22 epochs x 235 steps = 5,171 snapshots, of which PCA takes 5,000.
LONG_TRAJECTORY = 5000
LONG_EPOCHS = 22


def train_flops_per_model_epoch(widths, n_samples: int) -> float:
    """Return 6 x parameters x samples: forward and backward of one epoch, the usual estimate."""
    return 6.0 * count_parameters(widths) * n_samples


def record_epoch(benchmark, timings, rates, key: str, model_epochs: int, flops: float) -> float:
    """Store the fastest round per model-epoch under ``key`` and its achieved GFLOP/s."""
    per_model_epoch = benchmark.stats.stats.min / model_epochs
    timings[key] = per_model_epoch
    benchmark.extra_info["key"] = key
    benchmark.extra_info["torch_threads"] = torch.get_num_threads()
    benchmark.extra_info["model_epochs_per_round"] = model_epochs
    benchmark.extra_info["seconds_per_model_epoch"] = round(per_model_epoch, 4)
    benchmark.extra_info["gflops"] = round(flops / per_model_epoch / 1e9, 1)
    rates[key] = flops / per_model_epoch / 1e9
    rates[f"{key}:threads"] = torch.get_num_threads()
    return per_model_epoch


def group_epoch(root: Path, widths, seed: int) -> float:
    """Train one epoch the group's way and return the mean training loss.

    The group's notebook is not part of this repository; this follows its
    description: torchvision's ``MNIST`` with ``ToTensor`` and ``Normalize``
    applied per sample, a shuffling ``DataLoader`` of batch 256 in the main
    process, and each batch flattened to 784 features.
    """
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    )
    dataset = datasets.MNIST(str(root), train=True, download=False, transform=transform)
    loader = DataLoader(dataset, batch_size=256, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    model = build_mlp(widths, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    total, batches = 0.0, 0
    for images, labels in loader:
        loss = F.cross_entropy(model(images.view(len(images), -1)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
        batches += 1
    return total / batches


@pytest.fixture(scope="module")
def paper_adam():
    return experiments.get(EXPERIMENT)


@pytest.mark.benchmark(group="train-epoch")
def test_group_pipeline_epoch(benchmark, data_root, mnist, paper_adam, timings, rates):
    loss = benchmark.pedantic(group_epoch, args=(data_root, paper_adam.widths, 42),
                              rounds=GROUP_ROUNDS)

    assert 0.05 < loss < 1.0  # one epoch of Adam on MNIST: about 0.3 nats
    flops = train_flops_per_model_epoch(paper_adam.widths, len(mnist.x_train))
    record_epoch(benchmark, timings, rates, "group_pipeline", 1, flops)


@pytest.mark.benchmark(group="train-epoch")
@pytest.mark.parametrize("n_runs", [1, 8], ids=lambda k: f"K={k}")
def test_engine_epoch(benchmark, mnist, paper_adam, timings, rates, n_runs):
    short = dataclasses.replace(paper_adam, epochs=ENGINE_EPOCHS)
    runs = benchmark.pedantic(
        train_runs, args=(short, list(range(n_runs)), mnist), rounds=ENGINE_ROUNDS
    )

    assert all(not run.diverged and run.final_accuracy > 0.9 for run in runs)
    flops = train_flops_per_model_epoch(paper_adam.widths, len(mnist.x_train))
    record_epoch(benchmark, timings, rates, f"engine[K={n_runs}]", n_runs * ENGINE_EPOCHS, flops)


@pytest.mark.benchmark(group="capture")
@pytest.mark.parametrize("n_runs", [1, 8], ids=lambda k: f"K={k}")
@pytest.mark.parametrize("every_steps", [None, 1], ids=["every-epoch", "every-step"])
def test_capture_cost(benchmark, mnist, paper_adam, timings, tmp_path, every_steps, n_runs):
    """One epoch of K runs, streaming a snapshot per epoch or per step to disk.

    The time ends when the files are closed, before the kernel has written
    them to disk. ``sync_seconds`` is how long ``os.sync()`` took after the
    last round.
    """
    short = dataclasses.replace(paper_adam, epochs=1)
    capture = Capture(tmp_path, every_steps=every_steps)

    runs = benchmark.pedantic(
        train_runs, args=(short, list(range(n_runs)), mnist),
        kwargs=dict(capture=capture), rounds=CAPTURE_ROUNDS,
    )
    started = time.perf_counter()
    os.sync()
    sync_seconds = time.perf_counter() - started

    trajectory = open_trajectory(runs[0].metadata["trajectory"]["path"])
    assert np.array_equal(trajectory[-1], runs[0].final_weights)
    key = f"capture[K={n_runs},{'every-step' if every_steps else 'every-epoch'}]"
    timings[key] = benchmark.stats.stats.min
    benchmark.extra_info["key"] = key
    benchmark.extra_info["snapshots_per_run"] = len(trajectory)
    benchmark.extra_info["megabytes_per_round"] = round(n_runs * trajectory.size * 4 / 2**20, 1)
    benchmark.extra_info["sync_seconds"] = round(sync_seconds, 2)
    del trajectory
    for path in tmp_path.glob("*.npy"):  # up to 1 GB; pytest keeps its last 3 temporary folders
        path.unlink()


@pytest.fixture(scope="module")
def trajectories(mnist, paper_adam, tmp_path_factory):
    """Write two real trajectories of run 0, per epoch (31 snapshots) and per step (5,171), then delete them."""
    directory = tmp_path_factory.mktemp("trajectories")
    per_epoch = train_runs(paper_adam, [0], mnist, capture=Capture(directory / "epoch"))[0]
    long_run = dataclasses.replace(paper_adam, epochs=LONG_EPOCHS)
    per_step = train_runs(long_run, [0], mnist, capture=Capture(directory / "step", every_steps=1))[0]
    yield {
        31: Path(per_epoch.metadata["trajectory"]["path"]),
        LONG_TRAJECTORY: Path(per_step.metadata["trajectory"]["path"]),
    }
    shutil.rmtree(directory, ignore_errors=True)  # 2.8 GB


# The child process maps the file, runs PCA on its first rows and prints its
# own time and peak resident memory. The peak is VmHWM from /proc/self/status,
# which starts afresh at exec. On Linux getrusage's ru_maxrss carries over
# exec, so a child started from a 1.3 GB pytest process reported 1.3 GB.
_PCA_CHILD = """
import json, sys, time
from landscape.pca import pca_plane
from landscape.trajectory import open_trajectory

def peak_kib():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1])

path, rows = sys.argv[1], int(sys.argv[2])
before = peak_kib()
trajectory = open_trajectory(path)[:rows]
started = time.perf_counter()
plane = pca_plane(trajectory)
seconds = time.perf_counter() - started
peak = peak_kib()
print(json.dumps({"seconds": seconds, "peak_kib": peak, "peak_kib_before": before,
                  "method": plane.metadata.get("method", "svd"),
                  "explained_variance_ratio": plane.metadata["explained_variance_ratio"]}))
"""


def run_pca_child(path: Path, rows: int) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", _PCA_CHILD, str(path), str(rows)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.benchmark(group="trajectory-pca")
@pytest.mark.parametrize("n_snapshots", [31, LONG_TRAJECTORY], ids=lambda t: f"T={t}")
def test_trajectory_pca(benchmark, trajectories, n_snapshots):
    """PCA of a memory-mapped trajectory in a child process; the time includes its start-up.

    ``peak_resident_mb`` is the child's whole peak, importing torch included
    (about 520 MB with torch 2.14.1's CUDA build); ``resident_mb_before_pca``
    is its peak after the imports.
    """
    result = benchmark.pedantic(run_pca_child, args=(trajectories[n_snapshots], n_snapshots),
                                rounds=1)

    ratios = result["explained_variance_ratio"]
    assert 0 < ratios[1] <= ratios[0] <= 1
    benchmark.extra_info["pca_seconds"] = round(result["seconds"], 2)
    benchmark.extra_info["peak_resident_mb"] = round(result["peak_kib"] / 1024, 1)
    benchmark.extra_info["resident_mb_before_pca"] = round(result["peak_kib_before"] / 1024, 1)
    benchmark.extra_info["method"] = result["method"]
    benchmark.extra_info["explained_variance_ratio"] = [round(r, 4) for r in ratios]
