"""End-to-end tests of the plane commands of the landscape command line, on a tiny digits experiment."""

from pathlib import Path

import numpy as np
import pytest

from _helpers import one_torch_thread
from landscape import experiment as registry
from landscape.cli import main
from landscape.surface import load_surface

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

EXPERIMENTS_TOML = """
[experiments.cli-tiny]
dataset = "digits"
widths = [64, 16, 10]
optimizer = "adam"
lr = 1e-2
batch_size = 128
epochs = 4
runs = 2
device = "cpu"

[experiments.cli-untrained]
base = "cli-tiny"
lr = 2e-2

[experiments.cli-diverging]
base = "cli-tiny"
optimizer = "sgd"
lr = 1e6
"""


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Run this module's small tensor operations on one torch thread (see _helpers)."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A directory with the experiments file and a cache in which cli-tiny is trained.

    The experiments file registers its experiments globally, so the registry
    is restored afterwards.
    """
    saved = dict(registry._REGISTRY)
    directory = tmp_path_factory.mktemp("cli")
    (directory / "experiments.toml").write_text(EXPERIMENTS_TOML)
    yield directory
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


def common(workspace: Path) -> list[str]:
    return ["--experiments-file", str(workspace / "experiments.toml"),
            "--cache-dir", str(workspace / "cache"), "-q"]


@pytest.fixture(scope="module")
def trained(workspace):
    """Train cli-tiny into the workspace cache, once for the module."""
    assert main(["train", "cli-tiny", *common(workspace)]) == 0
    return workspace


def assert_png(path: Path):
    assert path.is_file(), path
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000


def test_train_then_trajectory_writes_png(workspace, capsys):
    output = workspace / "figures" / "trajectory.png"

    assert main(["train", "cli-tiny", *common(workspace)]) == 0
    code = main(["trajectory", "cli-tiny", "--output", str(output), *common(workspace)])

    assert code == 0
    assert_png(output)
    assert f"wrote {output}" in capsys.readouterr().out


def test_trajectory_writes_fidelity_and_surface_files(trained, capsys):
    output = trained / "run1.png"
    fidelity = trained / "run1-fidelity.png"
    saved = trained / "run1.npz"

    code = main(["trajectory", "cli-tiny", "--run", "1", "--grid", "7", "--samples", "100",
                 "--output", str(output), "--fidelity-output", str(fidelity),
                 "--save", str(saved), *common(trained)])

    assert code == 0
    assert_png(output)
    assert_png(fidelity)
    surface = load_surface(saved)
    assert surface.shape == (7, 7)
    assert surface.origin_index is not None
    assert surface.metadata["n_samples"] == 100
    assert surface.metadata["plane"]["kind"] == "pca"
    out = capsys.readouterr().out
    assert out.count("wrote ") == 3


def test_surface_uncached_names_train_command(trained, capsys):
    code = main(["surface", "cli-untrained", "--output", str(trained / "never.png"),
                 *common(trained)])

    assert code == 2
    error = capsys.readouterr().err
    assert "landscape: error: run 0 of experiment 'cli-untrained' is not in the cache" in error
    assert "train it first with `landscape train cli-untrained`" in error
    assert not (trained / "never.png").exists()


def test_surface_random_plane_writes_contour_and_3d(trained, monkeypatch):
    monkeypatch.chdir(trained)

    code = main(["surface", "cli-tiny", "--plane", "random", "--seed", "3", "--grid", "5",
                 "--range", "-0.5", "0.5", "--samples", "100", "--surface-3d",
                 "--threads", "1", *common(trained)])

    assert code == 0
    assert_png(trained / "cli-tiny-run0-random3-surface.png")
    assert_png(trained / "cli-tiny-run0-random3-surface-3d.png")


def test_surface_range_that_misses_zero_fails(trained, capsys):
    code = main(["surface", "cli-tiny", "--plane", "random", "--grid", "4", "--range", "-1", "1",
                 "--output", str(trained / "even.png"), *common(trained)])

    assert code == 2
    error = capsys.readouterr().err
    assert "0 lies between grid points of grid_axis(-1.0, 1.0, 4)" in error
    assert "use n=5" in error


def test_surface_rejects_too_many_samples(trained, capsys):
    code = main(["surface", "cli-tiny", "--samples", "100000",
                 "--output", str(trained / "many.png"), *common(trained)])

    assert code == 2
    assert "samples must be an int from 1 to 360" in capsys.readouterr().err


def test_surface_rejects_unknown_run(trained, capsys):
    code = main(["surface", "cli-tiny", "--run", "7", "--output", str(trained / "run7.png"),
                 *common(trained)])

    assert code == 2
    assert "has runs 0..1, got run 7" in capsys.readouterr().err


def test_trajectory_requires_output(trained, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["trajectory", "cli-tiny", *common(trained)])

    assert exit_info.value.code == 2
    assert "--output" in capsys.readouterr().err


def test_trajectory_of_diverged_run_fails(trained, capsys):
    assert main(["train", "cli-diverging", *common(trained)]) == 0
    capsys.readouterr()

    code = main(["trajectory", "cli-diverging", "--output", str(trained / "diverged.png"),
                 *common(trained)])

    assert code == 2
    assert "(seed 42) diverged in epoch" in capsys.readouterr().err


def test_retrain_from_plane_writes_png(trained, capsys):
    output = trained / "retrain.png"
    saved = trained / "retrain.npz"

    code = main(["retrain-from-plane", "cli-tiny", "--alpha", "1.5", "--beta", "-0.5",
                 "--epochs", "2", "--grid", "5", "--output", str(output), "--save", str(saved),
                 *common(trained)])

    assert code == 0
    assert_png(output)
    surface = load_surface(saved)
    assert surface.alphas[0] < 0 < surface.alphas[-1]
    assert np.any(surface.alphas == 0.0)
    assert np.any(surface.betas == 0.0)
    assert capsys.readouterr().out.count("wrote ") == 2
