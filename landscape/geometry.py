"""Trajectory and solution geometry of an experiment's runs, computed once and cached.

The landscape claims and the report need the same expensive quantities. They
are the top-2 PCA variance of each run's trajectory and the loss barriers
between pairs of final solutions on the training set, before and after
aligning hidden units by weight matching (:mod:`landscape.rebasin`). :func:`geometry_of`
computes them for an :class:`~landscape.evidence.Evidence` and stores them
as JSON next to the run cache, keyed by the cache keys of the runs involved,
so a second session reads them back instead of recomputing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from landscape import metrics
from landscape.cache import run_key
from landscape.evidence import Evidence
from landscape.interpolation import Interpolation, interpolation_losses, pairs_for_barrier
from landscape.pca import pca_plane
from landscape.rebasin import align_to

logger = logging.getLogger(__name__)

# Bump when a change here changes what is computed, so cached values are redone.
GEOMETRY_VERSION = "1"
N_BARRIER_PAIRS = 8
N_INTERPOLATION_POINTS = 25
REFERENCE_RUN = 0


@dataclass
class Geometry:
    """Geometry of one experiment's runs.

    Attributes
    ----------
    pca_top2 : list of float
        Per run, the fraction of trajectory variance explained by the top two
        principal components (snapshots centered on the final one).
    pairs : list of (int, int)
        Run pairs for the barriers, from
        :func:`landscape.interpolation.pairs_for_barrier`.
    barriers, aligned_barriers : list of float
        Per pair ``(i, j)``, the loss barrier (nats, training set, 25 evenly
        spaced t) between runs i and j, and between run i and run j aligned
        to run i.
    interpolation_t : list of float
    interpolation_loss, aligned_interpolation_loss : list of list of float
        Per pair, the training loss (nats) along the path at ``interpolation_t``.
    interpolation_accuracy, aligned_interpolation_accuracy : list of list of float
        Per pair, the training accuracy along the path.
    aligned_cosine : list of list of float
        Pairwise cosine similarity of final weights after aligning every run
        to run :data:`REFERENCE_RUN`.
    """

    pca_top2: list[float]
    pairs: list[tuple[int, int]]
    barriers: list[float]
    aligned_barriers: list[float]
    interpolation_t: list[float]
    interpolation_loss: list[list[float]]
    aligned_interpolation_loss: list[list[float]]
    interpolation_accuracy: list[list[float]]
    aligned_interpolation_accuracy: list[list[float]]
    aligned_cosine: list[list[float]]

    def interpolations(self, *, aligned: bool = False) -> list[Interpolation]:
        """Return the per-pair paths as :class:`~landscape.interpolation.Interpolation` objects."""
        losses = self.aligned_interpolation_loss if aligned else self.interpolation_loss
        accuracies = (
            self.aligned_interpolation_accuracy if aligned else self.interpolation_accuracy
        )
        return [
            Interpolation(t=self.interpolation_t, loss=loss, accuracy=accuracy)
            for loss, accuracy in zip(losses, accuracies)
        ]


def _storage_path(cache_dir: Path, evidence: Evidence) -> Path:
    experiment = evidence.experiment
    keys = [run_key(experiment, run.run, evidence.dataset.checksum) for run in evidence.runs]
    identity = json.dumps({"runs": keys, "version": GEOMETRY_VERSION,
                           "pairs": N_BARRIER_PAIRS, "points": N_INTERPOLATION_POINTS})
    digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
    return cache_dir / "geometry" / f"{digest}.json"


def compute_geometry(evidence: Evidence) -> Geometry:
    """Compute :class:`Geometry` for ``evidence``.

    For the paper MLP this evaluates 16 interpolation paths on the 60,000
    training images; one path took 6-10 s with one torch thread on the
    2-core CPU this project is developed on.
    """
    runs = evidence.runs
    widths = evidence.experiment.widths
    x, y = evidence.dataset.x_train, evidence.dataset.y_train
    started = time.perf_counter()

    pca_top2 = []
    for run in runs:
        ratios = pca_plane(run.snapshots).metadata["explained_variance_ratio"]
        pca_top2.append(float(np.sum(ratios[:2])))

    finals = [run.final_weights.astype(np.float64) for run in runs]
    reference = finals[REFERENCE_RUN]
    aligned = [
        final if index == REFERENCE_RUN else align_to(reference, final, widths)
        for index, final in enumerate(finals)
    ]
    aligned_cosine = metrics.cosine_matrix(np.stack(aligned))

    # Experiments with fewer than 5 runs have fewer than 8 distinct pairs.
    n_pairs = min(N_BARRIER_PAIRS, len(runs) * (len(runs) - 1) // 2)
    pairs = pairs_for_barrier(len(runs), n_pairs)
    barriers, aligned_barriers = [], []
    losses, aligned_losses = [], []
    accuracies, aligned_accuracies = [], []
    t_values: list[float] = []
    for number, (i, j) in enumerate(pairs, start=1):
        raw = interpolation_losses(widths, finals[i], finals[j], x, y,
                                   n_points=N_INTERPOLATION_POINTS)
        matched = align_to(finals[i], finals[j], widths)
        fitted = interpolation_losses(widths, finals[i], matched, x, y,
                                      n_points=N_INTERPOLATION_POINTS)
        barriers.append(raw.barrier)
        aligned_barriers.append(fitted.barrier)
        losses.append(raw.loss.tolist())
        aligned_losses.append(fitted.loss.tolist())
        accuracies.append(raw.accuracy.tolist())
        aligned_accuracies.append(fitted.accuracy.tolist())
        t_values = raw.t.tolist()
        logger.info(
            "%s barrier %d/%d, runs %d-%d: raw %.4f nats, aligned %.4f nats",
            evidence.experiment.name, number, len(pairs), i, j, raw.barrier, fitted.barrier,
        )
    logger.info("%s geometry computed in %.1f s", evidence.experiment.name,
                time.perf_counter() - started)
    return Geometry(
        pca_top2=pca_top2,
        pairs=[tuple(pair) for pair in pairs],
        barriers=barriers,
        aligned_barriers=aligned_barriers,
        interpolation_t=t_values,
        interpolation_loss=losses,
        aligned_interpolation_loss=aligned_losses,
        interpolation_accuracy=accuracies,
        aligned_interpolation_accuracy=aligned_accuracies,
        aligned_cosine=aligned_cosine.tolist(),
    )


def geometry_of(evidence: Evidence, cache_dir: str | Path | None = None) -> Geometry:
    """Return the geometry of ``evidence``, from the cache when it was computed before.

    With ``cache_dir=None`` nothing is read or written. A cached file that
    fails to parse is logged and recomputed.
    """
    if "geometry" in evidence.derived:
        return evidence.derived["geometry"]
    if any(run.diverged for run in evidence.runs):
        raise ValueError(
            f"{evidence.experiment.name} has diverged runs; their geometry is undefined"
        )
    path = _storage_path(Path(cache_dir), evidence) if cache_dir is not None else None
    geometry = None
    if path is not None and path.exists():
        try:
            data = json.loads(path.read_text())
            data["pairs"] = [tuple(pair) for pair in data["pairs"]]
            geometry = Geometry(**data)
        except (ValueError, TypeError, KeyError) as error:
            logger.warning("cached geometry %s is unreadable (%s); recomputing", path, error)
    if geometry is None:
        geometry = compute_geometry(evidence)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
            temporary.write_text(json.dumps(asdict(geometry)))
            os.replace(temporary, path)
    evidence.derived["geometry"] = geometry
    return geometry
