"""Hostile input against a real ``driftline worker`` process on the embedded broker.

More than 10 000 malformed or adversarial events are mixed with valid ones: invalid UTF-8,
NaN/Infinity literals, numbers out of range, huge strings and arrays, wrong types, timestamps
before 2000 and in the year 3000, unknown models with ``allow_unknown_models: false``,
duplicate ids with different content, batches with invalid members, a valid event days ahead
of the stream. The test builds every message itself and so knows, independently of the
worker, which dead-letter reason each bad input must get and how many valid predictions each
window must count. It also samples the worker's RSS to show that hostile input cannot make
memory grow without bound.

Findings that are product bugs live in separate ``xfail(strict=True)`` tests at the bottom, so
CI stays green and the day a bug is fixed the strict xfail turns red and asks for its removal.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from conftest import consume_all
from workers import running_worker, write_worker_config

from driftline.platform.config import config_from_mapping
from driftline.platform.kafka import KafkaSettings, confluent_config, ensure_topics
from driftline.schemas import Reason, decode_predictions, decode_window_result
from driftline.streams.catalog import ModelCatalog
from driftline.streams.ingest import CONTROL_HEADER, END_OF_INPUT
from driftline.streams.join import JoinPartition

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a multiple of the window
WINDOW_MS = 10_000
WINDOWS = 4
VALID_PER_WINDOW = 500
VALID_PER_BATCH = 20
BAD_PER_BATCH = 100  # 100 batches x 100 bad members = 10 000 bad members, plus whole messages
MODEL = "m1"
DAYS_AHEAD_MS = 3 * 86_400_000
HUGE = 1_000_000  # a feature string just under the 1 MiB message limit
DEEP = 10_000  # nesting levels
#: Worker RSS may grow at most this much over its started-but-idle baseline. What the worker may
#: legitimately hold: Faust fetch buffers (max fetch 8 MB x 7 assigned partitions = 56 MB), the
#: in-flight join entries and 5 windows' sketches (~2 600 predictions: a few MB), and the 1 MB
#: categorical values, held in a window sketch and copied into partials and results (4 values x
#: 2 slices x a few copies < 40 MB). Measured here: +31 MB. Anything near the bound means some
#: input is retained per event (e.g. dead-lettered payloads kept alive).
RSS_GROWTH_BOUND_MB = 150


def _prediction(pid: str, ts: int, **over: Any) -> dict[str, Any]:
    n = int(pid.rsplit("-", 1)[-1]) if pid[-1].isdigit() else 0
    event = {
        "prediction_id": pid,
        "model_id": MODEL,
        "model_version": "v1",
        "timestamp": ts,
        "features": {"x1": round((n % 97) / 10.0 - 4.8, 3), "x2": n % 5},
        "prediction": n % 2,
        "score": round((n % 100) / 100.0, 2),
    }
    event.update(over)
    return event


def _label(pid: str, ts: int, label: int) -> dict[str, Any]:
    return {"prediction_id": pid, "model_id": MODEL, "label": label, "timestamp": ts}


def _batch(kind: str, members: list[bytes]) -> bytes:
    return b'{"schema_version":"1.0","kind":"' + kind.encode() + b'","events":[' + b",".join(members) + b"]}"


# One generator per kind of bad batch member: (expected dead-letter reason, bytes of member i).
# Every member is otherwise a perfectly valid prediction, so exactly one fault decides its reason.
def _bad_members(ts: int) -> list[tuple[str, Callable[[int], bytes]]]:
    def ok(i: int, **over: Any) -> dict[str, Any]:
        return _prediction(f"bad-{i}", ts, **over)

    return [
        ("wrong_type", lambda i: orjson.dumps(ok(i, prediction=[i]))),
        ("wrong_type", lambda i: orjson.dumps(ok(i, features=[1, 2]))),
        ("wrong_type", lambda i: orjson.dumps(ok(i, score="high"))),
        ("wrong_type", lambda i: orjson.dumps(ok(i, features={"x1": {"nested": i}}))),
        ("missing_field", lambda i: orjson.dumps({k: v for k, v in ok(i).items() if k != "model_id"})),
        ("invalid_value", lambda i: orjson.dumps(ok(i, timestamp=-5 - i))),  # negative
        ("invalid_value", lambda i: orjson.dumps(ok(i, timestamp=32_503_680_000_000))),  # year 3000
        ("invalid_value", lambda i: orjson.dumps(ok(i, timestamp="3000-01-01T00:00:00Z"))),
        ("invalid_value", lambda i: orjson.dumps(ok(i, prediction_id="p" * 1000))),
        ("invalid_value", lambda i: orjson.dumps(ok(i))[:-1] + b',"score":1e999}'),
        ("invalid_json", lambda i: orjson.dumps(ok(i))[:-1] + b',"note":"\xff\xfe"}'),  # bad UTF-8
        ("unknown_model", lambda i: orjson.dumps(ok(i, model_id=f"ghost-{i % 7}"))),
        ("unsupported_schema_version", lambda i: orjson.dumps(ok(i, schema_version="2.0"))),
        ("not_an_object", lambda i: str(i).encode()),
    ]


@dataclass
class Plan:
    """Everything the test sends, and what it expects from that, computed independently."""

    predictions: list[tuple[int, bytes]] = field(default_factory=list)  # (partition, value)
    labels: list[tuple[int, bytes]] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    deep: int = 0  # deep-nesting messages: dead-lettered, reason checked in the xfail test below
    window_counts: Counter[int] = field(default_factory=Counter)  # window start -> unique predictions
    window_labelled: Counter[int] = field(default_factory=Counter)
    duplicate_predictions: int = 0
    duplicate_labels: int = 0
    bad_total: int = 0

    def valid(self, event: dict[str, Any], *, labelled: bool = True) -> None:
        start = event["timestamp"] - event["timestamp"] % WINDOW_MS
        self.window_counts[start] += 1
        if labelled:
            self.window_labelled[start] += 1

    def bad(self, reason: str | None, n: int = 1) -> None:
        self.bad_total += n
        if reason is None:
            self.deep += n
        else:
            self.reasons[reason] += n


def _plan() -> Plan:
    plan = Plan()
    kinds = _bad_members(T0)
    label_members: list[bytes] = []
    part = 0
    n_valid = WINDOWS * VALID_PER_WINDOW
    step = WINDOW_MS // VALID_PER_WINDOW
    bad_i = 0
    for start in range(0, n_valid, VALID_PER_BATCH):
        members: list[bytes] = []
        for k in range(start, start + VALID_PER_BATCH):
            ts = T0 + k * step
            event = _prediction(f"v-{k}", ts)
            members.append(orjson.dumps(event))
            plan.valid(event)
            if k % 40 == 0:  # a duplicate id with different content, right after the original
                members.append(orjson.dumps(dict(event, prediction=1 - event["prediction"], score=0.99)))
                plan.duplicate_predictions += 1
            label_members.append(orjson.dumps(_label(event["prediction_id"], ts + 500, int(k % 3 == 0))))
            if k % 50 == 0:  # a duplicate label with a different value
                label_members.append(orjson.dumps(_label(event["prediction_id"], ts + 600, int(k % 3 != 0))))
                plan.duplicate_labels += 1
        for _ in range(BAD_PER_BATCH):
            reason, make = kinds[bad_i % len(kinds)]
            members.insert((bad_i * 7) % (len(members) + 1), make(bad_i))
            plan.bad(reason)
            bad_i += 1
        plan.predictions.append((part, _batch("predictions", members)))
        part = 1 - part
        if start == n_valid // 2:
            _whole_message_faults(plan, T0 + start * step)
    # valid, three days ahead of the stream, last on partition 0: mid-stream it would make the
    # rest of the stream late (test_an_event_days_ahead_does_not_make_the_stream_late)
    ahead = _prediction("ahead-0", T0 + n_valid * step + DAYS_AHEAD_MS)
    plan.predictions.append((0, orjson.dumps(ahead)))
    plan.valid(ahead, labelled=False)
    # labels: batches of 100 with bad members (a label must be a scalar; an id is required)
    for i in range(0, len(label_members), 100):
        chunk = label_members[i : i + 100]
        chunk.append(orjson.dumps(_label(f"v-{i}", T0, 0) | {"label": {"x": 1}}))
        chunk.append(orjson.dumps({"model_id": MODEL, "label": 1, "timestamp": T0}))
        chunk.append(orjson.dumps(_label(f"v-{i}", T0, 1) | {"model_id": "ghost"}))
        plan.bad("wrong_type")
        plan.bad("missing_field")
        plan.bad("unknown_model")
        plan.labels.append(((i // 100) % 2, _batch("ground_truth", chunk)))
    return plan


def _whole_message_faults(plan: Plan, ts: int) -> None:
    """Messages that are bad as a whole, sent mid-stream between valid batches."""
    base = _prediction("whole", ts)
    ok = orjson.dumps(base)
    faults: list[tuple[str | None, bytes]] = [
        ("invalid_json", ok[:-1] + b',"score":NaN}'),
        ("invalid_json", ok[:-1] + b',"score":Infinity}'),
        ("invalid_json", ok.replace(b'"x2":', b'"x2":-Infinity,"x3":')),
        # one NaN inside a batch: the envelope is not JSON, so the whole batch is rejected
        ("invalid_json", _batch("predictions", [ok, ok[:-1] + b',"score":NaN}'])),
        ("invalid_json", ok[:-1] + b',"note":"\xc3\x28"}'),  # invalid UTF-8 outside any batch
        ("invalid_json", b""),
        ("invalid_json", b'{"prediction_id": "x", "model_id": '),
        ("invalid_value", ok[:-1] + b',"score":-1e999}'),
        ("too_large", b'{"padding":"' + b"x" * 1_100_000 + b'"}'),
        ("too_large", _batch("predictions", [ok] * (1_048_576 // len(ok) + 1))),
        ("wrong_type", orjson.dumps(dict(base, features={"arr": list(range(100_000))}))),  # ~0.6 MB
        ("not_an_object", b"[1,2,3]"),
        ("not_an_object", b'"just a string"'),
        ("empty_batch", b'{"schema_version":"1.0","events":[]}'),
        ("wrong_kind", b'{"kind":"ground_truth","events":[' + ok + b"]}"),
        ("unsupported_schema_version", b'{"schema_version":"7.1","events":[' + ok + b"]}"),
        ("unknown_model", orjson.dumps(dict(base, prediction_id="ghost-single", model_id="ghost"))),
        ("invalid_value", orjson.dumps(dict(base, timestamp=T0 + 100 * 365 * 86_400_000))),
    ]
    deep_value = b"[" * DEEP + b"]" * DEEP
    faults += [(None, ok[:-1] + b',"deep":' + deep_value + b"}") for _ in range(3)]
    faults += [(None, ok.replace(b'"features":{', b'"features":{"d":' + deep_value + b","))]
    for i, (reason, value) in enumerate(faults):
        plan.predictions.append((i % 2, value))
        plan.bad(reason)
    # valid but adversarial: distinct 1 MB categorical values, a huge ignored top-level array,
    # an integer score beyond int64 (read as a float), and an event three days ahead
    for j in range(4):
        event = _prediction(f"huge-{j}", ts, features={"x1": 0.0, "blob": f"{j}" + "y" * (HUGE - 1)})
        plan.predictions.append((j % 2, orjson.dumps(event)))
        plan.labels.append((j % 2, _batch("ground_truth", [orjson.dumps(_label(f"huge-{j}", ts, 1))])))
        plan.valid(event)
    wide = _prediction("wide-0", ts) | {"ignored": list(range(100_000))}
    plan.predictions.append((0, orjson.dumps(wide)))
    plan.valid(wide, labelled=False)
    big_int = (
        orjson.dumps(_prediction("bigint-0", ts))[:-1] + b',"score_raw":1,"score2":99999999999999999999999}'
    )
    plan.predictions.append((1, big_int))
    plan.valid(_prediction("bigint-0", ts), labelled=False)


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except FileNotFoundError:
        return None
    return None


class _Sampler(threading.Thread):
    """Samples a process's RSS every 100 ms, so a transient spike is seen, not only the end."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            rss = _rss_mb(self.pid)
            if rss is not None:
                self.samples.append(rss)


