"""TrainJobs on a Kubernetes cluster with Kubeflow Trainer v2.3, through the official
`kubernetes` client: create (or find) the job, read its conditions, follow node 0's log,
delete it. In a pipeline pod it authenticates as the run's service account."""

import re
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from simclrv2.multinode.job_state import MISSING, JobState, TrainJobError, state_from_status
from simclrv2.multinode.trainjob import API_GROUP, API_VERSION, NODE, PLURAL

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# JobSet's pod labels. Trainer makes one Job of `numNodes` indexed pods in the replicated job
# `node`; a pod's completion index is its node rank (PET_NODE_RANK), in a label (Kubernetes
# 1.28+) and an annotation. A restarted JobSet makes new pods with a higher restart attempt.
JOBSET_NAME = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB = "jobset.sigs.k8s.io/replicatedjob-name"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
RESTART_ATTEMPT = "jobset.sigs.k8s.io/restart-attempt"

RBAC_HINT = (
    "the run's service account lacks a permission multi-node steps need. Apply "
    "manifests/overlays/simclrv2 (Role simclrv2-pipeline-runner: trainjobs "
    "create/get/list/watch/patch/delete, pods and pods/log read, events read; ClusterRole: "
    "clustertrainingruntimes read) and start the run with "
    "--service-account simclrv2-pipeline-runner"
)


class KubernetesBackend:
    def __init__(self, api_client, namespace: str):
        from kubernetes import client

        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.where = f"Kubernetes namespace {namespace}"

    @classmethod
    def from_environment(cls, namespace: str | None = None) -> "KubernetesBackend":
        """In a pod: its service account and namespace; elsewhere: the kubeconfig's."""
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            try:
                config.load_kube_config()
            except (config.ConfigException, OSError) as error:
                raise TrainJobError(
                    "a multi-node step needs a Kubernetes cluster with Kubeflow Trainer: none "
                    f"found (not in a pod, and no usable kubeconfig: {error}). Run it on the "
                    "cluster, set KUBECONFIG, or set SIMCLRV2_TRAINJOB_BACKEND=local-processes "
                    "to run its nodes as processes on this machine"
                ) from error
        if namespace is None:
            namespace = (
                SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
                if SERVICE_ACCOUNT_NAMESPACE.exists()
                else "kubeflow"
            )
        return cls(client.ApiClient(), namespace)

    def create(self, job: dict) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.create_namespaced_custom_object(
                API_GROUP, API_VERSION, self.namespace, PLURAL, job
            )
            return True
        except ApiException as error:
            if error.status == 409:
                return False
            raise self._explain(error, f"create TrainJob {job['metadata']['name']}") from error

    def state(self, name: str) -> JobState:
        from kubernetes.client.exceptions import ApiException

        try:
            job = self.custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, self.namespace, PLURAL, name
            )
        except ApiException as error:
            if error.status == 404:
                return JobState(MISSING, "NotFound", f"TrainJob {name} is gone")
            raise self._explain(error, f"read TrainJob {name}") from error
        return state_from_status(job.get("status"))

    def delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            # Foreground: the JobSet and its pods go with it.
            self.custom.delete_namespaced_custom_object(
                API_GROUP, API_VERSION, self.namespace, PLURAL, name,
                propagation_policy="Foreground",
            )  # fmt: skip
        except ApiException as error:
            if error.status != 404:
                raise self._explain(error, f"delete TrainJob {name}") from error

    def follow_node0_log(
        self, name: str, emit: Callable[[str], None], stop: threading.Event,
        retry_seconds: float = 3.0,
    ) -> None:  # fmt: skip
        """Stream node 0's container log; on a broken stream or a restarted pod, reconnect
        and skip the lines already shown (by their API-server timestamps). Once `stop` is
        set (the job ended), one last pass fetches the tail, then it returns."""
        shown: dict[str, tuple] = {}  # pod -> newest timestamp shown
        while True:
            last_pass = stop.is_set()
            try:
                pod = self._node0_pod(name)
                if pod is not None:
                    self._stream(pod, emit, shown)
            except Exception as error:  # the log is a view: never fail the step over it
                emit(f"[launcher] log stream interrupted ({type(error).__name__}); reconnecting")
            if last_pass:
                return
            stop.wait(retry_seconds)

    def _node0_pod(self, name: str) -> str | None:
        selector = f"{JOBSET_NAME}={name},{REPLICATED_JOB}={NODE}"
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items

        def node_rank(pod) -> str | None:
            labels, notes = pod.metadata.labels or {}, pod.metadata.annotations or {}
            return labels.get(COMPLETION_INDEX, notes.get(COMPLETION_INDEX))

        def attempt(pod) -> int:
            return int((pod.metadata.labels or {}).get(RESTART_ATTEMPT, "0") or 0)

        started = [
            p for p in pods
            if node_rank(p) == "0" and (p.status.phase or "Pending") != "Pending"
        ]  # fmt: skip
        if not started:
            return None
        return max(started, key=lambda p: (attempt(p), p.metadata.name)).metadata.name

    def _stream(self, pod: str, emit, shown: dict) -> None:
        last = shown.get(pod)
        response = self.core.read_namespaced_pod_log(
            pod, self.namespace, container=NODE, follow=True, timestamps=True,
            _preload_content=False,
        )  # fmt: skip
        try:
            pending = b""
            for chunk in response.stream(4096):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    stamp, text = _split_timestamp(raw.decode("utf-8", "replace"))
                    if stamp is not None and last is not None and stamp <= last:
                        continue  # shown before the reconnect
                    if stamp is not None:
                        last = shown[pod] = stamp
                    emit(text)
        finally:
            response.release_conn()

    def _explain(self, error, action: str) -> TrainJobError:
        reason = _reason(error)
        if error.status == 403:
            return TrainJobError(f"cannot {action} in {self.namespace}: forbidden ({reason}); "
                                 f"{RBAC_HINT}")  # fmt: skip
        if error.status == 404:
            return TrainJobError(
                f"cannot {action}: the cluster has no {PLURAL}.{API_GROUP}/{API_VERSION} API "
                f"({reason}). Install Kubeflow Trainer v2.3.0 and our runtime: see "
                "manifests/README.md (kubectl apply --server-side -k manifests/trainer)"
            )
        return TrainJobError(f"cannot {action}: HTTP {error.status} {reason}")


def _reason(error) -> str:
    import json

    try:
        body = json.loads(error.body or "{}")
        return body.get("message") or error.reason or ""
    except (TypeError, ValueError):
        return str(error.reason or "")


_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z (.*)$", re.S)


def _split_timestamp(line: str) -> tuple[tuple | None, str]:
    """'2026-12-01T10:00:00.12Z text' -> ((seconds, nanoseconds), 'text'). The API server
    writes RFC 3339 with trailing zeros trimmed, so strings do not sort; numbers do."""
    match = _TIMESTAMP.match(line)
    if not match:
        return None, line
    seconds = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    nanos = int((match.group(2) or "0").ljust(9, "0"))
    return (int(seconds.timestamp()), nanos), match.group(3)
