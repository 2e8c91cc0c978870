"""evaluate: teacher, student, baseline (and production, when there is one) on the test set."""

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(
    dataset: Input[Dataset],
    teacher: Input[Model],
    student: Input[Model],
    baseline: Input[Model],
    run_config: str,
    work_root: str,
    run_id: str,
    production: str,
    metrics: Output[Metrics],
    student_confusion: Output[ClassificationMetrics],
    report: Output[HTML],
    decision: Output[Markdown],
) -> bool:
    """production: the stable prefix of the production model ("" for none), evaluated on
    this run's test set beside the run's models. The promotion gate (run config `promotion`,
    simclrv2/pipeline_support/promotion_gate.py) decides; the decision is written beside the
    evaluation and shown as Markdown, and the result (True: promote) drives the promote step.
    A single output, since kfp.local resolves only `Output` in conditions."""
    from simclrv2.pipeline_support.artifact_pointer import read_pointer
    from simclrv2.pipeline_support.promotion import production_model_uri
    from simclrv2.pipeline_support.promotion_gate import decision_markdown
    from simclrv2.pipeline_support.promotion_record import decide_and_record
    from simclrv2.pipeline_support.step_config import step_config
    from simclrv2.steps.evaluate import evaluate as run_evaluate
    from simclrv2.steps.step_outputs import read_stage_warnings
    from simclrv2.storage.object_store import ObjectStore
    from simclrv2.storage.uri import join_uri

    store = ObjectStore()
    config = step_config(run_config, dataset.path, run_id)
    models = {
        "teacher": read_pointer(teacher.path),
        "student": read_pointer(student.path),
        "supervised": read_pointer(baseline.path),
    }
    current = production_model_uri(production, store) if production else None
    if current is not None:
        models["production"] = current
    output = join_uri(work_root, run_id, "evaluate")
    stage_warnings = {
        stage: read_stage_warnings(store, join_uri(work_root, run_id, stage))
        for stage in ("pretrain", "finetune", "supervised", "distill")
    }
    # The pretrain step's model, where it wrote it: linear and kNN evaluation of its encoder.
    pretrained = join_uri(work_root, run_id, "pretrain", "model.pt")
    pretrained = pretrained if store.exists(pretrained) else None
    results = run_evaluate(config, models, output, store, stage_warnings=stage_warnings,
                           pretrained=pretrained)  # fmt: skip
    metrics.log_metric("warnings", sum(len(found) for found in results["warnings"].values()))
    for name, value in results.get("representation", {}).items():
        if name in ("linear_top1", "knn_top1"):
            metrics.log_metric(f"pretrained_{name}", value)
    for name, values in results["models"].items():
        metrics.log_metric(f"{name}_top1", values["top1"])
        metrics.log_metric(f"{name}_top5", values["top5"])
    student_confusion.log_confusion_matrix(
        results["class_names"], results["models"]["student"]["confusion_matrix"]
    )
    with open(report.path, "w") as file:
        file.write(store.read_bytes(join_uri(output, "report.html")).decode())
    result = decide_and_record(results, config.promotion, work_root, run_id, production, store)
    for candidate in result["considered"]:
        metrics.log_metric(f"promotion_{candidate['model']}_passed", int(candidate["passed"]))
    metrics.log_metric("promoted", int(result["promote"]))
    with open(decision.path, "w") as file:
        file.write(decision_markdown(result, results["warnings"]))
    return result["promote"]
