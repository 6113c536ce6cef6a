"""Operator commands on the store: ``driftline status``, ``driftline report`` and
``driftline history`` (the sink that fills the store from the output topics).

All three read the store URL from ``--store-url``, else ``DRIFTLINE_STORE_URL`` / the config
file's ``store_url``, else ``sqlite:///driftline.sqlite``. None of them creates or migrates a
store: a missing or outdated schema is an error naming ``driftline db upgrade``, because a
status command that silently creates an empty ``driftline.sqlite`` in the wrong directory
would report "no models" instead of "wrong store".
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from driftline.apps.commands.common import parse_since, store_url
from driftline.platform.config import load_config, parse_duration_ms
from driftline.platform.store import SchemaOutOfDate, check_schema, make_engine, safe_url, session_factory
from driftline.platform.text import printable

__all__ = ["open_store", "parse_since", "register", "store_url"]

DEFAULT_STATUS_PORT = 8780


class StoreUnavailable(RuntimeError):
    """The store is missing or not at the schema this driftline needs."""


def open_store(url: str) -> sessionmaker[Session]:
    """Sessions on an existing store at the current schema, or :class:`StoreUnavailable`."""
    parsed = make_url(url)
    database = parsed.database
    file_based = parsed.get_backend_name() == "sqlite" and database not in (None, "", ":memory:")
    if file_based and not Path(str(database)).exists():
        raise StoreUnavailable(
            f"store {safe_url(url)} does not exist: create it with `driftline db upgrade` "
            "(with the same store URL), or point --store-url / DRIFTLINE_STORE_URL at yours"
        )
    engine = make_engine(url)
    try:
        check_schema(engine)
    except SchemaOutOfDate as exc:
        engine.dispose()
        raise StoreUnavailable(str(exc)) from exc
    return session_factory(engine)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _fail(exc: Exception) -> int:
    print(f"driftline: error: {printable(str(exc))}", file=sys.stderr)
    return 2


# ---- status ------------------------------------------------------------------------------------
def _cmd_status(args: argparse.Namespace) -> int:
    from driftline.apps.status import collect_status, make_status_server, render_table, status_json

    try:
        sessions = open_store(store_url(args))
    except StoreUnavailable as exc:
        return _fail(exc)
    if args.stall_after < 0:
        return _fail(ValueError(f"--stall-after must be >= 0 seconds, not {args.stall_after:g}"))
    if args.stall_after and not args.serve:
        return _fail(ValueError("--stall-after judges the workers for /healthz: it needs --serve"))
    if args.watch:
        from driftline.apps.watch import watch

        return watch(sessions, interval_s=args.interval, count=args.count)
    if args.serve:
        server = make_status_server(sessions, args.host, args.port, _workers_health(args))
        host, port = server.server_address[:2]
        assert isinstance(host, str)  # an IPv4/IPv6 socket reports its host as text, never bytes
        print(f"serving http://{host}:{port}/status and /healthz (Ctrl-C stops)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        return 0
    now = _now_ms()
    with sessions() as session:
        statuses = collect_status(session, now)
    if args.json:
        print(json.dumps(status_json(statuses, now), indent=2, allow_nan=False))
    else:
        sys.stdout.write(render_table(statuses))
    return 0


def _workers_health(args: argparse.Namespace) -> Any:
    """With ``--stall-after``: the workers' health as the broker sees it, for ``/healthz``."""
    if not args.stall_after:
        return None
    from driftline.apps.group_health import GroupHealth
    from driftline.platform.kafka import settings_for

    config = load_config(getattr(args, "config", None))
    if args.broker:
        config = replace(config, bootstrap_servers=args.broker)
    return GroupHealth(config, settings_for(config), stall_after=args.stall_after).check


# ---- report ------------------------------------------------------------------------------------
def _cmd_report(args: argparse.Namespace) -> int:
    from driftline.apps.htmlreport import build_report

    since = parse_since(args.since) if args.since else None
    try:
        sessions = open_store(store_url(args))
    except StoreUnavailable as exc:
        return _fail(exc)
    with sessions() as session:
        page = build_report(session, args.model, since_ms=since)
    Path(args.html).write_text(page, encoding="utf-8")
    print(printable(f"wrote the report of {args.model} to {args.html}"))
    return 0


