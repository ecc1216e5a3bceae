"""End-to-end tests of the pytest plugin: each runs pytest in a subprocess on a claims file.

The claims file is the project's own ``claims/test_convex_claims.py``; the
experiments are tiny models on scikit-learn's digits, defined in a TOML file
written per test. Tests other than the cache test share one run cache, so the
tiny runs are trained once per module, by the ``tiny_verdicts`` fixture.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from landscape.cache import RunCache
from landscape.claims import CLAIMS as ALL_CLAIMS
from landscape.claims import evaluate_claim, failure_for
from landscape.data import load_digits
from landscape.experiment import experiment_from_mapping

pytest_plugins = ["pytester"]

CLAIMS_FILE = Path(__file__).resolve().parents[1] / "claims" / "test_convex_claims.py"
# The claims that test_convex_claims.py judges: those measured on runs alone.
CLAIMS = {claim_id: claim for claim_id, claim in ALL_CLAIMS.items() if not claim.uses_evidence}

TINY = """
[experiments.tiny]
dataset = "digits"
widths = [64, 16, 10]
optimizer = "adam"
lr = 0.01
batch_size = 128
epochs = 3
runs = 3
"""

# Plain SGD at a learning rate of 1e4 makes some runs overflow within the
# first epochs, so every claim on this experiment is invalid.
DIVERGING = """
[experiments.tiny-diverging]
dataset = "digits"
widths = [64, 16, 10]
optimizer = "sgd"
lr = 1e4
batch_size = 128
epochs = 3
runs = 3

