"""``driftline status`` from a store filled with known data: the exact table, the exact JSON,
and the same JSON over HTTP on loopback.

Oracles: the table and the JSON are written out by hand from the rows inserted below; the
HTTP answer must equal :func:`status_json` of the same store.
"""

from __future__ import annotations

import argparse
import doctest
import json
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from driftline.apps.commands import ops_cli
from driftline.apps.status import collect_status, make_status_server, render_table, status_json
from driftline.platform.store import (
    make_engine,
    record_alert,
    record_window_result,
    session_factory,
    touch_model,
    upgrade,
)
from driftline.schemas import AlertData, DriftTest, Window, WindowResult, alert_event, ms_to_rfc3339
from driftline.schemas.results import OnlineDetection

pytestmark = pytest.mark.timeout(60)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE = 60_000
NOW = T0 + 2 * MINUTE + 5_000


def _window(
    model: str,
    start_ms: int,
    phase: str,
    metrics: dict[str, float | None],
    *,
    version: str = "v1",
    segment: dict[str, str] | None = None,
    drifted: tuple[bool, bool] | None = (True, False),
    coverage: float | None = 1.0,
    online: tuple[OnlineDetection, ...] = (),
) -> WindowResult:
    drift = (
        []
        if drifted is None
        else [
            DriftTest(
                feature="x2", test="ks", statistic=0.01, p_value=0.9, threshold=0.05, drifted=drifted[1]
            ),
            DriftTest(
                feature="x1", test="ks", statistic=0.3, p_value=0.001, threshold=0.05, drifted=drifted[0]
            ),
        ]
    )
    return WindowResult(
        model_id=model,
        model_version=version,
        segment=segment or {},
        window_start=ms_to_rfc3339(start_ms),
        window_end=ms_to_rfc3339(start_ms + MINUTE),
        window_start_ms=start_ms,
        window_end_ms=start_ms + MINUTE,
        phase=phase,  # type: ignore[arg-type]
        prediction_count=600,
        labelled_count=round(600 * (coverage or 0)),
        label_coverage=coverage,
        metrics=metrics,
        drift=drift,
        dataset_drift=None if drifted is None else any(drifted),
        drift_share=None,
        reference="ref",
        data_quality={},
        online=list(online),
    )


def _alert(model: str, rule: str, status: str, end_ms: int, fired_ms: int) -> None:
    return alert_event(  # type: ignore[return-value]
        AlertData(
            dedup_key=f"{model}-{rule}",
            status=status,  # type: ignore[arg-type]
            rule=rule,
            metric="accuracy",
            severity="critical" if rule == "accuracy-low" else "warning",
            model_id=model,
            model_version="v1",
            segment={"channel": "web"} if rule == "drift" else {},
            window=Window(start=ms_to_rfc3339(end_ms - MINUTE), end=ms_to_rfc3339(end_ms)),
            observed=0.6,
            threshold=0.8,
            comparison="<",
            starts_at=ms_to_rfc3339(fired_ms),
        )
    )


@pytest.fixture()
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path}/status.sqlite"
    upgrade(url)
    engine = make_engine(url)
    factory = session_factory(engine)
    with factory.begin() as s:
        # fraud: the final row of the newest whole-model window wins over its provisional row,
        # over older windows and over a newer per-segment window
        for r in (
            _window("fraud", T0, "final", {"accuracy": 0.9}),
            _window("fraud", T0 + MINUTE, "provisional", {"accuracy": 0.7}, coverage=0.5),
            _window("fraud", T0 + MINUTE, "final", {"accuracy": 0.6125, "f1": None}, online=DETECTIONS),
            _window("fraud", T0 + 2 * MINUTE, "final", {"accuracy": 0.1}, segment={"channel": "web"}),
            # prices: regression, only provisional so far, no drift tests, NaN-free rmse
            _window("prices", T0, "provisional", {"rmse": 12.5, "mae": 9.0}, drifted=None, coverage=None),
        ):
            record_window_result(s, r)
        touch_model(s, "fraud", "v1", T0, None)
        touch_model(s, "idle", "v0", T0, None)  # seen, but no window yet
        record_alert(s, _alert("fraud", "accuracy-low", "firing", T0 + 2 * MINUTE, T0 + MINUTE))  # type: ignore[arg-type]
        record_alert(s, _alert("fraud", "drift", "firing", T0 + 2 * MINUTE, T0 + 2 * MINUTE))  # type: ignore[arg-type]
        record_alert(s, _alert("prices", "accuracy-low", "firing", T0 + MINUTE, T0 + MINUTE))  # type: ignore[arg-type]
        record_alert(s, _alert("prices", "accuracy-low", "resolved", T0 + 2 * MINUTE, T0 + MINUTE))  # type: ignore[arg-type]
    try:
        yield factory
    finally:
        engine.dispose()