@pytest.fixture()
def hostile_config(tmp_path: Path, kafka_settings: KafkaSettings, unique_prefix: str) -> Path:
    return write_worker_config(
        tmp_path, kafka_settings, unique_prefix, allow_unknown_models=False, models={MODEL: {}}
    )


@pytest.mark.timeout(120)
def test_worker_survives_hostile_input(
    hostile_config: Path, kafka_settings: KafkaSettings, unique_prefix: str, tmp_path: Path
) -> None:
    p = unique_prefix
    pred_topic, gt_topic = f"{p}predictions", f"{p}ground-truth"
    ensure_topics(kafka_settings, {pred_topic: 2, gt_topic: 2})
    plan = _plan()
    assert plan.bad_total >= 10_000
    # idleness must not close windows: every source ends with an end-of-input marker
    with running_worker(hostile_config, tmp_path / "worker.log", idle_after=300) as worker:
        sampler = _Sampler(worker.pid)
        try:
            _wait_for_group_member(kafka_settings, f"{p}window-results", worker, tmp_path / "worker.log")
            baseline = _rss_mb(worker.pid)
            assert baseline is not None
            sampler.start()
            producer = Producer(
                confluent_config(kafka_settings, **{"message.max.bytes": 5_000_000, "linger.ms": 5})
            )
            for part, value in plan.predictions:
                producer.produce(pred_topic, value, partition=part)
            producer.produce(pred_topic, None, partition=0)  # a tombstone is no event either
            plan.bad("invalid_json")
            for part, value in plan.labels:
                producer.produce(gt_topic, value, partition=part)
            for topic in (pred_topic, gt_topic):
                for part in range(2):
                    producer.produce(topic, None, partition=part, headers=[(CONTROL_HEADER, END_OF_INPUT)])
            assert producer.flush(30) == 0
            results, counters = _wait_for_end(kafka_settings, f"{p}window-results", worker, timeout=80)
            assert worker.poll() is None, "the worker must survive hostile input"
            rss_after = _rss_mb(worker.pid)
        finally:
            sampler.stop.set()

    # every valid prediction is counted, in its own window, once
    final = {r.window_start_ms: r for r in results if r.phase == "final" and not r.segment}
    assert {s: r.prediction_count for s, r in final.items()} == dict(plan.window_counts)
    assert {s: r.labelled_count for s, r in final.items()} == {
        s: plan.window_labelled.get(s, 0) for s in plan.window_counts
    }
    assert counters["predictions"] == sum(plan.window_counts.values())
    assert counters["duplicate_predictions"] == plan.duplicate_predictions
    assert counters["duplicate_labels"] == plan.duplicate_labels
    assert counters["late_predictions"] == 0

    # every bad input is in dead-letter exactly once, with the reason its one fault implies
    dead = consume_all(kafka_settings, f"{p}dead-letter", idle_s=3.0, max_s=40.0)
    reasons = Counter(dict(m.headers())["driftline-dlq-reason"].decode() for m in dead)
    deep = [m for m in dead if m.value() and b"[" * 100 in m.value()]
    assert len(deep) == plan.deep
    for m in deep:
        reason = dict(m.headers())["driftline-dlq-reason"].decode()
        assert reason == "invalid_json"  # "JSON nested too deeply", never processing_error
        reasons[reason] -= 1
    assert +reasons == plan.reasons
    assert len(dead) == plan.bad_total

    # memory stays bounded while 10k+ bad events and ~6 MB of huge values flow through
    peak = max(sampler.samples)
    print(f"worker RSS: baseline {baseline:.0f} MB, peak {peak:.0f} MB, end {rss_after:.0f} MB")
    assert len(sampler.samples) >= 10
    assert peak - baseline < RSS_GROWTH_BOUND_MB, (baseline, peak)


