"""The SQL store: window history, alert state, the notification outbox, retraining requests,
reference profiles and worker checkpoints, on SQLite or PostgreSQL (see docs/store.md).

Typical use::

    upgrade(url)                      # once, by the operator: `driftline db upgrade`
    check_schema(url)                 # at worker start-up
    Session = session_factory(make_engine(url))
    with Session.begin() as session:  # one transaction: result, alerts and outbox together
        record_window_result(session, result)
"""

from driftline.platform.store.db import (
    SchemaOutOfDate,
    check_schema,
    current_revision,
    downgrade,
    head_revision,
    make_engine,
    safe_url,
    session_factory,
    upgrade,
)
from driftline.platform.store.history import (
    VersionHistory,
    acknowledge_retraining_request,
    set_lineage,
    version_history,
)
from driftline.platform.store.repository import (
    Checkpoint,
    GivenUp,
    due_notifications,
    enqueue_notification,
    event_payload,
    given_up_notifications,
    latest_profile,
    list_alerts,
    list_retraining_requests,
    load_checkpoint,
    parse_segment_key,
    prune_window_results,
    record_alert,
    record_attempt,
    record_retraining_request,
    record_window_result,
    save_checkpoint,
    save_profile,
    segment_key,
    touch_model,
    window_history,
)

__all__ = [
    "Checkpoint",
    "GivenUp",
    "SchemaOutOfDate",
    "VersionHistory",
    "acknowledge_retraining_request",
    "check_schema",
    "current_revision",
    "downgrade",
    "due_notifications",
    "enqueue_notification",
    "event_payload",
    "given_up_notifications",
    "head_revision",
    "latest_profile",
    "list_alerts",
    "list_retraining_requests",
    "load_checkpoint",
    "make_engine",
    "parse_segment_key",
    "prune_window_results",
    "record_alert",
    "record_attempt",
    "record_retraining_request",
    "record_window_result",
    "safe_url",
    "save_checkpoint",
    "save_profile",
    "segment_key",
    "session_factory",
    "set_lineage",
    "touch_model",
    "upgrade",
    "version_history",
    "window_history",
]
