"""What the person running ``driftline demo`` sees while it runs.

On a terminal: a live table (``rich``) redrawn in place a few times a second (events sent,
windows open and closed, alerts firing, retraining requests), with each window, alert and
request printed above it as it happens. Anywhere else (a pipe, a CI log, a file): plain lines
without a single escape code, the same event lines plus a progress line every few seconds, so
a log shows that something is happening from the first second too.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

__all__ = ["DemoCounts", "DemoView"]

PLAIN_PROGRESS_EVERY_S = 5.0


@dataclass
class DemoCounts:
    """Counters shared by the demo's threads (each updates its own fields under ``lock``)."""

    predictions_total: int = 0
    first_window_ms: int = 0
    window_ms: int = 1
    predictions_sent: int = 0
    labels_sent: int = 0
    #: event time the serving app has reached: every window that started by then is open
    #: until the monitor says it is final
    event_time_ms: int | None = None
    closed: set[int] = field(default_factory=set)
    alerts_firing: int = 0
    alerts_resolved: int = 0
    requests: int = 0
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def windows_closed(self) -> int:
        return len(self.closed)

    @property
    def windows_open(self) -> int:
        if self.event_time_ms is None:
            return 0
        started = (self.event_time_ms - self.first_window_ms) // self.window_ms + 1
        opened = {self.first_window_ms + i * self.window_ms for i in range(max(started, 0))}
        return len(opened - self.closed)

    def line(self) -> str:
        with self.lock:
            return self._line()

    def _line(self) -> str:
        return (
            f"  progress {time.monotonic() - self.started:4.0f}s: sent {self.predictions_sent}/"
            f"{self.predictions_total} predictions, {self.labels_sent} labels; windows "
            f"{self.windows_closed} closed, {self.windows_open} open; alerts {self.alerts_firing} "
            f"firing, {self.alerts_resolved} resolved; retraining requests {self.requests}"
        )


class DemoView:
    """Live table on a terminal, plain lines elsewhere. Use as a context manager."""

    def __init__(self, counts: DemoCounts, stream: IO[str] | None = None) -> None:
        self.counts = counts
        self.stream = stream or sys.stdout
        self.live_mode = bool(getattr(self.stream, "isatty", lambda: False)())
        self._live: Any = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._lock = threading.Lock()

    # ---- output -------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        """One event line: above the live table, or a plain line."""
        with self._lock:
            if self._live is not None:
                self._live.console.print(text, markup=False, highlight=False, soft_wrap=True)
            else:
                print(text, file=self.stream, flush=True)

    def _table(self) -> Any:
        from rich.table import Table

        c = self.counts
        table = Table(
            title=f"driftline demo: {c.predictions_total} predictions to send",
            title_justify="left",
            expand=False,
        )
        for name in ("elapsed", "predictions", "labels", "windows closed", "open"):
            table.add_column(name, justify="right")
        table.add_column("alerts firing/resolved", justify="right")
        table.add_column("retraining", justify="right")
        with c.lock:
            table.add_row(
                f"{time.monotonic() - c.started:.0f}s",
                f"{c.predictions_sent}",
                str(c.labels_sent),
                str(c.windows_closed),
                str(c.windows_open),
                f"{c.alerts_firing} / {c.alerts_resolved}",
                str(c.requests),
            )
        return table

    # ---- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> DemoView:
        if self.live_mode:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(
                get_renderable=self._table,
                console=Console(file=self.stream),
                refresh_per_second=4,
                transient=False,
            )
            self._live.start()
        else:
            self._ticker = threading.Thread(target=self._plain_progress, daemon=True)
            self._ticker.start()
        return self

    def _plain_progress(self) -> None:
        self.say(self.counts.line())
        while not self._stop.wait(PLAIN_PROGRESS_EVERY_S):
            self.say(self.counts.line())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
        if self._live is not None:
            self._live.stop()
            self._live = None
        else:
            self.say(self.counts.line())