def _wait_for_group_member(
    settings: KafkaSettings, results_topic: str, worker: subprocess.Popen, log: Path
) -> None:
    """Wait until the worker has created its topics and joined its group (it reads from the
    earliest offset, so producing before would be fine, but the RSS baseline must be taken
    on a started worker)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(confluent_config(settings))
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        assert worker.poll() is None, log.read_text()[-3000:]
        if results_topic in admin.list_topics(timeout=5).topics:
            time.sleep(4.0)  # group join on this broker takes ~session_timeout/2
            return
        time.sleep(0.2)
    raise AssertionError("worker did not start")


def _wait_for_end(
    settings: KafkaSettings, topic: str, worker: subprocess.Popen, *, timeout: float
) -> tuple[list, dict[str, int]]:
    """Window results up to the merge partition's end-of-results record, and its counters."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker died"
        messages = consume_all(settings, topic, idle_s=1.0, max_s=10.0)
        ends = [m for m in messages if dict(m.headers() or []).get(CONTROL_HEADER)]
        if ends:
            results = [decode_window_result(m.value()) for m in messages if not m.headers()]
            return results, orjson.loads(ends[-1].value())
        time.sleep(1)
    raise AssertionError(f"no end-of-results on {topic} within {timeout}s")


# -- product bugs, pinned by strict xfails ------------------------------------------------------


