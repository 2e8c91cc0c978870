"""What every training step leaves in its output folder: model.pt (weights-only artifact),
config.yaml (the effective configuration), history.json, curves.png and warnings.json (what
simclrv2/training/stage_health.py found wrong with the result; [] when nothing)."""

import json
import tempfile
from pathlib import Path

from simclrv2.config.loading import dump_config
from simclrv2.config.run_config import RunConfig
from simclrv2.reports.plots import plot_curves
from simclrv2.steps.model_artifact import save_model
from simclrv2.storage.object_store import ObjectStore
from simclrv2.storage.uri import join_uri

WARNINGS_NAME = "warnings.json"


def read_stage_warnings(store: ObjectStore, output: str) -> list[str]:
    """The warnings a training step left in `output` ([] when it wrote none)."""
    uri = join_uri(output, WARNINGS_NAME)
    return json.loads(store.read_bytes(uri)) if store.exists(uri) else []


def write_step_outputs(
    store: ObjectStore,
    output: str,
    model,
    config: RunConfig,
    history: list[dict],
    title: str,
    curve_keys: tuple[str, ...],
    warnings: list[str] = (),
    **metadata,
) -> str:
    """Writes the files, each atomically, model.pt last: the next step reads model.pt, so a
    step killed part-way through here leaves no model beside missing or stale files (the
    retry writes them all again). Returns the model URI."""
    model_uri = join_uri(output, "model.pt")
    store.write_bytes(join_uri(output, "config.yaml"), dump_config(config).encode())
    store.write_bytes(join_uri(output, "history.json"), json.dumps(history).encode())
    store.write_bytes(join_uri(output, WARNINGS_NAME), json.dumps(list(warnings)).encode())
    with tempfile.TemporaryDirectory() as folder:
        curves = Path(folder) / "curves.png"
        series = {key: [r[key] for r in history if key in r] for key in curve_keys}
        steps = {key: [r["step"] for r in history if key in r] for key in curve_keys}
        plot_curves(series, curves, title, x=steps)
        store.write_bytes(join_uri(output, "curves.png"), curves.read_bytes())
    save_model(store, model_uri, model, **metadata)
    return model_uri
