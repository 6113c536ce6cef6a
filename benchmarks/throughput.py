"""End-to-end throughput of one ``driftline worker`` against what the broker path allows.

Why these pairs: a worker rate means little alone on a shared 2-core box. Each worker number is
measured next to a bare reader of the *same* messages on the *same* broker in the same run:

- batches (the producer helper's default, 500 events per message): the worker vs a bare
  confluent-kafka consumer that only ``orjson.loads`` each message and counts its events;
- single-event messages (``batch_max_events=1``): the worker vs a bare Faust agent that only
  counts messages (Faust's ~100 us per message is the floor a Faust worker cannot beat).

The worker runs as the real CLI subprocess (``driftline worker``), so ``py-spy`` can attach to it
(``--profile``) and its RSS is the process's own. This module also holds the helpers the other
benchmarks share (broker, config, worker process, end-of-results wait).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from driftline.apps.simulate import simulate
from driftline.platform.broker import EmbeddedBroker, free_loopback_port
from driftline.platform.config import load_config
from driftline.platform.kafka import KafkaSettings, TopicNames, confluent_config, ensure_topics
from driftline.platform.metrics import scrape_messages_consumed
from driftline.platform.store.db import upgrade
from driftline.streams.app import END_OF_RESULTS
from driftline.streams.ingest import CONTROL_HEADER, END_OF_INPUT
from driftline.streams.producer import DriftlineProducer

__all__ = [
    "Run",
    "bare_consumer_rate",
    "broker",
    "rss_mb",
    "run_worker",
    "send_end_of_input",
    "wait_end_of_results",
    "write_config",
]

REPO = Path(__file__).resolve().parents[1]


# -- shared helpers ------------------------------------------------------------------------------
@contextmanager
def broker() -> Iterator[KafkaSettings]:
    """A fresh embedded broker per benchmark: its memory grows with what it holds."""
    with EmbeddedBroker() as running:
        yield KafkaSettings(bootstrap_servers=running.bootstrap_servers, client_id="driftline-bench")


def write_config(settings: KafkaSettings, directory: Path, topics: dict[str, Any], **extra: Any) -> Path:
    prefix = f"b{uuid.uuid4().hex[:6]}."
    store_url = f"sqlite:///{directory}/store.sqlite"
    upgrade(store_url)  # workers keep checkpoints in the store
    config = {
        "store_url": store_url,
        "app_id": f"{prefix}app",
        "bootstrap_servers": settings.bootstrap_servers,
        "topics": {"prefix": prefix, **topics},
        **extra,
    }
    path = directory / "driftline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def prefix_of(config_path: Path) -> str:
    return str(yaml.safe_load(config_path.read_text())["topics"]["prefix"])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


@dataclass
class Run:
    """A started worker subprocess that has joined its consumer group."""

    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@contextmanager
def run_worker(
    settings: KafkaSettings,
    config_path: Path,
    *,
    idle_after: float = 600,
    metrics_port: int | None = None,
    wait_joined: bool = True,
) -> Iterator[Run]:
    """``driftline worker`` in a subprocess; yields once it has created its topics and joined
    (or at once, with ``wait_joined=False``, for input that is already on the topics)."""
    log = config_path.parent / "worker.log"
    extra = ("--metrics-port", str(metrics_port)) if metrics_port else ()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "driftline.apps.cli", "--config", str(config_path), "worker"),
                *("--session-timeout", "6", "--idle-after", str(idle_after), *extra),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    run = Run(process, log)
    if not wait_joined:
        try:
            yield run
        finally:
            run.stop()
        return
    try:
        results = f"{prefix_of(config_path)}window-results"
        admin = AdminClient(confluent_config(settings))
        deadline = time.monotonic() + 60
        while results not in admin.list_topics(timeout=5).topics:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        time.sleep(4.0)  # the group join on the embedded broker takes ~session_timeout/2
        yield run
    finally:
        run.stop()


def send_end_of_input(producer: Producer, prefix: str, partitions: int) -> None:
    for topic in (f"{prefix}predictions", f"{prefix}ground-truth"):
        for p in range(partitions):
            producer.produce(topic, None, partition=p, headers=[(CONTROL_HEADER, END_OF_INPUT)])


def wait_end_of_results(settings: KafkaSettings, prefix: str, merge_partitions: int, timeout: float) -> float:
    """Block until every merge partition wrote end-of-results; returns the monotonic time."""
    consumer = Consumer(confluent_config(settings, group_id=f"bench-{uuid.uuid4().hex}"))
    topic = f"{prefix}window-results"
    parts = consumer.list_topics(timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    seen: set[bytes] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < merge_partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no end-of-results within {timeout}s")
            for m in consumer.consume(1000, 0.05):
                headers = dict(m.headers() or [])
                if headers.get(CONTROL_HEADER) == END_OF_RESULTS:
                    seen.add(headers.get("driftline-merge-partition", b""))
        return time.monotonic()
    finally:
        consumer.close()


def bare_consumer_rate(settings: KafkaSettings, topics: Sequence[str], events: int) -> float:
    """Events/s of a confluent-kafka consumer that only ``orjson.loads`` each message."""
    consumer = Consumer(
        confluent_config(settings, group_id=f"bench-{uuid.uuid4().hex}", **{"fetch.max.bytes": 52428800})
    )
    meta = consumer.list_topics(timeout=10).topics
    consumer.assign([TopicPartition(t, p, 0) for t in topics for p in meta[t].partitions])
    seen, start = 0, None
    deadline = time.monotonic() + 120
    try:
        while seen < events and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.2):
                value = m.value()
                if not value:
                    continue
                if start is None:
                    start = time.perf_counter()
                doc = orjson.loads(value)
                seen += len(doc["events"]) if "events" in doc else 1
        if start is None or seen < events:
            raise RuntimeError(f"bare consumer read {seen} of {events} events")
        return seen / (time.perf_counter() - start)
    finally:
        consumer.close()


# -- the benchmark -------------------------------------------------------------------------------
TOPICS = {"predictions": 6, "ground_truth": 6, "join": 6, "partials": 2, "results": 1}


def _traffic(n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    t = simulate(n, events_per_s=100.0, label_delay_ms=5_000, seed=1)
    return t.predictions, t.labels


def _produce(settings: KafkaSettings, prefix: str, traffic: tuple[list, list], batch: int) -> None:
    predictions, labels = traffic
    with DriftlineProducer(
        settings,
        topic_prefix=prefix,
        batch_max_events=batch,
        producer_config={"message.max.bytes": 16_000_000},
    ) as producer:
        for event in predictions:
            producer.send_prediction(event)
        for event in labels:
            producer.send_ground_truth(event)
    end = Producer(confluent_config(settings))
    send_end_of_input(end, prefix, TOPICS["predictions"])
    end.flush(30)


def _profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy in raw (collapsed stacks) format: counts per stack, aggregated by ``hot_spots``."""
    return subprocess.Popen(
        [
            *(str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid)),
            *("--duration", str(int(seconds)), "--rate", "200", "--format", "raw"),
            *("--output", str(out), "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _frame(raw: str) -> str:
    """``fn (path/file.py:12)`` -> ``fn (file.py)``: hot spots per function, not per line."""
    name, _, where = raw.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0].rstrip(')')})"


