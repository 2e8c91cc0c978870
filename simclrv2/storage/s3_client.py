"""S3 connection settings and the boto3 client built from them.

Settings come from the standard AWS variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), overridden by explicit values (CLI flags).
The client uses path-style addressing (SeaweedFS and MinIO, the stores Kubeflow deploys, need
it), Signature V4, bounded timeouts and botocore's "standard" retry mode. The client of an
:class:`~simclrv2.storage.object_store.ObjectStore` (:func:`make_store_client`) makes one
attempt per call with the timeouts of the settings' :class:`S3RetryBudget`: the store retries
whole operations itself, for as long as that budget says (simclrv2/storage/retrying_call.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

from simclrv2.storage.errors import StorageSettingsError
from simclrv2.storage.retry_budget import S3RetryBudget

__all__ = ["DEFAULT_REGION", "S3Settings", "make_s3_client", "make_store_client"]

#: Region used to sign requests when none is configured; S3-compatible stores ignore it.
DEFAULT_REGION = "us-east-1"


def _mask(value: str | None, keep: int) -> str | None:
    """``None`` stays ``None``; otherwise all but the last ``keep`` characters become ``*``."""
    if value is None:
        return None
    if len(value) <= 2 * keep:
        return "****"
    return "****" + value[-keep:]


def _first_set(explicit: str | None, *env_names: str) -> str | None:
    """The explicit value if given (not None or empty), else the first non-empty variable."""
    if explicit:
        return explicit
    for name in env_names:
        value = os.environ.get(name)
        if value:
            return value
    return None


@dataclass(frozen=True)
class S3Settings:
    """Where the S3 endpoint is and which credentials to use.

    ``None`` means "not configured": the endpoint defaults to AWS, the region to
    :data:`DEFAULT_REGION`, and missing keys leave boto3's default credential chain in charge
    (instance profiles, web identity tokens, ``~/.aws``). ``retry_budget`` says how long an
    operation waits out an outage; it travels with the settings into DataLoader workers.
    """

    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str | None = None
    retry_budget: S3RetryBudget = field(default_factory=S3RetryBudget)

    @classmethod
    def from_env(
        cls,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region: str | None = None,
    ) -> S3Settings:
        """Settings from the AWS variables, each overridden by the matching explicit value."""
        return cls(
            # boto3 itself prefers the S3-specific endpoint variable over the generic one.
            endpoint_url=_first_set(endpoint_url, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
            access_key_id=_first_set(access_key_id, "AWS_ACCESS_KEY_ID"),
            secret_access_key=_first_set(secret_access_key, "AWS_SECRET_ACCESS_KEY"),
            region=_first_set(region, "AWS_DEFAULT_REGION", "AWS_REGION"),
        )

    def __repr__(self) -> str:
        # Logs and tracebacks show settings; the secret must never appear, the key id barely.
        return (
            f"S3Settings(endpoint_url={self.endpoint_url!r}, "
            f"access_key_id={_mask(self.access_key_id, keep=4)!r}, "
            f"secret_access_key={'****' if self.secret_access_key else None!r}, "
            f"region={self.region!r}, retry_budget={self.retry_budget!r})"
        )


def make_s3_client(
    settings: S3Settings | None = None,
    *,
    max_attempts: int = 5,
    connect_timeout_s: float = 10.0,
    read_timeout_s: float = 60.0,
) -> Any:
    """A boto3 S3 client for ``settings`` (default: :meth:`S3Settings.from_env`).

    ``max_attempts`` counts the first try; retries use the "standard" mode (exponential
    backoff with jitter on throttling, 5xx and connection errors).
    """
    settings = settings if settings is not None else S3Settings.from_env()
    if bool(settings.access_key_id) != bool(settings.secret_access_key):
        given, missing = (
            ("access key id", "AWS_SECRET_ACCESS_KEY / --s3-secret-access-key")
            if settings.access_key_id
            else ("secret access key", "AWS_ACCESS_KEY_ID / --s3-access-key-id")
        )
        raise StorageSettingsError(f"S3 {given} given without its pair: set {missing} too")
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        # botocore's "max_attempts" key counts retries only; "total_max_attempts" counts all.
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        # boto3 >= 1.36 adds CRC checksums to every upload by default, which several
        # S3-compatible stores reject; only send them where the API requires them.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    # A fresh session per client: the default session is shared and not thread-safe.
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        region_name=settings.region or DEFAULT_REGION,
        config=config,
    )


def make_store_client(settings: S3Settings | None = None) -> Any:
    """The client an ObjectStore uses: one attempt per call (the store retries whole
    operations within ``settings.retry_budget``), that budget's timeouts."""
    settings = settings if settings is not None else S3Settings.from_env()
    budget = settings.retry_budget
    return make_s3_client(
        settings,
        max_attempts=1,
        connect_timeout_s=budget.connect_timeout_s,
        read_timeout_s=budget.read_timeout_s,
    )
