"""Tests of claim evaluation, verdict exceptions and run summaries in landscape.claims.

The runs are built by hand (see ``_helpers.make_run``) so that each claim's
verdict is known in advance.
"""

import json
import re

import numpy as np
import pytest

from _helpers import make_run
from landscape import claims, metrics
from landscape.claims import (
    Claim,
    ClaimInconclusive,
    ClaimInvalid,
    ClaimNotSupported,
    ClaimRefuted,
    ClaimResult,
    evaluate_claim,
)

N_RUNS = 8
EPOCHS = 10
N_PARAMS = 4000
RESAMPLES = 2000
SEEDS = [run * 1000 + 42 for run in range(N_RUNS)]


def supporting_runs(*, diverged_run=None):
    """Runs on which all three built-in claims are supported."""
    rng = np.random.default_rng(0)
    curve = np.linspace(5.0, 1.0, EPOCHS)
    return [
        make_run(
            seed,
            grad_norm=curve + rng.normal(0, 0.01, EPOCHS),
            # Independent high-dimensional vectors are nearly orthogonal.
            final_weights=rng.normal(size=N_PARAMS),
            final_accuracy=0.97 + rng.normal(0, 0.002),
            diverged=run == diverged_run,
        )
        for run, seed in enumerate(SEEDS)
    ]


def refuting_runs():
    """Runs on which all three built-in claims are refuted."""
    rng = np.random.default_rng(1)
    shared = rng.normal(size=N_PARAMS)
    return [
        make_run(
            seed,
            grad_norm=rng.normal(3.0, 1.0, EPOCHS),
            final_weights=shared + 0.1 * rng.normal(size=N_PARAMS),
            final_accuracy=accuracy,
        )
        for seed, accuracy in zip(SEEDS, np.linspace(0.1, 0.9, N_RUNS))
    ]


def runs_with_accuracy_variance(variance):
    """Runs whose final accuracies have exactly the given population variance."""
    rng = np.random.default_rng(2)
    z = rng.normal(size=N_RUNS)
    z = (z - z.mean()) / z.std()
    accuracies = 0.9 + np.sqrt(variance) * z
    return [
        make_run(
            seed,
            grad_norm=np.linspace(5.0, 1.0, EPOCHS),
            final_weights=rng.normal(size=N_PARAMS),
            final_accuracy=accuracy,
        )
        for seed, accuracy in zip(SEEDS, accuracies)
    ]


# Claims measured on runs alone; the landscape claims need data and are
# tested in test_geometry.py.
RUN_CLAIMS = [claim_id for claim_id, claim in claims.CLAIMS.items() if not claim.uses_evidence]


def hand_result(verdict, **overrides):
    fields = dict(
        experiment="paper-adam",
        claim="final_weight_cosine",
        title="Final weight vectors are nearly orthogonal",
        statistic="mean pairwise cosine similarity of final weights",
        value=0.0123456789,
        low=0.00512345,
        high=0.0234567,
        confidence=0.95,
        threshold=0.1,
        direction="<",
        verdict=verdict,
        tightest_threshold=0.0234567,
        n_runs=8,
        seeds=SEEDS,
        n_resamples=10_000,
    )
    fields.update(overrides)
    return ClaimResult(**fields)


@pytest.mark.parametrize("claim_id", RUN_CLAIMS)
def test_evaluate_claim_supported(claim_id):
    result = evaluate_claim(claim_id, "hand-made", supporting_runs(), n_resamples=RESAMPLES)

    assert result.verdict == "supported", result.describe()
    assert result.low <= result.value <= result.high
    assert result.n_runs == N_RUNS
    assert result.seeds == SEEDS
    assert 0 < result.n_resamples <= RESAMPLES
    result.check()


@pytest.mark.parametrize("claim_id", RUN_CLAIMS)
def test_evaluate_claim_refuted_raises_claim_refuted(claim_id):
    result = evaluate_claim(claim_id, "hand-made", refuting_runs(), n_resamples=RESAMPLES)

    assert result.verdict == "refuted", result.describe()
    with pytest.raises(ClaimRefuted) as caught:
        result.check()
    assert type(caught.value) is ClaimRefuted


def test_evaluate_claim_inconclusive_raises_claim_inconclusive():
    threshold = claims.get_claim("accuracy_variance").threshold
    runs = runs_with_accuracy_variance(threshold)

    result = evaluate_claim("accuracy_variance", "hand-made", runs, n_resamples=RESAMPLES)

    assert result.value == pytest.approx(threshold)
    assert result.low < threshold < result.high
    assert result.verdict == "inconclusive"
    with pytest.raises(ClaimInconclusive) as caught:
        result.check()
    assert type(caught.value) is ClaimInconclusive