def test_deeply_nested_json_is_invalid_json() -> None:
    deep = b'{"prediction_id": "x", "deep": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    decoded = decode_predictions(deep)
    assert decoded.events == []
    assert [(r.reason, r.detail) for r in decoded.rejected] == [
        (Reason.INVALID_JSON.value, "JSON nested too deeply - at `$`")
    ]


def test_a_deeply_nested_batch_member_is_rejected_alone() -> None:
    """msgspec parses (and skips) nesting recursively, so one member nested deeper than the
    recursion limit makes the whole envelope undecodable; the batch is then split by hand and
    only that member is dead-lettered."""
    ok = orjson.dumps(_prediction("v-1", T0))
    deep = ok[:-1] + b',"deep":' + b"[" * DEEP + b"]" * DEEP + b"}"
    decoded = decode_predictions(_batch("predictions", [ok, deep, ok.replace(b"v-1", b"v-2")]))
    assert [e.prediction_id for e in decoded.events] == ["v-1", "v-2"]
    assert [(r.reason, r.index, r.detail) for r in decoded.rejected] == [
        (Reason.INVALID_JSON.value, 1, "JSON nested too deeply - at `$.events[1]`")
    ]
    assert decoded.rejected[0].raw == deep


def test_a_batch_whose_envelope_itself_is_nested_too_deeply_is_rejected_whole() -> None:
    ok = orjson.dumps(_prediction("v-1", T0)).decode()
    envelope = '{"schema_version": "1.0", "junk": ' + "[" * DEEP + "]" * DEEP + f', "events": [{ok}]}}'
    decoded = decode_predictions(envelope.encode())
    assert decoded.events == []
    assert [(r.reason, r.index) for r in decoded.rejected] == [(Reason.INVALID_JSON.value, None)]


