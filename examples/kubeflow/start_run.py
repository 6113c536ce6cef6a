"""Start a Kubeflow Pipelines run per driftline retraining request.

    pip install kfp
    python examples/kubeflow/start_run.py --bootstrap kafka:9092 --kfp-host http://ml-pipeline:8888

A trainer helper consumer (``driftline.streams.trainer``: once per request, commit after the
run was created) whose handler creates a run of ``retrain-pipeline.yaml`` with the request's
flat ``parameters`` as arguments: the pipeline's inputs are named after those keys, so no
mapping is written by hand. Only inputs the pipeline declares are passed; optional ones the
request lacks take the pipeline's default. The run name carries the request id, so a run is
found from its request in the Kubeflow UI; the consumer's dedup store keeps a redelivered
request from starting a second run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import yaml

PIPELINE = Path(__file__).with_name("retrain-pipeline.yaml")


def pipeline_inputs(path: Path = PIPELINE) -> dict[str, dict[str, Any]]:
    """The pipeline's input parameters (name -> definition) from its compiled IR."""
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    return dict(spec["root"]["inputDefinitions"]["parameters"])


def run_arguments(parameters: dict[str, str], inputs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The run's arguments: the request's parameters the pipeline takes; a required one missing
    is an error (the request cannot start this pipeline)."""
    missing = sorted(n for n, d in inputs.items() if not d.get("isOptional") and n not in parameters)
    if missing:
        raise ValueError(f"the request has no {missing}: is it a version 2 request?")
    return {name: parameters[name] for name in inputs if name in parameters}


def main(argv: list[str] | None = None) -> int:
    import kfp

    from driftline.platform.kafka import KafkaSettings
    from driftline.schemas import RetrainingRequest
    from driftline.streams.trainer import RetrainingConsumer, SqliteDedupStore

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bootstrap", default=os.environ.get("DRIFTLINE_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument("--topic-prefix", default=os.environ.get("DRIFTLINE_TOPIC_PREFIX", "driftline."))
    parser.add_argument("--kfp-host", required=True)
    parser.add_argument("--experiment", default="driftline-retraining")
    args = parser.parse_args(argv)
    client = kfp.Client(host=args.kfp_host)
    inputs = pipeline_inputs()

    def start(request: RetrainingRequest) -> None:
        if request.data.action not in ("retrain", "recalibrate"):
            return  # rollback and investigate go to people, not to a pipeline
        client.create_run_from_pipeline_package(
            str(PIPELINE),
            arguments=run_arguments(request.data.parameters, inputs),
            run_name=f"driftline-{request.id}",
            experiment_name=args.experiment,
        )

    store = SqliteDedupStore("kfp-dedup.sqlite")
    consumer = RetrainingConsumer(
        KafkaSettings.from_env(bootstrap_servers=args.bootstrap),
        group_id="kfp-runs",
        handler=start,
        topic_prefix=args.topic_prefix,
        dedup_store=store,
    )
    try:
        consumer.run()
    finally:
        consumer.close()
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
