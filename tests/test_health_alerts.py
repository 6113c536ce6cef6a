"""Integration-health alerts through ingest, join, merge and the alert lifecycle (in process):
one test per alert kind, each naming the exact window and, for schema changes, the position
(topic, partition, offset) of the first offending event. Each test also runs with its
detection disabled (``health.disable``) and checks the alert is then absent, so none of them
can pass without the detection it is about."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson
import pytest

from driftline.platform.config import Config, HealthConfig, ModelConfig, config_from_mapping
from driftline.schemas import AlertEvent
from driftline.streams.catalog import ModelCatalog, build_profiles
from driftline.streams.evaluation import Evaluator
from driftline.streams.ingest import CONTROL_HEADER, END_OF_INPUT, Router
from driftline.streams.join import JoinPartition
from driftline.streams.merge import WindowMerger
from driftline.streams.messages import decode_join_input, decode_partials

T0 = 1_767_225_600_000  # a multiple of W
W = 20_000
PRED, GT = "driftline.predictions", "driftline.ground-truth"
WALL = T0 + 10**9  # the router's clock: every event is in its past


@dataclass
class Run:
    alerts: list[AlertEvent]
    merger: WindowMerger
    #: per rule, how many merge outputs came before its first alert; per (model, window
    #: start), before its first result
    fired_before: dict[str, int]
    first_result_at: dict[tuple[str, int], int]
    #: every message the merger was given, in order (to replay it into a restored merger)
    inputs: list[Any]
    #: how many records ingest dead-lettered, and how many predictions the join counted
    dead: int = 0
    predictions: int = 0

    def named(self, rule: str, status: str = "firing") -> list[tuple[dict[str, str], int, int]]:
        """(segment, window start, window end) relative to T0, of the alerts of ``rule``."""
        return [
            (a.data.segment, _ms(a.data.window.start) - T0, _ms(a.data.window.end) - T0)
            for a in self.alerts
            if a.data.rule == rule and a.data.status == status
        ]


def _ms(text: str) -> int:
    from driftline.schemas import rfc3339_to_ms

    return rfc3339_to_ms(text)


def _config(**health: Any) -> Config:
    cfg = ModelConfig(
        window_ms=W,
        grace_ms=1_000,
        label_horizon_ms=2_000,
        online_detectors=(),
        rules=(),
        health=HealthConfig(**health),
    )
    return Config(defaults=cfg, models={"m": cfg})


def _prediction(i: int, ts: int, channel: str = "web", **features: Any) -> dict[str, Any]:
    return {
        "prediction_id": f"p{i}",
        "model_id": "m",
        "model_version": "1",
        "timestamp": ts,
        "features": features if features else {"x": float(i % 7), "kind": "a"},
        "prediction": i % 2,
        "segments": {"channel": channel},
    }


def _pipeline(
    config: Config,
    messages: Iterable[list[dict[str, Any]]],
    labels: list[dict[str, Any]],
    *,
    reference: list[dict[str, Any]] | None = None,
    partitions: int = 2,
) -> Run:
    """Each item of ``messages`` is one batch message on predictions partition 0 (offsets 0,
    1, ...); then the labels as one message, then end of input on both topics."""
    profiles = build_profiles(reference, "m", config.model("m")) if reference else None
    catalog = ModelCatalog(config, profiles)
    router = Router(config, catalog, join_partitions=partitions)
    joins = [
        JoinPartition(p, catalog, prediction_sources=[f"{PRED}:0"], label_sources=[f"{GT}:0"])
        for p in range(partitions)
    ]
    merger = WindowMerger(catalog, Evaluator(catalog), partitions)
    alerts: list[AlertEvent] = []
    fired: dict[str, int] = {}
    results: dict[tuple[str, int], int] = {}
    step = [0]
    inputs: list[Any] = []
    dead = [0]

    def merge(message: Any) -> None:
        inputs.append(message)
        got = merger.add(message)
        step[0] += 1
        for a in got.alerts:
            fired.setdefault(a.data.rule, step[0])
        for e in got.evaluations:
            results.setdefault((e.result.model_id, e.result.window_start_ms), step[0])
        alerts.extend(got.alerts)

    def deliver(out: list) -> None:
        for o in out:
            if o.topic == router.join_topic:
                jp = joins[o.partition]
                for message in [*jp.apply(decode_join_input(o.value)), jp.progress()]:
                    merge(message)
            elif o.topic == router.partials_topic:
                merge(decode_partials(o.value))
            elif o.topic == router.dead_letter_topic:
                dead[0] += 1

    offset = 0
    for batch in messages:
        body = orjson.dumps({"kind": "predictions", "events": batch})
        deliver(router.route("predictions", body, PRED, 0, offset, wall_ms=WALL))
        offset += 1
    if labels:
        body = orjson.dumps({"kind": "ground_truth", "events": labels})
        deliver(router.route("ground_truth", body, GT, 0, 0, wall_ms=WALL))
    deliver(router.route("predictions", None, PRED, 0, offset, [(CONTROL_HEADER, END_OF_INPUT)]))
    deliver(router.route("ground_truth", None, GT, 0, 1, [(CONTROL_HEADER, END_OF_INPUT)]))
    return Run(alerts, merger, fired, results, inputs, dead[0], merger.counters.get("predictions", 0))


def _traffic(
    windows: int,
    per_window: int = 100,
    *,
    silent: Mapping[str, set[int]] | None = None,
    volume: Mapping[int, int] | None = None,
    labelled: Mapping[int, float] | None = None,
) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """One message per window: ``per_window`` predictions alternating web/ios (or
    ``volume[w]`` of them), channels in ``silent`` sending nothing in those windows, and a
    label for every prediction but in windows of ``labelled`` (the share labelled there)."""
    messages, labels, i = [], [], 0
    for w in range(windows):
        batch = []
        n = (volume or {}).get(w, per_window)
        for j in range(n):
            channel = ("web", "ios")[j % 2]
            if w in (silent or {}).get(channel, set()):
                continue
            ts = T0 + w * W + j * (W // (n + 1))
            batch.append(_prediction(i, ts, channel))
            share = (labelled or {}).get(w, 1.0)
            if j < share * n:
                label = {"prediction_id": f"p{i}", "model_id": "m", "label": i % 3 % 2, "timestamp": ts + 50}
                labels.append(label)
            i += 1
        if batch:
            messages.append(batch)
    return messages, labels


# -- silence ------------------------------------------------------------------------------


@pytest.mark.parametrize("enabled", [True, False])
def test_a_model_that_stops_is_named_at_its_third_silent_window_while_still_silent(enabled: bool) -> None:
    """Windows 0-4 have traffic; 5-9 none; traffic resumes at 10. The alert names window 7
    (the third empty one) and fires while the model is still silent (the other model's
    events move event time on; no window of ``m`` closes before window 10), and resolves at
    window 10."""
    cfg = _config(silence_windows=3, disable=() if enabled else ("no-predictions",))
    other = ModelConfig(window_ms=W, grace_ms=1_000, label_horizon_ms=2_000, online_detectors=(), rules=())
    config = Config(defaults=cfg.defaults, models={"m": cfg.defaults, "n": other})
    messages = []
    for w in range(12):
        batch = []
        for j in range(50):
            ts = T0 + w * W + j * 300
            if w < 5 or w >= 10:
                batch.append(_prediction(w * 100 + j, ts))
            batch.append({**_prediction(w * 100 + j, ts), "model_id": "n"})
        messages.append(batch)
    run = _pipeline(config, messages, [])
    fired = [(s, a, b) for s, a, b in run.named("no-predictions") if s == {}]
    if not enabled:
        assert fired == []
        return
    assert fired == [({}, 7 * W, 8 * W)]
    first = next(a for a in run.alerts if a.data.rule == "no-predictions" and a.data.segment == {})
    assert first.data.observed == 3.0 and first.data.evidence["since_ms"] == T0 + 5 * W
    assert [(s, a) for s, a, _ in run.named("no-predictions", "resolved") if s == {}] == [({}, 10 * W)]
    assert run.fired_before["no-predictions"] < run.first_result_at[("m", T0 + 10 * W)]
    # the other model, always sending, is never silent
    assert not [a for a in run.alerts if a.data.rule == "no-predictions" and a.data.model_id == "n"]


@pytest.mark.parametrize("enabled", [True, False])
def test_a_silent_segment_value_is_named_at_its_nth_empty_window(enabled: bool) -> None:
    """ios sends nothing in windows 3-6 (web goes on): no-predictions for channel=ios at
    window 5 (N = 3), resolved at window 7; nothing for the model or for web."""
    config = _config(silence_windows=3, disable=() if enabled else ("no-predictions",))
    messages, labels = _traffic(10, silent={"ios": {3, 4, 5, 6}})
    run = _pipeline(config, messages, labels)
    if not enabled:
        assert run.named("no-predictions") == []
        return
    assert run.named("no-predictions") == [({"channel": "ios"}, 5 * W, 6 * W)]
    assert run.named("no-predictions", "resolved") == [({"channel": "ios"}, 7 * W, 8 * W)]


# -- volume -------------------------------------------------------------------------------


@pytest.mark.parametrize("enabled", [True, False])
def test_volume_out_of_its_learnt_band_names_the_window_and_the_band(enabled: bool) -> None:
    """100 predictions a window; window 10 gets 400 (volume_high), window 12 gets 30
    (volume_low); window 14, the last, is cut short by the end of the input and not judged.
    The band of window 10 is volume_band of its 10 past windows: all 100, so no trend and no
    spread, and the Poisson floor at 100 (the default alpha 1e-6): fires above 153, as scipy
    says."""
    from scipy import stats

    config = _config(volume_min_history=8, disable=() if enabled else ("volume-out-of-band",))
    messages, labels = _traffic(15, volume={10: 400, 12: 30})
    run = _pipeline(config, messages, labels)
    model = [
        (a.data.status, _ms(a.data.window.start) - T0, a.data.observed, a.data.comparison, a.data.threshold)
        for a in run.alerts
        if a.data.rule == "volume-out-of-band" and a.data.segment == {}
    ]
    if not enabled:
        assert model == []
        return
    high = float(stats.poisson.isf(HealthConfig().volume_alpha / 2, 100))
    assert high == 153.0
    assert model[0] == ("firing", 10 * W, 400.0, ">", high)
    assert model[1][:2] == ("resolved", 11 * W)
    assert model[2][:4] == ("firing", 12 * W, 30.0, "<")
    assert model[3][:2] == ("resolved", 13 * W)
    assert len(model) == 4


# -- labels -------------------------------------------------------------------------------


@pytest.mark.parametrize("enabled", [True, False])
def test_label_coverage_below_its_history_names_the_window(enabled: bool) -> None:
    """Every prediction is labelled, but a quarter in window 8: label-coverage-low for the
    model at window 8 (coverage 0.25), resolved at window 9."""
    config = _config(disable=() if enabled else ("label-coverage-low",))
    messages, labels = _traffic(11, labelled={8: 0.25})
    run = _pipeline(config, messages, labels)
    if not enabled:
        assert run.named("label-coverage-low") == []
        return
    assert [s for s, a, _ in run.named("label-coverage-low") if a == 8 * W] == [
        {},
        {"channel": "ios"},
        {"channel": "web"},
    ]
    assert {a for _, a, _ in run.named("label-coverage-low")} == {8 * W}
    whole = next(a for a in run.alerts if a.data.rule == "label-coverage-low" and a.data.segment == {})
    assert whole.data.observed == 0.25
    assert {a for _, a, _ in run.named("label-coverage-low", "resolved")} == {9 * W}


@pytest.mark.parametrize("enabled", [True, False])
def test_label_coverage_falling_window_after_window_names_the_fourth(enabled: bool) -> None:
    """Coverage 1.0 then 0.98, 0.96, 0.94, 0.92 in windows 4-7 (each above the coverage-low
    floor, by tolerance 0.1): label-coverage-falling at window 7, the fourth fall."""
    config = _config(coverage_tolerance=0.1, disable=() if enabled else ("label-coverage-falling",))
    messages, labels = _traffic(10, labelled={4: 0.98, 5: 0.96, 6: 0.94, 7: 0.92})
    run = _pipeline(config, messages, labels)
    if not enabled:
        assert run.named("label-coverage-falling") == []
        return
    assert ({}, 7 * W, 8 * W) in run.named("label-coverage-falling")
    assert {a for _, a, _ in run.named("label-coverage-falling")} == {7 * W}
    assert run.named("label-coverage-low") == []


def _slowing_labels(windows: int, per_window: int = 100) -> tuple[list[list[dict[str, Any]]], list[dict]]:
    """Every prediction labelled, window w's labels spread evenly from 0 to ``(0.1 + 0.1 w)``
    of the horizon late (so its p95 is 0.95 of that): up to 10 % of the horizon in window 0,
    90 % in window 8, 100 % in window 9."""
    messages, labels = _traffic(windows, per_window)
    label_of = {g["prediction_id"]: g for g in labels}
    horizon = 2_000
    for w, batch in enumerate(messages):
        top = (0.1 + 0.1 * w) * horizon
        for j, e in enumerate(batch):
            lag = round(top * j / (len(batch) - 1))
            label_of[e["prediction_id"]]["timestamp"] = e["timestamp"] + lag
    return messages, labels


@pytest.mark.parametrize("enabled", [True, False])
def test_labels_slowing_towards_the_horizon_name_the_first_window_whose_p95_passes_the_share(
    enabled: bool,
) -> None:
    """Label lag grows from 10 % to 90 % of the 2 s horizon over windows 0-8, every label
    still in time (coverage stays 1). The oracle: NumPy's p95 of each window's own lags; the
    first above 0.8 of the horizon (1,600 ms) is window 8 (1,709 ms; window 7's is 1,519 ms;
    every window's is farther from the threshold than the 1/32 resolution, so the bins cannot
    flip one).
    label-lag-high names window 8 for the model and both channels, not before, with the
    observed p95 within the resolution of the oracle's."""
    import numpy as np

    from driftline.detectors.label_lag import RESOLUTION

    config = _config(disable=() if enabled else ("label-lag-high",))
    messages, labels = _slowing_labels(10)
    lag = {g["prediction_id"]: g["timestamp"] for g in labels}
    p95 = [
        float(np.quantile([lag[e["prediction_id"]] - e["timestamp"] for e in b], 0.95, method="inverted_cdf"))
        for b in messages
    ]
    first = next(w for w, v in enumerate(p95) if v > 1_600)
    assert first == 8 and all(abs(v - 1_600) > RESOLUTION * v for v in p95)
    run = _pipeline(config, messages, labels)
    assert run.named("label-coverage-low") == [] and run.named("label-coverage-falling") == []
    if not enabled:
        assert run.named("label-lag-high") == []
        return
    assert sorted(run.named("label-lag-high"), key=str) == sorted(
        [(s, first * W, (first + 1) * W) for s in ({}, {"channel": "ios"}, {"channel": "web"})], key=str
    )
    whole = next(a for a in run.alerts if a.data.rule == "label-lag-high" and a.data.segment == {})
    assert whole.data.metric == "label_lag_p95_ms" and whole.data.comparison == ">"
    assert whole.data.threshold == 1_600.0
    assert abs(whole.data.observed - p95[first]) <= RESOLUTION * p95[first]
    assert whole.data.evidence["window_start_ms"] == T0 + first * W
    assert whole.data.evidence["horizon_ms"] == 2_000 and whole.data.evidence["labelled"] == 100
    # window 9 is slower still: the alert stays firing, so nothing resolves
    assert run.named("label-lag-high", "resolved") == []


