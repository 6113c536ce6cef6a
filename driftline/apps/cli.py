"""The ``driftline`` command: one entry point, one sub-command per job."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from driftline.alerting.rules import SEVERITIES
from driftline.apps.commands import MODULES
from driftline.platform.config import Config, load_config
from driftline.platform.store.db import SchemaOutOfDate
from driftline.platform.text import printable

__all__ = ["main"]


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    if getattr(args, "broker", None):
        config = replace(config, bootstrap_servers=args.broker)
    return config


def _cmd_worker(args: argparse.Namespace) -> int:
    from driftline.apps.runner import create_topics, run_worker, web_port
    from driftline.platform.kafka import settings_for, wait_for_broker
    from driftline.streams.app import DriftlineApp

    if args.stall_after < 0:
        raise ValueError(
            f"--stall-after must be >= 0 seconds (0 turns the watchdog off), not {args.stall_after:g}"
        )
    if args.stall_after == 0 and args.health_port:
        raise ValueError("--health-port needs the watchdog: give --stall-after a number of seconds > 0")
    config = _config(args)
    settings = settings_for(config)  # an incomplete security configuration stops here
    wait_for_broker(settings, timeout=args.connect_timeout)  # one line and exit 2, not a traceback
    checkpoints = None
    catalog = None
    if not args.no_checkpoints:
        from driftline.platform.checkpoints import CheckpointStore
        from driftline.streams.catalog import ModelCatalog, StoredProfiles

        checkpoints = CheckpointStore(config.store_url)
        # versions' reference profiles in the store (driftline models follow) come first
        catalog = ModelCatalog.load(
            config, stored=StoredProfiles(config.store_url, refresh_s=config.reference_refresh_ms / 1000)
        )
    app = DriftlineApp(
        config,
        catalog,
        web_port=web_port(),
        idle_after_s=args.idle_after,
        session_timeout_s=args.session_timeout,
        checkpoints=checkpoints,
        on_evaluation=_log_window,
    )
    create_topics(app)
    if args.metrics_port:
        from driftline.platform.metrics import start_metrics_server

        start_metrics_server(args.metrics_port, host=config.metrics_host)
    _start_watchdog(app, args)
    progress.info("%s", _summary(app, args))
    run_worker(app, loglevel=args.loglevel)
    return 0


def _start_watchdog(app: Any, args: argparse.Namespace) -> None:
    """The watchdog (exit 3 when the broker lost the worker's topics or a partition stalls)
    and, with ``--health-port``, its verdict as ``GET /healthz``."""
    if args.stall_after == 0:
        return
    from driftline.apps.watchdog import Watchdog
    from driftline.platform.health import HealthServer

    watchdog = Watchdog(app.settings, app.progress, app.topic_ids, stall_after=args.stall_after)
    watchdog.start()
    watchdog.attach(app.faust)
    if args.health_port:
        HealthServer((app.config.metrics_host, args.health_port), watchdog.verdict).start()


#: what a person watching a worker sees at the default level: a start-up summary, a line a window
progress = logging.getLogger("driftline.worker")


def _summary(app: Any, args: argparse.Namespace) -> str:
    from driftline.platform.store.db import safe_url

    config = app.config
    topics = ", ".join(f"{name} ({n})" for name, n in app.topics.partitions(config).items())
    models = ", ".join(sorted(config.models)) or "none configured"
    unknown = "; other models monitored with the defaults" if config.allow_unknown_models else ""
    store = "none (in memory, --no-checkpoints)" if args.no_checkpoints else safe_url(config.store_url)
    metrics = f"{config.metrics_host}:{args.metrics_port}" if args.metrics_port else "off"
    health = f"; health {config.metrics_host}:{args.health_port}/healthz" if args.health_port else ""
    from driftline.apps.watchdog import EXIT_STALLED

    stall = f"exit {EXIT_STALLED} after {args.stall_after:g} s without progress"
    watchdog = stall if args.stall_after else "off"
    stored = app.catalog.stored
    references = (
        f"a version's profile in the store (re-read every {stored.refresh_s:g} s), else "
        if stored is not None
        else "(no store: --no-checkpoints) "
    ) + "the configured reference file, else bootstrapped from the version's first windows"
    return printable(  # model ids and topic names come from the configuration file
        f"driftline worker {config.app_id}: Kafka {app.settings.describe()}; topics {topics}; "
        f"store {store}; metrics {metrics}{health}; watchdog {watchdog}; models {models}{unknown}; "
        f"references: {references}"
    )


def _log_window(evaluation: Any) -> None:
    """One line per model and window once it is final (segments stay in the results). Names are
    escaped (:func:`printable`): a newline in a model id must not forge a second log line."""
    r = evaluation.result
    if r.phase != "final" or r.segment:
        return
    parts = [f"{r.prediction_count} predictions"]
    if r.label_coverage is not None:
        parts.append(f"{r.label_coverage:.0%} labelled")
    for name in ("accuracy", "rmse", "estimated_accuracy"):
        if r.metrics.get(name) is not None:
            parts.append(f"{name} {r.metrics[name]:.3f}")
            break
    drifted = sorted(d.feature for d in r.drift if d.drifted and d.kind == "feature")
    if r.dataset_drift is not None:
        parts.append(f"drifted: {', '.join(drifted)}" if drifted else "no drift")
    if evaluation.alerts:
        parts.append(f"{len(evaluation.alerts)} alert event(s)")
    progress.info(
        "window %s %s [%s, %s) final: %s",
        printable(r.model_id),
        printable(r.model_version),
        r.window_start,
        r.window_end,
        printable("; ".join(parts)),
    )


def _cmd_replay(args: argparse.Namespace) -> int:
    from driftline.apps.replay import IncompleteReplay, replay, write_report

    config = _config(args)
    try:
        report = replay(
            config,
            args.predictions,
            args.ground_truth,
            reference=args.reference,
            broker=args.broker,
            timeout_s=args.timeout,
            loglevel=args.loglevel,
            external_workers=args.external_workers,
            store_url=args.store_url,
        )
    except IncompleteReplay as exc:  # no report at all rather than one that looks complete
        print(f"driftline: replay: {exc}", file=sys.stderr)
        return 2  # 1 is "the CI gate failed" (driftline/apps/gate.py): a broken replay is not that
    write_report(report, args.report)
    alerts = sum(1 for a in report.alerts if a["type"].endswith("firing"))
    print(
        f"replayed {report.inputs['prediction_lines']} predictions and "
        f"{report.inputs['ground_truth_lines']} labels: {len(report.windows)} windows, "
        f"{alerts} alerts fired, {len(report.retraining_requests)} retraining requests, "
        f"{report.dead_letter.get('total', 0)} dead-lettered -> {args.report}"
    )
    return _gate(args, config, report.to_dict())


def _gate(args: argparse.Namespace, config: Config, report: dict) -> int:
    """The CI gate of ``driftline replay`` (driftline/apps/gate.py): 0 passed, 1 failed."""
    from pathlib import Path

    from driftline.apps.gate import GATE_FAILED, GateOptions, failed, judge, junit_xml

    options = GateOptions(args.fail_on, args.fail_on_drift, args.expect_no_retraining)
    models = {w["model_id"] for w in report["windows"]} | {a["data"]["model_id"] for a in report["alerts"]}
    cases = judge(report, {m: config.model(m).rules for m in models}, options)
    if args.junit:
        Path(args.junit).write_bytes(junit_xml(cases))
    failures = failed(cases)
    if not failures:
        if args.fail_on or args.fail_on_drift or args.expect_no_retraining:
            print(f"gate passed: {len(cases)} checks")
        return 0
    lines = [line for case in failures for line in case.failures]
    print(f"gate failed: {len(lines)} problem(s) in {len(failures)} of {len(cases)} checks")
    for line in lines:
        print(f"  FAIL {line}")
    return GATE_FAILED


def _cmd_demo(args: argparse.Namespace) -> int:
    from driftline.apps.demo import run_demo

    return run_demo(duration_s=args.duration, seed=args.seed, store_url=args.store_url)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftline", description=__doc__)
    parser.add_argument("--config", help=_GLOBAL_OPTIONS[0][1])
    parser.add_argument("--loglevel", default="WARNING", help=_GLOBAL_OPTIONS[1][1])
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run the stream processors against a Kafka cluster")
    worker.add_argument("--broker", help="bootstrap servers (overrides the configuration)")
    worker.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port")
    worker.add_argument(
        "--idle-after",
        type=float,
        default=10.0,
        help="seconds before a silent input partition stops holding windows",
    )
    worker.add_argument(
        "--session-timeout",
        type=float,
        default=None,
        help="consumer group session timeout in seconds (small values speed up rebalances in tests)",
    )
    worker.add_argument(
        "--connect-timeout",
        type=float,
        default=15.0,
        help="seconds to wait for the Kafka cluster to answer at start-up before giving up (exit 2)",
    )
    worker.add_argument(
        "--no-checkpoints",
        action="store_true",
        help="keep stream state in memory only (a crash then loses in-flight joins; for benchmarks)",
    )
    worker.add_argument(
        "--stall-after",
        type=float,
        default=120.0,
        help="exit with status 3 when the broker lost the worker's topics, or an assigned partition "
        "with data waiting made no progress, or the broker did not answer, for this many seconds "
        "(0: off); a supervisor then restarts it",
    )
    worker.add_argument(
        "--health-port",
        type=int,
        default=0,
        help="serve GET /healthz on this port (200 healthy, 503 with the reasons), on metrics_host",
    )
    worker.set_defaults(func=_cmd_worker)

    rp = sub.add_parser("replay", help="replay JSONL files through the broker and write a report")
    rp.add_argument("--predictions", required=True, help="JSONL file of prediction events")
    rp.add_argument("--ground-truth", required=True, help="JSONL file of ground-truth events")
    rp.add_argument("--reference", help="reference data (JSONL/CSV/Parquet) for drift tests")
    rp.add_argument("--broker", help="use this Kafka cluster instead of an embedded broker")
    rp.add_argument(
        "--store-url",
        help="judge model versions against their reference profiles in this store (read, never written)",
    )
    rp.add_argument("--report", required=True, help="where to write the JSON report")
    rp.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    rp.add_argument(
        "--external-workers",
        action="store_true",
        help="feed the configured topics and wait for running workers (needs --broker)",
    )
    rp.add_argument(
        "--fail-on",
        choices=SEVERITIES,
        help="CI gate: exit 1 when an alert of this severity or a higher one fired",
    )
    rp.add_argument(
        "--fail-on-drift", action="store_true", help="CI gate: exit 1 when any window shows dataset drift"
    )
    rp.add_argument(
        "--expect-no-retraining",
        action="store_true",
        help="CI gate: exit 1 when the replay produced a retraining request",
    )
    rp.add_argument("--junit", help="write the gate's checks as JUnit XML (one test case per rule and model)")
    rp.set_defaults(func=_cmd_replay)

    demo = sub.add_parser("demo", help="embedded broker + simulated traffic with an injected drift")
    demo.add_argument("--duration", type=float, default=50.0, help="approximate run time in seconds")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument(
        "--store-url", help="where to record the demo's history (default sqlite:///driftline-demo.sqlite)"
    )
    demo.set_defaults(func=_cmd_demo)

    for name in MODULES:
        importlib.import_module(name).register(sub)
    _accept_global_options(parser)
    return parser


#: options of the whole command, accepted before or after the sub-command's name
_GLOBAL_OPTIONS: tuple[tuple[str, str], ...] = (
    ("--config", "YAML configuration file (default: $DRIFTLINE_CONFIG)"),
    ("--loglevel", "log level (default WARNING)"),
)


def _accept_global_options(parser: argparse.ArgumentParser) -> None:
    """Let ``driftline replay ... --config FILE`` mean ``driftline --config FILE replay ...``.

    argparse reads options of the top-level parser only before the sub-command's name, so every
    sub-parser, at every depth, gets the global options too, with ``SUPPRESS`` as default so
    that leaving them out there never erases a value given before the name."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in action.choices.values():
            for flag, help_text in _GLOBAL_OPTIONS:
                if flag not in child._option_string_actions:
                    child.add_argument(flag, default=argparse.SUPPRESS, help=help_text)
            _accept_global_options(child)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = args.loglevel.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logging.getLevelName(level) in (logging.WARNING, logging.INFO, logging.DEBUG):
        progress.setLevel(logging.INFO)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, TimeoutError, SchemaOutOfDate) as exc:
        print(f"driftline: error: {printable(str(exc))}", file=sys.stderr)  # messages quote input
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside the worker's own signal handling: no traceback
        print("driftline: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
