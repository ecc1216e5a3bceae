"""Figures of loss surfaces, projected trajectories and interpolation curves.

Like :mod:`landscape.figures`, every function returns a new
:class:`matplotlib.figure.Figure` on the Agg canvas and never touches
``matplotlib.pyplot``. Losses are mean cross-entropy in nats. Around a trained
model they span several orders of magnitude, from about 0.01 at a minimum to
tens of nats a few units away, so contours use log-spaced levels and loss
axes a log scale.

A trajectory drawn on a plane is a projection, and the real weights lie off
the plane. Each function that draws one therefore also states how faithful
the projection is (see :mod:`landscape.fidelity`). One measure is the mean
fraction of the squared displacement from the plane's origin that the plane
captures. The other is the largest gap between the loss at a projected
snapshot and the loss at the real one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator

from landscape.fidelity import TrajectoryOnPlane
from landscape.figures import _new_figure
from landscape.interpolation import Interpolation
from landscape.surface import Surface

# Number of log-spaced contour levels from the lowest to the highest finite
# loss, so one filled band fewer.
CONTOUR_LEVELS = 25

# Colors of trajectories on the viridis surface. Red and orange show against
# both its dark (low-loss) and bright (high-loss) ends, so they come first.
TRAJECTORY_COLORS = ("tab:red", "tab:orange", "white", "magenta", "cyan", "black")


def _trajectory_colors(n: int) -> list:
    if n <= len(TRAJECTORY_COLORS):
        return list(TRAJECTORY_COLORS[:n])
    palette = colormaps["autumn"]
    return [palette(i / (n - 1)) for i in range(n)]


def _check_sequence(items: Sequence, name: str, kind: type) -> list:
    items = list(items)
    for index, item in enumerate(items):
        if not isinstance(item, kind):
            raise TypeError(
                f"{name}[{index}] is a {type(item).__name__}, expected a {kind.__name__}"
            )
    return items


def _check_surface(surface: Surface) -> None:
    if not isinstance(surface, Surface):
        raise TypeError(f"surface must be a landscape.surface.Surface, got {type(surface).__name__}")
    if min(surface.shape) < 2:
        raise ValueError(
            f"a surface plot needs at least 2 grid points per axis, got shape {surface.shape}"
        )


def _check_axis_labels(axis_labels: tuple[str, str] | None) -> tuple[str, str]:
    if axis_labels is None:
        return ("α (along d1)", "β (along d2)")
    if (
        isinstance(axis_labels, str)
        or len(axis_labels) != 2
        or not all(isinstance(label, str) for label in axis_labels)
    ):
        raise ValueError(f"axis_labels must be two strings, got {axis_labels!r}")
    return tuple(axis_labels)


def _finite_positive(loss: np.ndarray) -> np.ndarray:
    """Return the finite, positive entries of ``loss`` (flattened)."""
    return loss[np.isfinite(loss) & (loss > 0)]


def log_levels(loss: np.ndarray, n: int = CONTOUR_LEVELS) -> np.ndarray:
    """Return ``n`` log-spaced contour levels from the lowest to the highest finite, positive loss.

    A flat surface gets levels over a 1% band above its value, so that
    ``contourf`` still has increasing levels.

    Raises
    ------
    ValueError
        If no entry of ``loss`` is finite and positive.
    """
    values = _finite_positive(np.asarray(loss, dtype=np.float64))
    if values.size == 0:
        raise ValueError("the surface has no finite, positive loss to draw contours of")
    low, high = float(values.min()), float(values.max())
    if high <= low * (1 + 1e-9):
        high = low * 1.01
    return np.geomspace(low, high, n)


def log_ticks(low: float, high: float) -> np.ndarray:
    """Return tick values in ``[low, high]`` (both positive) at 1, 2 and 5 times powers of 10.

    When fewer than two such values fall in the range, every integer
    multiple 1 to 9 of a power of 10 is allowed, and failing that the ends
    themselves are returned.

    Examples
    --------
    >>> log_ticks(0.03, 4.0)
    array([0.05, 0.1 , 0.2 , 0.5 , 1.  , 2.  ])
    """
    decades = np.arange(np.floor(np.log10(low)), np.ceil(np.log10(high)) + 1)
    for multiples in ((1, 2, 5), tuple(range(1, 10))):
        values = np.array([m * 10.0**d for d in decades for m in multiples])
        values = values[(values >= low * (1 - 1e-9)) & (values <= high * (1 + 1e-9))]
        if len(values) >= 2:
            return values
    return np.array([low, high])


def _format_loss(value: float, _position=None) -> str:
    return f"{value:.3g}"


def _fidelity_text(trajectory: TrajectoryOnPlane) -> str:
    return (
        f"{trajectory.label}\nplane captures {100 * trajectory.mean_captured:.1f}% of squared "
        f"displacement (mean over snapshots),\nmax |plane − real loss| "
        f"{trajectory.max_loss_gap:.3g} nats"
    )


def _limits(surface: Surface, trajectories: Sequence[TrajectoryOnPlane]) -> tuple[tuple, tuple]:
    """Return x and y limits: the surface's extent, widened by 5% of the span if a trajectory leaves it."""
    limits = []
    for axis, grid in ((0, surface.alphas), (1, surface.betas)):
        low, high = float(grid[0]), float(grid[-1])
        points = [t.coords[:, axis] for t in trajectories]
        points = np.concatenate(points) if points else np.empty(0)
        points = points[np.isfinite(points)]
        if points.size and (points.min() < low or points.max() > high):
            low, high = min(low, points.min()), max(high, points.max())
            margin = 0.05 * (high - low)
            low, high = low - margin, high + margin
        limits.append((low, high))
    return limits[0], limits[1]


