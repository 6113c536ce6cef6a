"""Contract tests for driftline.schemas: exact reason codes, batch isolation, time normalisation,
CloudEvents determinism, and the committed JSON Schema files (checked with the independent
``jsonschema`` validator, not with msgspec itself)."""

from __future__ import annotations

import calendar
import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.schemas import (
    AlertData,
    AlertEvent,
    GroundTruthEvent,
    PredictionEvent,
    Rejection,
    RetrainingRequest,
    RetrainingRequestData,
    Window,
    alert_event,
    decode_alert,
    decode_ground_truth,
    decode_predictions,
    decode_retraining_request,
    encode,
    encode_batch,
    ms_to_rfc3339,
    retraining_request,
    rfc3339_to_ms,
)
from driftline.schemas import jsonschema as schema_gen

REPO = Path(__file__).resolve().parents[1]
JSON_DIR = REPO / "schemas" / "json"
DOCS = REPO / "docs" / "contracts.md"

REASONS = {
    "too_large",
    "invalid_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "unsupported_schema_version",
    "wrong_kind",
    "empty_batch",
}

TS_MS = 1_795_554_234_123  # 2026-11-24T21:03:54.123Z, cross-checked against calendar.timegm below


def pred(pid: str = "p1", **over: object) -> dict:
    event: dict = {
        "prediction_id": pid,
        "model_id": "churn",
        "model_version": "v3",
        "timestamp": TS_MS,
        "features": {"age": 42, "income": 1234.5, "plan": "gold", "active": True, "missing": None},
        "prediction": "yes",
        "scores": {"yes": 0.8, "no": 0.2},
    }
    event.update(over)
    return event


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def only_rejection(data: bytes, decoder=decode_predictions) -> Rejection:
    out = decoder(data)
    assert out.events == []
    assert len(out.rejected) == 1
    return out.rejected[0]


# --------------------------------------------------------------------------- decoding: happy paths


def test_single_event_decodes_with_exact_values():
    out = decode_predictions(dumps(pred()))
    assert out.batch is False and out.rejected == []
    (e,) = out.events
    assert e == PredictionEvent(
        prediction_id="p1",
        model_id="churn",
        model_version="v3",
        timestamp=TS_MS,
        features={"age": 42, "income": 1234.5, "plan": "gold", "active": True, "missing": None},
        prediction="yes",
        scores={"yes": 0.8, "no": 0.2},
    )
    assert type(e.features["age"]) is int and type(e.features["income"]) is float
    assert e.schema_version == "1.0" and e.segments is None and e.score is None


def test_defaults_apply_when_optional_fields_are_absent():
    (e,) = decode_predictions(
        b'{"prediction_id":"a","model_id":"m","timestamp":1700000000000,"prediction":1}'
    ).events
    assert (e.model_version, e.features, e.scores, e.score, e.segments, e.schema_version) == (
        "unversioned",
        {},
        None,
        None,
        None,
        "1.0",
    )


def test_rfc3339_and_epoch_ms_timestamps_normalise_to_the_same_int():
    spellings = [
        TS_MS,
        "2026-11-24T21:03:54.123Z",
        "2026-11-24T23:03:54.123+02:00",
        "2026-11-24T16:03:54.123-05:00",
        "2026-11-24T21:03:54.123999Z",  # sub-ms digits are floored, never rounded up
        "2026-11-24t21:03:54.123z",
    ]
    got = [decode_predictions(dumps(pred(timestamp=t))).events[0].timestamp for t in spellings]
    oracle = calendar.timegm((2026, 11, 24, 21, 3, 54)) * 1000 + 123
    assert got == [oracle] * len(spellings)
    assert all(type(t) is int for t in got)
    (gt,) = decode_ground_truth(
        dumps({"prediction_id": "p", "model_id": "m", "label": 1, "timestamp": "2026-11-24T21:03:54.123Z"})
    ).events
    assert gt.timestamp == oracle


def test_timestamp_normalised_on_python_construction_too():
    e = PredictionEvent(prediction_id="p", model_id="m", timestamp="2026-11-24T21:03:54.123Z", prediction=1)
    assert e.timestamp == TS_MS


