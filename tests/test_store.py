"""The SQL store on SQLite and on a real PostgreSQL server (see tests/pg.py).

Oracles: Alembic's own metadata comparison for migrations, the contract types' equality for
round trips, and row counts / exact values written by hand for idempotency and retention.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from collections.abc import Iterator

import msgspec
import pytest
from pg import find_pg_bin, postgres_server
from sqlalchemy import JSON, Engine, LargeBinary, create_engine, func, inspect, select, text
from sqlalchemy import column as sa_column
from sqlalchemy import table as sa_table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from driftline.detectors.profile import ReferenceProfile, build_profile
from driftline.platform.checkpoints import CheckpointStore
from driftline.platform.store import (
    SchemaOutOfDate,
    check_schema,
    current_revision,
    downgrade,
    due_notifications,
    enqueue_notification,
    event_payload,
    head_revision,
    latest_profile,
    list_alerts,
    list_retraining_requests,
    load_checkpoint,
    make_engine,
    parse_segment_key,
    prune_window_results,
    record_alert,
    record_attempt,
    record_retraining_request,
    record_window_result,
    safe_url,
    save_checkpoint,
    save_profile,
    segment_key,
    session_factory,
    touch_model,
    upgrade,
    window_history,
)
from driftline.platform.store.models import (
    AlertRow,
    AlertTransition,
    Base,
    Model,
    ModelVersion,
    Notification,
    NotificationAttempt,
    ReferenceProfileRow,
    RetrainingRequestRow,
    WindowResultRow,
)
from driftline.schemas import (
    AlertData,
    AlertEvent,
    DriftTest,
    FeatureQuality,
    RetrainingRequestData,
    Window,
    WindowResult,
    ms_to_rfc3339,
)
from driftline.schemas.cloudevents import RetrainingRequest, alert_event, retraining_request
from driftline.schemas.results import OnlineDetection, SegmentContribution

pytestmark = pytest.mark.timeout(120)

TABLES = {
    "models",
    "model_versions",
    "reference_profiles",
    "window_results",
    "alerts",
    "alert_transitions",
    "notifications",
    "notification_attempts",
    "retraining_requests",
    "retraining_acknowledgements",
    "stream_checkpoints",
    "stream_checkpoint_deltas",
}
SECRET = "pw-Sup3r-S3cret-xyzzy"


# ---- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        message = "PostgreSQL server binaries not found (apt-get install -y postgresql)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must test the store on PostgreSQL")
        pytest.skip(message)
    with postgres_server(bin_dir) as url:
        yield url


def _admin(server_url: str) -> Engine:
    return create_engine(server_url, isolation_level="AUTOCOMMIT")


@pytest.fixture()
def pg_database(pg_server: str) -> Iterator[str]:
    """A fresh, empty database per test on the session's server (cheaper than a server each)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = _admin(pg_server)
    with admin.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.sqlite"
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture()
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()


def _count(session: Session, model: type[Base]) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


# ---- builders ---------------------------------------------------------------------------------
def _result(
    start_ms: int,
    *,
    segment: dict[str, str] | None = None,
    phase: str = "provisional",
    count: int = 100,
    accuracy: float | None = 0.875,
) -> WindowResult:
    return WindowResult(
        model_id="churn",
        model_version="3",
        segment=segment or {},
        window_start=ms_to_rfc3339(start_ms),
        window_end=ms_to_rfc3339(start_ms + 60_000),
        window_start_ms=start_ms,
        window_end_ms=start_ms + 60_000,
        phase=phase,  # type: ignore[arg-type]
        prediction_count=count,
        labelled_count=40,
        label_coverage=0.4,
        metrics={"accuracy": accuracy, "f1": None},
        drift=[
            DriftTest(feature="age", test="ks", statistic=0.21, p_value=0.0031, threshold=0.05, drifted=True),
            DriftTest(
                feature="prediction",
                kind="prediction",
                test="chi2",
                statistic=None,
                p_value=None,
                threshold=0.05,
                drifted=False,
            ),
        ],
        dataset_drift=True,
        drift_share=0.5,
        reference="churn/3@1700000000000",
        data_quality={"age": FeatureQuality(missing_rate=0.01, type_error_rate=0.0, out_of_range_rate=0.02)},
        online=[]
        if phase == "provisional"
        else [
            OnlineDetection(
                detector="adwin",
                signal="error",
                time=ms_to_rfc3339(start_ms + 41_000),
                time_ms=start_ms + 41_000,
            ),
        ],
    )