def test_a_lag_quantile_of_too_few_labels_is_not_judged() -> None:
    """The same slowing labels, but ``lag_min_labelled`` above each channel's 50 labels a
    window: only the whole model (100 labels) is judged, and fires at window 8."""
    config = _config(lag_min_labelled=60)
    run = _pipeline(config, *_slowing_labels(10))
    assert run.named("label-lag-high") == [({}, 8 * W, 9 * W)]


def test_a_lower_share_or_quantile_fires_earlier() -> None:
    """p50 of window w sits at half of (0.1 + 0.1 w) of the horizon, about 100 ms more a window:
    above 0.33 of it (660 ms) from window 6 (693 ms; window 5's is 594 ms)."""
    run = _pipeline(_config(lag_quantile=0.5, lag_share=0.33), *_slowing_labels(10))
    assert {a for _, a, _ in run.named("label-lag-high")} == {6 * W}


# -- schema changes -----------------------------------------------------------------------


REFERENCE = [
    {"prediction_id": f"r{i}", "features": {"x": float(i % 7), "kind": "ab"[i % 2]}, "prediction": i % 2,
     "label": i % 2}
    for i in range(200)
]


def _schema_run(change: Any, enabled: bool = True) -> Run:
    """Windows 0-4 of 40 predictions in 4 messages each (offsets 0-19); ``change(i, row)``
    edits event i's features. Offsets are message numbers on predictions partition 0."""
    config = _config(disable=() if enabled else ("schema-change",))
    messages, i = [], 0
    for w in range(5):
        for _ in range(4):
            batch = []
            for _ in range(10):
                ts = T0 + w * W + (i % 40) * 400
                features: dict[str, Any] = {"x": float(i % 7), "kind": "ab"[i % 2]}
                change(i, features)
                batch.append(_prediction(i, ts, **features))
                i += 1
            messages.append(batch)
    return _pipeline(config, messages, [], reference=REFERENCE)


