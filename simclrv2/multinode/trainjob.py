"""The TrainJob (Kubeflow Trainer v2, trainer.kubeflow.org/v1alpha1) for one step of a run.

The runtime (manifests/trainer: ClusterTrainingRuntime simclrv2-torch) holds what every step
shares: the JobSet with one replicated job `node`, restartPolicy Never, the JobSet failure
policy, /dev/shm. The TrainJob adds what differs per step: image, command, node count,
processes per node, resources, env, and a runtime patch with placement and security.
"""

import hashlib
import re

from simclrv2.multinode.node_spec import NodeSpec

API_GROUP = "trainer.kubeflow.org"
API_VERSION = "v1alpha1"
PLURAL = "trainjobs"
#: Trainer's torch plugin sets PET_* on the container named `node` of the replicated job
#: `node`; our runtime names both so.
NODE = "node"
#: Who owns our runtime patch (Trainer requires a domain-prefixed path).
PATCH_MANAGER = "simclrv2.io/pipeline-launcher"
LABEL_STEP = "simclrv2.io/step"
LABEL_OUTPUT = "simclrv2.io/output-hash"


def trainjob_name(output: str) -> str:
    """A name that only the step's output (hence run id and step) decides, so a retried
    launcher finds the TrainJob its first attempt made. Short enough for the pod host names
    JobSet derives from it (<name>-node-0-0.<name>) and a DNS-1035 label."""
    step = re.sub(r"[^a-z0-9]+", "-", output.rstrip("/").rsplit("/", 1)[-1].lower()).strip("-")
    digest = hashlib.sha256(output.rstrip("/").encode()).hexdigest()[:10]
    return f"simclrv2-{step[:16].strip('-') or 'step'}-{digest}"


def build_trainjob(name: str, spec: NodeSpec, command: list[str], step: str, output: str) -> dict:
    """The TrainJob as the API server takes it (a plain dict)."""
    pod_patch: dict = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": spec.run_as_user,
            "runAsGroup": spec.run_as_group,
        }
    }
    if spec.node_selector:
        pod_patch["nodeSelector"] = {str(k): str(v) for k, v in spec.node_selector.items()}
    if spec.tolerations:
        pod_patch["tolerations"] = [dict(t) for t in spec.tolerations]
    if spec.image_pull_secrets:
        pod_patch["imagePullSecrets"] = [{"name": s} for s in spec.image_pull_secrets]
    if spec.shm_size:
        # Strategic merge by name: replaces the runtime's dshm volume with this size limit.
        pod_patch["volumes"] = [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(spec.shm_size)}}
        ]
    env = [{"name": k, "value": str(v)} for k, v in sorted(spec.env.items())]
    env += [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for k, (secret, key) in sorted(spec.secret_env.items())
    ]
    trainer: dict = {
        "image": spec.image,
        "command": list(command),
        "numNodes": spec.nodes,
        "numProcPerNode": spec.processes_per_node,
        "env": env,
    }
    if spec.resources:
        trainer["resourcesPerNode"] = {
            kind: {str(k): str(v) for k, v in values.items()}
            for kind, values in spec.resources.items()
            if values
        }
    labels = {
        LABEL_STEP: step,
        LABEL_OUTPUT: hashlib.sha256(output.encode()).hexdigest()[:16],
        "app.kubernetes.io/part-of": "simclrv2",
    }
    job_spec: dict = {
        "runtimeRef": {"apiGroup": API_GROUP, "kind": "ClusterTrainingRuntime",
                       "name": spec.runtime},
        "trainer": trainer,
        "runtimePatches": [{
            "manager": PATCH_MANAGER,
            "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [{
                "name": NODE,
                "template": {"spec": {"template": {"spec": pod_patch}}},
            }]}}},
        }],
    }  # fmt: skip
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = int(spec.active_deadline_seconds)
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": name, "labels": labels, "annotations": {"simclrv2.io/output": output}},
        "spec": job_spec,
    }
