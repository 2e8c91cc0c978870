"""The run configuration of one pipeline step: the pipeline's config text, the dataset the
shard step published, this run's id and the step's typed parameters, as overrides."""

import json

from simclrv2.config.loading import load_config_text
from simclrv2.config.run_config import RunConfig
from simclrv2.pipeline_support.artifact_pointer import read_pointer


def step_config(run_config: str, dataset_pointer: str, run_id: str, **settings) -> RunConfig:
    """settings: dotted keys with `__` for the dots, e.g. pretrain__optimizer__epochs=10."""
    values = {
        "data.dataset": read_pointer(dataset_pointer),
        "run_id": str(run_id),  # kfp.local's job id is numeric: keep it a string
        **{key.replace("__", "."): value for key, value in settings.items()},
    }
    # JSON-quoted values so that YAML reads strings as strings.
    return load_config_text(
        RunConfig, run_config, [f"{k}={json.dumps(v)}" for k, v in values.items()]
    )
