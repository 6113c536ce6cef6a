"""Configuration: an optional YAML file, overridden by environment variables (12-factor).

Precedence, lowest to highest: built-in defaults, the YAML file (``--config`` or
``DRIFTLINE_CONFIG``), then ``DRIFTLINE__SECTION__KEY=value`` variables, whose values
are parsed as YAML scalars so ``DRIFTLINE__TOPICS__JOIN=12`` is an int.
A handful of well-known variables have short names (see ``_SHORT_ENV``).

Secrets never live in this structure's repr: Kafka SASL passwords are read by
:class:`driftline.platform.kafka.KafkaSettings` from the environment or a file.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from driftline.alerting.rules import DEFAULT_RULES, SEVERITIES, Rule, rule_from_dict
from driftline.detectors.vocabulary import (
    CORRECTIONS,
    DEFAULT_ATTRIBUTION_THRESHOLD,
    DRIFT_TESTS,
    HEALTH_ALERTS,
    LABEL_LAG_QUANTILES,
    ONLINE_DETECTORS,
    check_metric,
    check_name,
    closest,
)
from driftline.schemas.cloudevents import CONTENT_MODES, ContentMode

Task = Literal["binary", "multiclass", "regression"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(value: str | int | float) -> int:
    """Parse ``"90s"``, ``"5m"``, ``"2h"``, ``"1d"`` or a bare number of seconds into milliseconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return round(value * 1000)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 500ms, 30s, 5m, 2h, 1d)")
    number, unit = match.groups()
    return round(float(number) * _UNIT_MS[unit or "s"])


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Thresholds of a model's integration-health alerts (``health:`` in a model's settings;
    docs/alerting.md). Checked here, so a bad value stops the worker at start-up with its key."""

    #: alert names of :data:`~driftline.detectors.vocabulary.HEALTH_ALERTS` not raised
    disable: tuple[str, ...] = ()
    severity: str = "warning"
    #: ``no-predictions``: this many consecutive windows without a prediction for the model
    #: (or a segment value it had predictions for)
    silence_windows: int = 3
    #: ``volume-out-of-band``: the band is learnt from up to ``volume_history`` past windows,
    #: judged from ``volume_min_history`` on: their robust trend (Theil-Sen) extrapolated one
    #: window ± ``volume_k`` robust sd of the residuals, at least the Poisson ``volume_alpha``
    #: quantiles. The defaults spend at most half an alert per model per 30 days of 5-minute
    #: windows over 5 slices (benchmarks/HEALTH.md), and still find a drop to half at once.
    #: Out-of-band windows stay out of the history, so a lasting change keeps firing; after
    #: ``volume_relearn`` consecutive ones (288: a day of 5-minute windows) the history
    #: restarts from them, the new level is accepted and the alert resolves
    volume_history: int = 48
    volume_min_history: int = 8
    volume_k: float = 6.0
    volume_alpha: float = 1e-6
    volume_relearn: int = 288
    #: ``label-coverage-low``: labelled below the binomial ``coverage_alpha`` quantile at the
    #: median coverage of the slice's past ``coverage_min_history``+ final windows, and more
    #: than ``coverage_tolerance`` below it; also the noise a ``label-coverage-falling`` must
    #: exceed (benchmarks/HEALTH.md)
    coverage_alpha: float = 1e-6
    coverage_min_history: int = 4
    coverage_tolerance: float = 0.02
    #: ``label-coverage-falling``: coverage lower in each of ``trend_windows`` windows than in
    #: the one before, by ``min_drop`` in all and by more than two windows' counting noise
    #: at ``coverage_alpha``
    trend_windows: int = 4
    min_drop: float = 0.05
    #: ``label-lag-high``: at the final phase, the window's ``lag_quantile`` of label time -
    #: prediction time above ``lag_share`` of the label horizon, judged once at least
    #: ``lag_min_labelled`` labels joined (a quantile of three labels is one late label)
    lag_quantile: float = 0.95
    lag_share: float = 0.8
    lag_min_labelled: int = 20

    def __post_init__(self) -> None:
        for i, name in enumerate(self.disable):
            check_name(name, HEALTH_ALERTS, f"disable[{i}]")
        check_name(self.severity, SEVERITIES, "severity")
        for key, low in (
            ("silence_windows", 1),
            ("volume_history", 1),
            ("volume_min_history", 1),
            ("volume_relearn", 1),
            ("coverage_min_history", 1),
            ("trend_windows", 1),
            ("lag_min_labelled", 1),
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")
        if self.volume_min_history > self.volume_history:
            raise ValueError(
                f"volume_min_history ({self.volume_min_history}) must be <= volume_history "
                f"({self.volume_history}): the band could never be judged"
            )
        if self.volume_relearn < self.volume_min_history:
            raise ValueError(
                f"volume_relearn ({self.volume_relearn}) must be >= volume_min_history "
                f"({self.volume_min_history}): the re-learnt level could never be judged"
            )
        for key in ("volume_alpha", "coverage_alpha"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 0.5:
                raise ValueError(f"{key} must be a number in (0, 0.5), got {value!r}")
        for key in ("volume_k", "coverage_tolerance", "min_drop"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e6:
                raise ValueError(f"{key} must be a number >= 0, got {value!r}")
        if self.coverage_tolerance > 1 or self.min_drop > 1:
            raise ValueError("coverage_tolerance and min_drop are shares of predictions: at most 1")
        q = self.lag_quantile
        if isinstance(q, bool) or not isinstance(q, int | float) or q not in LABEL_LAG_QUANTILES:
            known = ", ".join(str(k) for k in LABEL_LAG_QUANTILES)
            raise ValueError(
                f"lag_quantile must be one of {known} (the label-lag quantiles a window carries), got {q!r}"
            )
        lag = self.lag_share
        if isinstance(lag, bool) or not isinstance(lag, int | float) or not 0 < lag < 1e6:
            raise ValueError(f"lag_share must be a number > 0 (a share of the label horizon), got {lag!r}")

    @property
    def lag_metric(self) -> str:
        """The window metric ``label-lag-high`` watches (``label_lag_p95_ms`` by default)."""
        return LABEL_LAG_QUANTILES[self.lag_quantile]

    def enabled(self, alert: str) -> bool:
        return alert not in self.disable


def health_config(raw: Any, where: str, base: HealthConfig | None = None) -> HealthConfig:
    """A model's ``health:`` mapping over ``base`` (the defaults'), strictly: an unknown key
    is a typo, not a default."""
    base = base or HealthConfig()
    if raw is None:
        return base
    if isinstance(raw, HealthConfig):
        return raw
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: must be a mapping, got {raw!r}")
    allowed = sorted(HealthConfig.__dataclass_fields__)
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {allowed}")
    values = {name: getattr(base, name) for name in allowed} | dict(raw)
    if "disable" in raw:
        d = values["disable"]
        values["disable"] = (d,) if isinstance(d, str) else tuple(str(v) for v in (d or ()))
    for key in ("volume_k", "volume_alpha", "coverage_alpha", "coverage_tolerance", "min_drop", "lag_share"):
        if isinstance(values.get(key), int) and not isinstance(values[key], bool):
            values[key] = float(values[key])
    try:
        return HealthConfig(**values)
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}") from exc


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """How one model is monitored. Every field has a default so unknown models are still watched."""

    task: Task = "binary"
    window_ms: int = 300_000
    grace_ms: int = 60_000
    label_horizon_ms: int = 600_000
    #: a binary model's two classes: 0 and 1 (positive 1) unless both are named, e.g. "fraud" and
    #: "ok"; ingest dead-letters labels and predictions that are neither (see :attr:`classes`)
    positive_label: str = "1"
    negative_label: str | None = None
    reference: str | None = None
    bootstrap_windows: int = 3
    drift_alpha: float = 0.05
    #: multiple-testing correction across a window's features: "bh" (Benjamini-Hochberg),
    #: "bonferroni" or "none"; with "bh", "any corrected feature drifted" keeps the share of
    #: stationary windows flagged at alpha (tests/test_calibration.py)
    drift_correction: str = "bh"
    #: dataset drift when at least this share of features drifted; 0 means "any feature"
    drift_share: float = 0.0
    drift_tests: Mapping[str, str] = field(default_factory=dict)
    feature_types: Mapping[str, str] = field(default_factory=dict)
    sample_size: int = 1000
    rules: tuple[Rule, ...] = DEFAULT_RULES
    #: river detectors run on each slice's time-ordered error sample (docs/detectors.md);
    #: error-rate detectors (ddm, eddm, hddm_*) are skipped for regression models
    online_detectors: tuple[str, ...] = ("adwin", "ddm")
    #: the model's registry reference, copied into retraining requests as their lineage
    #: (keys in REGISTRY_KEYS; the registered version is the events' ``model_version``)
    registry: Mapping[str, str] = field(default_factory=dict)
    #: attribution drift below this nDCG of the window's attribution ranking against the
    #: reference's (``attribution_drift``, which a default rule watches); in (0, 1]
    attribution_threshold: float = DEFAULT_ATTRIBUTION_THRESHOLD
    #: integration-health alerts (silence, volume, labels, schema changes)
    health: HealthConfig = field(default_factory=HealthConfig)
    #: multivariate drift (PCA reconstruction error, docs/detectors.md): off by default, since
    #: its moment sketch makes the join 1.3x (8 features) to 1.7x (20) as costly
    #: (benchmarks/root_cause_cost.py --join); needs a reference profile
    multivariate: bool = False

    def __post_init__(self) -> None:
        if self.task not in ("binary", "multiclass", "regression"):
            raise ValueError(f"task must be binary, multiclass or regression, not {self.task!r}")
        if self.task == "binary":
            self._check_classes()
        if self.window_ms <= 0:
            raise ValueError("window must be positive")
        if self.grace_ms < 0 or self.label_horizon_ms < self.grace_ms:
            raise ValueError("need 0 <= grace <= label_horizon")
        if not 0 < self.drift_alpha < 1:
            raise ValueError("drift_alpha must be in (0, 1)")
        check_name(self.drift_correction, CORRECTIONS, "drift_correction")
        if not 0 <= self.drift_share <= 1:
            raise ValueError("drift_share must be in [0, 1]")
        for feature, test in self.drift_tests.items():
            check_name(test, DRIFT_TESTS, f"drift_tests.{feature}")
        for feature, kind in self.feature_types.items():
            check_name(kind, ("numeric", "categorical"), f"feature_types.{feature}")
        for i, rule in enumerate(self.rules):
            check_metric(rule.metric, f"rules[{i}] ({rule.name!r}).metric")
        unknown = sorted(set(self.online_detectors) - ONLINE_DETECTORS)
        if unknown:
            guess = closest(unknown[0], ONLINE_DETECTORS)
            hint = f"; did you mean {guess!r}?" if guess else ";"
            raise ValueError(f"unknown online detectors {unknown}{hint} known: {sorted(ONLINE_DETECTORS)}")
        unknown_registry = sorted(set(self.registry) - set(REGISTRY_KEYS))
        if unknown_registry:
            raise ValueError(f"registry: unknown keys {unknown_registry}; allowed: {list(REGISTRY_KEYS)}")
        threshold = self.attribution_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold <= 1:
            raise ValueError(
                f"attribution_threshold must be a number in (0, 1] (an nDCG; 0.9 is SageMaker "
                f"Clarify's), not {threshold!r}"
            )
        if len(set(self.online_detectors)) != len(self.online_detectors):
            raise ValueError("online_detectors lists a detector twice")
        if not isinstance(self.multivariate, bool):
            raise ValueError(f"multivariate must be true or false, not {self.multivariate!r}")

    @property
    def classes(self) -> tuple[str, str] | None:
        """A binary model's (negative, positive) class, as category strings; None for other
        tasks (multiclass: any string or integer is a class; regression: numbers).

        The other class of 0 or 1 is implied. String classes are named both, never guessed
        from the events: ingest workers see different partitions in different orders, so a
        class learnt from data could differ between workers and after a restart, and an
        unknown class could not be told from the negative one."""
        if self.task != "binary":
            return None
        if self.negative_label is not None:
            return (self.negative_label, self.positive_label)
        return ("1" if self.positive_label == "0" else "0", self.positive_label)

    def _check_classes(self) -> None:
        if self.negative_label is None and self.positive_label not in ("0", "1"):
            raise ValueError(
                "a binary model's classes are 0 and 1 unless positive_label and negative_label name "
                f"both: positive_label is {self.positive_label!r}, negative_label is not set"
            )
        if self.negative_label == self.positive_label:
            raise ValueError(f"positive_label and negative_label are both {self.positive_label!r}")


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """Topic names (all under one prefix) and explicit partition counts, created up front."""

    prefix: str = "driftline."
    predictions: int = 6
    ground_truth: int = 6
    join: int = 6
    partials: int = 2
    results: int = 2
    alerts: int = 2
    retraining: int = 2
    dead_letter: int = 2

    def name(self, topic: str) -> str:
        return f"{self.prefix}{topic}"


@dataclass(frozen=True, slots=True)
class CloudEventsConfig:
    """The CloudEvents content mode of each output topic (``structured`` or ``binary``).

    Structured stays the default because every reader of old gets the whole event in the
    value; binary suits routers that filter on ``ce_*`` headers. driftline's own readers take
    both, whatever is configured here, so the mode of a topic can change while it has readers.
    """

    alerts: ContentMode = "structured"
    retraining_requests: ContentMode = "structured"

    def __post_init__(self) -> None:
        for key in _CLOUDEVENTS_KEYS:
            check_name(getattr(self, key), CONTENT_MODES, f"cloudevents.{key}")


_CLOUDEVENTS_KEYS = ("alerts", "retraining_requests")


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration; build it with :func:`load_config`."""

    app_id: str = "driftline"
    bootstrap_servers: str = "127.0.0.1:9092"
    topics: TopicConfig = field(default_factory=TopicConfig)
    max_message_bytes: int = 1_048_576
    allow_unknown_models: bool = True
    max_models: int = 1000
    max_segment_values: int = 50
    #: events stamped further than this ahead of the wall clock are dead-lettered
    #: (too_far_ahead): a producer clock or unit bug must not drag event time forward
    max_future_skew_ms: int = 3_600_000
    #: how many of a partition's latest event times its event time ignores: an outlier stamped
    #: days ahead of the stream (but not of the clock) must not make the stream late; each one
    #: delays window closing by one event on a partition (0: the newest time counts at once)
    watermark_outliers: int = 2
    #: an event this far ahead of its partition's event time is counted ``ahead_of_stream``
    max_event_time_jump_ms: int = 3_600_000
    #: how often a worker checkpoints each join and merge partition's state (and only then
    #: acks, so commits follow): longer means less work in steady state, more replay after a crash
    checkpoint_interval_ms: int = 10_000
    #: join co-partitioned input where it is read: rows whose join partition is the input
    #: partition they came on skip the hop through ``internal.join-input`` when this worker
    #: holds both (docs/architecture.md, "Joining co-partitioned input where it is read")
    join_in_place: bool = True
    #: how often a worker re-reads which model versions have a reference profile in the
    #: store (``driftline models follow`` records them): the longest a rebaseline waits
    reference_refresh_ms: int = 30_000
    defaults: ModelConfig = field(default_factory=ModelConfig)
    models: Mapping[str, ModelConfig] = field(default_factory=dict)
    store_url: str = "sqlite:///driftline.sqlite"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108
    source: str = "/driftline/worker"
    #: alert subscriptions (read by the notifier, see docs/alerting.md)
    subscriptions: tuple[Mapping[str, Any], ...] = ()
    #: how alerts and retraining requests are laid out in Kafka messages (docs/contracts.md)
    cloudevents: CloudEventsConfig = field(default_factory=CloudEventsConfig)

    def model(self, model_id: str) -> ModelConfig:
        """The configuration of ``model_id``, falling back to the defaults for unconfigured models."""
        return self.models.get(model_id, self.defaults)

    def model_configs(self) -> tuple[ModelConfig, ...]:
        """The defaults and every configured model's configuration (unconfigured models get the
        defaults, so these are every configuration a model can have)."""
        return (self.defaults, *self.models.values())