def test_unknown_fields_are_ignored():
    plain = decode_predictions(dumps(pred())).events
    extra = decode_predictions(dumps(pred(new_field={"nested": [1, 2]}, another="x"))).events
    assert extra == plain
    batch = decode_predictions(dumps({"events": [pred(zzz=1)], "producer": "svc-a", "schema_version": "1.0"}))
    assert batch.events == plain and batch.rejected == []


def test_any_minor_1x_schema_version_is_accepted():
    out = decode_predictions(dumps({"schema_version": "1.7", "events": [pred(schema_version="1.12")]}))
    assert out.rejected == [] and out.events[0].schema_version == "1.12"


def test_batch_decodes_in_order_with_kind():
    events = [pred(f"p{i}") for i in range(5)]
    out = decode_predictions(dumps({"schema_version": "1.0", "kind": "predictions", "events": events}))
    assert out.batch is True and out.rejected == []
    assert [e.prediction_id for e in out.events] == ["p0", "p1", "p2", "p3", "p4"]


def test_single_event_with_a_feature_named_events_is_not_a_batch():
    out = decode_predictions(dumps(pred(features={"events": 3})))
    assert out.batch is False and out.rejected == [] and out.events[0].features == {"events": 3}


def test_ground_truth_single_and_batch():
    gt = {"prediction_id": "p1", "model_id": "churn", "label": "yes", "timestamp": TS_MS}
    (single,) = decode_ground_truth(dumps(gt)).events
    assert single == GroundTruthEvent(prediction_id="p1", model_id="churn", label="yes", timestamp=TS_MS)
    assert single.model_version is None
    out = decode_ground_truth(dumps({"kind": "ground_truth", "events": [gt, {**gt, "prediction_id": "p2"}]}))
    assert [e.prediction_id for e in out.events] == ["p1", "p2"] and out.batch is True


# --------------------------------------------------------------------------- decoding: reason codes


def _bad_member_batch() -> tuple[bytes, list[bytes]]:
    members = [dumps(pred("a")), dumps(pred("b")), b'{"model_id":"churn","prediction":1}', dumps(pred("d"))]
    data = b'{"schema_version":"1.0","kind":"predictions","events":[' + b", ".join(members) + b"]}"
    return data, members


def test_batch_with_one_bad_member_keeps_the_good_ones_in_order():
    data, members = _bad_member_batch()
    out = decode_predictions(data)
    assert out.batch is True
    assert [e.prediction_id for e in out.events] == ["a", "b", "d"]
    assert out.rejected == [
        Rejection(
            reason="missing_field",
            detail="Object missing required field `prediction_id` - at `$.events[2]`",
            index=2,
            raw=members[2],
        )
    ]


