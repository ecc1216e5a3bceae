"""The plane subcommands of the ``landscape`` command line.

:mod:`landscape.cli` parses the options and calls :func:`run_plane_command`,
which reads a trained run from the cache (never training it), builds the
plane, evaluates the surface with :func:`landscape.plane_study.study_plane`
and writes figures from :mod:`landscape.plane_figures`:

- ``surface``: the loss surface of the run's PCA plane with its trajectory,
  or of a random plane through its final weights, optionally also in 3-D.
- ``trajectory``: the run's trajectory on its PCA plane, with fidelity.
- ``retrain-from-plane``: train from a point of the run's PCA plane
  (:func:`landscape.perturb.train_from_plane`) and draw the new trajectory
  beside the original.

Losses are measured on the test set, or on its first ``--samples`` samples.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from landscape import experiment as registry
from landscape.cache import RunCache
from landscape.data import Dataset, default_data_root, load_dataset
from landscape.directions import random_plane
from landscape.experiment import Experiment
from landscape.model import build_mlp
from landscape.pca import pca_plane
from landscape.perturb import train_from_plane
from landscape.plane_figures import plot_fidelity, plot_plane, plot_surface_3d
from landscape.plane_study import PlaneStudy, evaluation_data, model_at, study_plane
from landscape.surface import save_surface
from landscape.train import Run

logger = logging.getLogger(__name__)

# Coordinate range of a random plane's axes when --range is not given. Each
# filter of a filter-normalized direction has the norm of the same filter of
# the weights, so coordinate 1 moves every filter by its own norm.
RANDOM_PLANE_RANGE = (-1.0, 1.0)

FIGURE_DPI = 120


@dataclass
class _Source:
    """The input of every plane command: a cached run, its experiment and data, and the evaluation samples."""

    experiment: Experiment
    dataset: Dataset
    run: Run
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor

    @property
    def label(self) -> str:
        return f"run {self.run.run} (seed {self.run.seed})"

    @property
    def data_text(self) -> str:
        return f"{len(self.x)} {self.dataset.name} test samples"


def run_plane_command(args: argparse.Namespace) -> list[Path]:
    """Run the plane command named by ``args.command`` and return the files written.

    Raises
    ------
    landscape.cache.RunNotCachedError
        If the run is not in the cache.
    ValueError
        For an unknown experiment, a diverged run, or options that do not fit
        (for example a ``--range`` whose grid misses 0).
    """
    source = _load_source(args)
    if args.command == "surface":
        return _surface(args, source)
    if args.command == "trajectory":
        return _trajectory(args, source)
    if args.command == "retrain-from-plane":
        return _retrain_from_plane(args, source)
    raise ValueError(f"unknown plane command {args.command!r}")


def _load_source(args: argparse.Namespace) -> _Source:
    experiment = registry.get(args.experiment)
    dataset = load_dataset(experiment.dataset, args.data_root or default_data_root())
    cache = RunCache(args.cache_dir)
    run = cache.load(experiment, args.run, dataset.checksum)
    if run.diverged:
        raise ValueError(
            f"run {args.run} of {experiment.name!r} (seed {run.seed}) diverged in epoch "
            f"{run.diverged_epoch + 1}, so its trajectory has no PCA plane; choose another "
            "run with --run"
        )
    x, y = evaluation_data(dataset, args.samples)
    # The architecture only: every evaluation passes its own weights.
    model = build_mlp(experiment.widths, seed=0)
    logger.info(
        "loaded %s run %d (seed %d, %d snapshots, final test accuracy %.2f%%); evaluating "
        "on %d test samples",
        experiment.name, args.run, run.seed, len(run.snapshots), 100 * run.final_accuracy, len(x),
    )
    return _Source(experiment, dataset, run, model, x, y)


def _pca_study(args: argparse.Namespace, source: _Source, trajectories: list) -> PlaneStudy:
    plane = pca_plane(source.run.snapshots)
    ratios = plane.metadata["explained_variance_ratio"]
    logger.info(
        "PCA plane of %s: PC1 explains %.1f%% and PC2 %.1f%% of the trajectory's variance",
        source.label, 100 * ratios[0], 100 * ratios[1],
    )
    return study_plane(
        source.model, plane, source.x, source.y,
        trajectories=[(source.label, source.run.snapshots), *trajectories],
        grid=args.grid, value_range=args.value_range, dataset_name=source.dataset.name,
    )


def _write(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=FIGURE_DPI)
    logger.info("wrote %s", path)
    return path


def _save_surface(args: argparse.Namespace, study: PlaneStudy) -> list[Path]:
    if args.save is None:
        return []
    args.save.parent.mkdir(parents=True, exist_ok=True)
    return [save_surface(study.surface, args.save)]


def _surface(args: argparse.Namespace, source: _Source) -> list[Path]:
    name = source.experiment.name
    if args.plane == "pca":
        study = _pca_study(args, source, [])
        title = f"{name} {source.label}\nloss on the PCA plane of its trajectory"
        default_output = Path(f"{name}-run{args.run}-pca-surface.png")
    else:
        plane = random_plane(model_at(source.experiment.widths, source.run.final_weights), seed=args.seed)
        study = study_plane(
            source.model, plane, source.x, source.y,
            grid=args.grid, value_range=args.value_range or RANDOM_PLANE_RANGE,
            dataset_name=source.dataset.name,
        )
        title = (
            f"{name} {source.label}\nloss on a random filter-normalized plane "
            f"(seed {args.seed}) through its final weights"
        )
        default_output = Path(f"{name}-run{args.run}-random{args.seed}-surface.png")

    output = args.output or default_output
    title += f"\n{source.data_text}"
    written = [_write(plot_plane(study.surface, study.trajectories, title=title,
                                 axis_labels=study.axis_labels), output)]
    if args.surface_3d:
        path_3d = output.with_name(f"{output.stem}-3d{output.suffix}")
        figure_3d = plot_surface_3d(study.surface, title=title, axis_labels=study.axis_labels)
        written.append(_write(figure_3d, path_3d))
    return written + _save_surface(args, study)


def _trajectory(args: argparse.Namespace, source: _Source) -> list[Path]:
    study = _pca_study(args, source, [])
    title = (
        f"{source.experiment.name} {source.label}\ntrajectory on its PCA plane, "
        f"{source.data_text}"
    )
    written = [_write(plot_plane(study.surface, study.trajectories, title=title,
                                 axis_labels=study.axis_labels), args.output)]
    if args.fidelity_output is not None:
        written.append(_write(plot_fidelity(study.trajectories, title=title), args.fidelity_output))
    return written + _save_surface(args, study)


def _retrain_from_plane(args: argparse.Namespace, source: _Source) -> list[Path]:
    plane = pca_plane(source.run.snapshots)
    perturbed = train_from_plane(
        source.experiment, source.dataset, plane, args.alpha, args.beta,
        run=args.run, epochs=args.epochs,
    )
    start, end = perturbed.finite_snapshots[0], perturbed.finite_snapshots[-1]
    target = source.run.final_weights.astype(np.float64)
    logger.info(
        "retrained run started %.4g and ended %.4g (Euclidean distance) from the final "
        "weights of %s; final test accuracy %.2f%% against %.2f%%",
        np.linalg.norm(start - target), np.linalg.norm(end - target), source.label,
        100 * perturbed.run.test_accuracy[len(perturbed.finite_snapshots) - 1],
        100 * source.run.final_accuracy,
    )
    if perturbed.run.diverged:
        logger.warning("the retrained run diverged; only its snapshots before that are drawn")

    label = f"retrained from ({args.alpha:g}, {args.beta:g})"
    study = _pca_study(args, source, [(label, perturbed.finite_snapshots)])
    title = (
        f"{source.experiment.name} {source.label}\nretrained for "
        f"{perturbed.run.metadata['config']['epochs']} epochs from ({args.alpha:g}, "
        f"{args.beta:g}) on its PCA plane, {source.data_text}"
    )
    default_output = Path(
        f"{source.experiment.name}-run{args.run}-retrain-a{args.alpha:g}-b{args.beta:g}.png"
    )
    figure = plot_plane(study.surface, study.trajectories, title=title,
                        axis_labels=study.axis_labels)
    return [_write(figure, args.output or default_output)] + _save_surface(args, study)