@pytest.mark.parametrize("claim_id", RUN_CLAIMS)
def test_evaluate_claim_with_diverged_run_is_invalid(claim_id):
    runs = supporting_runs(diverged_run=3)

    result = evaluate_claim(claim_id, "hand-made", runs, n_resamples=RESAMPLES)

    assert result.verdict == "invalid"
    assert (result.value, result.low, result.high, result.tightest_threshold) == (
        None, None, None, None,
    )
    assert f"runs with seeds [{SEEDS[3]}] diverged" in result.note
    with pytest.raises(ClaimInvalid, match=re.escape(f"seeds [{SEEDS[3]}] diverged")) as caught:
        result.check()
    assert type(caught.value) is ClaimInvalid


def test_evaluate_claim_tightest_threshold_is_interval_end():
    upper = evaluate_claim("final_weight_cosine", "e", supporting_runs(), n_resamples=RESAMPLES)
    lower = evaluate_claim("grad_norm_correlation", "e", supporting_runs(), n_resamples=RESAMPLES)

    assert upper.tightest_threshold == upper.high
    assert lower.tightest_threshold == lower.low


def test_evaluate_claim_pairwise_value_is_mean_over_pairs():
    runs = supporting_runs()
    expected = metrics.mean_off_diagonal(
        metrics.cosine_matrix(np.stack([run.final_weights for run in runs]))
    )

    result = evaluate_claim("final_weight_cosine", "e", runs, n_resamples=RESAMPLES)

    assert result.value == pytest.approx(expected, abs=1e-12)


def test_evaluate_claim_is_reproducible():
    runs = supporting_runs()

    first = evaluate_claim("grad_norm_correlation", "e", runs, n_resamples=RESAMPLES, seed=3)
    again = evaluate_claim("grad_norm_correlation", "e", runs, n_resamples=RESAMPLES, seed=3)

    assert first.to_dict() == again.to_dict()


def test_evaluate_claim_carries_reference_and_settings():
    result = evaluate_claim(
        "accuracy_variance", "paper-adam", supporting_runs(),
        reference=7.29e-6, confidence=0.9, n_resamples=RESAMPLES,
    )

    assert result.experiment == "paper-adam"
    assert result.claim == "accuracy_variance"
    assert result.reference == 7.29e-6
    assert result.confidence == 0.9
    assert result.threshold == 0.001
    assert result.direction == "<"


def test_evaluate_claim_accepts_custom_claim():
    claim = Claim(
        id="accuracy_mean",
        title="Mean accuracy is high",
        statistic="mean final test accuracy",
        threshold=0.95,
        direction=">",
        measure=lambda runs: np.array([run.final_accuracy for run in runs]),
        pairwise=False,
        reduce=lambda samples: samples.mean(axis=1),
    )

    result = evaluate_claim(claim, "e", supporting_runs(), n_resamples=RESAMPLES)

    assert result.claim == "accuracy_mean"
    assert result.value == pytest.approx(np.mean([r.final_accuracy for r in supporting_runs()]))
    assert result.verdict == "supported"


def test_claim_result_to_dict_is_json_serializable():
    valid = evaluate_claim("accuracy_variance", "e", supporting_runs(), n_resamples=RESAMPLES)
    invalid = evaluate_claim("accuracy_variance", "e", supporting_runs(diverged_run=0))

    for result in (valid, invalid):
        assert json.loads(json.dumps(result.to_dict()))["verdict"] == result.verdict


def test_describe_contains_numbers_and_verdict():
    text = hand_result("supported").describe()

    assert "paper-adam" in text
    assert "'final_weight_cosine'" in text
    assert "SUPPORTED" in text
    assert "point value 0.0123457" in text
    assert "95% bootstrap CI [0.00512345, 0.0234567]" in text
    assert "threshold 0.1" in text
    assert "(mean pairwise cosine similarity of final weights < 0.1)" in text
    assert "n=8 runs" in text
    assert str(SEEDS) in text
    assert "tightest threshold the interval supports: < 0.0234567" in text


def test_describe_invalid_result_gives_note():
    result = hand_result(
        "invalid", value=None, low=None, high=None, tightest_threshold=None,
        note="runs with seeds [3042] diverged",
    )

    text = result.describe()

    assert "is INVALID" in text
    assert "runs with seeds [3042] diverged" in text
    assert "n=8 runs" in text


