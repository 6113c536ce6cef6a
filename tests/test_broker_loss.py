"""The broker restarts empty under a running worker: the worker dies loudly, and its restart recovers.

Issue 19, item 6: a worker whose broker came back empty used to stay alive for ever, consuming
nothing, so no supervisor restarted it. Here a real ``driftline worker`` runs on its own
embedded broker; once it has produced final windows, the broker is SIGKILLed and started again
empty on the same port. Within a bound the worker must exit with status 3 and one ERROR line
naming what happened. Then the test plays the supervisor: a new worker on the same store
recreates the topics, discards (loudly) the checkpoints taken from the lost logs, and the same
windows sent again come out exactly as computed here (scikit-learn), not skipped as "already
applied" and not double counted with the lost state.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer
from conftest import consume_all
from sklearn.metrics import accuracy_score
from workers import (
    SMALL_TOPICS,
    ingest_batch,
    running_worker,
    tail_events,
    window_events,
    write_worker_config,
)

from driftline.apps.watchdog import EXIT_STALLED
from driftline.platform.broker import EmbeddedBroker, free_loopback_port
from driftline.platform.checkpoints import Checkpoint, CheckpointStore
from driftline.platform.kafka import KafkaSettings, admin_client, confluent_config, topic_ids
from driftline.platform.store.db import upgrade
from driftline.schemas import decode_window_result

pytestmark = pytest.mark.timeout(240)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a multiple of the window
WINDOW_MS = 10_000
MODEL = "lossy"
#: per window: (predictions, correct ones)
WINDOWS = [(40, 20), (48, 36)]
#: the worker's watchdog bound in this test, and how long the test waits for its exit
STALL_AFTER_S = 5.0
EXIT_BOUND_S = 60.0
PREFIX = "loss."


def _produce(settings: KafkaSettings) -> None:
    """Both windows, then event time moved past their label horizon in every input partition."""
    producer = Producer(confluent_config(settings))
    pred, gt = f"{PREFIX}predictions", f"{PREFIX}ground-truth"
    for w, (n, n_correct) in enumerate(WINDOWS):
        predictions, labels = window_events(MODEL, T0, WINDOW_MS, w, n, n_correct)
        producer.produce(pred, ingest_batch("predictions", predictions), key=MODEL.encode())
        producer.produce(gt, ingest_batch("ground_truth", labels), key=MODEL.encode())
    later = T0 + 6 * WINDOW_MS
    for part in range(SMALL_TOPICS["predictions"]):  # a partition's event time skips its 2 newest
        tail, labels = tail_events(MODEL, part, later)
        producer.produce(pred, ingest_batch("predictions", tail), partition=part)
        producer.produce(gt, ingest_batch("ground_truth", labels), partition=part)
    assert producer.flush(30) == 0


def _expected() -> dict[int, tuple[int, float]]:
    """Window start -> (predictions, accuracy), computed from what was produced."""
    out = {}
    for w, (n, n_correct) in enumerate(WINDOWS):
        predictions, labels = window_events(MODEL, T0, WINDOW_MS, w, n, n_correct)
        accuracy = accuracy_score([e["label"] for e in labels], [e["prediction"] for e in predictions])
        out[T0 + w * WINDOW_MS] = (n, float(accuracy))
    return out


def _final_windows(settings: KafkaSettings, timeout: float) -> dict[int, tuple[int, float]]:
    """The final whole-model windows of the test's window range, once all are there."""
    deadline = time.monotonic() + timeout
    seen: dict[int, tuple[int, float]] = {}
    while time.monotonic() < deadline:
        try:
            messages = consume_all(settings, f"{PREFIX}window-results", idle_s=1.0, max_s=5.0)
        except AssertionError:  # not created yet
            messages = []
        results = [decode_window_result(m.value()) for m in messages if m.value()]
        seen = {
            r.window_start_ms: (r.prediction_count, float(r.metrics["accuracy"]))
            for r in results
            if r.phase == "final" and not r.segment and r.window_start_ms < T0 + len(WINDOWS) * WINDOW_MS
        }
        if len(seen) == len(WINDOWS):
            return seen
        time.sleep(1)
    return seen


@pytest.fixture()
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own: the session's shared one must not be restarted."""
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as running:
        yield running