@pytest.mark.parametrize(
    ("data", "reason", "index"),
    [
        (b'{"prediction_id":"p"', "invalid_json", None),  # truncated
        (b"", "invalid_json", None),
        (dumps(pred())[:-1] + b',"x":"\xff\xfe"}', "invalid_json", None),  # invalid UTF-8, ignored field
        (dumps(pred(model_id="cafX")).replace(b"cafX", b"caf\xe9"), "invalid_json", None),  # latin-1 é
        (dumps(pred()).replace(b"1234.5", b"NaN"), "invalid_json", None),
        (dumps(pred()).replace(b"1234.5", b"Infinity"), "invalid_json", None),
        (dumps(pred()).replace(b"1234.5", b"-Infinity"), "invalid_json", None),
        (dumps(pred()) + b" {}", "invalid_json", None),  # trailing data
        (b"[1, 2]", "not_an_object", None),
        (b'"an event"', "not_an_object", None),
        (b"null", "not_an_object", None),
        (dumps({k: v for k, v in pred().items() if k != "prediction"}), "missing_field", None),
        (dumps(pred(model_id=7)), "wrong_type", None),
        (dumps(pred(timestamp=1.7e12)), "wrong_type", None),
        (dumps(pred(timestamp=True)), "wrong_type", None),
        (dumps(pred(features=[1, 2])), "wrong_type", None),
        (dumps(pred(features={"x": [1]})), "wrong_type", None),
        (dumps(pred(schema_version=1)), "wrong_type", None),
        (dumps(pred(prediction_id="")), "invalid_value", None),
        (dumps(pred(prediction_id="x" * 257)), "invalid_value", None),
        (dumps(pred(model_id="m" * 129)), "invalid_value", None),
        (dumps(pred(timestamp=1_700_000_000)), "invalid_value", None),  # seconds, not ms
        (dumps(pred(timestamp="2101-01-01T00:00:00Z")), "invalid_value", None),
        (dumps(pred(timestamp="2026-11-24")), "invalid_value", None),  # no time, no offset
        (dumps(pred(timestamp="2026-11-24T21:03:54")), "invalid_value", None),  # naive
        (dumps(pred(timestamp="2026-02-30T00:00:00Z")), "invalid_value", None),
        (dumps(pred(scores={"yes": 1.5})), "invalid_value", None),
        (dumps(pred(segments={f"s{i}": "v" for i in range(17)})), "invalid_value", None),
        (dumps(pred(features={f"f{i}": i for i in range(2001)})), "invalid_value", None),
        (dumps(pred(features={"f" * 257: 1})), "invalid_value", None),
        (dumps(pred()).replace(b"1234.5", b"1e999"), "invalid_value", None),  # would be inf
        (dumps(pred()).replace(b"1234.5", b"9" * 30), "invalid_value", None),  # beyond int64
        (dumps(pred(schema_version="2.0")), "unsupported_schema_version", None),
        (dumps(pred(schema_version="1.0\n")), "unsupported_schema_version", None),
        (dumps({"schema_version": "2.0", "events": [pred()]}), "unsupported_schema_version", None),
        (dumps({"kind": "ground_truth", "events": [pred()]}), "wrong_kind", None),
        (dumps({"kind": 1, "events": [pred()]}), "wrong_kind", None),
        (dumps({"events": []}), "empty_batch", None),
        (dumps({"events": {"a": 1}}), "wrong_type", None),
        (dumps({"events": [pred(), 5]}), "not_an_object", 1),
        (dumps({"events": [pred(), pred(schema_version="3.1")]}), "unsupported_schema_version", 1),
    ],
)
def test_reason_codes(data: bytes, reason: str, index: int | None):
    out = decode_predictions(data)
    assert [(r.reason, r.index) for r in out.rejected] == [(reason, index)]
    rejection = out.rejected[0]
    assert len(rejection.detail) <= 500
    assert re.search(r" - at `\$[^`]*`$", rejection.detail), rejection.detail
    if index is None:
        assert rejection.raw == data and out.events == []
    else:
        assert len(out.events) == 1


def test_too_large_is_checked_before_parsing():
    big = dumps({"events": [pred(f"p{i}") for i in range(10_000)]})
    assert 2_000_000 < len(big) < 3_000_000
    r = only_rejection(big)
    assert (r.reason, r.index, r.raw) == ("too_large", None, big)
    assert only_rejection(b"x" * 2_000_001).reason == "too_large"  # not parsed, so not invalid_json
    assert decode_predictions(big, max_bytes=4_000_000).rejected == []
    assert (
        only_rejection(dumps(pred()), decoder=lambda d: decode_predictions(d, max_bytes=10)).reason
        == "too_large"
    )


def test_invalid_utf8_inside_a_batch_member_rejects_only_that_member():
    bad = dumps(pred("b")).replace(b'"gold"', b'"g\xc3\x28ld"')
    data = b'{"events":[' + dumps(pred("a")) + b"," + bad + b"]}"
    out = decode_predictions(data)
    assert [e.prediction_id for e in out.events] == ["a"]
    assert [(r.reason, r.index, r.raw) for r in out.rejected] == [("invalid_json", 1, bad)]


def test_invalid_utf8_in_the_envelope_rejects_the_whole_message():
    data = b'{"note":"\xff","events":[' + dumps(pred("a")) + b"]}"
    out = decode_predictions(data)
    assert out.events == [] and [(r.reason, r.index) for r in out.rejected] == [("invalid_json", None)]


