"""``driftline replay --fail-on …``: replay as a CI gate, through the real command line.

The JUnit file is read back with junitparser (the library CI plug-ins use) and with
xml.etree, checking the shape GitHub Actions / GitLab CI / Jenkins read: ``testsuites`` >
``testsuite`` > ``testcase`` with ``classname`` and ``name``, ``failure`` children and counts
that agree with them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import junitparser
import pytest
import yaml
from scipy import stats

from driftline.alerting.rules import DEFAULT_RULES, Rule
from driftline.apps.gate import DRIFT_CASE, RETRAINING_CASE, GateOptions, failed, judge, junit_xml
from driftline.apps.simulate import simulate, write_jsonl
from driftline.schemas import rfc3339_to_ms

WINDOW_MS = 60_000


def _run(tmp_path: Path, traffic, *gate: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    pred, gt, report = tmp_path / "p.jsonl", tmp_path / "g.jsonl", tmp_path / "report.json"
    write_jsonl(traffic.predictions, pred)
    write_jsonl(traffic.labels, gt)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"defaults": {"window": "60s", "grace": "10s", "label_horizon": "30s"}}))
    cmd = [sys.executable, "-m", "driftline", "--config", str(cfg), "replay"]
    cmd += ["--predictions", str(pred), "--ground-truth", str(gt), "--report", str(report), *gate]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    return done, json.loads(report.read_text())


def _junit_cases(path: Path) -> dict[tuple[str, str], junitparser.TestCase]:
    xml = junitparser.JUnitXml.fromfile(str(path))
    cases = {}
    for suite in xml:
        for case in suite:
            cases[(case.classname, case.name)] = case
    # the counts CI systems show come from the attributes: they must agree with the children
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    for suite in root.iter("testsuite"):
        children = suite.findall("testcase")
        assert int(suite.get("tests")) == len(children)
        assert int(suite.get("failures")) == sum(1 for c in children if c.find("failure") is not None)
    assert int(root.get("tests")) == len(cases)
    return cases


def _independent_floor_breaches(traffic) -> set[tuple[tuple, int]]:
    """(segment, window start) slices with >= 50 labels and accuracy < 0.5, from the raw events."""
    label_of = {row["prediction_id"]: row["label"] for row in traffic.labels}
    hits: dict[tuple, int] = defaultdict(int)
    count: dict[tuple, int] = defaultdict(int)
    for row in traffic.predictions:
        start = row["timestamp"] - row["timestamp"] % WINDOW_MS
        for segment in ((), (("channel", row["segments"]["channel"]),)):
            hits[(segment, start)] += int(row["prediction"] == label_of[row["prediction_id"]])
            count[(segment, start)] += 1
    return {k for k, n in count.items() if n >= 50 and hits[k] / n < 0.5}


def test_fail_on_error_fails_a_drifted_stream_and_names_the_rule(tmp_path: Path) -> None:
    # 240 s at 20/s: four windows, the true relation flips from the second on
    traffic = simulate(4800, events_per_s=20.0, concept_drift_at=0.25, seed=5)
    junit = tmp_path / "gate.xml"
    done, report = _run(tmp_path, traffic, "--fail-on", "error", "--junit", str(junit))

    assert done.returncode == 1, done.stdout
    expected = _independent_floor_breaches(traffic)
    assert expected, "the flipped relation must push some window under accuracy 0.5"
    firing = [a["data"] for a in report["alerts"] if a["type"] == "io.driftline.alert.firing"]
    floor = {
        (tuple(sorted(a["segment"].items())), rfc3339_to_ms(a["window"]["start"]))
        for a in firing
        if a["rule"] == "accuracy-floor"
    }
    # an alert fires on the transition: the first window of each run of breaching windows
    assert floor == {(seg, start) for seg, start in expected if (seg, start - WINDOW_MS) not in expected}
    gated = [a for a in firing if a["severity"] in ("error", "critical")]
    # every alert at or above "error" is printed, with its rule, window and value
    assert f"gate failed: {len(gated)} problem(s)" in done.stdout
    printed = [x for x in done.stdout.splitlines() if x.startswith("  FAIL ")]
    assert len(printed) == len(gated)
    for alert in gated:
        where = "".join(f" {k}={v}" for k, v in alert["segment"].items())
        assert (
            f"  FAIL {alert['rule']} ({alert['severity']}) fired for fraud-detector v1{where} in "
            f"[{alert['window']['start']}, {alert['window']['end']}): accuracy "
            f"{alert['observed']:.6g} {alert['comparison']} {alert['threshold']:.6g}"
        ) in printed

    cases = _junit_cases(junit)
    model = "driftline.fraud-detector"
    assert {name for (cls, name) in cases if cls == model} >= {r.name for r in DEFAULT_RULES}
    failing = {name for (_, name), case in cases.items() if not case.is_passed}
    assert "accuracy-floor" in failing
    assert failing == {a["rule"] for a in gated}
    result = cases[(model, "accuracy-floor")].result[0]
    assert isinstance(result, junitparser.Failure)
    assert len(result.text.splitlines()) == sum(1 for a in gated if a["rule"] == "accuracy-floor")


def test_fail_on_error_passes_a_stationary_stream(tmp_path: Path) -> None:
    traffic = simulate(4800, events_per_s=20.0, seed=5)
    junit = tmp_path / "gate.xml"
    done, _ = _run(tmp_path, traffic, "--fail-on", "error", "--expect-no-retraining", "--junit", str(junit))

    assert done.returncode == 0, done.stdout
    assert _independent_floor_breaches(traffic) == set()
    assert "gate passed" in done.stdout
    cases = _junit_cases(junit)
    assert cases and all(case.is_passed for case in cases.values())
    assert ("driftline.fraud-detector", RETRAINING_CASE) in cases


def _first_and_last_window_x1(traffic) -> tuple[list[float], list[float]]:
    t0 = traffic.predictions[0]["timestamp"]
    last = max(row["timestamp"] for row in traffic.predictions) // WINDOW_MS * WINDOW_MS
    first = [r["features"]["x1"] for r in traffic.predictions if r["timestamp"] < t0 + WINDOW_MS]
    final = [r["features"]["x1"] for r in traffic.predictions if r["timestamp"] >= last]
    return first, final


def test_fail_on_drift_fails_a_drifted_stream_through_the_command_line(tmp_path: Path) -> None:
    # four windows; x1 shifts by 1.5 standard deviations from the third on
    traffic = simulate(4800, events_per_s=20.0, feature_drift_at=0.5, seed=5)
    junit = tmp_path / "gate.xml"
    done, report = _run(tmp_path, traffic, "--fail-on-drift", "--junit", str(junit))

    # the oracle: scipy's two-sample KS test on the raw events sees the shift
    first, final = _first_and_last_window_x1(traffic)
    assert stats.ks_2samp(first, final).pvalue < 1e-12
    assert done.returncode == 1, done.stdout + done.stderr[-2000:]
    drifted = [w for w in report["windows"] if w["dataset_drift"]]
    t0 = traffic.predictions[0]["timestamp"] // WINDOW_MS * WINDOW_MS
    # only windows after the shift (from the third) drift; the last one always does
    assert drifted and all(rfc3339_to_ms(w["window_start"]) >= t0 + 2 * WINDOW_MS for w in drifted)
    assert any(rfc3339_to_ms(w["window_start"]) == t0 + 3 * WINDOW_MS and not w["segment"] for w in drifted)
    printed = [x for x in done.stdout.splitlines() if x.startswith("  FAIL ")]
    assert len(printed) == len(drifted)
    assert all("dataset drift in fraud-detector v1" in x and "x1" in x for x in printed)
    cases = _junit_cases(junit)
    assert not cases[("driftline.fraud-detector", DRIFT_CASE)].is_passed


def test_fail_on_drift_passes_a_stationary_stream_through_the_command_line(tmp_path: Path) -> None:
    traffic = simulate(4800, events_per_s=20.0, seed=5)
    done, report = _run(tmp_path, traffic, "--fail-on-drift")

    first, final = _first_and_last_window_x1(traffic)
    assert stats.ks_2samp(first, final).pvalue > 0.01
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert report["windows"] and not [w for w in report["windows"] if w["dataset_drift"]]
    assert "gate passed" in done.stdout


def test_bad_severity_is_a_usage_error(tmp_path: Path) -> None:
    args = ["replay", "--predictions", "p", "--ground-truth", "g", "--report", "r", "--fail-on", "severe"]
    done = subprocess.run(
        [sys.executable, "-m", "driftline", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "--fail-on" in done.stderr and "error" in done.stderr


# -- the verdict itself, on hand-made reports ------------------------------------------------------


def _alert(rule: str, severity: str, model: str = "m", start: str = "2026-01-01T00:00:00.000Z") -> dict:
    return {
        "type": "io.driftline.alert.firing",
        "data": {
            "rule": rule,
            "severity": severity,
            "metric": "accuracy",
            "model_id": model,
            "model_version": "1",
            "segment": {},
            "window": {"start": start, "end": "2026-01-01T00:01:00.000Z"},
            "observed": 0.4,
            "threshold": 0.5,
            "comparison": "<",
        },
    }


def _window(model: str, drifted: bool) -> dict:
    return {
        "model_id": model,
        "model_version": "1",
        "segment": {},
        "window_start": "2026-01-01T00:00:00.000Z",
        "window_end": "2026-01-01T00:01:00.000Z",
        "dataset_drift": drifted,
        "drift": [{"feature": "x1", "kind": "feature", "drifted": drifted}],
    }


RULES = {
    "m": [Rule(name="warn", metric="accuracy", comparison="<", threshold=0.5, severity="warning")],
    "n": [Rule(name="warn", metric="accuracy", comparison="<", threshold=0.5, severity="warning")],
}


@pytest.mark.parametrize(
    ("fail_on", "failing"),
    [
        (None, set()),
        ("critical", {("m", "crit")}),
        ("error", {("m", "crit"), ("m", "err")}),
        ("warning", {("m", "crit"), ("m", "err"), ("m", "warn")}),
        ("info", {("m", "crit"), ("m", "err"), ("m", "warn"), ("m", "info")}),
    ],
)
def test_severity_threshold_is_inclusive_and_ordered(fail_on, failing) -> None:
    report = {
        "alerts": [
            _alert("crit", "critical"),
            _alert("err", "error"),
            _alert("warn", "warning"),
            _alert("info", "info"),
            {"type": "io.driftline.alert.resolved", "data": _alert("x", "critical")["data"]},
        ],
        "windows": [_window("m", False), _window("n", False)],
        "retraining_requests": [],
    }
    cases = judge(report, RULES, GateOptions(fail_on=fail_on))
    assert {(c.model_id, c.name) for c in failed(cases)} == failing
    # every rule of every model is a case, failing or not; the resolved alert is no case of its own
    assert {(c.model_id, c.name) for c in cases} == {("m", n) for n in ("warn", "crit", "err", "info")} | {
        ("n", "warn")
    }
    # alerts below the gate are kept as notes, so the JUnit file still shows them
    assert sum(len(c.failures) + len(c.notes) for c in cases) == 4


def test_drift_and_retraining_gates() -> None:
    request = {
        "data": {
            "model_id": "n",
            "model_version": "1",
            "reason": "accuracy-drop",
            "idempotency_key": "k" * 32,
            "window": {"start": "2026-01-01T00:00:00.000Z", "end": "2026-01-01T00:01:00.000Z"},
        }
    }
    report = {
        "alerts": [],
        "windows": [_window("m", True), _window("n", False)],
        "retraining_requests": [request],
    }
    assert failed(judge(report, RULES, GateOptions())) == []
    cases = judge(report, RULES, GateOptions(fail_on_drift=True, expect_no_retraining=True))
    assert {(c.model_id, c.name) for c in failed(cases)} == {("m", DRIFT_CASE), ("n", RETRAINING_CASE)}
    drift = next(c for c in cases if c.name == DRIFT_CASE and c.model_id == "m")
    assert "x1" in drift.failures[0]


def test_junit_names_survive_control_characters(tmp_path: Path) -> None:
    report = {
        "alerts": [_alert("r\x1b[2J", "critical", model="m\nfake")],
        "windows": [],
        "retraining_requests": [],
    }
    path = tmp_path / "j.xml"
    path.write_bytes(junit_xml(judge(report, {}, GateOptions(fail_on="error"))))
    cases = _junit_cases(path)
    assert list(cases) == [("driftline.m\\nfake", "r\\x1b[2J")]
