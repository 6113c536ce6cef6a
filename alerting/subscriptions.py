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

from driftline.alerting.notifiers.base import SECRET, URL_OR_SECRET, Notifier
from driftline.alerting.notifiers.registry import KINDS, SubscriptionConfigError, check_kind
from driftline.alerting.secrets import Secret, SecretError, check_secret_spec, resolve_secret
from driftline.schemas import AlertEvent

__all__ = [
    "KINDS",
    "Matcher",
    "Subscription",
    "SubscriptionConfigError",
    "alert_labels",
    "make_notifier",
    "route",
    "subscriptions_from_config",
]

Op = Literal["=", "!=", "=~", "!~"]

_MATCHER: Final = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*")


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
        return cls(name, op, _unquote(raw))  # type: ignore[arg-type]  # the regex admits only the four Op values

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
    model into one message; ``rate_limit_per_s`` caps requests to the destination (``None``: no cap);
    ``give_up_after_s`` is how long a notification is retried before it is given up (``None``:
    the notifier's setting, 24 h by default).
    """

    name: str
    kind: str
    matchers: tuple[Matcher, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    group_wait_s: float = 0.0
    rate_limit_per_s: float | None = None
    give_up_after_s: float | None = None

    def matches(self, event: AlertEvent) -> bool:
        labels = alert_labels(event)
        return all(m.matches(labels) for m in self.matchers)


def route(event: AlertEvent, subscriptions: Sequence[Subscription]) -> list[Subscription]:
    """Every subscription that wants this alert, in config order."""
    labels = alert_labels(event)
    return [s for s in subscriptions if all(m.matches(labels) for m in s.matchers)]


# --- config ------------------------------------------------------------------------------------

_TOP_LEVEL: Final = frozenset(
    {"name", "kind", "matchers", "settings", "group_wait_s", "rate_limit_per_s", "give_up_after_s"}
)


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
        kind = check_kind(item.get("kind"), f"{where}.kind")
        matchers = _matchers(item.get("matchers", []), where)
        settings = item.get("settings", {})
        if not isinstance(settings, Mapping):
            raise SubscriptionConfigError(f"{where}.settings: expected a mapping")
        _check_settings(kind, settings, where, allow_literal_secrets)
        group_wait = _number(item.get("group_wait_s", 0.0), f"{where}.group_wait_s", allow_zero=True)
        rate = item.get("rate_limit_per_s")
        rate_limit = None if rate is None else _number(rate, f"{where}.rate_limit_per_s", allow_zero=False)
        give_up = item.get("give_up_after_s")
        give_up_after = (
            None if give_up is None else _number(give_up, f"{where}.give_up_after_s", allow_zero=False)
        )
        result.append(
            Subscription(
                name=name,
                kind=kind,
                matchers=matchers,
                settings=_wrap_literal_secrets(kind, settings),
                group_wait_s=group_wait,
                rate_limit_per_s=rate_limit,
                give_up_after_s=give_up_after,
            )
        )
    return result


def _wrap_literal_secrets(kind: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Inline secret strings (allowed only on request) become Secrets at once, so a
    Subscription's repr never shows them."""
    wrapped = dict(settings)
    for key, setting in KINDS[kind].settings.items():
        if setting.type == SECRET and isinstance(wrapped.get(key), str):
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
    spec = KINDS[kind].settings
    unknown = sorted(set(settings) - set(spec))
    if unknown:
        raise SubscriptionConfigError(f"{where}.settings: unknown keys {unknown} for kind {kind!r}")
    for key, setting in spec.items():
        place = f"{where}.settings.{key}"
        if key not in settings:
            if setting.required:
                raise SubscriptionConfigError(f"{place}: required for kind {kind!r}")
            continue
        value, expected = settings[key], setting.type
        if expected in (SECRET, URL_OR_SECRET):
            if expected == URL_OR_SECRET and isinstance(value, str):
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
    kind = KINDS.get(sub.kind)
    if kind is None:
        raise SubscriptionConfigError(f"unknown destination kind {sub.kind!r}")
    s = sub.settings

    def secret(key: str) -> Secret:
        # Literals were wrapped as Secrets at load time (only when allowed); any other
        # string here is refused.
        return resolve_secret(s[key], environ=environ)

    return kind.make(s, secret)
