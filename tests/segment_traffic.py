"""Labelled traffic with segments, and the catalog built from its reference, for the tests that
drive the real join and merge per segment (ranking, segment evidence, any_segment rules).

One generator so that "accuracy falls only for channel=ios" means the same events in every
such test: the first segment dimension takes its values in turn, the others are drawn, and each
event is right with the probability of its first-dimension value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from driftline.platform.config import Config, ModelConfig
from driftline.schemas import GroundTruthEvent, PredictionEvent
from driftline.streams.catalog import ModelCatalog, build_profiles

T0 = 1_767_225_600_000
W = 60_000
CHANNELS = ("web", "ios", "android")
#: channel in turn, region at random: the segments of the ranking and evidence tests
CHANNEL_REGION: Mapping[str, tuple[str, ...]] = {"channel": CHANNELS, "region": ("eu", "us")}


def labelled_events(
    rng: np.random.Generator,
    n: int,
    t0: int,
    accuracy: Mapping[str, float],
    dims: Mapping[str, tuple[str, ...]] = CHANNEL_REGION,
    features: bool = True,
) -> tuple[list[PredictionEvent], list[GroundTruthEvent]]:
    """n events of model ``m`` in [t0, t0 + W): the first dimension's values in turn, the others
    at random; right with the probability of the event's first-dimension value in ``accuracy``
    (default 0.9); each label 10 ms after its prediction."""
    first, *others = dims
    preds, labels = [], []
    for i in range(n):
        segments = {first: dims[first][i % len(dims[first])]}
        segments.update({d: dims[d][int(rng.integers(len(dims[d])))] for d in others})
        y = int(rng.integers(2))
        right = rng.random() < accuracy.get(segments[first], 0.9)
        pid = f"{t0}-{i}"
        ts = t0 + i * (W // n)
        preds.append(
            PredictionEvent(
                prediction_id=pid,
                model_id="m",
                timestamp=ts,
                features={"x": float(rng.normal())} if features else {},
                prediction=y if right else 1 - y,
                segments=segments,
            )
        )
        labels.append(GroundTruthEvent(prediction_id=pid, model_id="m", label=y, timestamp=ts + 10))
    return preds, labels


def reference_rows(
    preds: Sequence[PredictionEvent], labels: Sequence[GroundTruthEvent]
) -> list[dict[str, Any]]:
    """Paired events as the reference rows :func:`build_profiles` reads."""
    return [
        {
            "features": dict(p.features),
            "prediction": p.prediction,
            "label": g.label,
            "segments": dict(p.segments),
        }
        for p, g in zip(preds, labels, strict=True)
    ]


def model_catalog(cfg: ModelConfig, rows: Sequence[Mapping[str, Any]]) -> ModelCatalog:
    """The catalog of the one model ``m`` with ``cfg``, profiled from ``rows``."""
    return ModelCatalog(Config(defaults=cfg, models={"m": cfg}), build_profiles(rows, "m", cfg))