@pytest.mark.parametrize(
    ("verdict", "exception"),
    [("refuted", ClaimRefuted), ("inconclusive", ClaimInconclusive), ("invalid", ClaimInvalid)],
)
def test_check_raises_matching_exception(verdict, exception):
    result = hand_result(verdict)

    with pytest.raises(exception) as caught:
        result.check()

    assert type(caught.value) is exception
    assert str(caught.value) == result.describe()


def test_check_passes_supported_result():
    assert hand_result("supported").check() is None


@pytest.mark.parametrize("exception", [ClaimRefuted, ClaimInconclusive, ClaimInvalid])
def test_claim_failures_are_assertion_errors(exception):
    assert issubclass(exception, ClaimNotSupported)
    assert issubclass(exception, AssertionError)


@pytest.mark.parametrize("verdict", ["supported", "unknown"])
def test_failure_for_rejects_verdict_without_failure(verdict):
    with pytest.raises(ValueError, match=re.escape(f"verdict {verdict!r} has no failure")):
        claims.failure_for(verdict)


def test_get_claim_rejects_unknown_id():
    message = "unknown claim 'loss_convexity'; known claims: grad_norm_correlation, "

    with pytest.raises(ValueError, match=re.escape(message)):
        claims.get_claim("loss_convexity")


def test_claim_rejects_unknown_direction():
    with pytest.raises(ValueError, match=re.escape("claim 'c': direction must be '>' or '<'")):
        Claim("c", "t", "s", 0.5, "=", measure=lambda runs: np.zeros(2), pairwise=True)


def test_claim_rejects_per_run_claim_without_reduce():
    with pytest.raises(ValueError, match="claim 'c': a per-run claim needs a reduce function"):
        Claim("c", "t", "s", 0.5, ">", measure=lambda runs: np.zeros(2), pairwise=False)


def test_summarize_runs_reports_statistics():
    runs = supporting_runs()
    accuracies = np.array([run.final_accuracy for run in runs])

    summary = claims.summarize_runs(runs)

    assert summary["n_runs"] == N_RUNS
    assert summary["n_diverged"] == 0
    assert summary["accuracy_mean"] == pytest.approx(accuracies.mean())
    assert summary["accuracy_std"] == pytest.approx(accuracies.std())
    assert summary["convergence_epochs"] == [
        metrics.convergence_epoch(run.train_loss) for run in runs
    ]
    assert abs(summary["displacement_cosine"]) < 0.1
    assert 0 <= summary["normalized_distance"] <= 1
    assert summary["final_train_loss_min"] <= summary["final_train_loss_mean"]
    assert summary["final_train_loss_mean"] <= summary["final_train_loss_max"]
    json.dumps(summary)


def test_summarize_runs_leaves_out_diverged_runs():
    runs = supporting_runs(diverged_run=2)
    healthy = [run for index, run in enumerate(runs) if index != 2]

    summary = claims.summarize_runs(runs)

    assert summary["n_runs"] == N_RUNS
    assert summary["n_diverged"] == 1
    assert summary["accuracy_mean"] == pytest.approx(np.mean([r.final_accuracy for r in healthy]))


def test_summarize_runs_one_healthy_run_gives_counts():
    runs = supporting_runs(diverged_run=0)[:2]

    assert claims.summarize_runs(runs) == {"n_runs": 2, "n_diverged": 1}


@pytest.mark.parametrize("claim_id", RUN_CLAIMS)
def test_evaluate_claim_two_runs_is_invalid(claim_id):
    runs = supporting_runs()[:2]

    result = evaluate_claim(claim_id, "hand-made", runs, n_resamples=RESAMPLES)

    assert result.verdict == "invalid"
    assert result.value is None
    assert f"at least {claims.MIN_UNITS}" in result.note


def test_grad_norm_correlation_two_epochs_is_invalid():
    runs = [
        make_run(seed, grad_norm=np.array([2.0, 1.0 + 0.1 * k]),
                 final_weights=np.random.default_rng(k).normal(size=N_PARAMS),
                 final_accuracy=0.9)
        for k, seed in enumerate(SEEDS)
    ]

    result = evaluate_claim("grad_norm_correlation", "hand-made", runs, n_resamples=RESAMPLES)

    assert result.verdict == "invalid"
    assert "at least 3 are needed" in result.note
