"""The deployment files hang together: docker-compose.yml, the Dockerfile, Prometheus and
Grafana configuration, checked without Docker (which CI does not have).

What would break a ``docker compose up`` or an empty dashboard panel is checked here: a
mount of a file that does not exist, a ``depends_on`` on a missing service, a driftline
sub-command that the CLI does not have, and a PromQL query naming a metric driftline does
not export (a typo in the dashboard fails CI instead of showing "No data").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftline.apps.cli import build_parser
from driftline.platform import metrics
from driftline.platform.config import load_config, parse_duration_ms

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "driftline.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
SECRETS_SCRIPT = ROOT / "deploy" / "secrets" / "generate.sh"
#: series Prometheus itself provides that rules and dashboards may query
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
_METRIC = re.compile(r"\b(driftline_[a-z0-9_]+)\b")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def _driftline_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run the image built from this repository (entrypoint: driftline)."""
    return {name: s for name, s in _services(compose).items() if "build" in s}


def _require(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is required in CI (Debian package: prometheus)")
        pytest.skip(f"{tool} not installed (Debian package: prometheus)")
    return found


def test_every_service_has_an_image_or_a_build(compose: dict[str, Any]) -> None:
    missing = [name for name, s in _services(compose).items() if "image" not in s and "build" not in s]
    assert missing == []
    assert {
        "kafka",
        "postgres",
        "db-migrate",
        "worker",
        "notifier",
        "history",
        "status",
        "prometheus",
        "grafana",
    } <= set(_services(compose))
    assert _services(compose)["kafka"]["image"] == "apache/kafka:3.9.0"
    assert _services(compose)["postgres"]["image"].startswith("postgres:16")


def test_build_context_has_a_dockerfile(compose: dict[str, Any]) -> None:
    for name, service in _driftline_services(compose).items():
        context = service["build"] if isinstance(service["build"], str) else service["build"]["context"]
        assert (ROOT / context / "Dockerfile").is_file(), name
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    # the image installs what the tests ran: every pip step in it is pinned by constraints.txt
    wheel_steps = [line for line in dockerfile.splitlines() if line.startswith("RUN pip wheel")]
    assert wheel_steps and all("-c constraints.txt" in line for line in wheel_steps), wheel_steps
    for source in re.findall(r"^COPY (?:--\S+ )*(\S+) \S+$", dockerfile, flags=re.M):
        if not source.startswith("/"):
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_every_mounted_path_exists(compose: dict[str, Any]) -> None:
    named_volumes = set(compose.get("volumes") or {})
    for name, service in _services(compose).items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source in named_volumes:
                continue
            assert source.startswith("./"), f"{name}: {source} is neither a named volume nor a repo path"
            assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
        for env_file in service.get("env_file", []):
            assert (ROOT / env_file).exists(), f"{name}: env_file {env_file} does not exist"


def test_secrets_are_files_the_generator_writes_and_never_inline(compose: dict[str, Any]) -> None:
    """Secret files are created per deployment (never committed): each one must be written by
    deploy/secrets/generate.sh, and no password may appear in the compose file itself."""
    script = SECRETS_SCRIPT.read_text()
    secrets = compose["secrets"]
    for name, spec in secrets.items():
        path = Path(spec["file"])
        assert path.parent == Path("deploy/secrets"), name
        assert re.search(rf"> {re.escape(path.name)}\b", script), f"generate.sh does not write {path.name}"
    for name, service in _services(compose).items():
        for secret in service.get("secrets", []):
            assert secret in secrets, f"{name} uses undefined secret {secret}"
        for key, value in (service.get("environment") or {}).items():
            assert not re.search(r"PASSWORD$|SECRET$|TOKEN$", key), f"{name}: {key} is set inline"
            assert "://" not in str(value) or "@" not in str(value), f"{name}: credentials in {key}"


def test_kafka_and_postgres_have_healthchecks_and_dependants_wait_for_them(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name in ("kafka", "postgres", "worker", "prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"], name
    assert services["worker"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["db-migrate"]["condition"] == "service_completed_successfully"
    assert services["db-migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # the store's readers and writers start after the schema is at head
    for name in ("notifier", "history", "status"):
        assert services[name]["depends_on"]["db-migrate"]["condition"] == "service_completed_successfully"
    assert services["history"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert "8780/healthz" in " ".join(services["status"]["healthcheck"]["test"])
    worker = build_parser().parse_args(services["worker"]["command"])
    assert f"{worker.health_port}/healthz" in " ".join(services["worker"]["healthcheck"]["test"])


def test_published_ports_bind_loopback_only(compose: dict[str, Any]) -> None:
    published = {
        name: [str(p) for p in s.get("ports", [])] for name, s in _services(compose).items() if s.get("ports")
    }
    assert published == {
        "status": ["127.0.0.1:8780:8780"],
        "prometheus": ["127.0.0.1:9090:9090"],
        "grafana": ["127.0.0.1:3000:3000"],
    }


def test_depends_on_names_real_services(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert dependency != name


def test_every_driftline_command_is_a_real_subcommand(compose: dict[str, Any]) -> None:
    """The image's entrypoint is ``driftline``: each command must parse with the real CLI."""
    parser = build_parser()
    commands = {name: s["command"] for name, s in _driftline_services(compose).items()}
    for name, argv in commands.items():
        assert isinstance(argv, list), f"{name}: use the list form of command"
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # argparse exits on an unknown sub-command or option
            raise AssertionError(f"{name}: `driftline {' '.join(argv)}` is not a valid command") from exc
        assert callable(args.func), name
    assert {"db-migrate", "worker", "notifier", "history", "status"} <= set(commands)
    worker = parser.parse_args(commands["worker"])
    assert worker.metrics_port == 9108
    history = parser.parse_args(commands["history"])
    assert parse_duration_ms(history.retention) == 90 * 86_400_000
    assert (history.from_report, history.idle_timeout) == (None, None)  # a long-running sink
    status = parser.parse_args(commands["status"])
    assert (status.serve, status.host, status.port) == (True, "0.0.0.0", 8780)
    scrape = yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]
    targets = scrape[0]["dns_sd_configs"][0]
    assert targets == {"names": ["worker"], "type": "A", "port": 9108, "refresh_interval": "30s"}
    # only what serves /metrics is scraped, on the port it serves
    notifier = parser.parse_args(commands["notifier"])
    assert notifier.metrics_port == 9108
    assert [job["job_name"] for job in scrape] == ["driftline", "notifier", "prometheus"]
    assert scrape[1]["dns_sd_configs"][0] == {**targets, "names": ["notifier"]}
    services = _services(compose)
    for name in ("worker", "notifier"):
        assert services[name]["environment"]["DRIFTLINE__METRICS_HOST"] == "0.0.0.0"
        assert "9108" in services[name]["expose"]


def test_the_mounted_driftline_config_loads(compose: dict[str, Any]) -> None:
    env = _services(compose)["worker"]["environment"]
    mounted = next(v for v in _services(compose)["worker"]["volumes"] if v.startswith("./deploy/driftline"))
    host, container = mounted.split(":")[:2]
    config_file = ROOT / host / Path(env["DRIFTLINE_CONFIG"]).relative_to(container)
    config = load_config(config_file, environ={k: str(v) for k, v in env.items()})
    assert config.bootstrap_servers == "kafka:9092"
    assert config.metrics_host == "0.0.0.0"
    assert config.metrics_port == 9108


def _dashboard_queries() -> Iterator[str]:
    dashboard = json.loads(DASHBOARD.read_text())

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        yield query["query"] if isinstance(query, dict) else query


def _rule_expressions() -> Iterator[str]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule["expr"]


def _unknown_metrics(expr: str, exported: frozenset[str]) -> set[str]:
    return {name for name in _METRIC.findall(expr) if name not in exported}


def test_the_name_check_catches_a_typo() -> None:
    exported = metrics.exported_metric_names()
    assert _unknown_metrics("rate(driftline_events_late_total[5m])", exported) == set()
    assert _unknown_metrics("rate(driftline_event_late_total[5m])", exported) == {
        "driftline_event_late_total"
    }
    assert _unknown_metrics("driftline_window_accuracy_bucket", exported) == {
        "driftline_window_accuracy_bucket"
    }


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_queries_name_only_exported_metrics(source: str) -> None:
    exported = metrics.exported_metric_names()
    queries = list(_dashboard_queries() if source == "dashboard" else _rule_expressions())
    assert len(queries) >= 8
    for expr in queries:
        assert not _unknown_metrics(expr, exported), (
            f"{source}: {expr!r} names metrics driftline does not export"
        )
        names = set(_METRIC.findall(expr))
        assert names or set(re.findall(r"\b[A-Za-z_]+\b", expr)) & PROMETHEUS_SERIES, expr


def test_dashboard_covers_the_issue_and_uses_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = " ".join(_dashboard_queries())
    for metric in (
        "driftline_window_accuracy",
        "driftline_window_label_coverage",
        "driftline_window_predictions",
        "driftline_feature_drift_statistic",
        "driftline_alerts_emitted_total",
        "driftline_event_time_lag_seconds",
        "driftline_events_accepted_total",
    ):
        assert metric in queries, metric
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid, panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/driftline.yml").read_text())
    grafana = _grafana_mounts(yaml.safe_load(COMPOSE.read_text()))
    assert grafana[provider["providers"][0]["options"]["path"]] == "./deploy/grafana/dashboards"


def _grafana_mounts(compose: dict[str, Any]) -> dict[str, str]:
    return {v.split(":")[1]: v.split(":")[0] for v in compose["services"]["grafana"]["volumes"]}


def test_promtool_accepts_the_rules_and_the_config() -> None:
    promtool = _require("promtool")
    for args in (["check", "rules", str(RULES)], ["check", "config", str(PROMETHEUS)]):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
