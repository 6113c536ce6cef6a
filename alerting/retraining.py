"""The retraining policy: when a firing alert becomes a request to retrain the model.

Retraining is expensive and slow, so the policy is deliberately stingy: only ``firing`` alerts of
rules marked ``retrain=True`` count, and at most one request per (model, version) per cooldown of
event time, however many segments or rules fire at once. Every decision uses the window's end in
epoch ms, never the wall clock, so replaying the same alerts yields the same requests with the same
idempotency keys, which the trainer side uses to drop duplicates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from driftline.alerting.rules import Rule
from driftline.schemas import AlertData, RetrainingRequestData, Window
from driftline.schemas.timefmt import ms_to_rfc3339

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
_STATE_VERSION = 1


def idempotency_key(
    model_id: str, model_version: str, reason: str, window_start_ms: int, window_end_ms: int
) -> str:
    """A 32-hex-char key that is the same for the same request, so trainers can drop redeliveries.

    >>> idempotency_key("m", "1", "accuracy-drop", 0, 60_000)
    '24cfcb7e25741dc951d9a72c1a4980fc'
    """
    identity = {
        "model_id": model_id,
        "model_version": model_version,
        "reason": reason,
        "window_start_ms": int(window_start_ms),
        "window_end_ms": int(window_end_ms),
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


class RetrainingPolicy:
    """Turns firing alerts into at most one RetrainingRequestData per model version per cooldown.

    ``lookback_ms`` sizes the suggested training range: the most recent data, ending at the window
    that showed the problem, is the data the retrained model has to fit.
    """

    def __init__(self, cooldown_ms: int = 6 * HOUR_MS, lookback_ms: int = 7 * DAY_MS) -> None:
        if cooldown_ms < 0:
            raise ValueError(f"cooldown_ms must be >= 0, got {cooldown_ms}")
        if lookback_ms <= 0:
            raise ValueError(f"lookback_ms must be > 0, got {lookback_ms}")
        self.cooldown_ms = cooldown_ms
        self.lookback_ms = lookback_ms
        self._last_request_ms: dict[tuple[str, str], int] = {}

    def consider(
        self,
        alert: AlertData,
        rule: Rule,
        *,
        window_start_ms: int,
        window_end_ms: int,
        evidence: Mapping[str, Any],
    ) -> RetrainingRequestData | None:
        """Return a request if this alert warrants retraining now, else None.

        A window ending at or before the last request for the model is never a new request: that
        makes replays harmless and collapses several rules or segments firing in the same window
        into one request, even with a zero cooldown.
        """
        if alert.rule != rule.name:
            raise ValueError(f"alert is for rule {alert.rule!r} but rule {rule.name!r} was given")
        if alert.status != "firing" or not rule.retrain:
            return None
        model = (alert.model_id, alert.model_version)
        last = self._last_request_ms.get(model)
        if last is not None and (window_end_ms <= last or window_end_ms - last < self.cooldown_ms):
            return None
        self._last_request_ms[model] = window_end_ms
        reason = rule.name
        details = dict(evidence)
        details["alert"] = {
            "dedup_key": alert.dedup_key,
            "rule": alert.rule,
            "metric": alert.metric,
            "severity": alert.severity,
            "segment": dict(alert.segment),
            "observed": alert.observed,
            "threshold": alert.threshold,
            "comparison": alert.comparison,
            "evidence": dict(alert.evidence),
        }
        return RetrainingRequestData(
            idempotency_key=idempotency_key(
                alert.model_id, alert.model_version, reason, window_start_ms, window_end_ms
            ),
            model_id=alert.model_id,
            model_version=alert.model_version,
            reason=reason,
            evidence=details,
            window=Window(start=ms_to_rfc3339(window_start_ms), end=ms_to_rfc3339(window_end_ms)),
            suggested_training_range=Window(
                start=ms_to_rfc3339(window_end_ms - self.lookback_ms), end=ms_to_rfc3339(window_end_ms)
            ),
            requested_at=ms_to_rfc3339(window_end_ms),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe snapshot (configuration and per-model cooldown clocks)."""
        return {
            "version": _STATE_VERSION,
            "cooldown_ms": self.cooldown_ms,
            "lookback_ms": self.lookback_ms,
            # A list, not a dict: (model_id, model_version) is a pair, and JSON keys are strings.
            "last_requests": [
                {"model_id": m, "model_version": v, "window_end_ms": ms}
                for (m, v), ms in sorted(self._last_request_ms.items())
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetrainingPolicy:
        """Restore a policy from :meth:`to_dict`; cooldowns keep running from the saved requests."""
        version = data.get("version")
        if version != _STATE_VERSION:
            raise ValueError(f"unsupported retraining policy state version {version!r}")
        policy = cls(cooldown_ms=int(data["cooldown_ms"]), lookback_ms=int(data["lookback_ms"]))
        for row in data["last_requests"]:
            policy._last_request_ms[(row["model_id"], row["model_version"])] = int(row["window_end_ms"])
        return policy
