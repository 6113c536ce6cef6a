"""A toy serving app: scores requests, reports predictions at once and labels later.

    python examples/serving_app.py --bootstrap 127.0.0.1:9092 --requests 2000

Reporting never blocks serving: ``send_prediction`` only appends to a buffer; batches leave
in the background (every 500 events or 100 ms). Labels arrive later in real life (a
customer churns, a transaction is charged back); here they are released ``--label-delay``
seconds after their prediction, and a slowly growing share of them disagrees with the model
so the monitor has some drift to find. ``--create-topics`` is for a fresh (e.g. embedded)
broker: a real cluster's topics are provisioned by the driftline worker or its operators.
"""

from __future__ import annotations

import argparse
import heapq
import logging
import random
import time
import uuid

from driftline.platform.kafka import KafkaSettings, ensure_topics
from driftline.schemas import GroundTruthEvent, PredictionEvent
from driftline.streams.producer import DeliveryFailure, DriftlineProducer


def score(features: dict[str, float]) -> float:
    """The 'model': a fixed logistic-ish score of two features."""
    z = 0.8 * features["tenure_years"] - 1.5 * features["support_tickets"] + 0.3
    return 1.0 / (1.0 + pow(2.718281828, -z))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic-prefix", default="driftline.")
    parser.add_argument("--model", default="churn")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second")
    parser.add_argument("--label-delay", type=float, default=2.0, help="seconds before a label is known")
    parser.add_argument("--create-topics", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    settings = KafkaSettings.from_env(bootstrap_servers=args.bootstrap)  # security: DRIFTLINE_KAFKA_*
    if args.create_topics:
        ensure_topics(settings, {f"{args.topic_prefix}predictions": 6, f"{args.topic_prefix}ground-truth": 6})
    rng = random.Random(args.seed)
    pending_labels: list[tuple[float, GroundTruthEvent]] = []  # (release time, label), a min-heap

    def on_error(failure: DeliveryFailure) -> None:
        print(f"delivery failed: {failure.events} event(s) to {failure.topic}: {failure.error}")

    with DriftlineProducer(settings, topic_prefix=args.topic_prefix, on_error=on_error) as producer:
        started = time.monotonic()
        for i in range(args.requests):
            features = {"tenure_years": rng.uniform(0, 10), "support_tickets": rng.expovariate(1.0)}
            probability = score(features)
            now_ms = int(time.time() * 1000)
            prediction = PredictionEvent(
                prediction_id=uuid.uuid4().hex,
                model_id=args.model,
                model_version="1",
                timestamp=now_ms,
                features=dict(features),
                prediction=int(probability >= 0.5),
                score=probability,
            )
            producer.send_prediction(prediction)

            drift = i / max(args.requests, 1) * 0.4  # the world moves away from the model
            truth = int(rng.random() < probability) if rng.random() >= drift else int(rng.random() < 0.5)
            label = GroundTruthEvent(
                prediction_id=prediction.prediction_id, model_id=args.model, label=truth, timestamp=now_ms
            )
            heapq.heappush(pending_labels, (time.monotonic() + args.label_delay, label))
            while pending_labels and pending_labels[0][0] <= time.monotonic():
                _, ready = heapq.heappop(pending_labels)
                ready.timestamp = int(time.time() * 1000)  # when the label became known
                producer.send_ground_truth(ready)
            # Pace the requests like real traffic.
            time.sleep(max(0.0, started + (i + 1) / args.rate - time.monotonic()))

        while pending_labels:
            release, ready = heapq.heappop(pending_labels)
            time.sleep(max(0.0, release - time.monotonic()))
            ready.timestamp = int(time.time() * 1000)
            producer.send_ground_truth(ready)
    print(f"sent {args.requests} predictions and labels in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
