"""Plane views of experiments for the report: surfaces, projected trajectories, comparisons.

For each experiment, run 0 gives three views: its trajectory on its own
top-2 PCA plane (contours and a 3-D surface), and a filter-normalized random
plane around its final weights. Two experiments may share architecture, data
and seeds, so that run 0 of each starts from the same initialization, as in
``paper-adam`` and ``paper-sgd``. Then each trajectory is also drawn on the
other's PCA plane, and both on their joint PCA plane. Every projected
trajectory carries its fidelity (:mod:`landscape.fidelity`).

Surfaces are evaluated on the test set with :func:`landscape.surface.loss_surface`
and saved under ``<cache>/surfaces/`` so a later report redraws them without
recomputing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from landscape import plane_figures
from landscape.cache import run_key
from landscape.directions import Plane, project, random_plane
from landscape.evidence import Evidence
from landscape.fidelity import TrajectoryOnPlane, trajectory_on_plane
from landscape.pca import joint_pca_plane, pca_plane
from landscape.plane_study import covering_grid, model_at, pca_axis_labels
from landscape.surface import Surface, grid_axis, load_surface, loss_surface, save_surface

logger = logging.getLogger(__name__)

GRID_POINTS = 21  # odd, so a range symmetric about 0 puts 0 on the grid
RANDOM_PLANE_SEED = 0
RANDOM_PLANE_RANGE = 1.0
MARGIN = 0.2  # PCA grids extend 20% of the trajectories' span beyond them
PLANES_VERSION = "1"


@dataclass
class View:
    """One figure for the report with the numbers behind it."""

    figure: Figure
    caption: str
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass
class Comparison:
    """Views and unjudged statistics of two experiments that share run 0's initialization."""

    first: str
    second: str
    numbers: dict[str, Any]
    views: list[View]


def _model_for(evidence: Evidence, weights: np.ndarray) -> torch.nn.Module:
    return model_at(evidence.experiment.widths, weights)