def _schema_alerts(run: Run) -> list[tuple[str, int, int, dict[str, Any]]]:
    return [
        (a.data.rule, _ms(a.data.window.start) - T0, _ms(a.data.window.end) - T0, a.data.evidence["position"])
        for a in run.alerts
        if a.data.rule.startswith("schema-change/")
    ]


def _pos(offset: int, i: int) -> dict[str, Any]:
    return {"topic": PRED, "partition": 0, "offset": offset, "prediction_id": f"p{i}"}


@pytest.mark.parametrize("enabled", [True, False])
def test_a_missing_feature_is_one_alert_at_its_first_event(enabled: bool) -> None:
    """From event 93 (window 2, message 9) on, every other event lacks ``kind``: one alert
    at window 2 with message 9's offset, however many events and windows follow."""

    def drop(i: int, f: dict[str, Any]) -> None:
        if i >= 93 and i % 2:
            del f["kind"]

    run = _schema_run(drop, enabled)
    if not enabled:
        assert _schema_alerts(run) == []
        return
    assert _schema_alerts(run) == [("schema-change/feature_missing/kind", 2 * W, 3 * W, _pos(9, 93))]
    assert run.alerts[0].data.model_version == "1"


@pytest.mark.parametrize("enabled", [True, False])
def test_a_new_feature_is_one_alert_at_its_first_event(enabled: bool) -> None:
    """Events 130+ carry a feature the reference never had (window 3, message 13)."""

    def add(i: int, f: dict[str, Any]) -> None:
        if i >= 130:
            f["device"] = "ios"

    run = _schema_run(add, enabled)
    if not enabled:
        assert _schema_alerts(run) == []
        return
    assert _schema_alerts(run) == [("schema-change/new_feature/device", 3 * W, 4 * W, _pos(13, 130))]