def _alert(
    status: str, end_ms: int, *, rule: str = "accuracy-low", model_id: str = "churn", fired_ms: int = 120_000
) -> AlertEvent:
    return alert_event(
        AlertData(
            dedup_key=f"{model_id}-{rule}",
            status=status,  # type: ignore[arg-type]
            rule=rule,
            metric="accuracy",
            severity="critical",
            model_id=model_id,
            model_version="3",
            segment={"region": "EU"},
            window=Window(start=ms_to_rfc3339(end_ms - 60_000), end=ms_to_rfc3339(end_ms)),
            observed=0.61,
            threshold=0.8,
            comparison="<",
            evidence={"samples": 120},
            starts_at=ms_to_rfc3339(fired_ms),
        )
    )


def _request(key: str, end_ms: int, *, model_id: str = "churn") -> RetrainingRequest:
    return retraining_request(
        RetrainingRequestData(
            idempotency_key=key,
            model_id=model_id,
            model_version="3",
            reason="accuracy below 0.8 for 3 windows",
            evidence={"accuracy": 0.61},
            window=Window(start=ms_to_rfc3339(end_ms - 60_000), end=ms_to_rfc3339(end_ms)),
            suggested_training_range=Window(start=ms_to_rfc3339(0), end=ms_to_rfc3339(end_ms)),
            requested_at=ms_to_rfc3339(end_ms),
        )
    )


# ---- migrations -------------------------------------------------------------------------------
def test_migrate_up_down_up(db_url: str) -> None:
    def tables() -> set[str]:
        engine = make_engine(db_url)
        try:
            return set(inspect(engine).get_table_names()) - {"alembic_version"}
        finally:
            engine.dispose()

    assert current_revision(db_url) is None
    assert tables() == set()
    upgrade(db_url)
    assert current_revision(db_url) == head_revision() == "0006"
    assert tables() == TABLES
    upgrade(db_url)  # already at head: a no-op, not an error
    assert current_revision(db_url) == "0006"
    downgrade(db_url, "base")
    assert current_revision(db_url) is None
    assert tables() == set()
    upgrade(db_url)
    assert tables() == TABLES


def test_window_rows_from_before_0002_read_back_without_detections(db_url: str) -> None:
    """0002 adds ``online`` to window results, 0005 ``segments_ranked``; rows written at 0001
    get empty lists (and 0003's intervals an empty mapping)."""
    upgrade(db_url, "0001")
    engine = make_engine(db_url)
    try:
        row = {
            "model_id": "churn",
            "model_version": "3",
            "segment": "",
            "window_start_ms": 0,
            "window_end_ms": 60_000,
            "phase": "final",
            "prediction_count": 100,
            "labelled_count": 40,
            "label_coverage": 0.4,
            "dataset_drift": None,
            "drift_share": None,
            "metrics": {},
            "drift": [],
            "data_quality": {},
            "reference": "",
            "recorded_ms": 1,
        }
        columns = ", ".join(row)
        with engine.begin() as connection:
            connection.execute(
                text(f"INSERT INTO window_results ({columns}) VALUES ({', '.join(':' + c for c in row)})"),
                {k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in row.items()},
            )
        upgrade(db_url)
        with session_factory(engine)() as session:
            (result,) = window_history(session, "churn")
        assert result.online == [] and result.prediction_count == 100
        assert (result.segments_ranked, result.intervals, result.interval_level) == ([], {}, None)
    finally:
        engine.dispose()