def _surface(
    cache_dir: Path | None,
    identity: dict[str, Any],
    model: torch.nn.Module,
    plane: Plane,
    evidence: Evidence,
    alphas: np.ndarray,
    betas: np.ndarray,
) -> Surface:
    """Return the test-set surface on ``plane``, from the cache when it was computed before."""
    path = None
    if cache_dir is not None:
        text = json.dumps({**identity, "version": PLANES_VERSION,
                           "alphas": alphas.tolist(), "betas": betas.tolist()}, sort_keys=True)
        path = Path(cache_dir) / "surfaces" / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.npz"
        if path.exists():
            try:
                return load_surface(path)
            except (OSError, ValueError, KeyError) as error:
                logger.warning("cached surface %s is unreadable (%s); recomputing", path, error)
    surface = loss_surface(
        model, plane, evidence.dataset.x_test, evidence.dataset.y_test,
        alphas=alphas, betas=betas, dataset_name=f"{evidence.dataset.name} test",
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_surface(surface, path)
    return surface


def _keys(evidence: Evidence) -> list[str]:
    return [run_key(evidence.experiment, 0, evidence.dataset.checksum)]


def _fidelity_numbers(trajectory: TrajectoryOnPlane) -> dict[str, float]:
    return {
        "mean_captured": trajectory.mean_captured,
        "min_captured": float(np.min(trajectory.captured)),
        "max_loss_gap": trajectory.max_loss_gap,
    }


def _plane_view(
    evidence_list: Sequence[Evidence],
    plane: Plane,
    identity: dict[str, Any],
    cache_dir: Path | None,
    title: str,
    caption: str,
    labels: tuple[str, str],
) -> tuple[View, Surface]:
    """Draw run 0 of each experiment in ``evidence_list`` on ``plane`` over its surface."""
    owner = evidence_list[0]
    model = _model_for(owner, plane.origin)
    coordinates = [project(e.runs[0].snapshots, plane)[0] for e in evidence_list]
    alphas, betas = covering_grid(coordinates, GRID_POINTS, margin=MARGIN)
    surface = _surface(cache_dir, identity, model, plane, owner, alphas, betas)
    trajectories = [
        trajectory_on_plane(model, plane, e.runs[0].snapshots, owner.dataset.x_test,
                            owner.dataset.y_test, label=f"{e.experiment.name} run 0")
        for e in evidence_list
    ]
    figure = plane_figures.plot_plane(surface, trajectories, title=title, axis_labels=labels)
    numbers = {t.label: _fidelity_numbers(t) for t in trajectories}
    return View(figure, caption, {"fidelity": numbers}), surface


def experiment_views(evidence: Evidence, geometry=None) -> list[View]:
    """Return the plane views of one experiment (run 0), plus interpolation curves."""
    name = evidence.experiment.name
    run = evidence.runs[0]
    if run.diverged:
        return []
    cache_dir = evidence.cache_dir
    views: list[View] = []

    plane = pca_plane(run.snapshots)
    ratios = plane.metadata["explained_variance_ratio"]
    view, surface = _plane_view(
        [evidence], plane, {"runs": _keys(evidence), "plane": "pca"}, cache_dir,
        title=f"{name}: run 0 on its PCA plane",
        caption="Test loss (nats) on the plane of run 0's top two principal components, "
        "centered on its final weights, with the trajectory projected as arrows. The "
        "fidelity numbers say how much of each snapshot's displacement the plane "
        "captures and how far the loss at the projection is from the real loss.",
        labels=pca_axis_labels(plane),
    )
    view.numbers["explained_variance_ratio"] = [float(r) for r in ratios[:2]]
    views.append(view)
    views.append(View(
        plane_figures.plot_surface_3d(surface, title=f"{name}: PCA-plane surface"),
        "The same surface in 3-D.",
    ))

    final_model = _model_for(evidence, run.final_weights)
    random = random_plane(final_model, seed=RANDOM_PLANE_SEED)
    axis = grid_axis(-RANDOM_PLANE_RANGE, RANDOM_PLANE_RANGE, GRID_POINTS)
    random_surface = _surface(
        cache_dir, {"runs": _keys(evidence), "plane": "random", "seed": RANDOM_PLANE_SEED},
        final_model, random, evidence, axis, axis,
    )
    views.append(View(
        plane_figures.plot_plane(random_surface, [], title=f"{name}: random plane around run 0",
                                 axis_labels=("filter-normalized direction 1",
                                              "filter-normalized direction 2")),
        "Test loss on a plane through run 0's final weights spanned by two Gaussian "
        "directions, filter-normalized (Li et al., NeurIPS 2018, arXiv:1712.09913). "
        f"The cosine between the two axes is {random.cosine:.2e}.",
        {"axis_cosine": random.cosine},
    ))

    if geometry is not None:
        curves = geometry.interpolations() + geometry.interpolations(aligned=True)
        labels = ([f"runs {i}-{j}" for i, j in geometry.pairs]
                  + [f"runs {i}-{j} aligned" for i, j in geometry.pairs])
        views.append(View(
            plane_figures.plot_interpolations(
                curves, labels, title=f"{name}: linear paths between solutions"),
            "Training loss along straight lines between the final weights of run pairs, "
            "before and after aligning hidden units by weight matching. The "
            "linear_mode_barrier claims are about the bump above the chord.",
        ))
    return views


def comparable(first: Evidence, second: Evidence) -> bool:
    """Return True when run 0 of both experiments starts from the same weights."""
    a, b = first.experiment, second.experiment
    return (
        a.widths == b.widths
        and a.dataset == b.dataset
        and a.seed(0) == b.seed(0)
        and not first.runs[0].diverged
        and not second.runs[0].diverged
        and np.array_equal(first.runs[0].initial_weights, second.runs[0].initial_weights)
    )


def compare(first: Evidence, second: Evidence) -> Comparison:
    """Cross-project run 0 of two experiments and compare their solutions."""
    a, b = first.experiment.name, second.experiment.name
    run_a, run_b = first.runs[0], second.runs[0]
    cache_dir = first.cache_dir
    keys = _keys(first) + _keys(second)
    views = []

    for owner, other in ((first, second), (second, first)):
        plane = pca_plane(owner.runs[0].snapshots)
        view, _ = _plane_view(
            [other, owner], plane, {"runs": _keys(owner), "plane": "pca"}, cache_dir,
            title=f"{other.experiment.name} run 0 on {owner.experiment.name}'s PCA plane",
            caption=f"Both trajectories start from the same initialization. "
            f"{other.experiment.name}'s is projected on the PCA plane of "
            f"{owner.experiment.name}'s; low captured fractions mean the two optimizers "
            "move in different subspaces.",
            labels=pca_axis_labels(plane),
        )
        views.append(view)

    joint = joint_pca_plane(run_a.snapshots, run_b.snapshots)
    view, _ = _plane_view(
        [first, second], joint, {"runs": keys, "plane": "joint-pca"}, cache_dir,
        title=f"{a} and {b} run 0 on their joint PCA plane",
        caption="Both trajectories on the top-2 PCA plane of their stacked snapshots, "
        f"centered on {a}'s final weights.",
        labels=pca_axis_labels(joint),
    )
    view.numbers["explained_variance_ratio"] = [
        float(r) for r in joint.metadata["explained_variance_ratio"][:2]
    ]
    views.append(view)

    final_a = run_a.final_weights.astype(np.float64)
    final_b = run_b.final_weights.astype(np.float64)
    move_a = final_a - run_a.initial_weights
    move_b = final_b - run_b.initial_weights
    cosine = float(move_a @ move_b / (np.linalg.norm(move_a) * np.linalg.norm(move_b)))
    numbers = {
        "distance": float(np.linalg.norm(final_a - final_b)),
        "normalized_distance": float(np.linalg.norm(final_a - final_b)
                                     / (np.linalg.norm(final_a) + np.linalg.norm(final_b))),
        "displacement_angle_degrees": float(np.degrees(np.arccos(np.clip(cosine, -1, 1)))),
        "displacement_norms": [float(np.linalg.norm(move_a)), float(np.linalg.norm(move_b))],
        "test_accuracy": {a: run_a.final_accuracy, b: run_b.final_accuracy},
    }
    return Comparison(first=a, second=b, numbers=numbers, views=views)


def comparisons(evidence: Sequence[Evidence]) -> list[Comparison]:
    """Return a :class:`Comparison` of each experiment with the first earlier one it is comparable to.

    With paper-adam first, every optimizer variant is compared with it, so
    n comparable experiments give n - 1 comparisons rather than all pairs. Each
    comparison took 10 to 18 s on a 2-core CPU, and all 15 pairs of the six
    comparable robustness experiments took over 4 minutes.
    """
    found = []
    for index, second in enumerate(evidence):
        first = next((item for item in evidence[:index] if comparable(item, second)), None)
        if first is not None:
            logger.info("comparing %s and %s", first.experiment.name, second.experiment.name)
            found.append(compare(first, second))
    return found
