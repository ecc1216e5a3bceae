"""The pytest plugin: ``--landscape-*`` options, claim parametrization and the report.

Registered through the ``pytest11`` entry point, so installing the package is
enough. A test takes part in the claims machinery by carrying
``@pytest.mark.claim("<claim id>")`` and using the ``experiment`` fixture; the
plugin parametrizes it over the selected experiments and marks cases whose
non-supported verdict is known and accepted as ``xfail(strict=True)`` with the
matching exception, so any change of verdict fails the run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from landscape import experiment as registry
from landscape.baseline import DEFAULT_BASELINE, write_baseline
from landscape.cache import default_cache_dir
from landscape.claims import failure_for, get_claim
from landscape.data import default_data_root
from landscape.fixtures import SESSION_KEY, claims_session, evidence, judge_claim  # noqa: F401
from landscape.session import ClaimsSession, SessionOptions

logger = logging.getLogger(__name__)

EXPERIMENTS_ENV = "LANDSCAPE_EXPERIMENTS"
DEFAULT_EXPERIMENTS = "paper"
DEFAULT_REPORT_DIR = "reports"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("landscape", "landscape claim checks")
    group.addoption(
        "--landscape-experiments",
        metavar="NAMES",
        default=None,
        help="comma-separated experiments or groups to check claims on "
        f"(groups: {', '.join(registry.GROUPS)}, all); "
        f"default: ${EXPERIMENTS_ENV} or '{DEFAULT_EXPERIMENTS}'",
    )
    group.addoption(
        "--landscape-experiments-file",
        metavar="PATH",
        default=None,
        help="TOML file with extra [experiments.NAME] tables to register; default: none",
    )
    group.addoption(
        "--landscape-data-root",
        metavar="DIR",
        default=None,
        help="directory holding the datasets (MNIST in DIR/MNIST/raw); "
        "default: $LANDSCAPE_DATA_ROOT or ./data",
    )
    group.addoption(
        "--landscape-cache-dir",
        metavar="DIR",
        default=None,
        help="directory of the trained-run cache; default: $LANDSCAPE_CACHE_DIR, "
        "else $XDG_CACHE_HOME/landscape, else ~/.cache/landscape",
    )
    group.addoption(
        "--landscape-retrain",
        action="store_true",
        default=False,
        help="train every requested run again and replace its cache entry; default: off",
    )
    group.addoption(
        "--landscape-no-surfaces",
        action="store_true",
        default=False,
        help="leave loss surfaces and projected trajectories out of the report; "
        "default: they are drawn (about a minute per experiment on a CPU the first time)",
    )
    group.addoption(
        "--landscape-report-dir",
        metavar="DIR",
        default=None,
        help=f"where claims.json and index.html are written; default: ./{DEFAULT_REPORT_DIR}",
    )
    group.addoption(
        "--landscape-baseline",
        metavar="PATH",
        default=None,
        help="JSON file of accepted verdicts; a claim whose verdict differs fails "
        f"(default: {DEFAULT_BASELINE} under the pytest root folder, if it exists; "
        "'none' to compare with nothing)",
    )
    group.addoption(
        "--landscape-accept-baseline",
        action="store_true",
        default=False,
        help="write this run's results into the baseline file instead of comparing "
        "with it; entries of experiments not run are kept",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "claim(claim_id): the test judges this claim; it is parametrized over "
        "the selected experiments",
    )
    experiments_file = config.getoption("--landscape-experiments-file")
    try:
        if experiments_file:
            registry.load_experiments_toml(experiments_file)
        selection = (
            config.getoption("--landscape-experiments")
            or os.environ.get(EXPERIMENTS_ENV)
            or DEFAULT_EXPERIMENTS
        )
        experiments = registry.resolve(selection)
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None

    options = SessionOptions(
        experiments=experiments,
        data_root=Path(config.getoption("--landscape-data-root") or default_data_root()),
        cache_dir=Path(config.getoption("--landscape-cache-dir") or default_cache_dir()),
        report_dir=Path(config.getoption("--landscape-report-dir") or DEFAULT_REPORT_DIR),
        retrain=config.getoption("--landscape-retrain"),
        landscapes=not config.getoption("--landscape-no-surfaces"),
        baseline_path=_baseline_path(config),
        accept_baseline=config.getoption("--landscape-accept-baseline"),
    )
    config.stash[SESSION_KEY] = ClaimsSession(options)


def _baseline_path(config: pytest.Config) -> Path | None:
    option = config.getoption("--landscape-baseline")
    if option is not None:
        return None if option.lower() == "none" else Path(option)
    return Path(config.rootpath) / DEFAULT_BASELINE


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "experiment" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("claim")
    if marker is None or len(marker.args) != 1:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid} uses the 'experiment' fixture but has no "
            "@pytest.mark.claim('<claim id>') marker"
        )
    claim_id = marker.args[0]
    try:
        get_claim(claim_id)
    except ValueError as error:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: {error}") from None

    session = claims_session(metafunc.config)
    params = []
    for experiment in session.selected_experiments():
        marks = []
        expected = experiment.expected_verdicts.get(claim_id)
        if expected is not None:
            marks.append(
                pytest.mark.xfail(
                    strict=True,
                    raises=failure_for(expected.verdict),
                    reason=f"known {expected.verdict} on {experiment.name}: {expected.reason}",
                )
            )
        params.append(pytest.param(experiment, id=experiment.name, marks=marks))
    metafunc.parametrize("experiment", params, scope="session")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if SESSION_KEY not in config.stash:
        return
    state = config.stash[SESSION_KEY]
    if not state.results:
        return
    # NOTE: under pytest-xdist each worker would hold only its own results,
    # so only the controller (or a plain run) writes the report.
    if hasattr(config, "workerinput"):
        return
    from landscape import planes
    from landscape.report import write_report

    evidence = list(state.evidence.values())
    views = {}
    comparisons = []
    if state.options.landscapes:
        views = {
            item.experiment.name: planes.experiment_views(item, item.derived.get("geometry"))
            for item in evidence
        }
        comparisons = planes.comparisons(evidence)
    state.report_paths = write_report(
        state.options.report_dir, state.results, evidence,
        views=views, comparisons=comparisons, baseline=state.baseline,
    )
    if state.options.accept_baseline and state.options.baseline_path is not None:
        path = write_baseline(state.options.baseline_path, state.results, state.baseline)
        state.report_paths.append(path)
        logger.info("accepted %d results into the baseline %s", len(state.results), path)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if SESSION_KEY not in config.stash:
        return
    state = config.stash[SESSION_KEY]
    if not state.results:
        return
    write = terminalreporter.write_line
    terminalreporter.section("landscape claims")
    for result in state.results:
        if result.value is None:
            numbers = result.note
        else:
            numbers = (
                f"{result.value:.4g} [{result.low:.4g}, {result.high:.4g}] "
                f"{result.direction} {result.threshold:g}"
            )
        accepted = state.baseline.get((result.experiment, result.claim))
        if accepted is not None:
            value = accepted.get("value")
            numbers += f"  (baseline: {'' if value is None else f'{value:.4g} '}{accepted['verdict']})"
        write(f"{result.experiment:<14} {result.claim:<28} {result.verdict:<13} {numbers}")
    for path in state.report_paths:
        write(f"report written: {Path(path).resolve()}")