def hot_spots(raw: Path, top: int = 15) -> list[tuple[str, float, float]]:
    """(function, self %, inclusive %) from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    total_incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            total_incl[f] += n
    return [(f, 100 * c / total, 100 * total_incl[f] / total) for f, c in own.most_common(top)]


def _consumed_or_zero(port: int) -> float:
    try:
        return scrape_messages_consumed(port, timeout=1)
    except OSError:  # the worker is not serving metrics yet
        return 0.0


def wait_first_message(port: int, run: Run, timeout: float = 120.0) -> float:
    """Monotonic time at which the worker had consumed its first input message (+- 5 ms)."""
    deadline = time.monotonic() + timeout
    while _consumed_or_zero(port) == 0:
        if run.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker consumed nothing: {run.log.read_text()[-2000:]}")
        time.sleep(0.005)
    return time.monotonic()


def worker_rate(
    settings: KafkaSettings,
    n: int,
    batch: int,
    directory: Path,
    profile: Path | None = None,
    *,
    traffic: tuple[list, list] | None = None,
    before_worker: Callable[[list[str], int], None] | None = None,
    settings_extra: dict[str, Any] | None = None,
) -> tuple[float, float, float]:
    """(predictions/s, input events/s, producer events/s) of one worker on input that is already
    on the topics, from its first consumed message to end-of-results: the same start rule as the
    bare consumer's, so the ratio compares processing with processing (producing 400k events
    from Python is measured apart: it is the serving apps' cost, not the worker's)."""
    traffic = traffic or _traffic(n)
    config = write_config(
        settings, directory, TOPICS, defaults={"window": "5m", "grace": "1m"}, **(settings_extra or {})
    )
    prefix = prefix_of(config)
    app_config = load_config(config)
    ensure_topics(settings, TopicNames.from_config(app_config).partitions(app_config))
    t0 = time.monotonic()
    _produce(settings, prefix, traffic, batch)
    events = n + len(traffic[1])
    producer_rate = events / (time.monotonic() - t0)
    if before_worker is not None:  # e.g. the bare consumer on the same messages, interleaved
        before_worker([f"{prefix}predictions", f"{prefix}ground-truth"], events)
    port = free_loopback_port()
    with run_worker(settings, config, metrics_port=port, wait_joined=False) as run:
        start = wait_first_message(port, run)
        spy = _profile(run.process.pid, 60, profile) if profile else None
        end = wait_end_of_results(settings, prefix, TOPICS["partials"], timeout=900)
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            spy.wait(30)
    elapsed = end - start
    return n / elapsed, events / elapsed, producer_rate


#: what a bare Faust agent does per message: ``count`` messages, ``orjson`` decode and count
#: events (the bare consumer's work, inside Faust), ``validate`` decode and validate with the
#: worker's own codec (msgspec structs), and count events; ``hop`` decode with orjson, forward
#: the bytes through one internal topic (as the worker's repartitioning does) to a second agent
#: that decodes them again and counts events
FAUST_MODES = ("count", "orjson", "validate", "hop")
HOP_TOPIC = "bench-hop"


def faust_rate(settings: KafkaSettings, topics: Sequence[str], expect: int, mode: str = "count") -> float:
    """Messages/s (``count``) or events/s (the decoding modes) of a bare Faust agent, run as a
    subprocess with its own event loop and the worker's transport (``driftline://``)."""
    if mode == "hop":
        ensure_topics(settings, {HOP_TOPIC: TOPICS["join"]})
    out = subprocess.run(
        [sys.executable, __file__, "--faust", mode, settings.bootstrap_servers, str(expect), *topics],
        capture_output=True,
        timeout=300,
        cwd=REPO,
    )
    if out.returncode != 0:
        raise RuntimeError(f"faust {mode} agent failed: {out.stderr.decode()[-2000:]}")
    numbers = re.findall(rb"RATE=([0-9.]+)", out.stdout)  # Faust writes terminal codes around it
    return float(numbers[-1])


