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

import msgspec
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
from driftline.schemas.results import OnlineDetection, SegmentContribution

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
    ranked: tuple[SegmentContribution, ...] = (),
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
        segments_ranked=list(ranked),
    )


def _contribution(
    segment: str, observed: float | None, contribution: float | None, significant: bool, support: int
) -> SegmentContribution:
    dimension, value = segment.split("=")
    return SegmentContribution(
        dimension=dimension, value=value, metric="accuracy", observed=observed, baseline=0.85,
        labelled_share=support / 600, contribution=contribution,
        low=None if contribution is None else contribution - 0.05,
        high=None if contribution is None else contribution + 0.05,
        share_of_change=None if contribution is None else contribution / 0.2375,
        significant=significant, support=support,
    )


#: fraud's latest final window's ranking, worst first as detectors/segments.py stores it; only
#: the first three are shown
RANKED = (
    _contribution("region=EU", 0.4, 0.225, True, 300),
    _contribution("plan=pro", 0.7, 0.045, False, 180),
    _contribution("channel=web", None, None, False, 0),
    _contribution("region=US", 0.84, 0.001, False, 120),
)
#: an older final window's ranking, which status must not show
OLDER = _contribution("region=APAC", 0.5, 0.1, True, 90)


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
            _window("fraud", T0, "final", {"accuracy": 0.9}, ranked=(OLDER,)),
            _window("fraud", T0 + MINUTE, "provisional", {"accuracy": 0.7}, coverage=0.5),
            _window("fraud", T0 + MINUTE, "final", {"accuracy": 0.6125, "f1": None}, online=DETECTIONS,
                    ranked=RANKED),
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

WORST SEGMENTS (latest final window)
MODEL  WINDOW END            SEGMENT      METRIC    OBSERVED  BASELINE  CONTRIBUTION  SIGNIFICANT
fraud  2026-01-01 00:02:00Z  region=EU    accuracy     0.400     0.850         0.225  yes
fraud  2026-01-01 00:02:00Z  plan=pro     accuracy     0.700     0.850         0.045  no
fraud  2026-01-01 00:02:00Z  channel=web  accuracy         -     0.850             -  no
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
            # the first three of the newest final window's ranking (not the older window's APAC)
            "worst_segments": {
                "window_end": "2026-01-01T00:02:00.000Z",
                "window_end_ms": T0 + 2 * MINUTE,
                "model_version": "v1",
                "segments": [
                    {"dimension": "region", "value": "EU", "metric": "accuracy", "observed": 0.4,
                     "baseline": 0.85, "labelled_share": 0.5, "contribution": 0.225,
                     "low": pytest.approx(0.175), "high": pytest.approx(0.275),
                     "share_of_change": pytest.approx(0.225 / 0.2375), "significant": True,
                     "support": 300},
                    msgspec.to_builtins(RANKED[1]),
                    {"dimension": "channel", "value": "web", "metric": "accuracy", "observed": None,
                     "baseline": 0.85, "labelled_share": 0.0, "contribution": None, "low": None,
                     "high": None, "share_of_change": None, "significant": False, "support": 0},
                ],
            },
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
        {"model_id": "idle", "last_window": None, "lag_ms": None, "worst_segments": None,
         "firing_alerts": []},
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
            "worst_segments": None,  # no final window yet: the ranking needs labels
            "firing_alerts": [],
        },
    ],
}


def test_json(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        document = status_json(collect_status(s, NOW), NOW)
    assert document == EXPECTED_JSON
    assert json.loads(json.dumps(document, allow_nan=False)) == EXPECTED_JSON


def test_worst_segments_come_from_the_latest_final_window(tmp_path: Path) -> None:
    """A provisional window newer than the final one is the ``last_window``, but the ranking
    (it needs labels) is the final one's; a final window with no ranking (stored before
    revision 0005, or nothing labelled) says so with an empty list and no table section."""
    url = f"sqlite:///{tmp_path}/final.sqlite"
    upgrade(url)
    engine = make_engine(url)
    try:
        factory = session_factory(engine)
        with factory.begin() as s:
            record_window_result(s, _window("fraud", T0, "final", {"accuracy": 0.7}, ranked=RANKED[3:]))
            record_window_result(s, _window("fraud", T0 + MINUTE, "provisional", {"accuracy": 0.6}))
            record_window_result(s, _window("plain", T0, "final", {"accuracy": 0.9}))
        with factory() as s:
            statuses = collect_status(s, NOW)
        document = status_json(statuses, NOW)
        fraud, plain = document["models"]
        assert fraud["last_window"]["phase"] == "provisional"
        assert fraud["worst_segments"] == {
            "window_end": "2026-01-01T00:01:00.000Z",
            "window_end_ms": T0 + MINUTE,
            "model_version": "v1",
            "segments": [msgspec.to_builtins(RANKED[3])],
        }
        assert plain["worst_segments"]["segments"] == []
        table = render_table(statuses)
        assert table.endswith(
            "WORST SEGMENTS (latest final window)\n"
            "MODEL  WINDOW END            SEGMENT    METRIC    OBSERVED  BASELINE  CONTRIBUTION"
            "  SIGNIFICANT\n"
            "fraud  2026-01-01 00:01:00Z  region=US  accuracy     0.840     0.850         0.001  no\n"
        )
    finally:
        engine.dispose()


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