def test_ground_truth_wrong_kind_and_missing_label():
    r = only_rejection(dumps({"kind": "predictions", "events": [pred()]}), decoder=decode_ground_truth)
    assert r.reason == "wrong_kind" and r.detail == "Invalid enum value - at `$.kind`"
    r = only_rejection(
        dumps({"prediction_id": "p", "model_id": "m", "timestamp": TS_MS}), decoder=decode_ground_truth
    )
    assert (r.reason, r.detail) == ("missing_field", "Object missing required field `label` - at `$`")


def test_details_never_echo_payload_values():
    secret = "s3cr3t-value"
    cases = [
        dumps({"kind": secret, "events": [pred()]}),
        dumps(pred(timestamp=secret)),
        dumps(pred(timestamp="2026-02-30T00:00:00Z")),
        dumps(pred(schema_version=f"9.{secret}")),
        dumps(pred(prediction_id=secret * 30)),
        dumps(pred(features={secret: [secret]})),
    ]
    for data in cases:
        (r,) = decode_predictions(data).rejected
        assert secret not in r.detail and "2026-02-30" not in r.detail, r.detail


def test_exact_details_for_common_faults():
    def detail(obj: object) -> str:
        return only_rejection(dumps(obj)).detail

    assert detail(pred(model_id=7)) == "Expected `str`, got `int` - at `$.model_id`"
    assert detail(pred(scores={"yes": 2.0})) == "Expected `float` <= 1.0 - at `$.scores[...]`"
    assert detail(pred(schema_version="2.0")) == (
        "Unsupported schema_version (this reader accepts 1.x) - at `$.schema_version`"
    )
    assert detail({"events": []}) == "Expected `array` of length >= 1 - at `$.events`"
    out = decode_predictions(dumps({"events": [pred(), pred(model_id=7)]}))
    assert out.rejected[0].detail == "Expected `str`, got `int` - at `$.events[1].model_id`"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=20,
        ).map(dumps),
        st.lists(
            st.fixed_dictionaries({}, optional={k: st.just(v) for k, v in pred().items()}), max_size=4
        ).map(lambda evs: dumps({"events": evs})),
    )
)
def test_decode_never_raises_and_accounts_for_every_member(data: bytes):
    for decoder in (decode_predictions, decode_ground_truth):
        out = decoder(data)
        assert out.events or out.rejected
        assert all(r.reason in REASONS for r in out.rejected)
        if out.batch and all(r.index is not None for r in out.rejected):
            assert len(out.events) + len(out.rejected) == len(json.loads(data)["events"])


# --------------------------------------------------------------------------- encoding


def test_encode_batch_round_trips():
    events = decode_predictions(dumps({"events": [pred("a"), pred("b", segments={"region": "eu"})]})).events
    data = encode_batch(events, "predictions")
    assert json.loads(data)["kind"] == "predictions" and json.loads(data)["schema_version"] == "1.0"
    again = decode_predictions(data)
    assert again.events == events and again.batch is True
    gts = [GroundTruthEvent(prediction_id="a", model_id="m", label=0, timestamp=TS_MS)]
    assert decode_ground_truth(encode_batch(gts, "ground_truth")).events == gts
    assert decode_predictions(encode(events[1])).events == [events[1]]


def test_encode_batch_refuses_what_readers_would_reject():
    e = decode_predictions(dumps(pred())).events
    gt = [GroundTruthEvent(prediction_id="a", model_id="m", label=0, timestamp=TS_MS)]
    with pytest.raises(ValueError, match="kind"):
        encode_batch(e, "labels")
    with pytest.raises(ValueError, match="at least one"):
        encode_batch([], "predictions")
    with pytest.raises(TypeError):
        encode_batch(gt, "predictions")


# --------------------------------------------------------------------------- time format


