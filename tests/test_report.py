"""Tests of the claims report (claims.json and index.html) and of the figures in it.

The evidence comes from short real training runs on scikit-learn's digits:
one healthy Adam experiment and one SGD experiment whose learning rate makes
every run diverge.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch.nn import functional as F

from landscape import figures
from landscape.claims import CLAIMS, ClaimResult, evaluate_claim, summarize_runs
from landscape.data import load_digits
from landscape.evidence import Evidence
from landscape.experiment import Experiment
from landscape.report import format_number, format_plain, write_atomic, write_report
from landscape.train import train_run

HEALTHY_REFERENCE = {
    "grad_norm_correlation": 0.9672,
    "accuracy_mean": 0.9778,
    "normalized_distance": 0.7039,
}
RESULT_FIELDS = {
    "experiment", "claim", "title", "statistic", "value", "low", "high", "confidence",
    "threshold", "direction", "verdict", "tightest_threshold", "reference", "n_runs",
    "seeds", "note",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _reject_constant(name: str) -> None:
    raise ValueError(f"claims.json contains the non-standard constant {name}")


def _train_evidence(experiment: Experiment, dataset) -> Evidence:
    runs = [train_run(experiment, run, dataset) for run in range(experiment.runs)]
    return Evidence(experiment=experiment, runs=runs, dataset=dataset,
                    summary=summarize_runs(runs))


def _judge_all(evidence: Evidence) -> list[ClaimResult]:
    experiment = evidence.experiment
    return [
        evaluate_claim(claim_id, experiment.name, evidence.runs,
                       reference=experiment.reference.get(claim_id), evidence=evidence)
        for claim_id in CLAIMS
    ]


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def healthy(digits) -> Evidence:
    experiment = Experiment(
        name="digits-adam", dataset="digits", widths=(64, 32, 10), optimizer="adam",
        lr=1e-2, batch_size=64, epochs=4, runs=3, reference=HEALTHY_REFERENCE,
        description="Adam on digits <for tests> & nothing else",
    )
    return _train_evidence(experiment, digits)


@pytest.fixture(scope="module")
def diverged(digits) -> Evidence:
    # A learning rate of 1e4 makes plain SGD overflow within three epochs.
    experiment = Experiment(
        name="digits-sgd-diverging", dataset="digits", widths=(64, 32, 10),
        optimizer="sgd", lr=1e4, batch_size=64, epochs=3, runs=2,
    )
    evidence = _train_evidence(experiment, digits)
    assert all(run.diverged for run in evidence.runs), "the SGD runs were meant to diverge"
    return evidence


@pytest.fixture(scope="module")
def results(healthy, diverged) -> list[ClaimResult]:
    return _judge_all(healthy) + _judge_all(diverged)


@pytest.fixture(scope="module")
def report(tmp_path_factory, healthy, diverged, results):
    report_dir = tmp_path_factory.mktemp("report") / "nested" / "reports"
    paths = write_report(report_dir, results, [healthy, diverged])
    return report_dir, paths


@pytest.fixture(scope="module")
def claims_json(report) -> dict:
    report_dir, _ = report
    return json.loads((report_dir / "claims.json").read_text(), parse_constant=_reject_constant)


@pytest.fixture(scope="module")
def html(report) -> str:
    report_dir, _ = report
    return (report_dir / "index.html").read_text(encoding="utf-8")


def _html_rows(html: str) -> list[tuple[str, str]]:
    """Return (verdict class, row HTML) for every claim row of the claims table."""
    verdicts = "supported|refuted|inconclusive|invalid"
    return re.findall(rf'<tr class="({verdicts})">(.*?)</tr>', html, flags=re.DOTALL)


# --- claims.json -------------------------------------------------------------


def test_write_report_creates_directory_and_returns_paths(report):
    report_dir, paths = report
    assert paths == [report_dir / "claims.json", report_dir / "index.html"]
    assert all(path.is_file() for path in paths)
    assert sorted(p.name for p in report_dir.iterdir()) == ["claims.json", "index.html"]


def test_claims_json_lists_every_result_with_its_fields(claims_json, results):
    written = claims_json["results"]
    assert len(written) == len(results)
    by_key = {(r["experiment"], r["claim"]): r for r in written}
    for result in results:
        entry = by_key[(result.experiment, result.claim)]
        assert RESULT_FIELDS <= set(entry), f"missing {RESULT_FIELDS - set(entry)}"
        for name in RESULT_FIELDS:
            assert entry[name] == getattr(result, name), f"{result.claim}: field {name}"


def test_claims_json_keeps_values_and_intervals(claims_json, healthy):
    entries = {r["claim"]: r for r in claims_json["results"] if r["experiment"] == "digits-adam"}
    assert set(entries) == set(CLAIMS)
    for entry in entries.values():
        assert entry["verdict"] in ("supported", "refuted", "inconclusive")
        assert entry["low"] <= entry["high"]
        assert entry["n_runs"] == 3
        assert entry["seeds"] == [42, 1042, 2042]
        assert entry["confidence"] == 0.95
    assert entries["grad_norm_correlation"]["reference"] == 0.9672
    assert entries["final_weight_cosine"]["reference"] is None
    assert entries["grad_norm_correlation"]["tightest_threshold"] == entries["grad_norm_correlation"]["low"]
    assert entries["accuracy_variance"]["tightest_threshold"] == entries["accuracy_variance"]["high"]


def test_claims_json_records_experiments(claims_json, healthy, diverged):
    experiments = claims_json["experiments"]
    assert list(experiments) == ["digits-adam", "digits-sgd-diverging"]
    record = experiments["digits-adam"]
    assert record["config"] == healthy.experiment.to_dict()
    assert record["dataset"] == "digits"
    assert record["data_checksum"] == healthy.dataset.checksum
    summary = dict(record["summary"])
    expected = dict(healthy.summary)
    assert summary.pop("convergence_epochs") == expected.pop("convergence_epochs")
    assert summary == pytest.approx(expected)
    assert [run["seed"] for run in record["runs"]] == [42, 1042, 2042]
    assert record["runs"][0]["final_test_accuracy"] == healthy.runs[0].final_accuracy


def test_claims_json_records_provenance(claims_json):
    origin = claims_json["provenance"]
    assert claims_json["format_version"] == 1
    assert {"created", "git_commit", "packages", "machine"} <= set(origin)
    assert origin["packages"]["numpy"] == np.__version__
    assert origin["packages"]["landscape"] is not None
    assert origin["machine"]["cpu_count"] is not None


def test_claims_json_marks_diverged_experiment_invalid(claims_json):
    entries = [r for r in claims_json["results"] if r["experiment"] == "digits-sgd-diverging"]
    assert len(entries) == len(CLAIMS)
    for entry in entries:
        assert entry["verdict"] == "invalid"
        assert entry["value"] is None
        assert entry["low"] is None
        assert entry["high"] is None
        assert "diverged" in entry["note"]
    record = claims_json["experiments"]["digits-sgd-diverging"]
    assert record["summary"] == {"n_runs": 2, "n_diverged": 2}
    assert all(run["diverged"] for run in record["runs"])
    assert all(run["final_test_accuracy"] is None for run in record["runs"])


def test_claims_json_writes_non_finite_numbers_as_null(tmp_path):
    result = ClaimResult(
        experiment="synthetic", claim="grad_norm_correlation", title="t", statistic="s",
        value=math.nan, low=-math.inf, high=math.inf, confidence=0.95, threshold=0.5,
        direction=">", verdict="inconclusive", tightest_threshold=np.float32(0.25),
        n_runs=2, seeds=[1, 2], extra={"array": np.array([1.5, np.nan])},
    )
    json_path, _ = write_report(tmp_path, [result], [])
    entry = json.loads(json_path.read_text(), parse_constant=_reject_constant)["results"][0]
    assert entry["value"] is None
    assert entry["low"] is None
    assert entry["high"] is None
    assert entry["tightest_threshold"] == 0.25
    assert entry["extra"] == {"array": [1.5, None]}


def test_report_marks_claim_with_undefined_statistic_invalid(tmp_path, healthy):
    # Cut the runs to their first epoch: a one-point gradient-norm series is
    # constant, so its Pearson r and the convex score are undefined.
    experiment = dataclasses.replace(healthy.experiment, name="digits-adam-1-epoch", epochs=1)
    runs = [
        dataclasses.replace(
            run, experiment=experiment.name, snapshots=run.snapshots[:2],
            train_loss=run.train_loss[:1], grad_norm=run.grad_norm[:1],
            test_loss=run.test_loss[:2], test_accuracy=run.test_accuracy[:2],
        )
        for run in healthy.runs
    ]
    evidence = Evidence(experiment=experiment, runs=runs, dataset=healthy.dataset,
                        summary=summarize_runs(runs))

    json_path, html_path = write_report(tmp_path, _judge_all(evidence), [evidence])

    document = json.loads(json_path.read_text(), parse_constant=_reject_constant)
    entries = {r["claim"]: r for r in document["results"]}
    assert entries["grad_norm_correlation"]["verdict"] == "invalid"
    assert "undefined" in entries["grad_norm_correlation"]["note"]
    assert entries["final_weight_cosine"]["verdict"] != "invalid"
    assert document["experiments"][experiment.name]["summary"]["convex_score"] is None
    html = html_path.read_text(encoding="utf-8")
    # Two snapshots are too few for a trajectory PCA, so the geometry claims,
    # which share one computation, are invalid as well.
    geometry_claims = [claim_id for claim_id, claim in CLAIMS.items() if claim.uses_evidence]
    assert all(entries[claim_id]["verdict"] == "invalid" for claim_id in geometry_claims)
    assert html.count('<tr class="invalid">') == 1 + len(geometry_claims)
    assert "Pearson r of 2 points is always +1 or -1" in html


# --- index.html ----------------------------------------------------------------


def test_html_rows_show_each_verdict(html, results):
    rows = _html_rows(html)
    assert len(rows) == len(results)
    for (verdict, row), result in zip(rows, results):
        assert verdict == result.verdict
        assert result.experiment in row
        assert result.claim in row
        assert f'<span class="verdict {result.verdict}">{result.verdict}</span>' in row


def test_html_shows_our_value_beside_the_groups(html, results):
    rows = dict((re.search(r'claim-id">(\w+)<', row).group(1), row)
                for verdict, row in _html_rows(html) if verdict != "invalid")
    grad_norm = next(r for r in results if r.claim == "grad_norm_correlation")
    row = rows["grad_norm_correlation"]
    assert format_number(grad_norm.value) in row
    assert "0.9672" in row
    assert f"[{format_number(grad_norm.low)}, {format_number(grad_norm.high)}]" in row
    assert "&gt; 0.96" in row
    assert f"&gt; {format_number(grad_norm.tightest_threshold)}" in row


def test_html_invalid_rows_give_the_reason(html):
    invalid = [row for verdict, row in _html_rows(html) if verdict == "invalid"]
    assert len(invalid) == len(CLAIMS)
    for row in invalid:
        assert "diverged" in row
        assert "digits-sgd-diverging" in row


def test_html_shows_summary_statistics(html, healthy):
    summary = healthy.summary
    for label in ("displacement cosine", "normalized distance", "final training loss",
                  "convergence epoch", "convex score", "final test accuracy"):
        assert label in html
    assert format_number(summary["displacement_cosine"]) in html
    assert format_number(summary["normalized_distance"]) in html
    assert "0.7039" in html
    assert format_number(summary["convex_score"]) in html
    assert "97.78%" in html
    assert "2 of 2 runs diverged" in " ".join(html.split())


def test_html_has_no_external_references(html):
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.IGNORECASE)
    assert "http://" not in html
    assert "https://" not in html
    assert "<link" not in html
    assert "<script" not in html


def test_html_embeds_figures_as_png_data_uris(html):
    sources = re.findall(r'<img src="([^"]*)"', html)
    # Seven figures for the healthy experiment; none for the one where every run diverged.
    assert len(sources) == 7
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        png = base64.b64decode(source.split(",", 1)[1], validate=True)
        assert png.startswith(PNG_MAGIC)


def test_html_escapes_experiment_text(html):
    assert "Adam on digits &lt;for tests&gt; &amp; nothing else" in html
    assert "<for tests>" not in html


# --- writing ---------------------------------------------------------------------


def test_write_atomic_leaves_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "index.html"
    path.write_text("old report")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(path, "a lone surrogate \ud800 cannot be encoded")
    assert path.read_text() == "old report"
    assert [p.name for p in tmp_path.iterdir()] == ["index.html"]


def test_write_report_replaces_existing_report(tmp_path, results):
    (tmp_path / "claims.json").write_text("stale")
    (tmp_path / "index.html").write_text("stale")
    diverged_only = [r for r in results if r.verdict == "invalid"]
    json_path, html_path = write_report(tmp_path, diverged_only, [])
    assert len(json.loads(json_path.read_text())["results"]) == len(diverged_only)
    assert "stale" not in html_path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["claims.json", "index.html"]


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "—"), (0.0, "0"), (0.971318, "0.9713"), (0.70398, "0.7040"),
     (1.54321e-05, "1.543e-05"), (0.001, "0.001000"), (12345.6, "1.235e+04"),
     (29.0, "29.00"), (3, "3"), (np.int64(3), "3"), (math.nan, "nan")],
)
def test_format_number_keeps_significant_digits(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "—"), (0.96, "0.96"), (0.001, "0.001"), (0.0027**2, "7.29e-06"), (1e4, "10000")],
)
def test_format_plain_writes_numbers_as_given(value, text):
    assert format_plain(value) == text


# --- figures -----------------------------------------------------------------------


ALL_RUN_FIGURES = (
    figures.training_curves,
    figures.loss_trajectories,
    figures.grad_norm_trajectories,
    figures.final_accuracy_distribution,
    figures.weight_cosine_heatmap,
    figures.grad_norm_correlation_heatmap,
)


def test_figures_leave_pyplot_untouched(healthy):
    before = plt.get_fignums()
    rendered = [make(healthy.runs) for make in ALL_RUN_FIGURES]
    rendered.append(figures.extreme_test_images(healthy))
    assert all(isinstance(figure, Figure) for figure in rendered)
    assert plt.get_fignums() == before


@pytest.mark.parametrize("make", ALL_RUN_FIGURES, ids=lambda make: make.__name__)
def test_figure_skips_diverged_run_and_says_so(make, healthy, diverged):
    runs = healthy.runs + diverged.runs[:1]
    figure = make(runs)
    title = figure.get_suptitle()
    assert "1 diverged run skipped" in title
    assert str(diverged.runs[0].seed) in title
    figures.figure_to_data_uri(figure)


def test_per_epoch_figures_omit_diverged_lines(healthy, diverged):
    runs = healthy.runs + diverged.runs
    for make in (figures.loss_trajectories, figures.grad_norm_trajectories):
        (axes,) = make(runs).axes
        assert len(axes.get_lines()) == len(healthy.runs)
        assert axes.get_yscale() == "log"


def test_heatmaps_show_pairwise_matrices(healthy):
    from landscape import metrics

    finals = np.stack([run.final_weights for run in healthy.runs])
    cosine = figures.weight_cosine_heatmap(healthy.runs).axes[0].get_images()[0].get_array()
    np.testing.assert_allclose(cosine, metrics.cosine_matrix(finals))

    series = np.stack([run.grad_norm for run in healthy.runs])
    pearson = figures.grad_norm_correlation_heatmap(healthy.runs).axes[0]
    np.testing.assert_allclose(pearson.get_images()[0].get_array(), np.corrcoef(series),
                               atol=1e-12)


@pytest.mark.parametrize("make", ALL_RUN_FIGURES, ids=lambda make: make.__name__)
def test_figure_of_only_diverged_runs_renders_a_message(make, diverged):
    figure = make(diverged.runs)
    assert "2 diverged runs skipped" in figure.get_suptitle()
    assert figures.figure_to_data_uri(figure).startswith("data:image/png;base64,")


def test_figure_to_data_uri_encodes_png(healthy):
    uri = figures.figure_to_data_uri(figures.loss_trajectories(healthy.runs))
    prefix, payload = uri.split(",", 1)
    assert prefix == "data:image/png;base64"
    assert base64.b64decode(payload).startswith(PNG_MAGIC)


def test_per_sample_cross_entropy_matches_torch():
    generator = torch.Generator().manual_seed(0)
    logits = 5 * torch.randn(1000, 10, generator=generator)
    target = torch.randint(0, 10, (1000,), generator=generator)
    expected = F.cross_entropy(logits.to(torch.float64), target, reduction="none")
    torch.testing.assert_close(figures.per_sample_cross_entropy(logits, target), expected,
                               rtol=1e-12, atol=1e-12)


def test_per_sample_cross_entropy_keeps_tiny_losses():
    logits = torch.tensor([[100.0, 0.0, 0.0], [0.0, 50.0, 0.0]])
    target = torch.tensor([0, 0])
    losses = figures.per_sample_cross_entropy(logits, target)
    # log(1 + 2 e^-100) = 2 e^-100 to double precision; torch rounds it to -0.
    assert losses[0].item() == pytest.approx(2 * math.exp(-100), rel=1e-12)
    assert losses[1].item() == pytest.approx(50 + math.log1p(2 * math.exp(-50)), rel=1e-12)


def test_per_sample_test_loss_matches_recorded_test_metrics(healthy):
    run = healthy.runs[0]
    losses, predictions = figures.per_sample_test_loss(run, healthy)
    assert losses.shape == predictions.shape == (len(healthy.dataset.y_test),)
    assert losses.mean() == pytest.approx(run.test_loss[-1], rel=1e-5)
    accuracy = (predictions == healthy.dataset.y_test.numpy()).mean()
    assert accuracy == pytest.approx(run.test_accuracy[-1])


def test_per_sample_test_loss_rejects_diverged_run(diverged):
    with pytest.raises(ValueError, match="diverged"):
        figures.per_sample_test_loss(diverged.runs[0], diverged)


def test_extreme_test_images_shows_lowest_then_highest_losses(healthy):
    losses, predictions = figures.per_sample_test_loss(healthy.runs[0], healthy)
    labels = healthy.dataset.y_test.numpy()
    figure = figures.extreme_test_images(healthy)
    assert len(figure.axes) == 10
    assert "run 0 (seed 42)" in figure.get_suptitle()

    titles = [axes.get_title() for axes in figure.axes]
    title_losses = np.array([float(re.search(r"loss (\S+)", title).group(1)) for title in titles])
    np.testing.assert_allclose(title_losses[:5], np.sort(losses)[:5], rtol=5e-3)
    np.testing.assert_allclose(title_losses[5:], np.sort(losses)[::-1][:5], rtol=5e-3)

    highest = int(np.argmax(losses))
    assert titles[5].startswith(f"true {labels[highest]}, pred {predictions[highest]}")
    for axes in figure.axes:
        assert axes.get_images()[0].get_array().shape == (8, 8)


def test_extreme_test_images_rejects_unknown_run(healthy):
    with pytest.raises(ValueError, match=r"'digits-adam' has no run 7; its runs are \[0, 1, 2\]"):
        figures.extreme_test_images(healthy, run_index=7)


def test_extreme_images_fall_back_from_diverged_run(healthy, diverged):
    mixed = dataclasses.replace(healthy, runs=diverged.runs[:1] + healthy.runs[1:])
    title = figures.extreme_test_images(mixed).get_suptitle()
    assert "run 1 (seed 1042)" in title
    assert "because run 0 diverged" in title
