"""Who hears about which alert: Alertmanager-style label matchers per destination.

An alert's labels are ``model``, ``version``, ``rule``, ``metric``, ``severity``, ``status``
plus one label per segment dimension (a dimension named like a built-in label is shadowed by
it). A subscription receives an alert when *all* its matchers match; every matching
subscription receives it (there is no first-match routing tree, so adding a subscription never
silences another).

Matchers follow Alertmanager: ``=``, ``!=``, ``=~``, ``!~``; regexes are fully anchored
(``severity=~"crit"`` does not match ``critical``), and an absent label equals the empty string.

>>> m = Matcher.parse('severity=~"critical|error"')
>>> m.matches({"severity": "critical"}), m.matches({"severity": "criticality"})
(True, False)
>>> Matcher.parse("region!=eu").matches({})
True
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from driftline.alerting.notifiers.alertmanager import AlertmanagerNotifier
from driftline.alerting.notifiers.base import Notifier
from driftline.alerting.notifiers.pagerduty import EVENTS_URL, PagerDutyNotifier
from driftline.alerting.notifiers.slack import SlackNotifier
from driftline.alerting.notifiers.webhook import WebhookNotifier
from driftline.alerting.secrets import Secret, SecretError, check_secret_spec, resolve_secret
from driftline.schemas import AlertEvent

Op = Literal["=", "!=", "=~", "!~"]
KINDS: Final = ("slack", "pagerduty", "webhook", "alertmanager")

_MATCHER: Final = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*")


class SubscriptionConfigError(ValueError):
    """A subscription config that cannot work; the message says where (``subscriptions[2].…``)."""


@dataclass(frozen=True)
class Matcher:
    """One ``label op value`` test."""

    name: str
    op: Op
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~") and self._regex is None:
            try:
                # fullmatch == Alertmanager's implicit ^(?:...)$ anchoring
                object.__setattr__(self, "_regex", re.compile(self.value))
            except re.error as exc:
                raise ValueError(f"invalid regex {self.value!r}: {exc}") from None

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """``name op value``; the value may be double-quoted (with ``\\"`` and ``\\\\`` escapes)."""
        found = _MATCHER.fullmatch(text)
        if found is None:
            raise ValueError(f'not a matcher: {text!r} (expected e.g. severity=~"critical|error")')
        name, op, raw = found.groups()
        return cls(name, op, _unquote(raw))  # type: ignore[arg-type]

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self._regex is not None
        found = self._regex.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        body = raw[1:-1]
        if re.search(r'(?<!\\)(?:\\\\)*"', body):
            raise ValueError(f"unescaped quote in {raw!r}")
        return re.sub(r"\\(.)", r"\1", body)
    if '"' in raw:
        raise ValueError(f"unbalanced quotes in {raw!r}")
    return raw


def alert_labels(event: AlertEvent) -> dict[str, str]:
    """The labels matchers see for one alert."""
    d = event.data
    labels = {str(k): str(v) for k, v in d.segment.items()}
    labels.update(
        model=d.model_id,
        version=d.model_version,
        rule=d.rule,
        metric=d.metric,
        severity=d.severity,
        status=d.status,
    )
    return labels


@dataclass(frozen=True)
class Subscription:
    """A destination plus the alerts it wants.

    ``settings`` holds secret *references* (``{"env": ...}``), resolved only by
    :func:`make_notifier`, so loading config needs no credentials and a Subscription can be
    logged safely. ``group_wait_s`` is how long the grouping stage waits to batch alerts of one
    model into one message; ``rate_limit_per_s`` caps requests to the destination (``None``: no cap).
    """

    name: str
    kind: str
    matchers: tuple[Matcher, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    group_wait_s: float = 0.0
    rate_limit_per_s: float | None = None

    def matches(self, event: AlertEvent) -> bool:
        labels = alert_labels(event)
        return all(m.matches(labels) for m in self.matchers)


def route(event: AlertEvent, subscriptions: Sequence[Subscription]) -> list[Subscription]:
    """Every subscription that wants this alert, in config order."""
    labels = alert_labels(event)
    return [s for s in subscriptions if all(m.matches(labels) for m in s.matchers)]


# --- config ------------------------------------------------------------------------------------

#: Per kind: setting -> (required, "secret" | "url" (secret or plain string) | python type).
_SETTINGS: Final[dict[str, dict[str, tuple[bool, Any]]]] = {
    "slack": {"url": (True, "secret"), "dashboard_url": (False, str)},
    "pagerduty": {
        "routing_key": (True, "secret"),
        "url": (False, str),
        "source": (False, str),
        "client_url": (False, str),
    },
    "webhook": {
        "url": (True, "url"),
        "signing_secret": (False, "secret"),
        "batch": (False, bool),
        "headers": (False, dict),
    },
    "alertmanager": {
        "url": (True, str),
        "bearer_token": (False, "secret"),
        "generator_url": (False, str),
        "firing_ttl_s": (False, (int, float)),
    },
}
_TOP_LEVEL: Final = frozenset({"name", "kind", "matchers", "settings", "group_wait_s", "rate_limit_per_s"})


def subscriptions_from_config(
    raw: Sequence[Mapping[str, Any]], *, allow_literal_secrets: bool = False
) -> list[Subscription]:
    """Validate and build subscriptions from parsed YAML/JSON.

    Every problem names its place (``subscriptions[1].settings.url: ...``). Secret references
    are checked for shape only; their values are read when the notifier is made.
    ``allow_literal_secrets`` permits inline secret strings (tests, local demos only).
    """
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise SubscriptionConfigError("subscriptions: expected a list")
    result: list[Subscription] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        where = f"subscriptions[{i}]"
        if not isinstance(item, Mapping):
            raise SubscriptionConfigError(f"{where}: expected a mapping")
        unknown = sorted(set(item) - _TOP_LEVEL)
        if unknown:
            raise SubscriptionConfigError(f"{where}: unknown keys {unknown}")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise SubscriptionConfigError(f"{where}.name: required non-empty string")
        where = f"subscriptions[{i}] ({name})"
        if name in names:
            raise SubscriptionConfigError(f"{where}.name: duplicate subscription name")
        names.add(name)
        kind = item.get("kind")
        if kind not in KINDS:
            raise SubscriptionConfigError(f"{where}.kind: expected one of {list(KINDS)}, got {kind!r}")
        matchers = _matchers(item.get("matchers", []), where)
        settings = item.get("settings", {})
        if not isinstance(settings, Mapping):
            raise SubscriptionConfigError(f"{where}.settings: expected a mapping")
        _check_settings(kind, settings, where, allow_literal_secrets)
        group_wait = _number(item.get("group_wait_s", 0.0), f"{where}.group_wait_s", allow_zero=True)
        rate = item.get("rate_limit_per_s")
        rate_limit = None if rate is None else _number(rate, f"{where}.rate_limit_per_s", allow_zero=False)
        result.append(
            Subscription(
                name=name,
                kind=kind,
                matchers=matchers,
                settings=_wrap_literal_secrets(kind, settings),
                group_wait_s=group_wait,
                rate_limit_per_s=rate_limit,
            )
        )
    return result


def _wrap_literal_secrets(kind: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Inline secret strings (allowed only on request) become Secrets at once, so a
    Subscription's repr never shows them."""
    wrapped = dict(settings)
    for key, (_, expected) in _SETTINGS[kind].items():
        if expected == "secret" and isinstance(wrapped.get(key), str):
            wrapped[key] = Secret(wrapped[key])
    return wrapped


def _matchers(raw: Any, where: str) -> tuple[Matcher, ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise SubscriptionConfigError(f"{where}.matchers: expected a list of strings")
    parsed = []
    for j, text in enumerate(raw):
        if not isinstance(text, str):
            raise SubscriptionConfigError(f"{where}.matchers[{j}]: expected a string")
        try:
            parsed.append(Matcher.parse(text))
        except ValueError as exc:
            raise SubscriptionConfigError(f"{where}.matchers[{j}]: {exc}") from None
    return tuple(parsed)


def _check_settings(kind: str, settings: Mapping[str, Any], where: str, allow_literal: bool) -> None:
    spec = _SETTINGS[kind]
    unknown = sorted(set(settings) - set(spec))
    if unknown:
        raise SubscriptionConfigError(f"{where}.settings: unknown keys {unknown} for kind {kind!r}")
    for key, (required, expected) in spec.items():
        place = f"{where}.settings.{key}"
        if key not in settings:
            if required:
                raise SubscriptionConfigError(f"{place}: required for kind {kind!r}")
            continue
        value = settings[key]
        if expected in ("secret", "url"):
            if expected == "url" and isinstance(value, str):
                continue  # a plain URL is allowed where the URL is not itself a credential
            try:
                check_secret_spec(value, allow_literal=allow_literal)
            except SecretError as exc:
                raise SubscriptionConfigError(f"{place}: {exc}") from None
        elif not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise SubscriptionConfigError(f"{place}: wrong type {type(value).__name__}")


def _number(value: Any, place: str, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SubscriptionConfigError(f"{place}: expected a number")
    if value < 0 or (value == 0 and not allow_zero):
        raise SubscriptionConfigError(f"{place}: must be {'>= 0' if allow_zero else '> 0'}")
    return float(value)


def make_notifier(sub: Subscription, *, environ: Mapping[str, str] | None = None) -> Notifier:
    """The notifier for a subscription, with its secrets read now (env or file).

    Raises :class:`~driftline.alerting.secrets.SecretError` when a referenced secret is missing;
    the message names the variable or file, never a value.
    """
    s = sub.settings

    def secret(key: str) -> Secret:
        # Literals were wrapped as Secrets at load time (only when allowed); any other
        # string here is refused.
        return resolve_secret(s[key], environ=environ)

    if sub.kind == "slack":
        return SlackNotifier(url=secret("url"), dashboard_url=s.get("dashboard_url"))
    if sub.kind == "pagerduty":
        return PagerDutyNotifier(
            routing_key=secret("routing_key"),
            url=s.get("url", EVENTS_URL),
            source=s.get("source", "driftline"),
            client_url=s.get("client_url"),
        )
    if sub.kind == "webhook":
        url = s["url"] if isinstance(s["url"], str) else secret("url")
        return WebhookNotifier(
            url=url,
            signing_secret=secret("signing_secret") if "signing_secret" in s else None,
            batch=bool(s.get("batch", True)),
            headers=dict(s.get("headers", {})),
        )
    if sub.kind == "alertmanager":
        return AlertmanagerNotifier(
            url=s["url"],
            bearer_token=secret("bearer_token") if "bearer_token" in s else None,
            generator_url=s.get("generator_url"),
            firing_ttl_s=float(s.get("firing_ttl_s", 24 * 3600.0)),
        )
    raise SubscriptionConfigError(f"unknown destination kind {sub.kind!r}")