def _faust_main(mode: str, bootstrap: str, expect: int, topics: list[str]) -> None:
    import faust

    from driftline.schemas import decode_ground_truth, decode_predictions

    app = faust.App(
        f"bench-{mode}-{uuid.uuid4().hex[:6]}",
        broker=f"driftline://{bootstrap}",
        value_serializer="raw",
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="bench-faust-"),
        web_enabled=False,
        web_port=free_loopback_port(),
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=8 * 1024 * 1024,
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
    )
    state = {"n": 0, "start": 0.0}

    def size(topic: str, value: bytes) -> int:
        if mode == "count":
            return 1
        if not value:
            return 0
        if mode == "orjson":
            doc = orjson.loads(value)
            return len(doc["events"]) if "events" in doc else 1
        decode = decode_predictions if topic.endswith("predictions") else decode_ground_truth
        return len(decode(value).events)

    def counted(n: int) -> None:
        state["n"] += n
        if state["n"] >= expect:
            print(f"RATE={state['n'] / (time.perf_counter() - state['start'])}", flush=True)
            os._exit(0)

    hop = app.topic(HOP_TOPIC, value_type=bytes, partitions=TOPICS["join"])

    @app.agent(app.topic(*topics, value_type=bytes))
    async def measure(stream: Any) -> None:
        async for event in stream.events():
            if not state["start"]:
                state["start"] = time.perf_counter()
            n = size(event.message.topic, event.value)
            if mode == "hop":
                if n:
                    await hop.send(value=event.value, partition=event.message.partition)
            else:
                counted(n)

    if mode == "hop":

        @app.agent(hop)
        async def second(stream: Any) -> None:
            async for value in stream:
                doc = orjson.loads(value)
                counted(len(doc["events"]) if "events" in doc else 1)

    app.main = None  # type: ignore[attr-defined]
    worker = faust.Worker(app, loglevel="ERROR", quiet=True, redirect_stdouts=False, override_logging=False)
    worker.execute_from_commandline()


