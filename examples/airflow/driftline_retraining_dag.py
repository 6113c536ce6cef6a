"""Airflow (3.x): a DAG run per driftline retraining request, event-driven.

The Kafka provider's message-queue trigger watches driftline's ``retraining-requests`` topic
(connection ``driftline_kafka``: ``bootstrap.servers``, ``group.id``) and
``driftline_messages.retraining_request`` keeps the version 2 requests to train for; each
fires the asset, which schedules this DAG with the request as the event's payload. The task
reads the request's flat ``parameters`` through Jinja (tests/test_recipes.py renders these
templates against a real request).

    pip install apache-airflow apache-airflow-providers-apache-kafka apache-airflow-providers-common-messaging
"""

from __future__ import annotations

from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Asset, AssetWatcher

TOPIC = "driftline.retraining-requests"
#: the request of the asset event that scheduled this run
REQUEST = "(triggering_asset_events.values() | first | first).extra['payload']"

trigger = MessageQueueTrigger(
    scheme="kafka",
    topics=[TOPIC],
    apply_function="driftline_messages.retraining_request",
    kafka_config_id="driftline_kafka",
)
requests = Asset("driftline_retraining_requests", watchers=[AssetWatcher(name="driftline", trigger=trigger)])

#: the task's environment: producer strings reach the script as variables, never as shell text
ENV = {
    "REQUEST_ID": "{{ " + REQUEST + "['data']['parameters']['request_id'] }}",
    "MODEL_ID": "{{ " + REQUEST + "['data']['parameters']['model_id'] }}",
    "MODEL_VERSION": "{{ " + REQUEST + "['data']['parameters']['model_version'] }}",
    "ACTION": "{{ " + REQUEST + "['data']['action'] }}",
    "RANGE_START": "{{ " + REQUEST + "['data']['training_data']['range']['start'] }}",
    "RANGE_END": "{{ " + REQUEST + "['data']['training_data']['range']['end'] }}",
    "PREDICTION_OFFSETS": "{{ " + REQUEST + "['data']['parameters'].get('prediction_offsets', '') }}",
    "LABEL_OFFSETS": "{{ " + REQUEST + "['data']['parameters'].get('label_offsets', '') }}",
    "BASELINE_METRIC": "{{ " + REQUEST + "['data']['parameters'].get('baseline_metric', '') }}",
    "BASELINE_VALUE": "{{ " + REQUEST + "['data']['parameters'].get('baseline_value', '') }}",
}

with DAG(dag_id="driftline_retraining", schedule=[requests], catchup=False, tags=["driftline"]):
    BashOperator(task_id="retrain", bash_command="python train.py", env=ENV, append_env=True)
