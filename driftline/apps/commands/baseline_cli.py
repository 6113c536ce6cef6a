"""``driftline baseline create | show``: build a model's reference profile once, look at it later.

A baseline is one JSON document: the whole-model :class:`ReferenceProfile` (its ``to_dict()``)
plus a ``segments`` object holding one profile per segment value found in the rows
(``{"channel=web": {...}}``). Keeping the segment profiles *inside* the whole-model document
means the store's one-profile-per-(model, version) table holds all of them, and any reader that
knows only ``ReferenceProfile.from_dict`` still gets the whole-model profile (it ignores the
extra key). JSON, never pickle: a baseline crosses machines and driftline versions.

The profiles are built by :func:`driftline.streams.catalog.build_profiles`, the same function a worker
uses on a ``reference`` file, so a baseline made here bins and samples exactly as the stream does.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from driftline.platform.config import ModelConfig, load_config
from driftline.platform.text import printable

__all__ = ["baseline_document", "read_baseline", "register", "render_baseline"]

_TASKS = ("binary", "multiclass", "regression")
_KINDS = ("numeric", "categorical")
_TOP_CATEGORIES = 10


def _fail(message: str) -> int:
    print(f"driftline: error: {printable(message)}", file=sys.stderr)
    return 2


def _feature_types(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, kind = pair.partition("=")
        if not sep or not name or kind not in _KINDS:
            raise ValueError(f"--feature-type {pair!r}: use NAME=numeric or NAME=categorical")
        out[name] = kind
    return out


def baseline_document(
    rows: Sequence[Mapping[str, Any]], model_id: str, model_version: str, cfg: ModelConfig
) -> dict[str, Any]:
    """The baseline of ``rows``: whole-model profile dict plus ``segments`` (see the module doc)."""
    from driftline.streams.catalog import build_profiles

    profiles = build_profiles(rows, model_id, cfg)
    for profile in profiles.values():
        profile.model_version = model_version
    doc: dict[str, Any] = profiles[(model_id, "")].to_dict()
    doc["segments"] = {seg: p.to_dict() for (_, seg), p in sorted(profiles.items()) if seg}
    return doc


def _cmd_create(args: argparse.Namespace) -> int:
    from driftline.platform.files import load_rows

    try:
        types = _feature_types(args.feature_type or [])
    except ValueError as exc:
        return _fail(str(exc))
    if not args.out and not args.store_url:
        return _fail("give --out FILE and/or --store-url URL: the baseline has to go somewhere")
    cfg = load_config(getattr(args, "config", None)).model(args.model)
    cfg = replace(cfg, task=args.task or cfg.task, feature_types={**cfg.feature_types, **types})
    rows = list(load_rows(args.data))
    if not rows:
        return _fail(f"{args.data} holds no rows")
    doc = baseline_document(rows, args.model, args.version, cfg)
    where = []
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        where.append(args.out)
    if args.store_url:
        from driftline.apps.commands.ops_cli import StoreUnavailable, open_store
        from driftline.platform.store import safe_url, save_profile

        try:
            sessions = open_store(args.store_url)
        except StoreUnavailable as exc:
            return _fail(str(exc))
        with sessions.begin() as session:
            save_profile(
                session, doc, args.model, args.version, f"file:{args.data}", time.time_ns() // 1_000_000
            )
        where.append(safe_url(args.store_url))
    n_seg = len(doc["segments"])
    print(
        printable(
            f"baseline of {args.model} version {args.version}: {doc['n_rows']} rows, {len(doc['features'])} "
            f"features, {n_seg} segment profile{'s' * (n_seg != 1)} -> {', '.join(where)}"
        )
    )
    return 0


def read_baseline(args: argparse.Namespace) -> dict[str, Any]:
    """The baseline named by ``--file`` or the newest one of (model, version) in the store."""
    if args.file:
        doc: dict[str, Any] = json.loads(Path(args.file).read_text(encoding="utf-8"))
        if doc.get("model_id") != args.model:
            raise ValueError(f"{args.file} is the baseline of {doc.get('model_id')!r}, not {args.model!r}")
        if args.version is not None and doc.get("model_version") != args.version:
            raise ValueError(f"{args.file} is version {doc.get('model_version')!r}, not {args.version!r}")
        return doc
    from driftline.apps.commands.ops_cli import open_store
    from driftline.platform.store import latest_profile, safe_url

    version = "*" if args.version is None else args.version
    with open_store(args.store_url)() as session:
        stored = latest_profile(session, args.model, version)
    if stored is None:
        raise ValueError(f"no baseline of {args.model} version {version} in {safe_url(args.store_url)}")
    return stored


def _num(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, ".6g")


def _describe(part: Mapping[str, Any]) -> tuple[str, str, str, str, str]:
    """(kind, n, missing, summary, detail) of one numeric or categorical profile dict; the
    detail (a numeric feature's bin edges) goes on its own line under the summary."""
    if part["kind"] == "numeric":
        summary = (
            f"mean {_num(part['mean'])}, std {_num(part['std'])}, "
            f"range [{_num(part['min'])}, {_num(part['max'])}]"
        )
        edges = "edges " + " ".join(_num(e) for e in part["edges"])
        return "numeric", str(part["n"]), str(part["missing"]), summary, edges
    counts: dict[str, int] = part["counts"]
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{c} {n}" for c, n in ranked[:_TOP_CATEGORIES])
    more = len(ranked) - _TOP_CATEGORIES
    noun = "category" if len(ranked) == 1 else "categories"
    summary = f"{len(ranked)} {noun}: {shown}" + (f", ... (+{more} more)" if more > 0 else "")
    return "categorical", str(sum(counts.values())), str(part["missing"]), summary, ""


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Aligned columns; each row's last cell, when not empty, on the next line under the
    second-to-last column. Cells are escaped (:func:`printable`) before they are measured: feature
    names and category values come from the reference data."""
    rows = [tuple(printable(cell) for cell in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 2)]
    lines = []
    for *cells, text, detail in rows:
        lead = "  " + "".join(c.ljust(w + 2) for c, w in zip(cells, widths, strict=True))
        lines.append(lead + text)
        if detail:
            lines.append(" " * len(lead) + detail)
    return lines


def render_baseline(doc: Mapping[str, Any], segment: str = "") -> str:
    """A readable summary of one profile of a baseline (``segment`` "" = the whole model)."""
    segments: Mapping[str, Any] = doc.get("segments") or {}
    if segment and segment not in segments:
        raise ValueError(f"no segment {segment!r} in the baseline; it has: {', '.join(segments) or 'none'}")
    prof = segments[segment] if segment else doc
    title = f"baseline of {doc['model_id']} version {doc['model_version']}"
    lines = [printable(f"{title}{f' segment {segment}' if segment else ''}: {prof['n_rows']} rows")]
    rows: list[tuple[str, ...]] = [("feature", "kind", "n", "missing", "summary", "")]
    rows += [(name, *_describe(part)) for name, part in sorted(prof["features"].items())]
    for name in ("prediction", "label"):
        if prof.get(name) is not None:
            rows.append((f"({name})", *_describe(prof[name])))
    lines += _table(rows)
    metrics: Mapping[str, float | None] = prof.get("metrics") or {}
    if metrics:
        lines.append("baseline metrics:")
        names = {k: printable(k) for k in metrics}
        width = max(map(len, names.values()))
        lines += [f"  {names[k].ljust(width)}  {_num(v)}" for k, v in sorted(metrics.items())]
    else:
        lines.append("baseline metrics: none (the rows need both prediction and label)")
    if not segment and segments:
        lines.append(
            printable(
                "segments: " + ", ".join(f"{s} ({p['n_rows']} rows)" for s, p in sorted(segments.items()))
            )
        )
    return "\n".join(lines) + "\n"


def _cmd_show(args: argparse.Namespace) -> int:
    doc = read_baseline(args)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True, allow_nan=False))
    else:
        sys.stdout.write(render_baseline(doc, args.segment))
    return 0


def register(subparsers: Any) -> None:
    """Add ``baseline create`` and ``baseline show`` to the ``driftline`` command."""
    baseline = subparsers.add_parser("baseline", help="build and inspect reference profiles (baselines)")
    sub = baseline.add_subparsers(dest="baseline_command", required=True)

    create = sub.add_parser("create", help="profile reference rows (whole model and per segment)")
    create.add_argument("--model", required=True, help="model id")
    create.add_argument("--version", default="*", help="model version the baseline is for (default *: all)")
    create.add_argument("--data", required=True, help="reference rows: .jsonl, .json, .csv or .parquet")
    create.add_argument("--task", choices=_TASKS, help="model task (default: the configuration's)")
    create.add_argument(
        "--feature-type",
        action="append",
        metavar="NAME=KIND",
        help="force a column's kind (numeric or categorical); repeatable",
    )
    create.add_argument("--out", help="write the baseline JSON here")
    create.add_argument("--store-url", help="also save it in this store (created by `driftline db upgrade`)")
    create.set_defaults(func=_cmd_create)

    show = sub.add_parser("show", help="summarise a baseline: features, bins, categories, metrics")
    show.add_argument("--model", required=True, help="model id")
    show.add_argument("--version", default=None, help="model version (default *; with --file: not checked)")
    source = show.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="a baseline JSON written by `baseline create --out`")
    source.add_argument("--store-url", help="read the newest baseline of the model version from this store")
    show.add_argument("--segment", default="", help="show this segment's profile (e.g. channel=web)")
    show.add_argument("--json", action="store_true", help="print the baseline JSON instead")
    show.set_defaults(func=_cmd_show)
