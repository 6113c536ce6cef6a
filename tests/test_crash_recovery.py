"""kill -9 a worker mid-stream, start another: the report equals an uninterrupted run's.

The uninterrupted run is an ordinary ``driftline replay`` on the same broker. The crash run
feeds the same files with ``replay --external-workers`` to worker processes sharing one
``app_id`` and one checkpoint store: worker A is SIGKILLed once windows are being produced,
worker B takes over from the checkpoints and the committed offsets.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml
from confluent_kafka import Producer
from conftest import consume_all

from driftline.apps.simulate import Traffic, simulate, write_jsonl
from driftline.platform.broker import free_loopback_port
from driftline.platform.config import load_config
from driftline.platform.kafka import KafkaSettings, TopicNames, confluent_config, ensure_topics
from driftline.platform.metrics import scrape_messages_consumed, scrape_total
from driftline.platform.store.db import upgrade
from driftline.schemas import rfc3339_to_ms
from driftline.streams.producer import DriftlineProducer

#: the bad input lines of every mode: dead-lettered once each, even across the crash
BAD_LINES = b'{"prediction_id": "broken"\n{"model_id": "fraud-detector"}\nnot json at all\n'
#: event time fed per round of the two producers, both flushed at its end: under the grace
#: (5 s), so no event can reach the join after its window's grace has passed, however the two
#: producers' messages interleave within a round
ROUND_MS = 2_000


def _config(
    tmp_path: Path,
    name: str,
    kafka: KafkaSettings,
    prefix: str,
    partitions: int = 0,
    models: dict | None = None,
) -> Path:
    """Three input and four join partitions by default; ``partitions`` sets all of them."""
    store = f"sqlite:///{tmp_path}/{name}.sqlite"
    upgrade(store)
    config = {
        "app_id": f"{prefix}{name}",
        "bootstrap_servers": kafka.bootstrap_servers,
        "store_url": store,
        "topics": {
            "prefix": f"{prefix}{name}.",
            "predictions": partitions or 3,
            "ground_truth": partitions or 3,
            "join": partitions or 4,
            "partials": 2,
        },
        "defaults": {"window": "30s", "grace": "5s", "label_horizon": "15s"},
        "models": models or {},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _cli(config: Path, *args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "driftline.apps.cli", "--config", str(config), *args],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )


def _without_topic_prefix(request: dict) -> dict:
    """A request names the input topics it covers, and the two runs use topics under different
    prefixes (a replay on a shared cluster never uses the live ones): compare the base names."""
    request = json.loads(json.dumps(request))
    data = request["data"]
    training = data.get("training_data") or {}
    for r in training.get("predictions", []) + training.get("labels", []):
        r["topic"] = r["topic"].rsplit(".", 1)[-1]
    for key in ("prediction_offsets", "label_offsets"):
        if key in data.get("parameters", {}):
            data["parameters"][key] = re.sub(r"[^,]*\.([^.,:]+):", r"\1:", data["parameters"][key])
    return request


def _feed_with_two_partitioners(
    config_path: Path, kafka: KafkaSettings, traffic: Traffic, seed: int, halfway: threading.Event
) -> int:
    """Feed the traffic as two live producers would: the producer helper (the join's hash,
    batches) and a foreign one for a seeded random part of each kind: predictions as single
    events keyed by ``prediction_id`` with librdkafka's ``murmur2_random`` (what Java clients
    do), labels as batches sent to random partitions. A prediction and its label often come
    by different producers, hence on unrelated partitions. Predictions and labels go out
    together in event-time order, a round at a time; halfway through, the feed waits for
    ``halfway`` (the test kills the worker there). Returns the events sent by the foreign one."""
    config = load_config(config_path, environ={})
    topics = TopicNames.from_config(config)
    ensure_topics(kafka, topics.partitions(config), timeout=30)  # the worker may not have yet
    rng = np.random.default_rng(seed)
    foreign = Producer(confluent_config(kafka, linger_ms=5, partitioner="murmur2_random"))
    events = sorted(
        [(p["timestamp"], 0, p) for p in traffic.predictions]
        + [(g["timestamp"], 1, g) for g in traffic.labels],
        key=lambda e: (e[0], e[1]),
    )
    by_foreign = rng.random(len(events)) < 0.5
    sent = 0
    with DriftlineProducer(kafka, topic_prefix=config.topics.prefix, linger_ms=1000) as helper:
        round_end = events[0][0] + ROUND_MS
        labels: list[bytes] = []

        def end_round() -> None:
            if labels:
                body = b'{"schema_version":"1.0","kind":"ground_truth","events":[' + b",".join(labels) + b"]}"
                partition = int(rng.integers(config.topics.ground_truth))
                foreign.produce(topics.ground_truth, body, partition=partition)
                labels.clear()
            helper.flush()
            assert foreign.flush(30) == 0, "the foreign producer could not deliver"

        middle = events[len(events) // 2][0]
        for (ts, kind, event), other in zip(events, by_foreign.tolist(), strict=True):
            if ts >= round_end:
                end_round()
                if round_end <= middle < ts + ROUND_MS:
                    assert halfway.wait(180), "the test never let the feed go on"
                round_end = ts + ROUND_MS
            if not other:
                (helper.send_prediction if kind == 0 else helper.send_ground_truth)(event)
                continue
            sent += 1
            if kind == 0:
                foreign.produce(topics.predictions, orjson.dumps(event), key=event["prediction_id"].encode())
            else:
                labels.append(orjson.dumps(event))
            foreign.poll(0)
        end_round()
    return sent


def _without_positions(request: dict) -> dict:
    """A request without the input offsets it covers: two producers lay the same events out
    as other messages, so their offsets differ; :func:`_input_cover` checks them instead."""
    request = json.loads(json.dumps(request))
    data = request["data"]
    for kind in ("predictions", "labels"):
        data.get("training_data", {}).pop(kind, None)
    for key in ("prediction_offsets", "label_offsets"):
        data.get("parameters", {}).pop(key, None)
    return request


def _input_cover(
    kafka: KafkaSettings, topics: TopicNames, traffic: Traffic, start_ms: int, end_ms: int
) -> dict[str, dict[int, list[int]]]:
    """The oracle of a request's input positions, read back from the input logs: per
    partition, the first and last offset of the messages holding a prediction with event time
    in ``[start_ms, end_ms)``, or a label of such a prediction."""
    times = {p["prediction_id"]: p["timestamp"] for p in traffic.predictions}
    cover: dict[str, dict[int, list[int]]] = {"predictions": {}, "labels": {}}
    for kind, topic in (("predictions", topics.predictions), ("labels", topics.ground_truth)):
        for message in consume_all(kafka, topic, idle_s=1.0, max_s=60):
            try:
                body = orjson.loads(message.value() or b"null")
            except orjson.JSONDecodeError:
                continue  # a bad line: in no window
            if not isinstance(body, dict):
                continue
            for event in body.get("events", [body]):
                ts = times.get(event.get("prediction_id"))
                if ts is not None and start_ms <= ts < end_ms:
                    first_last = cover[kind].setdefault(message.partition(), [message.offset()] * 2)
                    first_last[0] = min(first_last[0], message.offset())
                    first_last[1] = max(first_last[1], message.offset())
    return cover


def _comparable(report: dict, *, positions: bool = True) -> dict:
    # early_labels counts labels that happened to be read before their prediction: an accident
    # of how two topics interleave, different between any two runs, and no part of any result
    counters = {k: v for k, v in report["counters"].items() if k != "early_labels"}
    return {
        "windows": report["windows"],
        "alerts": sorted(report["alerts"], key=lambda a: a["id"]),
        "retraining_requests": sorted(
            map(_without_topic_prefix if positions else _without_positions, report["retraining_requests"]),
            key=lambda r: r["id"],
        ),
        "dead_letter": report["dead_letter"],
        "counters": counters,
    }


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["restart", "two-workers", "scale-out", "foreign-partitioner"])
def test_kill_9_loses_nothing_and_double_counts_nothing(
    mode: str, tmp_path: Path, kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    """``restart``: A runs alone, is SIGKILLed, B starts; its model has a reference profile
    and ``multivariate: true``, so the windows' exact moment sums (and the results and alerts
    read from them) must come through the crash too. ``two-workers``: A and B share the
    partitions from the start (one consumer group), A is SIGKILLed, B takes over (bootstrapped
    references). ``scale-out``: six partitions everywhere, A and B share them and both run to
    the end: two workers give the report one worker gives. ``foreign-partitioner``: as
    ``restart`` (bootstrapped references), but the events reach the input topics by two live
    producers, the producer helper and one with another partitioner
    (:func:`_feed_with_two_partitioners`), so many land on partitions other than their join
    partition's; the replay only adds the bad lines and ends the input."""
    # as many input as join partitions joins co-partitioned input in place (3 and 4: the hop only)
    partitions = {"scale-out": 6, "two-workers": 0}.get(mode, 4)
    traffic = simulate(
        60_000, events_per_s=100, feature_drift_at=0.5, concept_drift_at=0.75, seed=21, attributions=True
    )
    # one channel falls silent in windows 6-9 (of 30 s): integration-health alerts (silence of a
    # segment value, its volume) whose state lives in the merge checkpoint, to be neither lost
    # nor repeated across the crash
    t0 = traffic.predictions[0]["timestamp"]
    quiet = {
        p["prediction_id"]
        for p in traffic.predictions
        if p["segments"]["channel"] == "web" and 6 <= (p["timestamp"] - t0) // 30_000 <= 9
    }
    predictions = [p for p in traffic.predictions if p["prediction_id"] not in quiet]
    traffic = Traffic(predictions, [y for y in traffic.labels if y["prediction_id"] not in quiet])
    pred, gt = tmp_path / "p.jsonl", tmp_path / "g.jsonl"
    models = None
    if mode == "restart":
        reference = simulate(5000, events_per_s=100, seed=22, id_prefix="r")
        rows = [
            {**r, "label": g["label"]} for r, g in zip(reference.predictions, reference.labels, strict=True)
        ]
        write_jsonl(rows, tmp_path / "reference.jsonl")
        models = {"fraud-detector": {"reference": str(tmp_path / "reference.jsonl"), "multivariate": True}}
    write_jsonl(predictions, pred)
    with open(pred, "ab") as fh:  # a few bad lines: dead-lettered once each, even across the crash
        fh.write(BAD_LINES)
    write_jsonl(traffic.labels, gt)

    # the uninterrupted run
    clean_cfg = _config(tmp_path, "clean", kafka_settings, unique_prefix, partitions, models)
    clean = subprocess.run(
        [
            sys.executable,
            "-m",
            "driftline.apps.cli",
            "--config",
            str(clean_cfg),
            "replay",
            "--broker",
            kafka_settings.bootstrap_servers,
            "--predictions",
            str(pred),
            "--ground-truth",
            str(gt),
            "--report",
            str(tmp_path / "clean.json"),
        ],
        capture_output=True,
        timeout=300,
    )
    assert clean.returncode == 0, clean.stderr.decode()[-3000:]

    # the crash run
    cfg = _config(tmp_path, "crash", kafka_settings, unique_prefix, partitions, models)
    worker_args = ("worker", "--session-timeout", "6", "--idle-after", "600")
    ports = [free_loopback_port(), free_loopback_port()]
    a = _cli(cfg, *worker_args, "--metrics-port", str(ports[0]), log=tmp_path / "worker-a.log")
    b = (
        _cli(cfg, *worker_args, "--metrics-port", str(ports[1]), log=tmp_path / "worker-b.log")
        if mode in ("two-workers", "scale-out")
        else None
    )
    feeding: concurrent.futures.Future[int] | None = None
    halfway = threading.Event()
    pool = concurrent.futures.ThreadPoolExecutor(1)
    if mode == "foreign-partitioner":  # the live producers feed while A runs and is killed
        feeding = pool.submit(_feed_with_two_partitioners, cfg, kafka_settings, traffic, 5, halfway)
        pred, gt = tmp_path / "bad.jsonl", tmp_path / "none.jsonl"
        pred.write_bytes(BAD_LINES)
        gt.write_bytes(b"")
    replay_args = (
        *("replay", "--broker", kafka_settings.bootstrap_servers, "--external-workers"),
        *("--predictions", str(pred), "--ground-truth", str(gt)),
        *("--report", str(tmp_path / "crash.json"), "--timeout", "240"),
    )
    feeder = None if feeding else _cli(cfg, *replay_args, log=tmp_path / "feeder.log")
    try:
        # kill A once a window was judged: mid-stream. Watched on the workers' metrics every
        # 10 ms: on a quiet machine a worker reads this whole input in about 1.5 s, and reading
        # the results topic (what this did before) took long enough for A to finish first
        clean_report = json.loads((tmp_path / "clean.json").read_text())
        judged_in_all = len(clean_report["windows"]) + clean_report["provisional_windows"]  # a count
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            judged = 0.0
            running = [port for port, proc in zip(ports, (a, b), strict=True) if proc]  # B may own the merge
            for port in running:
                with contextlib.suppress(OSError):  # not serving yet
                    judged += scrape_total(port, "driftline_windows_evaluated_total", timeout=1)
            if judged or a.poll() is not None:
                break
            time.sleep(0.01)
        else:
            pytest.fail("worker A judged no window")
        assert a.poll() is None
        assert judged < judged_in_all, f"{judged} of {judged_in_all} slices judged: not mid-stream"
        if feeding is not None:
            assert not feeding.done(), "A must be killed while the producers still feed"
        if mode == "scale-out":
            pass
        else:
            os.kill(a.pid, signal.SIGKILL)
            a.wait(10)
        if b is None:
            b = _cli(cfg, *worker_args, "--metrics-port", str(ports[1]), log=tmp_path / "worker-b.log")
        if feeding is not None:  # the replay ends the input once every live event is in
            halfway.set()
            sent = feeding.result(timeout=120)
            assert 0.4 < sent / (len(traffic.predictions) + len(traffic.labels)) < 0.6
            feeder = _cli(cfg, *replay_args, log=tmp_path / "feeder.log")
        assert feeder is not None
        assert feeder.wait(timeout=280) == 0, (tmp_path / "feeder.log").read_text()[-3000:]
        if mode == "scale-out":
            assert a.poll() is None and b.poll() is None, "both workers ran to the end"
            shares = [scrape_messages_consumed(port) for port in ports]
            assert all(shares), f"both workers must have consumed input: {shares}"
        # rows joined where they were read, by the workers alive at the end: some wherever input
        # and join partitions are as many (the replay's feeder round-robins, so a share of the
        # rows is on its join partition), none where they are not
        alive = [port for port, proc in zip(ports, (a, b), strict=True) if proc.poll() is None]
        in_place = sum(scrape_total(port, "driftline_join_rows_in_place_total") for port in alive)
        if mode == "two-workers":
            assert in_place == 0
        else:
            assert in_place > 1000, in_place
    finally:
        halfway.set()
        pool.shutdown(wait=True)
        for proc in (a, b, feeder):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)

    crash_report = json.loads((tmp_path / "crash.json").read_text())
    assert clean_report["counters"]["predictions"] == len(predictions)
    health = {(a["data"]["rule"], a["data"]["status"]) for a in clean_report["alerts"]}
    assert ("no-predictions", "firing") in health and ("no-predictions", "resolved") in health
    assert clean_report["dead_letter"]["total"] == 3
    assert clean_report["alerts"], "the scenario must raise alerts, or the comparison proves little"
    # attribution sums ride in the window state too: judged against the bootstrapped reference
    # (restart's stored reference profile has no attributions, so its windows carry none)
    if models is None:
        assert sum(w["attribution"] is not None for w in clean_report["windows"]) > 10
    if mode == "restart":  # the moments were there to lose
        assert any(w.get("multivariate") for w in clean_report["windows"])
    if mode != "foreign-partitioner":
        assert _comparable(crash_report) == _comparable(clean_report)
        return
    # the same events as other messages: everything is identical but the input offsets, and
    # those must cover exactly the messages that hold each request's events
    assert _comparable(crash_report, positions=False) == _comparable(clean_report, positions=False)
    assert crash_report["retraining_requests"], "no request: its positions would go unchecked"
    topics = TopicNames.from_config(load_config(cfg, environ={}))
    for request in crash_report["retraining_requests"]:
        training = request["data"]["training_data"]
        covered = [rfc3339_to_ms(training["covered"][k]) for k in ("start", "end")]
        expected = _input_cover(kafka_settings, topics, traffic, *covered)
        for kind in ("predictions", "labels"):
            got = {r["partition"]: [r["first_offset"], r["last_offset"]] for r in training[kind]}
            assert all(
                r["topic"] == getattr(topics, "ground_truth" if kind == "labels" else kind)
                for r in training[kind]
            )
            assert got == expected[kind], kind
