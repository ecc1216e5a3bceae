"""Tests of landscape.plane_figures on surfaces and trajectories of a small digits run."""

import doctest
import io

import matplotlib.image
import numpy as np
import pytest
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.quiver import Quiver

from _helpers import one_torch_thread
from landscape import plane_figures
from landscape.data import load_digits
from landscape.experiment import Experiment
from landscape.fidelity import trajectory_on_plane
from landscape.interpolation import Interpolation, interpolation_losses
from landscape.model import build_mlp
from landscape.pca import pca_plane
from landscape.plane_figures import (
    log_levels,
    log_ticks,
    plot_fidelity,
    plot_interpolations,
    plot_plane,
    plot_surface_3d,
)
from landscape.plane_study import covering_grid, pca_axis_labels
from landscape.surface import Surface, grid_axis, loss_surface
from landscape.train import train_run

WIDTHS = (64, 16, 10)


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Run this module's small tensor operations on one torch thread (see _helpers)."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def runs(digits):
    experiment = Experiment(
        name="plane-figures", dataset="digits", widths=WIDTHS, optimizer="adam", lr=1e-2,
        batch_size=128, epochs=4, runs=2, device="cpu",
    )
    return [train_run(experiment, run, digits) for run in range(2)]


@pytest.fixture(scope="module")
def scene(runs, digits):
    """The PCA plane of run 0, both runs projected on it, and a 9 x 9 surface around them."""
    model = build_mlp(WIDTHS, seed=0)
    x, y = digits.x_test, digits.y_test
    plane = pca_plane(runs[0].snapshots)
    trajectories = [
        trajectory_on_plane(model, plane, run.snapshots, x, y, label=f"run {run.run}")
        for run in runs
    ]
    alphas, betas = covering_grid([trajectories[0].coords], 9)
    surface = loss_surface(model, plane, x, y, alphas=alphas, betas=betas)
    return plane, surface, trajectories


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    """Fail a test that leaves a figure in pyplot's registry."""
    from matplotlib import pyplot

    before = pyplot.get_fignums()
    yield
    assert pyplot.get_fignums() == before, "a figure function registered a pyplot figure"


