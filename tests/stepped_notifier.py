"""The notifier's delivery half as its own process, with a clock the test moves over stdin.

``python stepped_notifier.py STORE_URL SUBSCRIPTIONS_JSON SEED START_S`` builds the same
:class:`~driftline.alerting.delivery.Delivery` the notifier service runs, on the given store, and
then answers one command per line:

- ``run T``: set the clock to ``T`` (epoch seconds), do one delivery round, answer ``ok N`` (N
  requests made);
- end of input: exit.

Why not ``driftline notifier`` itself: its clock is the wall clock and its input a Kafka topic,
so a three-minute outage would take three minutes and the test could not choose when alerts
arrive. Everything that decides what is sent and when (store rows, ordering, backoff, rate
limits, HTTP) is the real code; only the clock and the ingest half are the test's. The process
holds no state worth keeping between rounds (that is the point of the outbox), so the test may
SIGKILL it anywhere, mid-request included, and start another on the same store.
"""

from __future__ import annotations

import json
import random
import sys

from driftline.alerting.delivery import Delivery
from driftline.alerting.notifier_service import default_http_client
from driftline.alerting.subscriptions import make_notifier, subscriptions_from_config
from driftline.platform.store import check_schema, make_engine, session_factory


def main(argv: list[str]) -> int:
    store_url, raw_subscriptions, seed, start = argv
    subscriptions = subscriptions_from_config(json.loads(raw_subscriptions))
    engine = make_engine(store_url)
    check_schema(engine)
    now = [float(start)]
    with default_http_client() as client:
        delivery = Delivery(
            session_factory(engine),
            subscriptions,
            {s.name: make_notifier(s) for s in subscriptions},
            client,
            clock=lambda: now[0],
            rng=random.Random(int(seed)),
        )
        print("ready", flush=True)
        for line in sys.stdin:
            command, _, argument = line.strip().partition(" ")
            if command != "run":
                raise SystemExit(f"unknown command {line!r}")
            now[0] = float(argument)
            sent = delivery.run_once(budget_s=60.0)
            print(f"ok {len(sent)}", flush=True)
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
