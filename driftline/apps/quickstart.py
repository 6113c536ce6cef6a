"""``driftline quickstart``: your own model, from a file, to a report, in one command.

A file of predictions (CSV, JSON Lines, JSON or Parquet, read by :func:`load_rows`) is mapped
onto the event contract: which column is the id, the time, the prediction, the score, the label,
which are features and which are segments. Flags say so, or it is inferred from the names and
values and every inference is printed with its reason. The mapped events then go through
:func:`driftline.apps.replay.replay` (embedded broker, the ordinary worker; not a second
pipeline), the results into a SQL store (:func:`ingest_report`, as ``driftline history
--from-report`` does) and the store into the HTML report. Last, it prints the configuration that
makes the set-up permanent.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
import webbrowser
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from driftline.apps.simulate import write_jsonl
from driftline.platform.config import Config
from driftline.platform.files import load_rows
from driftline.schemas import ms_to_rfc3339, rfc3339_to_ms

__all__ = ["ColumnMapping", "QuickstartResult", "flatten_rows", "infer_mapping", "quickstart", "to_events"]

#: column names tried in order (case-insensitive) for each role
CANDIDATES: dict[str, tuple[str, ...]] = {
    "id": ("prediction_id", "id", "request_id", "event_id", "uuid", "row_id"),
    "timestamp": ("timestamp", "event_time", "time", "ts", "datetime", "created_at", "date"),
    "prediction": ("prediction", "predicted", "pred", "y_pred", "predicted_label", "output"),
    "score": ("score", "probability", "proba", "prediction_score", "y_score", "y_proba", "y_prob", "p"),
    "label": ("label", "y_true", "target", "actual", "ground_truth", "truth", "y"),
    "model_id": ("model_id", "model"),
    "model_version": ("model_version", "version"),
}
#: a text column with this many distinct values or fewer (and at least two) is a segment
MAX_SEGMENT_VALUES = 10
MAX_SEGMENTS = 3
#: windows are the smallest of these that gives at most this many windows over the data
TARGET_WINDOWS = 24
_WINDOW_STEPS = (("1m", 60), ("5m", 300), ("15m", 900), ("1h", 3600), ("6h", 21600), ("1d", 86400))
#: without --reference, the earliest share of the predictions is the reference
REFERENCE_SHARE = 0.2


@dataclass
class ColumnMapping:
    """Which column plays which role; ``reasons`` says why, for the printout."""

    id: str | None = None
    timestamp: str | None = None
    prediction: str | None = None
    score: str | None = None
    label: str | None = None
    model_id: str | None = None
    model_version: str | None = None
    features: list[str] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)

    def flags(self) -> list[str]:
        """The command-line flags that repeat this mapping without inference."""
        out = []
        for role in ("id", "timestamp", "prediction", "score", "label"):
            column = getattr(self, role)
            if column is not None:
                out.append(f"--{role}-column {column}")
        if self.features:
            out.append(f"--features {','.join(self.features)}")
        if self.segments:
            out.append(f"--segments {','.join(self.segments)}")
        return out


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows[:1000]:
        for k in row:
            seen.setdefault(k, None)
    return list(seen)


def _values(rows: Sequence[Mapping[str, Any]], column: str) -> list[Any]:
    return [r.get(column) for r in rows if r.get(column) is not None]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def infer_mapping(
    rows: Sequence[Mapping[str, Any]], given: Mapping[str, Any], *, label_in_other_file: bool = False
) -> ColumnMapping:
    """The mapping: flags in ``given`` (role -> column, ``features``/``segments`` -> lists) win,
    the rest is inferred by name (:data:`CANDIDATES`) and by values; each decision gets a reason."""
    columns = _columns(rows)
    lower = {c.lower(): c for c in columns}
    m = ColumnMapping()
    for role, names in CANDIDATES.items():
        if role == "label" and label_in_other_file:  # --label-column names the labels file's
            continue
        if given.get(role):
            column = str(given[role])
            if column not in columns:
                raise ValueError(f"--{role}-column {column!r}: no such column; columns: {', '.join(columns)}")
            setattr(m, role, column)
            m.reasons[role] = "given by flag"
            continue
        for name in names:
            if name in lower and lower[name] not in _taken(m):
                setattr(m, role, lower[name])
                m.reasons[role] = f"column named {lower[name]!r}"
                break
    if m.score is not None and not all(0.0 <= v <= 1.0 for v in _values(rows, m.score) if _is_number(v)):
        m.reasons["score"] += " (not all in [0, 1]: used as a score, not a probability)"
    taken = _taken(m)
    rest = [c for c in columns if c not in taken]
    if given.get("segments"):
        m.segments = _check(given["segments"], columns, "--segments")
        m.reasons["segments"] = "given by flag"
    else:
        for c in rest:
            values = _values(rows, c)
            distinct = set(values)
            if (
                values
                and all(isinstance(v, str) for v in values)
                and 2 <= len(distinct) <= MAX_SEGMENT_VALUES
            ):
                m.segments.append(c)
            if len(m.segments) == MAX_SEGMENTS:
                break
        m.reasons["segments"] = (
            f"text columns with 2 to {MAX_SEGMENT_VALUES} distinct values (also kept as features)"
            if m.segments
            else f"no text column with 2 to {MAX_SEGMENT_VALUES} distinct values"
        )
    if given.get("features"):
        m.features = _check(given["features"], columns, "--features")
        m.reasons["features"] = "given by flag"
    else:
        m.features = rest
        m.reasons["features"] = "every other column"
    return m


def flatten_rows(rows: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows already shaped like prediction events (``features`` and ``segments`` objects, as in
    a JSONL export of the topic) become flat columns; returns the rows and the segment names
    found nested (they are the segments, unless ``--segments`` says otherwise)."""
    out: list[dict[str, Any]] = []
    segments: dict[str, None] = {}
    for row in rows:
        flat = {
            k: v for k, v in row.items() if k not in ("features", "segments") or not isinstance(v, Mapping)
        }
        for key in ("features", "segments"):
            nested = row.get(key)
            if isinstance(nested, Mapping):
                for name, value in nested.items():
                    flat.setdefault(str(name), value)
                    if key == "segments":
                        segments.setdefault(str(name), None)
        out.append(flat)
    return out, list(segments)