def test_models_match_migrated_schema(sessions: sessionmaker[Session]) -> None:
    """Any change to models.py without a migration (or the reverse) shows up here."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with sessions() as session:
        context = MigrationContext.configure(session.connection(), opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_check_schema_refuses_unmigrated_database(db_url: str) -> None:
    with pytest.raises(SchemaOutOfDate, match=r"no driftline schema.*run `driftline db upgrade`"):
        check_schema(db_url)
    upgrade(db_url)
    check_schema(db_url)
    downgrade(db_url, "base")
    with pytest.raises(SchemaOutOfDate, match="driftline db upgrade"):
        check_schema(db_url)


def test_in_memory_sqlite_through_one_engine() -> None:
    """An in-memory database exists only inside its engine, so the API also takes engines."""
    engine = make_engine("sqlite://")
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        check_schema(engine)
        with session_factory(engine).begin() as s:
            record_window_result(s, _result(0))
        with session_factory(engine)() as s:
            assert window_history(s, "churn") == [_result(0)]
    finally:
        engine.dispose()


def test_sqlite_engine_pragmas(tmp_path: pytest.TempPathFactory) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/p.sqlite")
    try:
        with engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


# ---- secrets ----------------------------------------------------------------------------------
def test_safe_url_masks_password() -> None:
    assert safe_url(f"postgresql+psycopg://app:{SECRET}@127.0.0.1:5432/db") == (
        "postgresql+psycopg://app:***@127.0.0.1:5432/db"
    )


def test_password_never_in_errors_or_logs(
    pg_database: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The throwaway server trusts every connection, so a URL with a password still connects.
    url = make_url(pg_database).set(password=SECRET).render_as_string(hide_password=False)
    assert SECRET in url
    # MLflow's store (tests/test_mlflow.py, same process) runs its own alembic migrations with a
    # logging config that sets alembic's logger to WARNING and stops it propagating; this test
    # must see every record, whichever test ran before it
    for name in [n for n in logging.root.manager.loggerDict if n == "alembic" or n.startswith("alembic.")]:
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "disabled", False)
        monkeypatch.setattr(logger, "propagate", True)
        monkeypatch.setattr(logger, "level", logging.NOTSET)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SchemaOutOfDate) as out_of_date:
        check_schema(url)
    assert "***" in str(out_of_date.value)
    upgrade(url)
    downgrade(url, "base")
    dead = f"postgresql+psycopg://app:{SECRET}@127.0.0.1:1/db?connect_timeout=2"
    with pytest.raises(OperationalError) as unreachable:
        check_schema(dead)
    texts = [str(out_of_date.value), repr(out_of_date.value), str(unreachable.value), repr(unreachable.value)]
    texts += [r.getMessage() for r in caplog.records]
    assert caplog.records, "alembic should have logged the migrations at DEBUG/INFO"
    assert all(SECRET not in t for t in texts)


# ---- window results ---------------------------------------------------------------------------
def test_window_result_round_trip_and_upsert(sessions: sessionmaker[Session]) -> None:
    first = _result(0, segment={"region": "EU"})
    with sessions.begin() as s:
        record_window_result(s, first, now_ms=5)
        record_window_result(s, first, now_ms=6)
    with sessions() as s:
        assert _count(s, WindowResultRow) == 1
        assert window_history(s, "churn") == [first]
    redelivered = _result(0, segment={"region": "EU"}, count=130, accuracy=0.9)
    final = _result(0, segment={"region": "EU"}, phase="final")
    with sessions.begin() as s:
        record_window_result(s, redelivered, now_ms=7)
        record_window_result(s, final, now_ms=7)
    with sessions() as s:
        assert _count(s, WindowResultRow) == 2
        assert window_history(s, "churn") == [redelivered, final]
        assert s.scalar(select(WindowResultRow.recorded_ms).where(WindowResultRow.phase == "final")) == 7


def test_estimate_intervals_round_trip(sessions: sessionmaker[Session]) -> None:
    """Revision 0003: the label-free estimates' intervals are kept (the report draws the band)."""
    with_band = msgspec.structs.replace(
        _result(0, phase="final"),
        metrics={"estimated_accuracy": 0.8},
        intervals={"estimated_accuracy": [0.75, 0.85]},
        interval_level=0.95,
    )
    with sessions.begin() as s:
        record_window_result(s, with_band)
        record_window_result(s, _result(60_000))
    with sessions() as s:
        got = window_history(s, "churn")
    assert got == [with_band, _result(60_000)]
    assert (got[0].intervals, got[0].interval_level) == ({"estimated_accuracy": [0.75, 0.85]}, 0.95)
    assert (got[1].intervals, got[1].interval_level) == ({}, None)


def test_segment_ranking_round_trip(sessions: sessionmaker[Session]) -> None:
    """Revision 0005: a final window's segment ranking is kept, worst first, every field exact
    (``driftline status`` and the HTML report read it back)."""
    ranked = [
        SegmentContribution(
            dimension="region", value="EU", metric="accuracy", observed=0.6, baseline=0.9,
            labelled_share=0.5, contribution=0.15, low=0.05, high=0.25, share_of_change=0.75,
            significant=True, support=200,
        ),
        SegmentContribution(
            dimension="plan", value="pro", metric="accuracy", observed=None, baseline=0.8,
            labelled_share=0.0, contribution=None, low=None, high=None, share_of_change=None,
            significant=False, support=0,
        ),
    ]
    with_ranking = msgspec.structs.replace(_result(0, phase="final"), segments_ranked=ranked)
    with sessions.begin() as s:
        record_window_result(s, with_ranking)
        record_window_result(s, _result(60_000))
    with sessions() as s:
        got = window_history(s, "churn")
    assert got == [with_ranking, _result(60_000)]
    assert got[0].segments_ranked == ranked and got[1].segments_ranked == []