_SHORT_ENV = {
    "DRIFTLINE_BOOTSTRAP_SERVERS": ("bootstrap_servers",),
    "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS": ("bootstrap_servers",),
    "DRIFTLINE_TOPIC_PREFIX": ("topics", "prefix"),
    "DRIFTLINE_APP_ID": ("app_id",),
    "DRIFTLINE_STORE_URL": ("store_url",),
}

_MODEL_KEYS = {
    "task": "task",
    "window": "window_ms",
    "grace": "grace_ms",
    "label_horizon": "label_horizon_ms",
    "positive_label": "positive_label",
    "negative_label": "negative_label",
    "reference": "reference",
    "bootstrap_windows": "bootstrap_windows",
    "drift_alpha": "drift_alpha",
    "drift_correction": "drift_correction",
    "drift_share": "drift_share",
    "drift_tests": "drift_tests",
    "feature_types": "feature_types",
    "sample_size": "sample_size",
    "rules": "rules",
    "online_detectors": "online_detectors",
    "registry": "registry",
    "attribution_threshold": "attribution_threshold",
    "health": "health",
    "multivariate": "multivariate",
}
#: a model's ``registry`` keys: tracking/registry URI, registered model name, alias, source run
REGISTRY_KEYS = ("uri", "name", "alias", "run_id")
_DURATION_KEYS = {"window", "grace", "label_horizon"}


