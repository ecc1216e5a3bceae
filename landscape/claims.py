"""The claims under test, how each is measured, and how it is judged.

A :class:`Claim` reduces the runs of one experiment to a statistic with a
bootstrap confidence interval (:mod:`landscape.stats`) and compares it with a
threshold. The result is a :class:`ClaimResult` whose verdict is
``supported``, ``refuted``, ``inconclusive``, or ``invalid`` when a run
diverged, since a diverged run is never evidence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from landscape import metrics, stats
from landscape.train import Run


# The fewest independent units (runs, or run pairs for per-pair statistics)
# a bootstrap interval is computed from. With 2 runs there is a single pair,
# and every resample of it gives the same value, a zero-width interval.
MIN_UNITS = 3


class ClaimNotSupported(AssertionError):
    """A claim test's verdict is not "supported"."""


class ClaimRefuted(ClaimNotSupported):
    """The whole confidence interval lies on the wrong side of the threshold."""


class ClaimInconclusive(ClaimNotSupported):
    """The confidence interval straddles the threshold."""


class ClaimInvalid(ClaimNotSupported):
    """The claim could not be judged, for example because a run diverged."""


_FAILURES = {
    "refuted": ClaimRefuted,
    "inconclusive": ClaimInconclusive,
    "invalid": ClaimInvalid,
}


def failure_for(verdict: str) -> type[ClaimNotSupported]:
    """Return the exception a claim test raises for ``verdict``."""
    try:
        return _FAILURES[verdict]
    except KeyError:
        raise ValueError(
            f"verdict {verdict!r} has no failure; expected one of {', '.join(_FAILURES)}"
        ) from None


@dataclass(frozen=True)
class Claim:
    """A claim of the form ``statistic <direction> threshold`` over an experiment's runs.

    ``measure`` returns either a symmetric pairwise matrix (``pairwise=True``),
    whose mean over distinct pairs is the statistic, or one value per run (or
    per run pair), reduced by ``reduce`` along axis 1 of a
    ``(n_samples, n_values)`` array. It takes the runs, or with
    ``uses_evidence=True`` the whole :class:`~landscape.evidence.Evidence`,
    for claims that also need the data.
    """

    id: str
    title: str
    statistic: str
    threshold: float
    direction: str
    measure: Callable[[Sequence[Run]], np.ndarray]
    pairwise: bool
    reduce: Callable[[np.ndarray], np.ndarray] | None = None
    uses_evidence: bool = False

    def __post_init__(self) -> None:
        if self.direction not in (">", "<"):
            raise ValueError(f"claim {self.id!r}: direction must be '>' or '<'")
        if not self.pairwise and self.reduce is None:
            raise ValueError(f"claim {self.id!r}: a per-run claim needs a reduce function")


@dataclass
class ClaimResult:
    """The outcome of one claim on one experiment, as written to ``claims.json``."""

    experiment: str
    claim: str
    title: str
    statistic: str
    value: float | None
    low: float | None
    high: float | None
    confidence: float
    threshold: float
    direction: str
    verdict: str
    tightest_threshold: float | None
    n_runs: int
    seeds: list[int]
    reference: float | None = None
    note: str = ""
    n_resamples: int = 0
    extra: dict = field(default_factory=dict)

    def describe(self) -> str:
        """Return a one-paragraph account of the result with all its numbers."""
        head = (
            f"{self.experiment}: claim {self.claim!r} ({self.statistic} "
            f"{self.direction} {self.threshold:g}) is {self.verdict.upper()}"
        )
        if self.value is None:
            return f"{head}: {self.note} (n={self.n_runs} runs, seeds {self.seeds})"
        return (
            f"{head}: point value {self.value:.6g}, "
            f"{100 * self.confidence:.0f}% bootstrap CI [{self.low:.6g}, {self.high:.6g}] "
            f"over n={self.n_runs} runs (seeds {self.seeds}), threshold {self.threshold:g}; "
            f"tightest threshold the interval supports: "
            f"{self.direction} {self.tightest_threshold:.6g}"
        )

    def check(self) -> None:
        """Raise the matching :class:`ClaimNotSupported` unless the claim is supported."""
        if self.verdict != "supported":
            raise failure_for(self.verdict)(self.describe())

    def to_dict(self) -> dict:
        return asdict(self)