def test_a_split_batch_still_checks_its_envelope() -> None:
    ok = orjson.dumps(_prediction("v-1", T0))
    deep = b'{"deep":' + b"[" * DEEP + b"]" * DEEP + b"}"
    wrong_kind = b'{"kind": "ground_truth", "events": [' + ok + b"," + deep + b"]}"
    decoded = decode_predictions(wrong_kind)
    assert decoded.events == []
    assert [(r.reason, r.index) for r in decoded.rejected] == [(Reason.WRONG_KIND.value, None)]


@pytest.mark.parametrize("idle_other", [False, True])
def test_an_event_days_ahead_does_not_make_the_stream_late(idle_other: bool) -> None:
    """One valid event days ahead of the stream (but not of the clock, as in replayed history),
    seen on every input partition, used to advance the watermark by days: every later on-time
    event was counted late and left out of its window. Event time now advances on evidence from
    the bulk of a partition (the watermark ignores its ``watermark_outliers`` newest times); the
    outliers are processed and counted ``ahead_of_stream``. Driven through ingest, as a worker
    is: the router decides each partition's event time, the join only hears it."""
    from driftline.streams.ingest import Incoming, Router
    from driftline.streams.messages import decode_join_input

    config = config_from_mapping({"defaults": {"window": "10s", "grace": "2s", "label_horizon": "4s"}})
    catalog = ModelCatalog.load(config)
    sources = ["p:0", "p:1"]
    jp = JoinPartition(0, catalog, prediction_sources=sources, label_sources=[])
    router = Router(config, catalog, join_partitions=1)
    offsets = {s: 0 for s in sources}
    wall = T0 + 2 * DAYS_AHEAD_MS  # the clock is later still: not too_far_ahead

    def send(source: str, *stamps: int) -> None:
        topic, partition = source.split(":")
        batch = {
            "kind": "predictions",
            "events": [_prediction(f"{source}-{offsets[source]}-{i}", t) for i, t in enumerate(stamps)],
        }
        message = Incoming(orjson.dumps(batch), topic, int(partition), offsets[source], ())
        offsets[source] += 1
        for out in router.route_many("predictions", [message], wall_ms=wall):
            if out.topic == router.join_topic:
                jp.apply(decode_join_input(out.value))

    for s in sources:
        send(s, T0, T0 + 1, T0 + 2)
    for s in sources:  # both partitions carry a days-ahead event
        send(s, T0 + DAYS_AHEAD_MS)
    if idle_other:  # the other partition goes quiet: the one left must still not jump
        jp.source_progress("p:1", T0 + 10, idle=True)
    for i in range(100):
        send("p:0", T0 + 1000 + i)
    assert jp.counters["late_predictions"] == 0
    assert jp.counters["predictions"] == 2 * 3 + 2 + 100
    assert jp.counters["ahead_of_stream"] == 2
    assert jp.watermark < T0 + 10_000  # nowhere near the outliers


