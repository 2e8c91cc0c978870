"""URIs of the object store: ``s3://bucket/key`` or a local path.

Plain string helpers, no I/O: tell the two kinds apart, split an S3 URI into bucket and key,
and join / split paths the same way for both kinds (``/`` separated, never a double slash).
"""

from __future__ import annotations

import os
import re

__all__ = ["S3_SCHEME", "basename", "is_s3_uri", "join_uri", "parent_uri", "split_s3_uri"]

S3_SCHEME = "s3://"

# Letters, digits, dots, hyphens and underscores: the strict S3 rules plus the legacy
# (uppercase, underscore) names some stores still accept; the server has the last word.
_BUCKET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_s3_uri(uri: str) -> bool:
    """Whether ``uri`` names an S3 object or prefix (``s3://...``) rather than a local path."""
    return uri.startswith(S3_SCHEME)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/key`` into ``("bucket", "some/key")``.

    The key is empty for ``s3://bucket`` and ``s3://bucket/``. Raises ``ValueError`` with the
    expected form when ``uri`` is not an S3 URI or its bucket is missing or malformed.
    """
    if not is_s3_uri(uri):
        raise ValueError(f"not an S3 URI: {uri!r}; expected s3://bucket/key")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"S3 URI {uri!r} has no bucket; expected s3://bucket/key")
    if not _BUCKET_NAME.match(bucket):
        raise ValueError(
            f"S3 URI {uri!r} has an invalid bucket name {bucket!r}; bucket names use letters, "
            "digits, '.', '-' and '_' (expected s3://bucket/key)"
        )
    return bucket, key


def join_uri(base: str, *parts: str) -> str:
    """Append path parts to an S3 URI or a local path with exactly one ``/`` between them.

    Slashes around each part are dropped and empty parts skipped, so
    ``join_uri("s3://b/data/", "/shards", "x.tar")`` is ``"s3://b/data/shards/x.tar"``.
    """
    cleaned = [part.strip("/") for part in parts]
    cleaned = [part for part in cleaned if part]
    if not cleaned:
        return base
    if is_s3_uri(base):
        bucket, key = split_s3_uri(base)
        head = f"{S3_SCHEME}{bucket}" + (f"/{key.strip('/')}" if key.strip("/") else "")
    else:
        # Keep the root of an absolute path ("/" stays "/", not "").
        head = base.rstrip("/") or ("/" if base.startswith("/") else "")
        if not head:
            return "/".join(cleaned)
        if head == "/":
            return "/" + "/".join(cleaned)
    return head + "/" + "/".join(cleaned)


def parent_uri(uri: str) -> str:
    """The folder (prefix) that holds ``uri``: ``s3://b/a/x.tar`` -> ``s3://b/a``.

    The parent of a bucket root ``s3://b`` is the bucket root itself, as ``/`` is its own parent.
    """
    if is_s3_uri(uri):
        bucket, key = split_s3_uri(uri)
        parent_key = key.rstrip("/").rpartition("/")[0]
        return f"{S3_SCHEME}{bucket}" + (f"/{parent_key}" if parent_key else "")
    stripped = uri.rstrip("/") or uri
    return os.path.dirname(stripped)


def basename(uri: str) -> str:
    """The last path component: ``s3://b/a/x.tar`` -> ``x.tar``; empty for a bucket root."""
    if is_s3_uri(uri):
        _, key = split_s3_uri(uri)
        return key.rstrip("/").rpartition("/")[2]
    return os.path.basename(uri.rstrip("/"))
