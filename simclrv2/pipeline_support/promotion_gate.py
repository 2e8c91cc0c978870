"""The promotion gate: which model, if any, becomes the production model after a run.

A candidate (the student by default, as in the paper; `promotion.candidate: teacher`, or
`best`: the student, and the teacher when the student fails) is promoted only when every rule
holds on this run's test split:

- beats_production: top-1 above the production model's by more than
  `min_gain_over_production` (no production model: the rule holds, the others still apply);
- near_teacher (student only): at most `max_below_teacher` below its teacher;
- beats_supervised: above the supervised baseline trained on the same labels by more than
  `min_above_supervised`;
- above_chance: at least 1 / classes + `min_above_chance`.

The decision lists every rule with its numbers, so a rejection says exactly why.
"""

RULES = ("beats_production", "near_teacher", "beats_supervised", "above_chance")


def _rule(name: str, passed: bool, value: float, threshold: float, detail: str) -> dict:
    return {"rule": name, "passed": bool(passed), "value": value, "threshold": threshold,
            "detail": detail}  # fmt: skip


def check_candidate(candidate: str, metrics: dict, settings) -> dict:
    """Every rule for one candidate ("student" or "teacher") on evaluate's metrics."""
    models = metrics["models"]
    top1 = models[candidate]["top1"]
    rules = []
    if "production" in models:
        need = models["production"]["top1"] + settings.min_gain_over_production
        rules.append(_rule("beats_production", top1 > need, top1, need,
                           f"production top-1 {models['production']['top1']:.4f}"))  # fmt: skip
    else:
        rules.append(_rule("beats_production", True, top1, None, "no production model yet"))
    if candidate == "student":
        need = models["teacher"]["top1"] - settings.max_below_teacher
        rules.append(_rule("near_teacher", top1 >= need, top1, need,
                           f"teacher top-1 {models['teacher']['top1']:.4f}"))  # fmt: skip
    need = models["supervised"]["top1"] + settings.min_above_supervised
    rules.append(_rule("beats_supervised", top1 > need, top1, need,
                       f"supervised top-1 {models['supervised']['top1']:.4f}"))  # fmt: skip
    classes = len(metrics["class_names"])
    need = 1 / classes + settings.min_above_chance
    rules.append(_rule("above_chance", top1 >= need, top1, need,
                       f"chance {1 / classes:.4f} with {classes} classes"))  # fmt: skip
    return {"model": candidate, "top1": top1, "passed": all(r["passed"] for r in rules),
            "rules": rules}  # fmt: skip


def decide_promotion(metrics: dict, settings) -> dict:
    """{"promote", "candidate" (the model promoted, or None), "considered", "reason"}."""
    order = {"student": ["student"], "teacher": ["teacher"], "best": ["student", "teacher"]}
    considered = []
    for candidate in order[settings.candidate]:
        considered.append(check_candidate(candidate, metrics, settings))
        if considered[-1]["passed"]:
            failed = _failures(considered[:-1])
            reason = f"{failed}; " if failed else ""
            return {"promote": True, "candidate": candidate, "considered": considered,
                    "reason": f"{reason}the {candidate} passes every rule"}  # fmt: skip
    return {"promote": False, "candidate": None, "considered": considered,
            "reason": f"not promoted: {_failures(considered)}"}  # fmt: skip


def _failures(considered: list[dict]) -> str:
    """ "student fails near_teacher (0.2980 vs 0.3980, teacher top-1 0.4480), ..."."""
    return "; ".join(
        f"{c['model']} fails " + ", ".join(
            f"{r['rule']} ({r['value']:.4f} vs {r['threshold']:.4f}, {r['detail']})"
            for r in c["rules"] if not r["passed"]
        )
        for c in considered
    )  # fmt: skip


def decision_markdown(decision: dict, warnings: dict[str, list[str]] | None = None) -> str:
    """The decision as a Markdown table, for the KFP UI; then the run's stage warnings."""
    verdict = f"**Promoted: the {decision['candidate']}**" if decision["promote"] else (
        "**Rejected: production stays as it is**")  # fmt: skip
    lines = [f"# Promotion decision\n\n{verdict}\n\n{decision['reason']}\n"]
    for candidate in decision["considered"]:
        lines.append(f"\n## {candidate['model']} (top-1 {candidate['top1']:.4f})\n")
        lines.append("| rule | passed | top-1 | threshold | compared with |")
        lines.append("|---|---|---|---|---|")
        for r in candidate["rules"]:
            threshold = "-" if r["threshold"] is None else f"{r['threshold']:.4f}"
            mark = "yes" if r["passed"] else "**no**"
            lines.append(f"| {r['rule']} | {mark} | {r['value']:.4f} | {threshold} | "
                         f"{r['detail']} |")  # fmt: skip
    found = [(stage, w) for stage, ws in (warnings or {}).items() for w in ws]
    if found:
        lines.append("\n## Warnings\n")
        lines.extend(f"- **{stage}**: {warning}" for stage, warning in found)
    return "\n".join(lines) + "\n"