def _model_config(raw: Mapping[str, Any], base: ModelConfig, where: str) -> ModelConfig:
    unknown = set(raw) - set(_MODEL_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_MODEL_KEYS)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        attr = _MODEL_KEYS[key]
        if key in _DURATION_KEYS:
            value = parse_duration_ms(value)
        elif key == "rules":
            try:
                value = tuple(rule_from_dict(r) for r in value)
            except ValueError as exc:  # say where in the file, not only which rule
                raise ValueError(f"{where}.rules: {exc}") from exc
        elif key in ("positive_label", "negative_label"):
            value = str(value)
        elif key == "online_detectors":
            value = (value,) if isinstance(value, str) else tuple(str(v) for v in (value or ()))
        elif key == "health":
            value = health_config(value, f"{where}.health", base.health)
        elif key in ("drift_tests", "feature_types", "registry"):
            if not isinstance(value or {}, Mapping):
                raise ValueError(f"{where}.{key}: must be a mapping, got {value!r}")
            value = {str(k): str(v) for k, v in (value or {}).items()}
        values[attr] = value
    fields = {name: getattr(base, name) for name in base.__dataclass_fields__}
    fields.update(values)
    try:
        return ModelConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, path in _SHORT_ENV.items():
        if name in environ:
            _set_path(tree, path, environ[name])
    for name, raw in environ.items():
        if name.startswith("DRIFTLINE__"):
            path = tuple(part.lower() for part in name[len("DRIFTLINE__") :].split("__") if part)
            if path:
                _set_path(tree, path, yaml.safe_load(raw) if raw else raw)
    return tree


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


