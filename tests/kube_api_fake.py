"""A fake Kubernetes API server for the multi-node launcher's tests, speaking the real REST
protocol the official `kubernetes` client uses (paths, JSON objects, metav1.Status errors,
chunked log streams with RFC 3339 timestamps).

This is not Kubernetes and not Kubeflow Trainer: it stores TrainJobs in memory and a scripted
"controller" moves each one through the states a test lists (one per GET of the job), with
one node-0 pod whose log is served as scripted. Real clusters are the remaining gap.

Endpoints:
  POST   /apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs
  GET    /apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs/{name}
  DELETE /apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs/{name}
  GET    /api/v1/namespaces/{ns}/pods?labelSelector=...
  GET    /api/v1/namespaces/{ns}/pods/{pod}/log?container=&follow=&timestamps=
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TRAINJOBS = re.compile(
    r"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs(?:/([^/]+))?$"
)
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
POD_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")


@dataclasses.dataclass
class Script:
    """What the fake controller does with one TrainJob.

    states: the job's status on successive GETs: "Running", or ("Complete"|"Failed", reason,
      message); the last one repeats.
    log: node 0's log lines; break_log_after: the first log stream is cut after that many
      lines (the connection drops), later streams serve every line.
    """

    states: list = dataclasses.field(default_factory=lambda: ["Running", ("Complete", "", "")])
    log: list = dataclasses.field(default_factory=list)
    break_log_after: int | None = None


@dataclasses.dataclass
class Recorded:
    method: str
    path: str
    query: dict
    body: object = None


class FakeKubernetes:
    def __init__(self, namespace: str = "kubeflow"):
        self.namespace = namespace
        self.jobs: dict[str, dict] = {}
        self.scripts: dict[str, Script] = {}
        self.default_script = Script()
        self.forbid_create = False
        self.no_trainer_api = False
        self.requests: list[Recorded] = []
        self.log_connections = 0
        self._gets: dict[str, int] = {}
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_existing(self, job: dict, script: Script) -> None:
        """A TrainJob created before the test (e.g. by a first launcher attempt)."""
        name = job["metadata"]["name"]
        self.jobs[name] = job
        self.scripts[name] = script

    def calls(self, method: str, kind: str = "trainjobs") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and kind in r.path]

    # the controller
    def status_of(self, name: str) -> dict:
        with self._lock:
            count = self._gets.get(name, 0)
            self._gets[name] = count + 1
        script = self.scripts.get(name, self.default_script)
        state = script.states[min(count, len(script.states) - 1)]
        if state == "Running":
            return {"conditions": []}
        phase, reason, message = state
        return {"conditions": [{
            "type": phase, "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": "2026-12-01T00:00:00Z",
        }]}  # fmt: skip

    def pod_name(self, job: str, rank: int = 0) -> str:
        return f"{job}-node-0-{rank}-x7k2p"


def _status(code: int, reason: str, message: str, name: str = "") -> dict:
    return {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
        "details": {"name": name, "group": "trainer.kubeflow.org", "kind": "trainjobs"},
    }  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKubernetes
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, method: str):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        body = None
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            body = json.loads(self.rfile.read(length))
        self.fake.requests.append(Recorded(method, url.path, query, body))
        return url.path, query, body

    def do_POST(self):
        fake = self.fake
        path, _, body = self._record("POST")
        match = TRAINJOBS.match(path)
        if not match or match.group(2):
            return self._send(404, _status(404, "NotFound", "the server could not find it"))
        if fake.no_trainer_api:
            return self._send(
                404, _status(404, "NotFound", "the server could not find the requested resource")
            )
        name = body["metadata"]["name"]
        if fake.forbid_create:
            return self._send(
                403,
                _status(
                    403,
                    "Forbidden",
                    (
                        'trainjobs.trainer.kubeflow.org is forbidden: User "system:serviceaccount:'
                        'kubeflow:pipeline-runner" cannot create resource "trainjobs" in API '
                        f'group "trainer.kubeflow.org" in the namespace "{match.group(1)}"'
                    ),
                    name,
                ),
            )
        if name in fake.jobs:
            return self._send(
                409,
                _status(
                    409,
                    "AlreadyExists",
                    f'trainjobs.trainer.kubeflow.org "{name}" already exists',
                    name,
                ),
            )
        stored = {
            **body,
            "metadata": {
                **body["metadata"],
                "namespace": match.group(1),
                "uid": f"uid-{len(fake.jobs)}",
            },
        }
        fake.jobs[name] = stored
        self._send(201, stored)

    def do_GET(self):
        fake = self.fake
        path, query, _ = self._record("GET")
        if match := TRAINJOBS.match(path):
            name = match.group(2)
            if name not in fake.jobs:
                return self._send(
                    404, _status(404, "NotFound", f'trainjobs "{name}" not found', name)
                )
            return self._send(200, {**fake.jobs[name], "status": fake.status_of(name)})
        if PODS.match(path):
            selector = dict(
                s.split("=", 1) for s in query.get("labelSelector", [""])[0].split(",") if s
            )
            job = selector.get("jobset.sigs.k8s.io/jobset-name")
            items = []
            if job in fake.jobs and selector.get("jobset.sigs.k8s.io/replicatedjob-name") == "node":
                # One indexed Job of numNodes pods (Trainer); the completion index is the node
                # rank, as a label and an annotation. Only node 0's log is scripted.
                for rank in range(int(fake.jobs[job]["spec"]["trainer"]["numNodes"])):
                    index = {"batch.kubernetes.io/job-completion-index": str(rank)}
                    labels = {
                        **selector,
                        "jobset.sigs.k8s.io/job-index": "0",
                        "jobset.sigs.k8s.io/restart-attempt": "0",
                        **index,
                    }
                    items.append({
                        "metadata": {"name": fake.pod_name(job, rank), "namespace": fake.namespace,
                                     "labels": labels, "annotations": index},
                        "status": {"phase": "Running"},
                    })  # fmt: skip
            return self._send(
                200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
            )
        if match := POD_LOG.match(path):
            return self._stream_log(match.group(2), query)
        self._send(404, _status(404, "NotFound", "no such path"))

    def _stream_log(self, pod: str, query: dict) -> None:
        fake = self.fake
        job = next((j for j in fake.jobs if fake.pod_name(j) == pod), None)
        if job is None:  # another node's pod: its log is not node 0's
            others = [fake.pod_name(j, r) for j in fake.jobs for r in range(1, 64)]
            if pod in others:
                fake.requests.append(Recorded("GET", f"wrong-node-log/{pod}", {}))
            return self._send(404, _status(404, "NotFound", f'pods "{pod}" not found'))
        # Go's strconv.ParseBool, as the API server reads booleans (the client sends "True").
        true = {"1", "t", "T", "TRUE", "true", "True"}
        assert query.get("container") == ["node"] and query.get("timestamps", [""])[0] in true
        fake.log_connections += 1
        script = fake.scripts.get(job, fake.default_script)
        lines = script.log
        cut = script.break_log_after if fake.log_connections == 1 else None
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for index, text in enumerate(lines):
            if cut is not None and index == cut:
                self.wfile.flush()
                # The stream breaks mid-way: no final chunk, the socket shut down.
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            # Trailing zeros trimmed, as the API server writes RFC 3339 nanoseconds.
            fraction = ("", ".1", ".12", ".2", ".25", ".3", ".35", ".4", ".45", ".5")[index % 10]
            stamp = f"2026-12-01T10:00:{index // 10:02d}{fraction}Z"
            data = f"{stamp} {text}\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
            time.sleep(0.01)
        self.wfile.write(b"0\r\n\r\n")

    def do_DELETE(self):
        fake = self.fake
        path, _, _ = self._record("DELETE")
        match = TRAINJOBS.match(path)
        name = match.group(2) if match else None
        if name not in fake.jobs:
            return self._send(404, _status(404, "NotFound", f'trainjobs "{name}" not found', name))
        del fake.jobs[name]
        fake._gets.pop(name, None)
        fake.scripts.pop(name, None)  # a re-created job follows the default script
        self._send(
            200,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "group": "trainer.kubeflow.org", "kind": "trainjobs"},
            },
        )
