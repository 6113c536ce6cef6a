"""The workflow-engine recipes under examples/ (docs/retraining.md, "Recipes").

Each recipe's expressions are evaluated against a real emitted request (the golden replay's:
a worker wrote it), every field they reference must exist in the version 2 JSON Schema, and
the Airflow trigger's message function runs on real Kafka messages from the embedded broker,
in both CloudEvents content modes. Argo, Airflow and Kubeflow themselves are not installed:
what is checked is what driftline hands them.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import jinja2
import msgspec
import pytest
import yaml
from confluent_kafka import Producer
from conftest import consume_all
from golden_replay import GOLDEN

from driftline.platform.kafka import confluent_config, ensure_topics
from driftline.schemas import decode_retraining_request, kafka_record
from driftline.schemas import jsonschema as schema_gen

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCHEMA = json.loads(schema_gen.generate()["retraining-request.schema.json"])


def _event() -> dict[str, Any]:
    event = json.loads(GOLDEN.read_text())["retraining_requests"][0]
    assert event["data"]["schema_version"] == "2.0"
    return event


def _in_schema(path: list[str], *, parameters: dict[str, str]) -> bool:
    """Whether ``path`` (from the event's top) names a field of the version 2 request; a key
    under ``data.parameters`` must be one driftline emits."""
    if path[:2] == ["data", "parameters"] and len(path) == 3:
        return path[2] in parameters
    node: dict[str, Any] = SCHEMA
    for key in path:
        while True:
            if "$ref" in node:
                node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[-1]]
            elif "anyOf" in node:
                node = next(n for n in node["anyOf"] if n.get("type") != "null")
            else:
                break
        props = node.get("properties", {})
        if key not in props:
            return False
        node = props[key]
    return True


def _gjson(document: Any, path: str) -> Any:
    """A gjson path of plain keys and indices, as Argo Events dataKey/filters use them."""
    for part in path.split("."):
        document = document[int(part)] if isinstance(document, list) else document[part]
    return document


# ---- Argo Events -------------------------------------------------------------------------------
def test_argo_sensor_passes_the_request_and_starts_the_workflow_with_its_parameters() -> None:
    event = _event()
    params = event["data"]["parameters"]
    source = yaml.safe_load((EXAMPLES / "argo" / "eventsource.yaml").read_text())
    sensor = yaml.safe_load((EXAMPLES / "argo" / "sensor.yaml").read_text())
    assert (source["kind"], sensor["kind"]) == ("EventSource", "Sensor")
    kafka = source["spec"]["kafka"]["retraining"]
    assert kafka["topic"].endswith("retraining-requests") and kafka["jsonBody"] is True
    (dep,) = sensor["spec"]["dependencies"]
    assert (dep["eventSourceName"], dep["eventName"]) == (source["metadata"]["name"], "retraining")
    argo_event = {"body": event}  # an Argo Events Kafka event: the JSON value under "body"
    for f in dep["filters"]["data"]:
        assert _in_schema(f["path"].split(".")[1:], parameters=params), f
        assert _gjson(argo_event, f["path"]) in f["value"], f  # the real request passes
    (trigger,) = sensor["spec"]["triggers"]
    workflow = trigger["template"]["argoWorkflow"]
    arguments = workflow["source"]["resource"]["spec"]["arguments"]["parameters"]
    assert len(workflow["parameters"]) == len(arguments)
    for p in workflow["parameters"]:
        key = p["src"]["dataKey"]
        path = key.split(".")[1:]
        assert _in_schema(path, parameters=params), key
        value = _gjson(argo_event, key)
        assert isinstance(value, str)  # Argo parameters are strings
        index = int(re.fullmatch(r"spec\.arguments\.parameters\.(\d+)\.value", p["dest"]).group(1))
        assert arguments[index]["name"] == path[-1]  # each argument gets the parameter of its name
        assert value == params[path[-1]]


# ---- Airflow -----------------------------------------------------------------------------------
def _messages_module():
    sys.path.insert(0, str(EXAMPLES / "airflow"))
    try:
        spec = importlib.util.spec_from_file_location(
            "driftline_messages", EXAMPLES / "airflow" / "driftline_messages.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.pop(0)


def _dag_templates() -> tuple[str, dict[str, str], str]:
    """REQUEST, ENV and the trigger's apply_function of the DAG file, read without Airflow."""
    tree = ast.parse((EXAMPLES / "airflow" / "driftline_retraining_dag.py").read_text())
    names: dict[str, Any] = {}
    apply_function = ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in ("REQUEST", "TOPIC", "ENV"):
                names[name] = eval(compile(ast.Expression(node.value), "dag", "eval"), {}, dict(names))
        if isinstance(node, ast.keyword) and node.arg == "apply_function":
            apply_function = node.value.value  # type: ignore[attr-defined]
    return names["REQUEST"], names["ENV"], apply_function


def test_airflow_trigger_keeps_v2_requests_and_the_dag_templates_render(
    kafka_settings, unique_prefix: str
) -> None:
    event = _event()
    request = decode_retraining_request(json.dumps(event).encode())
    v1 = msgspec.structs.replace(
        request,
        id="1" * 32,
        data=msgspec.structs.replace(
            request.data, idempotency_key="1" * 32, schema_version="1.0", parameters={}
        ),
    )
    investigate = msgspec.structs.replace(
        request,
        id="2" * 32,
        data=msgspec.structs.replace(request.data, idempotency_key="2" * 32, action="investigate"),
    )
    topic = f"{unique_prefix}retraining-requests"
    ensure_topics(kafka_settings, {topic: 1})
    producer = Producer(confluent_config(kafka_settings))
    for r, mode in (
        (request, "structured"),
        (request, "binary"),
        (v1, "structured"),
        (investigate, "binary"),
    ):
        value, headers = kafka_record(r, mode)
        producer.produce(topic, value=value, headers=list(headers))
    producer.produce(topic, value=b"not a cloudevent")
    assert producer.flush(10) == 0
    messages = consume_all(kafka_settings, topic)
    assert len(messages) == 5

    REQUEST, ENV, apply_function = _dag_templates()
    module = _messages_module()
    assert apply_function == f"{module.__name__}.retraining_request"
    payloads = [module.retraining_request(m) for m in messages]
    assert payloads[0] == payloads[1] == event  # both content modes give the request as emitted
    assert payloads[2:] == [None, None, None]  # v1, not a training action, not a request

    class AssetEvent:  # what Airflow hands a run: triggering_asset_events {asset: [events]}
        extra = {"payload": payloads[0]}

    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    context = {"triggering_asset_events": {"driftline_retraining_requests": [AssetEvent()]}}
    rendered = {k: env.from_string(v).render(context) for k, v in ENV.items()}
    params = event["data"]["parameters"]
    assert rendered == {
        "REQUEST_ID": params["request_id"],
        "MODEL_ID": params["model_id"],
        "MODEL_VERSION": params["model_version"],
        "ACTION": event["data"]["action"],
        "RANGE_START": event["data"]["training_data"]["range"]["start"],
        "RANGE_END": event["data"]["training_data"]["range"]["end"],
        "PREDICTION_OFFSETS": params["prediction_offsets"],
        "LABEL_OFFSETS": params["label_offsets"],
        "BASELINE_METRIC": params["baseline_metric"],
        "BASELINE_VALUE": params["baseline_value"],
    }
    for template in ENV.values():  # every field a template reads exists in the v2 schema
        path = re.findall(r"\['(\w+)'\]|\.get\('(\w+)'", template.split(REQUEST, 1)[1])
        keys = [a or b for a, b in path]
        assert _in_schema(keys, parameters=params), template


# ---- Kubeflow Pipelines ------------------------------------------------------------------------
def test_kubeflow_run_arguments_are_the_requests_parameters() -> None:
    event = _event()
    params = event["data"]["parameters"]
    spec = importlib.util.spec_from_file_location("start_run", EXAMPLES / "kubeflow" / "start_run.py")
    assert spec is not None and spec.loader is not None
    start_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(start_run)
    inputs = start_run.pipeline_inputs()
    pipeline = yaml.safe_load((EXAMPLES / "kubeflow" / "retrain-pipeline.yaml").read_text())
    assert set(inputs) <= set(params)  # the pipeline reads only what a v2 request carries
    assert all(_in_schema(["data", "parameters", name], parameters=params) for name in inputs)
    arguments = start_run.run_arguments(params, inputs)
    assert arguments == {name: params[name] for name in inputs}
    # the component's placeholders name declared inputs, wired one to one from the pipeline's
    args = pipeline["deploymentSpec"]["executors"]["exec-retrain"]["container"]["args"]
    used = {m for a in args for m in re.findall(r"\{\{\$\.inputs\.parameters\['(\w+)'\]\}\}", a)}
    assert used and used <= set(inputs)
    wired = pipeline["root"]["dag"]["tasks"]["retrain"]["inputs"]["parameters"]
    assert {k: v["componentInputParameter"] for k, v in wired.items()} == {k: k for k in inputs}
    with pytest.raises(ValueError, match="version 2"):
        start_run.run_arguments({}, inputs)  # a version 1 request has no parameters


def test_the_schema_check_refuses_fields_that_do_not_exist() -> None:
    params = _event()["data"]["parameters"]
    assert _in_schema(["data", "training_data", "range", "start"], parameters=params)
    assert _in_schema(["data", "trigger", "dedup_keys"], parameters=params)
    assert not _in_schema(["data", "training_data", "offsets"], parameters=params)
    assert not _in_schema(["data", "parameters", "model"], parameters=params)
    assert not _in_schema(["data", "window", "start", "ms"], parameters=params)