_TOP_KEYS = {
    "app_id",
    "bootstrap_servers",
    "topics",
    "max_message_bytes",
    "allow_unknown_models",
    "max_models",
    "max_segment_values",
    "max_future_skew",
    "watermark_outliers",
    "max_event_time_jump",
    "checkpoint_interval",
    "join_in_place",
    "reference_refresh",
    "defaults",
    "models",
    "store_url",
    "metrics_host",
    "metrics_port",
    "source",
    "subscriptions",
    "cloudevents",
}


def config_from_mapping(raw: Mapping[str, Any], *, base_dir: Path | None = None) -> Config:
    """Build a :class:`Config` from a parsed YAML document, with clear errors for typos."""
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ValueError(f"config: unknown keys {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    defaults = _model_config(raw.get("defaults") or {}, ModelConfig(), "defaults")
    models: dict[str, ModelConfig] = {}
    for model_id, model_raw in (raw.get("models") or {}).items():
        cfg = _model_config(model_raw or {}, defaults, f"models.{model_id}")
        if cfg.reference and base_dir and not Path(cfg.reference).is_absolute():
            cfg = _replace(cfg, reference=str(base_dir / cfg.reference))
        models[str(model_id)] = cfg
    topics_raw = dict(raw.get("topics") or {})
    topics_raw = {k.replace("-", "_"): v for k, v in topics_raw.items()}
    try:
        # a str prefix and int partition counts, by name: TopicConfig() refuses unknown names
        fields: dict[str, Any] = {k: (str(v) if k == "prefix" else int(v)) for k, v in topics_raw.items()}
        topics = TopicConfig(**fields)
    except TypeError as exc:
        raise ValueError(f"topics: {exc}") from exc
    kwargs: dict[str, Any] = {
        "topics": topics,
        "defaults": defaults,
        "models": models,
    }
    for key in ("app_id", "bootstrap_servers", "store_url", "metrics_host", "source"):
        if key in raw:
            kwargs[key] = str(raw[key])
    for key in ("max_message_bytes", "max_models", "max_segment_values", "metrics_port"):
        if key in raw:
            kwargs[key] = int(raw[key])
    if "allow_unknown_models" in raw:
        kwargs["allow_unknown_models"] = bool(raw["allow_unknown_models"])
    if "subscriptions" in raw:
        kwargs["subscriptions"] = tuple(raw["subscriptions"] or ())
        _check_subscription_kinds(kwargs["subscriptions"])
    if "watermark_outliers" in raw:
        kwargs["watermark_outliers"] = int(raw["watermark_outliers"])
        if kwargs["watermark_outliers"] < 0:
            raise ValueError(f"watermark_outliers must be >= 0, not {raw['watermark_outliers']!r}")
    if "max_event_time_jump" in raw:
        kwargs["max_event_time_jump_ms"] = parse_duration_ms(raw["max_event_time_jump"])
    if "max_future_skew" in raw:
        kwargs["max_future_skew_ms"] = parse_duration_ms(raw["max_future_skew"])
    if "join_in_place" in raw:
        if not isinstance(raw["join_in_place"], bool):
            raise ValueError(f"join_in_place must be true or false, not {raw['join_in_place']!r}")
        kwargs["join_in_place"] = raw["join_in_place"]
    if "checkpoint_interval" in raw:
        kwargs["checkpoint_interval_ms"] = parse_duration_ms(raw["checkpoint_interval"])
    if "reference_refresh" in raw:
        kwargs["reference_refresh_ms"] = parse_duration_ms(raw["reference_refresh"])
        if kwargs["reference_refresh_ms"] <= 0:
            raise ValueError(
                f"reference_refresh must be a positive duration (e.g. 30s), not {raw['reference_refresh']!r}"
            )
    if "cloudevents" in raw:
        kwargs["cloudevents"] = _cloudevents_config(raw["cloudevents"])
    return Config(**kwargs)


def _cloudevents_config(raw: Any) -> CloudEventsConfig:
    """``cloudevents: {alerts: structured, retraining_requests: binary}``; a misspelt topic or
    mode stops loading with the key, the valid names and the closest one."""
    if raw is None:
        return CloudEventsConfig()
    if not isinstance(raw, Mapping):
        raise ValueError(f"cloudevents must map {' and '.join(_CLOUDEVENTS_KEYS)} to a content mode")
    modes: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        check_name(name, _CLOUDEVENTS_KEYS, "cloudevents: a topic")
        modes[name] = str(value)
    return CloudEventsConfig(**modes)


def _check_subscription_kinds(subscriptions: tuple[Any, ...]) -> None:
    """A misspelt notifier kind fails at load, in the worker as in the notifier (which checks
    the rest of a subscription, secrets included, when it starts)."""
    from driftline.alerting.notifiers.registry import check_kind

    for i, sub in enumerate(subscriptions):
        if isinstance(sub, Mapping) and "kind" in sub:
            check_kind(sub["kind"], f"subscriptions[{i}].kind")


def _replace(cfg: ModelConfig, **changes: Any) -> ModelConfig:
    fields = {name: getattr(cfg, name) for name in cfg.__dataclass_fields__}
    fields.update(changes)
    return ModelConfig(**fields)


def load_config(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Config:
    """Load the YAML file (if any) and apply environment overrides."""
    env = os.environ if environ is None else environ
    path = path or env.get("DRIFTLINE_CONFIG")
    raw: dict[str, Any] = {}
    base_dir = None
    if path:
        file = Path(path)
        raw = yaml.safe_load(file.read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{file}: the top level must be a mapping")
        base_dir = file.resolve().parent
    raw = _deep_merge(raw, _env_overrides(env))
    return config_from_mapping(raw, base_dir=base_dir)
