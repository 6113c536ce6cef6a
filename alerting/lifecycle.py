"""The alert lifecycle: one small state machine per (model, version, segment, rule).

States follow Alertmanager and Prometheus: ``ok`` -> ``pending`` (breaching, not yet for long
enough) -> ``firing`` -> ``resolved`` -> ``ok``. Only the two transitions a human cares about emit
anything: ``pending -> firing`` emits one ``firing`` AlertData, ``firing -> resolved`` one
``resolved``. A window that merely confirms the current state emits nothing, so a long incident
pages once, not once per window.

Time is event time only: every decision uses the window's end in epoch ms, never the wall clock.
A replay of the same windows therefore yields exactly the same alerts, and the tracker ignores any
window that does not end after the last one it judged for that key, so re-processing windows after
a crash (at-least-once input) cannot double-fire or double-resolve.

>>> from driftline.alerting.rules import Rule
>>> rule = Rule(name="acc", metric="accuracy", comparison="<", threshold=0.8, for_windows=2)
>>> t = AlertTracker()
>>> def see(end: int, value: float) -> list[str]:
...     out = t.observe(rule, model_id="m", model_version="1", segment={}, window_start_ms=end - 60_000,
...                     window_end_ms=end, value=value, samples=100)
...     return [a.status for a in out]
>>> see(60_000, 0.7), see(120_000, 0.7), see(180_000, 0.7), see(240_000, 0.9)
([], ['firing'], [], ['resolved'])
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from driftline.alerting.rules import Rule
from driftline.schemas import AlertData, Window
from driftline.schemas.timefmt import ms_to_rfc3339

Status = Literal["ok", "pending", "firing", "resolved"]
_STATE_VERSION = 1


def dedup_key(model_id: str, model_version: str, segment: Mapping[str, str], rule_name: str) -> str:
    """A stable 32-hex-char id for one alert series, shared by its ``firing`` and ``resolved`` events.

    Hashes identifying fields only: a changed value, threshold or severity is the same alert, so
    PagerDuty and the outbox keep deduplicating across a config edit. Canonical JSON (sorted keys,
    no whitespace) makes the key independent of dict order and of the host.

    >>> dedup_key("m", "1", {"b": "2", "a": "1"}, "r") == dedup_key("m", "1", {"a": "1", "b": "2"}, "r")
    True
    """
    identity = {
        "model_id": model_id,
        "model_version": model_version,
        "rule": rule_name,
        "segment": {str(k): str(v) for k, v in segment.items()},
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


@dataclass(slots=True)
class _State:
    """Mutable per-key state; plain ints and strings so it serialises to JSON as is."""

    status: Status = "ok"
    breaching: int = 0  # consecutive breaching windows while ok/pending (and the count that fired)
    clearing: int = 0  # consecutive cleared windows while firing
    last_window_end_ms: int | None = None
    fired_at_ms: int | None = None
    resolved_at_ms: int | None = None


class AlertTracker:
    """Holds the lifecycle state of every alert series and turns window results into AlertData.

    One tracker serves any number of rules and models; the rule is passed to :meth:`observe`, so
    a rule edited between windows applies from the next window on without losing its state.
    """

    def __init__(self) -> None:
        self._states: dict[str, _State] = {}

    def status(self, key: str) -> Status:
        """The current lifecycle state of an alert series (``ok`` for a series never seen)."""
        state = self._states.get(key)
        return "ok" if state is None else state.status

    def observe(
        self,
        rule: Rule,
        *,
        model_id: str,
        model_version: str,
        segment: Mapping[str, str],
        window_start_ms: int,
        window_end_ms: int,
        value: float | None,
        samples: int,
        baseline: float | None = None,
        evidence: Mapping[str, Any] | None = None,
        baseline_samples: int = 0,
        family: int = 1,
    ) -> list[AlertData]:
        """Judge one window for one rule and return the AlertData to emit now (usually none).

        ``family`` is how many slices of the model the rule judges in this window: a rule with
        a ``test`` runs it at ``alpha / family`` (Bonferroni), so a model's false alerts do not
        grow with its number of segments.

        "No data" (value None or NaN, fewer than ``rule.min_samples`` samples, or a relative rule
        without a baseline) holds the state and does not mark the window as seen: a provisional
        performance window that lacks labels now may be judged later, once enough labels arrive.
        """
        # A window already judged is dropped by observe_verdict, the one place that checks it.
        if not rule.judgeable(value, samples, baseline):
            return []
        assert value is not None  # judgeable
        # numpy scalars in, plain JSON-safe scalars out
        value, samples = float(value), int(samples)
        baseline = None if baseline is None else float(baseline)
        sizes = {"samples": samples, "baseline_samples": int(baseline_samples), "family": int(family)}
        fire_threshold, clear_threshold = rule.thresholds(baseline, **sizes)
        breached, cleared = rule.sides(value, fire_threshold, clear_threshold)
        return self.observe_verdict(
            rule,
            model_id=model_id,
            model_version=model_version,
            segment=segment,
            window_start_ms=window_start_ms,
            window_end_ms=window_end_ms,
            breached=breached,
            cleared=cleared,
            value=value,
            threshold=fire_threshold,
            clear_threshold=clear_threshold,
            baseline=baseline,
            samples=samples,
            evidence=evidence,
        )

    def _seen(self, key: str, window_end_ms: int) -> bool:
        state = self._states.get(key)
        last_end = None if state is None else state.last_window_end_ms
        # repeated or out-of-order window: already judged, or too late to matter
        return last_end is not None and window_end_ms <= last_end

    def observe_verdict(
        self,
        rule: Rule,
        *,
        model_id: str,
        model_version: str,
        segment: Mapping[str, str],
        window_start_ms: int,
        window_end_ms: int,
        breached: bool,
        cleared: bool,
        value: float,
        threshold: float,
        clear_threshold: float,
        baseline: float | None,
        samples: int,
        evidence: Mapping[str, Any] | None = None,
    ) -> list[AlertData]:
        """Advance one series by a verdict decided elsewhere (``breached``: on the bad side of
        the fire threshold; ``cleared``: past the clear one), e.g. a rule judged over several
        slices (:mod:`driftline.alerting.any_segment`); ``value`` and the thresholds are what
        the alert shows. The same state machine as :meth:`observe`, which calls it."""
        key = dedup_key(model_id, model_version, segment, rule.name)
        if self._seen(key, window_end_ms):
            return []
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State()
        state.last_window_end_ms = window_end_ms

        def alert(status: Literal["firing", "resolved"], fired_at_ms: int, consecutive: int) -> AlertData:
            details = dict(evidence or {})
            details.update(
                value=value,
                threshold=threshold,
                clear_threshold=clear_threshold,
                baseline=baseline,
                samples=samples,
                consecutive_windows=consecutive,
            )
            return AlertData(
                dedup_key=key,
                status=status,
                rule=rule.name,
                metric=rule.metric,
                severity=rule.severity,
                model_id=model_id,
                model_version=model_version,
                segment=dict(segment),
                window=Window(start=ms_to_rfc3339(window_start_ms), end=ms_to_rfc3339(window_end_ms)),
                observed=value,
                threshold=threshold,
                comparison=rule.comparison,
                evidence=details,
                links={},
                starts_at=ms_to_rfc3339(fired_at_ms),
                ends_at=ms_to_rfc3339(window_end_ms) if status == "resolved" else None,
            )

        if state.status == "firing":
            # Hysteresis: only a value past the clear threshold counts towards resolving; a value
            # inside the band (or breaching again) restarts the count.
            state.clearing = state.clearing + 1 if cleared else 0
            if state.clearing < rule.clear_windows:
                return []
            fired_at = window_end_ms if state.fired_at_ms is None else state.fired_at_ms
            resolved = alert("resolved", fired_at, state.clearing)
            state.status, state.resolved_at_ms = "resolved", window_end_ms
            state.breaching = state.clearing = 0
            return [resolved]

        if not breached:
            state.status, state.breaching = "ok", 0
            return []
        state.breaching += 1
        in_cooldown = (
            state.resolved_at_ms is not None and window_end_ms - state.resolved_at_ms < rule.cooldown_ms
        )
        if state.breaching < rule.for_windows or in_cooldown:
            # Still pending: the count keeps growing through a cooldown, so the alert fires on the
            # first breaching window after the cooldown has passed, not for_windows later.
            state.status = "pending"
            return []
        state.status, state.fired_at_ms, state.clearing = "firing", window_end_ms, 0
        return [alert("firing", window_end_ms, state.breaching)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe snapshot of all series, for a changelog table or the SQL store."""
        return {
            "version": _STATE_VERSION,
            "alerts": {
                key: {
                    "status": s.status,
                    "breaching": s.breaching,
                    "clearing": s.clearing,
                    "last_window_end_ms": s.last_window_end_ms,
                    "fired_at_ms": s.fired_at_ms,
                    "resolved_at_ms": s.resolved_at_ms,
                }
                for key, s in self._states.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertTracker:
        """Restore a tracker from :meth:`to_dict`; it continues exactly where the snapshot stopped."""
        version = data.get("version")
        if version != _STATE_VERSION:
            raise ValueError(f"unsupported alert tracker state version {version!r}")
        tracker = cls()
        for key, s in data["alerts"].items():
            if s["status"] not in ("ok", "pending", "firing", "resolved"):
                raise ValueError(f"alert {key}: unknown status {s['status']!r}")
            tracker._states[key] = _State(
                status=s["status"],
                breaching=int(s["breaching"]),
                clearing=int(s["clearing"]),
                last_window_end_ms=s["last_window_end_ms"],
                fired_at_ms=s["fired_at_ms"],
                resolved_at_ms=s["resolved_at_ms"],
            )
        return tracker
