"""Producer strings in human-readable output: shown, never obeyed (issue 19, item 8).

A model id, version, feature name, segment or rule name may carry ESC, newlines, NUL, C1
controls or a bidi override. Every table, log line, error message and plain-text notification
must show them as visible escapes (one row per model, no raw control byte), Slack's text must
not mention or link what a name spells, and the HTML report must keep ``<script>`` as text;
the JSON outputs and the machine fields of notifications keep the names exact.

Oracles: the expected text is written out by hand, escapes spelled as ``printable`` spells
them (``\\x1b``, ``\\n``, ``\\u202e``).
"""

from __future__ import annotations

import doctest
import html
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import msgspec
import pytest
from fakes import sample_alert
from fakes.pagerduty import FakePagerDuty
from fakes.slack import FakeSlack, slack_error, special_sequences
from fakes.webhook import FakeAlertmanager
from sqlalchemy.orm import Session, sessionmaker

import driftline.apps.cli
from driftline.alerting.notifiers import AlertmanagerNotifier, PagerDutyNotifier, SlackNotifier, deliver
from driftline.alerting.secrets import Secret
from driftline.apps.status import collect_status, render_table, status_json
from driftline.platform import text
from driftline.platform.store import (
    make_engine,
    record_alert,
    record_retraining_request,
    record_window_result,
    session_factory,
    upgrade,
)
from driftline.schemas import (
    AlertData,
    DriftTest,
    RetrainingRequestData,
    Window,
    WindowResult,
    alert_event,
    ms_to_rfc3339,
    retraining_request,
)
from driftline.schemas.results import SegmentContribution

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
ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"  # 32 chars, as PagerDuty requires
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


def test_status_worst_segments_show_hostile_segment_values_escaped(tmp_path: Path) -> None:
    """The segment ranking names producer values (``dimension=value``): the table shows them as
    escapes, one row per segment; the JSON keeps them exact."""
    (dimension, value), = SEGMENT.items()
    hostile = SegmentContribution(
        dimension=dimension, value=value + "\x1b[2Jforged", metric="accuracy", observed=0.5,
        baseline=0.9, labelled_share=0.5, contribution=0.2, low=0.1, high=0.3, share_of_change=1.0,
        significant=True, support=300,
    )
    url = f"sqlite:///{tmp_path}/ranked.sqlite"
    upgrade(url)
    engine = make_engine(url)
    try:
        factory = session_factory(engine)
        with factory.begin() as s:
            ranked = msgspec.structs.replace(_window("plain", "v1"), segments_ranked=[hostile])
            record_window_result(s, ranked)
        with factory() as s:
            statuses = collect_status(s, NOW)
        table = render_table(statuses)
        shown = SEGMENT_SHOWN + "\\x1b[2Jforged"
        assert table.endswith(
            "WORST SEGMENTS (latest final window)\n"
            f"MODEL  WINDOW END            SEGMENT{' ' * (len(shown) - 7)}  METRIC    OBSERVED  BASELINE"
            "  CONTRIBUTION  SIGNIFICANT\n"
            f"plain  2026-01-01 00:01:00Z  {shown}  accuracy     0.500     0.900         0.200  yes\n"
        )
        assert not RAW_CONTROL.search(table)
        segment = status_json(statuses, NOW)["models"][0]["worst_segments"]["segments"][0]
        assert (segment["dimension"], segment["value"]) == (dimension, value + "\x1b[2Jforged")
    finally:
        engine.dispose()


# ---- the other tables and error messages of the command line -----------------------------------
def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = driftline.apps.cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _request(model: str, version: str, reason: str) -> RetrainingRequestData:
    window = Window(start=ms_to_rfc3339(T0), end=ms_to_rfc3339(T0 + MINUTE))
    return RetrainingRequestData(
        idempotency_key="k" * 32,
        model_id=model,
        model_version=version,
        reason=reason,
        evidence={},
        window=window,
        suggested_training_range=window,
        requested_at=ms_to_rfc3339(T0 + MINUTE),
    )