def run(quick: bool, profile: Path | None = None) -> list[tuple[str, str, str]]:
    """Rows (measure, value, note) for run_all's table."""
    n_batch = 50_000 if quick else 200_000
    n_single = 5_000 if quick else 20_000
    rows: list[tuple[str, str, str]] = []
    with broker() as settings, tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "batch"
        d.mkdir()
        preds_s, events_s, produced_s = worker_rate(settings, n_batch, 500, d, profile)
        prefix = prefix_of(d / "driftline.yaml")
        topics = [f"{prefix}predictions", f"{prefix}ground-truth"]
        # the bare rate is the noisiest number here (0.6M-1.5M/s between runs): the best of
        # three is the ceiling the ratio is taken against, which keeps the ratio conservative
        bare = max(bare_consumer_rate(settings, topics, 2 * n_batch) for _ in range(3))
        # the ladder between the two: the same decode inside Faust, then the worker's validation
        in_faust = faust_rate(settings, topics, 2 * n_batch, "orjson")
        validated = faust_rate(settings, topics, 2 * n_batch, "validate")
        hopped = faust_rate(settings, topics, 2 * n_batch, "hop")
        rows += [
            (
                f"worker, batches of 500, {n_batch:,} predictions + labels",
                f"{events_s:,.0f} events/s",
                f"{preds_s:,.0f} predictions/s",
            ),
            ("bare confluent-kafka + orjson, same messages", f"{bare:,.0f} events/s", "best of 3"),
            ("producer helper writing them (for scale)", f"{produced_s:,.0f} events/s", ""),
            ("ratio worker / bare (target >= 0.4)", f"{events_s / bare:.3f}", ""),
            (
                "bare Faust agent + orjson, same messages",
                f"{in_faust:,.0f} events/s",
                f"{in_faust / bare:.3f} of bare: Faust's own ceiling",
            ),
            (
                "bare Faust agent + driftline's validating decode",
                f"{validated:,.0f} events/s",
                f"{validated / bare:.3f} of bare: the ceiling of any validating Faust worker",
            ),
            (
                "bare Faust agent + orjson, forwarding through one internal topic",
                f"{hopped:,.0f} events/s",
                f"{hopped / bare:.3f} of bare: the ceiling of any repartitioning Faust worker",
            ),
        ]
        d = Path(tmp) / "single"
        d.mkdir()
        _, single_s, _ = worker_rate(settings, n_single, 1, d)
        prefix = prefix_of(d / "driftline.yaml")
        faust_s = faust_rate(settings, [f"{prefix}predictions", f"{prefix}ground-truth"], 2 * n_single)
        rows += [
            (
                f"worker, single-event messages, {n_single:,} predictions + labels",
                f"{single_s:,.0f} events/s",
                "",
            ),
            ("bare Faust agent counting the same messages", f"{faust_s:,.0f} messages/s", ""),
            ("ratio worker / bare Faust", f"{single_s / faust_s:.3f}", ""),
        ]
    return rows


