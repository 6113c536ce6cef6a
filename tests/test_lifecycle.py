"""Alert lifecycle: exact emitted sequences for pending, hysteresis, cooldown, replays and restarts."""

from __future__ import annotations

import doctest
import hashlib
import json
from collections.abc import Mapping, Sequence

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.alerting import lifecycle
from driftline.alerting.lifecycle import AlertTracker, dedup_key
from driftline.alerting.rules import Rule
from driftline.schemas import AlertData, alert_event, decode_alert

MIN = 60_000  # one-minute tumbling windows; window i spans [i*MIN, (i+1)*MIN)


def acc_rule(**kw: object) -> Rule:
    return Rule(**{"name": "acc", "metric": "accuracy", "comparison": "<", "threshold": 0.8, **kw})  # type: ignore[arg-type]


def feed(
    tracker: AlertTracker,
    rule: Rule,
    values: Sequence[float | None],
    *,
    first: int = 0,
    samples: int = 100,
    segment: Mapping[str, str] | None = None,
    baseline: float | None = None,
) -> list[tuple[int, str]]:
    """Observe windows first, first+1, ... and return (window index, status) of every emitted alert."""
    out: list[tuple[int, str]] = []
    for i, value in enumerate(values, start=first):
        for alert in tracker.observe(
            rule,
            model_id="churn",
            model_version="3",
            segment=segment or {},
            window_start_ms=i * MIN,
            window_end_ms=(i + 1) * MIN,
            value=value,
            samples=samples,
            baseline=baseline,
        ):
            out.append((i, alert.status))
    return out


def test_docstring_examples_run() -> None:
    result = doctest.testmod(lifecycle)
    assert result.attempted == 6
    assert result.failed == 0


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_fires_on_exactly_the_nth_breaching_window(n: int) -> None:
    tracker, rule = AlertTracker(), acc_rule(for_windows=n)
    key = dedup_key("churn", "3", {}, "acc")
    statuses = []
    emitted = []
    for i in range(n + 2):
        emitted += feed(tracker, rule, [0.5], first=i)
        statuses.append(tracker.status(key))
    assert emitted == [(n - 1, "firing")]
    assert statuses == ["pending"] * (n - 1) + ["firing"] * 3


def test_a_good_window_resets_pending() -> None:
    tracker, rule = AlertTracker(), acc_rule(for_windows=3)
    # bad, bad, good, bad, bad, bad: the good window restarts the count, so it fires on window 5.
    assert feed(tracker, rule, [0.5, 0.5, 0.9, 0.5, 0.5, 0.5]) == [(5, "firing")]


def test_min_samples_gates_evaluation_and_holds_state() -> None:
    tracker, rule = AlertTracker(), acc_rule(for_windows=2, min_samples=50)
    key = dedup_key("churn", "3", {}, "acc")
    assert feed(tracker, rule, [0.5], first=0, samples=49) == []
    assert tracker.status(key) == "ok"  # 49 samples: no data, nothing recorded
    assert feed(tracker, rule, [0.5], first=1, samples=50) == []
    assert tracker.status(key) == "pending"
    # A thin window neither counts towards firing nor resets the pending count.
    assert feed(tracker, rule, [0.5, 0.9, None], first=2, samples=10) == []
    assert tracker.status(key) == "pending"
    assert feed(tracker, rule, [0.5], first=5, samples=50) == [(5, "firing")]
    # Firing holds through thin windows, even ones with a good value.
    assert feed(tracker, rule, [0.99, 0.99], first=6, samples=3) == []
    assert tracker.status(key) == "firing"
    assert feed(tracker, rule, [0.99], first=8, samples=500) == [(8, "resolved")]


def test_no_data_window_can_be_judged_later_when_labels_arrive() -> None:
    # Performance windows are provisional: first seen with too few labels, later with enough.
    tracker, rule = AlertTracker(), acc_rule(min_samples=50)
    assert feed(tracker, rule, [0.5], first=0, samples=10) == []
    assert feed(tracker, rule, [0.5], first=0, samples=60) == [(0, "firing")]


def test_nan_value_is_no_data() -> None:
    tracker, rule = AlertTracker(), acc_rule(for_windows=2)
    assert feed(tracker, rule, [0.5, float("nan"), 0.5]) == [(2, "firing")]


def test_hysteresis_prevents_flapping() -> None:
    # Fire below 0.8, clear only at >= 0.85. Values inside [0.8, 0.85) change nothing.
    values = [0.79, 0.81, 0.79, 0.84, 0.79, 0.86, 0.82, 0.79, 0.81, 0.83, 0.79, 0.90, 0.84, 0.80]
    with_band = feed(AlertTracker(), acc_rule(clear_threshold=0.85), values)
    assert with_band == [(0, "firing"), (5, "resolved"), (7, "firing"), (11, "resolved")]
    # The same sequence without the band flaps on every crossing of 0.8. Oracle: count sign changes.
    without_band = feed(AlertTracker(), acc_rule(), values)
    bad = [v < 0.8 for v in values]
    expected = [(0, "firing")] + [
        (i, "firing" if bad[i] else "resolved") for i in range(1, len(values)) if bad[i] != bad[i - 1]
    ]
    assert without_band == expected
    assert len(without_band) == 10


