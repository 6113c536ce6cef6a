"""The one way driftline serves JSON over HTTP (worker ``/healthz``, ``status --serve``).

Both are read-only endpoints for probes and dashboards, so they share what a probe relies on:
strict JSON (no NaN), an exact ``Content-Length``, ``Cache-Control: no-store`` so a proxy never
answers for a dead process, request lines at DEBUG only (a probe every second would drown the
log), and a daemon thread that never keeps a stopping process alive.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


class JsonServer(ThreadingHTTPServer):
    """A threading HTTP server whose ``start`` serves on a named daemon thread."""

    daemon_threads = True
    thread_name = "driftline-http"

    def start(self) -> threading.Thread:
        """Serve on a daemon thread (for tests and embedding); stop with ``shutdown()``."""
        thread = threading.Thread(target=self.serve_forever, name=self.thread_name, daemon=True)
        thread.start()
        return thread


class JsonHandler(BaseHTTPRequestHandler):
    """Subclasses implement ``do_GET`` with ``send_json``; ``label`` names them in DEBUG lines."""

    label = "http server"

    def send_json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body, allow_nan=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(f"{self.label}: " + format, *args)
