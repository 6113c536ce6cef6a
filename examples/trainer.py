"""A downstream trainer: receives driftline retraining requests and (pretends to) retrain.

    python examples/trainer.py --bootstrap 127.0.0.1:9092

Each request is handled once, even if driftline publishes it again: ``request.id`` is its
idempotency key and ``--dedup-db`` keeps the handled keys across restarts. Ctrl-C stops after
the request in hand is finished, so its offset is committed and nothing is lost or redone.
A real trainer would submit a training job here rather than train inline (see
``driftline.streams.trainer`` on why handlers should be short).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from types import FrameType

from driftline.platform.kafka import KafkaSettings, quick_join_consumer_config
from driftline.schemas import RetrainingRequest
from driftline.streams.trainer import RetrainingConsumer, SqliteDedupStore, StoreAcknowledger


def describe(request: RetrainingRequest) -> str:
    """Both versions of the request: version 1 (``schema_version`` "1.0") has no
    ``training_data`` and always means "retrain"; version 2 says what to do and where the
    data is (docs/retraining.md)."""
    data = request.data
    suggested = data.suggested_training_range
    lines = [
        f"{data.action} {data.model_id} v{data.model_version}: {data.reason}",
        f"  id (idempotency key): {request.id}",
        f"  window:               {data.window.start} .. {data.window.end}",
        f"  suggested range:      {suggested.start} .. {suggested.end}",
    ]
    training = data.training_data
    if training is not None:
        for kind, ranges in (("predictions", training.predictions), ("labels", training.labels)):
            spans = ", ".join(f"{r.topic}[{r.partition}] {r.first_offset}..{r.last_offset}" for r in ranges)
            lines.append(f"  {kind + ':':<21} {spans or 'none seen'}")
        coverage = "n/a" if training.label_coverage is None else f"{training.label_coverage:.0%}"
        lines.append(f"  label coverage:       {coverage} of {training.prediction_count} predictions")
    if data.baseline is not None:
        lines.append(f"  must beat:            {data.baseline.metric} {data.baseline.value:.4f}")
    return "\n".join(lines)


def _settings(bootstrap: str | None) -> KafkaSettings:
    """The documented variables, as every driftline client reads them: the cluster from
    ``--bootstrap``, ``DRIFTLINE_BOOTSTRAP_SERVERS`` or ``DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS``,
    security from ``DRIFTLINE_KAFKA_*`` (an incomplete set stops here, naming the variable)."""
    servers = (
        bootstrap
        or os.environ.get("DRIFTLINE_BOOTSTRAP_SERVERS")
        or os.environ.get("DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS")
        or "127.0.0.1:9092"
    )
    return KafkaSettings.from_env(bootstrap_servers=servers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bootstrap",
        default=None,
        help="Kafka bootstrap servers (default: $DRIFTLINE_BOOTSTRAP_SERVERS, else 127.0.0.1:9092)",
    )
    parser.add_argument("--group", default="example-trainer", help="consumer group id")
    parser.add_argument("--topic-prefix", default=os.environ.get("DRIFTLINE_TOPIC_PREFIX", "driftline."))
    parser.add_argument(
        "--dedup-db", default="trainer-dedup.sqlite", help="SQLite file of handled request ids"
    )
    parser.add_argument(
        "--store-url",
        default=os.environ.get("DRIFTLINE_STORE_URL"),
        help="driftline's store: record each handled request there (driftline models show)",
    )
    parser.add_argument("--train-seconds", type=float, default=1.0, help="simulated training time")
    parser.add_argument(
        "--fast-join",
        action="store_true",
        help="short session timeout: makes group joins quick on the embedded (tansu) broker",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        print(f"\nsignal {signum}: stopping after the current request")
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    def train(request: RetrainingRequest) -> None:
        print(describe(request), flush=True)
        started = time.monotonic()
        time.sleep(args.train_seconds)  # a real trainer submits a job to its scheduler here
        print(f"  trained in {time.monotonic() - started:.1f} s", flush=True)

    settings = _settings(args.bootstrap)
    store = SqliteDedupStore(args.dedup_db)
    acknowledge = StoreAcknowledger(args.store_url, args.group) if args.store_url else None
    consumer = RetrainingConsumer(
        settings,
        group_id=args.group,
        handler=train,
        topic_prefix=args.topic_prefix,
        dedup_store=store,
        consumer_config=quick_join_consumer_config() if args.fast_join else None,
        acknowledge=acknowledge,
    )
    print(
        f"waiting for retraining requests on {consumer.topic} at {settings.bootstrap_servers} (Ctrl-C stops)"
    )
    try:
        consumer.run(stop_event=stop)
    finally:
        consumer.close()
        store.close()
        if acknowledge is not None:
            acknowledge.close()
    stats = consumer.stats
    print(f"handled {stats.handled}, duplicates skipped {stats.duplicates}, undecodable {stats.undecodable}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
