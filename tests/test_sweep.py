"""Tests of landscape.sweep in this process and on a real dask.distributed LocalCluster on loopback."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from _helpers import one_torch_thread, tiny_experiment
from landscape.cache import RunCache, run_key
from landscape.claims import evaluate_claim
from landscape.data import load_digits
from landscape.sweep import sweep

distributed = pytest.importorskip("distributed", reason="the sweep tests need dask.distributed")

RECORDED_ARRAYS = ("snapshots", "train_loss", "grad_norm", "test_loss", "test_accuracy")


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(autouse=True)
def single_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def cluster():
    """Two single-thread worker processes behind nannies, on loopback only."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, worker_dashboard_address=None,
    ) as local_cluster:
        yield local_cluster


def cached_runs(cache_dir, experiment, dataset):
    cache = RunCache(cache_dir)
    return [cache.load(experiment, r, dataset.checksum) for r in range(experiment.runs)]


def test_sweep_in_process_trains_only_missing_runs(tmp_path, digits):
    experiments = [tiny_experiment(name="sweep-a", runs=3), tiny_experiment(name="sweep-b", runs=2, lr=2e-2)]
    RunCache(tmp_path).get(experiments[0], 1, digits)

    first = sweep(experiments, cache_dir=tmp_path)
    second = sweep(experiments, cache_dir=tmp_path)

    assert first.total_runs == 5
    assert sorted(first.trained) == [("sweep-a", 0), ("sweep-a", 2), ("sweep-b", 0), ("sweep-b", 1)]
    assert second.trained == []


def test_sweep_on_cluster_matches_in_process(tmp_path, digits, cluster):
    experiment = tiny_experiment(name="sweep-same", runs=4, epochs=3)

    in_process = sweep([experiment], cache_dir=tmp_path / "in-process")
    on_cluster = sweep([experiment], cache_dir=tmp_path / "cluster",
                       scheduler=cluster.scheduler_address)

    expected = [("sweep-same", r) for r in range(4)]
    assert sorted(in_process.trained) == sorted(on_cluster.trained) == expected
    local = cached_runs(tmp_path / "in-process", experiment, digits)
    remote = cached_runs(tmp_path / "cluster", experiment, digits)
    for a, b in zip(local, remote):
        for name in RECORDED_ARRAYS:
            assert np.array_equal(getattr(a, name), getattr(b, name)), (a.run, name)
    for claim_id in ("grad_norm_correlation", "final_weight_cosine", "accuracy_variance"):
        judged_local = evaluate_claim(claim_id, experiment.name, local, seed=0)
        judged_remote = evaluate_claim(claim_id, experiment.name, remote, seed=0)
        assert judged_local.value == judged_remote.value, claim_id
        assert (judged_local.low, judged_local.high) == (judged_remote.low, judged_remote.high), claim_id


def test_killed_worker_costs_only_its_runs(tmp_path, digits, cluster):
    # Long enough per run (about 0.5 s) to kill a worker while others are done.
    experiment = tiny_experiment(name="sweep-kill", widths=(64, 64, 64, 10), runs=8, epochs=40)
    cache = RunCache(tmp_path)
    paths = [cache.path(run_key(experiment, r, digits.checksum)) for r in range(experiment.runs)]
    outcome = {}

    def run_sweep():
        outcome["result"] = sweep([experiment], cache_dir=tmp_path,
                                  scheduler=cluster.scheduler_address)

    thread = threading.Thread(target=run_sweep)
    thread.start()
    deadline = time.monotonic() + 120
    while sum(p.exists() for p in paths) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    with distributed.Client(cluster.scheduler_address) as client:
        busy = [address for address, keys in client.processing().items() if keys]
        assert busy, "no worker was training when the kill was due"
        finished_before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths if p.exists()}
        pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
        os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)

    assert not thread.is_alive()
    result = outcome["result"]
    assert sorted(result.trained) == [("sweep-kill", r) for r in range(8)]
    assert all(p.exists() for p in paths)
    assert len(finished_before) >= 2
    for path, identity in finished_before.items():
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == identity, f"{path.name} was rewritten"
