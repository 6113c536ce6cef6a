"""``driftline replay``: feed recorded events through the broker and the same agents, then report.

Replay is not a second code path. It produces the files' lines to the ordinary input topics
(in timestamp order, batched as the producer helper batches), ends every input partition with
an end-of-input control record, runs the ordinary worker until every merge partition has
announced that all windows are final, and builds the report from what the worker published
on its topics: window results, alerts, retraining requests and dead-letter records.
"""

from __future__ import annotations

import json
import math
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from driftline.apps.runner import create_topics, run_worker, scratch_checkpoints, web_port
from driftline.platform.broker import EmbeddedBroker
from driftline.platform.config import Config
from driftline.platform.files import load_rows
from driftline.platform.kafka import confluent_config, record_headers, record_position
from driftline.schemas import decode_alert, decode_retraining_request, decode_window_result, rfc3339_to_ms
from driftline.schemas.deadletter import (
    BATCH_INDEX_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
    reason_of,
)
from driftline.streams.app import END_OF_RESULTS, FINAL_WINDOWS_HEADER, MERGE_PARTITION_HEADER, DriftlineApp
from driftline.streams.catalog import ModelCatalog, StoredProfiles, build_profiles
from driftline.streams.ingest import CONTROL_HEADER, END_OF_INPUT

__all__ = [
    "IncompleteReplay",
    "ReplayReport",
    "collect_results",
    "end_inputs",
    "read_lines",
    "replay",
    "write_report",
]

BATCH_LINES = 500


@dataclass
class ReplayReport:
    windows: list[dict[str, Any]] = field(default_factory=list)
    provisional_windows: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    retraining_requests: list[dict[str, Any]] = field(default_factory=list)
    dead_letter: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "report_version": 1,
            "inputs": self.inputs,
            "windows": self.windows,
            "provisional_windows": self.provisional_windows,
            "alerts": self.alerts,
            "retraining_requests": self.retraining_requests,
            "dead_letter": self.dead_letter,
            "counters": self.counters,
        }


def _timestamp(line: bytes) -> int | None:
    try:
        obj = orjson.loads(line)
        ts = obj["timestamp"]
        return ts if isinstance(ts, int) else rfc3339_to_ms(ts)
    except Exception:
        return None


#: a rejected event's origin: one dead-letter record per origin, however often it was re-read
_WHERE_HEADERS = (SOURCE_TOPIC_HEADER, SOURCE_PARTITION_HEADER, SOURCE_OFFSET_HEADER, BATCH_INDEX_HEADER)


class IncompleteReplay(RuntimeError):
    """The workers finished but the report would lack some of their results."""


def read_lines(path: str | Path) -> list[tuple[int, int, bytes]]:
    """(timestamp, line number, raw line) of a JSONL file, sorted by event time.

    Lines that are not JSON or have no readable timestamp keep their place relative to the
    line before them: they are still sent, so the worker dead-letters them as it would live."""
    out: list[tuple[int, int, bytes]] = []
    last = 0
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            ts = _timestamp(line)
            last = ts if ts is not None else last
            out.append((last, n, line))
    out.sort(key=lambda t: (t[0], t[1]))
    return out


def _batches(lines: list[tuple[int, int, bytes]], kind: str) -> Iterator[bytes]:
    """Batch envelopes of well-formed lines; a line that is not a JSON object goes alone, so
    it cannot spoil its neighbours' batch."""
    head = b'{"schema_version":"1.0","kind":"' + kind.encode() + b'","events":['
    chunk: list[bytes] = []
    for _, _, line in lines:
        try:
            ok = isinstance(orjson.loads(line), dict)
        except orjson.JSONDecodeError:
            ok = False
        if not ok:
            if chunk:
                yield head + b",".join(chunk) + b"]}"
                chunk = []
            yield line
            continue
        chunk.append(line)
        if len(chunk) >= BATCH_LINES:
            yield head + b",".join(chunk) + b"]}"
            chunk = []
    if chunk:
        yield head + b",".join(chunk) + b"]}"


def _produce(app: DriftlineApp, predictions: list, labels: list) -> None:
    producer = Producer(confluent_config(app.settings, linger_ms=20, **{"message.max.bytes": 16_000_000}))
    topics = app.topics
    counts = app.config.topics
    for topic, lines, kind, n in (
        (topics.predictions, predictions, "predictions", counts.predictions),
        (topics.ground_truth, labels, "ground_truth", counts.ground_truth),
    ):
        # round-robin over partitions: every partition advances through event time together
        for i, message in enumerate(_batches(lines, kind)):
            _produce_one(producer, topic, message, partition=i % n)
    end_inputs(app, producer)
    if producer.flush(60) != 0:
        raise RuntimeError("could not deliver the replay input to the broker")


def end_inputs(app: DriftlineApp, producer: Producer) -> None:
    """End every input partition: once the worker has read these, every window is final."""
    for topic, n in (
        (app.topics.predictions, app.config.topics.predictions),
        (app.topics.ground_truth, app.config.topics.ground_truth),
    ):
        for p in range(n):
            _produce_one(producer, topic, None, partition=p, headers=[(CONTROL_HEADER, END_OF_INPUT)])


