"""What a person sees of a worker: one actionable line for an unreachable broker, a start-up
summary and a line per closed window at the default level, a clean Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
from confluent_kafka import Producer
from workers import running_worker, write_worker_config

from driftline.apps.simulate import simulate
from driftline.platform.kafka import KafkaSettings, confluent_config, ensure_topics
from driftline.streams.ingest import CONTROL_HEADER, END_OF_INPUT


def test_an_unreachable_broker_gives_one_line_and_exit_2_in_bounded_time(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "driftline",
            "worker",
            "--broker",
            "127.0.0.1:1",
            "--connect-timeout",
            "3",
            "--no-checkpoints",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 2
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("driftline: error: cannot reach Kafka at 127.0.0.1:1 (PLAINTEXT) within 3 s")
    assert "check the address" in lines[0] and "Traceback" not in done.stderr
    assert elapsed < 30


def test_a_worker_says_what_it_runs_and_each_window_it_closes_then_stops_cleanly_on_ctrl_c(
    tmp_path: Path, kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    config = write_worker_config(tmp_path, kafka_settings, unique_prefix, models={"fraud": {}})
    p = unique_prefix
    ensure_topics(kafka_settings, {f"{p}predictions": 2, f"{p}ground-truth": 2})
    traffic = simulate(400, model_id="fraud", events_per_s=20, seed=2)
    log = tmp_path / "worker.log"
    with running_worker(config, log) as worker:
        producer = Producer(confluent_config(kafka_settings))

        for row in traffic.predictions:
            producer.produce(f"{p}predictions", orjson.dumps(row), partition=0)
        for row in traffic.labels:
            producer.produce(f"{p}ground-truth", orjson.dumps(row), partition=0)
        for topic in (f"{p}predictions", f"{p}ground-truth"):
            for part in range(2):
                producer.produce(topic, None, partition=part, headers=[(CONTROL_HEADER, END_OF_INPUT)])
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and log.read_text().count("final:") < 2:
            assert worker.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        worker.send_signal(signal.SIGINT)
        assert worker.wait(30) == 0
    text = log.read_text()
    summary = [line for line in text.splitlines() if "driftline worker" in line]
    assert len(summary) == 1, text[-3000:]
    assert f"Kafka {kafka_settings.bootstrap_servers} (PLAINTEXT)" in summary[0]
    assert f"{p}internal.join-input (2)" in summary[0] and "models fraud" in summary[0]
    assert "store sqlite:///" in summary[0]
    windows = [line for line in text.splitlines() if "final:" in line]
    assert windows and all("window fraud v1 [" in line and "predictions" in line for line in windows)
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