def _draw_trajectory(axes: Axes, trajectory: TrajectoryOnPlane, color) -> Line2D:
    """Draw arrows between consecutive projected snapshots, mark the first and last, and return a legend handle."""
    outline = "black" if color == "white" else "white"
    handle = Line2D([], [], color=color, marker=">", markersize=6, markeredgecolor="black",
                    markeredgewidth=0.5, linewidth=1.5)
    coords = trajectory.coords[np.all(np.isfinite(trajectory.coords), axis=1)]  # (T, 2)
    if len(coords) == 0:
        return handle
    steps = np.diff(coords, axis=0)  # (T - 1, 2)
    axes.plot(coords[:, 0], coords[:, 1], linestyle="none", marker=".", markersize=3,
              color=color, zorder=3)
    if len(steps):
        axes.quiver(coords[:-1, 0], coords[:-1, 1], steps[:, 0], steps[:, 1],
                    angles="xy", scale_units="xy", scale=1, color=color, width=0.004,
                    headwidth=4, headlength=5, headaxislength=4.5, zorder=3)
    axes.plot(*coords[0], marker="o", markersize=8, color=color,
              markeredgecolor=outline, linestyle="none", zorder=4)
    axes.plot(*coords[-1], marker="X", markersize=10, color=color,
              markeredgecolor=outline, linestyle="none", zorder=4)
    return handle


