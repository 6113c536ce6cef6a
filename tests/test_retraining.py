"""Retraining policy: stable idempotency keys, per-model cooldown in event time, retrain rules only."""

from __future__ import annotations

import doctest
import hashlib
import json

import msgspec
import pytest

from driftline.alerting import retraining
from driftline.alerting.lifecycle import AlertTracker
from driftline.alerting.retraining import DAY_MS, HOUR_MS, RetrainingPolicy, idempotency_key
from driftline.alerting.rules import Rule
from driftline.schemas import (
    AlertData,
    RetrainingRequestData,
    decode_retraining_request,
    retraining_request,
)

MIN = 60_000
RETRAIN = Rule(name="acc-drop", metric="accuracy", comparison="<", threshold=0.8, retrain=True)
NO_RETRAIN = Rule(name="acc-floor", metric="accuracy", comparison="<", threshold=0.8)


def fire(
    rule: Rule, *, model: str = "churn", version: str = "3", segment: dict[str, str] | None = None, end: int
) -> AlertData:
    """A firing alert for the window ending at ``end``, produced by the real tracker."""
    [alert] = AlertTracker().observe(
        rule,
        model_id=model,
        model_version=version,
        segment=segment or {},
        window_start_ms=end - MIN,
        window_end_ms=end,
        value=0.5,
        samples=100,
    )
    assert alert.status == "firing"
    return alert


def consider(
    policy: RetrainingPolicy, alert: AlertData, rule: Rule, end: int
) -> RetrainingRequestData | None:
    return policy.consider(
        alert, rule, window_start_ms=end - MIN, window_end_ms=end, evidence={"accuracy": 0.5}
    )


def test_docstring_examples_run() -> None:
    result = doctest.testmod(retraining)
    assert result.attempted == 1
    assert result.failed == 0


def test_idempotency_key_is_stable_and_identifying() -> None:
    key = idempotency_key("churn", "3", "acc-drop", 0, MIN)
    canonical = (
        '{"model_id":"churn","model_version":"3","reason":"acc-drop","window_end_ms":60000,"window_start_ms":0}'
    )
    assert key == hashlib.sha256(canonical.encode()).hexdigest()[:32]
    assert len(key) == 32
    assert key == idempotency_key("churn", "3", "acc-drop", 0, MIN)
    variants = {
        idempotency_key("fraud", "3", "acc-drop", 0, MIN),
        idempotency_key("churn", "4", "acc-drop", 0, MIN),
        idempotency_key("churn", "3", "drift", 0, MIN),
        idempotency_key("churn", "3", "acc-drop", 1, MIN),
        idempotency_key("churn", "3", "acc-drop", 0, MIN + 1),
    }
    assert len(variants) == 5 and key not in variants


def test_request_payload() -> None:
    end = 10 * DAY_MS
    alert = fire(RETRAIN, segment={"country": "FR"}, end=end)
    request = RetrainingPolicy().consider(
        alert, RETRAIN, window_start_ms=end - HOUR_MS, window_end_ms=end, evidence={"drift_share": 0.4}
    )
    assert request is not None
    assert request.idempotency_key == idempotency_key("churn", "3", "acc-drop", end - HOUR_MS, end)
    assert (request.model_id, request.model_version, request.reason) == ("churn", "3", "acc-drop")
    assert request.window.start == "1970-01-10T23:00:00.000Z"
    assert request.window.end == "1970-01-11T00:00:00.000Z"
    # Default lookback: 7 days back from the window end.
    assert request.suggested_training_range.start == "1970-01-04T00:00:00.000Z"
    assert request.suggested_training_range.end == "1970-01-11T00:00:00.000Z"
    assert request.requested_at == "1970-01-11T00:00:00.000Z"
    assert request.evidence["drift_share"] == 0.4
    assert request.evidence["alert"]["dedup_key"] == alert.dedup_key
    assert request.evidence["alert"]["segment"] == {"country": "FR"}
    assert request.evidence["alert"]["observed"] == 0.5


def test_custom_lookback() -> None:
    policy = RetrainingPolicy(lookback_ms=2 * DAY_MS)
    request = consider(policy, fire(RETRAIN, end=3 * DAY_MS), RETRAIN, 3 * DAY_MS)
    assert request is not None
    assert request.suggested_training_range.start == "1970-01-02T00:00:00.000Z"


def test_only_firing_alerts_of_retrain_rules() -> None:
    policy = RetrainingPolicy(cooldown_ms=0)
    assert consider(policy, fire(NO_RETRAIN, end=MIN), NO_RETRAIN, MIN) is None
    tracker = AlertTracker()
    common = {"model_id": "churn", "model_version": "3", "segment": {}, "samples": 100}
    tracker.observe(RETRAIN, **common, window_start_ms=0, window_end_ms=MIN, value=0.5)
    [resolved] = tracker.observe(RETRAIN, **common, window_start_ms=MIN, window_end_ms=2 * MIN, value=0.9)
    assert resolved.status == "resolved"
    assert consider(policy, resolved, RETRAIN, 2 * MIN) is None
    # The policy state was not touched by the refusals: a firing retrain alert still gets through.
    assert consider(policy, fire(RETRAIN, end=3 * MIN), RETRAIN, 3 * MIN) is not None