def _grad_norm_series(runs: Sequence[Run]) -> np.ndarray:
    return metrics.pearson_matrix(np.stack([r.grad_norm for r in runs]))


def _final_weight_cosine(runs: Sequence[Run]) -> np.ndarray:
    return metrics.cosine_matrix(np.stack([r.final_weights for r in runs]))


def _final_accuracy(runs: Sequence[Run]) -> np.ndarray:
    return np.array([r.final_accuracy for r in runs])


def _population_variance(samples: np.ndarray) -> np.ndarray:
    return samples.var(axis=1, ddof=0)


def _mean(samples: np.ndarray) -> np.ndarray:
    return samples.mean(axis=1)


def _geometry(evidence):
    from landscape.geometry import geometry_of

    return geometry_of(evidence, evidence.cache_dir)


def _pca_top2(evidence) -> np.ndarray:
    return np.array(_geometry(evidence).pca_top2)


def _barriers(evidence) -> np.ndarray:
    return np.array(_geometry(evidence).barriers)


def _aligned_barriers(evidence) -> np.ndarray:
    return np.array(_geometry(evidence).aligned_barriers)


def _aligned_cosine(evidence) -> np.ndarray:
    return np.array(_geometry(evidence).aligned_cosine)


CLAIMS: dict[str, Claim] = {
    claim.id: claim
    for claim in (
        Claim(
            id="grad_norm_correlation",
            title="Gradient-norm trajectories correlate across seeds",
            statistic="mean pairwise Pearson r of per-epoch gradient norms",
            threshold=0.96,
            direction=">",
            measure=_grad_norm_series,
            pairwise=True,
        ),
        Claim(
            id="final_weight_cosine",
            title="Final weight vectors are nearly orthogonal",
            statistic="mean pairwise cosine similarity of final weights",
            threshold=0.1,
            direction="<",
            measure=_final_weight_cosine,
            pairwise=True,
        ),
        Claim(
            id="accuracy_variance",
            title="Test accuracy barely varies across seeds",
            statistic="population variance of final test accuracy",
            threshold=0.001,
            direction="<",
            measure=_final_accuracy,
            pairwise=False,
            reduce=_population_variance,
        ),
        Claim(
            id="pca_top2_variance",
            title="Trajectories are low-dimensional",
            statistic="mean over runs of the trajectory variance explained by the top-2 PCA components",
            threshold=0.9,
            direction=">",
            measure=_pca_top2,
            pairwise=False,
            reduce=_mean,
            uses_evidence=True,
        ),
        Claim(
            id="linear_mode_barrier",
            title="Independent solutions are not linearly mode-connected",
            statistic="mean over run pairs of the training-loss barrier on the linear path (nats)",
            threshold=0.1,
            direction=">",
            measure=_barriers,
            pairwise=False,
            reduce=_mean,
            uses_evidence=True,
        ),
        Claim(
            id="aligned_weight_cosine",
            title="Final weights stay nearly orthogonal after aligning hidden units",
            statistic="mean pairwise cosine similarity of final weights after weight matching",
            threshold=0.1,
            direction="<",
            measure=_aligned_cosine,
            pairwise=True,
            uses_evidence=True,
        ),
        Claim(
            id="aligned_linear_mode_barrier",
            title="Solutions stay disconnected after aligning hidden units",
            statistic="mean over run pairs of the training-loss barrier after weight matching (nats)",
            threshold=0.1,
            direction=">",
            measure=_aligned_barriers,
            pairwise=False,
            reduce=_mean,
            uses_evidence=True,
        ),
    )
}


def get_claim(claim_id: str) -> Claim:
    """Return the claim called ``claim_id``."""
    try:
        return CLAIMS[claim_id]
    except KeyError:
        raise ValueError(
            f"unknown claim {claim_id!r}; known claims: {', '.join(CLAIMS)}"
        ) from None


