"""A simulated serving app: a binary classifier's predictions and delayed labels, with
optional injected changes, for the demo, the tests and anyone trying driftline out.

The model is calibrated while the world stays as it was trained: ``p = sigmoid(1.5·x1 - x2 +
0.8·[channel = web])``, the prediction is ``p ≥ 0.5`` and the label is drawn from
``Bernoulli(p)``. Two changes can be injected at given fractions of the stream:

- ``feature_drift_at``: ``x1`` shifts by +1.5 standard deviations (covariate drift the model never saw);
- ``concept_drift_at``: the true relation flips sign for ``x2`` and ``x1`` (the model's
  accuracy collapses although the inputs look the same as before).

With ``attributions``, each prediction carries its exact SHAP values: for a model linear in
the logit with independent features they are ``coef · (x - E[x])`` (``amount`` is unused, 0).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

__all__ = ["Traffic", "simulate", "write_jsonl"]

CHANNELS = np.array(["web", "app", "store"])


@dataclass(slots=True)
class Traffic:
    predictions: list[dict[str, Any]]
    labels: list[dict[str, Any]]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def simulate(
    n: int,
    *,
    model_id: str = "fraud-detector",
    model_version: str = "v1",
    start_ms: int = 1_767_225_600_000,
    events_per_s: float = 100.0,
    label_delay_ms: int = 5_000,
    label_share: float = 1.0,
    feature_drift_at: float | None = None,
    concept_drift_at: float | None = None,
    seed: int = 0,
    id_prefix: str = "p",
    attributions: bool = False,
) -> Traffic:
    """``n`` predictions (event time spaced at ``events_per_s``) and their labels."""
    rng = np.random.default_rng(seed)
    t = start_ms + np.floor(np.arange(n) * 1000.0 / events_per_s).astype(np.int64)
    position = np.arange(n) / max(n, 1)
    x1 = rng.normal(0.0, 1.0, n)
    x2 = rng.normal(0.0, 1.0, n)
    amount = rng.lognormal(3.0, 0.5, n)
    channel = CHANNELS[rng.integers(0, len(CHANNELS), n)]
    if feature_drift_at is not None:
        x1 = np.where(position >= feature_drift_at, x1 + 1.5, x1)
    web = (channel == "web").astype(np.float64)
    p = _sigmoid(1.5 * x1 - 1.0 * x2 + 0.8 * web)
    truth = p
    if concept_drift_at is not None:
        truth = np.where(position >= concept_drift_at, _sigmoid(-1.5 * x1 + 1.0 * x2 + 0.8 * web), p)
    y = rng.random(n) < truth
    labelled = rng.random(n) < label_share
    delay = rng.integers(0, label_delay_ms + 1, n)
    predictions: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    for i in range(n):
        pid = f"{id_prefix}{i:08d}"
        predictions.append(
            {
                "prediction_id": pid,
                "model_id": model_id,
                "model_version": model_version,
                "timestamp": int(t[i]),
                "features": {
                    "x1": round(float(x1[i]), 6),
                    "x2": round(float(x2[i]), 6),
                    "amount": round(float(amount[i]), 2),
                    "channel": str(channel[i]),
                },
                "prediction": int(p[i] >= 0.5),
                "score": round(float(p[i]), 6),
                "segments": {"channel": str(channel[i])},
            }
        )
        if attributions:
            predictions[-1]["attributions"] = {
                "x1": round(1.5 * float(x1[i]), 6),
                "x2": round(-1.0 * float(x2[i]), 6),
                "amount": 0.0,
                "channel": round(0.8 * (float(web[i]) - 1.0 / len(CHANNELS)), 6),
            }
        if labelled[i]:
            labels.append(
                {
                    "prediction_id": pid,
                    "model_id": model_id,
                    "label": int(y[i]),
                    "timestamp": int(t[i] + delay[i]),
                }
            )
    return Traffic(predictions, labels)


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> None:
    with open(path, "wb") as fh:
        for row in rows:
            fh.write(orjson.dumps(row))
            fh.write(b"\n")
