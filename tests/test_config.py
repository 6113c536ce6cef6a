"""Configuration: YAML file, environment overrides, defaults for unknown models, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.alerting.rules import DEFAULT_RULES
from driftline.platform.config import ModelConfig, load_config, parse_duration_ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("500ms", 500),
        ("30s", 30_000),
        ("5m", 300_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        (90, 90_000),
        ("1.5s", 1_500),
    ],
)
def test_durations(text: str | int, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("bad", ["5 minutes", "", "-1s", True])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration_ms(bad)  # type: ignore[arg-type]


def test_yaml_then_environment(tmp_path: Path) -> None:
    (tmp_path / "ref.jsonl").write_text("")
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text(
        """
bootstrap_servers: kafka:9092
topics: {prefix: "prod.", join: 12}
defaults: {window: 10m, grace: 1m, label_horizon: 1h}
models:
  fraud:
    task: multiclass
    reference: ref.jsonl
    rules:
      - {name: acc, metric: accuracy, comparison: "<", threshold: 0.8, retrain: true}
"""
    )
    env = {
        "DRIFTLINE_BOOTSTRAP_SERVERS": "other:9092",
        "DRIFTLINE__DEFAULTS__WINDOW": "15m",
        "DRIFTLINE__TOPICS__JOIN": "24",
        "DRIFTLINE__MAX_MODELS": "7",
    }
    config = load_config(cfg, environ=env)
    assert config.bootstrap_servers == "other:9092"
    assert (config.topics.prefix, config.topics.join, config.topics.predictions) == ("prod.", 24, 6)
    assert config.topics.name("alerts") == "prod.alerts"
    assert config.max_models == 7
    assert (config.defaults.window_ms, config.defaults.grace_ms) == (900_000, 60_000)
    fraud = config.model("fraud")
    assert fraud.task == "multiclass"
    assert fraud.reference == str(tmp_path / "ref.jsonl")  # relative to the file
    assert fraud.window_ms == 900_000  # models inherit the defaults, after the environment overrode them
    assert [r.name for r in fraud.rules] == ["acc"] and fraud.rules[0].retrain
    # a model nobody configured is still monitored, with the defaults
    assert config.model("never-seen") == config.defaults
    assert config.defaults.rules == DEFAULT_RULES


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("app_id: from-file\n")
    assert load_config(environ={"DRIFTLINE_CONFIG": str(cfg)}).app_id == "from-file"
    assert load_config(environ={}).app_id == "driftline"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bootstrap: x\n", "unknown keys ['bootstrap']"),
        ("defaults: {windw: 5m}\n", "unknown keys ['windw']"),
        ("defaults: {task: ranking}\n", "task must be binary, multiclass or regression"),
        ("defaults: {grace: 2h, label_horizon: 1h}\n", "grace <= label_horizon"),
        ("models: {m: {drift_correction: holm}}\n", "drift_correction must be bh, bonferroni or none"),
        (
            "models: {fraud: {positive_label: fraud}}\n",
            "models.fraud: a binary model's classes are 0 and 1 unless positive_label and negative_label "
            "name both: positive_label is 'fraud', negative_label is not set",
        ),
        ("models: {fraud: {positive_label: ok, negative_label: ok}}\n", "are both 'ok'"),
        (
            "cloudevents: {alerts: binry}\n",
            "cloudevents.alerts must be binary or structured, not 'binry'; did you mean 'binary'?",
        ),
        (
            "cloudevents: {retraining: binary}\n",
            "cloudevents: a topic must be alerts or retraining_requests, not 'retraining'",
        ),
        ("cloudevents: binary\n", "cloudevents must map alerts and retraining_requests to a content mode"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(cfg, environ={})


def test_cloudevents_content_mode_per_topic(tmp_path: Path) -> None:
    default = load_config(environ={}).cloudevents
    assert (default.alerts, default.retraining_requests) == ("structured", "structured")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cloudevents: {retraining-requests: binary}\n")
    config = load_config(cfg, environ={"DRIFTLINE__CLOUDEVENTS__ALERTS": "binary"})
    assert (config.cloudevents.alerts, config.cloudevents.retraining_requests) == ("binary", "binary")


def test_model_config_defaults_are_valid() -> None:
    model = ModelConfig()
    assert (model.task, model.drift_correction, model.drift_share, model.bootstrap_windows) == (
        "binary",
        "bh",
        0.0,
        3,
    )


def test_every_documented_environment_example_loads() -> None:
    """The ``DRIFTLINE__…=value`` examples of the docs and of the config module's docstring."""
    import re
    from pathlib import Path

    import driftline.platform.config as config_module

    root = Path(__file__).resolve().parent.parent
    texts = [
        config_module.__doc__ or "",
        *(p.read_text() for p in [root / "README.md", *root.glob("docs/*.md")]),
    ]
    examples = {m for t in texts for m in re.findall(r"(DRIFTLINE__[A-Z_]+)=([^\s`]+)", t)}
    examples.discard(("DRIFTLINE__SECTION__KEY", "value"))
    assert len(examples) >= 3
    for name, value in sorted(examples):
        load_config(environ={name: value})  # raises on an unknown key
    assert load_config(environ={"DRIFTLINE__TOPICS__JOIN": "12"}).topics.join == 12


def test_a_binary_model_has_two_classes_the_positive_last(tmp_path: Path) -> None:
    """0 and 1 unless configured; string classes name both, so an unknown class can be told
    from the negative one at ingest."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("models: {fraud: {positive_label: fraud, negative_label: ok}, kind: {task: multiclass}}\n")
    config = load_config(cfg, environ={})
    assert config.model("fraud").classes == ("ok", "fraud")
    assert config.model("anything").classes == ("0", "1")
    assert ModelConfig(positive_label="0").classes == ("1", "0")
    assert config.model("kind").classes is None  # any string or integer is a class
