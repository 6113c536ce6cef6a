"""MLflow for real: a local SQLite tracking and registry store (no server, no mocks).

A version 2 retraining request of the golden replay (fraud drifts) goes to
examples/mlflow_trainer.py: it trains on exactly the requested rows and registers a new
version with the alias ``challenger``. Promoting it (moving ``champion``) and running
``driftline models follow`` rebaselines: the version's logged reference becomes its stored
profile, visible in ``driftline models show``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

mlflow = pytest.importorskip("mlflow")

from golden_replay import GOLDEN, write_corpus  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from driftline.platform.store import make_engine, session_factory, upgrade, version_history  # noqa: E402
from driftline.schemas import decode_retraining_request, rfc3339_to_ms  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("mlflow_trainer", ROOT / "examples" / "mlflow_trainer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _driftline(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "driftline", *args], capture_output=True, text=True, timeout=180, cwd=cwd
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_request_in_challenger_out_and_a_moved_champion_rebaselines(tmp_path: Path) -> None:
    trainer = _example()
    pred, gt, _, _ = write_corpus(tmp_path)
    event = json.loads(GOLDEN.read_text())["retraining_requests"][0]
    request = decode_retraining_request(json.dumps(event).encode())
    assert request.data.schema_version == "2.0" and request.data.model_id == "fraud"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = (tmp_path / "artifacts").as_uri()  # never ./mlruns under the working directory
    where = {"predictions": pred, "ground_truth": gt, "tracking_uri": uri, "artifact_location": artifacts}

    version = trainer.train_and_register(request, **where)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert str(client.get_model_version_by_alias("fraud", "challenger").version) == version == "1"
    registered = client.get_model_version("fraud", version)
    assert registered.tags[trainer.REQUEST_TAG] == request.id
    run = client.get_run(registered.run_id)
    assert run.info.artifact_uri.startswith(artifacts)
    # it trained on exactly the requested rows: fraud v1, labelled, event time in the range seen
    covered = request.data.training_data.covered
    start, end = rfc3339_to_ms(covered.start), rfc3339_to_ms(covered.end)
    labelled = {json.loads(line)["prediction_id"] for line in gt.read_text().splitlines()}
    expected = [
        p
        for p in map(json.loads, pred.read_text().splitlines())
        if p["model_id"] == "fraud" and start <= p["timestamp"] < end and p["prediction_id"] in labelled
    ]
    assert run.data.metrics["training_rows"] == len(expected) == request.data.training_data.labelled_count
    assert run.data.params["request_id"] == request.id
    assert run.data.params["prediction_offsets"] == request.data.parameters["prediction_offsets"]
    assert run.data.metrics["baseline_accuracy"] == request.data.baseline.value
    # the request handled again (a redelivery): the same version, no second one
    assert trainer.train_and_register(request, **where) == "1"
    assert len(client.search_model_versions("name = 'fraud'")) == 1

    # promotion: champion moves to the challenger; driftline follows and rebaselines
    store = f"sqlite:///{tmp_path / 'store.sqlite'}"
    upgrade(store)
    client.set_registered_model_alias("fraud", "champion", version)
    follow = ("models", "follow", "fraud", "--alias", "champion", "--tracking-uri", uri, "--store-url", store)
    out = _driftline(*follow, cwd=tmp_path)
    assert f"fraud@champion is version 1 (run {registered.run_id}): moved: rebaselined" in out
    assert f"{len(expected)} reference rows" in out
    assert "unchanged" in _driftline(*follow, cwd=tmp_path)
    shown = _driftline("models", "show", "fraud", "--version", "1", "--store-url", store, cwd=tmp_path)
    assert "alias=champion" in shown and f"run_id={registered.run_id}" in shown
    assert "profile     mlflow:models:/fraud@champion" in shown

    # a second request gives version 2; champion moves on, and version 1 no longer holds it
    again = msgspec.structs.replace(
        request, id="f" * 32, data=msgspec.structs.replace(request.data, idempotency_key="f" * 32)
    )
    assert trainer.train_and_register(again, **where) == "2"
    assert str(client.get_model_version_by_alias("fraud", "challenger").version) == "2"
    client.set_registered_model_alias("fraud", "champion", "2")
    assert "is version 2" in _driftline(*follow, cwd=tmp_path)
    engine = make_engine(store)
    with session_factory(engine).begin() as session:
        lineage = {h.model_version: h.lineage for h in version_history(session, "fraud")}
    engine.dispose()
    assert lineage["2"]["alias"] == "champion" and "alias" not in lineage["1"]
    assert lineage["1"]["former_alias"] == "champion"


def test_a_moved_champion_rebaselines_what_the_worker_judges_its_windows_against(tmp_path: Path) -> None:
    """The stream of version 1 sits one sigma from the configured reference file: judged
    against the file it drifts. The run behind version 1 logged the rows it saw; once
    ``champion`` moves there and ``models follow`` records that profile, the same stream is
    judged against it (replay, the worker's code path, reading the store): no alert, and
    ``models show`` names the stored profile as the reference its windows were judged against."""
    import numpy as np
    import yaml
    from replaying import replay_cli

    g = np.random.default_rng(1616)
    t0, window, n = 1_767_225_600_000, 60_000, 6 * 600

    def rows(mean: float, count: int) -> list[dict]:
        return [{"features": {"x": float(x)}, "prediction": int(x > mean), "label": int(x > mean)}
                for x in g.normal(mean, 1.0, count)]

    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps(r) + "\n" for r in rows(0.0, 3000)))
    pred, gt = tmp_path / "p.jsonl", tmp_path / "g.jsonl"
    stream = rows(1.0, n)
    pred.write_text("".join(
        json.dumps({"prediction_id": f"e{i}", "model_id": "fraud", "model_version": "1",
                    "timestamp": t0 + i * (6 * window // n), "features": r["features"],
                    "prediction": r["prediction"]}) + "\n"
        for i, r in enumerate(stream)
    ))
    gt.write_text("")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"models": {"fraud": {
        "window": "60s", "grace": "5s", "label_horizon": "10s", "reference": str(old),
        "online_detectors": [],
    }}}))
    store = f"sqlite:///{tmp_path / 'store.sqlite'}"
    upgrade(store)

    # version 1 in a real MLflow registry, its run holding the rows it saw as its reference
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("fraud", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment)
    seen = tmp_path / "reference.jsonl"
    seen.write_text("".join(json.dumps(r) + "\n" for r in rows(1.0, 3000)))
    client.log_artifact(run.info.run_id, str(seen), "driftline")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("fraud")
    client.create_model_version("fraud", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)

    def alerts_and_references(name: str) -> tuple[list[dict], set[str]]:
        report = replay_cli(cfg, pred, gt, tmp_path / name, "--store-url", store)
        firing = [a for a in report["alerts"] if a["type"] == "io.driftline.alert.firing"]
        return firing, {w["reference"] for w in report["windows"]}

    firing, refs = alerts_and_references("before.json")
    assert refs == {f"file:{old}"} and firing, "one sigma from the file's reference must alert"

    client.set_registered_model_alias("fraud", "champion", "1")
    follow = ("models", "follow", "fraud", "--alias", "champion", "--tracking-uri", uri, "--store-url", store)
    assert "moved: rebaselined" in _driftline(*follow, cwd=tmp_path)
    firing, refs = alerts_and_references("after.json")
    assert len(refs) == 1 and next(iter(refs)).startswith("store:mlflow:models:/fraud@champion [")
    assert firing == []
    _driftline("history", "--from-report", str(tmp_path / "after.json"), "--store-url", store, cwd=tmp_path)
    shown = _driftline("models", "show", "fraud", "--version", "1", "--store-url", store, cwd=tmp_path)
    assert "reference   store:mlflow:models:/fraud@champion [" in shown