def _taken(m: ColumnMapping) -> set[str]:
    return {c for c in (m.id, m.timestamp, m.prediction, m.score, m.label, m.model_id, m.model_version) if c}


def _check(names: Iterable[str], columns: Sequence[str], flag: str) -> list[str]:
    out = [n.strip() for n in names if n.strip()]
    missing = [n for n in out if n not in columns]
    if missing:
        raise ValueError(f"{flag}: no such column {missing[0]!r}; columns: {', '.join(columns)}")
    return out


# ---- values ------------------------------------------------------------------------------------
def _to_ms(value: Any, column: str) -> int:
    """Epoch seconds or milliseconds (by magnitude), RFC 3339 / ISO 8601 text, or a datetime."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp() * 1000)
    if _is_number(value):
        return int(value if value > 1e11 else value * 1000)
    text = str(value).strip()
    try:
        return rfc3339_to_ms(text)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"column {column!r}: {text!r} is not a time (epoch or ISO 8601)") from exc
    return _to_ms(parsed, column)


def _class_text(v: Any) -> Any:
    """Labels and predictions as the contract takes them: 1.0 -> 1 (CSV floats), text kept."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def infer_task(labels: Sequence[Any], predictions: Sequence[Any]) -> tuple[str, dict[str, str], str]:
    """(task, class settings, reason) from the values of the label and prediction columns."""
    values = [_class_text(v) for v in (*labels, *predictions) if v is not None]
    distinct = set(values)
    if not distinct:
        return "binary", {}, "no labels or predictions to tell: binary assumed"
    if all(_is_number(v) for v in distinct) and any(isinstance(v, float) for v in distinct):
        return "regression", {}, "non-integer numeric labels/predictions"
    if len(distinct) <= 2:
        if distinct <= {0, 1}:
            return "binary", {}, "labels/predictions are 0 and 1"
        counts = Counter(values)
        ordered = sorted(distinct, key=lambda v: (counts[v], str(v)))  # the rarer class is positive
        positive = ordered[0]
        negative = ordered[-1] if len(ordered) > 1 else None
        classes = {"positive_label": str(positive)}
        if negative is not None:
            classes["negative_label"] = str(negative)
        return "binary", classes, f"two classes; the rarer, {positive!r}, taken as positive"
    return "multiclass", {}, f"{len(distinct)} distinct classes"