def test_time_format_exact_values():
    assert ms_to_rfc3339(TS_MS) == "2026-11-24T21:03:54.123Z"
    assert ms_to_rfc3339(946_684_800_000) == "2000-01-01T00:00:00.000Z"
    assert ms_to_rfc3339(-1) == "1969-12-31T23:59:59.999Z"
    assert rfc3339_to_ms("2000-01-01T01:00:00+01:00") == 946_684_800_000
    assert rfc3339_to_ms("2026-11-24 21:03:54.5Z") == calendar.timegm((2026, 11, 24, 21, 3, 54)) * 1000 + 500
    for bad in ["2026-11-24", "2026-11-24T21:03:54", "20261124T210354Z", "2026-11-24T21:03:54Z\n", "x"]:
        with pytest.raises(ValueError):
            rfc3339_to_ms(bad)


@given(st.integers(min_value=946_684_800_000, max_value=4_102_444_800_000))
@settings(max_examples=200, deadline=None)
def test_time_format_round_trips_against_datetime(ms: int):
    s = ms_to_rfc3339(ms)
    assert rfc3339_to_ms(s) == ms
    oracle = datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"
    assert s == oracle


# --------------------------------------------------------------------------- CloudEvents


def alert_data(status: str = "firing", end: str = "2026-11-24T21:05:00.000Z") -> AlertData:
    return AlertData(
        dedup_key="churn/v3/accuracy/region=eu",
        status=status,
        rule="accuracy-drop",
        metric="accuracy",
        severity="critical",
        model_id="churn",
        model_version="v3",
        segment={"region": "eu"},
        window=Window(start="2026-11-24T21:00:00.000Z", end=end),
        observed=0.71,
        threshold=0.8,
        comparison="<",
        evidence={"n_labelled": 512, "baseline": 0.86},
        links={"dashboard": "http://127.0.0.1:3000/d/churn"},
        starts_at="2026-11-24T21:05:00.000Z",
    )


def retrain_data() -> RetrainingRequestData:
    return RetrainingRequestData(
        idempotency_key="churn-v3-2026-11-24T21:05:00.000Z",
        model_id="churn",
        model_version="v3",
        reason="accuracy below 0.8 for 3 windows",
        evidence={"accuracy": [0.79, 0.75, 0.71], "psi": {"income": 0.31}},
        window=Window(start="2026-11-24T21:00:00.000Z", end="2026-11-24T21:05:00.000Z"),
        suggested_training_range=Window(start="2026-10-24T21:05:00.000Z", end="2026-11-24T21:05:00.000Z"),
        requested_at="2026-11-24T21:05:01.250Z",
    )


def test_alert_event_envelope_and_deterministic_id():
    ev = alert_event(alert_data())
    oracle = hashlib.sha256(b"churn/v3/accuracy/region=eu|firing|2026-11-24T21:05:00.000Z").hexdigest()[:32]
    assert ev.id == oracle and re.fullmatch(r"[0-9a-f]{32}", ev.id)
    assert (ev.specversion, ev.type, ev.subject, ev.time, ev.source, ev.datacontenttype) == (
        "1.0",
        "io.driftline.alert.firing",
        "churn",
        "2026-11-24T21:05:00.000Z",
        "/driftline/worker",
        "application/json",
    )
    assert encode(alert_event(alert_data())) == encode(ev)  # a replay is byte-identical
    resolved = alert_event(alert_data("resolved"), source="/driftline/worker-2")
    assert resolved.type == "io.driftline.alert.resolved" and resolved.source == "/driftline/worker-2"
    assert len({ev.id, resolved.id, alert_event(alert_data(end="2026-11-24T21:10:00.000Z")).id}) == 3


def test_alert_round_trip_and_validation():
    ev = alert_event(alert_data())
    data = encode(ev)
    assert decode_alert(data) == ev
    wire = json.loads(data)
    assert wire["data"]["window"] == {"start": "2026-11-24T21:00:00.000Z", "end": "2026-11-24T21:05:00.000Z"}
    for broken in [
        {**wire, "type": "io.driftline.alert.resolved"},  # disagrees with data.status
        {**wire, "specversion": "0.3"},
        {**wire, "time": "2026-11-24T21:05:00Z"},  # not millisecond precision
        {k: v for k, v in wire.items() if k != "id"},
    ]:
        with pytest.raises(msgspec.ValidationError):
            decode_alert(dumps(broken))
    with pytest.raises(msgspec.ValidationError):
        decode_alert(b"{not json")
    with pytest.raises(msgspec.ValidationError):
        decode_alert(b'{"id":"\xff"}')


