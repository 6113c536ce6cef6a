"""Replay as a CI gate: would this candidate model have alerted on this traffic?

``driftline replay … --fail-on SEVERITY`` turns a replay report into a verdict a CI pipeline
acts on: exit status 1 when any alert at or above the severity fired (``--fail-on-drift`` and
``--expect-no-retraining`` are stricter gates), each failure printed with its rule, model,
window and the value that crossed the threshold. ``--junit FILE`` writes the same verdicts as
JUnit XML, one test case per rule and model, which GitHub Actions, GitLab CI and Jenkins show
as test results without a plug-in.

The verdict is a pure function of the report dictionary (the one ``--report`` writes) and the
rules each model was judged by, so it can be recomputed from a stored report.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from driftline.alerting.rules import SEVERITIES, Rule
from driftline.platform.text import printable

__all__ = ["GATE_FAILED", "Case", "GateOptions", "failed", "judge", "junit_xml", "severity_at_least"]

#: the exit status of a replay whose gate failed (2 stays "could not replay": bad input, timeout)
GATE_FAILED = 1
#: ``SEVERITIES`` lists the most severe first
_RANK = {name: len(SEVERITIES) - i for i, name in enumerate(SEVERITIES)}
DRIFT_CASE = "dataset-drift-verdict"
RETRAINING_CASE = "no-retraining-request"


def severity_at_least(severity: str, floor: str) -> bool:
    """``True`` when ``severity`` is ``floor`` or more severe (critical > error > warning > info).

    >>> severity_at_least("critical", "error"), severity_at_least("warning", "error")
    (True, False)
    """
    if floor not in _RANK:
        raise ValueError(f"--fail-on: {floor!r} is not one of {list(SEVERITIES)}")
    return _RANK.get(severity, 0) >= _RANK[floor]


@dataclass(frozen=True, slots=True)
class GateOptions:
    """Which outcomes fail the gate; with none set, every case passes (the report is only shown)."""

    fail_on: str | None = None
    fail_on_drift: bool = False
    expect_no_retraining: bool = False

    def __post_init__(self) -> None:
        if self.fail_on is not None:
            severity_at_least("info", self.fail_on)  # validates the name


@dataclass(slots=True)
class Case:
    """One JUnit test case: one rule (or gate) of one model, with why it failed and what else fired."""

    model_id: str
    name: str
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def judge(report: Mapping[str, Any], rules: Mapping[str, Sequence[Rule]], options: GateOptions) -> list[Case]:
    """The gate's cases for every model in the report, in a stable order.

    ``rules`` maps each model to the rules it was judged by (its configuration's); a rule that
    fired without being listed (a report from another configuration) still gets its case."""
    firing = [a["data"] for a in report.get("alerts", ()) if a.get("type") == "io.driftline.alert.firing"]
    windows = report.get("windows", ())
    requests = [r["data"] for r in report.get("retraining_requests", ())]
    models = sorted(
        {w["model_id"] for w in windows} | {a["model_id"] for a in firing} | {r["model_id"] for r in requests}
    )
    cases: list[Case] = []
    for model in models:
        fired = [a["rule"] for a in firing if a["model_id"] == model]
        names = list(dict.fromkeys([r.name for r in rules.get(model, ())] + fired))
        for name in names:
            case = Case(model, name)
            for alert in (a for a in firing if a["model_id"] == model and a["rule"] == name):
                line = _alert_line(alert)
                failing = options.fail_on is not None and severity_at_least(
                    alert["severity"], options.fail_on
                )
                (case.failures if failing else case.notes).append(line)
            cases.append(case)
        if options.fail_on_drift:
            case = Case(model, DRIFT_CASE)
            case.failures.extend(
                _drift_line(w) for w in windows if w["model_id"] == model and w["dataset_drift"]
            )
            cases.append(case)
        if options.expect_no_retraining:
            case = Case(model, RETRAINING_CASE)
            case.failures.extend(_request_line(r) for r in requests if r["model_id"] == model)
            cases.append(case)
    return cases


def failed(cases: Iterable[Case]) -> list[Case]:
    return [c for c in cases if c.failures]


def _slice(model_id: str, version: str, segment: Mapping[str, str]) -> str:
    where = "".join(f" {k}={v}" for k, v in sorted(segment.items()))
    return printable(f"{model_id} {version}{where}")


def _alert_line(alert: Mapping[str, Any]) -> str:
    window = alert["window"]
    observed = alert["observed"]
    value = "no value" if observed is None else f"{observed:.6g}"
    where = _slice(alert["model_id"], alert["model_version"], alert["segment"])
    return printable(
        f"{alert['rule']} ({alert['severity']}) fired for {where}"
        f" in [{window['start']}, {window['end']}): {alert['metric']} {value} {alert['comparison']} "
        f"{alert['threshold']:.6g}"
    )


def _drift_line(window: Mapping[str, Any]) -> str:
    drifted = sorted(d["feature"] for d in window["drift"] if d["drifted"] and d["kind"] == "feature")
    others = sorted(d["kind"] for d in window["drift"] if d["drifted"] and d["kind"] != "feature")
    what = ", ".join(drifted + [f"({k})" for k in others]) or "no single test"
    return printable(
        f"dataset drift in {_slice(window['model_id'], window['model_version'], window['segment'])}"
        f" [{window['window_start']}, {window['window_end']}): drifted {what}"
    )


def _request_line(request: Mapping[str, Any]) -> str:
    window = request["window"]
    return printable(
        f"retraining requested for {request['model_id']} {request['model_version']} by {request['reason']}"
        f" in [{window['start']}, {window['end']}) (id {request['idempotency_key']})"
    )


def junit_xml(cases: Sequence[Case], *, name: str = "driftline replay") -> bytes:
    """JUnit XML as CI systems read it: ``<testsuites>`` of one ``<testsuite>`` per model, one
    ``<testcase>`` per rule with ``classname`` ``driftline.MODEL``, a ``<failure>`` when the
    gate failed on it and the alerts that fired below the gate in ``<system-out>``.

    Names pass through :func:`printable`: a control character in a model id would make the
    file invalid XML (and unreadable to the CI system) otherwise."""
    root = ET.Element("testsuites", name=name, tests=str(len(cases)), failures=str(len(failed(cases))))
    root.set("errors", "0")
    by_model: dict[str, list[Case]] = {}
    for case in cases:
        by_model.setdefault(case.model_id, []).append(case)
    for model, model_cases in by_model.items():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=printable(f"driftline.{model}"),
            tests=str(len(model_cases)),
            failures=str(len(failed(model_cases))),
            errors="0",
            skipped="0",
            time="0",
        )
        for case in model_cases:
            element = ET.SubElement(
                suite,
                "testcase",
                classname=printable(f"driftline.{model}"),
                name=printable(case.name),
                time="0",
            )
            if case.failures:
                failure = ET.SubElement(element, "failure", message=case.failures[0], type="driftline.gate")
                failure.text = "\n".join(case.failures)
            if case.notes:
                ET.SubElement(element, "system-out").text = "\n".join(case.notes)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
