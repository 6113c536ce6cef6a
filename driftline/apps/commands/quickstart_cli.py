"""``driftline quickstart``: a file of your model's predictions to an HTML report, in one command."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from driftline.platform.text import printable

__all__ = ["register"]

_ROLES = ("id", "timestamp", "prediction", "score", "label")


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from driftline.apps.quickstart import quickstart

    columns: dict[str, Any] = {role: getattr(args, f"{role}_column") for role in _ROLES}
    if args.features:
        columns["features"] = args.features.split(",")
    if args.segments:
        columns["segments"] = args.segments.split(",")
    try:
        result = _run(quickstart, args, columns)
    except RuntimeError as exc:  # e.g. Parquet without pyarrow, an incomplete replay
        print(f"driftline: quickstart: {printable(str(exc))}", file=sys.stderr)
        return 2
    # column names and values come from the file: shown, never obeyed (line by line)
    sys.stdout.write("\n".join(printable(line) for line in result.text.split("\n")))
    return 0


def _run(quickstart: Any, args: argparse.Namespace, columns: dict[str, Any]) -> Any:
    from driftline.platform.config import load_config

    return quickstart(
        args.predictions,
        labels=args.labels,
        reference=args.reference,
        columns=columns,
        model_id=args.model,
        report=args.report,
        store_url=args.store_url,
        config=load_config(getattr(args, "config", None)),
        open_report=args.open,
        timeout_s=args.timeout,
    )


def register(subparsers: Any) -> None:
    qs = subparsers.add_parser(
        "quickstart",
        help="monitor your model from a file: map its columns, replay it, write the HTML report",
    )
    qs.add_argument("--predictions", required=True, help="predictions: .csv, .jsonl, .json or .parquet")
    qs.add_argument("--labels", help="labels in their own file (an id and a label column)")
    qs.add_argument(
        "--reference", help="reference (training) rows; default: the earliest 20%% of predictions"
    )
    qs.add_argument("--model", default="my-model", help="model id when the file has no model column")
    for role in _ROLES:
        qs.add_argument(f"--{role}-column", metavar="NAME", help=f"the {role} column (default: inferred)")
    qs.add_argument("--features", metavar="A,B", help="feature columns (default: every other column)")
    qs.add_argument("--segments", metavar="A,B", help="segment columns (default: small text columns)")
    qs.add_argument("--report", default="driftline-quickstart.html", help="where to write the HTML report")
    qs.add_argument("--store-url", help="history store (default: sqlite next to the report)")
    qs.add_argument("--open", action="store_true", help="open the report in a browser when written")
    qs.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    qs.set_defaults(func=_cmd_quickstart)