def test_resolves_after_exactly_clear_windows() -> None:
    tracker, rule = AlertTracker(), acc_rule(clear_threshold=0.85, clear_windows=3)
    # Fires at 0; clears counted at 1, 2; window 3 is inside the band and restarts the count;
    # 4, 5, 6 are three clear windows in a row: resolves at 6.
    values = [0.5, 0.9, 0.9, 0.82, 0.9, 0.9, 0.9, 0.9]
    assert feed(tracker, rule, values) == [(0, "firing"), (6, "resolved")]


def test_cooldown_suppresses_refire_until_it_has_passed() -> None:
    tracker, rule = AlertTracker(), acc_rule(cooldown_ms=3 * MIN)
    key = dedup_key("churn", "3", {}, "acc")
    # Window 1 resolves at t = 2*MIN. Re-firing is allowed from window end >= 5*MIN, i.e. window 4.
    assert feed(tracker, rule, [0.5, 0.9, 0.5, 0.5]) == [(0, "firing"), (1, "resolved")]
    assert tracker.status(key) == "pending"
    assert feed(tracker, rule, [0.5], first=4) == [(4, "firing")]


def test_cooldown_with_for_windows_fires_on_first_breach_after_cooldown() -> None:
    tracker, rule = AlertTracker(), acc_rule(cooldown_ms=2 * MIN, for_windows=2)
    # Fires at 1, resolves at 2 (end 3*MIN). Breaches at 3, 4 reach for_windows=2 at window 4
    # (end 5*MIN), exactly when the cooldown expires: fires there.
    assert feed(tracker, rule, [0.5, 0.5, 0.9, 0.5, 0.5]) == [(1, "firing"), (2, "resolved"), (4, "firing")]
    # A good window during cooldown resets the pending count as usual.
    tracker2 = AlertTracker()
    rule2 = acc_rule(cooldown_ms=10 * MIN, for_windows=2)
    assert feed(tracker2, rule2, [0.5, 0.5, 0.9, 0.5, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]) == [
        (1, "firing"),
        (2, "resolved"),  # end 3*MIN; cooldown until end >= 13*MIN, i.e. window 12
        (12, "firing"),
    ]


def test_repeated_and_out_of_order_windows_are_ignored() -> None:
    tracker, rule = AlertTracker(), acc_rule()
    assert feed(tracker, rule, [0.9, 0.5], first=0) == [(1, "firing")]
    # Window 1 again (a replay after a crash) and window 0 late with a bad value: nothing.
    assert feed(tracker, rule, [0.5], first=1) == []
    assert feed(tracker, rule, [0.99], first=1) == []
    assert feed(tracker, rule, [0.99], first=0) == []
    assert tracker.status(dedup_key("churn", "3", {}, "acc")) == "firing"
    # Replaying the whole history changes nothing; the next new window is judged normally.
    assert feed(tracker, rule, [0.9, 0.5], first=0) == []
    assert feed(tracker, rule, [0.99], first=2) == [(2, "resolved")]


def test_series_are_independent_per_segment() -> None:
    tracker, rule = AlertTracker(), acc_rule()
    assert feed(tracker, rule, [0.5, 0.5], segment={"country": "FR"}) == [(0, "firing")]
    # The FR series having seen window 1 does not make window 1 stale for DE.
    assert feed(tracker, rule, [0.5], first=1, segment={"country": "DE"}) == [(1, "firing")]


