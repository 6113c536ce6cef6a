"""One set of documented variables configures every client, and an incomplete set stops
start-up naming the variable (issue 19, item 4)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from driftline.platform.config import load_config
from driftline.platform.kafka import confluent_config, settings_for
from driftline.streams.app import DriftlineApp
from driftline.streams.catalog import ModelCatalog

ROOT = Path(__file__).resolve().parent.parent
SASL = {
    "DRIFTLINE_BOOTSTRAP_SERVERS": "kafka-1:9093",
    "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "DRIFTLINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "DRIFTLINE_KAFKA_SASL_USERNAME": "driftline",
    "DRIFTLINE_KAFKA_SASL_PASSWORD": "pw-not-in-logs",
}
EXPECTED = {
    "bootstrap.servers": "kafka-1:9093",
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "driftline",
    "sasl.password": "pw-not-in-logs",
}


def _sasl_of(config: dict) -> dict:
    return {k: config.get(k) for k in EXPECTED}


def test_the_documented_variables_reach_every_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, SASL settings were read only when DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS was set: with
    the documented DRIFTLINE_BOOTSTRAP_SERVERS every client connected without authentication."""
    for name, value in SASL.items():
        monkeypatch.setenv(name, value)
    config = load_config(environ=os.environ)
    # worker (and replay --broker, demo: they build the same app), with Faust's own credentials
    app = DriftlineApp(config, ModelCatalog(config))
    assert _sasl_of(confluent_config(app.settings)) == EXPECTED
    credentials = app.faust.conf.broker_credentials
    assert (credentials.username, credentials.password, credentials.mechanism.value) == (
        "driftline",
        "pw-not-in-logs",
        "SCRAM-SHA-512",
    )
    assert credentials.ssl_context is not None  # SASL_SSL: TLS too
    # the notifier and the history sink resolve their settings the same way
    assert _sasl_of(confluent_config(settings_for(config))) == EXPECTED
    from driftline.platform.store.db import session_factory
    from driftline.streams.sink import HistorySink

    sink = HistorySink(config, session_factory("sqlite://"), create_topics=False)
    assert _sasl_of(confluent_config(sink.settings)) == EXPECTED
    # the trainer example (the trainer helper takes its settings from it)
    spec = importlib.util.spec_from_file_location("example_trainer", ROOT / "examples" / "trainer.py")
    assert spec is not None and spec.loader is not None
    trainer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trainer)
    assert _sasl_of(confluent_config(trainer._settings(None))) == EXPECTED
    assert "pw-not-in-logs" not in repr(app.settings)


@pytest.mark.parametrize(
    "args",
    [
        ["worker", "--no-checkpoints"],
        ["notifier"],
        ["history"],
        [
            "replay",
            "--predictions",
            "p.jsonl",
            "--ground-truth",
            "g.jsonl",
            "--report",
            "r.json",
            "--broker",
            "h:1",
        ],
    ],
    ids=["worker", "notifier", "history", "replay"],
)
def test_an_incomplete_security_configuration_stops_start_up_naming_the_variable(
    tmp_path: Path, args
) -> None:
    (tmp_path / "p.jsonl").write_text("")
    (tmp_path / "g.jsonl").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE")}
    env.update(
        DRIFTLINE_BOOTSTRAP_SERVERS="127.0.0.1:1",
        DRIFTLINE_STORE_URL=f"sqlite:///{tmp_path / 's.sqlite'}",
        DRIFTLINE_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        DRIFTLINE_KAFKA_SASL_USERNAME="driftline",
        DRIFTLINE_KAFKA_SASL_PASSWORD="pw-not-in-logs",
    )
    done = subprocess.run(
        [sys.executable, "-m", "driftline", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "driftline: error: DRIFTLINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs DRIFTLINE_KAFKA_SASL_MECHANISM"
    )
    assert "pw-not-in-logs" not in done.stderr + done.stdout
