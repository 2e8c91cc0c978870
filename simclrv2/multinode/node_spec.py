"""What each node of a multi-node step gets: the placement the profile gave the step, moved
from the KFP task (now a small CPU launcher) to the TrainJob's nodes.

pipelines/placement.py writes it at compile time as JSON into the launcher's environment
(SIMCLRV2_TRAINJOB); it holds the S3 secret's name and keys, never its values.
"""

import json
import os
from dataclasses import asdict, dataclass, field

#: The launcher's environment variable that holds the NodeSpec as JSON.
SPEC_ENV = "SIMCLRV2_TRAINJOB"
#: Where the launcher runs TrainJobs: kubernetes (default) or local-processes (kfp.local and
#: tests: simclrv2/multinode/local_backend.py).
BACKEND_ENV = "SIMCLRV2_TRAINJOB_BACKEND"
#: Our ClusterTrainingRuntime (manifests/trainer).
DEFAULT_RUNTIME = "simclrv2-torch"


@dataclass(frozen=True)
class NodeSpec:
    nodes: int
    processes_per_node: int
    image: str
    resources: dict = field(default_factory=dict)  # {"requests": {...}, "limits": {...}}
    node_selector: dict = field(default_factory=dict)
    tolerations: list = field(default_factory=list)
    shm_size: str | None = None
    run_as_user: int = 10001
    run_as_group: int = 0
    image_pull_secrets: list = field(default_factory=list)
    env: dict = field(default_factory=dict)  # plain values: S3 endpoint, Pushgateway
    secret_env: dict = field(default_factory=dict)  # NAME -> [secret, key]
    active_deadline_seconds: int | None = None
    runtime: str = DEFAULT_RUNTIME
    namespace: str | None = None  # unset: the launcher pod's own namespace

    def __post_init__(self):
        if type(self.nodes) is not int or self.nodes < 2:
            raise ValueError(f"a multi-node step needs nodes >= 2, not {self.nodes!r}")
        if type(self.processes_per_node) is not int or self.processes_per_node < 1:
            raise ValueError(
                f"processes_per_node must be an int >= 1, not {self.processes_per_node!r}"
            )
        if not self.image:
            raise ValueError("a multi-node step needs the image its nodes run")

    @property
    def world_size(self) -> int:
        return self.nodes * self.processes_per_node

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "NodeSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{SPEC_ENV} is not JSON: {error}") from error
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{SPEC_ENV}: unknown field(s) {sorted(unknown)}")
        return cls(**data)


def spec_from_environment() -> NodeSpec | None:
    """The step's NodeSpec when the pipeline made it multi-node, else None."""
    text = os.environ.get(SPEC_ENV, "").strip()
    return NodeSpec.from_json(text) if text else None