def _produce_one(producer: Producer, topic: str, value: bytes | None, **kwargs: Any) -> None:
    while True:
        try:
            producer.produce(topic, value, **kwargs)
            return
        except BufferError:
            producer.poll(0.1)


def collect_results(app: DriftlineApp, done: threading.Event, sink: dict[str, Any], deadline: float) -> None:
    """Read window-results until every merge partition's end-of-results marker has been read on
    every results partition (each marker follows all that its merge partition wrote there),
    then set ``done``. ``sink["complete"]`` says whether that happened before ``deadline``;
    ``sink["missing"]`` is ``(emitted, read)`` final windows when fewer were read than the
    markers say were emitted, which would be a bug this check exists to make loud."""
    consumer = Consumer(
        confluent_config(
            app.settings, group_id=f"driftline-replay-{uuid.uuid4().hex}", enable_auto_commit=False
        )
    )
    topic = app.topics.results
    n_results, n_merge = app.config.topics.results, app.config.topics.partials
    consumer.assign([TopicPartition(topic, p, 0) for p in range(n_results)])
    markers: dict[int, set[bytes]] = {p: set() for p in range(n_results)}
    emitted: dict[bytes, int] = {}
    finals: set[tuple] = set()

    def finished() -> bool:
        return all(len(mps) >= n_merge for mps in markers.values())

    try:
        while time.monotonic() < deadline and not finished():
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            _, partition, _ = record_position(msg)
            value = msg.value()
            if value is None:
                raise ValueError(f"a record without a value on {topic}[{partition}]")
            headers = record_headers(msg)
            if headers.get(CONTROL_HEADER) == END_OF_RESULTS:
                mp = headers.get(MERGE_PARTITION_HEADER) or b""
                markers[partition].add(mp)
                emitted[mp] = int(headers.get(FINAL_WINDOWS_HEADER) or b"0")
                sink["counters"] = orjson.loads(value)
                continue
            result = decode_window_result(value)
            sink["results"].append(result)
            if result.phase == "final":  # each final window comes from one merge partition
                segment = tuple(sorted(result.segment.items()))
                finals.add((result.model_id, result.model_version, segment, result.window_start_ms))
        sink["complete"] = finished()
        expected = sum(emitted.values())
        sink["missing"] = (expected, len(finals)) if len(finals) < expected else None
    finally:
        consumer.close()
        done.set()


def _consume_all(app: DriftlineApp, topics: dict[str, int], idle_s: float = 2.0) -> dict[str, list[Any]]:
    """Every record of ``topics`` (name -> partitions), read by one consumer until it has been
    idle for ``idle_s``. One consumer for all of them, so a report waits out one idle window,
    not one per topic; "until idle" and not "until the high watermark" because the embedded
    broker reports high watermarks short (../shared/BROKER-NOTES.md)."""
    consumer = Consumer(
        confluent_config(
            app.settings, group_id=f"driftline-replay-{uuid.uuid4().hex}", enable_auto_commit=False
        )
    )
    consumer.assign([TopicPartition(t, p, 0) for t, n in topics.items() for p in range(n)])
    out: dict[str, list[Any]] = {t: [] for t in topics}
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_s:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            last = time.monotonic()
            out[msg.topic() or ""].append(msg)
    finally:
        consumer.close()
    return out


def _load_reference(path: str, config: Config, model_ids: set[str]) -> dict[Any, Any]:
    """Profiles for every model: rows with a ``model_id`` profile that model; rows without
    one are the reference of every model in the replay."""
    rows = list(load_rows(path))
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_model[str(row.get("model_id", ""))].append(row)
    profiles: dict[Any, Any] = {}
    for model_id in sorted(model_ids | set(config.models)):
        model_rows = by_model.get(model_id) or by_model.get("")
        if model_rows:
            profiles.update(build_profiles(model_rows, model_id, config.model(model_id)))
    return profiles


def _model_ids(lines: list[tuple[int, int, bytes]]) -> set[str]:
    ids = set()
    for _, _, line in lines:
        try:
            ids.add(str(orjson.loads(line)["model_id"]))
        except Exception:
            continue
    return ids