def _wait_exit(process: object, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = process.poll()  # type: ignore[attr-defined]
        if code is not None:
            return int(code)
        time.sleep(0.2)
    return None


def test_worker_exits_when_its_broker_restarts_empty_and_its_restart_recovers(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = KafkaSettings(bootstrap_servers=own_broker.bootstrap_servers, client_id="broker-loss")
    port = own_broker.port
    # checkpoints after every message: a checkpoint of the lost logs, restored, would then
    # skip the whole of the new logs' first run as "already applied"
    config = write_worker_config(tmp_path, settings, PREFIX, models={MODEL: {}}, checkpoint_interval="0s")
    health_port = free_loopback_port()
    worker_args = ("--stall-after", str(STALL_AFTER_S), "--loglevel", "INFO")
    first_log, second_log = tmp_path / "worker-1.log", tmp_path / "worker-2.log"
    expected = _expected()

    with running_worker(config, first_log, *worker_args, "--health-port", str(health_port)) as first:
        try:
            _produce(settings)
            assert _final_windows(settings, timeout=60) == expected
            with httpx.Client(trust_env=False) as client:
                health = client.get(f"http://127.0.0.1:{health_port}/healthz", timeout=5)
            assert health.status_code == 200, health.text
            assert health.json()["status"] == "ok"
            assert f"{PREFIX}internal.join-input:0" in health.json()["partitions"]
            ids_before = topic_ids(admin_client(settings), [f"{PREFIX}predictions"])

            own_broker.stop()  # SIGKILL: memory storage, everything is gone
            restarted = EmbeddedBroker(port=port, log_path=tmp_path / "tansu-2.log").start()
            lost_at = time.monotonic()
            code = _wait_exit(first, EXIT_BOUND_S)
            took = time.monotonic() - lost_at
        except BaseException:
            print(first_log.read_text(errors="replace")[-5000:])
            raise
    text = first_log.read_text(errors="replace")
    try:
        assert code == EXIT_STALLED, (
            f"worker still running {EXIT_BOUND_S:g} s after the broker restarted empty"
        )
        errors = [line for line in text.splitlines() if " ERROR driftline.apps.watchdog" in line]
        assert len(errors) == 1, errors
        assert f"exit status {EXIT_STALLED}" in errors[0]
        assert f"{PREFIX}predictions, " in errors[0]
        assert "no longer exist on the broker (all of them: the broker restarted empty?)" in errors[0]
        assert took < EXIT_BOUND_S
        print(f"worker exited {took:.1f} s after the broker restarted empty")

        # the supervisor's restart: same store, same app id, on the empty broker
        with running_worker(config, second_log, *worker_args) as second:
            _produce(settings)
            assert _final_windows(settings, timeout=90) == expected
            assert second.poll() is None, "the restarted worker must keep running"
        ids_after = topic_ids(admin_client(settings), [f"{PREFIX}predictions"])
        assert ids_after[f"{PREFIX}predictions"] != ids_before[f"{PREFIX}predictions"]
        discarded = [
            line for line in second_log.read_text().splitlines() if "discarding its checkpoint" in line
        ]
        assert discarded, "the checkpoints of the lost logs must be discarded, and say so"
        assert all(" ERROR " in line for line in discarded)
    except BaseException:
        print(text[-5000:])
        print(second_log.read_text(errors="replace")[-5000:] if second_log.exists() else "")
        raise
    finally:
        restarted.stop()


def test_a_checkpoint_knows_the_topic_ids_it_was_taken_from(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/checkpoints.sqlite"
    upgrade(url)
    store = CheckpointStore(url)
    try:
        store.save("app/join/0", b"state", 42, {"in": "id-1", "join": "id-2"})
        store.save("app/join/1", b"older", 7)  # written before ids were recorded
        loaded = store.load("app/join/0")
        assert loaded == Checkpoint(b"state", 42, {"in": "id-1", "join": "id-2"})
        assert loaded.stale_for({"in": "id-1", "join": "id-2", "other": "x"}) == []
        assert loaded.stale_for({"in": "id-9", "join": "id-2"}) == ["in"]
        assert loaded.stale_for({}) == [], "ids unknown now (a broker without ids): not stale"
        older = store.load("app/join/1")
        assert older is not None and older.topic_ids == {} and older.stale_for({"in": "id-9"}) == []
    finally:
        store.close()