def test_unset_optional_attributes_are_absent_and_legacy_nulls_still_read():
    # the CloudEvents SDKs refuse "dataschema": null; events written before this rule carry it
    pairs = (
        (alert_event(alert_data()), decode_alert),
        (retraining_request(retrain_data()), decode_retraining_request),
    )
    for event, decode in pairs:
        wire = json.loads(encode(event))
        assert "dataschema" not in wire
        assert decode(dumps({**wire, "dataschema": None})) == event
        assert encode(decode(dumps({**wire, "dataschema": None}))) == encode(event)
        schema = "https://example.com/alert.json"
        assert decode(dumps({**wire, "dataschema": schema})).dataschema == schema
        with pytest.raises(msgspec.ValidationError):
            decode(dumps({**wire, "dataschema": ""}))


def test_retraining_request_id_is_the_idempotency_key():
    rr = retraining_request(retrain_data())
    assert rr.id == "churn-v3-2026-11-24T21:05:00.000Z"
    assert (rr.type, rr.subject, rr.time) == (
        "io.driftline.retraining.requested",
        "churn",
        "2026-11-24T21:05:00.000Z",
    )
    assert decode_retraining_request(encode(rr)) == rr
    with pytest.raises(msgspec.ValidationError):
        decode_retraining_request(dumps({**json.loads(encode(rr)), "type": "io.driftline.alert.firing"}))


# --------------------------------------------------------------------------- JSON Schema files


def test_committed_json_schemas_equal_freshly_generated_ones():
    generated = schema_gen.generate()
    assert sorted(generated) == sorted(p.name for p in JSON_DIR.glob("*.schema.json"))
    for name, text in generated.items():
        assert (JSON_DIR / name).read_text(encoding="utf-8") == text, f"{name} is stale: regenerate"
    assert schema_gen.main(["--check"]) == 0


def test_check_mode_detects_drift(tmp_path: Path):
    assert schema_gen.main(["--dir", str(tmp_path)]) == 0
    assert schema_gen.main(["--check", "--dir", str(tmp_path)]) == 0
    path = tmp_path / "prediction-event.schema.json"
    path.write_text(path.read_text().replace('"maxLength": 256', '"maxLength": 999'))
    assert schema_gen.main(["--check", "--dir", str(tmp_path)]) == 1
    (tmp_path / "alert-event.schema.json").unlink()
    assert schema_gen.stale_files(tmp_path) == ["prediction-event.schema.json", "alert-event.schema.json"]


# The odd ones are spelled with escapes so that a formatter cannot tidy them away.
class FourSpaces(msgspec.Struct):
    """First line of the contract,
    second line."""

    n: int


class NextLineDeeper(msgspec.Struct):
    """\n        First line of the contract,\n        second line.\n\n"""

    n: int


class TabsAndTrailingBlanks(msgspec.Struct):
    """First line of the contract,  \n\t\tsecond line.\t\n\n"""

    n: int


class Undocumented(msgspec.Struct):
    n: int


@pytest.mark.parametrize("struct", [FourSpaces, NextLineDeeper, TabsAndTrailingBlanks])
def test_a_struct_description_is_its_cleaned_docstring_however_it_is_indented(struct: type):
    schema = schema_gen.schema_for(struct, "t")
    assert schema["$defs"][struct.__name__]["description"] == "First line of the contract,\n    second line."


def test_an_undocumented_struct_has_no_description():
    assert "description" not in schema_gen.schema_for(Undocumented, "t")["$defs"]["Undocumented"]


def _restyle_descriptions(node, restyle):
    """``node`` with every description rewritten by ``restyle``."""
    if isinstance(node, list):
        return [_restyle_descriptions(v, restyle) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _restyle_descriptions(v, restyle) for k, v in node.items()}
    if "description" in out:
        out["description"] = restyle(out["description"])
    return out


def _flush(schema):  # msgspec 0.23: continuation lines lose the docstring's indent
    return _restyle_descriptions(schema, lambda text: "\n".join(line.lstrip() for line in text.split("\n")))


