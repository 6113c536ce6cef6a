"""A retraining consumer that trains for real and registers the result in MLflow.

    pip install 'driftline[mlflow]' scikit-learn
    python examples/mlflow_trainer.py --bootstrap 127.0.0.1:9092 \\
        --tracking-uri sqlite:///mlflow.db --predictions history/predictions.jsonl \\
        --ground-truth history/ground-truth.jsonl

For each retraining request (version 2; a version 1 request trains on its suggested range):

1. reads the requested data from the history files (JSON Lines of prediction and ground-truth
   events, e.g. what the serving app also archives): the predictions whose event time is in the
   range the request covers, joined to their labels by (model, prediction id);
2. trains a scikit-learn logistic regression on the numeric features plus one-hot categories;
3. logs an MLflow run: the request's flat ``parameters`` as params, the training accuracy and
   the baseline it must beat as metrics, the model (joblib) as the ``model`` artifact and the
   training rows as ``driftline/reference.jsonl``, the reference a follower of the alias uses
   (``driftline models follow``);
4. registers a new version of the registered model (the request's lineage, else the model id)
   tagged ``driftline_request_id`` and sets the alias ``challenger`` on it.

A request already registered (same tag) is not trained again: the handler is idempotent in the
request id, as the trainer helper asks (``driftline.streams.trainer``). A real deployment would
submit a job here instead of training inline.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from driftline.schemas import RetrainingRequest, rfc3339_to_ms

CHALLENGER = "challenger"
REQUEST_TAG = "driftline_request_id"


def _jsonl(path: str | Path) -> Iterable[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict):
                    yield row


def _ms(value: Any) -> int:
    return value if isinstance(value, int) else rfc3339_to_ms(str(value))


def training_rows(
    request: RetrainingRequest, predictions: str | Path, ground_truth: str | Path
) -> list[dict[str, Any]]:
    """The request's predictions in its range, each with its ``label``: the rows to train on."""
    data = request.data
    span = data.suggested_training_range
    if data.training_data is not None and data.training_data.covered is not None:
        span = data.training_data.covered  # what driftline saw: no need to read more
    start, end = rfc3339_to_ms(span.start), rfc3339_to_ms(span.end)
    labels = {
        str(row.get("prediction_id")): row.get("label")
        for row in _jsonl(ground_truth)
        if row.get("model_id") == data.model_id
    }
    rows = []
    for row in _jsonl(predictions):
        if row.get("model_id") != data.model_id or row.get("model_version") != data.model_version:
            continue
        if not start <= _ms(row.get("timestamp", 0)) < end:
            continue
        label = labels.get(str(row.get("prediction_id")))
        if label is not None:
            rows.append({**row, "label": label})
    return rows


def _design(rows: list[dict[str, Any]]) -> tuple[Any, Any, list[str]]:
    import numpy as np

    numeric = sorted({k for r in rows for k, v in r["features"].items() if isinstance(v, int | float)})
    categories = sorted({(k, v) for r in rows for k, v in r["features"].items() if isinstance(v, str)})
    names = numeric + [f"{k}={v}" for k, v in categories]
    x = np.array(
        [
            [float(r["features"].get(k, 0.0) or 0.0) for k in numeric]
            + [1.0 if r["features"].get(k) == v else 0.0 for k, v in categories]
            for r in rows
        ]
    )
    y = np.array([str(r["label"]) for r in rows])
    return x, y, names


def train_and_register(
    request: RetrainingRequest,
    *,
    predictions: str | Path,
    ground_truth: str | Path,
    tracking_uri: str,
    registered_model: str | None = None,
    artifact_location: str | None = None,
) -> str:
    """Train on the request's data, log the run, register a version aliased ``challenger``;
    returns the registered version (the existing one when the request was handled before).
    ``artifact_location`` is where a new experiment keeps its artifacts (MLflow's default is
    ``./mlruns`` under the working directory)."""
    import joblib
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from sklearn.linear_model import LogisticRegression

    data = request.data
    name = registered_model or (data.lineage.registered_model if data.lineage else None) or data.model_id
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)
    done = client.search_model_versions(f"name = '{name}' and tags.{REQUEST_TAG} = '{request.id}'")
    if done:
        return str(done[0].version)
    rows = training_rows(request, predictions, ground_truth)
    if not rows:
        raise ValueError(f"request {request.id}: no labelled rows of {data.model_id} in the requested range")
    x, y, features = _design(rows)
    model = LogisticRegression(max_iter=1000).fit(x, y)
    accuracy = float((model.predict(x) == y).mean())
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    experiment = f"driftline-{data.model_id}"
    if client.get_experiment_by_name(experiment) is None:
        client.create_experiment(experiment, artifact_location=artifact_location)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"{data.action}-{request.id[:8]}") as run:
        parameters = data.parameters or {"request_id": request.id, "model_id": data.model_id}
        mlflow.log_params({k: v[:500] for k, v in parameters.items()})
        mlflow.log_metric("train_accuracy", accuracy)
        mlflow.log_metric("training_rows", len(rows))
        if data.baseline is not None:
            mlflow.log_metric(f"baseline_{data.baseline.metric}", data.baseline.value)
        mlflow.set_tag(REQUEST_TAG, request.id)
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = Path(tmp) / "model"
            model_dir.mkdir()
            joblib.dump({"model": model, "features": features}, model_dir / "model.joblib")
            mlflow.log_artifacts(str(model_dir), artifact_path="model")
            reference = Path(tmp) / "reference.jsonl"
            reference.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            mlflow.log_artifact(str(reference), artifact_path="driftline")
        run_id = run.info.run_id
    version = client.create_model_version(
        name, f"runs:/{run_id}/model", run_id=run_id, tags={REQUEST_TAG: request.id}
    )
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return str(version.version)


def main(argv: list[str] | None = None) -> int:
    import logging
    import signal
    import threading

    from driftline.platform.kafka import KafkaSettings, quick_join_consumer_config
    from driftline.streams.trainer import RetrainingConsumer, SqliteDedupStore

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bootstrap", default=os.environ.get("DRIFTLINE_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument("--topic-prefix", default=os.environ.get("DRIFTLINE_TOPIC_PREFIX", "driftline."))
    parser.add_argument("--group", default="mlflow-trainer")
    parser.add_argument(
        "--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    )
    parser.add_argument("--registered-model", help="default: the request's lineage, else the model id")
    parser.add_argument("--artifact-root", help="artifact location of a new experiment (default ./mlruns)")
    parser.add_argument("--predictions", required=True, help="JSONL history of prediction events")
    parser.add_argument("--ground-truth", required=True, help="JSONL history of ground-truth events")
    parser.add_argument("--dedup-db", default="mlflow-trainer-dedup.sqlite")
    parser.add_argument("--fast-join", action="store_true", help="short session timeout (embedded broker)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def handle(request: RetrainingRequest) -> None:
        version = train_and_register(
            request,
            predictions=args.predictions,
            ground_truth=args.ground_truth,
            tracking_uri=args.tracking_uri,
            registered_model=args.registered_model,
            artifact_location=args.artifact_root,
        )
        print(f"request {request.id}: registered version {version} as {CHALLENGER!r}", flush=True)

    store = SqliteDedupStore(args.dedup_db)
    consumer = RetrainingConsumer(
        KafkaSettings.from_env(bootstrap_servers=args.bootstrap),
        group_id=args.group,
        handler=handle,
        topic_prefix=args.topic_prefix,
        dedup_store=store,
        consumer_config=quick_join_consumer_config() if args.fast_join else None,
    )
    try:
        consumer.run(stop_event=stop)
    finally:
        consumer.close()
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
