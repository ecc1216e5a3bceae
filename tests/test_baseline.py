"""Tests of landscape.baseline: reading, writing and comparing accepted verdicts."""

from __future__ import annotations

import json

import pytest

from landscape.baseline import BaselineError, load_baseline, verdict_change, write_baseline
from landscape.claims import ClaimResult


def result(experiment="exp", claim="final_weight_cosine", verdict="supported", value=0.01):
    return ClaimResult(
        experiment=experiment, claim=claim, title="t", statistic="s", value=value,
        low=value - 0.005, high=value + 0.005, confidence=0.95, threshold=0.1,
        direction="<", verdict=verdict, tightest_threshold=value + 0.005, n_runs=8,
        seeds=[42], reference=None,
    )


def test_write_then_load_round_trips(tmp_path):
    path = write_baseline(tmp_path / "baseline.json", [result(), result(claim="other")], {})

    baseline = load_baseline(path)

    assert set(baseline) == {("exp", "final_weight_cosine"), ("exp", "other")}
    assert baseline[("exp", "other")]["verdict"] == "supported"
    assert not list(tmp_path.glob(".*tmp*"))


def test_write_keeps_entries_of_experiments_not_run(tmp_path):
    previous = {("old", "final_weight_cosine"): {"experiment": "old", "claim": "final_weight_cosine",
                                                 "verdict": "refuted"}}

    write_baseline(tmp_path / "baseline.json", [result()], previous)

    assert set(load_baseline(tmp_path / "baseline.json")) == {
        ("old", "final_weight_cosine"), ("exp", "final_weight_cosine"),
    }


def test_verdict_change_names_claim_experiment_and_both_verdicts():
    baseline = {("exp", "final_weight_cosine"): {"verdict": "supported", "value": 0.009}}

    message = verdict_change(result(verdict="inconclusive", value=0.1), baseline)

    assert message is not None
    assert "claim final_weight_cosine on experiment exp is now inconclusive" in message
    assert "baseline accepted supported at 0.009" in message
    assert "--landscape-accept-baseline" in message


def test_same_verdict_or_new_claim_is_no_change():
    baseline = {("exp", "final_weight_cosine"): {"verdict": "supported", "value": 0.5}}

    assert verdict_change(result(value=0.01), baseline) is None
    assert verdict_change(result(claim="new_claim", verdict="refuted"), baseline) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not readable JSON"),
        ('{"results": 3}', "has no 'results' list"),
        ('{"results": [{"experiment": "e"}]}', r"results\[0\] needs experiment, claim and verdict"),
    ],
)
def test_load_rejects_malformed_files(tmp_path, content, message):
    path = tmp_path / "baseline.json"
    path.write_text(content)

    with pytest.raises(BaselineError, match=message):
        load_baseline(path)


def test_load_reports_missing_file(tmp_path):
    with pytest.raises(BaselineError, match="baseline file .*missing.json not found"):
        load_baseline(tmp_path / "missing.json")


def test_written_file_is_plain_json(tmp_path):
    path = write_baseline(tmp_path / "b.json", [result()], {})

    document = json.loads(path.read_text())

    assert document["format_version"] == 1
    assert document["results"][0]["value"] == pytest.approx(0.01)
