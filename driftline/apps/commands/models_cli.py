"""``driftline models list | show``: the model version history in the store.

The audit trail, read back: every (model, version) seen, its traffic, references, alerts and
retraining requests, and what happened to each request (acknowledged by a trainer, a new
version seen after it). See ``driftline/platform/store/history.py`` for where each number
comes from.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from driftline.apps.commands.alerting_cli import _fmt_ms, _session, _table
from driftline.platform.text import printable

__all__ = ["register"]


def register(subparsers: Any) -> None:
    models = subparsers.add_parser("models", help="the model version history in the store")
    cmd = models.add_subparsers(dest="models_command", required=True)
    store_opt = {"help": "SQLAlchemy URL (default: the configuration's store_url)"}
    p = cmd.add_parser("list", help="every model version seen, with its traffic and requests")
    p.add_argument("--json", action="store_true")
    p.add_argument("--store-url", **store_opt)
    p.set_defaults(func=_cmd_list)
    p = cmd.add_parser("show", help="one model's versions: references, alerts, requests and their outcome")
    p.add_argument("model")
    p.add_argument("--version", help="only this version")
    p.add_argument("--json", action="store_true")
    p.add_argument("--store-url", **store_opt)
    p.set_defaults(func=_cmd_show)
    p = cmd.add_parser(
        "follow", help="follow a registered model's alias in MLflow: a move rebaselines (driftline[mlflow])"
    )
    p.add_argument("model")
    p.add_argument("--registered-model", help="the MLflow registered model (default: MODEL)")
    p.add_argument("--alias", default="champion")
    p.add_argument(
        "--tracking-uri", required=True, help="MLflow tracking and registry URI, e.g. sqlite:///mlflow.db"
    )
    p.add_argument("--interval", type=float, help="look again every S seconds (default: look once)")
    p.add_argument("--store-url", **store_opt)
    p.set_defaults(func=_cmd_follow)


def _records(args: argparse.Namespace, model: str | None, version: str | None) -> list[dict[str, Any]]:
    from dataclasses import asdict

    from driftline.platform.store import version_history

    with _session(args).begin() as session:
        return [asdict(h) for h in version_history(session, model, version)]


def _cmd_list(args: argparse.Namespace) -> int:
    records = _records(args, None, None)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    headers = ["MODEL", "VERSION", "FIRST_SEEN", "LAST_SEEN", "WINDOWS", "PREDICTIONS", "ALERTS", "REQUESTS"]
    rows = [
        [
            r["model_id"],
            r["model_version"],
            _fmt_ms(r["first_seen_ms"]),
            _fmt_ms(r["last_seen_ms"]),
            str(r["windows"]),
            str(r["predictions"]),
            str(len(r["alerts"])),
            str(len(r["requests"])),
        ]
        for r in records
    ]
    print(_table(headers, rows) if rows else "no model versions in the store")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    records = _records(args, args.model, args.version)
    if not records:
        what = args.model if args.version is None else f"{args.model} version {args.version}"
        raise ValueError(f"no history of {what} in the store")
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    print("\n\n".join(_describe(r) for r in records))
    return 0


def _describe(r: dict[str, Any]) -> str:
    """One version, in the order of the audit trail: seen, judged against, alerted, asked."""
    lines = [
        f"{r['model_id']} version {r['model_version']}",
        f"  seen        {_fmt_ms(r['first_seen_ms'])} .. {_fmt_ms(r['last_seen_ms'])}",
        f"  traffic     {r['predictions']} predictions, {r['labelled']} labelled, "
        f"in {r['windows']} final windows",
    ]
    if r["lineage"]:
        lines.append("  lineage     " + ", ".join(f"{k}={v}" for k, v in sorted(r["lineage"].items())))
    for ref in r["references"]:
        lines.append(
            f"  reference   {ref['reference']} for {ref['windows']} windows "
            f"({_fmt_ms(ref['first_window_ms'])} .. {_fmt_ms(ref['last_window_ms'])})"
        )
    for prof in r["profiles"]:
        lines.append(f"  profile     {prof['source']} (stored {_fmt_ms(prof['created_ms'])})")
    for a in r["alerts"]:
        where = "".join(f" {k}={v}" for k, v in sorted(a["segment"].items()))
        lines.append(
            f"  alert       {a['rule']} ({a['severity']}){where}: {a['status']}, "
            f"fired {_fmt_ms(a['first_fired_ms'])}"
        )
    for q in r["requests"]:
        acks = ", ".join(f"{k['consumer']} at {_fmt_ms(k['acknowledged_ms'])}" for k in q["acknowledged"])
        nxt = (
            f"version {q['next_version']} seen from {_fmt_ms(q['next_version_first_seen_ms'])}"
            if q["next_version"] is not None
            else "no newer version seen yet"
        )
        lines.append(
            f"  request     {q['action']} ({q['reason']}) at {_fmt_ms(q['window_end_ms'])}, "
            f"id {q['idempotency_key']}"
        )
        lines.append(f"              acknowledged: {acks or 'not yet'}; {nxt}")
    # names, rules, segments and lineage come from producers and configuration
    return "\n".join(printable(line) for line in lines)


def _cmd_follow(args: argparse.Namespace) -> int:
    import time

    from driftline.apps.registry_follow import follow_alias
    from driftline.platform.config import load_config

    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ValueError("models follow needs MLflow: pip install 'driftline[mlflow]'") from None
    cfg = load_config(getattr(args, "config", None)).model(args.model)
    sessions = _session(args)
    name = args.registered_model or args.model
    while True:
        found = follow_alias(
            sessions,
            model_id=args.model,
            registered_model=name,
            alias=args.alias,
            tracking_uri=args.tracking_uri,
            cfg=cfg,
            now_ms=time.time_ns() // 1_000_000,
        )
        state = "moved: rebaselined" if found.moved else "unchanged"
        rows = f", {found.reference_rows} reference rows" if found.reference_rows else ""
        print(
            printable(
                f"{name}@{args.alias} is version {found.version} (run {found.run_id}): {state}; "
                f"reference {found.reference}{rows}"
            ),
            flush=True,
        )
        if args.interval is None:
            return 0
        time.sleep(args.interval)