def _tabbed(schema):  # a hypothetical release: tabs and trailing blanks
    return _restyle_descriptions(schema, lambda text: text.replace("\n", "\n\t ") + " \n")


def _undocumented(schema):  # a hypothetical release that leaves struct docstrings out
    for definition in schema["$defs"].values():
        definition.pop("description", None)
    return schema


@pytest.mark.parametrize("restyle", [_flush, _tabbed, _undocumented])
def test_generated_files_do_not_depend_on_how_msgspec_renders_docstrings(monkeypatch, restyle):
    real_schema = msgspec.json.schema
    monkeypatch.setattr(msgspec.json, "schema", lambda struct: restyle(real_schema(struct)))
    for name, text in schema_gen.generate().items():
        assert (JSON_DIR / name).read_text(encoding="utf-8") == text, f"{name} follows msgspec's style"


def test_description_docstring_examples():
    import doctest

    result = doctest.testmod(schema_gen)
    assert (result.attempted, result.failed) == (2, 0)


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((JSON_DIR / name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_example_payloads_validate_against_the_json_schema_files():
    gt = {"prediction_id": "p1", "model_id": "churn", "label": "yes", "timestamp": "2026-11-24T21:03:54.123Z"}
    valid = {
        "prediction-event.schema.json": [pred(), pred(timestamp="2026-11-24T21:03:54.123+02:00", extra=1)],
        "ground-truth-event.schema.json": [gt],
        "prediction-batch.schema.json": [
            json.loads(encode_batch(decode_predictions(dumps(pred())).events, "predictions"))
        ],
        "ground-truth-batch.schema.json": [{"kind": "ground_truth", "events": [gt]}],
        "alert-event.schema.json": [json.loads(encode(alert_event(alert_data("resolved"))))],
        "retraining-request.schema.json": [json.loads(encode(retraining_request(retrain_data())))],
    }
    for name, examples in valid.items():
        v = validator(name)
        for example in examples:
            assert list(v.iter_errors(example)) == [], name


def test_json_schema_files_reject_what_the_decoder_rejects():
    # Each invalid example is rejected by both the JSON Schema (other languages) and the decoder.
    invalid = {
        "prediction-event.schema.json": [
            pred(schema_version="2.0"),
            pred(prediction_id=""),
            pred(timestamp=1_700_000_000),
            pred(timestamp="2026-11-24T21:03:54"),
            pred(scores={"yes": 1.5}),
            pred(features={"f" * 257: 1}),
            {k: v for k, v in pred().items() if k != "model_id"},
        ],
        "prediction-batch.schema.json": [{"events": []}, {"kind": "ground_truth", "events": [pred()]}],
    }
    for name, examples in invalid.items():
        v = validator(name)
        for example in examples:
            assert list(v.iter_errors(example)), example
            assert decode_predictions(dumps(example)).events == []


def test_docs_examples_validate_and_decode():
    # Every ```json block in docs/contracts.md is preceded by <!-- schema: NAME --> naming its schema.
    blocks = re.findall(r"<!-- schema: (\S+) -->\s*```json\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 5
    decoders = {
        "prediction-event.schema.json": decode_predictions,
        "prediction-batch.schema.json": decode_predictions,
        "ground-truth-event.schema.json": decode_ground_truth,
        "ground-truth-batch.schema.json": decode_ground_truth,
        "alert-event.schema.json": decode_alert,
        "retraining-request.schema.json": decode_retraining_request,
    }
    for name, text in blocks:
        assert list(validator(name).iter_errors(json.loads(text))) == [], name
        decoded = decoders[name](text.encode())
        if isinstance(decoded, AlertEvent):
            assert decoded.id == alert_event(decoded.data).id  # the documented id is the real one
        elif isinstance(decoded, RetrainingRequest):
            assert decoded.id == decoded.data.idempotency_key
        else:
            assert decoded.rejected == [] and decoded.events, name


def test_timefmt_docstring_examples():
    import doctest

    from driftline.schemas import timefmt

    result = doctest.testmod(timefmt)
    assert (result.attempted, result.failed) == (4, 0)