def png_pixels(figure):
    """Render ``figure`` to PNG and return (size in bytes, RGBA pixels)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=50)
    size = buffer.tell()
    buffer.seek(0)
    return size, matplotlib.image.imread(buffer, format="png")


def assert_drawn(figure):
    assert isinstance(figure, Figure)
    size, pixels = png_pixels(figure)
    assert size > 5_000
    assert pixels.reshape(-1, pixels.shape[-1]).std(axis=0).max() > 0.05


def legend_texts(figure):
    legends = figure.legends + [axes.get_legend() for axes in figure.axes if axes.get_legend()]
    return [text.get_text() for legend in legends for text in legend.get_texts()]


def test_log_levels_span_finite_loss_geometrically():
    loss = np.array([[0.01, 1.0], [np.nan, 100.0]])

    levels = log_levels(loss, n=5)

    np.testing.assert_allclose(levels, [0.01, 0.1, 1.0, 10.0, 100.0])


def test_log_levels_flat_surface_gets_a_band():
    levels = log_levels(np.full((3, 3), 0.5), n=4)

    assert levels[0] == 0.5
    assert np.all(np.diff(levels) > 0)


def test_log_levels_rejects_surface_without_positive_loss():
    with pytest.raises(ValueError, match="no finite, positive loss"):
        log_levels(np.array([[np.nan, 0.0]]))


def test_log_ticks_prefer_one_two_five():
    np.testing.assert_allclose(log_ticks(0.03, 4.0), [0.05, 0.1, 0.2, 0.5, 1.0, 2.0])
    np.testing.assert_allclose(log_ticks(0.31, 0.45), [0.31, 0.45])
    np.testing.assert_allclose(log_ticks(0.25, 0.45), [0.3, 0.4])


def test_doctests_pass():
    result = doctest.testmod(plane_figures)

    assert result.attempted >= 1
    assert result.failed == 0


def test_plot_plane_draws_contours_arrows_and_fidelity(scene):
    plane, surface, trajectories = scene
    labels = pca_axis_labels(plane)

    figure = plot_plane(surface, trajectories, title="PCA plane", axis_labels=labels)

    assert_drawn(figure)
    axes = figure.axes[0]
    assert axes.get_xlabel().startswith("PC1 (")
    assert axes.get_xlabel().endswith("% of variance)")
    assert axes.get_ylabel().startswith("PC2 (")
    filled = [c for c in axes.collections if getattr(c, "filled", False)]
    assert len(filled) == 1
    assert isinstance(filled[0].norm, LogNorm)
    quivers = [c for c in axes.collections if isinstance(c, Quiver)]
    assert [q.N for q in quivers] == [len(t.coords) - 1 for t in trajectories]
    texts = legend_texts(figure)
    for trajectory in trajectories:
        expected = (
            f"{trajectory.label}\nplane captures {100 * trajectory.mean_captured:.1f}% of squared "
            f"displacement (mean over snapshots),\nmax |plane − real loss| "
            f"{trajectory.max_loss_gap:.3g} nats"
        )
        assert expected in texts
    assert {"first snapshot", "last snapshot", "plane origin (0, 0)"} <= set(texts)
    assert figure.get_suptitle() == "PCA plane"


def test_plot_plane_widens_axes_for_trajectory(scene):
    _, surface, trajectories = scene
    outside = trajectories[1]
    small = Surface(alphas=grid_axis(-0.1, 0.1, 3), betas=grid_axis(-0.1, 0.1, 3),
                    loss=np.ones((3, 3)), accuracy=np.ones((3, 3)))

    figure = plot_plane(small, [outside], title="small grid")

    low, high = figure.axes[0].get_xlim()
    assert low <= outside.coords[:, 0].min()
    assert high >= outside.coords[:, 0].max()


def test_plot_plane_without_trajectories_marks_only_origin(scene):
    _, surface, _ = scene

    figure = plot_plane(surface, [], title="random plane")

    assert legend_texts(figure) == ["plane origin (0, 0)"]
    assert figure.axes[0].get_xlabel() == "α (along d1)"


def test_plot_plane_counts_blank_cells(scene):
    _, surface, _ = scene
    loss = surface.loss.copy()
    loss[0, 0] = np.inf
    loss[1, 1] = np.nan
    damaged = Surface(alphas=surface.alphas, betas=surface.betas, loss=loss,
                      accuracy=surface.accuracy)

    figure = plot_plane(damaged, [], title="damaged")

    assert "2 cells with non-finite or zero loss left blank" in figure.get_suptitle()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"surface": "not a surface"}, TypeError, "surface must be a landscape.surface.Surface"),
        ({"trajectories": ["x"]}, TypeError, r"trajectories\[0\] is a str"),
        ({"axis_labels": ("only one",)}, ValueError, "axis_labels must be two strings"),
        ({"axis_labels": "ab"}, ValueError, "axis_labels must be two strings"),
        (
            {"surface": Surface(alphas=[0.0], betas=[-1.0, 0.0], loss=[[1.0, 2.0]],
                                accuracy=[[0.5, 0.5]])},
            ValueError,
            r"at least 2 grid points per axis, got shape \(1, 2\)",
        ),
    ],
    ids=["surface-type", "trajectory-type", "one-label", "string-labels", "one-row"],
)
def test_plot_plane_rejects_bad_input(scene, kwargs, error, match):
    _, surface, trajectories = scene
    arguments = {"surface": surface, "trajectories": trajectories, **kwargs}

    with pytest.raises(error, match=match):
        plot_plane(arguments.pop("surface"), arguments.pop("trajectories"), title="t", **arguments)


def test_plot_surface_3d_uses_log_height(scene):
    plane, surface, _ = scene

    figure = plot_surface_3d(surface, title="3-D", axis_labels=pca_axis_labels(plane))

    assert_drawn(figure)
    axes = figure.axes[0]
    assert axes.name == "3d"
    low, high = axes.get_zlim()
    assert low <= np.log10(surface.loss.min()) + 1e-9
    assert high >= np.log10(surface.loss.max()) - 1e-9
    assert axes.zaxis.get_major_formatter()(np.log10(2.0)) == "2"


def test_plot_surface_3d_counts_invalid_cells(scene):
    _, surface, _ = scene
    loss = surface.loss.copy()
    loss[2, 3] = np.nan
    damaged = Surface(alphas=surface.alphas, betas=surface.betas, loss=loss,
                      accuracy=surface.accuracy)

    figure = plot_surface_3d(damaged, title="3-D")

    assert "1 cells with non-finite or zero loss drawn at the largest finite loss" in figure.get_suptitle()


def test_plot_fidelity_draws_two_lines_per_trajectory(scene):
    _, _, trajectories = scene

    figure = plot_fidelity(trajectories, title="fidelity")

    assert_drawn(figure)
    loss_axes, captured_axes = figure.axes
    assert len(loss_axes.get_lines()) == 2 * len(trajectories)
    assert len(captured_axes.get_lines()) == len(trajectories)
    assert loss_axes.get_yscale() == "log"
    np.testing.assert_allclose(loss_axes.get_lines()[1].get_ydata(), trajectories[0].plane_loss)
    # Run 0's last snapshot is the PCA plane's origin, where the share is undefined.
    captured = captured_axes.get_lines()[0].get_ydata()
    np.testing.assert_allclose(captured[:-1], 100 * trajectories[0].captured[:-1])
    assert np.isnan(captured[-1])
    assert np.all(np.isfinite(captured_axes.get_lines()[1].get_ydata()))


def test_plot_fidelity_rejects_empty_list():
    with pytest.raises(ValueError, match="trajectories is empty"):
        plot_fidelity([], title="t")


def test_plot_interpolations_styles_and_barriers(runs, digits):
    x, y = digits.x_test, digits.y_test
    curves = [
        interpolation_losses(WIDTHS, runs[0].final_weights, runs[1].final_weights, x, y, n_points=5),
        interpolation_losses(WIDTHS, runs[0].initial_weights, runs[0].final_weights, x, y, n_points=5),
    ]

    figure = plot_interpolations(curves, ["between runs", "init to final"], title="segments",
                                 linestyles=["-", "--"])

    assert_drawn(figure)
    loss_axes, accuracy_axes = figure.axes
    assert [line.get_linestyle() for line in loss_axes.get_lines()] == ["-", "--"]
    assert loss_axes.get_yscale() == "log"
    assert f"between runs (barrier {curves[0].barrier:.3g} nats)" in legend_texts(figure)
    np.testing.assert_allclose(accuracy_axes.get_lines()[0].get_ydata(), 100 * curves[0].accuracy)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": ["one"]}, "labels has 1 entries but there are 2 curves"),
        ({"colors": ["red"]}, "colors has 1 entries but there are 2 curves"),
        ({"linestyles": ["-", "--", ":"]}, "linestyles has 3 entries but there are 2 curves"),
    ],
    ids=["labels", "colors", "linestyles"],
)
def test_plot_interpolations_rejects_length_mismatch(kwargs, match):
    curve = make_curve()
    arguments = {"labels": ["a", "b"], **kwargs}

    with pytest.raises(ValueError, match=match):
        plot_interpolations([curve, curve], arguments.pop("labels"), title="t", **arguments)


def test_plot_interpolations_rejects_empty_list():
    with pytest.raises(ValueError, match="curves is empty"):
        plot_interpolations([], [], title="t")


def make_curve():
    t = np.linspace(0.0, 1.0, 5)
    return Interpolation(t=t, loss=1.0 + t * (1 - t), accuracy=np.full(5, 0.9))
