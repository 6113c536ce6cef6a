"""``driftline status --watch``: the live table on a terminal, plain refreshes in a pipe, from
the same store contents and the same collect_status as ``driftline status``."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from driftline.apps.status import collect_status, render_table
from driftline.apps.watch import watch
from driftline.platform.store import make_engine, record_alert, record_window_result, session_factory, upgrade
from driftline.schemas import AlertData, Window, WindowResult, alert_event, ms_to_rfc3339

T0 = 1_767_225_600_000
MINUTE = 60_000
NOW = T0 + 3 * MINUTE


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[tuple[str, sessionmaker[Session]]]:
    url = f"sqlite:///{tmp_path}/watch.sqlite"
    upgrade(url)
    engine = make_engine(url)
    factory = session_factory(engine)
    with factory.begin() as s:
        record_window_result(
            s,
            WindowResult(
                model_id="fraud\x1b[2J", model_version="v2", segment={}, window_start=ms_to_rfc3339(T0),
                window_end=ms_to_rfc3339(T0 + MINUTE), window_start_ms=T0, window_end_ms=T0 + MINUTE,
                phase="final", prediction_count=400, labelled_count=300, label_coverage=0.75,
                metrics={"accuracy": 0.61}, drift=[], dataset_drift=True, drift_share=None, reference="r",
                data_quality={},
            ),
        )  # fmt: skip
        record_alert(
            s,
            alert_event(
                AlertData(
                    dedup_key="k1", status="firing", rule="accuracy-floor", metric="accuracy",
                    severity="critical", model_id="fraud\x1b[2J", model_version="v2",
                    segment={"channel": "web"},
                    window=Window(start=ms_to_rfc3339(T0), end=ms_to_rfc3339(T0 + MINUTE)), observed=0.61,
                    threshold=0.7, comparison="<", starts_at=ms_to_rfc3339(T0 + MINUTE),
                )
            ),
        )  # fmt: skip
    try:
        yield url, factory
    finally:
        engine.dispose()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_refreshes_are_the_status_table(store: tuple[str, sessionmaker[Session]]) -> None:
    _, sessions = store
    out = io.StringIO()
    ticks = iter([NOW, NOW + 2000])
    assert watch(sessions, interval_s=0.01, count=2, stream=out, clock=lambda: next(ticks)) == 0
    with sessions() as s:
        table = render_table(collect_status(s, NOW))
    text = out.getvalue()
    assert text == (
        f"-- driftline status at 2026-01-01 00:03:00Z --\n{table}\n"
        f"-- driftline status at 2026-01-01 00:03:02Z --\n{render_table(collect_status(s, NOW + 2000))}\n"
    )
    assert "\x1b" not in text and "fraud\\x1b[2J" in text and "accuracy-floor" in text


def test_on_a_terminal_the_tables_are_redrawn_in_place(
    store: tuple[str, sessionmaker[Session]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, sessions = store
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: no column is cut
    out = _Terminal()
    watch(sessions, interval_s=0.01, count=2, stream=out, clock=lambda: NOW)
    drawn = out.getvalue()
    assert "\x1b[" in drawn  # cursor movement: redrawn in place
    assert "\x1b[2J" not in drawn  # the model id's ESC is shown escaped, never obeyed
    for cell in ("fraud\\x1b[2J", "accuracy=0.610", "75%", "accuracy-floor", "channel=web", "firing alerts"):
        assert cell in drawn
    assert drawn.count("driftline status at") == 2  # the first draw and one refresh


def test_the_command_watches_and_stops_after_count(store: tuple[str, sessionmaker[Session]]) -> None:
    url, _ = store
    run = subprocess.run(
        [sys.executable, "-m", "driftline.apps.cli", "status", "--store-url", url, "--watch", "--interval",
         "0.1", "--count", "2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("-- driftline status at") == 2 and "\x1b" not in run.stdout