def plot_plane(
    surface: Surface,
    trajectories: Sequence[TrajectoryOnPlane] = (),
    *,
    title: str,
    axis_labels: tuple[str, str] | None = None,
) -> Figure:
    """Draw the loss surface of a plane as contours, with trajectories projected on it.

    The surface is drawn as filled contours with :data:`CONTOUR_LEVELS`
    log-spaced levels (:func:`log_levels`) and a log color scale, with thin
    contour lines on the same levels. Cells whose loss is NaN, infinite or
    not positive stay blank, and the title counts them. Each trajectory is a chain of
    arrows between consecutive projected snapshots, with a circle at the
    first snapshot and a cross at the last. Its legend entry states its
    fidelity: the mean over snapshots of the fraction of the squared
    displacement that the plane captures, and the largest ``|plane_loss -
    real_loss|``. The plane's origin is marked with a plus.

    Parameters
    ----------
    surface : Surface
        ``surface.loss[i, j]`` is drawn at ``(alphas[i], betas[j])``.
    trajectories : sequence of TrajectoryOnPlane, default=()
        Drawn in order. A trajectory that leaves the grid widens the axes
        beyond it, and the area outside the grid stays blank.
    title : str
    axis_labels : (str, str), optional
        Labels of the ``alpha`` and ``beta`` axes, for example ``"PC1 (95.1%
        of variance)"``. The default names the plane directions d1 and d2.

    Returns
    -------
    Figure

    Raises
    ------
    TypeError
        If ``surface`` or an entry of ``trajectories`` has the wrong type.
    ValueError
        If the grid has fewer than 2 points along an axis, no cell has a
        finite, positive loss, or ``axis_labels`` is not two strings.
    """
    _check_surface(surface)
    trajectories = _check_sequence(trajectories, "trajectories", TrajectoryOnPlane)
    axis_labels = _check_axis_labels(axis_labels)
    levels = log_levels(surface.loss)

    # Contours of loss.T, because cell [i, j] is (alphas[i], betas[j]) and
    # matplotlib takes rows as y.
    loss = np.ma.masked_invalid(surface.loss.T)  # (n_beta, n_alpha)
    loss = np.ma.masked_less_equal(loss, 0.0)
    figure = _new_figure(8, 7.5)
    axes = figure.subplots()
    norm = LogNorm(vmin=levels[0], vmax=levels[-1])
    filled = axes.contourf(surface.alphas, surface.betas, loss, levels=levels, norm=norm,
                           cmap="viridis", extend="neither")
    axes.contour(surface.alphas, surface.betas, loss, levels=levels, colors="white",
                 linewidths=0.4, alpha=0.5)
    colorbar = figure.colorbar(filled, ax=axes, label="loss (mean cross-entropy, nats, log scale)")
    colorbar.set_ticks(log_ticks(levels[0], levels[-1]))
    colorbar.ax.yaxis.set_major_formatter(FuncFormatter(_format_loss))
    colorbar.minorticks_off()

    # The plane's origin, then the trajectories.
    axes.plot(0.0, 0.0, marker="+", markersize=12, markeredgewidth=2, color="black",
              linestyle="none", zorder=5)
    handles, labels = [], []
    for trajectory, color in zip(trajectories, _trajectory_colors(len(trajectories))):
        handles.append(_draw_trajectory(axes, trajectory, color))
        labels.append(_fidelity_text(trajectory))
    x_limits, y_limits = _limits(surface, trajectories)
    axes.set(xlim=x_limits, ylim=y_limits, xlabel=axis_labels[0], ylabel=axis_labels[1])

    # Legend below the axes, outside them so that constrained layout keeps the
    # axes full width: trajectories with their fidelity, then the markers.
    markers = [("+", "plane origin (0, 0)")]
    if trajectories:
        markers = [("o", "first snapshot"), ("X", "last snapshot"), *markers]
    for marker, text in markers:
        handles.append(Line2D([], [], marker=marker, color="gray", markeredgecolor="black",
                              markeredgewidth=1.5 if marker == "+" else 1.0, linestyle="none"))
        labels.append(text)
    figure.legend(handles, labels, loc="outside lower center", fontsize="small", ncols=1,
                  frameon=False)

    blank = int(np.sum(~(np.isfinite(surface.loss) & (surface.loss > 0))))
    if blank:
        title += f"\n({blank} cells with non-finite or zero loss left blank)"
    figure.suptitle(title)
    return figure


