"""Producer strings in human-readable output: shown, never obeyed (issue 19, item 8).

A model id, version, feature name, segment or rule name may carry ESC, newlines, NUL, C1
controls or a bidi override. Every table, log line and error message must show them as visible
escapes (one row per model, no raw control byte), while the JSON outputs keep them exact.

Oracles: the expected text is written out by hand, escapes spelled as ``printable`` spells
them (``\\x1b``, ``\\n``, ``\\u202e``).
"""

from __future__ import annotations

import doctest
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from driftline.apps.status import collect_status, render_table, status_json
from driftline.platform import text
from driftline.platform.store import make_engine, record_alert, record_window_result, session_factory, upgrade
from driftline.schemas import AlertData, DriftTest, Window, WindowResult, alert_event, ms_to_rfc3339

pytestmark = pytest.mark.timeout(60)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE = 60_000
NOW = T0 + MINUTE + 5_000
#: clears the screen, then forges a second row under the first one
MODEL = "evil\x1b[2J\nforged  v9  ok\x00"
MODEL_SHOWN = "evil\\x1b[2J\\nforged  v9  ok\\x00"
VERSION = "v1\u202e2v"
VERSION_SHOWN = "v1\\u202e2v"
FEATURE = "x\x9b31m"  # a C1 CSI: one byte that starts a control sequence on many terminals
FEATURE_SHOWN = "x\\x9b31m"
RULE = "drop\rok"
RULE_SHOWN = "drop\\rok"
SEGMENT = {"channel\x07": "web\n"}
SEGMENT_SHOWN = "channel\\x07=web\\n"
#: no control character at all, in any table: C0, DEL, C1, and the bidi/format characters
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def test_printable_doctests() -> None:
    assert doctest.testmod(text).failed == 0


def _window(model: str, version: str) -> WindowResult:
    return WindowResult(
        model_id=model,
        model_version=version,
        segment={},
        window_start=ms_to_rfc3339(T0),
        window_end=ms_to_rfc3339(T0 + MINUTE),
        window_start_ms=T0,
        window_end_ms=T0 + MINUTE,
        phase="final",
        prediction_count=600,
        labelled_count=600,
        label_coverage=1.0,
        metrics={"accuracy": 0.5},
        drift=[
            DriftTest(feature=FEATURE, test="ks", statistic=0.3, p_value=0.001, threshold=0.05, drifted=True)
        ],
        dataset_drift=True,
        drift_share=None,
        reference="ref",
        data_quality={},
        online=[],
    )


def _alert(model: str, version: str, rule: str, segment: dict[str, str]) -> AlertData:
    return AlertData(
        dedup_key=f"key-{len(model)}",
        status="firing",
        rule=rule,
        metric="accuracy",
        severity="critical",
        model_id=model,
        model_version=version,
        segment=segment,
        window=Window(start=ms_to_rfc3339(T0), end=ms_to_rfc3339(T0 + MINUTE)),
        observed=0.5,
        threshold=0.8,
        comparison="<",
        starts_at=ms_to_rfc3339(T0 + MINUTE),
    )


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[tuple[str, sessionmaker[Session]]]:
    url = f"sqlite:///{tmp_path}/hostile.sqlite"
    upgrade(url)
    engine = make_engine(url)
    factory = session_factory(engine)
    with factory.begin() as s:
        record_window_result(s, _window(MODEL, VERSION))
        record_window_result(s, _window("plain", "v1"))
        record_alert(s, alert_event(_alert(MODEL, VERSION, RULE, SEGMENT)))
    try:
        yield url, factory
    finally:
        engine.dispose()


def test_status_table_prints_one_row_per_model_with_visible_escapes(
    store: tuple[str, sessionmaker[Session]],
) -> None:
    _, sessions = store
    with sessions() as s:
        statuses = collect_status(s, NOW)
    table = render_table(statuses)
    m, v = MODEL_SHOWN, VERSION_SHOWN
    assert table == (
        f"MODEL{' ' * (len(m) - 5)}  VERSION{' ' * (len(v) - 7)}  WINDOW END            PHASE  METRIC"
        "          LABELS  PREDS  FIRING  LAG  DRIFT\n"
        f"{m}  {v}  2026-01-01 00:01:00Z  final  accuracy=0.500    100%    600       1  5s   "
        f"yes ({FEATURE_SHOWN})\n"
        f"plain{' ' * (len(m) - 5)}  v1{' ' * (len(v) - 2)}  2026-01-01 00:01:00Z  final  accuracy=0.500"
        f"    100%    600       0  5s   yes ({FEATURE_SHOWN})\n"
        "\n"
        "FIRING ALERTS\n"
        f"MODEL{' ' * (len(m) - 5)}  RULE      SEVERITY  SEGMENT{' ' * (len(SEGMENT_SHOWN) - 7)}  SINCE\n"
        f"{m}  {RULE_SHOWN}  critical  {SEGMENT_SHOWN}  2026-01-01 00:01:00Z\n"
    )
    assert not RAW_CONTROL.search(table)
    # the JSON is for machines: exact names, escaped by JSON itself
    document = status_json(statuses, NOW)
    assert [mo["model_id"] for mo in document["models"]] == [MODEL, "plain"]
    assert document["models"][0]["firing_alerts"][0]["segment"] == SEGMENT
    assert not RAW_CONTROL.search(json.dumps(document))