@pytest.mark.parametrize("seed", range(20))
def test_the_hand_split_agrees_with_msgspec_on_every_batch_it_can_parse(seed: int) -> None:
    """Oracle: msgspec's own raw members. Strings full of brackets, commas, quotes and escapes,
    nested members, scalars and free whitespace must not move a boundary."""
    import random

    import msgspec

    from driftline.schemas.codec import _split_batch

    rng = random.Random(seed)
    tricky = ['"', "\\", "[", "]", "{", "}", ",", ":", "\\u005d", "é", " "]

    def value(depth: int) -> object:
        kind = rng.randrange(6 if depth < 3 else 3)
        if kind == 0:
            return rng.choice([0, -1.5, 1e300, True, None])
        if kind in (1, 2):
            return "".join(rng.choice(tricky) for _ in range(rng.randrange(6)))
        if kind == 3:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        keys = ["".join(rng.choice(tricky) for _ in range(3)) for _ in range(rng.randrange(4))]
        return {k: value(depth + 1) for k in keys}

    members = [orjson.dumps(value(0)) for _ in range(rng.randrange(1, 8))]
    pad = lambda: " " * rng.randrange(3)  # noqa: E731
    body = b",".join(pad().encode() + m + pad().encode() for m in members)
    data = b'{"x": ' + orjson.dumps(value(1)) + b', "events": [' + body + b'], "kind": "predictions"}'
    envelope, split = _split_batch(data)  # type: ignore[misc]
    expected = msgspec.json.decode(data, type=dict[str, msgspec.Raw])
    assert split == [bytes(r) for r in msgspec.json.decode(bytes(expected["events"]), type=list[msgspec.Raw])]
    assert msgspec.json.decode(envelope)["events"] == [0] * len(members)