def plot_surface_3d(
    surface: Surface, *, title: str, axis_labels: tuple[str, str] | None = None
) -> Figure:
    """Draw the loss surface as a 3-D surface with a log-scale loss axis.

    The height is ``log10(loss)``, with ticks labelled in nats, because the
    loss spans orders of magnitude and a linear axis would flatten the basin
    to a floor. Cells whose loss is NaN, infinite or not positive are drawn
    at the largest finite loss, since a surface cannot have holes, and the
    title counts them. The plane's origin, when on the grid, is marked.

    Parameters
    ----------
    surface : Surface
    title : str
    axis_labels : (str, str), optional
        As in :func:`plot_plane`.

    Returns
    -------
    Figure

    Raises
    ------
    TypeError
        If ``surface`` is not a :class:`~landscape.surface.Surface`.
    ValueError
        If the grid has fewer than 2 points along an axis, no cell has a
        finite, positive loss, or ``axis_labels`` is not two strings.
    """
    _check_surface(surface)
    axis_labels = _check_axis_labels(axis_labels)
    values = _finite_positive(surface.loss)
    if values.size == 0:
        raise ValueError("the surface has no finite, positive loss to draw")
    invalid = ~(np.isfinite(surface.loss) & (surface.loss > 0))
    height = np.log10(np.where(invalid, values.max(), surface.loss))  # (n_alpha, n_beta)
    alpha_grid, beta_grid = np.meshgrid(surface.alphas, surface.betas, indexing="ij")

    figure = _new_figure(8, 7)
    # computed_zorder=False draws artists in zorder, so the origin's marker
    # stays in front of the surface that contains it.
    axes = figure.add_subplot(projection="3d", computed_zorder=False)
    axes.plot_surface(alpha_grid, beta_grid, height, cmap="viridis", linewidth=0,
                      antialiased=True, rcount=len(surface.alphas), ccount=len(surface.betas),
                      zorder=1)
    origin = surface.origin_index
    if origin is not None:
        axes.scatter([0.0], [0.0], [height[origin]], color="tab:red", s=30, depthshade=False,
                     zorder=2, label=f"plane origin, loss {surface.loss[origin]:.3g} nats")
        axes.legend(loc="upper left", fontsize="small")
    axes.zaxis.set_major_locator(FixedLocator(np.log10(log_ticks(values.min(), values.max()))))
    axes.zaxis.set_major_formatter(FuncFormatter(lambda value, _: _format_loss(10**value)))
    axes.set(xlabel=axis_labels[0], ylabel=axis_labels[1], zlabel="loss (nats, log scale)")
    if invalid.any():
        title += (
            f"\n({int(invalid.sum())} cells with non-finite or zero loss drawn at the "
            "largest finite loss)"
        )
    figure.suptitle(title)
    return figure


def _captured_off_origin(trajectory: TrajectoryOnPlane) -> np.ndarray:
    """Return ``trajectory.captured`` with NaN at snapshots that sit exactly at the plane's origin."""
    at_origin = np.all(trajectory.coords == 0.0, axis=1) & (trajectory.residual_norm == 0.0)
    return np.where(at_origin, np.nan, trajectory.captured)


