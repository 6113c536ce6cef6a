"""HistorySink on the embedded broker with a SQLite store: exactly the published rows land,
control and poisoned records are skipped, offsets are committed only after the store commit,
and re-delivery (a store failure, a second group) leaves the store unchanged.

Oracles: the contract objects themselves (what went in must come back equal from
``window_history``), row counts and committed offsets written by hand.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from confluent_kafka import OFFSET_INVALID, Producer
from conftest import committed_offsets, run_until
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from driftline.apps.commands import ops_cli
from driftline.platform.config import Config, TopicConfig
from driftline.platform.kafka import KafkaSettings, confluent_config, quick_join_consumer_config
from driftline.platform.store import list_alerts, make_engine, session_factory, upgrade, window_history
from driftline.platform.store.models import (
    AlertTransition,
    Model,
    ModelVersion,
    RetrainingRequestRow,
    WindowResultRow,
)
from driftline.schemas import (
    AlertData,
    AlertEvent,
    DriftTest,
    RetrainingRequest,
    RetrainingRequestData,
    Window,
    WindowResult,
    alert_event,
    encode,
    ms_to_rfc3339,
    retraining_request,
)
from driftline.streams import sink as sink_module
from driftline.streams.app import END_OF_RESULTS
from driftline.streams.ingest import CONTROL_HEADER
from driftline.streams.sink import (
    DEFAULT_RETENTION_MS,
    PRUNE_INTERVAL_S,
    HistorySink,
    ingest_report,
    retention_cutoff_ms,
    write_batch,
)

pytestmark = pytest.mark.timeout(90)

T0 = 1_767_225_600_000
MINUTE = 60_000


def _result(start_ms: int, phase: str, accuracy: float, version: str = "v1") -> WindowResult:
    return WindowResult(
        model_id="fraud",
        model_version=version,
        segment={},
        window_start=ms_to_rfc3339(start_ms),
        window_end=ms_to_rfc3339(start_ms + MINUTE),
        window_start_ms=start_ms,
        window_end_ms=start_ms + MINUTE,
        phase=phase,  # type: ignore[arg-type]
        prediction_count=600,
        labelled_count=300 if phase == "provisional" else 600,
        label_coverage=0.5 if phase == "provisional" else 1.0,
        metrics={"accuracy": accuracy},
        drift=[
            DriftTest(feature="x1", test="ks", statistic=0.3, p_value=0.001, threshold=0.05, drifted=True)
        ],
        dataset_drift=True,
        drift_share=1.0,
        reference="fraud/v1@0",
        data_quality={},
    )


def _alert(status: str, end_ms: int) -> AlertEvent:
    return alert_event(
        AlertData(
            dedup_key="fraud-accuracy",
            status=status,  # type: ignore[arg-type]
            rule="accuracy-low",
            metric="accuracy",
            severity="critical",
            model_id="fraud",
            model_version="v1",
            segment={},
            window=Window(start=ms_to_rfc3339(end_ms - MINUTE), end=ms_to_rfc3339(end_ms)),
            observed=0.6,
            threshold=0.8,
            comparison="<",
            starts_at=ms_to_rfc3339(T0 + MINUTE),
        )
    )


def _request(key: str, end_ms: int) -> RetrainingRequest:
    return retraining_request(
        RetrainingRequestData(
            idempotency_key=key,
            model_id="fraud",
            model_version="v1",
            reason="accuracy-low",
            evidence={},
            window=Window(start=ms_to_rfc3339(end_ms - MINUTE), end=ms_to_rfc3339(end_ms)),
            suggested_training_range=Window(start=ms_to_rfc3339(T0), end=ms_to_rfc3339(end_ms)),
            requested_at=ms_to_rfc3339(end_ms),
        )
    )


RESULTS = [
    _result(T0, "provisional", 0.9),
    _result(T0, "final", 0.91),
    _result(T0 + MINUTE, "final", 0.6),
    _result(T0 + 2 * MINUTE, "final", 0.95, version="v2"),
]
ALERTS = [_alert("firing", T0 + 2 * MINUTE), _alert("resolved", T0 + 3 * MINUTE)]
REQUESTS = [_request("req-1", T0 + 2 * MINUTE)]


@pytest.fixture()
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path}/history.sqlite"
    upgrade(url)
    engine = make_engine(url)
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()


def _config(kafka_settings: KafkaSettings, prefix: str) -> Config:
    return Config(
        app_id=f"{prefix}app",
        bootstrap_servers=kafka_settings.bootstrap_servers,
        topics=TopicConfig(prefix=prefix, results=1, alerts=1, retraining=1),
    )


def _sink(config: Config, settings: KafkaSettings, sessions: Any, **kwargs: Any) -> HistorySink:
    return HistorySink(
        config, sessions, settings=settings, consumer_config=quick_join_consumer_config(), **kwargs
    )


def _publish(settings: KafkaSettings, config: Config) -> None:
    """Results with a control record and a poisoned one between them; one alert twice."""
    topics = config.topics
    producer = Producer(confluent_config(settings))
    for r in RESULTS[:2]:
        producer.produce(topics.name("window-results"), encode(r))
    producer.produce(topics.name("window-results"), b"{not json")
    producer.produce(topics.name("window-results"), encode(RESULTS[2]))
    producer.produce(
        topics.name("window-results"), b'{"windows": 3}', headers=[(CONTROL_HEADER, END_OF_RESULTS)]
    )
    producer.produce(topics.name("window-results"), encode(RESULTS[3]))
    for a in [ALERTS[0], ALERTS[0], ALERTS[1]]:  # the firing one re-delivered
        producer.produce(topics.name("alerts"), encode(a))
    producer.produce(topics.name("retraining-requests"), encode(REQUESTS[0]))
    assert producer.flush(10) == 0


def _committed(settings: KafkaSettings, group: str, config: Config) -> dict[str, int]:
    names = [config.topics.name(t) for t in ("window-results", "alerts", "retraining-requests")]
    offsets = committed_offsets(settings, group, names)
    return {topic.removeprefix(config.topics.prefix): offset for topic, offset in offsets.items()}


def _counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as s:
        return {
            table.__tablename__: int(s.scalar(select(func.count()).select_from(table)) or 0)
            for table in (WindowResultRow, AlertTransition, RetrainingRequestRow, ModelVersion)
        }


def _run(sink: HistorySink, until: Any, timeout: float = 30.0) -> None:
    """Run on a thread until ``until()`` holds; the stop event is checked between batches."""
    run_until(sink.run, until, timeout=timeout, what=lambda: f"(sink: {sink.stats})")


EXPECTED_COUNTS = {"window_results": 4, "alert_transitions": 2, "retraining_requests": 1, "model_versions": 2}


def test_sink_writes_history_and_commits_after_the_store(
    kafka_settings: KafkaSettings, unique_prefix: str, sessions: sessionmaker[Session]
) -> None:
    config = _config(kafka_settings, unique_prefix)
    with _sink(config, kafka_settings, sessions) as sink:
        _publish(kafka_settings, config)
        _run(sink, lambda: sink.stats.windows + sink.stats.alerts + sink.stats.requests == 8)
        stats = sink.stats
    assert (stats.windows, stats.alerts, stats.new_alert_transitions, stats.requests) == (4, 3, 2, 1)
    assert (stats.control, stats.undecodable, stats.store_failures) == (1, 1, 0)
    assert _counts(sessions) == EXPECTED_COUNTS
    with sessions() as s:
        assert window_history(s, "fraud") == RESULTS
        [alert] = list_alerts(s, model_id="fraud")
        assert (alert.status, alert.last_changed_ms, alert.first_fired_ms) == (
            "resolved",
            T0 + 3 * MINUTE,
            T0 + MINUTE,
        )
        model = s.get(Model, "fraud")
        assert model is not None
        # touched with the earliest window start and the latest window end it has seen
        assert (model.first_seen_ms, model.last_seen_ms) == (T0, T0 + 3 * MINUTE)
    # every record, the skipped ones included, is behind the committed offset
    committed = _committed(kafka_settings, f"{unique_prefix}app-history", config)
    assert committed == {"window-results": 6, "alerts": 3, "retraining-requests": 1}

    # A second group re-reads everything: at-least-once re-delivery changes nothing.
    with _sink(config, kafka_settings, sessions, group_id=f"{unique_prefix}again") as again:
        _run(again, lambda: again.stats.windows + again.stats.alerts + again.stats.requests == 8)
        assert (again.stats.new_alert_transitions, again.stats.new_requests) == (0, 0)
    assert _counts(sessions) == EXPECTED_COUNTS
    with sessions() as s:
        assert window_history(s, "fraud") == RESULTS


class _FailingOnce:
    """A session factory whose first transaction fails, recording the committed offsets then."""

    def __init__(self, real: sessionmaker[Session], probe: Any) -> None:
        self.real, self.probe, self.calls, self.seen_committed = real, probe, 0, None

    def begin(self) -> AbstractContextManager[Session]:
        self.calls += 1
        if self.calls == 1:
            self.seen_committed = self.probe()
            raise RuntimeError("database is locked")
        return self.real.begin()


def test_store_failure_rolls_back_and_the_batch_is_retried(
    kafka_settings: KafkaSettings, unique_prefix: str, sessions: sessionmaker[Session]
) -> None:
    config = _config(kafka_settings, unique_prefix)
    group = f"{unique_prefix}app-history"
    flaky = _FailingOnce(sessions, lambda: _committed(kafka_settings, group, config))
    # retention off: its start-up prune would be the transaction that fails
    with _sink(config, kafka_settings, flaky, backoff_initial_s=0.05, retention_ms=None) as sink:
        _publish(kafka_settings, config)
        _run(sink, lambda: sink.stats.windows + sink.stats.alerts + sink.stats.requests == 8)
        assert sink.stats.store_failures == 1
    assert flaky.seen_committed == dict.fromkeys(
        ("window-results", "alerts", "retraining-requests"), OFFSET_INVALID
    )
    assert _counts(sessions) == EXPECTED_COUNTS
    with sessions() as s:
        assert window_history(s, "fraud") == RESULTS
    assert _committed(kafka_settings, group, config) == {
        "window-results": 6,
        "alerts": 3,
        "retraining-requests": 1,
    }


def test_ingest_report_is_idempotent(sessions: sessionmaker[Session]) -> None:
    report = {
        "report_version": 1,
        "windows": msgspec.to_builtins(RESULTS),
        "alerts": msgspec.to_builtins(ALERTS),
        "retraining_requests": msgspec.to_builtins(REQUESTS),
    }
    with sessions.begin() as s:
        stats = ingest_report(report, s)
    assert (stats.windows, stats.new_alert_transitions, stats.new_requests) == (4, 2, 1)
    with sessions.begin() as s:
        again = ingest_report(report, s)
    assert (again.windows, again.new_alert_transitions, again.new_requests) == (4, 0, 0)
    assert _counts(sessions) == EXPECTED_COUNTS
    with sessions() as s:
        assert window_history(s, "fraud") == RESULTS
        [alert] = list_alerts(s)
        assert alert.status == "resolved"


def test_ingest_report_rejects_a_malformed_window(sessions: sessionmaker[Session]) -> None:
    bad = msgspec.to_builtins(RESULTS[:1])
    del bad[0]["phase"]
    with pytest.raises(msgspec.ValidationError, match="phase"), sessions.begin() as s:
        ingest_report({"windows": bad}, s)
    assert _counts(sessions)["window_results"] == 0


def test_history_command_stores_a_replay_report(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.json"
    report.write_text(
        json.dumps(
            {
                "report_version": 1,
                "windows": msgspec.to_builtins(RESULTS),
                "alerts": msgspec.to_builtins(ALERTS),
                "retraining_requests": msgspec.to_builtins(REQUESTS),
            }
        )
    )
    parser = argparse.ArgumentParser(prog="driftline")
    ops_cli.register(parser.add_subparsers(dest="command", required=True))
    url = str(sessions.kw["bind"].url)
    args = parser.parse_args(["history", "--store-url", url, "--from-report", str(report)])
    assert args.func(args) == 0
    assert capsys.readouterr().out == (
        f"stored 4 windows, 2 new alert transitions and 1 new retraining requests from {report} into {url}\n"
    )
    assert _counts(sessions) == EXPECTED_COUNTS


def test_idle_timeout_counts_from_the_assignment(
    kafka_settings: KafkaSettings, unique_prefix: str, sessions: sessionmaker[Session]
) -> None:
    """The group join may outlast the idle timeout; the sink must still get its partitions
    (and so its chance to read) before it calls the topics idle."""
    config = _config(kafka_settings, unique_prefix)
    with _sink(config, kafka_settings, sessions) as sink:
        started = time.monotonic()
        stats = sink.run(idle_timeout=0.5)
        elapsed = time.monotonic() - started
        assigned_after = sink._assigned_at - started if sink._assigned_at is not None else None
    assert assigned_after is not None and elapsed >= assigned_after + 0.5
    assert elapsed < 30
    assert (stats.batches, stats.windows) == (0, 0)


# ---- retention ---------------------------------------------------------------------------------
DAY = 86_400_000
RETENTION = 90 * DAY
#: newest window in the seeded store ends at T0 + 1 min, so the cutoff is T0 + 1 min - 90 d
CUTOFF = T0 + MINUTE - RETENTION
SEEDED = {
    "old": _result(T0 - 100 * DAY, "final", 0.9),
    "just-past": _result(CUTOFF - 1 - MINUTE, "final", 0.9),  # ends 1 ms before the cutoff
    "at-cutoff": _result(CUTOFF - MINUTE, "final", 0.9),  # ends exactly at it: kept
    "month-old": _result(T0 - 30 * DAY, "final", 0.9),
    "newest": _result(T0, "final", 0.9),
}


def _seed(sessions: sessionmaker[Session], results: Iterator[WindowResult] | list[WindowResult]) -> None:
    with sessions.begin() as s:
        write_batch(s, list(results), [], [])


def _window_starts(sessions: sessionmaker[Session]) -> list[int]:
    with sessions() as s:
        return sorted(s.scalars(select(WindowResultRow.window_start_ms)))


def _starts(*names: str) -> list[int]:
    return sorted(SEEDED[n].window_start_ms for n in names)


def test_retention_cutoff_uses_the_newest_window_end_capped_at_the_wall_clock() -> None:
    assert retention_cutoff_ms(None, T0, RETENTION) is None  # empty store: nothing to prune
    assert retention_cutoff_ms(T0, T0 + 365 * DAY, RETENTION) == T0 - RETENTION  # replayed history
    assert retention_cutoff_ms(T0 + 3650 * DAY, T0, RETENTION) == T0 - RETENTION  # future-stamped
    assert DEFAULT_RETENTION_MS == 7_776_000_000 and PRUNE_INTERVAL_S == 3600.0
    with pytest.raises(ValueError, match="retention_ms"):
        HistorySink(Config(), None, retention_ms=0, create_topics=False)  # type: ignore[arg-type]


def test_retention_prunes_at_start_up_then_at_most_once_per_interval(
    kafka_settings: KafkaSettings, unique_prefix: str, sessions: sessionmaker[Session]
) -> None:
    config = _config(kafka_settings, unique_prefix)
    _seed(sessions, SEEDED.values())
    later = _result(T0 + 61 * DAY, "final", 0.8)  # moves the newest window end on by 61 days
    producer = Producer(confluent_config(kafka_settings))
    producer.produce(config.topics.name("window-results"), encode(later))
    assert producer.flush(10) == 0
    a_year_on = lambda: T0 + 365 * DAY  # noqa: E731 - the wall clock is far ahead: event time rules

    # start-up prune against T0 + 1 min; the window read afterwards does not trigger another
    # prune within the hour, so the month-old window survives although it is now past retention
    with _sink(config, kafka_settings, sessions, wall_clock_ms=a_year_on) as sink:
        _run(sink, lambda: sink.stats.windows == 1)
        assert (sink.stats.prunes, sink.stats.pruned) == (1, 2)
    assert _window_starts(sessions) == sorted(
        [*_starts("at-cutoff", "month-old", "newest"), later.window_start_ms]
    )

    # a prune that is due (interval 0) measures against T0 + 61 d + 1 min
    with _sink(
        config,
        kafka_settings,
        sessions,
        group_id=f"{unique_prefix}again",
        prune_interval_s=0.0,
        wall_clock_ms=a_year_on,
    ) as again:
        _run(again, lambda: again.stats.windows == 1)
        assert again.stats.pruned == 2 and again.stats.prunes >= 2
    assert _window_starts(sessions) == sorted([*_starts("newest"), later.window_start_ms])


def test_retention_is_capped_at_the_wall_clock_and_can_be_off(
    kafka_settings: KafkaSettings, sessions: sessionmaker[Session]
) -> None:
    future = _result(T0 + 3650 * DAY, "final", 0.5)  # a producer with a broken clock
    _seed(sessions, [*SEEDED.values(), future])
    kept = HistorySink(Config(), sessions, settings=kafka_settings, create_topics=False, retention_ms=None)
    with kept:
        assert kept.prune() == 0
    assert len(_window_starts(sessions)) == 6
    now = T0 + MINUTE  # the wall clock at the newest honest window's end: cutoff CUTOFF
    with HistorySink(
        Config(), sessions, settings=kafka_settings, create_topics=False, wall_clock_ms=lambda: now
    ) as sink:
        assert sink.prune() == 2
    assert _window_starts(sessions) == sorted(
        [*_starts("at-cutoff", "month-old", "newest"), future.window_start_ms]
    )


def test_history_command_applies_retention_at_start_up(
    kafka_settings: KafkaSettings,
    unique_prefix: str,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _seed(sessions, SEEDED.values())

    class QuickJoin(HistorySink):
        """The command's sink, joining its group in seconds instead of the default ~25 s."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, consumer_config=quick_join_consumer_config(), **kwargs)

    monkeypatch.setattr(sink_module, "HistorySink", QuickJoin)
    parser = argparse.ArgumentParser(prog="driftline")
    ops_cli.register(parser.add_subparsers(dest="command", required=True))
    url = str(sessions.kw["bind"].url)

    def history(app: str, *options: str) -> int:
        config_file = tmp_path / f"{app}.yml"
        config_file.write_text(
            json.dumps(
                {
                    "app_id": f"{unique_prefix}{app}",  # its own group: emptied groups admit no one here
                    "bootstrap_servers": kafka_settings.bootstrap_servers,
                    "topics": {"prefix": unique_prefix, "results": 1, "alerts": 1, "retraining": 1},
                }
            )
        )
        args = parser.parse_args(["history", "--store-url", url, "--config", str(config_file), *options])
        assert args.retention == (options[1] if options[:1] == ("--retention",) else "90d")
        return int(args.func(args))

    assert history("bad", "--retention", "ninety days") == 2
    assert "--retention: not a duration: 'ninety days'" in capsys.readouterr().err
    assert len(_window_starts(sessions)) == 5

    # 0 keeps everything, however old
    assert history("keep", "--retention", "0", "--idle-timeout", "0.5") == 0
    out = capsys.readouterr().out
    assert "keeping all windows" in out and out.endswith("; 0 windows past retention pruned\n")
    assert len(_window_starts(sessions)) == 5

    # cutoff T0 + 1 min - 31 d: the month-old window (ends T0 - 30 d + 1 min) stays
    assert history("prune", "--retention", "31d", "--idle-timeout", "0.5") == 0
    out = capsys.readouterr().out
    assert "keeping 31d of windows" in out and out.endswith("; 3 windows past retention pruned\n")
    assert _window_starts(sessions) == _starts("month-old", "newest")
