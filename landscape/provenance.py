"""Where a result came from: package versions, git commit and machine."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

PACKAGES = ("landscape", "torch", "torchvision", "numpy", "scipy", "scikit-learn",
            "matplotlib", "pytest")


def package_versions() -> dict[str, str | None]:
    """Return the installed version of each package in :data:`PACKAGES`, or None."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(directory: str | Path = ".") -> str | None:
    """Return the commit checked out in ``directory``, with ``-dirty`` if it has changes.

    Returns None when ``directory`` is not in a git work tree or git is missing.
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True,
            text=True, timeout=10, check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if status else commit


def machine_info() -> dict[str, object]:
    """Return the platform, processor, CPU count and torch's device and threads."""
    import torch

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def provenance(directory: str | Path = ".") -> dict[str, object]:
    """Return versions, commit, machine and a UTC timestamp, for result files."""
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(directory),
        "packages": package_versions(),
        "machine": machine_info(),
    }
