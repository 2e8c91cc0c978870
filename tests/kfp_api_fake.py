"""A fake of the Kubeflow Pipelines API server for tests, speaking its real REST protocol.

This is not KFP: it is an in-memory stand-in that answers the v2beta1 REST endpoints that
`kfp.Client` 2.17 calls to upload, run and schedule a pipeline, with the JSON field names of
the generated `kfp_server_api` models (snake_case, except `recurringRuns` in the recurring
run list, as the real server sends it). It stores pipelines, versions, experiments, runs and
recurring runs in memory and records every request (method, path, query, headers including
Authorization, and the JSON body or multipart fields) so that tests can check the wire format.

What it does not do: run anything (a run's states are scripted with `run_states`), check the
pipeline spec beyond parsing its YAML, validate cron expressions, or enforce multi-user
namespaces. A real cluster (KFP standalone on kind) is the remaining gap.

Endpoints (all under /apis/v2beta1):
  GET    /healthz
  POST   /pipelines/upload            multipart field `uploadfile`; query name, description
  POST   /pipelines/upload_version    multipart field `uploadfile`; query pipelineid, name
  GET    /pipelines                   query filter (display_name EQUALS), namespace
  GET    /pipelines/{id}/versions     query filter, sort_by ("created_at desc")
  POST   /experiments,  GET /experiments (filter)
  POST   /runs,         GET /runs/{id}
  POST   /recurringruns, GET /recurringruns (filter), DELETE /recurringruns/{id}
  POST   /recurringruns/{id}:enable,  POST /recurringruns/{id}:disable
"""

from __future__ import annotations

import dataclasses
import datetime
import email.parser
import email.policy
import itertools
import json
import re
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

PREFIX = "/apis/v2beta1"
# gRPC codes the real server puts in its error bodies, by HTTP status.
_GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 500: 13}


@dataclasses.dataclass
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str  # without the query, percent-decoded
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    json: Any = None  # the parsed body when it was JSON
    form: dict[str, dict] = dataclasses.field(default_factory=dict)  # multipart: name -> part

    def param(self, name: str) -> str | None:
        """The first value of one query parameter."""
        values = self.query.get(name)
        return values[0] if values else None


