"""KFP artifacts as pointers: a small JSON file naming where the real data lives on S3.

The KFP launcher downloads every input artifact before a step and uploads every output
after it. Shards and models therefore stay where the steps wrote them (a run-scoped S3
prefix that survives retries, so a retried step resumes from its checkpoints), and the
artifact holds {"uri": ..., ...}: small, typed, and enough for lineage in the KFP UI.
"""

import json
from pathlib import Path


def write_pointer(path: str, uri: str, **details) -> dict:
    record = {"uri": uri, **details}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=2, sort_keys=True))
    return record


def read_pointer_record(path: str) -> dict:
    """The whole pointer: {"uri": ..., and what the writer added (a dataset's fingerprint)}."""
    try:
        record = json.loads(Path(path).read_text())
        if not isinstance(record, dict) or "uri" not in record:
            raise ValueError("no 'uri' key")
        return record
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not an artifact pointer ({{'uri': ...}}): {error}") from error


def read_pointer(path: str) -> str:
    return read_pointer_record(path)["uri"]


def dataset_pointer(path: str, uri: str, manifest) -> dict:
    """Write the Dataset artifact of a published dataset; returns its KFP metadata."""
    counts = {name: split.samples for name, split in manifest.splits.items()}
    write_pointer(path, uri, fingerprint=manifest.fingerprint, samples=counts)
    return {"uri": uri, "fingerprint": manifest.fingerprint, **counts}