# ---- history -----------------------------------------------------------------------------------
def _cmd_history(args: argparse.Namespace) -> int:
    from driftline.platform.kafka import settings_for
    from driftline.streams.sink import HistorySink, ingest_report

    config = load_config(getattr(args, "config", None))
    if args.broker:
        config = replace(config, bootstrap_servers=args.broker)
    try:
        retention_ms = parse_duration_ms(args.retention) or None  # 0 keeps everything
    except ValueError as exc:
        return _fail(ValueError(f"--retention: {exc}"))
    settings = None if args.from_report else settings_for(config)  # bad security: stop before all else
    url = args.store_url or config.store_url
    try:
        sessions = open_store(url)
    except StoreUnavailable as exc:
        return _fail(exc)
    if args.from_report:
        report: dict[str, Any] = json.loads(Path(args.from_report).read_text(encoding="utf-8"))
        with sessions.begin() as session:
            stats = ingest_report(report, session)
        print(
            f"stored {stats.windows} windows, {stats.new_alert_transitions} new alert transitions and "
            f"{stats.new_requests} new retraining requests from {args.from_report} into {safe_url(url)}"
        )
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    keeping = "keeping all windows" if retention_ms is None else f"keeping {args.retention} of windows"
    with HistorySink(config, sessions, settings=settings, retention_ms=retention_ms) as sink:
        print(f"history sink: {sink.group_id} -> {safe_url(url)}, {keeping} (Ctrl-C stops)", flush=True)
        stats = sink.run(stop, idle_timeout=args.idle_timeout)
    print(
        f"history sink stopped: {stats.windows} windows, {stats.alerts} alerts, {stats.requests} "
        f"retraining requests in {stats.batches} batches; {stats.undecodable} undecodable skipped; "
        f"{stats.pruned} windows past retention pruned"
    )
    return 0


def register(subparsers: Any) -> None:
    """Add ``status``, ``report`` and ``history`` to the ``driftline`` command."""
    store_help = (
        "store URL (default: $DRIFTLINE_STORE_URL, the config's store_url, sqlite:///driftline.sqlite)"
    )

    status = subparsers.add_parser("status", help="models, their last window, firing alerts and lag")
    status.add_argument("--store-url", help=store_help)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--serve", action="store_true", help="serve GET /status and /healthz over HTTP")
    status.add_argument(
        "--host", default="127.0.0.1", help="address to bind with --serve (default 127.0.0.1)"
    )
    status.add_argument("--port", type=int, default=DEFAULT_STATUS_PORT, help="port for --serve")
    status.add_argument(
        "--stall-after",
        type=float,
        default=0.0,
        help="with --serve: /healthz also fails when the workers' topics are missing or their "
        "consumer group (app_id) committed nothing for this many seconds on a partition with data "
        "waiting (default 0: store only)",
    )
    status.add_argument("--broker", help="bootstrap servers for --stall-after (overrides the configuration)")
    status.add_argument(
        "--watch", action="store_true", help="refresh in place (plain text when not a terminal); Ctrl-C stops"
    )
    status.add_argument("--interval", type=float, default=2.0, help="seconds between --watch refreshes")
    status.add_argument("--count", type=int, default=None, help="stop --watch after this many refreshes")
    status.set_defaults(func=_cmd_status)

    report = subparsers.add_parser("report", help="one model's history as a self-contained HTML page")
    report.add_argument("--model", required=True, help="model id")
    report.add_argument("--html", required=True, help="where to write the page")
    report.add_argument("--store-url", help=store_help)
    report.add_argument("--since", help="only windows from then on: 24h, 7d, an RFC 3339 time or epoch ms")
    report.set_defaults(func=_cmd_report)

    history = subparsers.add_parser("history", help="store window results, alerts and requests from Kafka")
    history.add_argument("--broker", help="bootstrap servers (overrides the configuration)")
    history.add_argument("--store-url", help=store_help)
    # SUPPRESS: without it the sub-command's default (None) would erase a `driftline --config X`
    # given before the sub-command name.
    history.add_argument("--config", default=argparse.SUPPRESS, help="YAML configuration file")
    history.add_argument(
        "--idle-timeout", type=float, default=None, help="stop after this many seconds without records"
    )
    history.add_argument(
        "--from-report", help="store a `driftline replay` report instead of consuming the topics"
    )
    history.add_argument(
        "--retention",
        default="90d",
        help="delete window results that ended this long before the newest one (event time, "
        "capped at now), at start-up and hourly; 0 keeps everything (default 90d)",
    )
    history.set_defaults(func=_cmd_history)