def window_for(span_ms: int) -> tuple[str, int]:
    """The smallest round window that gives at most :data:`TARGET_WINDOWS` windows."""
    for text, seconds in _WINDOW_STEPS:
        if span_ms / (seconds * 1000) <= TARGET_WINDOWS:
            return text, seconds * 1000
    return _WINDOW_STEPS[-1][0], _WINDOW_STEPS[-1][1] * 1000


@dataclass
class _Events:
    predictions: list[dict[str, Any]]
    labels: list[dict[str, Any]]
    notes: list[str]


def to_events(
    rows: Sequence[Mapping[str, Any]],
    mapping: ColumnMapping,
    model_id: str,
    *,
    label_rows: Sequence[Mapping[str, Any]] | None = None,
    label_mapping: ColumnMapping | None = None,
    now_ms: Callable[[], int] | None = None,
) -> _Events:
    """Prediction and ground-truth events (the contract's JSON shape) from mapped rows."""
    notes: list[str] = []
    n = len(rows)
    if mapping.timestamp is None:
        end = (now_ms or (lambda: int(dt.datetime.now(dt.UTC).timestamp() * 1000)))()
        times = [end - (n - i) * 1000 for i in range(n)]
        notes.append("no time column: rows taken as one second apart, in file order, ending now")
    else:
        times = [_to_ms(r.get(mapping.timestamp), mapping.timestamp) for r in rows]
    predictions, labels = [], []
    for i, (row, ts) in enumerate(zip(rows, times, strict=True)):
        pid = str(row[mapping.id]) if mapping.id and row.get(mapping.id) is not None else f"row-{i}"
        score = row.get(mapping.score) if mapping.score else None
        prediction = row.get(mapping.prediction) if mapping.prediction else None
        if prediction is None and _is_number(score):
            prediction = int(float(score) >= 0.5)  # type: ignore[arg-type]
        event: dict[str, Any] = {
            "prediction_id": pid,
            "model_id": str(row.get(mapping.model_id) or model_id) if mapping.model_id else model_id,
            "model_version": str(row.get(mapping.model_version) or "v1") if mapping.model_version else "v1",
            "timestamp": ts,
            "features": {f: row.get(f) for f in mapping.features},
            "prediction": _class_text(prediction),
            "segments": {s: str(row[s]) for s in mapping.segments if row.get(s) is not None},
        }
        if _is_number(score) and math.isfinite(float(score)):  # type: ignore[arg-type]
            event["score"] = float(score)  # type: ignore[arg-type]
        predictions.append(event)
        if mapping.label and row.get(mapping.label) is not None:
            labels.append(
                {
                    "prediction_id": pid,
                    "model_id": event["model_id"],
                    "label": _class_text(row[mapping.label]),
                    "timestamp": ts,
                }
            )
    if mapping.id is None:
        notes.append("no id column: predictions numbered row-0, row-1, … in file order")
    if mapping.prediction is None and mapping.score is not None:
        notes.append(f"no prediction column: prediction = {mapping.score} >= 0.5")
    if label_rows is not None and label_mapping is not None:
        by_id = {p["prediction_id"]: p for p in predictions}
        unmatched = 0
        for row in label_rows:
            label_id = str(row.get(label_mapping.id)) if label_mapping.id else None
            pred = by_id.get(label_id) if label_id is not None else None
            if pred is None or label_mapping.label is None or row.get(label_mapping.label) is None:
                unmatched += 1
                continue
            ts = (
                _to_ms(row[label_mapping.timestamp], label_mapping.timestamp)
                if (label_mapping.timestamp and row.get(label_mapping.timestamp) is not None)
                else pred["timestamp"]
            )
            labels.append(
                {
                    "prediction_id": label_id,
                    "model_id": pred["model_id"],
                    "label": _class_text(row[label_mapping.label]),
                    "timestamp": ts,
                }
            )
        if unmatched:
            notes.append(f"{unmatched} label rows match no prediction id (or have no label): left out")
    return _Events(predictions, labels, notes)


# ---- the command -------------------------------------------------------------------------------
@dataclass
class QuickstartResult:
    mapping: ColumnMapping
    model_id: str
    task: str
    window: str
    report_path: Path
    store_url: str
    text: str
    counts: dict[str, int]