def evaluate_claim(
    claim: Claim | str,
    experiment: str,
    runs: Sequence[Run],
    *,
    reference: float | None = None,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    n_resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int | None = None,
    evidence=None,
) -> ClaimResult:
    """Measure ``claim`` on ``runs`` and judge it.

    If any run diverged, or the statistic is undefined on the runs (the
    measure raised ``ValueError``), the verdict is ``"invalid"`` and no value
    is given.
    """
    if isinstance(claim, str):
        claim = get_claim(claim)
    seeds = [r.seed for r in runs]
    common = dict(
        experiment=experiment,
        claim=claim.id,
        title=claim.title,
        statistic=claim.statistic,
        confidence=confidence,
        threshold=claim.threshold,
        direction=claim.direction,
        n_runs=len(runs),
        seeds=seeds,
        reference=reference,
    )
    diverged = [r.seed for r in runs if r.diverged]
    if diverged:
        return ClaimResult(
            value=None, low=None, high=None, verdict="invalid", tightest_threshold=None,
            note=f"runs with seeds {diverged} diverged (NaN or infinite loss), so "
            "the claim cannot be judged on this experiment",
            **common,
        )

    if claim.uses_evidence and evidence is None:
        raise ValueError(
            f"claim {claim.id!r} needs the experiment's data; pass evidence= to evaluate_claim"
        )
    try:
        measured = claim.measure(evidence if claim.uses_evidence else runs)
        units = len(measured)
        if units < MIN_UNITS:
            raise ValueError(
                f"{units} {'runs' if claim.pairwise else 'values'} give no usable "
                f"bootstrap interval; the claim needs at least {MIN_UNITS}, so add runs"
            )
    except ValueError as error:
        # A statistic can be undefined on finite runs: the gradient-norm
        # series of a one-epoch experiment are constant and have no Pearson r.
        return ClaimResult(
            value=None, low=None, high=None, verdict="invalid", tightest_threshold=None,
            note=f"the {claim.statistic} is undefined on these runs: {error}",
            **common,
        )
    if claim.pairwise:
        interval = stats.bootstrap_pairwise_mean(
            measured, confidence=confidence, n_resamples=n_resamples, seed=seed
        )
    else:
        interval = stats.bootstrap_runs(
            measured, claim.reduce, confidence=confidence, n_resamples=n_resamples, seed=seed
        )
    return ClaimResult(
        value=interval.value,
        low=interval.low,
        high=interval.high,
        verdict=stats.verdict(interval, claim.threshold, claim.direction),
        tightest_threshold=stats.tightest_threshold(interval, claim.direction),
        n_resamples=interval.n_resamples,
        **common,
    )


def summarize_runs(runs: Sequence[Run]) -> dict:
    """Return the statistics reported beside the claims, without a verdict.

    Keys: accuracy mean and std, displacement cosine (mean pairwise cosine of
    final minus initial weights), normalized distance, final training loss
    mean, std, min and max, convergence epochs with their mean and std, and
    the original study's convex score. The convex score is None when a
    gradient-norm series is constant. Diverged runs are left out and counted.
    """
    healthy = [r for r in runs if not r.diverged]
    summary: dict = {"n_runs": len(runs), "n_diverged": len(runs) - len(healthy)}
    if len(healthy) < 2:
        return summary

    accuracy = np.array([r.final_accuracy for r in healthy])
    final_loss = np.array([r.final_train_loss for r in healthy])
    finals = np.stack([r.final_weights for r in healthy])
    displacements = finals.astype(np.float64) - np.stack([r.initial_weights for r in healthy])
    convergence = np.array([metrics.convergence_epoch(r.train_loss) for r in healthy])
    try:
        grad_correlation = metrics.mean_off_diagonal(
            metrics.pearson_matrix(np.stack([r.grad_norm for r in healthy]))
        )
    except ValueError:
        # Constant series, such as those of a one-epoch experiment, have no
        # Pearson r, and so the convex score is undefined.
        grad_correlation = None

    summary.update(
        accuracy_mean=float(accuracy.mean()),
        accuracy_std=float(accuracy.std()),
        displacement_cosine=metrics.mean_off_diagonal(metrics.cosine_matrix(displacements)),
        normalized_distance=metrics.mean_off_diagonal(
            metrics.normalized_distance_matrix(finals)
        ),
        final_train_loss_mean=float(final_loss.mean()),
        final_train_loss_std=float(final_loss.std()),
        final_train_loss_min=float(final_loss.min()),
        final_train_loss_max=float(final_loss.max()),
        convergence_epochs=convergence.tolist(),
        convergence_epoch_mean=float(convergence.mean()),
        convergence_epoch_std=float(convergence.std()),
        convex_score=None if grad_correlation is None else float(metrics.convex_score(
            accuracy.std(), final_loss.std(), convergence.std(), grad_correlation
        )),
    )
    return summary
