"""The claims report: ``claims.json`` for programs and ``index.html`` for people.

:func:`write_report` is called by the pytest plugin at the end of a session.
``claims.json`` contains every claim result, each experiment's configuration,
data checksum and summary statistics, and the provenance of the run (package
versions, git commit, machine). NaN and infinite numbers are written as
``null`` because JSON has no literal for them. ``index.html`` is one
self-contained page rendered from ``templates/report.html.j2``: its CSS is
inline and its figures are embedded as base64 PNG data URIs, so it opens from
disk with no server and fetches nothing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import jinja2
import numpy as np

from landscape import figures
from landscape.claims import CLAIMS, ClaimResult
from landscape.evidence import Evidence
from landscape.provenance import provenance

logger = logging.getLogger(__name__)

REPORT_FORMAT_VERSION = 1
CLAIMS_FILE = "claims.json"
HTML_FILE = "index.html"
TEMPLATE = "report.html.j2"

MISSING = "—"

VERDICT_MEANINGS = {
    "supported": "the whole confidence interval lies strictly on the claimed side of the threshold",
    "refuted": "the whole confidence interval lies on the other side of the threshold "
    "(touching it counts as the other side)",
    "inconclusive": "the confidence interval contains the threshold",
    "invalid": "the claim could not be judged, for example because a run diverged",
}


def write_report(
    report_dir: str | Path,
    results: Sequence[ClaimResult],
    evidence: Sequence[Evidence],
    *,
    views: dict[str, list] | None = None,
    comparisons: Sequence | None = None,
    baseline: dict | None = None,
) -> list[Path]:
    """Write ``claims.json`` and ``index.html`` into ``report_dir``.

    ``report_dir`` is created if missing. Each file is written to a temporary
    file in ``report_dir`` and renamed into place, so a reader never sees a
    half-written report.

    Parameters
    ----------
    report_dir : path
    results : sequence of ClaimResult
        The judged claims, in any order; both files list them by experiment
        (in the order of ``evidence``) and then by claim.
    evidence : sequence of Evidence
        The experiments the results come from, with their runs and summaries.
    views : dict of str to list of landscape.planes.View, optional
        Loss-landscape figures per experiment name, shown after the
        experiment's own figures; their numbers go into ``claims.json``.
    comparisons : sequence of landscape.planes.Comparison, optional
        Cross-experiment views and statistics, in a section of their own.
    baseline : dict, optional
        Accepted results keyed by ``(experiment, claim)``
        (:func:`landscape.baseline.load_baseline`), shown beside each result.

    Returns
    -------
    list of Path
        The paths of ``claims.json`` and ``index.html``, in that order.
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    results = _sorted_results(results, evidence)

    views = views or {}
    comparisons = list(comparisons or [])
    baseline = baseline or {}
    document = claims_document(results, evidence)
    for entry in document["results"]:
        accepted = baseline.get((entry["experiment"], entry["claim"]))
        entry["baseline"] = None if accepted is None else _jsonable(
            {"verdict": accepted["verdict"], "value": accepted.get("value")}
        )
    document["matrix_reading"] = matrix_reading(results)
    for name, record in document["experiments"].items():
        record["landscape"] = _jsonable(
            [{"caption": view.caption, **view.numbers} for view in views.get(name, [])]
        )
    document["comparisons"] = _jsonable(
        [{"experiments": [c.first, c.second], **c.numbers,
          "views": [{"caption": view.caption, **view.numbers} for view in c.views]}
         for c in comparisons]
    )
    json_path = report_dir / CLAIMS_FILE
    write_atomic(json_path, json.dumps(document, indent=2, allow_nan=False) + "\n")

    html_path = report_dir / HTML_FILE
    write_atomic(html_path, render_html(document, results, evidence, views, comparisons, baseline))

    logger.info("wrote %d claim results for %d experiments to %s",
                len(results), len(evidence), report_dir)
    return [json_path, html_path]


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` through a temporary file in the same directory."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _sorted_results(
    results: Sequence[ClaimResult], evidence: Sequence[Evidence]
) -> list[ClaimResult]:
    experiment_order = {item.experiment.name: i for i, item in enumerate(evidence)}
    claim_order = {claim_id: i for i, claim_id in enumerate(CLAIMS)}
    return sorted(
        results,
        key=lambda r: (
            experiment_order.get(r.experiment, len(experiment_order)),
            r.experiment,
            claim_order.get(r.claim, len(claim_order)),
            r.claim,
        ),
    )


def _jsonable(value: Any) -> Any:
    """Convert ``value`` to plain JSON types; NaN and infinities become None."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def experiment_record(evidence: Evidence) -> dict[str, Any]:
    """Return the configuration, data checksum, summary and per-run facts of one experiment."""
    runs = [
        {
            "run": run.run,
            "seed": run.seed,
            "diverged": run.diverged,
            "diverged_epoch": run.diverged_epoch,
            "final_test_accuracy": None if run.diverged else run.final_accuracy,
            "final_train_loss": None if run.diverged else run.final_train_loss,
            "cache": run.metadata.get("cache"),
            "train_seconds": run.metadata.get("train_seconds"),
            "device": run.metadata.get("device"),
        }
        for run in evidence.runs
    ]
    return _jsonable({
        "config": evidence.experiment.to_dict(),
        "dataset": evidence.dataset.name,
        "data_checksum": evidence.dataset.checksum,
        "summary": evidence.summary,
        "runs": runs,
    })


def claims_document(
    results: Sequence[ClaimResult], evidence: Sequence[Evidence]
) -> dict[str, Any]:
    """Return the content of ``claims.json`` as plain JSON types."""
    # The commit that matters is the one of the code that produced the
    # results, so git is asked about the package's directory, not the
    # current one.
    origin = provenance(Path(__file__).resolve().parent)
    return _jsonable({
        "format_version": REPORT_FORMAT_VERSION,
        "provenance": origin,
        "results": [result.to_dict() for result in results],
        "experiments": {item.experiment.name: experiment_record(item) for item in evidence},
    })


def format_number(value: float | int | None, digits: int = 4) -> str:
    """Format a measured ``value`` with ``digits`` significant digits, or a dash when missing.

    Trailing zeros are kept (0.7040, not 0.704), so a value shows its
    precision when it sits beside a published one. Integers and zero are
    written plainly.
    """
    if value is None:
        return MISSING
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if isinstance(value, (int, np.integer)):
        return str(value)
    return f"{value:#.{digits}g}"


def format_plain(value: float | int | None) -> str:
    """Format a chosen or published number, such as a threshold, as it was written.

    Up to 6 significant digits, without trailing zeros; a dash when missing.
    """
    if value is None:
        return MISSING
    return f"{value:g}"


def format_percent(fraction: float | None, decimals: int = 2) -> str:
    """Format a fraction such as an accuracy as a percentage."""
    if fraction is None:
        return MISSING
    return f"{100 * fraction:.{decimals}f}%"


def _claim_row(
    result: ClaimResult, evidence_by_name: dict[str, Evidence], baseline: dict
) -> dict[str, Any]:
    notes = []
    item = evidence_by_name.get(result.experiment)
    expected = item.experiment.expected_verdicts.get(result.claim) if item else None
    if expected is not None:
        notes.append(f"Expected {expected.verdict}: {expected.reason}")
    if result.note:
        notes.append(result.note)

    if result.value is None:
        interval = MISSING
        tightest = MISSING
    else:
        interval = f"[{format_number(result.low)}, {format_number(result.high)}]"
        tightest = f"{result.direction} {format_number(result.tightest_threshold)}"
    return {
        "experiment": result.experiment,
        "claim": result.claim,
        "title": result.title,
        "statistic": result.statistic,
        "value": format_number(result.value),
        "reference": format_plain(result.reference),
        "interval": interval,
        "confidence": f"{100 * result.confidence:g}%",
        "threshold": f"{result.direction} {format_plain(result.threshold)}",
        "tightest": tightest,
        "verdict": result.verdict,
        "expected": expected.verdict if expected is not None else None,
        "baseline": _baseline_text(baseline.get((result.experiment, result.claim))),
        "baseline_changed": (
            (result.experiment, result.claim) in baseline
            and baseline[(result.experiment, result.claim)]["verdict"] != result.verdict
        ),
        "n_runs": result.n_runs,
        "seeds": ", ".join(str(seed) for seed in result.seeds),
        "notes": notes,
    }


def _baseline_text(entry: dict | None) -> str:
    if entry is None:
        return MISSING
    value = entry.get("value")
    return f"{format_number(value)} {entry['verdict']}" if value is not None else entry["verdict"]


def _summary_rows(summary: dict[str, Any], reference: dict[str, float]) -> list[dict[str, str]]:
    """Return the unjudged statistics of one experiment as labelled, formatted rows."""
    if "accuracy_mean" not in summary:
        return []
    epochs = ", ".join(str(epoch) for epoch in summary["convergence_epochs"])
    rows = [
        (
            "final test accuracy",
            f"{format_percent(summary['accuracy_mean'])} ± "
            f"{100 * summary['accuracy_std']:.2f} pp",
            format_percent(reference.get("accuracy_mean")),
            "mean ± population std over runs (pp: percentage points)",
        ),
        (
            "displacement cosine",
            format_number(summary["displacement_cosine"]),
            format_plain(reference.get("displacement_cosine")),
            "mean pairwise cosine similarity of final minus initial weights",
        ),
        (
            "normalized distance",
            format_number(summary["normalized_distance"]),
            format_plain(reference.get("normalized_distance")),
            "mean pairwise ‖w_i − w_j‖ / (‖w_i‖ + ‖w_j‖) of final weights: "
            "0 for equal vectors, 1 for opposite ones",
        ),
        (
            "final training loss",
            f"{format_number(summary['final_train_loss_mean'])} ± "
            f"{format_number(summary['final_train_loss_std'], 2)} "
            f"(range {format_number(summary['final_train_loss_min'])} to "
            f"{format_number(summary['final_train_loss_max'])})",
            format_plain(reference.get("final_train_loss_mean")),
            "mean cross-entropy (nats) of the last epoch, mean ± population std over runs",
        ),
        (
            "convergence epoch",
            f"{format_number(summary['convergence_epoch_mean'], 3)} ± "
            f"{format_number(summary['convergence_epoch_std'], 2)} (per run: {epochs})",
            format_plain(reference.get("convergence_epoch_mean")),
            "first 0-based epoch index from 5 on whose 4 preceding epoch-to-epoch "
            "changes in training loss are all below 0.001; the last index if none is",
        ),
        (
            "convex score",
            format_number(summary["convex_score"]),
            format_plain(reference.get("convex_score")),
            "the original study's score 0.3/(1 + std accuracy) + 0.3/(1 + std final loss) "
            "+ 0.2/(1 + std convergence epoch / 10) + 0.2 × mean gradient-norm r; "
            "unitless, reported without a threshold",
        ),
    ]
    return [
        {"label": label, "ours": ours, "reference": group, "meaning": meaning}
        for label, ours, group, meaning in rows
    ]


def _figure_entries(evidence: Evidence) -> list[dict[str, str]]:
    """Render every figure of one experiment to an embeddable PNG with its caption."""
    runs = evidence.runs
    reference_accuracy = evidence.experiment.reference.get("accuracy_mean")
    captioned = (
        (figures.training_curves(runs),
         "Training loss per epoch, and test loss and accuracy at every snapshot "
         "(epoch 0 is the initialization), one line per seed."),
        (figures.loss_trajectories(runs),
         "Mean training loss per epoch on a log scale."),
        (figures.grad_norm_trajectories(runs),
         "Mean gradient L2 norm per epoch on a log scale, taken before each "
         "optimizer step. The grad_norm_correlation claim correlates these series."),
        (figures.final_accuracy_distribution(runs, reference=reference_accuracy),
         "Final test accuracy of each run, with the mean and a band of one std. "
         "The accuracy_variance claim is about this spread."),
        (figures.weight_cosine_heatmap(runs),
         "Cosine similarity of final weight vectors. The final_weight_cosine "
         "claim averages the off-diagonal cells."),
        (figures.grad_norm_correlation_heatmap(runs),
         "Pearson r between gradient-norm series. The grad_norm_correlation "
         "claim averages the off-diagonal cells."),
        (figures.extreme_test_images(evidence),
         "The five test images with the lowest and the five with the highest "
         "cross-entropy under the final weights of run 0, or of the first run that "
         "did not diverge (the title names the run). Red titles are misclassified."),
    )
    return [
        {"uri": figures.figure_to_data_uri(figure), "caption": caption}
        for figure, caption in captioned
    ]


def _view_entries(views: Sequence) -> list[dict[str, str]]:
    """Render landscape views to embeddable PNGs with captions that carry their fidelity."""
    entries = []
    for view in views:
        caption = view.caption
        for label, numbers in view.numbers.get("fidelity", {}).items():
            caption += (
                f" {label}: the plane captures {format_percent(numbers['mean_captured'], 1)} "
                f"of the squared displacement on average (at least "
                f"{format_percent(numbers['min_captured'], 1)}); the loss at a projection "
                f"differs from the real loss by up to {format_number(numbers['max_loss_gap'])} nats."
            )
        entries.append({"uri": figures.figure_to_data_uri(view.figure), "caption": caption})
    return entries


def _comparison_section(comparison) -> dict[str, Any]:
    numbers = comparison.numbers
    accuracy = numbers["test_accuracy"]
    rows = [
        ("distance between the final weights", format_number(numbers["distance"])),
        ("normalized distance ‖a−b‖ / (‖a‖+‖b‖)", format_number(numbers["normalized_distance"])),
        ("angle between the displacements (final − initial)",
         f"{numbers['displacement_angle_degrees']:.1f}°"),
        ("displacement norms", ", ".join(format_number(n) for n in numbers["displacement_norms"])),
        *((f"test accuracy of {name}", format_percent(value)) for name, value in accuracy.items()),
    ]
    return {
        "title": f"{comparison.first} and {comparison.second}, run 0 from one initialization",
        "rows": rows,
        "figures": _view_entries(comparison.views),
    }


def _experiment_section(
    evidence: Evidence, record: dict[str, Any], views: Sequence = ()
) -> dict[str, Any]:
    experiment = evidence.experiment
    any_healthy = any(not run.diverged for run in evidence.runs)
    started = time.perf_counter()
    section = {
        "name": experiment.name,
        "description": experiment.description,
        "config": [
            ("dataset", f"{evidence.dataset.name} ({len(evidence.dataset.y_train):,} "
                        f"training, {len(evidence.dataset.y_test):,} test samples)"),
            ("data checksum (SHA-256)", evidence.dataset.checksum),
            ("widths", "-".join(str(width) for width in experiment.widths)),
            ("optimizer", _optimizer_text(record["config"])),
            ("batch size", str(experiment.batch_size)),
            ("epochs", str(experiment.epochs)),
            ("runs", f"{len(evidence.runs)}, seeds "
                     f"{', '.join(str(run.seed) for run in evidence.runs)}"),
        ],
        "n_runs": evidence.summary.get("n_runs", len(evidence.runs)),
        "n_diverged": evidence.summary.get("n_diverged", sum(r.diverged for r in evidence.runs)),
        "summary": _summary_rows(evidence.summary, dict(experiment.reference)),
        # With every run diverged each figure would only repeat that fact.
        "figures": (_figure_entries(evidence) + _view_entries(views)) if any_healthy else [],
    }
    logger.debug("rendered figures of %s in %.1f s", experiment.name,
                 time.perf_counter() - started)
    return section


def _optimizer_text(config: dict[str, Any]) -> str:
    text = f"{config['optimizer']}, lr {format_plain(config['lr'])}"
    if config.get("momentum"):
        text += f", momentum {format_plain(config['momentum'])}"
    return text


def _range_text(counts: Sequence[int]) -> str:
    if not counts:
        return MISSING
    if min(counts) == max(counts):
        return f"{min(counts):,}"
    return f"{min(counts):,} to {max(counts):,}"


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("landscape", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_html(
    document: dict[str, Any],
    results: Sequence[ClaimResult],
    evidence: Sequence[Evidence],
    views: dict[str, list] | None = None,
    comparisons: Sequence = (),
    baseline: dict | None = None,
) -> str:
    """Render ``index.html`` from the ``claims.json`` content and the evidence behind it."""
    evidence_by_name = {item.experiment.name: item for item in evidence}
    rows = [_claim_row(result, evidence_by_name, baseline or {}) for result in results]
    sections = [
        _experiment_section(item, document["experiments"][item.experiment.name],
                            (views or {}).get(item.experiment.name, []))
        for item in evidence
    ]
    confidences = sorted({row["confidence"] for row in rows})
    # A pairwise claim drops the resamples that draw a single run, so the
    # usable count varies by claim.
    resamples = [result.n_resamples for result in results if result.n_resamples]
    verdict_counts = {
        verdict: sum(row["verdict"] == verdict for row in rows) for verdict in VERDICT_MEANINGS
    }
    template = _environment().get_template(TEMPLATE)
    return template.render(
        provenance=document["provenance"],
        rows=rows,
        sections=sections,
        comparisons=[_comparison_section(c) for c in comparisons],
        verdict_meanings=VERDICT_MEANINGS,
        verdict_counts=verdict_counts,
        confidences=", ".join(confidences) or MISSING,
        resamples=_range_text(resamples),
        matrix=_matrix(results, [item.experiment.name for item in evidence]),
        matrix_reading=document["matrix_reading"],
        has_baseline=bool(baseline),
    )


def _matrix(results: Sequence[ClaimResult], experiments: list[str]) -> dict[str, Any]:
    """Return the claims-by-experiments table: one row per claim, one cell per experiment."""
    cells = {(r.claim, r.experiment): r for r in results}
    claims = list(dict.fromkeys(r.claim for r in results))
    rows = []
    for claim in claims:
        row = []
        for name in experiments:
            result = cells.get((claim, name))
            if result is None:
                row.append(None)
                continue
            interval = MISSING if result.value is None else (
                f"[{format_number(result.low, 3)}, {format_number(result.high, 3)}]")
            row.append({"verdict": result.verdict, "value": format_number(result.value, 3),
                        "interval": interval})
        rows.append({"claim": claim, "cells": row})
    return {"experiments": experiments, "rows": rows}


def matrix_reading(results: Sequence[ClaimResult]) -> list[str]:
    """Return one sentence per claim saying on which experiments it holds.

    A claim "holds" where it is supported; the sentence lists the other
    experiments by verdict.
    """
    sentences = []
    claims = list(dict.fromkeys(r.claim for r in results))
    for claim in claims:
        by_verdict: dict[str, list[str]] = {}
        for result in results:
            if result.claim == claim:
                by_verdict.setdefault(result.verdict, []).append(result.experiment)
        total = sum(len(names) for names in by_verdict.values())
        supported = by_verdict.pop("supported", [])
        if not by_verdict:
            sentences.append(f"{claim} is supported on all {total} experiments.")
            continue
        others = "; ".join(f"{verdict} on {', '.join(names)}" for verdict, names in by_verdict.items())
        if supported:
            sentences.append(f"{claim} is supported on {len(supported)} of {total} experiments; "
                             f"{others}.")
        else:
            sentences.append(f"{claim} is supported on none of {total} experiments: {others}.")
    return sentences