def test_non_finite_metrics_are_stored_as_null(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        record_window_result(s, _result(0, accuracy=math.nan))
    with sessions() as s:
        assert window_history(s, "churn")[0].metrics == {"accuracy": None, "f1": None}


def test_window_history_filters(sessions: sessionmaker[Session]) -> None:
    results = [_result(t, segment=seg) for t in (0, 60_000, 120_000) for seg in ({}, {"region": "EU"})]
    other = msgspec.structs.replace(_result(60_000), model_id="fraud")
    with sessions.begin() as s:
        for r in [*reversed(results), other]:
            record_window_result(s, r)
    with sessions() as s:
        assert window_history(s, "churn") == results
        assert window_history(s, "churn", segment={}) == results[0::2]
        assert window_history(s, "churn", segment="region=EU") == results[1::2]
        assert window_history(s, "churn", since_ms=60_000, until_ms=120_000) == results[2:4]
        assert window_history(s, "fraud") == [other]
        assert window_history(s, "nobody") == []


def test_prune_window_results_by_window_end(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        for start in (0, 60_000, 120_000):  # windows end at 60k, 120k, 180k
            record_window_result(s, _result(start))
    with sessions.begin() as s:
        assert prune_window_results(s, 120_001) == 2
    with sessions.begin() as s:
        assert [r.window_start_ms for r in window_history(s, "churn")] == [120_000]
        assert prune_window_results(s, 120_001) == 0


def test_segment_key_round_trip() -> None:
    for segment in ({}, {"region": "EU"}, {"b": "x&y=z", "a": "é 1%"}):
        assert parse_segment_key(segment_key(segment)) == segment
    assert segment_key({"region": "EU", "tier": "gold"}) == segment_key({"tier": "gold", "region": "EU"})


# ---- alerts -----------------------------------------------------------------------------------
def test_record_alert_is_idempotent_and_moves_forward_only(sessions: sessionmaker[Session]) -> None:
    firing, resolved = _alert("firing", 120_000), _alert("resolved", 240_000)
    with sessions.begin() as s:
        assert record_alert(s, firing, now_ms=1) is True
        assert record_alert(s, firing, now_ms=2) is False
    with sessions() as s:
        assert _count(s, AlertTransition) == 1
        (row,) = list_alerts(s)
        assert (row.status, row.last_event_id, row.last_changed_ms) == ("firing", firing.id, 120_000)
        assert (row.first_fired_ms, row.segment, row.severity) == (120_000, {"region": "EU"}, "critical")
    with sessions.begin() as s:
        assert record_alert(s, resolved, now_ms=3) is True
        assert record_alert(s, firing) is False  # a late replay of the old firing
    with sessions() as s:
        (row,) = list_alerts(s)
        assert (row.status, row.last_event_id, row.last_changed_ms) == ("resolved", resolved.id, 240_000)
        transitions = s.scalars(select(AlertTransition).order_by(AlertTransition.window_end_ms)).all()
        assert [
            (t.status, t.window_start_ms, t.window_end_ms, t.observed, t.threshold, t.recorded_ms)
            for t in transitions
        ] == [("firing", 60_000, 120_000, 0.61, 0.8, 1), ("resolved", 180_000, 240_000, 0.61, 0.8, 3)]
        assert msgspec.convert(transitions[0].event, AlertEvent) == firing
        assert event_payload(s, resolved.id) == msgspec.to_builtins(resolved)


def test_list_alerts_filters(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        record_alert(s, _alert("firing", 120_000, rule="a"))
        record_alert(s, _alert("firing", 180_000, rule="b"))
        record_alert(s, _alert("firing", 300_000, rule="c", model_id="fraud"))
        record_alert(s, _alert("resolved", 240_000, rule="a"))
    with sessions() as s:

        def keys(**kw: object) -> list[str]:
            return [a.dedup_key for a in list_alerts(s, **kw)]  # type: ignore[arg-type]

        assert keys() == ["fraud-c", "churn-a", "churn-b"]
        assert keys(model_id="churn") == ["churn-a", "churn-b"]
        assert keys(status="firing") == ["fraud-c", "churn-b"]
        assert keys(since_ms=200_000) == ["fraud-c", "churn-a"]
        assert keys(limit=1) == ["fraud-c"]


# ---- retraining requests ----------------------------------------------------------------------
def test_retraining_requests(sessions: sessionmaker[Session]) -> None:
    first = _request("k1", 120_000)
    with sessions.begin() as s:
        assert record_retraining_request(s, first, now_ms=10) is True
        assert record_retraining_request(s, first, now_ms=11) is False
        record_retraining_request(s, _request("k2", 240_000))
        record_retraining_request(s, _request("k3", 180_000, model_id="fraud"))
    with sessions() as s:
        assert _count(s, RetrainingRequestRow) == 3
        assert [r.idempotency_key for r in list_retraining_requests(s)] == ["k2", "k3", "k1"]
        assert [r.idempotency_key for r in list_retraining_requests(s, model_id="churn")] == ["k2", "k1"]
        assert [r.idempotency_key for r in list_retraining_requests(s, since_ms=180_000, limit=1)] == ["k2"]
        row = s.get(RetrainingRequestRow, "k1")
        assert row is not None
        assert (row.recorded_ms, row.window_start_ms, row.window_end_ms) == (10, 60_000, 120_000)
        assert msgspec.convert(row.event, RetrainingRequest) == first
        assert event_payload(s, "k1") == msgspec.to_builtins(first)
        assert event_payload(s, "missing") is None


# ---- models and profiles ----------------------------------------------------------------------
def test_touch_model_widens_seen_times(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        touch_model(s, "churn", "3", 500, {"window_ms": 60_000})
        touch_model(s, "churn", "3", 200, None)  # out of order, no config: keeps the config
        touch_model(s, "churn", "4", 900, None)
        touch_model(s, "churn", "3", 700, None)
    with sessions() as s:
        model = s.get(Model, "churn")
        assert model is not None
        assert (model.first_seen_ms, model.last_seen_ms, model.config) == (200, 900, {"window_ms": 60_000})
        versions = s.execute(
            select(
                ModelVersion.model_version, ModelVersion.first_seen_ms, ModelVersion.last_seen_ms
            ).order_by(ModelVersion.model_version)
        ).all()
        assert [tuple(v) for v in versions] == [("3", 200, 700), ("4", 900, 900)]
    with sessions.begin() as s:
        touch_model(s, "churn", "4", 950, {"window_ms": 120_000})
    with sessions() as s:
        model = s.get(Model, "churn")
        assert model is not None and model.config == {"window_ms": 120_000}


def test_profiles_versioned_and_round_trip(sessions: sessionmaker[Session]) -> None:
    rows = [
        {"features": {"age": float(i % 37), "plan": "ab"[i % 2]}, "prediction": i % 2, "label": (i // 3) % 2}
        for i in range(200)
    ]
    old = build_profile(rows[:100], model_id="churn", model_version="3", task="binary")
    new = build_profile(rows, model_id="churn", model_version="3", task="binary")
    with sessions.begin() as s:
        assert latest_profile(s, "churn", "3") is None
        save_profile(s, old.to_dict(), "churn", "3", "train.csv", 1_000)
        save_profile(s, {"stale": True}, "churn", "3", "bootstrap", 2_000)
        save_profile(s, new.to_dict(), "churn", "3", "train.csv", 2_000)  # same version: replaces
    with sessions() as s:
        assert _count(s, ReferenceProfileRow) == 2
        loaded = latest_profile(s, "churn", "3")
        assert loaded is not None
        assert ReferenceProfile.from_dict(loaded) == new
        assert ReferenceProfile.from_dict(loaded) != old
        assert latest_profile(s, "churn", "4") is None


# ---- notification outbox ----------------------------------------------------------------------
def test_outbox_queue_once_and_due_order(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        assert enqueue_notification(s, "e1", "oncall", "pagerduty", 1_000) is True
        assert enqueue_notification(s, "e1", "oncall", "pagerduty", 1_500) is False
        assert enqueue_notification(s, "e1", "team-slack", "slack", 1_200) is True
        assert enqueue_notification(s, "e2", "oncall", "pagerduty", 900) is True
    with sessions() as s:
        assert _count(s, Notification) == 3
        assert [(n.event_id, n.subscription) for n in due_notifications(s, 1_200, 10)] == [
            ("e2", "oncall"),
            ("e1", "oncall"),
            ("e1", "team-slack"),
        ]
        assert [n.event_id for n in due_notifications(s, 999, 10)] == ["e2"]
        assert len(due_notifications(s, 10_000, 2)) == 2


def test_record_attempt_retry_then_deliver(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        enqueue_notification(s, "e1", "team-slack", "slack", 1_000)
        (n,) = due_notifications(s, 1_000, 10)
        nid = n.id
        record_attempt(
            s,
            nid,
            "retry",
            429,
            "POST https://hooks.slack.com/services/T0/B0/s3cr3tT0ken: 429",
            1_000,
            31_000,
            None,
            duration_ms=12,
        )
    with sessions() as s:
        assert due_notifications(s, 30_999, 10) == []
        (n,) = due_notifications(s, 31_000, 10)
        assert (n.status, n.attempts, n.last_error) == ("pending", 1, "POST https://hooks.slack.com/…: 429")
    with sessions.begin() as s:
        record_attempt(s, nid, "delivered", 200, None, 31_050, None, "delivered")
    with sessions() as s:
        n = s.get(Notification, nid)
        assert n is not None
        assert (n.status, n.attempts, n.delivered_ms, n.next_attempt_ms, n.last_error) == (
            "delivered",
            2,
            31_050,
            None,
            None,
        )
        assert due_notifications(s, 10**12, 10) == []
        attempts = s.scalars(select(NotificationAttempt).order_by(NotificationAttempt.id)).all()
        assert [(a.outcome, a.http_status, a.attempted_ms, a.duration_ms) for a in attempts] == [
            ("retry", 429, 1_000, 12),
            ("delivered", 200, 31_050, None),
        ]
        assert all("s3cr3t" not in (a.error or "") for a in attempts)


def test_record_attempt_dead_and_bad_arguments(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        enqueue_notification(s, "e1", "hook", "webhook", 0)
        nid = due_notifications(s, 0, 1)[0].id
        record_attempt(s, nid, "error", 503, "upstream down", 10, None, "dead")
        with pytest.raises(ValueError, match="next_attempt_ms"):
            record_attempt(s, nid, "error", 503, "x", 10, None, None)
        with pytest.raises(ValueError, match="final_status"):
            record_attempt(s, nid, "error", 503, "x", 10, None, "pending")
        with pytest.raises(LookupError):
            record_attempt(s, 10**9, "error", None, "x", 10, 20, None)
    with sessions() as s:
        n = s.get(Notification, nid)
        assert n is not None and (n.status, n.attempts, n.last_error) == ("dead", 1, "upstream down")


def test_due_notifications_skip_rows_locked_by_another_deliverer(pg_database: str) -> None:
    """PostgreSQL only: SQLite has one writer at a time, so there is nothing to share."""
    upgrade(pg_database)
    engine = make_engine(pg_database)
    sessions = session_factory(engine)
    try:
        with sessions.begin() as s:
            for event in ("e1", "e2", "e3"):
                enqueue_notification(s, event, "hook", "webhook", 0)
        with sessions.begin() as first, sessions.begin() as second:
            mine = [n.event_id for n in due_notifications(first, 0, 2)]
            theirs = [n.event_id for n in due_notifications(second, 0, 10)]
        assert (mine, theirs) == (["e1", "e2"], ["e3"])
    finally:
        engine.dispose()


# ---- checkpoints ------------------------------------------------------------------------------
def test_checkpoints(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        assert load_checkpoint(s, "join") is None
        save_checkpoint(s, "join", b"\x00\x01state", {"predictions": {"0": 41}}, 100)
        save_checkpoint(s, "join", b"\xffnewer", {"predictions": {"0": 57, "1": 3}}, 200)
        save_checkpoint(s, "merge", b"", {}, 150)
    with sessions() as s:
        cp = load_checkpoint(s, "join")
        assert cp is not None
        assert (cp.payload, cp.offsets, cp.updated_ms) == (
            b"\xffnewer",
            {"predictions": {"0": 57, "1": 3}},
            200,
        )
        merge = load_checkpoint(s, "merge")
        assert merge is not None and merge.payload == b""


def test_checkpoint_chain_appends_only_to_its_own_chain(db_url: str) -> None:
    """A delta goes onto the chain this store wrote or loaded, seq by seq; a base replaces the
    chain and its deltas in one transaction; a second writer (a worker that took the partition
    over) makes the first one's next delta fail instead of interleaving with its own."""
    upgrade(db_url)
    a, b = CheckpointStore(db_url), CheckpointStore(db_url)
    try:
        assert a.load("j") is None and a.wants_base("j")
        assert not a.save_delta("j", b"d0", 1)  # nothing to append to
        a.save("j", b"base", 10, {"t": "id1"})
        assert not a.wants_base("j")
        assert a.save_delta("j", b"d1", 11) and a.save_delta("j", b"d2", 12, {"t": "id1"})
        got = b.load("j")
        assert got is not None
        assert (got.payload, list(got.deltas), got.next_offset, dict(got.topic_ids)) == (
            b"base", [b"d1", b"d2"], 12, {"t": "id1"}
        )
        assert b.save_delta("j", b"d3", 13)  # b continues the chain it loaded
        assert not a.save_delta("j", b"x3", 13)  # a's view is stale: refused, nothing written
        assert a.wants_base("j")
        a.save("j", b"base2", 14)  # a new chain: b's next delta is refused in turn
        assert not b.save_delta("j", b"d4", 15)
        got = b.load("j")
        assert got is not None and (got.payload, list(got.deltas), got.next_offset) == (b"base2", [], 14)
    finally:
        a.close()
        b.close()


def test_checkpoint_chain_compacts_past_its_bounds(db_url: str) -> None:
    upgrade(db_url)
    store = CheckpointStore(db_url, max_deltas=3)
    try:
        store.save("j", b"0123456789", 1)
        assert store.save_delta("j", b"abcd", 2) and not store.wants_base("j")
        assert store.save_delta("j", b"efgh", 3) and not store.wants_base("j")
        assert store.save_delta("j", b"ij", 4)
        assert store.wants_base("j")  # 3 deltas (and 10 bytes of them: not yet more than the base)
        store.save("j", b"base", 5)
        assert store.save_delta("j", b"12345", 6)
        assert store.wants_base("j")  # the delta outweighs the base
    finally:
        store.close()


def test_a_checkpoint_from_before_chains_restores_and_the_next_write_is_a_base(db_url: str) -> None:
    """Revision 0005 rows are a base without a chain: they load as before, and nothing is
    appended to them (the worker that wrote them kept no chain)."""
    upgrade(db_url, "0005")
    engine = make_engine(db_url)
    try:
        old = sa_table(  # the table as 0005 has it: no chain column
            "stream_checkpoints",
            sa_column("name"), sa_column("payload", LargeBinary), sa_column("offsets", JSON),
            sa_column("updated_ms"),
        )
        with engine.begin() as c:
            c.execute(old.insert().values(
                name="j", payload=b"old state", offsets={"next_offset": 7, "topic_ids": {"t": "x"}},
                updated_ms=1,
            ))
    finally:
        engine.dispose()
    upgrade(db_url)
    store = CheckpointStore(db_url)
    try:
        got = store.load("j")
        assert got is not None
        assert (got.payload, list(got.deltas), got.next_offset, dict(got.topic_ids)) == (
            b"old state", [], 7, {"t": "x"}
        )
        assert store.wants_base("j") and not store.save_delta("j", b"d", 8)
    finally:
        store.close()


def test_downgrade_refuses_to_drop_checkpoint_deltas(db_url: str) -> None:
    upgrade(db_url)
    store = CheckpointStore(db_url)
    try:
        store.save("j", b"base", 1)
        assert store.save_delta("j", b"d1", 2)
    finally:
        store.close()
    with pytest.raises(RuntimeError, match="checkpoint delta"):
        downgrade(db_url, "0005")
    assert current_revision(db_url) == "0006"


def test_transaction_rolls_back_alert_with_its_outbox(sessions: sessionmaker[Session]) -> None:
    """The outbox guarantee: an alert and its notifications commit together or not at all."""
    event = _alert("firing", 120_000)
    with pytest.raises(RuntimeError), sessions.begin() as s:
        record_alert(s, event)
        enqueue_notification(s, event.id, "oncall", "pagerduty", 0)
        raise RuntimeError("crash before commit")
    with sessions() as s:
        assert (_count(s, AlertRow), _count(s, AlertTransition), _count(s, Notification)) == (0, 0, 0)


# ---- the model version history (revision 0004) -------------------------------------------------
def test_the_version_history_follows_alert_request_new_version_and_its_traffic(
    sessions: sessionmaker[Session], db_url: str, tmp_path
) -> None:
    """A real replay report (the golden corpus: fraud drifts and gets a retraining request),
    then a trainer's acknowledgement and a version v2 taking traffic after the request."""
    import subprocess
    import sys
    from pathlib import Path

    from driftline.platform.store import acknowledge_retraining_request, version_history
    from driftline.schemas import WindowResult, rfc3339_to_ms
    from driftline.streams.sink import ingest_report

    report = json.loads((Path(__file__).parent / "data" / "replay-golden.json").read_text())
    request = report["retraining_requests"][0]["data"]
    end = rfc3339_to_ms(request["window"]["end"])
    after = [w for w in report["windows"] if w["model_id"] == "fraud" and not w["segment"]][:2]
    v2 = []
    for i, w in enumerate(after):  # v2 takes traffic from 10 minutes after the request
        start = end + 600_000 + i * 60_000
        v2.append(
            dict(
                w,
                model_version="v2",
                window_start_ms=start,
                window_end_ms=start + 60_000,
                window_start=ms_to_rfc3339(start),
                window_end=ms_to_rfc3339(start + 60_000),
            )
        )
    with sessions.begin() as s:
        ingest_report(report, s)
        ingest_report(report, s)  # a report stored twice counts once
        ingest_report({"windows": v2}, s)
        assert acknowledge_retraining_request(s, request["idempotency_key"], "trainers", now_ms=end + 5)
        assert not acknowledge_retraining_request(s, request["idempotency_key"], "trainers", now_ms=end + 9)
    with sessions.begin() as s:
        history = {(h.model_id, h.model_version): h for h in version_history(s)}
    assert set(history) == {("fraud", "v1"), ("fraud", "v2"), ("churn", "v1")}
    v1 = history[("fraud", "v1")]
    finals = [
        w
        for w in report["windows"]
        if w["model_id"] == "fraud" and not w["segment"] and w["phase"] == "final"
    ]
    assert (v1.windows, v1.predictions, v1.labelled) == (
        len(finals),
        sum(w["prediction_count"] for w in finals),
        sum(w["labelled_count"] for w in finals),
    )
    # in the order they were first used: bootstrapping windows, then the learnt reference
    by_time = sorted(finals, key=lambda w: w["window_start_ms"])
    assert [r["reference"] for r in v1.references] == list(dict.fromkeys(w["reference"] for w in by_time))
    assert v1.references[0]["first_window_ms"] == by_time[0]["window_start_ms"]
    fired = {a["data"]["dedup_key"] for a in report["alerts"] if a["data"]["model_id"] == "fraud"}
    assert {a["dedup_key"] for a in v1.alerts} == fired
    assert v1.lineage == {"version": "v1"}
    (req,) = v1.requests
    assert (req["idempotency_key"], req["action"], req["schema_version"]) == (
        request["idempotency_key"],
        "retrain",
        "2.0",
    )
    assert req["acknowledged"] == [{"consumer": "trainers", "acknowledged_ms": end + 5, "outcome": "handled"}]
    assert (req["next_version"], req["next_version_first_seen_ms"]) == ("v2", end + 600_000)
    assert (history[("fraud", "v2")].windows, history[("fraud", "v2")].requests) == (len(v2), [])
    assert msgspec.convert(v2, list[WindowResult])  # the v2 rows were valid window results

    # the command line prints the same trail
    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "driftline", "models", *args, "--store-url", db_url],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    shown = cli("show", "fraud", "--version", "v1")
    assert (
        f"traffic     {v1.predictions} predictions, {v1.labelled} labelled, in {v1.windows} final windows"
        in shown
    )
    assert f"id {request['idempotency_key']}" in shown
    acked, seen = ms_to_rfc3339(end + 5), ms_to_rfc3339(end + 600_000)
    assert f"acknowledged: trainers at {acked}; version v2 seen from {seen}" in shown
    listed = cli("list")
    assert len(listed.splitlines()) == 4 and "fraud" in listed
    as_json = json.loads(cli("show", "fraud", "--json"))
    assert [r["model_version"] for r in as_json] == ["v1", "v2"]


def test_lineage_merges_and_a_missing_model_is_an_error(sessions: sessionmaker[Session], db_url: str) -> None:
    import subprocess
    import sys

    from driftline.platform.store import set_lineage, version_history

    with sessions.begin() as s:
        set_lineage(s, "m", "3", {"registered_model": "m-reg", "alias": None}, 1_000)
        set_lineage(s, "m", "3", {"alias": "champion"}, 2_000)
    with sessions.begin() as s:
        (h,) = version_history(s, "m", "3")
    assert h.lineage == {"registered_model": "m-reg", "alias": "champion"}
    assert (h.first_seen_ms, h.last_seen_ms) == (1_000, 2_000)
    done = subprocess.run(
        [sys.executable, "-m", "driftline", "models", "show", "nope", "--store-url", db_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "no history of nope" in done.stderr
