"""The name of an uploaded pipeline version: the package version and the git commit."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from simclrv2 import __version__


def default_version_name(
    package_path: str | Path | None = None, source_dir: str | Path | None = None
) -> str:
    """'<simclrv2 version>-<git short sha>' of the code in `source_dir` (default: this package's
    folder), with '-dirty' when tracked files have uncommitted changes (as `git describe
    --dirty`). Without git: '<version>-<first 8 hex of the package's sha256>', or the bare
    version when there is no package either.
    """
    source_dir = Path(source_dir) if source_dir else Path(__file__).resolve().parent
    try:
        sha = _git(source_dir, "rev-parse", "--short", "HEAD")
        changes = _git(source_dir, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):  # no git, or not a repository
        if package_path is None:
            return __version__
        digest = hashlib.sha256(Path(package_path).read_bytes()).hexdigest()
        return f"{__version__}-{digest[:8]}"
    return f"{__version__}-{sha}" + ("-dirty" if changes else "")


def _git(directory: Path, *arguments: str) -> str:
    """The stripped output of one git command run in `directory`."""
    completed = subprocess.run(
        ["git", "-C", str(directory), *arguments],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return completed.stdout.strip()
