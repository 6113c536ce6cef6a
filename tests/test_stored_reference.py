"""A model version's reference profile in the store is what its windows are judged against.

``driftline models follow`` (or ``baseline create --store-url --version V``) records a
version's profile; the worker's catalog re-reads which versions have one every
``reference_refresh`` and the evaluator puts it before the reference file and bootstrapping.
These tests drive the real Evaluator against a real SQLite store, with an injected clock.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from driftline.apps.commands.baseline_cli import baseline_document
from driftline.detectors.aggregates import WindowAggregate
from driftline.platform.config import Config, ModelConfig
from driftline.platform.store import make_engine, save_profile, session_factory, upgrade
from driftline.schemas import PredictionEvent
from driftline.streams.catalog import ModelCatalog, StoredProfiles, build_profiles
from driftline.streams.columns import PredictionBlock
from driftline.streams.evaluation import Evaluator

MODEL, WINDOW_MS, EVENTS = "fraud", 60_000, 600
T0 = 1_767_225_600_000


def _rows(g: np.random.Generator, mean: float, n: int) -> list[dict]:
    xs = g.normal(mean, 1.0, n)
    return [{"features": {"x": float(x)}, "prediction": int(x > mean)} for x in xs]


def _window(catalog: ModelCatalog, rows: list[dict], start: int) -> WindowAggregate:
    events = [
        PredictionEvent(
            prediction_id=f"{start}-{i}", model_id=MODEL, model_version="2", timestamp=start + i,
            features=r["features"], prediction=r["prediction"],
        )
        for i, r in enumerate(rows)
    ]
    block = PredictionBlock.from_events(events, catalog.positive_label)
    agg = WindowAggregate(catalog.spec(MODEL))
    agg.add_predictions(
        block.features, np.arange(len(block)), block.keys, np.asarray(block.predictions), block.scores
    )
    return agg


def test_a_stored_profile_is_used_without_a_restart_within_the_refresh_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=StoredProfiles.__module__)
    g = np.random.default_rng(16)
    cfg = ModelConfig(window_ms=WINDOW_MS, online_detectors=())
    config = Config(models={MODEL: cfg})
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    upgrade(url)
    now = [0.0]
    stored = StoredProfiles(url, refresh_s=30.0, clock=lambda: now[0])
    old = build_profiles(_rows(g, 0.0, 2000), MODEL, cfg)  # the configured reference file
    catalog = ModelCatalog(config, old, sources={MODEL: "file:old.jsonl"}, stored=stored)
    ev = Evaluator(catalog)

    cusum: list[float] = []

    def judge(w: int) -> tuple[str, list[str]]:
        start = T0 + w * WINDOW_MS
        e = ev.evaluate(
            MODEL, "2", "", start, start + WINDOW_MS, _window(catalog, _rows(g, 1.0, EVENTS), start),
            "provisional", judge_label_free=True,
        )
        cusum.append(e.values["drift_cusum"])
        return e.result.reference, [a.type.rsplit(".", 1)[-1] for a in e.alerts]

    # the stream has moved one sigma from the file's reference: the drift alert fires
    before = [judge(w) for w in range(2)]
    assert [r for r, _ in before] == ["file:old.jsonl"] * 2
    assert "firing" in before[0][1] + before[1][1]

    # the new champion's reference (it saw the moved distribution) lands in the store
    engine = make_engine(url)
    with session_factory(engine).begin() as session:
        doc = baseline_document(_rows(g, 1.0, 2000), MODEL, "2", cfg)
        save_profile(session, doc, MODEL, "2", "mlflow:models:/fraud@champion", 1_767_225_000_000)
    engine.dispose()
    now[0] = 29.0  # within the refresh interval the catalog has not looked again
    assert judge(2)[0] == "file:old.jsonl"
    now[0] = 30.0
    after = [judge(w) for w in range(3, 8)]
    name = "store:mlflow:models:/fraud@champion [2025-12-31T23:50:00.000Z]"
    assert [r for r, _ in after] == [name] * 5
    # its first use says so, and what it takes precedence over
    assert f"'fraud' version '2': judged against the stored reference profile {name}" in caplog.text
    assert "precedence over reference files and bootstrapping" in caplog.text
    assert not any("firing" in kinds for _, kinds in after)
    assert any("resolved" in kinds for _, kinds in after)  # the old alert ends, not lingers
    # the CUSUM starts again with the new reference: evidence against the old one is not carried
    assert cusum[2] >= 3.0 and cusum[3] < 1.5
    # a version without a stored profile keeps the file's reference
    start = T0 + 9 * WINDOW_MS
    other = ev.evaluate(
        MODEL, "1", "", start, start + WINDOW_MS, _window(catalog, _rows(g, 0.0, EVENTS), start),
        "provisional", judge_label_free=True,
    )
    assert other.result.reference == "file:old.jsonl"
    stored.close()


def test_reference_refresh_is_a_positive_duration() -> None:
    from driftline.platform.config import config_from_mapping

    assert config_from_mapping({"reference_refresh": "5s"}).reference_refresh_ms == 5_000
    assert Config().reference_refresh_ms == 30_000
    with pytest.raises(ValueError, match="reference_refresh must be a positive duration"):
        config_from_mapping({"reference_refresh": "0s"})


def test_the_worker_start_up_line_states_the_reference_precedence(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from driftline.apps.cli import _summary
    from driftline.platform.kafka import TopicNames, settings_for

    config = Config(models={MODEL: ModelConfig()})
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    args = SimpleNamespace(no_checkpoints=False, metrics_port=0, health_port=0, stall_after=120.0)
    stored = StoredProfiles(url, refresh_s=config.reference_refresh_ms / 1000)
    app = SimpleNamespace(
        config=config,
        topics=TopicNames.from_config(config),
        settings=settings_for(config, {}),
        catalog=ModelCatalog(config, stored=stored),
    )
    assert _summary(app, args).endswith(
        "; references: a version's profile in the store (re-read every 30 s), else the configured "
        "reference file, else bootstrapped from the version's first windows"
    )
    stored.close()


def test_an_unreadable_stored_profile_is_logged_once_and_the_file_reference_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    g = np.random.default_rng(3)
    cfg = ModelConfig(window_ms=WINDOW_MS, online_detectors=())
    config = Config(models={MODEL: cfg})
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    with session_factory(engine).begin() as session:
        save_profile(session, {"stale": True}, MODEL, "2", "hand-made", 1_767_225_000_000)
    engine.dispose()
    stored = StoredProfiles(url, refresh_s=0.0)  # re-read the index before every window
    old = build_profiles(_rows(g, 0.0, 500), MODEL, cfg)
    catalog = ModelCatalog(config, old, sources={MODEL: "file:old.jsonl"}, stored=stored)
    ev = Evaluator(catalog)
    for w in range(3):
        start = T0 + w * WINDOW_MS
        e = ev.evaluate(
            MODEL, "2", "", start, start + WINDOW_MS, _window(catalog, _rows(g, 0.0, 200), start),
            "provisional", judge_label_free=True,
        )
        assert e.result.reference == "file:old.jsonl"
    assert caplog.text.count("is unreadable") == 1
    stored.close()


def test_a_segment_slice_uses_its_segment_of_the_stored_baseline_else_what_it_had(tmp_path: Path) -> None:
    g = np.random.default_rng(4)
    cfg = ModelConfig(window_ms=WINDOW_MS, online_detectors=())
    config = Config(models={MODEL: cfg})
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    upgrade(url)
    rows = [dict(r, segments={"channel": "web"}) for r in _rows(g, 0.0, 500)]
    engine = make_engine(url)
    with session_factory(engine).begin() as session:
        doc = baseline_document(rows, MODEL, "2", cfg)
        save_profile(session, doc, MODEL, "2", "follow", 1_767_225_000_000)
    engine.dispose()
    stored = StoredProfiles(url)
    catalog = ModelCatalog(config, build_profiles(rows, MODEL, cfg), sources={MODEL: "file:f"}, stored=stored)
    ev = Evaluator(catalog)
    refs = {}
    for segment in ("", "channel=web", "channel=app"):
        e = ev.evaluate(
            MODEL, "2", segment, T0, T0 + WINDOW_MS, _window(catalog, _rows(g, 0.0, 200), T0),
            "provisional", judge_label_free=True,
        )
        refs[segment] = e.result.reference
    name = "store:follow [2025-12-31T23:50:00.000Z]"
    assert refs == {"": name, "channel=web": name, "channel=app": "none (bootstrapping)"}
    stored.close()


def test_replay_refuses_a_store_url_its_external_workers_would_ignore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from driftline.apps.cli import main

    for name in ("p.jsonl", "g.jsonl"):
        (tmp_path / name).write_text("")
    code = main([
        "replay", "--predictions", str(tmp_path / "p.jsonl"), "--ground-truth", str(tmp_path / "g.jsonl"),
        "--report", str(tmp_path / "r.json"), "--broker", "127.0.0.1:1", "--external-workers",
        "--store-url", f"sqlite:///{tmp_path / 's.sqlite'}",
    ])
    assert code == 2
    assert "--store-url has no effect with --external-workers" in capsys.readouterr().err