class ApiError(Exception):
    """An error answer: HTTP status and message, sent as the server's JSON error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _matches(resource: dict, filter_json: str | None) -> bool:
    """Whether a resource passes a v2beta1 Filter (only EQUALS on string keys is supported)."""
    if not filter_json:
        return True
    for predicate in json.loads(filter_json).get("predicates", []):
        operation = predicate.get("operation")
        if operation not in ("EQUALS", 1):
            raise ApiError(400, f"the fake supports only EQUALS filters, not {operation!r}")
        value = predicate.get("string_value", predicate.get("stringValue"))
        key = predicate.get("key")
        if key not in ("display_name", "name"):
            raise ApiError(400, f"the fake cannot filter on {key!r}")
        if resource.get("display_name") != value:
            return False
    return True


class FakeKfpServer:
    """The fake API server on 127.0.0.1 at a free port; `url` is its base URL.

    Set `run_states` before starting a run: each GET of that run answers the next state, the
    last one repeating (a run is PENDING when created). `run_error` is the error message a
    FAILED run carries. With `required_token`, requests without that bearer token get 401.
    """

    def __init__(self, required_token: str | None = None, multi_user: bool = False) -> None:
        self.required_token = required_token
        self.multi_user = multi_user
        self.run_states: list[str] = ["SUCCEEDED"]
        self.run_error = "a task failed"
        self.requests: list[RecordedRequest] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring_runs: dict[str, dict] = {}
        self._pending_states: dict[str, list[str]] = {}
        self._order = itertools.count()  # creation order, for "created_at desc"
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        # A short poll interval: stop() waits for the next poll, 0.5 s by default.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeKfpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FakeKfpServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- what tests read ----------------------------------------------------------------------

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """The recorded requests with this method and path (after /apis/v2beta1)."""
        return [r for r in self.requests if r.method == method and r.path == PREFIX + path]

    # -- HTTP plumbing ------------------------------------------------------------------------

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._serve(self)

            def do_POST(self) -> None:
                fake._serve(self)

            def do_DELETE(self) -> None:
                fake._serve(self)

            def log_message(self, format: str, *args) -> None:  # quiet: tests read `requests`
                pass

        return Handler

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        request = self._record(handler)
        try:
            with self._lock:
                self._check_token(request)
                status, answer = 200, self._route(request)
        except ApiError as error:
            code = _GRPC_CODES.get(error.status, 2)
            status = error.status
            answer = {"error": error.message, "code": code, "message": error.message}
            answer["details"] = []
        payload = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _record(self, handler: BaseHTTPRequestHandler) -> RecordedRequest:
        split = urllib.parse.urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        request = RecordedRequest(
            method=handler.command,
            path=urllib.parse.unquote(split.path),
            query=urllib.parse.parse_qs(split.query, keep_blank_values=True),
            headers={name.lower(): value for name, value in handler.headers.items()},
            body=body,
        )
        content_type = request.headers.get("content-type", "")
        if body and content_type.startswith("application/json"):
            request.json = json.loads(body)
        elif body and content_type.startswith("multipart/form-data"):
            request.form = _parse_multipart(content_type, body)
        with self._lock:
            self.requests.append(request)
        return request

    def _check_token(self, request: RecordedRequest) -> None:
        if self.required_token is None:
            return
        if request.headers.get("authorization") != f"Bearer {self.required_token}":
            raise ApiError(401, "Unauthenticated: a valid bearer token is required")

    def _route(self, request: RecordedRequest) -> dict:
        if not request.path.startswith(PREFIX + "/"):
            raise ApiError(404, f"no such path {request.path}")
        path = request.path[len(PREFIX) :]
        routes = [
            ("GET", r"/healthz", self._healthz),
            ("POST", r"/pipelines/upload", self._upload_pipeline),
            ("POST", r"/pipelines/upload_version", self._upload_version),
            ("GET", r"/pipelines", self._list_pipelines),
            ("GET", r"/pipelines/(?P<pipeline_id>[^/]+)/versions", self._list_versions),
            ("POST", r"/experiments", self._create_experiment),
            ("GET", r"/experiments", self._list_experiments),
            ("POST", r"/runs", self._create_run),
            ("GET", r"/runs/(?P<run_id>[^/:]+)", self._get_run),
            ("POST", r"/recurringruns", self._create_recurring_run),
            ("GET", r"/recurringruns", self._list_recurring_runs),
            ("DELETE", r"/recurringruns/(?P<job_id>[^/:]+)", self._delete_recurring_run),
            ("POST", r"/recurringruns/(?P<job_id>[^/:]+):enable", self._enable),
            ("POST", r"/recurringruns/(?P<job_id>[^/:]+):disable", self._disable),
        ]
        for method, pattern, answer in routes:
            match = re.fullmatch(pattern, path)
            if match and method == request.method:
                return answer(request, **match.groupdict())
        raise ApiError(404, f"the fake does not implement {request.method} {request.path}")

    # -- endpoints ----------------------------------------------------------------------------

    def _healthz(self, request: RecordedRequest) -> dict:
        return {"multi_user": self.multi_user, "pipeline_store": "database"}

    def _package(self, request: RecordedRequest) -> tuple[dict, dict]:
        """The uploaded file's part and its pipeline spec (the first YAML document)."""
        part = request.form.get("uploadfile")
        if part is None:
            raise ApiError(400, "Failed to read the pipeline file: no multipart field uploadfile")
        try:
            spec = next(yaml.safe_load_all(part["content"]))
        except (yaml.YAMLError, StopIteration) as error:
            raise ApiError(400, f"Failed to parse the pipeline spec: {error}") from None
        if not isinstance(spec, dict) or "pipelineInfo" not in spec:
            raise ApiError(400, "Failed to parse the pipeline spec: no pipelineInfo")
        return part, spec

    def _add_version(self, pipeline_id: str, name: str, description: str, spec: dict) -> dict:
        if any(
            v["pipeline_id"] == pipeline_id and v["display_name"] == name
            for v in self.versions.values()
        ):
            raise ApiError(409, f"AlreadyExists: pipeline version {name!r} exists already")
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": str(uuid.uuid4()),
            "display_name": name,
            "name": name,
            "description": description,
            "created_at": _now(),
            "pipeline_spec": spec,
            "_order": next(self._order),
        }
        self.versions[version["pipeline_version_id"]] = version
        return version

    def _upload_pipeline(self, request: RecordedRequest) -> dict:
        part, spec = self._package(request)
        name = request.param("name") or request.param("display_name") or part["filename"]
        namespace = request.param("namespace") or ""
        if any(
            p["display_name"] == name and p["namespace"] == namespace
            for p in self.pipelines.values()
        ):
            raise ApiError(409, f"AlreadyExists: pipeline {name!r} exists already")
        pipeline = {
            "pipeline_id": str(uuid.uuid4()),
            "display_name": name,
            "name": name,
            "description": request.param("description") or "",
            "created_at": _now(),
            "namespace": namespace,
        }
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        # The real server creates the first version with the pipeline, named after it.
        self._add_version(pipeline["pipeline_id"], name, pipeline["description"], spec)
        return pipeline

    def _upload_version(self, request: RecordedRequest) -> dict:
        _, spec = self._package(request)
        pipeline_id = request.param("pipelineid")
        if pipeline_id not in self.pipelines:
            raise ApiError(404, f"NotFound: no pipeline {pipeline_id!r}")
        name = request.param("name") or request.param("display_name")
        if not name:
            raise ApiError(400, "InvalidArgument: a pipeline version needs a name")
        version = self._add_version(pipeline_id, name, request.param("description") or "", spec)
        return _public(version)

    def _list_pipelines(self, request: RecordedRequest) -> dict:
        namespace = request.param("namespace") or ""
        found = [
            p
            for p in self.pipelines.values()
            if p["namespace"] == namespace and _matches(p, request.param("filter"))
        ]
        return _list_answer("pipelines", found)

    def _list_versions(self, request: RecordedRequest, pipeline_id: str) -> dict:
        if pipeline_id not in self.pipelines:
            raise ApiError(404, f"NotFound: no pipeline {pipeline_id!r}")
        found = [
            v
            for v in self.versions.values()
            if v["pipeline_id"] == pipeline_id and _matches(v, request.param("filter"))
        ]
        sort_by = request.param("sort_by") or ""
        if sort_by not in ("", "created_at", "created_at desc"):
            raise ApiError(400, f"the fake cannot sort by {sort_by!r}")
        found.sort(key=lambda v: v["_order"], reverse=sort_by == "created_at desc")
        page_size = int(request.param("page_size") or 0)
        if page_size > 0:
            found = found[:page_size]
        return _list_answer("pipeline_versions", [_public(v) for v in found])

    def _create_experiment(self, request: RecordedRequest) -> dict:
        body = request.json or {}
        if not body.get("display_name"):
            raise ApiError(400, "InvalidArgument: an experiment needs a display_name")
        experiment = {
            "experiment_id": str(uuid.uuid4()),
            "display_name": body["display_name"],
            "description": body.get("description") or "",
            "namespace": body.get("namespace") or "",
            "created_at": _now(),
            "storage_state": "AVAILABLE",
        }
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def _list_experiments(self, request: RecordedRequest) -> dict:
        namespace = request.param("namespace") or ""
        found = [
            e
            for e in self.experiments.values()
            if e["namespace"] == namespace and _matches(e, request.param("filter"))
        ]
        return _list_answer("experiments", found)

    def _check_source(self, body: dict) -> None:
        """A run or recurring run names an experiment and exactly one pipeline source."""
        if body.get("experiment_id") not in self.experiments:
            raise ApiError(404, f"NotFound: no experiment {body.get('experiment_id')!r}")
        reference = body.get("pipeline_version_reference")
        if bool(reference) == bool(body.get("pipeline_spec")):
            raise ApiError(400, "InvalidArgument: give a pipeline version or a pipeline spec")
        if reference:
            version = self.versions.get(reference.get("pipeline_version_id"))
            if version is None or version["pipeline_id"] != reference.get("pipeline_id"):
                raise ApiError(404, f"NotFound: no pipeline version {reference!r}")

    def _create_run(self, request: RecordedRequest) -> dict:
        body = request.json or {}
        self._check_source(body)
        run = {
            **body,
            "run_id": str(uuid.uuid4()),
            "created_at": _now(),
            "state": "PENDING",
            "storage_state": "AVAILABLE",
        }
        self.runs[run["run_id"]] = run
        self._pending_states[run["run_id"]] = list(self.run_states)
        return run

    def _get_run(self, request: RecordedRequest, run_id: str) -> dict:
        if run_id not in self.runs:
            raise ApiError(404, f"NotFound: no run {run_id!r}")
        run, states = self.runs[run_id], self._pending_states[run_id]
        run["state"] = states.pop(0) if len(states) > 1 else states[0]
        if run["state"] == "FAILED":
            run["error"] = {"code": 2, "message": self.run_error, "details": []}
        if run["state"] in ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"):
            run["finished_at"] = _now()
        return run

    def _create_recurring_run(self, request: RecordedRequest) -> dict:
        body = request.json or {}
        self._check_source(body)
        trigger = body.get("trigger") or {}
        if not (trigger.get("cron_schedule") or trigger.get("periodic_schedule")):
            raise ApiError(400, "InvalidArgument: a recurring run needs a trigger")
        mode = body.get("mode") or "ENABLE"
        job = {
            **body,
            "recurring_run_id": str(uuid.uuid4()),
            "mode": mode,
            "status": "ENABLED" if mode == "ENABLE" else "DISABLED",
            # int64 fields travel as JSON strings in protojson.
            "max_concurrency": str(body.get("max_concurrency") or 1),
            "created_at": _now(),
            "updated_at": _now(),
            "namespace": "",
        }
        self.recurring_runs[job["recurring_run_id"]] = job
        return job

    def _list_recurring_runs(self, request: RecordedRequest) -> dict:
        experiment_id = request.param("experiment_id")
        found = [
            j
            for j in self.recurring_runs.values()
            if (experiment_id is None or j["experiment_id"] == experiment_id)
            and _matches(j, request.param("filter"))
        ]
        # The real proto field is `recurringRuns` (camelCase), unlike every other field.
        return _list_answer("recurringRuns", found)

    def _job(self, job_id: str) -> dict:
        if job_id not in self.recurring_runs:
            raise ApiError(404, f"NotFound: no recurring run {job_id!r}")
        return self.recurring_runs[job_id]

    def _delete_recurring_run(self, request: RecordedRequest, job_id: str) -> dict:
        self._job(job_id)
        del self.recurring_runs[job_id]
        return {}

    def _enable(self, request: RecordedRequest, job_id: str) -> dict:
        self._job(job_id).update(mode="ENABLE", status="ENABLED", updated_at=_now())
        return {}

    def _disable(self, request: RecordedRequest, job_id: str) -> dict:
        self._job(job_id).update(mode="DISABLE", status="DISABLED", updated_at=_now())
        return {}


def _public(resource: dict) -> dict:
    """The resource without the fake's bookkeeping keys (those starting with '_')."""
    return {key: value for key, value in resource.items() if not key.startswith("_")}


def _list_answer(field: str, items: list[dict]) -> dict:
    """A list response; like protojson, an empty list is left out rather than sent as []."""
    answer: dict[str, Any] = {"total_size": len(items)}
    if items:
        answer[field] = [_public(item) for item in items]
    return answer


def _parse_multipart(content_type: str, body: bytes) -> dict[str, dict]:
    """multipart/form-data -> {field name: {"filename", "content_type", "content"}}."""
    header = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + body)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[name] = {
            "filename": part.get_filename(),
            "content_type": part.get_content_type(),
            "content": part.get_payload(decode=True),
        }
    return fields
