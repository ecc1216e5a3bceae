"""Tests of the on-disk run cache in landscape.cache: keys, atomic saves, corruption, locking."""

import dataclasses
import logging
import multiprocessing
import re

import numpy as np
import pytest

from _helpers import TINY_WIDTHS, get_run_in_worker, one_torch_thread, tiny_experiment
from landscape import cache
from landscape.cache import (
    CorruptEntryError,
    RunCache,
    RunNotCachedError,
    load_run,
    run_key,
    save_run,
)
from landscape.data import load_digits
from landscape.model import count_parameters
from landscape.train import train_run

RECORDED_ARRAYS = ("snapshots", "train_loss", "grad_norm", "test_loss", "test_accuracy")


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(autouse=True)
def single_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def trained(digits):
    """Run 0 of the tiny experiment, trained once for the whole module."""
    with one_torch_thread():
        return train_run(tiny_experiment(), 0, digits)


def assert_same_run(actual, expected):
    for name in RECORDED_ARRAYS:
        assert np.array_equal(getattr(actual, name), getattr(expected, name), equal_nan=True), name
    assert (actual.run, actual.seed) == (expected.run, expected.seed)
    assert (actual.diverged, actual.diverged_epoch) == (expected.diverged, expected.diverged_epoch)


def leftover_temporaries(directory):
    return sorted(path.name for path in directory.rglob("*.tmp-*"))


def test_run_key_ignores_name_and_run_count():
    key = run_key(tiny_experiment(), 0, "abc")

    assert run_key(tiny_experiment(name="renamed", runs=5), 0, "abc") == key


@pytest.mark.parametrize(
    "overrides",
    [
        {"lr": 2e-2},
        {"epochs": 3},
        {"batch_size": 64},
        {"widths": (64, 32, 10)},
        {"optimizer": "sgd"},
        {"seed_base": 43},
        {"seed_stride": 999},
    ],
    ids=lambda overrides: next(iter(overrides)),
)
def test_run_key_changes_with_config_and_seed_rule(overrides):
    assert run_key(tiny_experiment(**overrides), 1, "abc") != run_key(tiny_experiment(), 1, "abc")


def test_run_key_changes_with_run():
    experiment = tiny_experiment()

    assert run_key(experiment, 0, "abc") != run_key(experiment, 1, "abc")


def test_run_key_changes_with_dataset_checksum():
    experiment = tiny_experiment()

    assert run_key(experiment, 0, "abc") != run_key(experiment, 0, "abd")


def test_run_key_changes_with_training_version(monkeypatch):
    experiment = tiny_experiment()
    key = run_key(experiment, 0, "abc")

    monkeypatch.setattr(cache, "TRAINING_VERSION", "next")

    assert run_key(experiment, 0, "abc") != key


def test_save_run_round_trips_through_load_run(tmp_path, trained):
    path = tmp_path / "entry.npz"

    save_run(path, trained, "key-1")
    loaded = load_run(path, "key-1")

    assert_same_run(loaded, trained)
    assert loaded.experiment == trained.experiment
    assert loaded.metadata == trained.metadata
    assert loaded.snapshots.dtype == np.float32


def test_save_run_leaves_no_temporary_file(tmp_path, trained):
    save_run(tmp_path / "entry.npz", trained, "key-1")

    assert [path.name for path in tmp_path.iterdir()] == ["entry.npz"]