def test_alerts_and_retraining_lists_print_one_row_per_record_with_visible_escapes(
    store: tuple[str, sessionmaker[Session]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, sessions = store
    with sessions.begin() as s:
        record_retraining_request(s, retraining_request(_request(MODEL, VERSION, RULE)), now_ms=T0)
    code, out = run(capsys, "alerts", "list", "--store-url", url)
    m, v = MODEL_SHOWN, VERSION_SHOWN
    assert (code, out) == (
        0,
        f"LAST_CHANGED              STATUS  SEVERITY  MODEL{' ' * (len(m) - 5)}  VERSION     RULE      "
        f"SEGMENT{' ' * (len(SEGMENT_SHOWN) - 7)}  DEDUP_KEY\n"
        f"2026-01-01T00:01:00.000Z  firing  critical  {m}  {v}  {RULE_SHOWN}  {SEGMENT_SHOWN}  "
        f"key-{len(MODEL)}\n",
    )
    code, out = run(capsys, "retraining", "list", "--store-url", url)
    assert (code, out) == (
        0,
        f"WINDOW_END                MODEL{' ' * (len(m) - 5)}  VERSION     REASON    IDEMPOTENCY_KEY\n"
        f"2026-01-01T00:01:00.000Z  {m}  {v}  {RULE_SHOWN}  {'k' * 32}\n",
    )
    # --json stays exact
    code, out = run(capsys, "alerts", "list", "--store-url", url, "--json")
    assert [(r["model_id"], r["model_version"], r["rule"], r["segment"]) for r in json.loads(out)] == [
        (MODEL, VERSION, RULE, SEGMENT)
    ]


def test_subscriptions_list_and_an_error_naming_them_show_escapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESC_HOOK", "https://hooks.example/x")
    config = tmp_path / "driftline.yaml"
    name = "team\x1b]0;pwned\x07"
    entry = {
        "name": name,
        "kind": "webhook",
        "matchers": ['model="a\x1bb\u202e"'],
        "settings": {"url": "env:ESC_HOOK"},
    }
    config.write_text(json.dumps({"subscriptions": [entry]}), encoding="utf-8")  # JSON is YAML
    code, out = run(capsys, "--config", str(config), "subscriptions", "list")
    assert (code, out) == (
        0,
        "NAME                  KIND     MATCHERS              GROUP_WAIT_S  RATE_PER_S\n"
        'team\\x1b]0;pwned\\x07  webhook  model="a\\x1bb\\u202e"  0\n',
    )
    code, out = run(capsys, "--config", str(config), "subscriptions", "test", "nobody")
    assert (code, out) == (
        2,
        "driftline: error: no subscription named 'nobody' (have: team\\x1b]0;pwned\\x07)\n",
    )


def test_baseline_show_prints_one_line_per_feature_with_visible_escapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"prediction_id": f"r{i}", "features": {"amount\x1b[8m": float(i), "chan\nnel": value},
         "prediction": 1, "segments": {"re\x00gion": "eu"}}
        for i, value in enumerate(["web\u202e", "web\u202e", "app"])
    ]  # fmt: skip
    data, out = tmp_path / "ref.jsonl", tmp_path / "baseline.json"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    argv = [
        "baseline",
        "create",
        "--model",
        MODEL,
        "--version",
        VERSION,
        "--data",
        str(data),
        "--out",
        str(out),
    ]
    code, said = run(capsys, *argv)
    assert (code, said) == (
        0,
        f"baseline of {MODEL_SHOWN} version {VERSION_SHOWN}: 3 rows, 2 features, 1 segment profile "
        f"-> {out}\n",
    )
    code, shown = run(capsys, "baseline", "show", "--model", MODEL, "--file", str(out))
    assert (code, shown) == (
        0,
        f"baseline of {MODEL_SHOWN} version {VERSION_SHOWN}: 3 rows\n"
        "  feature        kind         n  missing  summary\n"
        "  amount\\x1b[8m  numeric      3  0        mean 1, std 0.816497, range [0, 2]\n"
        "                                          edges 0 0.2 0.4 0.6 0.8 1 1.2 1.4 1.6 1.8 2\n"
        "  chan\\nnel      categorical  3  0        2 categories: web\\u202e 2, app 1\n"
        "  (prediction)   categorical  3  0        1 category: 1 3\n"
        "baseline metrics: none (the rows need both prediction and label)\n"
        "segments: re\\x00gion=eu (3 rows)\n",
    )
    # an error message built from input is escaped too
    empty = tmp_path / "no\x1b[2Jne.jsonl"
    empty.write_text("", encoding="utf-8")
    code, said = run(capsys, "baseline", "create", "--model", "m", "--data", str(empty), "--out", str(out))
    assert (code, said) == (2, f"driftline: error: {tmp_path}/no\\x1b[2Jne.jsonl holds no rows\n")


