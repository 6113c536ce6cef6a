"""Kafka client configuration and topic administration shared by every driftline client.

One :class:`KafkaSettings` describes how to reach the cluster (:func:`settings_for` makes it
for every client from the configuration and the ``DRIFTLINE_KAFKA_*`` variables);
:func:`confluent_config` turns it into a confluent-kafka dict, so security settings are written
once and the producer, the consumers and the admin client cannot drift apart. Every topic name
is spelt once, in :class:`TopicNames`.

Topics are created up front with explicit partition counts (:func:`ensure_topics`):
the embedded broker (and many real clusters) auto-create topics on first use with a
default partition count, which silently breaks the co-partitioning the join relies on.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from confluent_kafka import Message

    from driftline.platform.config import Config

log = logging.getLogger(__name__)

DEFAULT_ENV_PREFIX = "DRIFTLINE_KAFKA_"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

# Keys that confluent-kafka (the Python layer) spells with underscores; every other
# keyword override is a librdkafka property whose dots were written as underscores.
_PYTHON_LEVEL_KEYS = frozenset(
    {"error_cb", "throttle_cb", "stats_cb", "oauth_cb", "on_delivery", "on_commit", "log_level", "logger"}
)

# The embedded broker makes a joining member wait session.timeout.ms / 2 (librdkafka's
# default 45 s -> 23 s per join). These values bring that to ~3 s. Real Kafka does not
# need them; on a production cluster they only make a paused consumer lose its
# partitions sooner, so they are opt-in (tests, the demo), never the default.
QUICK_JOIN_CONSUMER_CONFIG: Mapping[str, Any] = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
}


def quick_join_consumer_config() -> dict[str, Any]:
    """Consumer overrides that make group joins fast on the embedded broker (tests, demo)."""
    return dict(QUICK_JOIN_CONSUMER_CONFIG)


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Where the cluster is and how to authenticate; the password never appears in ``repr``."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    client_id: str = "driftline"
    replication_factor: int = 1

    def __post_init__(self) -> None:
        if not self.bootstrap_servers.strip():
            raise ValueError("bootstrap_servers must not be empty")
        if self.replication_factor < 1:
            raise ValueError(f"replication_factor must be >= 1, got {self.replication_factor}")

    def __repr__(self) -> str:
        # Written by hand (not only field(repr=False)) so a reader of a log line can
        # still tell whether a password was configured at all.
        password = "<redacted>" if self.sasl_password else None
        return (
            f"KafkaSettings(bootstrap_servers={self.bootstrap_servers!r}, "
            f"security_protocol={self.security_protocol!r}, sasl_mechanism={self.sasl_mechanism!r}, "
            f"sasl_username={self.sasl_username!r}, sasl_password={password!r}, "
            f"ssl_cafile={self.ssl_cafile!r}, client_id={self.client_id!r}, "
            f"replication_factor={self.replication_factor!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_env(
        cls,
        prefix: str = DEFAULT_ENV_PREFIX,
        environ: Mapping[str, str] | None = None,
        *,
        bootstrap_servers: str | None = None,
    ) -> KafkaSettings:
        """Read ``{prefix}BOOTSTRAP_SERVERS`` (unless ``bootstrap_servers`` is given),
        ``SECURITY_PROTOCOL``, ``SASL_MECHANISM``, ``SASL_USERNAME``, ``SASL_PASSWORD`` or
        ``SASL_PASSWORD_FILE``, ``SSL_CAFILE``, ``CLIENT_ID`` and ``REPLICATION_FACTOR``.

        Security settings are read whatever says where the cluster is, and an incomplete or
        contradictory set is an error naming the variable: a worker must never fall back to an
        unauthenticated connection without a word. The password may come from a file so that
        it can be mounted as a secret instead of sitting in the process environment (visible
        in ``/proc/*/environ``).
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(prefix + name)
            return value if value not in (None, "") else None

        bootstrap = bootstrap_servers or get("BOOTSTRAP_SERVERS")
        if bootstrap is None:
            raise ValueError(f"{prefix}BOOTSTRAP_SERVERS is not set")
        password = get("SASL_PASSWORD")
        password_file = get("SASL_PASSWORD_FILE")
        if password is not None and password_file is not None:
            raise ValueError(f"set only one of {prefix}SASL_PASSWORD and {prefix}SASL_PASSWORD_FILE")
        if password_file is not None:
            try:  # secret files conventionally end with a newline that is not part of the secret
                password = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                why = f"cannot read {password_file}: {exc.strerror}"
                raise ValueError(f"{prefix}SASL_PASSWORD_FILE: {why}") from None
        replication = get("REPLICATION_FACTOR")
        try:
            replication_factor = int(replication) if replication is not None else 1
        except ValueError:
            why = f"must be a whole number, not {replication!r}"
            raise ValueError(f"{prefix}REPLICATION_FACTOR {why}") from None
        settings = cls(
            bootstrap_servers=bootstrap,
            security_protocol=(get("SECURITY_PROTOCOL") or "PLAINTEXT").upper(),
            sasl_mechanism=get("SASL_MECHANISM"),
            sasl_username=get("SASL_USERNAME"),
            sasl_password=password,
            ssl_cafile=get("SSL_CAFILE"),
            client_id=get("CLIENT_ID") or "driftline",
            replication_factor=replication_factor,
        )
        settings.check(prefix)
        return settings

    def check(self, prefix: str = DEFAULT_ENV_PREFIX) -> None:
        """Refuse a security configuration that cannot be what was meant, naming the variable."""
        protocol = self.security_protocol
        if protocol not in SECURITY_PROTOCOLS:
            raise ValueError(
                f"{prefix}SECURITY_PROTOCOL must be one of {', '.join(SECURITY_PROTOCOLS)}, not {protocol!r}"
            )
        sasl = protocol.startswith("SASL_")
        if sasl:
            for name, value in (
                ("SASL_MECHANISM", self.sasl_mechanism),
                ("SASL_USERNAME", self.sasl_username),
                ("SASL_PASSWORD", self.sasl_password),
            ):
                if value is None:
                    also = " (or SASL_PASSWORD_FILE)" if name == "SASL_PASSWORD" else ""
                    raise ValueError(f"{prefix}SECURITY_PROTOCOL={protocol} needs {prefix}{name}{also}")
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ValueError(
                    f"{prefix}SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}, "
                    f"not {self.sasl_mechanism!r}"
                )
        else:
            for name, value in (
                ("SASL_MECHANISM", self.sasl_mechanism),
                ("SASL_USERNAME", self.sasl_username),
                ("SASL_PASSWORD", self.sasl_password),
            ):
                if value is not None:
                    raise ValueError(
                        f"{prefix}{name} is set but {prefix}SECURITY_PROTOCOL is {protocol}: "
                        f"set it to SASL_SSL (or SASL_PLAINTEXT) to use SASL"
                    )
        if self.ssl_cafile is not None and not protocol.endswith("SSL"):
            raise ValueError(
                f"{prefix}SSL_CAFILE is set but {prefix}SECURITY_PROTOCOL is {protocol}: "
                f"set it to SSL or SASL_SSL to use TLS"
            )

    def describe(self) -> str:
        """What a start-up line may say about the connection: never the secret."""
        who = f", SASL {self.sasl_mechanism} as {self.sasl_username!r}" if self.sasl_mechanism else ""
        return f"{self.bootstrap_servers} ({self.security_protocol}{who})"


def settings_for(config: Config, environ: Mapping[str, str] | None = None) -> KafkaSettings:
    """The client settings of every driftline client (worker, notifier, history, replay with
    ``--broker``, ...): the cluster from the configuration, security from the
    ``DRIFTLINE_KAFKA_*`` variables."""
    return KafkaSettings.from_env(environ=environ, bootstrap_servers=config.bootstrap_servers)


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Every topic's full name, from the configured prefix: the one place they are spelt."""

    predictions: str
    ground_truth: str
    join: str
    partials: str
    results: str
    alerts: str
    retraining: str
    dead_letter: str

    @classmethod
    def from_config(cls, config: Config) -> TopicNames:
        t = config.topics
        return cls(
            predictions=t.name("predictions"),
            ground_truth=t.name("ground-truth"),
            join=t.name("internal.join-input"),
            partials=t.name("internal.window-partials"),
            results=t.name("window-results"),
            alerts=t.name("alerts"),
            retraining=t.name("retraining-requests"),
            dead_letter=t.name("dead-letter"),
        )

    def partitions(self, config: Config) -> dict[str, int]:
        """Every topic with its explicit partition count, for creation up front."""
        t = config.topics
        return {
            self.predictions: t.predictions,
            self.ground_truth: t.ground_truth,
            self.join: t.join,
            self.partials: t.partials,
            self.results: t.results,
            self.alerts: t.alerts,
            self.retraining: t.retraining,
            self.dead_letter: t.dead_letter,
        }


class _Repeats(logging.Filter):
    """Let a librdkafka message through once per ``every_s`` seconds, then say how often it
    recurred: an unreachable broker makes librdkafka log the same refusal ~20 times a second,
    which buries whatever a person needs to read."""

    def __init__(self, every_s: float = 30.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.every_s, self.clock = every_s, clock
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = re.sub(r"\d+", "#", record.getMessage())
        now = self.clock()
        first, repeats = self._seen.get(key, (None, 0))
        if first is not None and now - first < self.every_s:
            self._seen[key] = (first, repeats + 1)
            return False
        self._seen[key] = (now, 0)
        if repeats:
            record.msg = f"{record.msg} (and {repeats} more like it in the last {self.every_s:g} s)"
        return True


#: where librdkafka's own log lines go (instead of raw lines on stderr), repeats summarised
RDKAFKA_LOG = logging.getLogger("driftline.librdkafka")
RDKAFKA_LOG.addFilter(_Repeats())


def confluent_config(settings: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """A confluent-kafka configuration dict for ``settings`` plus ``overrides``.

    Overrides may spell librdkafka properties with underscores (``group_id="g"`` becomes
    ``group.id``) or pass dotted keys via ``**{"group.id": "g"}``; Python-level keys such
    as ``error_cb``/``logger`` are kept as they are. An override of ``None`` removes a key.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.client_id,
        "security.protocol": settings.security_protocol,
        "logger": RDKAFKA_LOG,
    }
    if settings.sasl_mechanism is not None:
        config["sasl.mechanism"] = settings.sasl_mechanism
    if settings.sasl_username is not None:
        config["sasl.username"] = settings.sasl_username
    if settings.sasl_password is not None:
        config["sasl.password"] = settings.sasl_password
    if settings.ssl_cafile is not None:
        config["ssl.ca.location"] = settings.ssl_cafile
    for key, value in overrides.items():
        name = key if key in _PYTHON_LEVEL_KEYS or "." in key else key.replace("_", ".")
        if value is None:
            config.pop(name, None)
        else:
            config[name] = value
    return config


def record_headers(message: Message) -> dict[str, bytes | None]:
    """A consumed record's headers by name (the last of a repeated name wins, as ``dict()`` of
    the pairs would give). The client's type for headers is the producer's, which also allows
    a dict and ``str`` values; a consumed record has (name, bytes or None) pairs or None, and
    any ``str`` is encoded so every reader sees bytes."""
    headers = message.headers()
    if not headers:
        return {}
    pairs = headers.items() if isinstance(headers, dict) else headers
    return {name: value.encode() if isinstance(value, str) else value for name, value in pairs}


def record_position(message: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed record, which always has all three: the client
    types them Optional for messages not yet delivered, and the fallbacks only satisfy that."""
    return (message.topic() or "", message.partition() or 0, message.offset() or 0)


def _admin(settings: KafkaSettings) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient(confluent_config(settings))


def wait_for_broker(settings: KafkaSettings, timeout: float = 30.0) -> None:
    """Block until the cluster answers a metadata request, or raise ``TimeoutError`` with a
    message a person can act on."""
    admin = _admin(settings)
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"cannot reach Kafka at {settings.describe()} within {timeout:g} s ({_reason(last_error)}); "
                "check the address (--broker, DRIFTLINE_BOOTSTRAP_SERVERS or bootstrap_servers in the "
                "config), that the broker is running and reachable from here, and the "
                "DRIFTLINE_KAFKA_* security settings"
            )
        try:
            admin.list_topics(timeout=min(remaining, 1.0))
            return
        except Exception as exc:  # KafkaException: broker not reachable yet
            last_error = exc
            time.sleep(min(0.1, max(remaining, 0.0)))


def _reason(exc: Exception | None) -> str:
    if exc is None:
        return "no answer"
    error = exc.args[0] if exc.args else exc
    return str(getattr(error, "str", lambda: error)())


def ensure_topics(settings: KafkaSettings, partitions: Mapping[str, int], *, timeout: float = 10) -> None:
    """Create the missing topics with the given partition counts and wait until they are
    visible in metadata. Idempotent: existing topics are left alone (a partition count
    that differs from the request is logged, since partitions cannot be safely changed
    here and co-partitioned topics must agree).
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    if not partitions:
        return
    for name, count in partitions.items():
        if count < 1:
            raise ValueError(f"topic {name!r}: partitions must be >= 1, got {count}")
    deadline = time.monotonic() + timeout
    admin = _admin(settings)
    existing = admin.list_topics(timeout=timeout).topics
    missing = [name for name in partitions if name not in existing]
    if missing:
        futures = admin.create_topics(
            [NewTopic(name, partitions[name], settings.replication_factor) for name in missing],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=max(deadline - time.monotonic(), 0.1))
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
                log.debug("topic %s was created concurrently", name)
    while True:
        metadata = admin.list_topics(timeout=max(deadline - time.monotonic(), 0.1)).topics
        pending = [
            name
            for name in partitions
            if name not in metadata or metadata[name].error is not None or not metadata[name].partitions
        ]
        if not pending:
            break
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topics not visible in metadata after {timeout:g} s: {pending}")
        time.sleep(0.05)
    for name, count in partitions.items():
        actual = len(metadata[name].partitions)
        if actual != count:
            log.warning("topic %s has %d partitions, %d requested; left unchanged", name, actual, count)


#: the topic id a broker without topic ids (before Kafka 2.8, KIP-516) reports: all zero bits
_NO_TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"


def admin_client(settings: KafkaSettings) -> Any:
    """A confluent-kafka ``AdminClient`` with the shared settings; reuse it for repeated probes
    (each client holds its own connections and threads)."""
    return _admin(settings)


def topic_ids(admin: Any, names: Iterable[str], *, timeout: float = 5.0) -> dict[str, str]:
    """The broker's id of each named topic that exists (``""`` from a broker that has no topic
    ids); a topic that does not exist is left out. Raises ``KafkaException`` when the cluster
    does not answer.

    A topic's id is what tells the topic from another of the same name: a broker that lost
    its data (restarted empty, or the topic was deleted and recreated) serves new logs whose
    offsets start again at 0 under the old names. Describing does not auto-create a topic,
    as an unfiltered metadata request for it would on some brokers."""
    from confluent_kafka import KafkaError, KafkaException, TopicCollection

    wanted = sorted(set(names))
    if not wanted:
        return {}
    futures = admin.describe_topics(TopicCollection(wanted), request_timeout=timeout)
    ids: dict[str, str] = {}
    for name, future in futures.items():
        try:
            description = future.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                continue
            raise
        topic_id = str(description.topic_id) if description.topic_id is not None else ""
        ids[name] = "" if topic_id == _NO_TOPIC_ID else topic_id
    return ids


def log_end_offsets(
    admin: Any, partitions: Iterable[tuple[str, int]], *, timeout: float = 5.0
) -> dict[tuple[str, int], int]:
    """Each partition's log end offset (high watermark), in one request per broker. Raises
    ``KafkaException`` when the cluster does not answer. (The embedded broker reports it short:
    good enough to tell a partition with waiting data from an empty one, not for exact lag.)"""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    futures = admin.list_offsets(
        {TopicPartition(t, p): OffsetSpec.latest() for t, p in wanted}, request_timeout=timeout
    )
    return {(tp.topic, tp.partition): int(f.result(timeout=timeout).offset) for tp, f in futures.items()}