def replay(
    config: Config,
    predictions: str | Path,
    ground_truth: str | Path,
    *,
    reference: str | Path | None = None,
    broker: str | None = None,
    timeout_s: float = 900.0,
    loglevel: str = "WARNING",
    external_workers: bool = False,
    store_url: str | None = None,
) -> ReplayReport:
    """Replay the two files and return the report (see docs/replay-report.md).

    With ``external_workers``, no worker runs here: the files are fed to the configured
    topics (``app_id`` and prefix as configured) and the report is built once the workers
    of that ``app_id``, wherever they run, have finished every window. That is how a replay
    is spread over several workers, or survives one of them being killed.

    With ``store_url``, model versions that have a reference profile in that store are judged
    against it, as a worker does (streams/catalog.py); the store is read, never written, and
    only once, at the first window of each version, so a replay stays a function of its input.
    """
    if external_workers and store_url is not None:  # never a setting silently ignored
        raise ValueError(
            "--store-url has no effect with --external-workers: those workers read the stored "
            "profiles of their own store_url; drop one of the two"
        )
    pred_lines = read_lines(predictions)
    label_lines = read_lines(ground_truth)
    run = uuid.uuid4().hex[:8]
    embedded = None
    scratch = tempfile.TemporaryDirectory(prefix="driftline-replay-")
    if broker is None:
        if external_workers:
            raise ValueError("external workers need --broker: they must reach the same cluster")
        embedded = EmbeddedBroker().start()
        broker = embedded.bootstrap_servers
        prefix = config.topics.prefix
    elif external_workers:
        prefix = config.topics.prefix
    else:  # never mix a replay with live topics on a shared cluster
        prefix = f"{config.topics.prefix}replay-{run}."
    app_id = config.app_id if external_workers else f"{config.app_id}-replay-{run}"
    config = replace(
        config, bootstrap_servers=broker, app_id=app_id, topics=replace(config.topics, prefix=prefix)
    )
    try:
        profiles = _load_reference(str(reference), config, _model_ids(pred_lines)) if reference else {}
        stored = None if store_url is None else StoredProfiles(store_url, refresh_s=math.inf)
        catalog = ModelCatalog.load(
            config, extra_profiles=profiles, extra_source=f"file:{reference}", stored=stored
        )
        app = DriftlineApp(
            config,
            catalog,
            web_port=web_port(),
            session_timeout_s=6,
            idle_after_s=timeout_s,
            checkpoints=None if external_workers else scratch_checkpoints(scratch.name),
        )
        create_topics(app)
        _produce(app, pred_lines, label_lines)
        done = threading.Event()
        sink: dict[str, Any] = {"results": [], "counters": {}, "complete": False}
        collector = threading.Thread(
            target=collect_results, args=(app, done, sink, time.monotonic() + timeout_s), daemon=True
        )
        collector.start()
        if external_workers:
            collector.join()
        else:
            run_worker(app, stop=done, loglevel=loglevel)
            collector.join(timeout=30)
        if not sink["complete"]:
            raise TimeoutError(f"replay did not finish within {timeout_s:.0f}s")
        if sink["missing"]:
            emitted, read = sink["missing"]
            raise IncompleteReplay(f"the workers emitted {emitted} final window results, {read} were read")
        report = _report(app, sink)
        report.inputs = {
            "predictions": str(predictions),
            "ground_truth": str(ground_truth),
            "reference": str(reference) if reference else None,
            "prediction_lines": len(pred_lines),
            "ground_truth_lines": len(label_lines),
        }
        return report
    finally:
        if embedded is not None:
            embedded.stop()
        scratch.cleanup()


def _report(app: DriftlineApp, sink: dict[str, Any]) -> ReplayReport:
    report = ReplayReport()
    final = [r for r in sink["results"] if r.phase == "final"]
    report.provisional_windows = len(sink["results"]) - len(final)
    seen = set()
    for r in sorted(
        final, key=lambda r: (r.model_id, r.model_version, sorted(r.segment.items()), r.window_start_ms)
    ):
        key = (r.model_id, r.model_version, tuple(sorted(r.segment.items())), r.window_start_ms)
        if key in seen:  # a re-delivered result (at-least-once): the same numbers
            continue
        seen.add(key)
        report.windows.append(msgspec.to_builtins(r))
    c, t = app.config.topics, app.topics
    read = _consume_all(app, {t.alerts: c.alerts, t.retraining: c.retraining, t.dead_letter: c.dead_letter})
    report.alerts = _unique(read[t.alerts], decode_alert)
    report.retraining_requests = _unique(read[t.retraining], decode_retraining_request)
    # one record per rejected event: an input message re-read after a restart is dead-lettered
    # again, so records are keyed by where the event came from
    unique: dict[tuple, str] = {}
    for m in read[t.dead_letter]:
        h = record_headers(m)
        where = tuple(h.get(k) for k in _WHERE_HEADERS)
        unique[where] = reason_of(h)
    by_reason = Counter(unique.values())
    report.dead_letter = {"total": len(unique), "by_reason": dict(sorted(by_reason.items()))}
    report.counters = dict(sink["counters"])
    return report


def _unique(messages: list[Any], decode: Callable[[bytes, Any], Any]) -> list[dict[str, Any]]:
    """CloudEvents as emitted, in emission order; re-deliveries (same id) listed once.

    Each is listed in its structured JSON form whatever the topic's content mode, so a report
    does not change with the mode, and every event in it passed the contract's validation."""
    out, ids = [], set()
    for m in sorted(messages, key=lambda m: m.timestamp()[1]):
        event = msgspec.to_builtins(decode(m.value(), m.headers()))
        if event["id"] in ids:
            continue
        ids.add(event["id"])
        out.append(event)
    return out


def write_report(report: ReplayReport, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report.to_dict(), indent=2, sort_keys=False) + "\n")