def test_alert_payload() -> None:
    tracker = AlertTracker()
    rule = acc_rule(clear_threshold=0.85, severity="error", for_windows=2)
    common = {"model_id": "churn", "model_version": "3", "segment": {"country": "FR"}}
    assert tracker.observe(rule, **common, window_start_ms=0, window_end_ms=MIN, value=0.7, samples=80) == []
    [fired] = tracker.observe(
        rule, **common, window_start_ms=MIN, window_end_ms=2 * MIN, value=0.75, samples=90,
        evidence={"labelled": 90, "value": "ignored: ours wins"},
    )  # fmt: skip
    assert fired == AlertData(
        dedup_key=dedup_key("churn", "3", {"country": "FR"}, "acc"),
        status="firing",
        rule="acc",
        metric="accuracy",
        severity="error",
        model_id="churn",
        model_version="3",
        segment={"country": "FR"},
        window=fired.window,
        observed=0.75,
        threshold=0.8,
        comparison="<",
        evidence={
            "labelled": 90,
            "value": 0.75,
            "threshold": 0.8,
            "clear_threshold": 0.85,
            "baseline": None,
            "samples": 90,
            "consecutive_windows": 2,
        },
        links={},
        starts_at="1970-01-01T00:02:00.000Z",
        ends_at=None,
    )
    assert (fired.window.start, fired.window.end) == ("1970-01-01T00:01:00.000Z", "1970-01-01T00:02:00.000Z")
    # 0.82 and 0.84 are in the band: still firing, nothing emitted. Then 0.9 clears.
    for i, value in [(2, 0.82), (3, 0.84)]:
        assert tracker.observe(
            rule, **common, window_start_ms=i * MIN, window_end_ms=(i + 1) * MIN, value=value, samples=70
        ) == []
    [resolved] = tracker.observe(
        rule, **common, window_start_ms=4 * MIN, window_end_ms=5 * MIN, value=0.9, samples=70
    )
    assert resolved.dedup_key == fired.dedup_key
    assert resolved.status == "resolved"
    assert resolved.starts_at == "1970-01-01T00:02:00.000Z"  # the firing window's end
    assert resolved.ends_at == "1970-01-01T00:05:00.000Z"
    assert resolved.window.start == "1970-01-01T00:04:00.000Z"
    assert resolved.window.end == "1970-01-01T00:05:00.000Z"
    assert resolved.observed == 0.9
    assert resolved.evidence["consecutive_windows"] == 1
    assert resolved.evidence["samples"] == 70


def test_relative_to_baseline_in_the_tracker() -> None:
    # Fire below baseline - 0.125, clear at baseline - 0.0625 (binary-exact arithmetic).
    rule = acc_rule(threshold=-0.125, clear_threshold=-0.0625, relative_to_baseline=True)
    tracker = AlertTracker()
    assert feed(tracker, rule, [0.74, 0.74], baseline=None) == []  # no baseline: no data
    out = tracker.observe(
        rule, model_id="churn", model_version="3", segment={}, window_start_ms=0, window_end_ms=MIN,
        value=0.74, samples=100, baseline=0.875,
    )  # fmt: skip
    assert [(a.status, a.threshold, a.evidence["baseline"]) for a in out] == [("firing", 0.75, 0.875)]
    # 0.8 is below baseline - 0.0625 = 0.8125: in the band, still firing; 0.8125 clears.
    assert feed(tracker, rule, [0.8, 0.8125], first=1, baseline=0.875) == [(2, "resolved")]


def test_dedup_key_identity() -> None:
    key = dedup_key("churn", "3", {"country": "FR", "tier": "gold"}, "acc")
    assert len(key) == 32 and int(key, 16) >= 0
    # Pinned: the canonical form is a contract other languages may reimplement.
    canonical = (
        '{"model_id":"churn","model_version":"3","rule":"acc","segment":{"country":"FR","tier":"gold"}}'
    )
    assert key == hashlib.sha256(canonical.encode()).hexdigest()[:32]
    assert key == dedup_key("churn", "3", {"tier": "gold", "country": "FR"}, "acc")
    others = {
        dedup_key("churn", "4", {"country": "FR", "tier": "gold"}, "acc"),
        dedup_key("fraud", "3", {"country": "FR", "tier": "gold"}, "acc"),
        dedup_key("churn", "3", {"country": "DE", "tier": "gold"}, "acc"),
        dedup_key("churn", "3", {"country": "FR"}, "acc"),
        dedup_key("churn", "3", {"country": "FR", "tier": "gold"}, "acc-drop"),
    }
    assert len(others) == 5 and key not in others


def test_dedup_key_ignores_value_threshold_and_severity() -> None:
    keys = set()
    for rule, value in [
        (acc_rule(), 0.5),
        (acc_rule(threshold=0.9, severity="critical"), 0.7),
        (acc_rule(threshold=0.6, clear_threshold=0.7, severity="info", for_windows=1), 0.1),
    ]:
        [alert] = AlertTracker().observe(
            rule, model_id="churn", model_version="3", segment={"c": "FR"},
            window_start_ms=0, window_end_ms=MIN, value=value, samples=1,
        )  # fmt: skip
        keys.add(alert.dedup_key)
    assert keys == {dedup_key("churn", "3", {"c": "FR"}, "acc")}


SEQUENCE = [0.5, 0.5, 0.82, 0.9, 0.9, 0.5, None, 0.5, 0.5, 0.5, 0.84, 0.9, 0.95, 0.5, 0.5, 0.5, 0.5, 0.9, 0.9]


