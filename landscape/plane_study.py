"""A plane, the loss surface over it and the trajectories projected on it, built together.

The plane commands of the ``landscape`` command line (``surface``,
``trajectory``, ``retrain-from-plane``) all take the same steps.
:func:`study_plane` projects trajectories with their fidelity
(:func:`landscape.fidelity.trajectory_on_plane`) and picks a grid that covers
them and has the plane's origin on a grid point. It then evaluates
:func:`landscape.surface.loss_surface` on that grid and returns a
:class:`PlaneStudy` for :mod:`landscape.plane_figures`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils import vector_to_parameters

from landscape.data import Dataset
from landscape.directions import Plane
from landscape.fidelity import TrajectoryOnPlane, trajectory_on_plane
from landscape.model import build_mlp
from landscape.surface import Surface, grid_axis, loss_surface

logger = logging.getLogger(__name__)

# Share of a trajectory's extent along each axis added on both sides of it
# when the grid is chosen to cover the trajectory.
DEFAULT_MARGIN = 0.2


@dataclass
class PlaneStudy:
    """A plane with its loss surface and projected trajectories.

    Attributes
    ----------
    plane : Plane
    surface : Surface
        Loss and accuracy over the grid, on the evaluation data.
    trajectories : list of TrajectoryOnPlane
        In the order given to :func:`study_plane`; losses on the same data.
    axis_labels : (str, str) or None
        For a PCA plane, labels such as ``"PC1 (95.1% of variance)"``.
    """

    plane: Plane
    surface: Surface
    trajectories: list[TrajectoryOnPlane]
    axis_labels: tuple[str, str] | None


def model_at(widths: Sequence[int], weights: np.ndarray) -> nn.Module:
    """Build the MLP of ``widths`` with the flat float32 ``weights`` as its parameters."""
    model = build_mlp(widths, seed=0)
    vector_to_parameters(torch.as_tensor(np.array(weights, dtype=np.float32)), model.parameters())
    return model


def evaluation_data(dataset: Dataset, samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the first ``samples`` test samples of ``dataset`` (all of them by default).

    Raises
    ------
    ValueError
        If ``samples`` is not between 1 and the size of the test set.
    """
    n_test = len(dataset.x_test)
    if samples is None:
        return dataset.x_test, dataset.y_test
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= n_test:
        raise ValueError(
            f"samples must be an int from 1 to {n_test} (the size of the {dataset.name} "
            f"test set), got {samples!r}"
        )
    return dataset.x_test[:samples], dataset.y_test[:samples]


def pca_axis_labels(plane: Plane) -> tuple[str, str] | None:
    """Return ``("PC1 (x% of variance)", "PC2 (y% of variance)")``, or None if the plane records no ratios."""
    ratios = plane.metadata.get("explained_variance_ratio")
    if not ratios or len(ratios) < 2:
        return None
    return tuple(f"PC{k + 1} ({100 * ratio:.1f}% of variance)" for k, ratio in enumerate(ratios[:2]))


def covering_axis(low: float, high: float, n: int) -> np.ndarray:
    """Return the narrowest :func:`~landscape.surface.grid_axis` of ``n`` points that covers ``[low, high]`` and 0.

    0 always falls on a grid point, so the cell at ``(0, 0)`` is the plane's
    origin. The range is first widened to include 0. The axis is then
    ``k * h`` for ``k = -z, ..., n - 1 - z``, where the index ``z`` of 0 and
    the spacing ``h`` are chosen to make ``h`` as small as possible.

    Parameters
    ----------
    low, high : float
        Finite, ``low <= high``.
    n : int
        Number of points; at least 3 when the range reaches both sides of 0,
        and at least 2 otherwise.

    Raises
    ------
    ValueError
        If the bounds are not finite or out of order, the range (with 0) has
        zero width, or ``n`` is too small.

    Examples
    --------
    >>> covering_axis(-1.0, 3.0, 5)
    array([-1.,  0.,  1.,  2.,  3.])
    >>> covering_axis(-1.0, 2.5, 5)
    array([-1.,  0.,  1.,  2.,  3.])
    """
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"need finite low <= high, got low={low}, high={high}")
    low, high = min(low, 0.0), max(high, 0.0)
    if low == high:
        raise ValueError("the range [low, high] and 0 span no width; give a range around 0")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int of at least 2, got {n!r}")
    if low == 0.0:
        return grid_axis(0.0, high, n)
    if high == 0.0:
        return grid_axis(low, 0.0, n)
    if n < 3:
        raise ValueError(
            f"a range on both sides of 0 ([{low:.4g}, {high:.4g}]) needs n >= 3 so that 0 "
            f"is an inner grid point, got n={n}"
        )

    # Index z of 0 and the spacing that covers both sides from it.
    spacing, zero_index = min(
        (max(-low / z, high / (n - 1 - z)), z) for z in range(1, n - 1)
    )
    return grid_axis(-zero_index * spacing, (n - 1 - zero_index) * spacing, n)


