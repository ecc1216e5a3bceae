"""Fixtures that claim tests use: the experiment's evidence and a result recorder."""

from __future__ import annotations

from typing import Callable

import pytest

from landscape.baseline import verdict_change
from landscape.claims import ClaimResult, evaluate_claim
from landscape.evidence import Evidence
from landscape.experiment import Experiment
from landscape.session import ClaimsSession

SESSION_KEY = pytest.StashKey[ClaimsSession]()


def claims_session(config: pytest.Config) -> ClaimsSession:
    """Return the :class:`ClaimsSession` of this pytest run."""
    return config.stash[SESSION_KEY]


@pytest.fixture(scope="session")
def evidence(request: pytest.FixtureRequest, experiment: Experiment) -> Evidence:
    """The runs of the parametrized ``experiment``, trained or loaded from the cache."""
    return claims_session(request.config).evidence_for(experiment)


@pytest.fixture
def judge_claim(
    request: pytest.FixtureRequest, evidence: Evidence
) -> Callable[[], ClaimResult]:
    """Evaluate the test's claim on the test's experiment, record it, and check it.

    The claim is the one named by the test's ``@pytest.mark.claim`` marker.
    The result goes into ``claims.json`` and the report whatever the verdict;
    the call then fails the test if the verdict differs from the session's
    baseline (see :mod:`landscape.baseline`), and otherwise raises
    :class:`~landscape.claims.ClaimNotSupported` unless the claim is supported.
    """
    claim_id = request.node.get_closest_marker("claim").args[0]

    def judge() -> ClaimResult:
        experiment = evidence.experiment
        result = evaluate_claim(
            claim_id,
            experiment.name,
            evidence.runs,
            reference=experiment.reference.get(claim_id),
            evidence=evidence,
        )
        session = claims_session(request.config)
        session.record(result)
        change = None if session.options.accept_baseline else verdict_change(result, session.baseline)
        if change is not None:
            pytest.fail(change, pytrace=False)
        result.check()
        return result

    return judge
