"""Following a registered model's alias in MLflow (``driftline models follow``).

Teams promote a model by moving an alias (``champion``) to a new registered version. When the
alias has moved since driftline last looked, the version it now names becomes the model's
baseline: its reference is the ``driftline/reference.jsonl`` artifact of the version's run
(as ``examples/mlflow_trainer.py`` logs it), profiled like ``driftline baseline create`` and
stored as that version's reference profile, which workers then judge the version's windows
against (streams/catalog.py, ``StoredProfiles``, within ``reference_refresh``), or, without
such an artifact, nothing is stored and the version keeps the configured reference file or
bootstraps from its first windows. Either way the move is recorded in the version history
(``driftline models show``): the version's lineage gets the alias, its run and where its
reference came from, and the version that held the alias before loses it.

The MLflow registry is read through ``MlflowClient`` against any tracking/registry URI it
supports (``sqlite:///mlflow.db`` needs no server). Needs ``driftline[mlflow]``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from driftline.platform.config import ModelConfig

__all__ = ["REFERENCE_ARTIFACT", "Followed", "follow_alias"]

#: where a run keeps the rows its model was trained on, for the reference profile
REFERENCE_ARTIFACT = "driftline/reference.jsonl"


@dataclass(frozen=True, slots=True)
class Followed:
    """What one look at the alias found; ``moved`` is False when it named the same version."""

    model_id: str
    version: str
    run_id: str | None
    moved: bool
    reference: str
    reference_rows: int = 0


def follow_alias(
    sessions: sessionmaker[Session],
    *,
    model_id: str,
    registered_model: str,
    alias: str,
    tracking_uri: str,
    cfg: ModelConfig,
    now_ms: int,
) -> Followed:
    """Look at ``registered_model@alias`` once; record a move in the version history."""
    from mlflow import MlflowClient

    from driftline.platform.store import set_lineage, version_history

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    found = client.get_model_version_by_alias(registered_model, alias)
    version, run_id = str(found.version), found.run_id or None
    with sessions.begin() as session:
        history = version_history(session, model_id)
    holder = next((h for h in history if (h.lineage or {}).get("alias") == alias), None)
    if holder is not None and holder.model_version == version:
        return Followed(model_id, version, run_id, False, str((holder.lineage or {}).get("reference", "")))
    source = f"mlflow:models:/{registered_model}@{alias}"
    rows = _reference_rows(client, run_id) if run_id else []
    with sessions.begin() as session:
        if rows:
            _save_profile(session, rows, model_id, version, cfg, source, now_ms)
            reference = f"{source} (run {run_id})"
        else:
            reference = "bootstrap (no reference artifact)"
        lineage = {
            "registry_uri": tracking_uri,
            "registered_model": registered_model,
            "alias": alias,
            "run_id": run_id,
            "reference": reference,
            "alias_since_ms": now_ms,
        }
        set_lineage(session, model_id, version, lineage, now_ms)
        for h in history:  # the alias is on one version at a time
            if h.model_version != version and (h.lineage or {}).get("alias") == alias:
                set_lineage(
                    session, model_id, h.model_version, {"former_alias": alias}, now_ms, drop=("alias",)
                )
    return Followed(model_id, version, run_id, True, reference, len(rows))


def _reference_rows(client: Any, run_id: str) -> list[dict[str, Any]]:
    from mlflow.exceptions import MlflowException

    from driftline.platform.files import load_rows

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, REFERENCE_ARTIFACT, tmp)
        except (MlflowException, OSError):
            return []
        return list(load_rows(path))


def _save_profile(
    session: Session,
    rows: list[dict[str, Any]],
    model_id: str,
    version: str,
    cfg: ModelConfig,
    source: str,
    now_ms: int,
) -> None:
    from driftline.apps.commands.baseline_cli import baseline_document
    from driftline.platform.store import save_profile

    save_profile(session, baseline_document(rows, model_id, version, cfg), model_id, version, source, now_ms)