def plot_fidelity(trajectories: Sequence[TrajectoryOnPlane], *, title: str) -> Figure:
    """Plot, per snapshot, the loss at the real weights and at their projection, and the captured fraction.

    The left panel has two lines per trajectory in one color: the loss at
    the real weights (solid) and at their projection on the plane (dashed),
    on a log scale. The right panel shows the percentage of each snapshot's
    squared displacement from the plane's origin that lies in the plane.
    A snapshot at the origin itself, such as the final snapshot for a PCA
    plane, has no displacement, so it is left out of that panel, although
    :attr:`~landscape.fidelity.TrajectoryOnPlane.captured` counts it as 1
    and the legend's mean includes it. Snapshot 0 is the initialization.

    Raises
    ------
    TypeError
        If an entry is not a :class:`~landscape.fidelity.TrajectoryOnPlane`.
    ValueError
        If ``trajectories`` is empty.
    """
    trajectories = _check_sequence(trajectories, "trajectories", TrajectoryOnPlane)
    if not trajectories:
        raise ValueError("trajectories is empty; pass at least one TrajectoryOnPlane")

    figure = _new_figure(13, 4.8)
    loss_axes, captured_axes = figure.subplots(1, 2)
    colors = [colormaps["tab10"](i % 10) for i in range(len(trajectories))]
    for trajectory, color in zip(trajectories, colors):
        snapshots = np.arange(len(trajectory.real_loss))
        loss_axes.plot(snapshots, trajectory.real_loss, color=color, marker=".",
                       label=trajectory.label)
        loss_axes.plot(snapshots, trajectory.plane_loss, color=color, linestyle="--", marker=".")
        captured_axes.plot(snapshots, 100 * _captured_off_origin(trajectory), color=color,
                           marker=".",
                           label=f"{trajectory.label} (mean {100 * trajectory.mean_captured:.1f}%)")

    loss_axes.set_yscale("log")
    loss_axes.set(title="loss at the real weights and at their projection",
                  xlabel="snapshot (0 = initialization)",
                  ylabel="mean cross-entropy (nats, log scale)")
    handles, labels = loss_axes.get_legend_handles_labels()
    handles += [Line2D([], [], color="gray"), Line2D([], [], color="gray", linestyle="--")]
    labels += ["real weights", "projection on the plane"]
    loss_axes.legend(handles, labels, fontsize="small")
    captured_axes.set(title="displacement captured by the plane",
                      xlabel="snapshot (0 = initialization)",
                      ylabel="captured share of squared displacement (%)", ylim=(-2, 102))
    captured_axes.legend(fontsize="small")
    for axes in (loss_axes, captured_axes):
        axes.grid(alpha=0.3, which="both")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(title)
    return figure


def plot_interpolations(
    curves: Sequence[Interpolation],
    labels: Sequence[str],
    *,
    title: str,
    colors: Sequence | None = None,
    linestyles: Sequence[str] | None = None,
) -> Figure:
    """Plot loss and accuracy along the segments of several interpolations.

    Each curve's legend entry gives its loss barrier in nats. Pass
    ``colors`` and ``linestyles`` to pair curves, for example one color per
    pair of runs, solid before alignment and dashed after.

    Parameters
    ----------
    curves : sequence of Interpolation
    labels : sequence of str
        One per curve.
    title : str
    colors : sequence of matplotlib colors, optional
        One per curve; by default, the ``tab10`` colors in order.
    linestyles : sequence of str, optional
        One per curve; by default, all solid.

    Raises
    ------
    TypeError
        If an entry of ``curves`` is not an :class:`~landscape.interpolation.Interpolation`.
    ValueError
        If ``curves`` is empty, or ``labels``, ``colors`` or ``linestyles``
        has a different length than ``curves``.
    """
    curves = _check_sequence(curves, "curves", Interpolation)
    if not curves:
        raise ValueError("curves is empty; pass at least one Interpolation")
    if colors is None:
        colors = [colormaps["tab10"](i % 10) for i in range(len(curves))]
    if linestyles is None:
        linestyles = ["-"] * len(curves)
    for name, values in (("labels", labels), ("colors", colors), ("linestyles", linestyles)):
        if len(values) != len(curves):
            raise ValueError(
                f"{name} has {len(values)} entries but there are {len(curves)} curves; "
                "pass one per curve"
            )

    figure = _new_figure(13, 4.8)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for curve, label, color, linestyle in zip(curves, labels, colors, linestyles):
        loss_axes.plot(curve.t, curve.loss, color=color, linestyle=linestyle,
                       label=f"{label} (barrier {curve.barrier:.3g} nats)")
        accuracy_axes.plot(curve.t, 100 * curve.accuracy, color=color, linestyle=linestyle,
                           label=label)
    if np.all(np.concatenate([curve.loss for curve in curves]) > 0):
        loss_axes.set_yscale("log")
        loss_label = "mean cross-entropy (nats, log scale)"
    else:
        loss_label = "mean cross-entropy (nats)"
    loss_axes.set(title="loss along the segment", xlabel="t (0 = first model, 1 = second)",
                  ylabel=loss_label)
    accuracy_axes.set(title="accuracy along the segment",
                      xlabel="t (0 = first model, 1 = second)", ylabel="accuracy (%)")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize="small")
    figure.suptitle(title)
    return figure