#: where a worker's samples go, by the innermost frame of a known home (numpy, msgspec and the
#: like count for whoever called them); a stack through a checkpoint counts as checkpoints, one
#: that ends waiting in a selector or a condition as idle. py-spy names files relative to their
#: package root (``streams/join.py``, ``aiokafka/consumer/fetcher.py``)
_HOMES = (("checkpoints", ("platform/checkpoints.py", "snapshot (", "checkpoint (", "_delta (")),
          ("driftline: join + sketches", ("streams/join.py", "detectors/", "streams/columns.py",
                                           "streams/positions.py")),
          ("driftline: ingest", ("streams/ingest.py", "streams/messages.py", "schemas/")),
          ("driftline: merge + evaluation", ("streams/merge.py", "streams/evaluation.py", "alerting/")),
          ("driftline: agents, transport, other", ("streams/", "driftline/", "platform/")),
          ("aiokafka", ("aiokafka/",)), ("faust + mode", ("faust/", "mode/")),
          ("confluent-kafka", ("confluent_kafka/",)), ("asyncio", ("asyncio/",)))
_IDLE = ("select (", "Condition.wait (", "poll (")


def _in(frame: str, mark: str) -> bool:
    return (mark.endswith(" (") and mark in frame) or f"({mark}" in frame or f"/{mark}" in frame


def time_by_home(raw: Path) -> list[tuple[str, float]]:
    """Share of py-spy samples per home (see ``_HOMES``), from collapsed stacks."""
    shares: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        home = "other (interpreter, libraries)"
        if any(mark in frames[-1] for mark in _IDLE):
            home = "idle (waiting in a selector or a lock)"
        elif any(_in(f, mark) for f in frames for mark in _HOMES[0][1]):
            home = _HOMES[0][0]
        else:
            for frame in reversed(frames):
                found = next((h for h, marks in _HOMES[1:] if any(_in(frame, m) for m in marks)), None)
                if found is not None:
                    home = found
                    break
        shares[home] += n
    return [(h, 100 * c / max(total, 1)) for h, c in shares.most_common()]