# ---- the worker's log line and the demo console -------------------------------------------------
def test_the_worker_window_log_line_shows_escapes(caplog: pytest.LogCaptureFixture) -> None:
    from driftline.apps.cli import _log_window

    with caplog.at_level(logging.INFO, logger="driftline.worker"):
        _log_window(SimpleNamespace(result=_window(MODEL, VERSION), alerts=[]))
    assert caplog.messages == [
        f"window {MODEL_SHOWN} {VERSION_SHOWN} [2026-01-01T00:00:00.000Z, 2026-01-01T00:01:00.000Z) final: "
        f"600 predictions; 100% labelled; accuracy 0.500; drifted: {FEATURE_SHOWN}"
    ]


def test_the_worker_start_up_line_shows_configured_model_ids_escaped() -> None:
    from driftline.apps.cli import _summary
    from driftline.platform.config import config_from_mapping
    from driftline.platform.kafka import TopicNames, settings_for

    config = config_from_mapping({"app_id": "a", "models": {MODEL: {}}})
    app = SimpleNamespace(
        config=config,
        topics=TopicNames.from_config(config),
        settings=settings_for(config, {}),
        catalog=SimpleNamespace(stored=None),
    )
    args = SimpleNamespace(no_checkpoints=True, metrics_port=0, health_port=0, stall_after=120.0)
    line = _summary(app, args)
    assert f"; models {MODEL_SHOWN}; other models" in line and not RAW_CONTROL.search(line)


def test_the_demo_console_shows_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    from driftline.apps.demo import _Console

    console = _Console(T0, T0, T0)
    console.on_evaluation(SimpleNamespace(result=_window(MODEL, VERSION)))  # type: ignore[arg-type]
    console.on_alert(msgspec.json.encode(alert_event(_alert(MODEL, VERSION, RULE, SEGMENT))))
    console.on_request(retraining_request(_request(MODEL, VERSION, RULE)))
    assert capsys.readouterr().out == (
        "  window 00:00:00-00:01:00  predictions   600  labelled 100%  accuracy 0.500  "
        f"drift: {FEATURE_SHOWN}\n"
        f"  >> ALERT FIRING   critical {RULE_SHOWN} [{SEGMENT_SHOWN}] window 00:00:00  observed 0.500 vs "
        "threshold 0.800\n"
        f"  >> RETRAINING REQUESTED for {MODEL_SHOWN} {VERSION_SHOWN} ({RULE_SHOWN}); train on "
        "2026-01-01T00:00:00 .. 2026-01-01T00:01:00\n"
    )


# ---- the HTML report ------------------------------------------------------------------------------
SCRIPT_MODEL = "<script>alert('model')</script>"
SCRIPT_FEATURE = "<script>alert('feature')</script>"
SCRIPT_RULE = "</title><script>alert('rule')</script>"


def test_the_html_report_escapes_script_in_model_feature_rule_and_segment(tmp_path: Path) -> None:
    from driftline.apps.htmlreport import build_report

    url = f"sqlite:///{tmp_path}/html.sqlite"
    upgrade(url)
    engine = make_engine(url)
    hostile = msgspec.structs.replace(
        _window(SCRIPT_MODEL, "v1\"><script>alert('version')</script>"),
        drift=[DriftTest(feature=SCRIPT_FEATURE, test="ks", statistic=0.3, p_value=0.001, threshold=0.05,
                         drifted=True)],
    )  # fmt: skip
    try:
        with session_factory(engine).begin() as s:
            record_window_result(s, hostile)
            segment = {"<b>": "<script>alert('segment')</script>"}
            record_alert(s, alert_event(_alert(SCRIPT_MODEL, "v1", SCRIPT_RULE, segment)))
        with session_factory(engine)() as s:
            page = build_report(s, SCRIPT_MODEL, now_ms=NOW)
    finally:
        engine.dispose()
    # the page's two script elements (chart data as JSON, then plotly.js and the page's code) are
    # the only ones; every producer string is text: escaped in markup, \u003c-escaped in the JSON
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert "<b>" not in page
    assert f"<h1>driftline report: {html.escape(SCRIPT_MODEL)}</h1>" in page
    assert f"<td>{html.escape(SCRIPT_FEATURE)}</td>" in page  # the drift tests table
    assert f"<td>{html.escape(SCRIPT_RULE)}</td>" in page  # the alerts table
    assert html.escape("<b>=<script>alert('segment')</script>") in page
    assert html.escape("v1\"><script>alert('version')</script>") in page


# ---- notifications ----------------------------------------------------------------------------------
#: what a producer would put in a model id to page a whole channel and phish it
SLACK_BAIT = "churn <!channel> <https://evil.example|click here> &amp;"
SLACK_BAIT_SENT = "churn &lt;!channel&gt; &lt;https://evil.example|click here&gt; &amp;amp;"


