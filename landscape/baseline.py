"""The accepted verdicts of earlier runs, which a new run of the claims must reproduce.

A baseline is a JSON file, committed with the code, that lists one entry per
experiment and claim: the value, its interval and the verdict last
accepted. ``pytest claims/`` compares every verdict with it and fails the
claim's test when they differ, naming the claim, the experiment and both
verdicts. ``--landscape-accept-baseline`` writes the current results into
the file instead, keeping the entries of experiments that were not run.

Values may move from run to run within their intervals (for example on
another machine, where rounding differs); only a changed verdict fails.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from landscape.claims import ClaimResult

BASELINE_FORMAT_VERSION = 1
# The file pytest claims/ uses by default, relative to the pytest root folder.
DEFAULT_BASELINE = Path("claims") / "baseline.json"

Key = tuple[str, str]  # (experiment, claim)


class BaselineError(ValueError):
    """A baseline file is missing, unreadable or malformed."""


def load_baseline(path: str | Path) -> dict[Key, dict]:
    """Return the entries of a baseline file keyed by ``(experiment, claim)``.

    Raises
    ------
    BaselineError
        If the file cannot be read or is not a baseline (the message names the
        file and the problem).
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineError(f"baseline file {path} not found") from None
    except (OSError, json.JSONDecodeError) as error:
        raise BaselineError(f"baseline file {path} is not readable JSON: {error}") from None
    entries = document.get("results") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise BaselineError(f"baseline file {path} has no 'results' list")
    baseline = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"experiment", "claim", "verdict"} <= set(entry):
            raise BaselineError(
                f"baseline file {path}: results[{index}] needs experiment, claim and verdict, "
                f"got {entry!r}"
            )
        baseline[(entry["experiment"], entry["claim"])] = entry
    return baseline


def baseline_entry(result: ClaimResult) -> dict:
    """Return the baseline entry that records ``result``."""
    return {
        "experiment": result.experiment,
        "claim": result.claim,
        "verdict": result.verdict,
        "value": result.value,
        "low": result.low,
        "high": result.high,
    }


def write_baseline(path: str | Path, results: Iterable[ClaimResult], keep: dict[Key, dict]) -> Path:
    """Write ``results`` as the accepted baseline, with the entries of ``keep`` they do not replace.

    The file is written to a temporary name and renamed into place.
    """
    path = Path(path)
    merged = dict(keep)
    for result in results:
        merged[(result.experiment, result.claim)] = baseline_entry(result)
    document = {
        "format_version": BASELINE_FORMAT_VERSION,
        "accepted": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results": [merged[key] for key in sorted(merged)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def verdict_change(result: ClaimResult, baseline: dict[Key, dict]) -> str | None:
    """Return a message if ``result``'s verdict differs from its baseline entry, else None.

    A claim and experiment that the baseline does not list is new, not changed.
    """
    entry = baseline.get((result.experiment, result.claim))
    if entry is None or entry["verdict"] == result.verdict:
        return None
    if result.value is None:
        measured = result.note or "no value"
    else:
        measured = f"{result.value:.4g} [{result.low:.4g}, {result.high:.4g}]"
    was = entry.get("value")
    was_text = "" if was is None else f" at {was:.4g}"
    return (
        f"claim {result.claim} on experiment {result.experiment} is now {result.verdict} "
        f"({measured}), but the baseline accepted {entry['verdict']}{was_text}. If the change "
        "is expected, run again with --landscape-accept-baseline to record it"
    )
