"""A self-contained HTML page of evaluation results: tables plus PNGs embedded as base64.

One file, no external resources, so it displays anywhere: a browser, or a Kubeflow HTML
artifact in the pipeline UI.
"""

import base64
from html import escape


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _representation(found: dict | None) -> str:
    if not found:
        return ""
    return (
        "<h2>Pretrained encoder, frozen</h2><table><tr><th>evaluation</th><th>top-1</th></tr>"
        f"<tr><td>linear (weight decay {found['linear_weight_decay']:g}, chosen on held-out "
        f"labeled images)</td><td>{_percent(found['linear_top1'])}</td></tr>"
        f"<tr><td>weighted kNN</td><td>{_percent(found['knn_top1'])}</td></tr></table>"
        f"<p>fitted on the {found['labeled_images']} labeled images</p>"
    )


def render_html_report(title: str, metrics: dict, images: dict[str, bytes]) -> str:
    """metrics: the evaluate step's metrics.json content; images: caption -> PNG bytes."""
    models = metrics["models"]
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{_percent(m['top1'])}</td>"
        f"<td>{_percent(m['top5'])}</td><td>{m['num_examples']}</td></tr>"
        for name, m in models.items()
    )
    header = "".join(f"<th>{escape(name)}</th>" for name in models)
    per_class = "".join(
        f"<tr><td>{escape(cls)}</td>"
        + "".join(f"<td>{_percent(m['per_class_accuracy'][cls])}</td>" for m in models.values())
        + "</tr>"
        for cls in metrics["class_names"]
    )
    figures = "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(png).decode()}" '
        f'alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption></figure>'
        for caption, png in images.items()
    )
    warnings = "".join(
        f"<li><b>{escape(stage)}</b>: {escape(warning)}</li>"
        for stage, found in metrics.get("warnings", {}).items()
        for warning in found
    )
    warnings = f'<h2 class="warn">Warnings</h2><ul>{warnings}</ul>' if warnings else ""
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
        "figure{display:inline-block;margin:1em}.warn{color:#b00}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f"<p>dataset {escape(str(metrics['dataset']))}, split {escape(metrics['split'])}</p>"
        f"{warnings}"
        "<table><tr><th>model</th><th>top-1</th><th>top-5</th><th>examples</th></tr>"
        f"{rows}</table>{_representation(metrics.get('representation'))}"
        f"<h2>Per-class accuracy</h2><table><tr><th>class</th>{header}</tr>{per_class}</table>"
        f"{figures}</body></html>\n"
    )
