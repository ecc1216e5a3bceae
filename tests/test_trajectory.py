"""Tests of snapshot capture to disk (landscape.trajectory) through training, the cache and the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from _helpers import one_torch_thread, tiny_experiment
from landscape import experiment as registry
from landscape.cache import RunCache
from landscape.cli import main
from landscape.data import load_digits
from landscape.pca import pca_plane
from landscape.trajectory import Capture, TrajectoryWriter, open_trajectory, steps_of_snapshots
from landscape.train import train_runs


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(autouse=True)
def single_thread():
    with one_torch_thread():
        yield


def steps_per_epoch(experiment, dataset) -> int:
    return math.ceil(len(dataset.x_train) / experiment.batch_size)


@pytest.mark.parametrize("every", [0, -3, 1.5, True, "2"])
def test_capture_rejects_bad_strides(every, tmp_path):
    with pytest.raises(ValueError, match="every_steps must be a positive integer or None"):
        Capture(tmp_path, every_steps=every)


def test_per_epoch_capture_equals_the_recorded_snapshots(digits, tmp_path):
    experiment = tiny_experiment(epochs=3)

    runs = train_runs(experiment, [0, 1], digits, capture=Capture(tmp_path))

    for run in runs:
        path = tmp_path / f"tiny-run{run.run}-every{steps_per_epoch(experiment, digits)}.npy"
        assert run.metadata["trajectory"]["path"] == str(path)
        trajectory = open_trajectory(path)
        assert trajectory.dtype == np.float32
        assert np.array_equal(trajectory, run.snapshots)
    assert not list(tmp_path.glob("*.partial"))


def test_per_step_capture_matches_epoch_snapshots(digits, tmp_path):
    experiment = tiny_experiment(epochs=2)
    per_epoch = steps_per_epoch(experiment, digits)  # 12 steps of 128 samples

    run = train_runs(experiment, [1], digits, capture=Capture(tmp_path, every_steps=1))[0]

    trajectory = open_trajectory(run.metadata["trajectory"]["path"])
    assert trajectory.shape == (1 + 2 * per_epoch, run.snapshots.shape[1])
    assert np.array_equal(trajectory[0], run.snapshots[0])
    assert np.array_equal(trajectory[per_epoch], run.snapshots[1])
    assert np.array_equal(trajectory[-1], run.final_weights)
    # Every row is a distinct point: the optimizer moved at each step.
    assert np.all(np.linalg.norm(np.diff(trajectory, axis=0), axis=1) > 0)


def test_capture_does_not_change_training(digits, tmp_path):
    experiment = tiny_experiment(epochs=2)

    plain = train_runs(experiment, [0], digits)[0]
    captured = train_runs(experiment, [0], digits, capture=Capture(tmp_path, every_steps=5))[0]

    assert np.array_equal(plain.snapshots, captured.snapshots)
    assert np.array_equal(plain.grad_norm, captured.grad_norm)


def test_capture_stride_not_dividing_run(digits, tmp_path):
    experiment = tiny_experiment(epochs=2)
    total = 2 * steps_per_epoch(experiment, digits)  # 24 steps

    run = train_runs(experiment, [0], digits, capture=Capture(tmp_path, every_steps=7))[0]

    trajectory = open_trajectory(run.metadata["trajectory"]["path"])
    assert len(trajectory) == 1 + total // 7
    assert steps_of_snapshots(len(trajectory), 7).tolist() == [0, 7, 14, 21]


def test_diverged_run_leaves_nan_rows_after_the_divergence(digits, tmp_path):
    experiment = tiny_experiment(optimizer="sgd", lr=1e6, epochs=4)

    run = train_runs(experiment, [1], digits, capture=Capture(tmp_path))[0]

    assert run.diverged
    trajectory = open_trajectory(run.metadata["trajectory"]["path"])
    written = run.diverged_epoch + 1
    assert np.all(np.isfinite(trajectory[:written]))
    assert np.all(np.isnan(trajectory[written + 1 :]))


def test_aborted_writer_leaves_no_file(tmp_path):
    path = tmp_path / "run.npy"
    writer = TrajectoryWriter(path, n_snapshots=3, n_params=4)
    writer.write(np.zeros(4))

    writer.abort()

    assert not path.exists()
    assert not list(tmp_path.iterdir())


def test_open_trajectory_names_an_unfinished_file(tmp_path):
    path = tmp_path / "run.npy"
    TrajectoryWriter(path, n_snapshots=3, n_params=4).write(np.zeros(4))

    with pytest.raises(FileNotFoundError, match="run.npy.partial exists, so the training"):
        open_trajectory(path)


def test_writer_rejects_bad_rows(tmp_path):
    writer = TrajectoryWriter(tmp_path / "run.npy", n_snapshots=1, n_params=4)
    with pytest.raises(ValueError, match=r"snapshot has shape \(3,\), expected \(4,\)"):
        writer.write(np.zeros(3))
    writer.write(np.ones(4))
    with pytest.raises(ValueError, match="already contains all 1 snapshots"):
        writer.write(np.ones(4))
    assert np.array_equal(open_trajectory(writer.close()), np.ones((1, 4), np.float32))


def test_open_trajectory_rejects_other_arrays(tmp_path):
    path = tmp_path / "ints.npy"
    np.save(path, np.zeros((3, 4), dtype=np.int64))

    with pytest.raises(ValueError, match="a trajectory is 2-D float32"):
        open_trajectory(path)


def test_pca_reads_captured_trajectory(digits, tmp_path):
    experiment = tiny_experiment(epochs=3)
    run = train_runs(experiment, [0], digits, capture=Capture(tmp_path, every_steps=2))[0]
    trajectory = open_trajectory(run.metadata["trajectory"]["path"])

    plane = pca_plane(trajectory)

    assert plane.metadata["method"] == "gram"
    expected = pca_plane(np.array(trajectory), method="svd")
    np.testing.assert_allclose(plane.d1, expected.d1, atol=1e-6)
    np.testing.assert_allclose(
        plane.metadata["explained_variance_ratio"], expected.metadata["explained_variance_ratio"],
        rtol=1e-6,
    )


def test_cache_capture_retrains_missing_files(digits, tmp_path):
    experiment = tiny_experiment(runs=3)
    cache = RunCache(tmp_path / "cache")
    first = cache.get_all(experiment, digits)
    capture = Capture(tmp_path / "trajectories")
    per_epoch = steps_per_epoch(experiment, digits)
    # Run 2 already has its file.
    train_runs(experiment, [2], digits, capture=capture)

    again = cache.get_all(experiment, digits, capture=capture)

    assert [r.metadata["cache"] for r in again] == ["trained", "trained", "hit"]
    for before, after in zip(first, again):
        assert np.array_equal(before.snapshots, after.snapshots)
    for run in range(3):
        assert capture.path("tiny", run, per_epoch).is_file()


def test_cli_train_streams_snapshots(tmp_path, capsys):
    saved = dict(registry._REGISTRY)
    (tmp_path / "experiments.toml").write_text(
        '[experiments.cli-capture]\ndataset = "digits"\nwidths = [64, 16, 10]\n'
        'optimizer = "adam"\nlr = 1e-2\nbatch_size = 128\nepochs = 2\nruns = 2\ndevice = "cpu"\n'
    )
    options = ["--experiments-file", str(tmp_path / "experiments.toml"),
               "--cache-dir", str(tmp_path / "cache"), "-q"]
    try:
        code = main(["train", "cli-capture", "--trajectory-dir", str(tmp_path / "traj"),
                     "--snapshot-every", "3", *options])
        rejected_code = main(["train", "cli-capture", "--snapshot-every", "3", *options])
    finally:
        registry._REGISTRY.clear()
        registry._REGISTRY.update(saved)

    assert code == 0
    assert sorted(p.name for p in (tmp_path / "traj").iterdir()) == [
        "cli-capture-run0-every3.npy", "cli-capture-run1-every3.npy",
    ]
    assert open_trajectory(tmp_path / "traj" / "cli-capture-run0-every3.npy").shape[0] == 1 + 24 // 3
    assert rejected_code == 2
    assert "--snapshot-every 3 needs --trajectory-dir DIR" in capsys.readouterr().err
