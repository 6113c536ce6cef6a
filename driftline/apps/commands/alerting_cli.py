"""``driftline notifier | subscriptions | alerts | retraining | db``: operate alert delivery.

Store URL: ``--store-url``, else the configuration (``DRIFTLINE_STORE_URL`` over the file over
``sqlite:///driftline.sqlite``), as every command resolves it (``driftline.apps.commands.common``).
It may carry a password, so every line printed names it through ``safe_url``. Subscriptions
live in the YAML config under ``subscriptions:``; their secrets are references (env/file), and
no command prints a resolved secret.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from driftline.apps.commands.common import parse_since, store_url
from driftline.platform.text import printable


def register(subparsers: Any) -> None:
    """Add this module's sub-commands to ``driftline``'s parser."""
    # ``--config`` is also a top-level option; SUPPRESS keeps a sub-parser's absent flag from
    # overwriting the top-level value with None.
    config_opt: dict[str, Any] = {"default": argparse.SUPPRESS, "help": "YAML configuration file"}
    store_opt: dict[str, Any] = {"help": "SQLAlchemy URL (default: $DRIFTLINE_STORE_URL or sqlite)"}

    p = subparsers.add_parser("notifier", help="deliver alerts from the alerts topic to subscriptions")
    p.add_argument("--broker", help="bootstrap servers (overrides the configuration)")
    p.add_argument("--store-url", **store_opt)
    p.add_argument("--config", **config_opt)
    p.add_argument("--retry-base", type=float, default=1.0, help="backoff base in seconds (default 1)")
    p.add_argument("--retry-cap", type=float, default=300.0, help="backoff cap in seconds (default 300)")
    p.add_argument(
        "--give-up-after",
        type=float,
        default=24 * 3600.0,
        metavar="SECONDS",
        help="retry a notification this long before it is dead, unless its subscription says (default 86400)",
    )
    p.add_argument(
        "--metrics-port", type=int, default=0, help="serve Prometheus metrics (deliveries) on this port"
    )
    p.add_argument("--quick-join", action="store_true", help=argparse.SUPPRESS)  # embedded broker
    p.set_defaults(func=_cmd_notifier)

    subs = subparsers.add_parser("subscriptions", help="list, test, add or remove alert subscriptions")
    subs_cmd = subs.add_subparsers(dest="subscriptions_command", required=True)
    p = subs_cmd.add_parser("list", help="show the configured subscriptions")
    p.add_argument("--config", **config_opt)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_subscriptions_list)
    p = subs_cmd.add_parser("test", help="send a synthetic test alert through the real destination")
    p.add_argument("name")
    p.add_argument("--config", **config_opt)
    p.set_defaults(func=_cmd_subscriptions_test)
    p = subs_cmd.add_parser("add", help="add a subscription to the YAML file (comments are not kept)")
    p.add_argument("name")
    p.add_argument("--kind", required=True)
    p.add_argument("--matcher", action="append", default=[], help='e.g. severity=~"critical|error"')
    p.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="VALUE env:NAME or file:/path makes a secret reference",
    )
    p.add_argument("--group-wait", type=float)
    p.add_argument("--rate-limit", type=float)
    p.add_argument("--config", **config_opt)
    p.set_defaults(func=_cmd_subscriptions_add)
    p = subs_cmd.add_parser("remove", help="remove a subscription from the YAML file")
    p.add_argument("name")
    p.add_argument("--config", **config_opt)
    p.set_defaults(func=_cmd_subscriptions_remove)

    for noun, what, func, has_status in (
        ("alerts", "alerts", _cmd_alerts_list, True),
        ("retraining", "retraining requests", _cmd_retraining_list, False),
    ):
        parser = subparsers.add_parser(noun, help=f"query {what} in the store")
        cmd = parser.add_subparsers(dest=f"{noun}_command", required=True)
        p = cmd.add_parser("list", help=f"list {what}, newest first")
        p.add_argument("--model")
        if has_status:
            p.add_argument("--status", choices=("firing", "resolved"))
        p.add_argument("--since", help="RFC 3339 time or a duration back from now (30m, 2h, 7d)")
        p.add_argument("--limit", type=int, default=50)
        p.add_argument("--json", action="store_true")
        p.add_argument("--store-url", **store_opt)
        p.set_defaults(func=func)

    db = subparsers.add_parser("db", help="migrate the store's schema")
    db_cmd = db.add_subparsers(dest="db_command", required=True)
    p = db_cmd.add_parser("upgrade", help="migrate up (default: to head)")
    p.add_argument("revision", nargs="?", default="head")
    p.add_argument("--store-url", **store_opt)
    p.set_defaults(func=_cmd_db_upgrade)
    p = db_cmd.add_parser("downgrade", help="migrate down to REVISION (base drops every table)")
    p.add_argument("revision")
    p.add_argument("--store-url", **store_opt)
    p.set_defaults(func=_cmd_db_downgrade)
    p = db_cmd.add_parser("current", help="print the database's revision and the code's head")
    p.add_argument("--store-url", **store_opt)
    p.set_defaults(func=_cmd_db_current)


# ---- shared helpers ----------------------------------------------------------------------------


def _config_path(args: argparse.Namespace) -> Path:
    path = getattr(args, "config", None) or os.environ.get("DRIFTLINE_CONFIG")
    if not path:
        raise ValueError("no configuration file: pass --config or set DRIFTLINE_CONFIG")
    return Path(path)


def _read_yaml(path: Path) -> dict[str, Any]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the top level must be a mapping")
    return raw


def _subscriptions(args: argparse.Namespace) -> list[Any]:
    from driftline.alerting.subscriptions import subscriptions_from_config

    raw = _read_yaml(_config_path(args)).get("subscriptions") or []
    return subscriptions_from_config(raw)


def _since_ms(text: str | None) -> int | None:
    return None if text is None else parse_since(text)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    # Names, segments and reasons come from producers and destinations: escaped before the
    # widths are measured, so a control character neither drives the terminal nor forges a row.
    rows = [[printable(cell) for cell in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _fmt_ms(ms: int | None) -> str:
    from driftline.schemas import ms_to_rfc3339

    return "" if ms is None else ms_to_rfc3339(ms)


# ---- notifier ----------------------------------------------------------------------------------


def _cmd_notifier(args: argparse.Namespace) -> int:
    from driftline.alerting.notifier_service import NotifierService
    from driftline.alerting.outbox import RetryPolicy
    from driftline.platform.config import load_config
    from driftline.platform.kafka import TopicNames, quick_join_consumer_config, settings_for

    config = load_config(getattr(args, "config", None))
    if args.broker:
        config = replace(config, bootstrap_servers=args.broker)
    settings = settings_for(config)
    service = NotifierService(
        settings,
        TopicNames.from_config(config).alerts,
        getattr(args, "store_url", None) or os.environ.get("DRIFTLINE_STORE_URL") or config.store_url,
        _subscriptions(args),
        group_id=f"{config.app_id}-notifier",
        policy=RetryPolicy(base_s=args.retry_base, cap_s=args.retry_cap, give_up_after_s=args.give_up_after),
        consumer_config=quick_join_consumer_config() if args.quick_join else None,
    )
    if args.metrics_port:
        from driftline.platform.metrics import start_metrics_server

        start_metrics_server(args.metrics_port, host=config.metrics_host)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    service.run(stop)
    return 0


# ---- subscriptions -----------------------------------------------------------------------------


def _cmd_subscriptions_list(args: argparse.Namespace) -> int:
    subs = _subscriptions(args)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "kind": s.kind,
                        "matchers": [str(m) for m in s.matchers],
                        "group_wait_s": s.group_wait_s,
                        "rate_limit_per_s": s.rate_limit_per_s,
                    }
                    for s in subs
                ],
                indent=2,
            )
        )
        return 0
    rows = [
        [
            s.name,
            s.kind,
            ", ".join(str(m) for m in s.matchers) or "(everything)",
            f"{s.group_wait_s:g}",
            "" if s.rate_limit_per_s is None else f"{s.rate_limit_per_s:g}",
        ]
        for s in subs
    ]
    print(_table(["NAME", "KIND", "MATCHERS", "GROUP_WAIT_S", "RATE_PER_S"], rows))
    return 0


def synthetic_alert() -> Any:
    """A synthetic alert that says what it is, with a fresh dedup key per test."""
    from driftline.schemas import AlertData, Window, alert_event, ms_to_rfc3339

    now = int(time.time() * 1000)
    return alert_event(
        AlertData(
            dedup_key=f"driftline-test-{uuid.uuid4().hex[:16]}",
            status="firing",
            rule="driftline-test",
            metric="test",
            severity="info",
            model_id="driftline-test",
            model_version="test",
            segment={},
            window=Window(start=ms_to_rfc3339(now - 60_000), end=ms_to_rfc3339(now)),
            observed=1.0,
            threshold=0.0,
            comparison=">",
            evidence={"note": "a test alert sent by `driftline subscriptions test`; no action needed"},
            starts_at=ms_to_rfc3339(now),
        )
    )


def _cmd_subscriptions_test(args: argparse.Namespace) -> int:
    import httpx
    import msgspec

    from driftline.alerting.notifiers.base import deliver
    from driftline.alerting.notifiers.registry import KINDS
    from driftline.alerting.subscriptions import make_notifier
    from driftline.schemas import alert_event, ms_to_rfc3339

    subs = {s.name: s for s in _subscriptions(args)}
    if args.name not in subs:
        raise ValueError(f"no subscription named {args.name!r} (have: {', '.join(sorted(subs))})")
    notifier = make_notifier(subs[args.name])
    firing = synthetic_alert()
    events = [firing]
    if KINDS[subs[args.name].kind].needs_resolve:
        # Close what the test opened, so nobody is left holding a test incident.
        data = msgspec.structs.replace(
            firing.data, status="resolved", ends_at=ms_to_rfc3339(int(time.time() * 1000))
        )
        events.append(alert_event(data))
    failed = False
    with httpx.Client(follow_redirects=False) as client:
        for event in events:
            outcome = deliver(notifier, [event], client)
            state = "delivered" if outcome.delivered else ("retryable" if outcome.retry else "failed")
            print(printable(f"{args.name}: {event.data.status} test alert {state} ({outcome.reason})"))
            failed = failed or not outcome.delivered
    return 1 if failed else 0


def _parse_setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--setting expects KEY=VALUE, got {text.split('=')[0]!r}=…")
    for prefix in ("env", "file"):
        if value.startswith(prefix + ":"):
            return key, {prefix: value[len(prefix) + 1 :]}
    if value in ("true", "false"):
        return key, value == "true"
    return key, value


def _write_subscriptions(path: Path, raw: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    from driftline.alerting.subscriptions import subscriptions_from_config

    subscriptions_from_config(entries)  # refuse to write a file the notifier would reject
    raw["subscriptions"] = entries
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a crash leaves the old file or the new one, never half


def _cmd_subscriptions_add(args: argparse.Namespace) -> int:
    path = _config_path(args)
    raw = _read_yaml(path)
    entries = list(raw.get("subscriptions") or [])
    if any(isinstance(e, dict) and e.get("name") == args.name for e in entries):
        raise ValueError(f"a subscription named {args.name!r} already exists")
    entry: dict[str, Any] = {"name": args.name, "kind": args.kind}
    if args.matcher:
        entry["matchers"] = list(args.matcher)
    entry["settings"] = dict(_parse_setting(s) for s in args.setting)
    if args.group_wait is not None:
        entry["group_wait_s"] = args.group_wait
    if args.rate_limit is not None:
        entry["rate_limit_per_s"] = args.rate_limit
    _write_subscriptions(path, raw, [*entries, entry])
    print(printable(f"added subscription {args.name!r} ({args.kind}) to {path}"))
    return 0


def _cmd_subscriptions_remove(args: argparse.Namespace) -> int:
    path = _config_path(args)
    raw = _read_yaml(path)
    entries = list(raw.get("subscriptions") or [])
    kept = [e for e in entries if not (isinstance(e, dict) and e.get("name") == args.name)]
    if len(kept) == len(entries):
        raise ValueError(f"no subscription named {args.name!r}")
    _write_subscriptions(path, raw, kept)
    print(printable(f"removed subscription {args.name!r} from {path}"))
    return 0


# ---- store queries -----------------------------------------------------------------------------


def _session(args: argparse.Namespace) -> Any:
    from driftline.platform.store import check_schema, make_engine, session_factory

    engine = make_engine(store_url(args))
    check_schema(engine)
    return session_factory(engine)


def _cmd_alerts_list(args: argparse.Namespace) -> int:
    from driftline.platform.store import given_up_notifications, list_alerts

    with _session(args).begin() as session:
        rows = list_alerts(
            session, model_id=args.model, status=args.status, since_ms=_since_ms(args.since), limit=args.limit
        )
        # The pages nobody got belong next to their alert, not only in the notifier's log.
        given_up: dict[str, list[dict[str, Any]]] = {r.dedup_key: [] for r in rows}
        for g in given_up_notifications(session, dedup_keys=list(given_up)):
            given_up[g.dedup_key].append(
                {
                    "subscription": g.subscription,
                    "alert_status": g.alert_status,
                    "status": g.status,
                    "reason": g.reason,
                    "given_up": _fmt_ms(g.given_up_ms),
                }
            )
        records: list[dict[str, Any]] = [
            {
                "dedup_key": r.dedup_key,
                "status": r.status,
                "severity": r.severity,
                "rule": r.rule,
                "model_id": r.model_id,
                "model_version": r.model_version,
                "segment": r.segment,
                "first_fired": _fmt_ms(r.first_fired_ms),
                "last_changed": _fmt_ms(r.last_changed_ms),
                "notifications_given_up": given_up[r.dedup_key],
            }
            for r in rows
        ]
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    headers = ["LAST_CHANGED", "STATUS", "SEVERITY", "MODEL", "VERSION", "RULE", "SEGMENT", "DEDUP_KEY"]
    print(
        _table(
            headers,
            [
                [
                    r["last_changed"],
                    r["status"],
                    r["severity"],
                    r["model_id"],
                    r["model_version"],
                    r["rule"],
                    ", ".join(f"{k}={v}" for k, v in sorted(r["segment"].items())) or "all",
                    r["dedup_key"],
                ]
                for r in records
            ],
        )
    )
    lost = [(r["dedup_key"], g) for r in records for g in r["notifications_given_up"]]
    if lost:
        print("\nNOTIFICATIONS GIVEN UP")
        print(
            _table(
                ["GIVEN_UP", "SUBSCRIPTION", "ALERT", "STATUS", "DEDUP_KEY", "REASON"],
                [
                    [g["given_up"], g["subscription"], g["alert_status"], g["status"], key, g["reason"] or ""]
                    for key, g in lost
                ],
            )
        )
    return 0


def _cmd_retraining_list(args: argparse.Namespace) -> int:
    from driftline.platform.store import list_retraining_requests

    with _session(args).begin() as session:
        rows = list_retraining_requests(
            session, model_id=args.model, since_ms=_since_ms(args.since), limit=args.limit
        )
        records = [
            {
                "idempotency_key": r.idempotency_key,
                "model_id": r.model_id,
                "model_version": r.model_version,
                "reason": r.reason,
                "window_start": _fmt_ms(r.window_start_ms),
                "window_end": _fmt_ms(r.window_end_ms),
                "recorded": _fmt_ms(r.recorded_ms),
            }
            for r in rows
        ]
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    headers = ["WINDOW_END", "MODEL", "VERSION", "REASON", "IDEMPOTENCY_KEY"]
    print(
        _table(
            headers,
            [
                [r["window_end"], r["model_id"], r["model_version"], r["reason"], r["idempotency_key"]]
                for r in records
            ],
        )
    )
    return 0


# ---- db ----------------------------------------------------------------------------------------


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from driftline.platform.store import current_revision, safe_url, upgrade

    url = store_url(args)
    upgrade(url, args.revision)
    print(f"{safe_url(url)}: at revision {current_revision(url)}")
    return 0


def _cmd_db_downgrade(args: argparse.Namespace) -> int:
    from driftline.platform.store import current_revision, downgrade, safe_url

    url = store_url(args)
    downgrade(url, args.revision)
    print(f"{safe_url(url)}: at revision {current_revision(url) or 'base (empty)'}")
    return 0


def _cmd_db_current(args: argparse.Namespace) -> int:
    from driftline.platform.store import current_revision, head_revision, safe_url

    url = store_url(args)
    current = current_revision(url)
    head = head_revision()
    state = "up to date" if current == head else "needs `driftline db upgrade`"
    print(f"{safe_url(url)}: revision {current or 'none'}, head {head} ({state})")
    return 0 if current == head else 1
