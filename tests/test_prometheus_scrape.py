"""A real Prometheus server scrapes driftline's metrics endpoint and evaluates the shipped
alerting rules against it.

The process under test serves its registry on loopback after real window evaluations; the
Prometheus binary (Debian package ``prometheus``) scrapes it every second. The values read
back through the HTTP query API must equal the oracles exactly (Prometheus prints floats
with round-trip precision), and every rule of ``deploy/prometheus/rules.yml`` must load and
evaluate without error, with the drift rule active for the drifted model.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from sklearn.metrics import accuracy_score
from test_metrics_export import evaluate_window, make_catalog

from driftline.platform import metrics
from driftline.platform.config import TopicConfig
from driftline.streams.evaluation import Evaluator

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "rules.yml"
DEADLINE_S = 45.0

pytestmark = pytest.mark.timeout(90)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def require_prometheus() -> str:
    """The Prometheus server binary: skipped locally without it, a failure in CI."""
    found = shutil.which("prometheus")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("the prometheus server binary is required in CI (Debian package: prometheus)")
        pytest.skip("prometheus not installed (Debian package: prometheus)")
    return found


@contextlib.contextmanager
def running_prometheus(
    binary: str, targets: list[str], workdir: Path, rule_files: tuple[Path, ...] = ()
) -> Iterator[str]:
    """A Prometheus server on loopback scraping ``targets`` every second (job ``driftline``);
    yields its base URL and stops it on exit, printing its log if it died abnormally."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(f) for f in rule_files],
        "scrape_configs": [{"job_name": "driftline", "static_configs": [{"targets": targets}]}],
    }
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()
        if process.returncode not in (0, -15):
            print((workdir / "prometheus.log").read_text())


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    return require_prometheus()


@pytest.fixture()
def metrics_endpoint() -> Iterator[int]:
    server, thread = metrics.start_metrics_server(0, host="127.0.0.1")
    try:
        yield int(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture()
def prometheus(prometheus_bin: str, metrics_endpoint: int, tmp_path: Path) -> Iterator[str]:
    """A Prometheus server scraping the endpoint every second, with the shipped rules."""
    with running_prometheus(prometheus_bin, [f"127.0.0.1:{metrics_endpoint}"], tmp_path, (RULES,)) as url:
        yield url


def query(base: str, expr: str) -> list[dict[str, Any]]:
    body = _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _wait_for(base: str, expr: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            result = query(base, expr)
        except OSError:  # server still starting
            result = []
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"Prometheus returned nothing for {expr} within {DEADLINE_S:.0f}s")


def test_prometheus_scrapes_exact_values_and_evaluates_the_rules(
    prometheus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_id = f"scrape-{uuid.uuid4().hex[:8]}"
    prefix = f"s{uuid.uuid4().hex[:6]}."
    config, catalog = make_catalog(model_id)
    monkeypatch.setattr(metrics, "_state", metrics._State())  # forget other tests' progress
    metrics.configure(replace(config, topics=TopicConfig(prefix=prefix)), catalog)
    window = evaluate_window(catalog, Evaluator(catalog), model_id, feature_drift_at=0.0)
    metrics.observe_evaluation(window.evaluation)
    # the join's counters are cumulative: 3 then 7 late predictions are 7 in all
    metrics.observe_progress({"late_predictions": 3}, 1_767_225_600_000, [model_id])
    metrics.observe_progress({"late_predictions": 7}, 1_767_225_660_000, [model_id])

    accuracy = _wait_for(prometheus, f'driftline_window_accuracy{{model="{model_id}"}}')
    assert len(accuracy) == 1
    assert float(accuracy[0]["value"][1]) == accuracy_score(window.y_true, window.y_pred)
    assert accuracy[0]["metric"]["job"] == "driftline"
    predictions = query(prometheus, f'driftline_window_predictions{{model="{model_id}"}}')
    assert float(predictions[0]["value"][1]) == 400
    drift = query(prometheus, f'driftline_feature_drift_statistic{{model="{model_id}",feature="x1"}}')
    expected = next(d.statistic for d in window.evaluation.result.drift if d.feature == "x1")
    assert float(drift[0]["value"][1]) == expected
    late_scraped = query(prometheus, f'driftline_events_late_total{{topic="{prefix}predictions"}}')
    assert float(late_scraped[0]["value"][1]) == 7
    watermark = query(prometheus, f'driftline_watermark_timestamp_seconds{{model="{model_id}"}}')
    assert float(watermark[0]["value"][1]) == 1_767_225_660

    # the shipped rules: all load, all evaluate cleanly, and the drift rule is active
    alerts = _wait_for(prometheus, f'ALERTS{{alertname="DriftlineDatasetDrift",model="{model_id}"}}')
    assert alerts[0]["metric"]["alertstate"] in ("pending", "firing")
    groups = _get(f"{prometheus}/api/v1/rules")["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    shipped = [
        rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]
    assert sorted(r["name"] for r in rules) == sorted(shipped)
    deadline = time.monotonic() + DEADLINE_S
    while any(r.get("lastEvaluation", "").startswith("0001") for r in rules) and time.monotonic() < deadline:
        time.sleep(0.25)
        rules = [
            rule for group in _get(f"{prometheus}/api/v1/rules")["data"]["groups"] for rule in group["rules"]
        ]
    assert [(r["name"], r.get("lastError", "")) for r in rules if r["health"] != "ok"] == []