def _reference_events(
    events: _Events, reference: str | None, mapping: ColumnMapping, model_id: str, notes: list[str]
) -> tuple[list[dict[str, Any]], str]:
    """Reference rows in event shape (features nested, segments kept, labels joined in)."""
    if reference is not None:
        ref_rows, _ = flatten_rows(load_rows(reference))
        ref_mapping = infer_mapping(
            ref_rows,
            {
                "features": mapping.features,
                "segments": [s for s in mapping.segments if s in _columns(ref_rows)],
            },
        )
        ref = to_events(ref_rows, ref_mapping, model_id, now_ms=lambda: 0)
        label_of = {y["prediction_id"]: y["label"] for y in ref.labels}
        return [dict(p, label=label_of.get(p["prediction_id"])) for p in ref.predictions], f"file {reference}"
    ordered = sorted(events.predictions, key=lambda p: p["timestamp"])
    k = max(1, int(len(ordered) * REFERENCE_SHARE))
    label_of = {y["prediction_id"]: y["label"] for y in events.labels}
    cut = ordered[k - 1]["timestamp"]
    notes.append(
        f"no --reference: the earliest {REFERENCE_SHARE:.0%} of the predictions (up to "
        f"{ms_to_rfc3339(cut)}) are the reference the rest is tested against"
    )
    return [dict(p, label=label_of.get(p["prediction_id"])) for p in ordered[:k]], "earliest predictions"


def quickstart(
    predictions: str,
    *,
    labels: str | None = None,
    reference: str | None = None,
    columns: Mapping[str, Any] | None = None,
    model_id: str = "my-model",
    report: str = "driftline-quickstart.html",
    store_url: str | None = None,
    config: Config | None = None,
    open_report: bool = False,
    timeout_s: float = 900.0,
) -> QuickstartResult:
    """Map, replay, store, report; returns what to print (``text``) and what was done."""
    from driftline.apps.htmlreport import build_report
    from driftline.apps.replay import replay
    from driftline.platform.store import session_factory, upgrade
    from driftline.platform.store.db import make_engine
    from driftline.streams.sink import ingest_report

    rows, nested_segments = flatten_rows(load_rows(predictions))
    if not rows:
        raise ValueError(f"{predictions}: no rows")
    given = dict(columns or {})
    if nested_segments and not given.get("segments"):
        given["segments"] = nested_segments
    mapping = infer_mapping(rows, given, label_in_other_file=labels is not None)
    if nested_segments and given["segments"] is nested_segments:
        mapping.reasons["segments"] = "the events' own segments objects"
    label_rows = label_mapping = None
    if labels is not None:
        label_rows, _ = flatten_rows(load_rows(labels))
        label_mapping = infer_mapping(
            label_rows, {k: v for k, v in given.items() if k in ("id", "label")}, label_in_other_file=False
        )
        if label_mapping.label is None or label_mapping.id is None:
            raise ValueError(
                f"{labels}: need an id and a label column (found {', '.join(_columns(label_rows))}); "
                "name them with --id-column / --label-column"
            )
    events = to_events(rows, mapping, model_id, label_rows=label_rows, label_mapping=label_mapping)
    notes = list(events.notes)
    if label_mapping is not None:
        mapping.label = label_mapping.label
        mapping.reasons["label"] = (
            f"{label_mapping.reasons['label']} in {labels}, joined on {label_mapping.id!r}"
        )
    task, classes, task_reason = infer_task(
        [y["label"] for y in events.labels], [p["prediction"] for p in events.predictions]
    )
    times = [p["timestamp"] for p in events.predictions]
    window_text, window_ms = window_for(max(times) - min(times))
    out = Path(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    reference_path = out.with_suffix(".reference.jsonl")
    ref_events, ref_source = _reference_events(events, reference, mapping, model_id, notes)
    write_jsonl(ref_events, reference_path)

    base = config or Config()
    by_id = {p["prediction_id"]: p["timestamp"] for p in events.predictions}
    delay = max((y["timestamp"] - by_id[y["prediction_id"]] for y in events.labels), default=0)
    horizon_ms = max(delay, 0) + window_ms  # every label in the file still counts
    model = replace(
        base.defaults,
        task=task,  # type: ignore[arg-type]  # one of the three, from infer_task
        window_ms=window_ms,
        grace_ms=0,
        label_horizon_ms=horizon_ms,
        positive_label=classes.get("positive_label", base.defaults.positive_label),
        negative_label=classes.get("negative_label", base.defaults.negative_label),
    )
    model_ids = sorted({p["model_id"] for p in events.predictions})
    run_config = replace(base, models={m: model for m in model_ids})
    store = store_url or f"sqlite:///{out.with_suffix('.sqlite')}"
    with tempfile.TemporaryDirectory(prefix="driftline-quickstart-") as tmp:
        pred_file, label_file = Path(tmp, "predictions.jsonl"), Path(tmp, "labels.jsonl")
        write_jsonl(events.predictions, pred_file)
        write_jsonl(events.labels, label_file)
        result = replay(run_config, pred_file, label_file, reference=reference_path, timeout_s=timeout_s)
    _fresh_sqlite(store)
    upgrade(store)
    sessions = session_factory(make_engine(store))
    with sessions.begin() as session:
        ingest_report(result.to_dict(), session)
    pages = []
    with sessions() as session:
        for m in model_ids:
            pages.append(build_report(session, m))
    out.write_text(pages[0], encoding="utf-8")
    for m, page in zip(model_ids[1:], pages[1:], strict=True):
        out.with_name(f"{out.stem}-{m}{out.suffix}").write_text(page, encoding="utf-8")
    if open_report:
        webbrowser.open(out.resolve().as_uri())
    firing = sum(1 for a in result.alerts if str(a["type"]).endswith("firing"))
    counts = {
        "predictions": len(events.predictions),
        "labels": len(events.labels),
        "windows": len(result.windows),
        "alerts_fired": firing,
        "retraining_requests": len(result.retraining_requests),
        "dead_lettered": int(result.dead_letter.get("total", 0)),
    }
    source = " ".join(
        f"--{flag} {path}"
        for flag, path in (("predictions", predictions), ("labels", labels), ("reference", reference))
        if path
    )
    text = _explain(
        source,
        mapping,
        notes,
        task,
        task_reason,
        classes,
        window_text,
        ref_source,
        reference_path,
        model_ids,
        counts,
        out,
        store,
        horizon_ms,
    )
    return QuickstartResult(mapping, model_ids[0], task, window_text, out, store, text, counts)


def _fresh_sqlite(url: str) -> None:
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)