def covering_grid(
    coords: Sequence[np.ndarray], n: int, *, margin: float = DEFAULT_MARGIN
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(alphas, betas)`` of ``n`` points each that cover all ``coords`` with a margin.

    Along each axis the range from the smallest to the largest finite
    coordinate is widened by ``margin`` times its width on both sides, then
    passed to :func:`covering_axis`. An axis on which every coordinate is the
    same is first widened to ``max(|coordinate|, 1)``, centered on it.

    Parameters
    ----------
    coords : sequence of np.ndarray
        Each of shape ``(n_points, 2)``, such as :attr:`TrajectoryOnPlane.coords`.
    n : int
    margin : float, default=0.2

    Raises
    ------
    ValueError
        If there is no finite coordinate, or ``margin`` is negative.
    """
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    points = np.empty((0, 2))
    if len(coords):
        points = np.concatenate([np.asarray(c, dtype=np.float64).reshape(-1, 2) for c in coords])
    points = points[np.all(np.isfinite(points), axis=1)]
    if len(points) == 0:
        raise ValueError("no finite trajectory coordinates to cover; pass a range instead")
    axes = []
    for column in range(2):
        low, high = float(points[:, column].min()), float(points[:, column].max())
        if high == low:
            half = max(abs(low), 1.0) / 2
            low, high = low - half, high + half
        width = high - low
        axes.append(covering_axis(low - margin * width, high + margin * width, n))
    return axes[0], axes[1]


def study_plane(
    model: nn.Module,
    plane: Plane,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    trajectories: Sequence[tuple[str, np.ndarray]] = (),
    grid: int = 21,
    value_range: tuple[float, float] | None = None,
    margin: float = DEFAULT_MARGIN,
    dataset_name: str | None = None,
) -> PlaneStudy:
    """Project trajectories on ``plane`` and evaluate the loss surface around them.

    Parameters
    ----------
    model : nn.Module
        Supplies the architecture; its weights are neither used nor changed.
    plane : Plane
    x, y : torch.Tensor
        Evaluation data for the surface and the trajectories' losses.
    trajectories : sequence of (label, snapshots)
        Each ``snapshots`` is float32 with shape ``(n_snapshots, n_params)``
        and contains no NaN.
    grid : int, default=21
        Points per axis.
    value_range : (float, float), optional
        ``(lo, hi)`` for both axes, passed to
        :func:`~landscape.surface.grid_axis`, so 0 must fall on a grid point
        (for example a symmetric range and an odd ``grid``). By default each
        axis covers the trajectories with :func:`covering_grid`.
    margin : float, default=0.2
        Passed to :func:`covering_grid`.
    dataset_name : str, optional
        Recorded in the surface's metadata.

    Raises
    ------
    ValueError
        If neither ``trajectories`` nor ``value_range`` is given, or the grid
        does not fit the range (see :func:`~landscape.surface.grid_axis`).
    """
    projected = []
    for label, snapshots in trajectories:
        logger.info("projecting %s (%d snapshots) and evaluating its fidelity", label, len(snapshots))
        projected.append(trajectory_on_plane(model, plane, snapshots, x, y, label=label))
    for trajectory in projected:
        logger.info(
            "%s: the plane captures %.1f%% of its squared displacement (mean over snapshots); "
            "max |plane - real loss| %.4g nats",
            trajectory.label, 100 * trajectory.mean_captured, trajectory.max_loss_gap,
        )

    if value_range is not None:
        alphas = betas = grid_axis(value_range[0], value_range[1], grid)
    elif projected:
        alphas, betas = covering_grid([t.coords for t in projected], grid, margin=margin)
    else:
        raise ValueError("pass value_range for a plane without trajectories to cover")

    logger.info(
        "evaluating a %d x %d grid, alpha in [%.4g, %.4g], beta in [%.4g, %.4g], on %d samples",
        len(alphas), len(betas), alphas[0], alphas[-1], betas[0], betas[-1], len(x),
    )
    surface = loss_surface(model, plane, x, y, alphas=alphas, betas=betas, dataset_name=dataset_name)
    logger.info(
        "surface done in %.1f s (%s engine): loss from %.4g to %.4g nats",
        surface.metadata["seconds"], surface.metadata["engine"],
        np.nanmin(surface.loss), np.nanmax(surface.loss),
    )
    labels = pca_axis_labels(plane) if plane.kind in ("pca", "joint_pca") else None
    return PlaneStudy(plane=plane, surface=surface, trajectories=projected, axis_labels=labels)