[experiments.tiny-diverging.expected_verdicts]
grad_norm_correlation = { verdict = "invalid", reason = "SGD at lr 1e4 diverges" }
final_weight_cosine = { verdict = "invalid", reason = "SGD at lr 1e4 diverges" }
accuracy_variance = { verdict = "invalid", reason = "SGD at lr 1e4 diverges" }
"""

TEST_NAMES = {
    "grad_norm_correlation": "test_grad_norm_trajectories_correlate",
    "final_weight_cosine": "test_final_weights_nearly_orthogonal",
    "accuracy_variance": "test_accuracy_variance_small",
}

SUBPROCESS_TIMEOUT = 600  # seconds, far above what a run on the tiny experiments needs


def tiny_toml(expected_verdicts: dict[str, str]) -> str:
    """Return the tiny experiment with an expected-verdict table for each given claim."""
    tables = [
        f'[experiments.tiny.expected_verdicts.{claim_id}]\n'
        f'verdict = "{verdict}"\n'
        f'reason = "declared {verdict} by the test"\n'
        for claim_id, verdict in expected_verdicts.items()
    ]
    return TINY + "\n" + "\n".join(tables)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("landscape-cache")


@pytest.fixture(scope="module")
def tiny_verdicts(shared_cache) -> dict[str, str]:
    """Train the tiny runs into the shared cache in this process and judge every claim.

    Verdicts on a model this small can differ between machines, so the tests
    derive their expected outcomes from these instead of hard-coding them.
    The subprocesses then find the runs in the cache.
    """
    table = tomllib.loads(TINY)["experiments"]["tiny"]
    experiment = experiment_from_mapping("tiny", table)
    runs = RunCache(shared_cache).get_all(experiment, load_digits())
    return {
        claim_id: evaluate_claim(claim_id, experiment.name, runs).verdict for claim_id in CLAIMS
    }


def run_claims(
    pytester: pytest.Pytester,
    experiments_toml: str,
    selection: str,
    cache_dir: Path,
    *extra_args: str,
) -> tuple[pytest.RunResult, Path]:
    """Run the claims file in a pytest subprocess; return the result and the report directory."""
    pytester.makefile(".toml", experiments=experiments_toml)
    pytester.makepyfile(test_convex_claims=CLAIMS_FILE.read_text())
    report_dir = pytester.path / "report"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider",
        "--landscape-experiments-file", str(pytester.path / "experiments.toml"),
        f"--landscape-experiments={selection}",
        "--landscape-cache-dir", str(cache_dir),
        "--landscape-report-dir", str(report_dir),
        *extra_args,
        timeout=SUBPROCESS_TIMEOUT,
    )
    return result, report_dir


def read_claims(report_dir: Path) -> dict:
    return json.loads((report_dir / "claims.json").read_text())


def cache_entries(cache_dir: Path) -> dict[str, int]:
    """Return each cached run file with its modification time in nanoseconds."""
    return {path.name: path.stat().st_mtime_ns for path in (cache_dir / "runs").glob("*.npz")}


def test_plugin_judges_claims_and_writes_report(pytester, shared_cache, tiny_verdicts):
    result, report_dir = run_claims(pytester, TINY, "tiny", shared_cache, "-v")

    supported = sum(verdict == "supported" for verdict in tiny_verdicts.values())
    result.assert_outcomes(passed=supported, failed=len(CLAIMS) - supported)
    outcomes = {
        claim_id: "PASSED" if verdict == "supported" else "FAILED"
        for claim_id, verdict in tiny_verdicts.items()
    }
    result.stdout.fnmatch_lines([
        f"*test_grad_norm_trajectories_correlate[[]tiny[]] {outcomes['grad_norm_correlation']}*",
        f"*test_final_weights_nearly_orthogonal[[]tiny[]] {outcomes['final_weight_cosine']}*",
        f"*test_accuracy_variance_small[[]tiny[]] {outcomes['accuracy_variance']}*",
    ])
    result.stdout.fnmatch_lines(
        ["*landscape claims*"]
        + [f"tiny*{claim_id}*{verdict}*" for claim_id, verdict in tiny_verdicts.items()]
        + [f"report written: {report_dir.resolve() / name}" for name in ("claims.json", "index.html")]
    )

    document = read_claims(report_dir)
    assert [r["claim"] for r in document["results"]] == list(CLAIMS)
    assert {r["experiment"] for r in document["results"]} == {"tiny"}
    assert {r["claim"]: r["verdict"] for r in document["results"]} == tiny_verdicts
    assert all(r["n_runs"] == 3 for r in document["results"])
    assert document["experiments"]["tiny"]["config"]["widths"] == [64, 16, 10]
    html = (report_dir / "index.html").read_text(encoding="utf-8")
    assert html.count("<tr class=") == len(CLAIMS)
    for claim_id, verdict in tiny_verdicts.items():
        assert claim_id in html
        assert f'<span class="verdict {verdict}">{verdict}</span>' in html


def test_plugin_rejects_unknown_experiment(pytester, shared_cache):
    result, report_dir = run_claims(pytester, TINY, "tiny,no-such-experiment", shared_cache)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown experiment 'no-such-experiment'*"])
    assert not report_dir.exists()


def test_plugin_fails_when_expected_verdict_differs(pytester, shared_cache, tiny_verdicts):
    # Declare a wrong verdict for every claim: "refuted" where the claim is
    # supported (a strict xfail that passes), and another non-supported
    # verdict where it is not (an xfail whose raises= does not match).
    wrong = {
        claim_id: "refuted" if verdict == "supported" else next(
            other for other in ("refuted", "inconclusive") if other != verdict
        )
        for claim_id, verdict in tiny_verdicts.items()
    }
    result, report_dir = run_claims(pytester, tiny_toml(wrong), "tiny", shared_cache, "-rA", "-vv")

    result.assert_outcomes(failed=len(CLAIMS))
    for claim_id, verdict in tiny_verdicts.items():
        test_name = TEST_NAMES[claim_id]
        if verdict == "supported":
            expected_line = f"FAILED *{test_name}[[]tiny[]]*XPASS(strict)*known refuted on tiny*"
        else:
            failure = failure_for(verdict).__name__
            expected_line = f"FAILED *{test_name}[[]tiny[]] - landscape.claims.{failure}*"
        result.stdout.fnmatch_lines([expected_line])
    verdicts = {r["claim"]: r["verdict"] for r in read_claims(report_dir)["results"]}
    assert verdicts == tiny_verdicts


def test_plugin_xfails_matching_expected_verdicts(pytester, shared_cache, tiny_verdicts):
    matching = {
        claim_id: verdict for claim_id, verdict in tiny_verdicts.items() if verdict != "supported"
    }
    toml = tiny_toml(matching) + DIVERGING
    result, report_dir = run_claims(pytester, toml, "tiny,tiny-diverging", shared_cache, "-rA", "-vv")

    result.assert_outcomes(passed=len(CLAIMS) - len(matching), xfailed=len(CLAIMS) + len(matching))
    result.stdout.fnmatch_lines(["XFAIL *[[]tiny-diverging[]]*known invalid on tiny-diverging*"])
    document = read_claims(report_dir)
    diverging = [r for r in document["results"] if r["experiment"] == "tiny-diverging"]
    assert [r["verdict"] for r in diverging] == ["invalid"] * len(CLAIMS)
    assert document["experiments"]["tiny-diverging"]["summary"]["n_diverged"] >= 1
    html = (report_dir / "index.html").read_text(encoding="utf-8")
    assert html.count('<tr class="invalid">') == len(CLAIMS)
    assert "Expected invalid: SGD at lr 1e4 diverges" in html


def test_plugin_second_run_hits_cache(pytester, tmp_path):
    cache_dir = tmp_path / "cache"
    log_options = ("-o", "log_cli=true", "--log-cli-level=INFO")

    first, _ = run_claims(pytester, TINY, "tiny", cache_dir, *log_options)
    outcomes = first.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == len(CLAIMS)
    first.stdout.fnmatch_lines(["*training tiny runs 1-3 of 3 together*"])
    trained = cache_entries(cache_dir)
    assert len(trained) == 3
    files = sorted(path.name for path in (cache_dir / "runs").iterdir())
    first_results = read_claims(pytester.path / "report")["results"]

    second, report_dir = run_claims(pytester, TINY, "tiny", cache_dir, *log_options)
    assert second.parseoutcomes() == outcomes
    second.stdout.no_fnmatch_line("*training tiny*")
    assert cache_entries(cache_dir) == trained
    assert sorted(path.name for path in (cache_dir / "runs").iterdir()) == files
    document = read_claims(report_dir)
    assert document["results"] == first_results
    assert {run["cache"] for run in document["experiments"]["tiny"]["runs"]} == {"hit"}


def test_changed_baseline_verdict_fails_naming_claim(pytester, shared_cache, tiny_verdicts):
    toml = tiny_toml({c: v for c, v in tiny_verdicts.items() if v != "supported"})
    baseline = pytester.path / "accepted.json"
    options = ("--landscape-baseline", str(baseline))

    accepted, _ = run_claims(pytester, toml, "tiny", shared_cache, *options,
                             "--landscape-accept-baseline")
    document = json.loads(baseline.read_text())
    again, _ = run_claims(pytester, toml, "tiny", shared_cache, *options)
    entry = next(e for e in document["results"] if e["claim"] == "final_weight_cosine")
    actual = entry["verdict"]
    edited = "refuted" if actual != "refuted" else "supported"
    entry["verdict"] = edited
    baseline.write_text(json.dumps(document))
    changed, report_dir = run_claims(pytester, toml, "tiny", shared_cache, *options)

    assert accepted.ret == 0
    assert {(e["experiment"], e["claim"]) for e in document["results"]} == {
        ("tiny", claim_id) for claim_id in CLAIMS
    }
    assert again.ret == 0
    again.stdout.fnmatch_lines([f"tiny*final_weight_cosine*(baseline: * {actual})"])
    assert changed.ret == 1
    changed.stdout.fnmatch_lines([
        f"*claim final_weight_cosine on experiment tiny is now {actual}*baseline accepted "
        f"{edited}*--landscape-accept-baseline*",
    ])
    outcomes = changed.parseoutcomes()
    assert outcomes.get("failed") == 1
    results = {r["claim"]: r for r in read_claims(report_dir)["results"]}
    assert results["final_weight_cosine"]["baseline"]["verdict"] == edited
    assert results["accuracy_variance"]["baseline"]["verdict"] == tiny_verdicts["accuracy_variance"]
