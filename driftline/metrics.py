"""Prometheus metrics of the worker (prometheus-client), named as Prometheus recommends.

Label values are bounded: topics, reasons (a fixed set of codes), phases, statuses and
severities. No prediction ids, and no model label on per-event series.
"""

from __future__ import annotations

from prometheus_client import Counter

EVENTS_CONSUMED = Counter(
    "driftline_messages_consumed_total", "Input messages consumed (a batch counts once)", ["topic"]
)
EVENTS_INVALID = Counter(
    "driftline_events_invalid_total", "Events sent to the dead-letter topic, by reason", ["topic", "reason"]
)
WINDOWS_EVALUATED = Counter("driftline_windows_evaluated_total", "Window slices evaluated", ["phase"])
ALERTS_EMITTED = Counter("driftline_alerts_emitted_total", "Alert events emitted", ["status", "severity"])
RETRAINING_REQUESTS = Counter("driftline_retraining_requests_total", "Retraining requests emitted")
