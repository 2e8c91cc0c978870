"""Connecting to a KFP API server: the host, the bearer token, the namespace."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from simclrv2.kfp_client.defaults import HOST_ENV, KFP_HOST_ENV, TOKEN_ENV
from simclrv2.kfp_client.errors import PipelineClientError, server_errors

if TYPE_CHECKING:
    import kfp


def connect(
    host: str | None,
    namespace: str | None,
    token: str | None = None,
    token_file: str | None = None,
    verify_ssl: bool = True,
) -> kfp.Client:
    """A `kfp.Client` for the API server at `host` (default $KFP_HOST, then
    $KF_PIPELINES_ENDPOINT), with the bearer token from `token`, else `token_file`, else
    $KF_PIPELINES_TOKEN, else none (a port-forwarded single-user installation needs none).

    `namespace` is the user's profile namespace of a multi-user installation; None for a
    single-user one.
    """
    host = host or os.environ.get(HOST_ENV) or os.environ.get(KFP_HOST_ENV)
    if not host:
        raise ValueError(
            f"no KFP API server: pass --host or set {HOST_ENV}, e.g. http://localhost:8888 "
            "after `kubectl -n kubeflow port-forward svc/ml-pipeline 8888:8888`"
        )
    token = _resolve_token(token, token_file)

    import kfp

    with warnings.catch_warnings():
        # kfp warns on every Client() that it needs a v2 server; this module only talks v2beta1.
        warnings.filterwarnings("ignore", "This client only works", FutureWarning)
        # kfp.Client ignores namespace="kubeflow" (its default) and checks the server's health
        # in its constructor when no namespace is set: connection errors surface here.
        with server_errors(f"connecting to the KFP API server at {host}"):
            try:
                return kfp.Client(
                    host=host,
                    namespace=namespace or "kubeflow",
                    existing_token=token,
                    verify_ssl=verify_ssl,
                )
            except TimeoutError as error:  # kfp gives up after 5 failed health checks
                raise PipelineClientError(
                    f"the KFP API server at {host} did not answer its health check "
                    "(/apis/v2beta1/healthz): check --host and the token"
                ) from error


def _resolve_token(token: str | None, token_file: str | None) -> str | None:
    """The bearer token: the argument, else the file's content, else $KF_PIPELINES_TOKEN."""
    if token:
        return token
    if token_file:
        try:
            text = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ValueError(f"cannot read the token file {token_file}: {error.strerror}") from None
        if not text:
            raise ValueError(f"the token file {token_file} is empty")
        return text
    return os.environ.get(TOKEN_ENV) or None


def namespace_of(client: kfp.Client, namespace: str | None) -> str | None:
    """The namespace to send: the argument, else the client's, else None (single-user)."""
    return namespace or client.get_user_namespace() or None
