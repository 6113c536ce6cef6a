"""EmbeddedBroker lifecycle and the Kafka settings/admin helpers, against a real tansu."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from driftline.platform.broker import BrokerStartError, EmbeddedBroker
from driftline.platform.kafka import (
    RDKAFKA_LOG,
    KafkaSettings,
    confluent_config,
    ensure_topics,
    quick_join_consumer_config,
    wait_for_broker,
)


def _port_accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_start_serves_metadata_on_loopback_and_stop_kills_it(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_path=tmp_path / "b.log")
    with broker:
        host, port = broker.bootstrap_servers.split(":")
        assert host == "127.0.0.1"
        metadata = AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(timeout=5)
        assert [b.port for b in metadata.brokers.values()] == [int(port)]
        pid = broker.pid
        assert pid is not None
    assert not broker.is_running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not _port_accepts(int(port))
    with pytest.raises(RuntimeError):
        _ = broker.bootstrap_servers
    assert (tmp_path / "b.log").exists()


def test_port_conflict_is_detected_and_retried_on_a_fresh_port(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tansu exits 0 on EADDRINUSE *after* logging "listening on"; the session broker's port
    is offered first, so the first attempt must fail and the second succeed elsewhere."""
    import driftline.platform.broker as broker_module

    taken = broker.port
    assert taken is not None
    offered = iter([taken, taken])
    monkeypatch.setattr(broker_module, "free_loopback_port", lambda: next(offered, 0) or _fresh())
    with EmbeddedBroker(max_attempts=4) as second:
        assert second.port not in (taken, None)
        wait_for_broker(KafkaSettings(second.bootstrap_servers), timeout=5)
    assert broker.is_running  # the conflict did not disturb the broker that owns the port


def _fresh() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_fixed_port_conflict_raises_after_one_attempt(broker: EmbeddedBroker) -> None:
    with pytest.raises(BrokerStartError, match="1 attempt"):
        EmbeddedBroker(port=broker.port, start_timeout=3).start()


def test_wait_for_broker_times_out_on_a_closed_port() -> None:
    with pytest.raises(TimeoutError):
        wait_for_broker(KafkaSettings(f"127.0.0.1:{_fresh()}"), timeout=1.0)


def test_ensure_topics_creates_exact_partitions_and_is_idempotent(
    kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    wanted = {f"{unique_prefix}a": 3, f"{unique_prefix}b": 1}
    ensure_topics(kafka_settings, wanted)
    ensure_topics(kafka_settings, wanted)  # second call: TOPIC_ALREADY_EXISTS path is fine
    topics = AdminClient(confluent_config(kafka_settings)).list_topics(timeout=5).topics
    assert {name: len(topics[name].partitions) for name in wanted} == wanted


def test_settings_from_env_reads_password_file_and_never_prints_it(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t-value\n", encoding="utf-8")
    settings = KafkaSettings.from_env(
        environ={
            "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "DRIFTLINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "DRIFTLINE_KAFKA_SASL_USERNAME": "svc",
            "DRIFTLINE_KAFKA_SASL_PASSWORD_FILE": str(secret),
            "DRIFTLINE_KAFKA_SSL_CAFILE": "/etc/ca.pem",
        }
    )
    assert settings.sasl_password == "s3cr3t-value"
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in str(settings)
    assert confluent_config(settings, group_id="g", enable_auto_commit=False) == {
        "bootstrap.servers": "127.0.0.1:1",
        "client.id": "driftline",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "s3cr3t-value",
        "ssl.ca.location": "/etc/ca.pem",
        "group.id": "g",
        "enable.auto.commit": False,
        "logger": RDKAFKA_LOG,  # librdkafka's lines through logging, repeats summarised
    }


def test_settings_from_env_rejects_ambiguous_or_missing_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="BOOTSTRAP_SERVERS"):
        KafkaSettings.from_env(environ={})
    with pytest.raises(ValueError, match="only one"):
        KafkaSettings.from_env(
            prefix="X_",
            environ={
                "X_BOOTSTRAP_SERVERS": "h:1",
                "X_SASL_PASSWORD": "a",
                "X_SASL_PASSWORD_FILE": str(tmp_path / "pw"),
            },
        )


def test_overrides_keep_python_level_keys_and_none_removes() -> None:
    config = confluent_config(KafkaSettings("h:1"), error_cb=print, client_id=None, **{"linger.ms": 5})
    assert config == {
        "bootstrap.servers": "h:1",
        "security.protocol": "PLAINTEXT",
        "error_cb": print,
        "linger.ms": 5,
        "logger": RDKAFKA_LOG,
    }
    assert quick_join_consumer_config() == {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}


def test_settings_from_env_reads_password_variable_under_a_custom_prefix() -> None:
    settings = KafkaSettings.from_env(
        prefix="APP_KAFKA_",
        environ={
            "APP_KAFKA_BOOTSTRAP_SERVERS": "h:1",
            "APP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "APP_KAFKA_SASL_MECHANISM": "PLAIN",
            "APP_KAFKA_SASL_USERNAME": "svc",
            "APP_KAFKA_SASL_PASSWORD": "pw-123",
            "APP_KAFKA_CLIENT_ID": "x",
        },
    )
    assert (settings.sasl_password, settings.client_id, settings.security_protocol) == (
        "pw-123",
        "x",
        "SASL_PLAINTEXT",
    )
    assert "pw-123" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        # a password alone used to be read and then ignored: an unauthenticated connection
        (
            {"SASL_PASSWORD": "pw"},
            "DRIFTLINE_KAFKA_SASL_PASSWORD is set but DRIFTLINE_KAFKA_SECURITY_PROTOCOL is",
        ),
        (
            {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "PLAIN", "SASL_USERNAME": "u"},
            "DRIFTLINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs DRIFTLINE_KAFKA_SASL_PASSWORD",
        ),
        (
            {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_USERNAME": "u", "SASL_PASSWORD": "pw"},
            "DRIFTLINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs DRIFTLINE_KAFKA_SASL_MECHANISM",
        ),
        ({"SECURITY_PROTOCOL": "TLS"}, "DRIFTLINE_KAFKA_SECURITY_PROTOCOL must be one of"),
        ({"SSL_CAFILE": "/ca.pem"}, "DRIFTLINE_KAFKA_SSL_CAFILE is set but"),
        (
            {
                "SECURITY_PROTOCOL": "SASL_SSL",
                "SASL_MECHANISM": "GSSAPI",
                "SASL_USERNAME": "u",
                "SASL_PASSWORD": "p",
            },
            "DRIFTLINE_KAFKA_SASL_MECHANISM must be one of",
        ),
    ],
)
def test_an_incomplete_or_contradictory_security_configuration_names_the_variable(env, message) -> None:
    environ = {
        "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS": "h:1",
        **{f"DRIFTLINE_KAFKA_{k}": v for k, v in env.items()},
    }
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        KafkaSettings.from_env(environ=environ)
    assert "pw" not in str(err.value).replace("PASSWORD", "")
