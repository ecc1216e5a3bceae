"""Retraining from a point of a plane, to see where the optimizer goes from there.

A perturbation experiment moves a trained model to a point of the plane of
its trajectory's first two principal components and trains again from
there, to test whether the optimizer returns to the same minimum.
:func:`train_from_plane` does this for any
:class:`~landscape.directions.Plane`. It starts
:func:`landscape.train.train_run` at ``plane.origin + alpha * d1 + beta *
d2``, with the experiment's optimizer and batch size and the mini-batch
order of one run's seed. It then projects the new trajectory on the same
plane.

Example (perturb run 0 of an experiment along its first principal component)::

    source = cache.load(experiment, 0, dataset.checksum)
    plane = pca_plane(source.snapshots)
    perturbed = train_from_plane(experiment, dataset, plane, 5.0, 0.0)
    perturbed.coords[0]        # array([5., 0.]), up to float32 rounding
    perturbed.coords[-1]       # where training ended, in plane coordinates
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np

from landscape.data import Dataset
from landscape.directions import Plane, project
from landscape.experiment import Experiment
from landscape.model import count_parameters
from landscape.train import Run, train_run

logger = logging.getLogger(__name__)


@dataclass
class PerturbedRun:
    """A run trained from a point of a plane, and its trajectory on that plane.

    Attributes
    ----------
    run : Run
        The new run. Its ``snapshots[0]`` is the starting point rounded to
        float32, and ``metadata["perturbation"]`` records ``alpha``,
        ``beta``, ``source_run`` and the plane's ``kind`` and metadata.
    plane : Plane
        The plane the run started on.
    alpha, beta : float
        The starting point's plane coordinates.
    coords : np.ndarray
        float64, shape ``(n_snapshots, 2)``: ``(alpha, beta)`` of the
        projection of each snapshot on ``plane``. Rows after a divergence
        are NaN.
    residual_norm : np.ndarray
        float64, shape ``(n_snapshots,)``: Euclidean distance from each
        snapshot to ``plane``; NaN after a divergence.
    """

    run: Run
    plane: Plane
    alpha: float
    beta: float
    coords: np.ndarray
    residual_norm: np.ndarray

    @property
    def finite_snapshots(self) -> np.ndarray:
        """The snapshots up to the last finite one (all of them unless the run diverged)."""
        if self.run.diverged_epoch is None:
            return self.run.snapshots
        return self.run.snapshots[: self.run.diverged_epoch + 1]


def start_weights(plane: Plane, alpha: float, beta: float) -> np.ndarray:
    """Return the float32 weights ``plane.origin + alpha * d1 + beta * d2``.

    A zero coefficient adds nothing, so ``(0, 0)`` gives exactly the origin
    rounded to float32. Adding ``0.0 * d`` would turn an origin entry of -0.0
    into +0.0. The sum is formed in float64 and rounded once.
    """
    weights = plane.origin.copy()
    if alpha != 0.0:
        weights += alpha * plane.d1
    if beta != 0.0:
        weights += beta * plane.d2
    return weights.astype(np.float32)


def train_from_plane(
    experiment: Experiment,
    dataset: Dataset,
    plane: Plane,
    alpha: float,
    beta: float,
    *,
    run: int = 0,
    epochs: int | None = None,
) -> PerturbedRun:
    """Train from the point ``(alpha, beta)`` of ``plane`` and project the new trajectory on it.

    Training is :func:`landscape.train.train_run` with ``initial_weights``
    set to :func:`start_weights`. The mini-batch order is that of run
    ``run``'s seed, and the optimizer starts fresh, so Adam's moment
    estimates begin at zero as at the start of any run. With ``(alpha,
    beta) = (0, 0)`` on a plane whose origin is run ``run``'s initial
    weights, the result is bit-identical to ``train_run(experiment, run,
    dataset)``.

    Parameters
    ----------
    experiment : Experiment
        Supplies the architecture, optimizer, learning rate, batch size and
        number of epochs.
    dataset : Dataset
        Training data, and the test data of the run's per-snapshot test loss.
    plane : Plane
        Must have one entry per parameter of ``experiment.widths``, for
        example :func:`landscape.pca.pca_plane` of a run of ``experiment``.
    alpha, beta : float
        Plane coordinates of the starting point, in the units of ``d1`` and
        ``d2``. For a PCA plane these are Euclidean distances in weight space.
    run : int, default=0
        Run whose seed fixes the mini-batch order.
    epochs : int, optional
        Number of epochs; defaults to ``experiment.epochs``.

    Returns
    -------
    PerturbedRun

    Raises
    ------
    TypeError
        If ``plane`` is not a :class:`~landscape.directions.Plane`.
    ValueError
        If ``alpha`` or ``beta`` is not finite, ``epochs`` is not a positive
        int, ``run`` is not a run of ``experiment``, or the plane's length
        differs from the experiment's parameter count.
    """
    if not isinstance(plane, Plane):
        raise TypeError(f"plane must be a landscape.directions.Plane, got {type(plane).__name__}")
    alpha, beta = float(alpha), float(beta)
    if not (math.isfinite(alpha) and math.isfinite(beta)):
        raise ValueError(f"alpha and beta must be finite, got alpha={alpha}, beta={beta}")
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        experiment = dataclasses.replace(experiment, epochs=epochs)
    n_params = count_parameters(experiment.widths)
    if plane.n_params != n_params:
        raise ValueError(
            f"plane has {plane.n_params} entries per vector but experiment "
            f"{experiment.name!r} (widths {experiment.widths}) has {n_params} parameters; "
            "build the plane from a run of this experiment"
        )
    seed = experiment.seed(run)

    logger.info(
        "training %s from plane point (%.4g, %.4g) with the data order of run %d "
        "(seed %d) for %d epochs",
        experiment.name, alpha, beta, run, seed, experiment.epochs,
    )
    trained = train_run(experiment, run, dataset, initial_weights=start_weights(plane, alpha, beta))
    trained.metadata["perturbation"] = {
        "alpha": alpha,
        "beta": beta,
        "source_run": run,
        "plane": {"kind": plane.kind, **plane.metadata},
    }

    # Project only finite snapshots; a diverged run's later rows stay NaN.
    n_snapshots = len(trained.snapshots)
    coords = np.full((n_snapshots, 2), np.nan)
    residual_norm = np.full(n_snapshots, np.nan)
    n_finite = n_snapshots if trained.diverged_epoch is None else trained.diverged_epoch + 1
    coords[:n_finite], residual_norm[:n_finite] = project(trained.snapshots[:n_finite], plane)
    logger.info(
        "run from (%.4g, %.4g) ended at (%.4g, %.4g), %.4g from the plane; final test "
        "accuracy %.2f%%",
        alpha, beta, *coords[n_finite - 1], residual_norm[n_finite - 1],
        100 * trained.test_accuracy[n_finite - 1],
    )
    return PerturbedRun(
        run=trained,
        plane=plane,
        alpha=alpha,
        beta=beta,
        coords=coords,
        residual_norm=residual_norm,
    )