def _explain(
    source: str,
    m: ColumnMapping,
    notes: list[str],
    task: str,
    task_reason: str,
    classes: dict[str, str],
    window: str,
    ref_source: str,
    reference_path: Path,
    model_ids: list[str],
    counts: dict[str, int],
    report: Path,
    store: str,
    horizon_ms: int,
) -> str:
    lines = [f"driftline quickstart {source}", "", "column mapping (inferred unless given by a flag):"]
    for role in ("id", "timestamp", "prediction", "score", "label", "model_id", "model_version"):
        column = getattr(m, role)
        shown = column if column is not None else "-"
        reason = m.reasons.get(role, "none found")
        lines.append(f"  {role:<13} <- {shown:<16} ({reason})")
    lines.append(f"  {'features':<13} <- {', '.join(m.features) or '-'} ({m.reasons['features']})")
    lines.append(f"  {'segments':<13} <- {', '.join(m.segments) or '-'} ({m.reasons['segments']})")
    lines.append(f"  {'task':<13} =  {task} ({task_reason})")
    lines.append(f"  {'window':<13} =  {window} (the smallest round size giving <= {TARGET_WINDOWS} windows)")
    lines.append(f"  {'reference':<13} =  {ref_source}")
    lines += [f"  note: {n}" for n in notes]
    lines += [
        "",
        f"replayed {counts['predictions']} predictions and {counts['labels']} labels: {counts['windows']} "
        f"window results, {counts['alerts_fired']} alerts fired, {counts['retraining_requests']} "
        f"retraining requests, {counts['dead_lettered']} dead-lettered",
        f"report: {report}   (history: {store})",
        "",
        "to make it permanent, a configuration file (driftline --config FILE worker ...):",
        "",
        "models:",
    ]
    for model_id in model_ids:
        lines += [f"  {model_id}:", f"    task: {task}", f"    window: {window}"]
        lines.append(f"    label_horizon: {math.ceil(horizon_ms / 1000)}s")
        lines += [f"    {k}: {v!r}" for k, v in classes.items()]
        lines.append(f"    reference: {reference_path}")
    lines += [
        "",
        "and the same mapping without inference next time:",
        "  driftline quickstart " + source + " " + " ".join(m.flags()),
    ]
    return "\n".join(lines) + "\n"
