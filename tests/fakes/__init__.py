"""Local stand-ins for alert destinations: real HTTP servers on 127.0.0.1 that validate payloads
the way the real APIs document and can be scripted to fail.

Each fake records every request (so tests count deliveries per ``dedup_key``) and answers from
a script of responses (e.g. ``500``, then ``429 Retry-After: 1``, then success) before falling
back to its normal behaviour. Validation runs *before* the script, so a malformed payload is
always a 400, as it would be in production.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from driftline.schemas import AlertData, AlertEvent, Window, alert_event


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Reply:
        return cls(
            status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})}
        )

    @classmethod
    def text(cls, status: int, text: str, headers: Mapping[str, str] | None = None) -> Reply:
        return cls(status, text.encode(), {"Content-Type": "text/html", **(headers or {})})


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it, and what it answered."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


class FakeServer:
    """A threaded HTTP server on a free loopback port. Subclasses implement :meth:`handle`."""

    #: Upper bound on one socket read/write, so a stuck client cannot hang a test.
    socket_timeout_s = 5.0

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        #: called with each request once it is recorded, before the answer goes out: a test
        #: can kill the client there, after the destination accepted but before it heard so
        self.before_reply: Callable[[Recorded], None] | None = None
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            timeout = FakeServer.socket_timeout_s

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = fake._respond(self.path, headers, body)
                recorded = Recorded("POST", self.path, headers, body, reply.status)
                with fake._lock:
                    fake.requests.append(recorded)
                if fake.before_reply is not None:
                    fake.before_reply(recorded)
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client died mid-request (a test killed it)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, replies: Iterable[Reply]) -> None:
        """Answer the next requests with these replies, in order, then behave normally."""
        with self._lock:
            self._script.extend(replies)

    def _respond(self, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        error = self.validate(path, headers, body)
        if error is not None:
            return error
        with self._lock:
            scripted = self._script.popleft() if self._script else None
        return scripted if scripted is not None else self.handle(path, headers, body)

    def validate(self, path: str, headers: Mapping[str, str], body: bytes) -> Reply | None:
        """The documented error for a malformed request, or ``None`` when it is well formed."""
        return None

    def handle(self, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """The normal (success) answer."""
        return Reply(200)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def sample_alert(
    status: str = "firing",
    *,
    rule: str = "accuracy-drop",
    segment: dict[str, str] | None = None,
    model_id: str = "churn",
    severity: str = "critical",
    links: dict[str, str] | None = None,
    key: str = "0123456789abcdef0123456789abcdef",
) -> AlertEvent:
    """The alert of docs/contracts.md (churn v3, accuracy 0.71 < 0.8 in region=eu), varied by keyword."""
    return alert_event(
        AlertData(
            dedup_key=key,
            status=status,  # type: ignore[arg-type]
            rule=rule,
            metric="accuracy",
            severity=severity,  # type: ignore[arg-type]
            model_id=model_id,
            model_version="v3",
            segment={"region": "eu"} if segment is None else segment,
            window=Window(start="2026-11-24T21:00:00.000Z", end="2026-11-24T21:05:00.000Z"),
            observed=0.71,
            threshold=0.8,
            comparison="<",
            evidence={"n_labelled": 512, "baseline": 0.86},
            links={} if links is None else links,
            starts_at="2026-11-24T21:05:00.000Z",
            ends_at="2026-11-24T22:10:00.000Z" if status == "resolved" else None,
        )
    )