def test_rule_mismatch_is_a_wiring_bug() -> None:
    with pytest.raises(ValueError, match="alert is for rule 'acc-floor' but rule 'acc-drop'"):
        consider(RetrainingPolicy(), fire(NO_RETRAIN, end=MIN), RETRAIN, MIN)


def test_cooldown_per_model_version_in_event_time() -> None:
    policy = RetrainingPolicy(cooldown_ms=6 * HOUR_MS)
    t0 = 100 * HOUR_MS
    assert consider(policy, fire(RETRAIN, end=t0), RETRAIN, t0) is not None
    # Same model and version: suppressed until exactly 6 h of event time later.
    assert consider(policy, fire(RETRAIN, end=t0 + 6 * HOUR_MS - 1), RETRAIN, t0 + 6 * HOUR_MS - 1) is None
    # Another model, another version, another segment of a third model: each independent.
    assert consider(policy, fire(RETRAIN, model="fraud", end=t0 + MIN), RETRAIN, t0 + MIN) is not None
    assert consider(policy, fire(RETRAIN, version="4", end=t0 + MIN), RETRAIN, t0 + MIN) is not None
    # A second segment of the same model in the same window: one request per model, not per segment.
    assert consider(policy, fire(RETRAIN, segment={"c": "FR"}, end=t0), RETRAIN, t0) is None
    again = consider(policy, fire(RETRAIN, end=t0 + 6 * HOUR_MS), RETRAIN, t0 + 6 * HOUR_MS)
    assert again is not None
    assert again.requested_at == "1970-01-05T10:00:00.000Z"


def test_replayed_or_older_windows_never_request_again_even_without_cooldown() -> None:
    policy = RetrainingPolicy(cooldown_ms=0)
    assert consider(policy, fire(RETRAIN, end=5 * MIN), RETRAIN, 5 * MIN) is not None
    assert consider(policy, fire(RETRAIN, end=5 * MIN), RETRAIN, 5 * MIN) is None
    assert consider(policy, fire(RETRAIN, end=4 * MIN), RETRAIN, 4 * MIN) is None
    assert consider(policy, fire(RETRAIN, end=6 * MIN), RETRAIN, 6 * MIN) is not None


def test_state_round_trip() -> None:
    policy = RetrainingPolicy(cooldown_ms=HOUR_MS, lookback_ms=DAY_MS)
    assert consider(policy, fire(RETRAIN, end=HOUR_MS), RETRAIN, HOUR_MS) is not None
    assert consider(policy, fire(RETRAIN, model="fraud", end=HOUR_MS), RETRAIN, HOUR_MS) is not None
    snapshot = json.loads(json.dumps(policy.to_dict()))
    assert snapshot == {
        "version": 1,
        "cooldown_ms": HOUR_MS,
        "lookback_ms": DAY_MS,
        "last_requests": [
            {"model_id": "churn", "model_version": "3", "window_end_ms": HOUR_MS},
            {"model_id": "fraud", "model_version": "3", "window_end_ms": HOUR_MS},
        ],
    }
    restored = RetrainingPolicy.from_dict(snapshot)
    assert restored.to_dict() == policy.to_dict()
    end = 2 * HOUR_MS - MIN
    assert consider(restored, fire(RETRAIN, end=end), RETRAIN, end) is None  # cooldown survived
    request = consider(restored, fire(RETRAIN, end=2 * HOUR_MS), RETRAIN, 2 * HOUR_MS)
    assert request is not None
    # 2 h minus a 1-day lookback reaches before the epoch: still a valid RFC 3339 time.
    assert request.suggested_training_range.start == "1969-12-31T02:00:00.000Z"
    with pytest.raises(ValueError, match="version 7"):
        RetrainingPolicy.from_dict({"version": 7})


@pytest.mark.parametrize(("cooldown", "lookback"), [(-1, DAY_MS), (0, 0)])
def test_invalid_config(cooldown: int, lookback: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        RetrainingPolicy(cooldown_ms=cooldown, lookback_ms=lookback)


def test_requests_round_trip_through_the_cloudevents_contract() -> None:
    request = consider(RetrainingPolicy(), fire(RETRAIN, end=30 * DAY_MS), RETRAIN, 30 * DAY_MS)
    assert request is not None
    event = retraining_request(request)
    decoded = decode_retraining_request(msgspec.json.encode(event))
    assert decoded == event
    assert decoded.id == request.idempotency_key