@pytest.mark.parametrize("enabled", [True, False])
def test_a_type_change_is_one_alert_at_its_first_event_and_the_events_go_on(enabled: bool) -> None:
    """From event 57 (window 1, message 5) ``x`` comes as a string: one alert naming it,
    with the types; the events are not dead-lettered (the window still counts them all)."""

    def retype(i: int, f: dict[str, Any]) -> None:
        if i >= 57:
            f["x"] = str(f["x"])

    run = _schema_run(retype, enabled)
    if not enabled:
        assert _schema_alerts(run) == []
        return
    assert _schema_alerts(run) == [("schema-change/type_change/x", 1 * W, 2 * W, _pos(5, 57))]
    evidence = run.alerts[0].data.evidence
    assert (evidence["expected"], evidence["got"]) == (["number"], "string")
    assert (run.dead, run.predictions) == (0, 200)


def test_a_change_reported_twice_fires_once() -> None:
    """Two ingest partitions (or a restarted one) report the same change: one alert."""
    from driftline.streams.messages import HealthFinding

    run = _schema_run(lambda i, f: f.pop("kind") if i >= 93 else None)
    again = HealthFinding(
        model_id="m", model_version="1", kind="feature_missing", feature="kind", window_start=T0 + 4 * W,
        topic=PRED, partition=1, offset=3, prediction_id="q", detail={},
    )
    assert run.merger.add(again).alerts == []
    assert len(_schema_alerts(run)) == 1


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("health", "message"),
    [
        ({"silence_windows": 0}, "models.m.health.silence_windows must be an integer >= 1, got 0"),
        ({"silence_window": 3}, "models.m.health: unknown keys ['silence_window']"),
        ({"disable": ["volume"]}, "models.m.health.disable[0] must be"),
        ({"volume_alpha": 0.7}, "models.m.health.volume_alpha must be a number in (0, 0.5), got 0.7"),
        ({"volume_min_history": 60}, "health.volume_min_history (60) must be <= volume_history (48)"),
        ({"volume_relearn": 0}, "models.m.health.volume_relearn must be an integer >= 1, got 0"),
        ({"volume_relearn": 4}, "health.volume_relearn (4) must be >= volume_min_history (8)"),
        ({"severity": "page"}, "models.m.health.severity must be"),
        ({"lag_quantile": 0.8}, "models.m.health.lag_quantile must be one of 0.5, 0.9, 0.95, 0.99"),
        ({"lag_share": 0}, "models.m.health.lag_share must be a number > 0 (a share of the label horizon)"),
        ({"lag_min_labelled": 0}, "models.m.health.lag_min_labelled must be an integer >= 1, got 0"),
    ],
)
def test_bad_health_settings_stop_start_up_naming_the_key(health: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        config_from_mapping({"models": {"m": {"health": health}}})
    assert message in str(err.value)


def test_health_settings_of_defaults_and_models_combine_key_by_key() -> None:
    config = config_from_mapping(
        {"defaults": {"health": {"silence_windows": 5}}, "models": {"m": {"health": {"volume_k": 6}}}}
    )
    assert config.model("m").health == HealthConfig(silence_windows=5, volume_k=6.0)


@pytest.mark.parametrize("crash", [0.3, 0.5, 0.7])
def test_a_restart_from_an_older_checkpoint_loses_and_duplicates_no_health_alert(crash: float) -> None:
    """kill -9 semantics in process: the merger is checkpointed, goes on a while, dies; a new
    one restores the checkpoint and re-reads the log from its offset (at-least-once). The
    alerts emitted before and after the crash, deduplicated by event id (the store and the
    outbox do so), are exactly the uninterrupted run's, in order: silence of a segment,
    volume and a schema change, each spanning the crash for some crash point."""

    def change(i: int, f: dict[str, Any]) -> None:
        if i >= 93:
            f.pop("kind")

    config = _config(silence_windows=3, volume_min_history=3)
    messages = []
    for w in range(12):
        n = 300 if w == 8 else 100
        batch = []
        for j in range(n):
            channel = ("web", "ios")[j % 2]
            if channel == "ios" and 3 <= w <= 6:
                continue
            i = w * 1000 + j
            features: dict[str, Any] = {"x": float(j % 7), "kind": "ab"[j % 2]}
            change(i if w >= 2 else 0, features)
            batch.append(_prediction(i, T0 + w * W + j * (W // (n + 1)), channel, **features))
        messages.append(batch)
    whole = _pipeline(config, messages, [], reference=REFERENCE)
    rules = {a.data.rule for a in whole.alerts}
    assert {"no-predictions", "volume-out-of-band", "schema-change/feature_missing/kind"} <= rules
    catalog = whole.merger.catalog
    at = int(len(whole.inputs) * crash)
    checkpoint_at = at // 2
    first = WindowMerger(catalog, Evaluator(catalog), 2)
    emitted: list[AlertEvent] = []
    snapshot = b""
    for k, message in enumerate(whole.inputs[:at]):
        if k == checkpoint_at:
            snapshot = first.snapshot()
        emitted += first.add(message).alerts
    second = WindowMerger(catalog, Evaluator(catalog), 2)
    second.restore(snapshot)
    for message in whole.inputs[checkpoint_at:]:
        emitted += second.add(message).alerts
    unique = list({a.id: a for a in emitted}.values())
    assert [a.id for a in unique] == [a.id for a in whole.alerts]
    assert [msgspec.to_builtins(a) for a in unique] == [msgspec.to_builtins(a) for a in whole.alerts]


def test_every_health_event_kind_raises_exactly_one_alert() -> None:
    from driftline.detectors.vocabulary import HEALTH_ALERTS, HEALTH_EVENTS

    kinds = [k for ks in HEALTH_ALERTS.values() for k in ks]
    assert sorted(kinds) == sorted(HEALTH_EVENTS)