def test_save_run_failure_keeps_previous_entry(tmp_path, trained, monkeypatch):
    path = tmp_path / "entry.npz"
    save_run(path, trained, "old")
    before = path.read_bytes()

    def failing_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(cache.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_run(path, trained, "new")

    assert path.read_bytes() == before
    assert leftover_temporaries(tmp_path) == []


def test_load_run_rejects_entry_of_other_key(tmp_path, trained):
    path = tmp_path / "entry.npz"
    save_run(path, trained, "key-1")

    with pytest.raises(CorruptEntryError, match=re.escape("entry has key 'key-1', expected 'key-2'")):
        load_run(path, "key-2")


def corrupt_bytes(raw, corruption, epochs):
    """Return ``raw`` (a saved .npz) damaged in the way ``corruption`` names."""
    if corruption == "truncated":
        return raw[: len(raw) // 2]
    if corruption == "empty":
        return b""
    if corruption == "not-a-zip":
        return b"this is not an npz archive"
    if corruption == "overwritten-data":
        # The snapshots take up most of the file, so the middle lies in them.
        middle = len(raw) // 2
        return raw[:middle] + b"\xff" * 16 + raw[middle + 16 :]
    if corruption == "array-shape":
        # Claim fewer parameters in the snapshots' .npy header: reading stops
        # early, before the member's CRC would be checked.
        n_params = count_parameters(TINY_WIDTHS)
        old = f"({epochs + 1}, {n_params})".encode()
        new = f"({epochs + 1}, {n_params - 10})".encode()
        assert raw.count(old) == 1
        return raw.replace(old, new)
    directory = raw.index(b"PK\x01\x02")  # first central directory record
    if corruption == "version-field":
        # "Version needed to extract" becomes one that zipfile cannot read.
        return raw[: directory + 6] + b"\xff" + raw[directory + 7 :]
    if corruption == "encryption-flag":
        flags = directory + 8
        return raw[:flags] + bytes([raw[flags] | 0x01]) + raw[flags + 1 :]
    raise ValueError(f"unknown corruption {corruption!r}")


CORRUPTIONS = [
    "truncated",
    "empty",
    "not-a-zip",
    "overwritten-data",
    "array-shape",
    "version-field",
    "encryption-flag",
]


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_load_run_detects_corruption(tmp_path, trained, corruption):
    path = tmp_path / "entry.npz"
    save_run(path, trained, "key-1")
    raw = path.read_bytes()
    damaged = corrupt_bytes(raw, corruption, epochs=len(trained.train_loss))
    assert damaged != raw
    path.write_bytes(damaged)

    with pytest.raises(CorruptEntryError, match=re.escape(str(path))):
        load_run(path, "key-1")


def test_get_trains_then_hits(tmp_path, digits, trained):
    store = RunCache(tmp_path)
    experiment = tiny_experiment()

    first = store.get(experiment, 0, digits)
    second = store.get(experiment, 0, digits)

    assert first.metadata["cache"] == "trained"
    assert second.metadata["cache"] == "hit"
    assert_same_run(first, trained)
    assert_same_run(second, trained)
    assert second.metadata["cache_key"] == run_key(experiment, 0, digits.checksum)
    assert store.path(run_key(experiment, 0, digits.checksum)).is_file()


def test_get_hit_takes_requesting_experiment_name(tmp_path, digits):
    store = RunCache(tmp_path)
    store.get(tiny_experiment(), 0, digits)

    renamed = store.get(tiny_experiment(name="same-config"), 0, digits)

    assert renamed.metadata["cache"] == "hit"
    assert renamed.experiment == "same-config"


@pytest.mark.parametrize("corruption", ["truncated", "overwritten-data"])
def test_get_moves_corrupt_entry_aside_and_retrains(
    tmp_path, digits, trained, caplog, corruption
):
    store = RunCache(tmp_path)
    experiment = tiny_experiment()
    original = store.get(experiment, 0, digits)
    path = store.path(run_key(experiment, 0, digits.checksum))
    damaged = corrupt_bytes(path.read_bytes(), corruption, epochs=experiment.epochs)
    path.write_bytes(damaged)
    caplog.set_level(logging.WARNING, logger="landscape.cache")

    retrained = store.get(experiment, 0, digits)

    aside = path.with_name(path.name + ".corrupt")
    assert retrained.metadata["cache"] == "trained"
    assert_same_run(retrained, original)
    assert_same_run(retrained, trained)
    assert aside.read_bytes() == damaged
    assert_same_run(load_run(path), original)
    warnings = [r for r in caplog.records if r.name == "landscape.cache" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "is corrupt" in warnings[0].getMessage()
    assert str(aside) in warnings[0].getMessage()
    assert store.get(experiment, 0, digits).metadata["cache"] == "hit"


def test_get_retrain_replaces_entry(tmp_path, digits, trained):
    store = RunCache(tmp_path)
    experiment = tiny_experiment()
    key = run_key(experiment, 0, digits.checksum)
    path = store.path(key)
    path.parent.mkdir(parents=True)
    # A valid entry under the right key whose numbers differ from training.
    planted = dataclasses.replace(trained, train_loss=trained.train_loss + 1.0)
    save_run(path, planted, key)
    assert store.get(experiment, 0, digits).metadata["cache"] == "hit"

    retrained = store.get(experiment, 0, digits, retrain=True)

    assert retrained.metadata["cache"] == "retrained"
    assert_same_run(retrained, trained)
    assert_same_run(load_run(path, key), trained)
    assert leftover_temporaries(tmp_path) == []


def test_load_returns_cached_run_without_training(tmp_path, digits, trained):
    store = RunCache(tmp_path)
    experiment = tiny_experiment()
    key = run_key(experiment, 0, digits.checksum)
    store.path(key).parent.mkdir(parents=True)
    save_run(store.path(key), trained, key)

    loaded = store.load(tiny_experiment(name="loading"), 0, digits.checksum)

    assert loaded.metadata["cache"] == "hit"
    assert loaded.experiment == "loading"
    assert_same_run(loaded, trained)


def test_load_missing_run_names_train_command(tmp_path, digits):
    store = RunCache(tmp_path)

    with pytest.raises(RunNotCachedError, match=r"run 1 of experiment 'tiny' is not in the cache") as error:
        store.load(tiny_experiment(), 1, digits.checksum)

    assert "train it first with `landscape train tiny`" in str(error.value)
    assert not (tmp_path / "runs").exists()


def test_load_reports_corrupt_entry_and_leaves_it(tmp_path, digits, trained):
    store = RunCache(tmp_path)
    experiment = tiny_experiment()
    key = run_key(experiment, 0, digits.checksum)
    path = store.path(key)
    path.parent.mkdir(parents=True)
    save_run(path, trained, key)
    damaged = corrupt_bytes(path.read_bytes(), "truncated", epochs=experiment.epochs)
    path.write_bytes(damaged)

    with pytest.raises(CorruptEntryError, match=r"run `landscape train tiny` to move the entry aside"):
        store.load(experiment, 0, digits.checksum)

    assert path.read_bytes() == damaged
    assert not path.with_name(path.name + ".corrupt").exists()


def test_load_rejects_unknown_run(tmp_path, digits):
    with pytest.raises(ValueError, match=r"has runs 0..1, got run 2"):
        RunCache(tmp_path).load(tiny_experiment(), 2, digits.checksum)


def test_get_all_returns_runs_in_order(tmp_path, digits):
    runs = RunCache(tmp_path).get_all(tiny_experiment(runs=3), digits)

    assert [run.run for run in runs] == [0, 1, 2]
    assert [run.seed for run in runs] == [42, 1042, 2042]
    assert len(list((tmp_path / "runs").glob("*.npz"))) == 3


def test_concurrent_processes_train_run_once(tmp_path, digits):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    # Enough epochs that the first process is still training when the
    # second one requests the same run.
    experiment = tiny_experiment(epochs=30)
    workers = [
        context.Process(
            target=get_run_in_worker, args=(tmp_path, experiment, digits, barrier, results)
        )
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        outcomes = [results.get(timeout=180) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    assert [worker.exitcode for worker in workers] == [0, 0]

    assert sorted(status for status, *_ in outcomes) == ["hit", "trained"]
    by_status = {status: (start, end, snapshots) for status, start, end, snapshots in outcomes}
    hit_start = by_status["hit"][0]
    trained_end = by_status["trained"][1]
    assert hit_start < trained_end, "the second request came only after training ended"
    assert by_status["hit"][2] == by_status["trained"][2]
    assert len(list((tmp_path / "runs").glob("*.npz"))) == 1
    assert leftover_temporaries(tmp_path) == []


def test_default_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.default_cache_dir() == tmp_path / "explicit"

    monkeypatch.delenv(cache.CACHE_DIR_ENV)
    assert cache.default_cache_dir() == tmp_path / "xdg" / "landscape"

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.default_cache_dir() == tmp_path / "home" / ".cache" / "landscape"