DETECTIONS = (  # stored in another order than they happened
    OnlineDetection(detector="ddm", signal="error", time=ms_to_rfc3339(T0 + 110_000), time_ms=T0 + 110_000),
    OnlineDetection(detector="adwin", signal="error", time=ms_to_rfc3339(T0 + 95_000), time_ms=T0 + 95_000),
)

EXPECTED_TABLE = """\
MODEL   VERSION  WINDOW END            PHASE        METRIC          LABELS  PREDS  FIRING  LAG   DRIFT
fraud   v1       2026-01-01 00:02:00Z  final        accuracy=0.613    100%    600       2  5s    yes (x1); \
online adwin/error,ddm/error
idle    -        -                     -            -                    -      -       0  -     -
prices  v1       2026-01-01 00:01:00Z  provisional  rmse=12.500          -    600       0  1m5s  -

FIRING ALERTS
MODEL  RULE          SEVERITY  SEGMENT      SINCE
fraud  accuracy-low  critical  -            2026-01-01 00:01:00Z
fraud  drift         warning   channel=web  2026-01-01 00:02:00Z
"""


def test_table(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        assert render_table(collect_status(s, NOW)) == EXPECTED_TABLE


def test_empty_store_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/empty.sqlite"
    upgrade(url)
    engine = make_engine(url)
    try:
        with session_factory(engine)() as s:
            statuses = collect_status(s, NOW)
        assert statuses == []
        assert render_table(statuses) == "no models in the store yet (is the history sink running?)\n"
        assert status_json(statuses, NOW) == {
            "generated_at": "2026-01-01T00:02:05.000Z",
            "generated_at_ms": NOW,
            "firing_alerts": 0,
            "models": [],
        }
    finally:
        engine.dispose()


EXPECTED_JSON = {
    "generated_at": "2026-01-01T00:02:05.000Z",
    "generated_at_ms": NOW,
    "firing_alerts": 2,
    "models": [
        {
            "model_id": "fraud",
            "last_window": {
                "start": "2026-01-01T00:01:00.000Z",
                "end": "2026-01-01T00:02:00.000Z",
                "start_ms": T0 + MINUTE,
                "end_ms": T0 + 2 * MINUTE,
                "phase": "final",
                "model_version": "v1",
                "metric": {"name": "accuracy", "value": 0.6125},
                "label_coverage": 1.0,
                "prediction_count": 600,
                "labelled_count": 600,
                "dataset_drift": True,
                "drifted_features": ["x1"],
                "online_detections": [  # in the order they happened
                    {"detector": "adwin", "signal": "error", "time": "2026-01-01T00:01:35.000Z",
                     "time_ms": T0 + 95_000},
                    {"detector": "ddm", "signal": "error", "time": "2026-01-01T00:01:50.000Z",
                     "time_ms": T0 + 110_000},
                ],
            },
            "lag_ms": 5_000,
            "firing_alerts": [
                {
                    "dedup_key": "fraud-accuracy-low",
                    "rule": "accuracy-low",
                    "severity": "critical",
                    "segment": {},
                    "since": "2026-01-01T00:01:00.000Z",
                    "since_ms": T0 + MINUTE,
                },
                {
                    "dedup_key": "fraud-drift",
                    "rule": "drift",
                    "severity": "warning",
                    "segment": {"channel": "web"},
                    "since": "2026-01-01T00:02:00.000Z",
                    "since_ms": T0 + 2 * MINUTE,
                },
            ],
        },
        {"model_id": "idle", "last_window": None, "lag_ms": None, "firing_alerts": []},
        {
            "model_id": "prices",
            "last_window": {
                "start": "2026-01-01T00:00:00.000Z",
                "end": "2026-01-01T00:01:00.000Z",
                "start_ms": T0,
                "end_ms": T0 + MINUTE,
                "phase": "provisional",
                "model_version": "v1",
                "metric": {"name": "rmse", "value": 12.5},
                "label_coverage": None,
                "prediction_count": 600,
                "labelled_count": 0,
                "dataset_drift": None,
                "drifted_features": [],
                "online_detections": [],
            },
            "lag_ms": 65_000,
            "firing_alerts": [],
        },
    ],
}


def test_json(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        document = status_json(collect_status(s, NOW), NOW)
    assert document == EXPECTED_JSON
    assert json.loads(json.dumps(document, allow_nan=False)) == EXPECTED_JSON


def _get(url: str) -> tuple[int, str, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], json.loads(exc.read())


def test_http_endpoint_on_loopback(sessions: sessionmaker[Session]) -> None:
    server = make_status_server(sessions, port=0)
    host, port = server.server_address[:2]
    assert host == "127.0.0.1"
    server.start()
    try:
        base = f"http://127.0.0.1:{port}"
        status, content_type, body = _get(f"{base}/status")
        assert (status, content_type) == (200, "application/json")
        # the server stamps its own wall clock: compare everything but the clock-derived fields
        now = body["generated_at_ms"]
        assert isinstance(now, int)
        with sessions() as s:
            assert body == status_json(collect_status(s, now), now)
        assert [m["model_id"] for m in body["models"]] == ["fraud", "idle", "prices"]  # type: ignore[index]
        assert body["models"][0]["lag_ms"] == now - (T0 + 2 * MINUTE)  # type: ignore[index]
        assert _get(f"{base}/healthz") == (200, "application/json", {"status": "ok"})
        assert _get(f"{base}/nope")[:2] == (404, "application/json")
    finally:
        server.shutdown()
        server.server_close()


def test_healthz_reports_an_unreachable_store(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/missing-dir/never.sqlite")  # parent does not exist
    server = make_status_server(session_factory(engine), port=0)
    server.start()
    try:
        port = server.server_address[1]
        assert _get(f"http://127.0.0.1:{port}/healthz") == (
            503,
            "application/json",
            {"status": "store unavailable"},
        )
        assert _get(f"http://127.0.0.1:{port}/status") == (
            503,
            "application/json",
            {"error": "store unavailable"},
        )
    finally:
        server.shutdown()
        server.server_close()
        engine.dispose()


# ---- the command -------------------------------------------------------------------------------
def _cli(argv: list[str]) -> int:
    """The sub-commands on a parser shaped like ``driftline.apps.cli`` (top-level ``--config``)."""
    parser = argparse.ArgumentParser(prog="driftline")
    parser.add_argument("--config")
    ops_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture()
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops_cli, "_now_ms", lambda: NOW)


def test_status_command_table_and_json(
    sessions: sessionmaker[Session], frozen_now: None, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(sessions.kw["bind"].url)
    assert _cli(["status", "--store-url", url]) == 0
    assert capsys.readouterr().out == EXPECTED_TABLE
    assert _cli(["status", "--store-url", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == EXPECTED_JSON


def test_status_command_reads_the_store_url_from_the_environment(
    sessions: sessionmaker[Session],
    frozen_now: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DRIFTLINE_CONFIG", raising=False)
    monkeypatch.setenv("DRIFTLINE_STORE_URL", str(sessions.kw["bind"].url))
    assert _cli(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == EXPECTED_JSON


def test_status_command_refuses_missing_and_unmigrated_stores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.sqlite"
    assert _cli(["status", "--store-url", f"sqlite:///{missing}"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "driftline db upgrade" in err
    assert not missing.exists()  # a status command never creates a store
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    assert _cli(["status", "--store-url", f"sqlite:///{empty}"]) == 2
    assert "no driftline schema" in capsys.readouterr().err


def test_history_config_flag_does_not_erase_the_global_one() -> None:
    parser = argparse.ArgumentParser(prog="driftline")
    parser.add_argument("--config")
    ops_cli.register(parser.add_subparsers(dest="command", required=True))
    assert parser.parse_args(["--config", "a.yaml", "history"]).config == "a.yaml"
    assert parser.parse_args(["history", "--config", "b.yaml"]).config == "b.yaml"


def test_module_doctests() -> None:
    import driftline.apps.commands.common
    import driftline.apps.status

    for module in (driftline.apps.status, driftline.apps.commands.common):
        result = doctest.testmod(module)
        assert (result.failed, result.attempted > 0) == (0, True)