def test_state_round_trip_continues_identically_at_every_split() -> None:
    rule = acc_rule(for_windows=2, clear_threshold=0.85, clear_windows=2, cooldown_ms=4 * MIN)
    reference = feed(AlertTracker(), rule, SEQUENCE)
    # Resolved at 4 (end 5*MIN): the breaches at 5, 7 (6 has no data) reach for_windows at 7, but
    # the cooldown holds the alert pending until window 8 (end 9*MIN). Likewise 12 -> 16.
    assert reference == [
        (1, "firing"), (4, "resolved"), (8, "firing"), (12, "resolved"), (16, "firing"), (18, "resolved")
    ]  # fmt: skip
    for split in range(len(SEQUENCE) + 1):
        first = AlertTracker()
        head = feed(first, rule, SEQUENCE[:split])
        restored = AlertTracker.from_dict(json.loads(json.dumps(first.to_dict())))
        assert restored.to_dict() == first.to_dict()
        tail = feed(restored, rule, SEQUENCE[split:], first=split)
        assert head + tail == reference, split


def test_from_dict_rejects_unknown_versions_and_statuses() -> None:
    with pytest.raises(ValueError, match="version 2"):
        AlertTracker.from_dict({"version": 2, "alerts": {}})
    state = {"status": "exploded", "breaching": 0, "clearing": 0, "last_window_end_ms": None,
             "fired_at_ms": None, "resolved_at_ms": None}  # fmt: skip
    with pytest.raises(ValueError, match="unknown status 'exploded'"):
        AlertTracker.from_dict({"version": 1, "alerts": {"k": state}})


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.sampled_from([0.5, 0.79, 0.8, 0.83, 0.86, 0.95])), max_size=30),
    for_windows=st.integers(1, 3),
    clear_windows=st.integers(1, 3),
    cooldown=st.integers(0, 4),
)
def test_properties_alternate_and_replays_are_harmless(
    values: list[float | None], for_windows: int, clear_windows: int, cooldown: int
) -> None:
    rule = acc_rule(
        clear_threshold=0.85, for_windows=for_windows, clear_windows=clear_windows, cooldown_ms=cooldown * MIN
    )
    tracker = AlertTracker()
    out = feed(tracker, rule, values)
    statuses = [s for _, s in out]
    # firing and resolved strictly alternate, starting with firing.
    assert statuses == ["firing", "resolved"] * (len(statuses) // 2) + ["firing"] * (len(statuses) % 2)
    # Every firing is preceded by for_windows breaching windows with data (no-data windows skipped).
    with_data = [(i, v) for i, v in enumerate(values) if v is not None]
    for i, status in out:
        if status == "firing":
            recent = [v for j, v in with_data if j <= i][-for_windows:]
            assert len(recent) == for_windows and all(v < 0.8 for v in recent)
        else:
            recent = [v for j, v in with_data if j <= i][-clear_windows:]
            assert len(recent) == clear_windows and all(v >= 0.85 for v in recent)
    # A full replay emits nothing and leaves the state unchanged.
    snapshot = tracker.to_dict()
    assert feed(tracker, rule, values) == []
    assert tracker.to_dict() == snapshot


def test_numpy_scalars_become_plain_json_scalars() -> None:
    rule = acc_rule(threshold=-0.125, relative_to_baseline=True)
    [alert] = AlertTracker().observe(
        rule, model_id="churn", model_version="3", segment={}, window_start_ms=0, window_end_ms=MIN,
        value=np.float32(0.5), samples=np.int64(100), baseline=np.float64(0.875),  # type: ignore[arg-type]
    )  # fmt: skip
    assert type(alert.observed) is float and alert.observed == 0.5
    assert type(alert.evidence["samples"]) is int and alert.evidence["samples"] == 100
    assert type(alert.evidence["baseline"]) is float and type(alert.threshold) is float
    assert json.loads(json.dumps(alert.evidence))["threshold"] == 0.75


def test_alerts_round_trip_through_the_cloudevents_contract() -> None:
    # The schema decoder validates timestamps, literals and types: our output must pass it.
    tracker, rule = AlertTracker(), acc_rule(severity="critical")
    emitted = []
    for i, value in enumerate([0.5, 0.9]):
        emitted += tracker.observe(
            rule, model_id="churn", model_version="3", segment={"c": "FR"}, window_start_ms=i * MIN,
            window_end_ms=(i + 1) * MIN, value=value, samples=10, evidence={"labelled": 10},
        )  # fmt: skip
    assert [a.status for a in emitted] == ["firing", "resolved"]
    for alert in emitted:
        event = alert_event(alert)
        decoded = decode_alert(msgspec.json.encode(event))
        assert decoded == event
        assert decoded.data == alert
    assert alert_event(emitted[0]).type == "io.driftline.alert.firing"
    assert alert_event(emitted[1]).type == "io.driftline.alert.resolved"
