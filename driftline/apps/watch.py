"""``driftline status --watch``: the status table, refreshed in place, for someone watching a rollout.

Reads the store every ``interval`` seconds (a short session each time, as ``status --serve``
does) through :func:`collect_status`, the one definition of what status shows. On a terminal
the tables (models with their latest window, lag and drift; firing alerts) are redrawn in place
by ``rich``; elsewhere (a pipe, a log) each refresh is printed as plain text under a time
stamp line, without escape codes. Producer names pass through :func:`printable` either way.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

from sqlalchemy.orm import Session, sessionmaker

from driftline.apps.status import (
    HEADERS,
    ModelStatus,
    _row,
    _window_end,
    collect_status,
    render_table,
)
from driftline.platform.text import printable
from driftline.schemas import ms_to_rfc3339

__all__ = ["render_live", "watch"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def render_live(statuses: Sequence[ModelStatus], now_ms: int) -> Any:
    """The rich renderable of one refresh: the models table, then the firing alerts."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    title = f"driftline status at {ms_to_rfc3339(now_ms)[:19].replace('T', ' ')}Z (Ctrl-C stops)"
    models = Table(title=title, title_justify="left", expand=False)
    for h in HEADERS:
        models.add_column(h, justify="right" if h in ("LABELS", "PREDS", "FIRING", "LAG") else "left")
    for s in statuses:
        cells = [Text(printable(c)) for c in _row(s)]
        if s.firing:
            cells[HEADERS.index("FIRING")].stylize("bold red")
        if s.dataset_drift:
            cells[HEADERS.index("DRIFT")].stylize("yellow")
        models.add_row(*cells)
    if not statuses:
        return Group(models, Text("no models in the store yet (is the history sink running?)"))
    alerts = Table(title="firing alerts", title_justify="left", expand=False)
    for h in ("MODEL", "RULE", "SEVERITY", "SEGMENT", "SINCE"):
        alerts.add_column(h)
    for s in statuses:
        for a in s.firing:
            segment = ",".join(f"{k}={v}" for k, v in sorted(a.segment.items())) or "-"
            style = "bold red" if a.severity in ("critical", "error") else ""
            alerts.add_row(
                *(Text(printable(c), style=style) for c in (s.model_id, a.rule, a.severity, segment)),
                Text(_window_end(a.since_ms)),
            )
    return Group(models, alerts) if alerts.row_count else Group(models, Text("no firing alerts"))


def watch(
    sessions: sessionmaker[Session],
    *,
    interval_s: float = 2.0,
    count: int | None = None,
    stream: IO[str] | None = None,
    stop: threading.Event | None = None,
    clock: Callable[[], int] = _now_ms,
) -> int:
    """Refresh until Ctrl-C, ``stop`` is set or ``count`` refreshes were shown; returns 0."""
    out = stream or sys.stdout
    stop = stop or threading.Event()
    live_mode = bool(getattr(out, "isatty", lambda: False)())

    def snapshot() -> tuple[list[ModelStatus], int]:
        now = clock()
        with sessions() as session:
            return collect_status(session, now), now

    shown = 0
    live = None
    try:
        if live_mode:
            from rich.console import Console
            from rich.live import Live

            statuses, now = snapshot()
            live = Live(render_live(statuses, now), console=Console(file=out), auto_refresh=False)
            live.start()
            shown = 1
        while count is None or shown < count:
            if shown and stop.wait(interval_s):
                break
            statuses, now = snapshot()
            if live is not None:
                live.update(render_live(statuses, now), refresh=True)
            else:
                stamp = ms_to_rfc3339(now)[:19].replace("T", " ")
                out.write(f"-- driftline status at {stamp}Z --\n{render_table(statuses)}\n")
                out.flush()
            shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
    return 0
