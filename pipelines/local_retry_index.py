"""Tell each attempt of a locally retried task which attempt it is, as a cluster does.

On a cluster, KFP 2.17 compiles a task's `set_retry` into an Argo retryStrategy and gives the
step's container `KFP_RETRY_INDEX={{retries}}` (0 on the first attempt, 1 on the first retry,
...). kfp.local (2.17.3) retries a failed task with the same policy but sets no such variable.
Inside `argo_retry_index()`, every attempt kfp.local starts gets KFP_RETRY_INDEX the way Argo
numbers it, so code that depends on it (the fault injection of
simclrv2/pipeline_support/fault_injection.py) behaves locally as on a cluster.

It wraps kfp.local's per-attempt function, `task_dispatcher.run_single_task_implementation`,
which kfp's task executor calls once per attempt with the same arguments; a task is known by
its pipeline run, component and arguments. tests/test_local_retry_index.py fails if a kfp
release changes that contract.
"""

import contextlib
import json
import os
from collections import Counter

from kfp.local import task_dispatcher

RETRY_INDEX = "KFP_RETRY_INDEX"  # the name KFP's backend gives it (component.EnvRetryIndex)


@contextlib.contextmanager
def argo_retry_index():
    original = task_dispatcher.run_single_task_implementation
    attempts: Counter = Counter()

    def run_attempt(**kwargs):
        task = (
            kwargs["unique_pipeline_id"],
            kwargs["component_name"],
            json.dumps(kwargs["arguments"], sort_keys=True, default=repr),
        )
        index = str(attempts[task])
        attempts[task] += 1
        # SubprocessRunner passes this process's environment on; a DockerRunner only its own.
        runner_env = getattr(kwargs["runner"], "container_run_args", {}).get("environment")
        saved = os.environ.get(RETRY_INDEX)
        os.environ[RETRY_INDEX] = index
        if isinstance(runner_env, dict):
            runner_env[RETRY_INDEX] = index
        try:
            return original(**kwargs)
        finally:
            if saved is None:
                os.environ.pop(RETRY_INDEX, None)
            else:
                os.environ[RETRY_INDEX] = saved
            if isinstance(runner_env, dict):
                runner_env.pop(RETRY_INDEX, None)

    task_dispatcher.run_single_task_implementation = run_attempt
    try:
        yield
    finally:
        task_dispatcher.run_single_task_implementation = original