def interleaved(
    rounds: int, n: int, batch: int = 500, profile: Path | None = None, ab_in_place: bool = False
) -> list[str]:
    """Worker vs bare consumer on the same messages, alternating (bare, worker, bare, worker,
    ...) for ``rounds`` rounds per traffic shape: the ratio per round, then its min/median/max.
    Each round produces fresh input on new topics, reads it with the bare confluent-kafka +
    orjson consumer, then runs a worker on it (timed from its first consumed message), then
    runs the worker's pure stages on the same messages in this process (``pipeline.py``: no
    broker, no Faust, one core, wall time): that last ratio is the ceiling the worker's own
    compute sets, whatever the transport.

    With ``profile`` (a directory), one more worker run per shape after the counted rounds runs
    under py-spy (not in the table: the sampler costs the worker a little) and the shares of
    its samples per home are listed.

    With ``ab_in_place``, each round runs two workers, each after its own bare read: one
    joining co-partitioned input in place (``join_in_place: true``, the default) and one
    sending every row through the internal topic (``false``), in alternating order, so the
    two are compared under the same load (two rows per shape)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cost_per_event import Case, case_traffic
    from pipeline import encode_traffic, run_pipeline

    shapes = [Case("1 model, 1 segment dimension, 4 features", 4, 1, 1),
              Case("10 models x 2 segment dimensions", 4, 2, 10)]
    lines = [f"{n:,} predictions + {n:,} labels per round, batches of {batch}, {rounds} rounds "
             "(bare, worker, bare, worker, ...)", "",
             "| traffic | bare events/s (median) | worker events/s (median) "
             "| worker / bare: min / median / max | pure stages in process / bare: min / median / max |",
             "|---|---|---|---|---|"]
    profiles: list[tuple[str, Path]] = []
    with broker() as settings, tempfile.TemporaryDirectory() as tmp:
        for shape in shapes:
            traffic = case_traffic(shape, n)
            pair = (traffic.predictions, traffic.labels)
            variants = {"in place": True, "hop": False} if ab_in_place else {"": None}
            bare: dict[str, list[float]] = {v: [] for v in variants}
            worker: dict[str, list[float]] = {v: [] for v in variants}
            # the worker's compute alone (ingest, join, merge and evaluation on one core, no
            # broker, no Faust): the most any worker built on it could keep of the bare rate
            messages = encode_traffic(traffic, batch)
            stages: dict[str, list[float]] = {v: [] for v in variants}
            for r in range(rounds):
                order = list(variants) if r % 2 == 0 else list(variants)[::-1]
                for variant in order:
                    d = Path(tmp) / f"{shape.models}-{shape.dimensions}-{r}-{variant.replace(' ', '-')}"
                    d.mkdir()

                    def read_bare(topics: list[str], events: int, into: list[float] = bare[variant]) -> None:
                        into.append(bare_consumer_rate(settings, topics, events))

                    flag = variants[variant]
                    extra = None if flag is None else {"join_in_place": flag}
                    _, events_s, _ = worker_rate(
                        settings, n, batch, d, traffic=pair, before_worker=read_bare, settings_extra=extra
                    )
                    worker[variant].append(events_s)
                    t0 = time.perf_counter()
                    run_pipeline(messages, merge=True)
                    stages[variant].append((n + len(traffic.labels)) / (time.perf_counter() - t0))
                    print(f"{shape.name} {variant} round {r + 1}: bare {bare[variant][-1]:,.0f}/s worker "
                          f"{events_s:,.0f}/s ratio {events_s / bare[variant][-1]:.3f}", file=sys.stderr)
            for variant in variants:
                ratios = sorted(w / b for w, b in zip(worker[variant], bare[variant], strict=True))
                ceiling = sorted(c / b for c, b in zip(stages[variant], bare[variant], strict=True))
                mid_bare, mid_worker = statistics.median(bare[variant]), statistics.median(worker[variant])
                name = f"{shape.name}, {variant}" if variant else shape.name
                lines.append(f"| {name} | {mid_bare:,.0f} | {mid_worker:,.0f} "
                             f"| {ratios[0]:.3f} / {statistics.median(ratios):.3f} / {ratios[-1]:.3f} "
                             f"| {ceiling[0]:.3f} / {statistics.median(ceiling):.3f} / {ceiling[-1]:.3f} |")
            if profile is not None:
                profile.mkdir(parents=True, exist_ok=True)
                raw = profile / f"worker-{shape.models}-models-{shape.dimensions}-dims.txt"
                d = Path(tmp) / f"{shape.models}-{shape.dimensions}-profiled"
                d.mkdir()
                worker_rate(settings, n, batch, d, raw, traffic=pair)
                if raw.exists():
                    profiles.append((shape.name, raw))
    for name, raw in profiles:
        lines += ["", f"py-spy on the worker, {name} (share of samples, {raw}):", "",
                  "| where | share |", "|---|---|",
                  *(f"| {home} | {share:.1f} % |" for home, share in time_by_home(raw)), "",
                  "| hottest functions (self) | self | inclusive |", "|---|---|---|",
                  *(f"| `{fn}` | {own:.1f} % | {incl:.1f} % |" for fn, own, incl in hot_spots(raw, 12))]
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--faust":
        _faust_main(argv[1], argv[2], int(argv[3]), argv[4:])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", type=Path, help="py-spy collapsed stacks of the batch run (with "
                        "--interleaved: a directory, one extra profiled worker run per shape)")
    parser.add_argument("--interleaved", type=int, metavar="ROUNDS",
                        help="only the worker vs bare consumer, alternating for ROUNDS rounds per shape")
    parser.add_argument("--events", type=int, default=200_000, help="predictions per round (--interleaved)")
    parser.add_argument("--ab-in-place", action="store_true",
                        help="with --interleaved: a worker joining in place, one through the hop, per round")
    args = parser.parse_args(argv)
    if args.interleaved:
        lines = interleaved(args.interleaved, args.events, profile=args.profile, ab_in_place=args.ab_in_place)
        print("\n".join(lines))
        return
    for row in run(args.quick, args.profile):
        print(" | ".join(row))
    if args.profile and args.profile.exists():
        for fn, own, incl in hot_spots(args.profile):
            print(f"{own:5.1f}% self {incl:5.1f}% incl  {fn}")


if __name__ == "__main__":
    main()