def test_slack_fallback_text_escapes_mentions_and_links_like_the_blocks(
    slack: FakeSlack, client: httpx.Client
) -> None:
    alert = sample_alert(model_id=SLACK_BAIT, rule="drop\x1b[2J")
    assert deliver(SlackNotifier(Secret(slack.webhook_url)), [alert], client).delivered
    message = slack.requests[0].json()
    assert message["text"] == (
        f"[FIRING critical] drop\\x1b[2J on {SLACK_BAIT_SENT} v3 (region=eu): accuracy 0.71 &lt; 0.8"
    )
    mrkdwn = [message["text"]] + [
        t["text"]
        for b in message["blocks"]
        for t in [b.get("text") or {}, *b.get("fields", []), *b.get("elements", [])]
        if t.get("type") == "mrkdwn"
    ]
    assert [special_sequences(t) for t in mrkdwn] == [[]] * len(mrkdwn)
    assert not any(RAW_CONTROL.search(t) for t in mrkdwn)
    # a header is plain_text, which Slack does not parse: shown as is, controls escaped
    header = message["blocks"][0]["text"]["text"]
    assert header == f":red_circle: FIRING (critical): drop\\x1b[2J on {SLACK_BAIT} v3"


def test_slack_group_fallback_escapes_every_line(slack: FakeSlack, client: httpx.Client) -> None:
    alerts = [sample_alert(model_id=SLACK_BAIT, key="a" * 32), sample_alert(model_id="fraud\n", key="b" * 32)]
    assert deliver(SlackNotifier(Secret(slack.webhook_url)), alerts, client).delivered
    assert slack.requests[0].json()["text"].split("\n") == [
        f"2 firing: {SLACK_BAIT_SENT}, fraud\\n",
        f"[FIRING critical] accuracy-drop on {SLACK_BAIT_SENT} v3 (region=eu): accuracy 0.71 &lt; 0.8",
        "[FIRING critical] accuracy-drop on fraud\\n v3 (region=eu): accuracy 0.71 &lt; 0.8",
    ]


def test_pagerduty_plain_text_fields_escape_controls_and_details_stay_exact(
    pagerduty: FakePagerDuty, client: httpx.Client
) -> None:
    alert = sample_alert(model_id=MODEL, rule=RULE, segment=SEGMENT)
    notifier = PagerDutyNotifier(Secret(ROUTING_KEY), url=pagerduty.enqueue_url)
    assert deliver(notifier, [alert], client).delivered
    payload = pagerduty.requests[0].json()["payload"]
    assert payload["summary"] == (
        f"[FIRING critical] {RULE_SHOWN} on {MODEL_SHOWN} v3 ({SEGMENT_SHOWN}): accuracy 0.71 < 0.8"
    )
    assert (payload["component"], payload["group"], payload["class"]) == (MODEL_SHOWN, "v3", RULE_SHOWN)
    assert payload["custom_details"]["segment"] == SEGMENT


def test_alertmanager_annotations_escape_controls_and_labels_stay_exact(client: httpx.Client) -> None:
    alert = sample_alert(model_id=MODEL, rule=RULE, segment=SEGMENT)
    with FakeAlertmanager() as fake:
        assert deliver(AlertmanagerNotifier(url=fake.base_url), [alert], client).delivered
    (posted,) = fake.requests[0].json()
    assert posted["annotations"]["summary"] == (
        f"[FIRING critical] {RULE_SHOWN} on {MODEL_SHOWN} v3 ({SEGMENT_SHOWN}): accuracy 0.71 < 0.8"
    )
    assert not RAW_CONTROL.search(posted["annotations"]["description"])
    assert MODEL_SHOWN in posted["annotations"]["description"]
    # labels are for matching (routes, silences): the exact names, under legal label names
    assert posted["labels"] == {
        "alertname": RULE,
        "model": MODEL,
        "version": "v3",
        "severity": "critical",
        "metric": "accuracy",
        "channel_": "web\n",
    }


def test_a_destination_reason_with_controls_is_escaped(slack: FakeSlack, client: httpx.Client) -> None:
    slack.script([slack_error(400, "no\x1b[2J\x9bway\u202e")])
    outcome = deliver(SlackNotifier(Secret(slack.webhook_url)), [sample_alert()], client)
    assert (outcome.delivered, outcome.reason) == (False, "HTTP 400: no\\x1b[2J\\x9bway\\u202e")
