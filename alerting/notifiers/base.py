"""The receiver contract: build an HTTP request from alerts, classify the answer. Nothing else.

Like Alertmanager's ``notify/<receiver>``, a notifier knows one destination's payload format and
which of its failures are worth retrying; retry with backoff, dedup, rate limiting and the
durable outbox are shared stages around it, so adding a destination touches no stage.

Everything here except :func:`send` is pure, so notifiers are tested without a network and an
outbox can decide what to do from an :class:`Outcome` alone:

- ``delivered`` -> mark done;
- ``retry`` -> schedule again, not before ``retry_after_s`` if set (else the outbox's backoff);
- neither -> permanent failure, keep ``reason`` for a human.

An outbox should persist the *alerts* (and the subscription name), not the :class:`HttpRequest`:
rebuilding the request at each attempt keeps credentials out of the database and gives signed
webhooks a fresh timestamp.

Each receiver module also declares its :class:`NotifierKind` (settings, factory, default rate),
and :mod:`.registry` lists them, so a new receiver is one module and one registry line.

httpx is imported only where a request is sent: the config loader validates kinds through the
registry, which imports every receiver module, and should not pay for an HTTP client it never
uses.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from driftline.alerting.secrets import REDACTED, Secret, scrub
from driftline.platform.text import printable
from driftline.schemas import AlertData, AlertEvent

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)


class _RedactHttpxUrls(logging.Filter):
    """httpx logs every request's full URL at INFO; webhook URLs are credentials, so its records
    keep only scheme, host and port. Installed on import, before any request is sent."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Only httpx logs here, so it is loaded whenever a record arrives.
        loaded = sys.modules.get("httpx")
        if loaded is not None and isinstance(record.args, tuple):
            record.args = tuple(_origin(a) if isinstance(a, loaded.URL) else a for a in record.args)
        return True


def _origin(url: httpx.URL) -> str:
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}/{REDACTED}"


logging.getLogger("httpx").addFilter(_RedactHttpxUrls())

#: Longest reason kept from a response body: enough for an error string, not a whole HTML page.
MAX_REASON_CHARS = 300


@dataclass(frozen=True, repr=False)
class HttpRequest:
    """One HTTP call to a destination.

    ``url`` is a :class:`Secret` when the URL itself is a credential (Slack webhooks). Header
    values may be Secrets (bearer tokens). ``secrets`` lists values embedded in the *body* (a
    PagerDuty routing key) so that :func:`send` can scrub them from anything it reports.
    """

    method: str
    url: Secret | str
    headers: Mapping[str, str | Secret]
    body: bytes
    secrets: tuple[Secret, ...] = field(default=())

    def all_secrets(self) -> tuple[Secret, ...]:
        """Every secret this request carries, for scrubbing."""
        found = [*self.secrets, *(v for v in self.headers.values() if isinstance(v, Secret))]
        if isinstance(self.url, Secret):
            found.append(self.url)
        return tuple(found)

    def __repr__(self) -> str:
        # The body may embed a routing key, so only its size is shown.
        url = REDACTED if isinstance(self.url, Secret) else self.url
        return (
            f"HttpRequest(method={self.method!r}, url={url!r}, headers={sorted(self.headers)}, "
            f"body=<{len(self.body)} bytes>)"
        )


@dataclass(frozen=True)
class Outcome:
    """What happened to one delivery attempt; ``reason`` never contains a secret."""

    delivered: bool
    retry: bool
    retry_after_s: float | None
    reason: str
    http_status: int | None


class Notifier(Protocol):
    """One destination's format. ``max_alerts_per_request`` tells the grouping stage how many
    alerts one request may carry (``None``: any number, e.g. one Slack message per group)."""

    # read-only: notifiers are frozen dataclasses, and some compute the limit from settings
    @property
    def kind(self) -> str: ...

    @property
    def max_alerts_per_request(self) -> int | None: ...

    def build(self, alerts: Sequence[AlertEvent]) -> HttpRequest: ...

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Outcome: ...


#: A setting that holds a secret reference (``{"env": NAME}`` / ``{"file": PATH}``).
SECRET: Final = "secret"
#: A URL given as a plain string, or as a secret reference where the URL is itself a credential.
URL_OR_SECRET: Final = "url"


@dataclass(frozen=True)
class Setting:
    """One key a kind accepts under ``settings``. ``type`` is :data:`SECRET`,
    :data:`URL_OR_SECRET`, or a Python type (or tuple of types) the value must be an instance of."""

    type: Any
    required: bool = False


@dataclass(frozen=True)
class NotifierKind:
    """What the rest of driftline needs to know about one destination kind, declared by its
    module next to the format it describes, so no table elsewhere has to learn the kind.

    - ``settings``: the keys a subscription of this kind accepts, checked when config is loaded;
    - ``make(settings, secret)``: the notifier (payload builder and response classifier) for one
      subscription; ``secret(key)`` reads the secret that setting ``key`` refers to;
    - ``default_rate_per_s``: requests per second when the subscription sets no
      ``rate_limit_per_s`` (``None``: no cap), from the destination's published limits;
    - ``needs_resolve``: what a firing alert opens there stays open until the resolve arrives
      (an incident, an active alert), so a test alert must be followed by its resolve.
    """

    name: str
    settings: Mapping[str, Setting]
    make: Callable[[Mapping[str, Any], Callable[[str], Secret]], Notifier]
    default_rate_per_s: float | None = None
    needs_resolve: bool = False


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110: delay-seconds or an HTTP-date).

    A date in the past means "now" (0.0); anything unparseable is ``None`` so the caller falls
    back to its own backoff rather than trusting garbage.

    >>> parse_retry_after("120")
    120.0
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=lambda: 1445412470.0)
    10.0
    >>> parse_retry_after("soon") is None
    True
    """
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]+", value):
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None  # RFC 9110 dates are always GMT; a zone-less date is not one
    return max(0.0, when.timestamp() - now())


def body_text(body: bytes) -> str:
    """A response body as one short line, for ``Outcome.reason``: the destination's words reach
    logs, ``driftline status`` and ``alerts list``, so its control characters are escaped."""
    text = printable(" ".join(body.decode("utf-8", errors="replace").split()))
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def classify_status(
    status: int,
    headers: Mapping[str, str],
    detail: str,
    *,
    now: Callable[[], float] = time.time,
) -> Outcome:
    """The classification every destination shares: 2xx delivered; 429 retry after
    ``Retry-After``; 5xx retry; any other status permanent (a 4xx will not heal by itself, and a
    3xx means the configured URL is wrong). ``detail`` is the destination's own error text."""
    reason = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
    if 200 <= status < 300:
        return Outcome(delivered=True, retry=False, retry_after_s=None, reason=reason, http_status=status)
    if status == 429:
        retry_after = parse_retry_after(_header(headers, "retry-after"), now=now)
        return Outcome(
            delivered=False, retry=True, retry_after_s=retry_after, reason=reason, http_status=status
        )
    if 500 <= status < 600:
        retry_after = parse_retry_after(_header(headers, "retry-after"), now=now)  # 503 may carry one
        return Outcome(
            delivered=False, retry=True, retry_after_s=retry_after, reason=reason, http_status=status
        )
    return Outcome(delivered=False, retry=False, retry_after_s=None, reason=reason, http_status=status)


def classify_response(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """:func:`classify_status` with the response body as the detail: the ``classify`` of every
    destination whose error text is its whole body (Slack, Alertmanager, webhooks), and what
    :func:`send` uses when it is given no other."""
    return classify_status(status, headers, body_text(body))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Case-insensitive lookup that works for plain dicts as well as httpx.Headers.
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def send(
    request: HttpRequest,
    client: httpx.Client,
    timeout: float,
    *,
    classify: Callable[[int, Mapping[str, str], bytes], Outcome] | None = None,
) -> Outcome:
    """Perform one attempt and report it as an :class:`Outcome`; never raises for network trouble.

    Transport errors (refused, reset, timeout) are retryable; an unsupported or malformed URL is
    a permanent configuration error. httpx puts the URL into exception messages, so every
    reported string is scrubbed of the request's secrets (and of httpx's normalised spelling of a
    secret URL), and no exception is chained out of here.
    """
    import httpx

    classify = classify or classify_response
    secrets = _scrub_list(request)
    url = request.url.reveal() if isinstance(request.url, Secret) else request.url
    headers = {k: v.reveal() if isinstance(v, Secret) else v for k, v in request.headers.items()}
    try:
        response = client.request(request.method, url, headers=headers, content=request.body, timeout=timeout)
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        outcome = Outcome(False, False, None, f"invalid URL: {scrub(_describe(exc), secrets)}", None)
    except httpx.TransportError as exc:
        outcome = Outcome(False, True, None, f"transport error: {scrub(_describe(exc), secrets)}", None)
    else:
        outcome = classify(response.status_code, response.headers, response.content)
        outcome = Outcome(
            outcome.delivered,
            outcome.retry,
            outcome.retry_after_s,
            scrub(outcome.reason, secrets),
            outcome.http_status,
        )
    log = logger.debug if outcome.delivered else logger.warning
    log("delivery %s: %s", "ok" if outcome.delivered else "failed", outcome.reason)
    return outcome


def deliver(
    notifier: Notifier,
    alerts: Sequence[AlertEvent],
    client: httpx.Client,
    *,
    timeout: float = 10.0,
) -> Outcome:
    """Build and send in one call, classifying with the notifier's own rules."""
    return send(notifier.build(alerts), client, timeout, classify=notifier.classify)


def _describe(exc: Exception) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _scrub_list(request: HttpRequest) -> list[Secret | str]:
    import httpx

    found: list[Secret | str] = list(request.all_secrets())
    if isinstance(request.url, Secret):
        # httpx may re-spell a URL (percent-encoding, default port, lower-case host) in messages.
        try:
            normalised = httpx.URL(request.url.reveal())
        except (httpx.InvalidURL, TypeError, ValueError):
            pass
        else:
            found.extend(
                [str(normalised), normalised.path, normalised.raw_path.decode("ascii", errors="replace")]
            )
    return [s for s in found if (s.reveal() if isinstance(s, Secret) else s) not in ("", "/")]


# --- wording shared by the human-facing formats (Slack, PagerDuty, Alertmanager) -------------


def format_value(x: float | None) -> str:
    """Numbers as people read them: 4 significant digits, ``n/a`` when not computable.

    >>> format_value(0.712345), format_value(1234567.0), format_value(None)
    ('0.7123', '1.235e+06', 'n/a')
    """
    return "n/a" if x is None else f"{x:.4g}"


def describe_segment(segment: Mapping[str, str]) -> str:
    """``region=eu, plan=gold`` in key order, or ``all`` for the whole model."""
    return ", ".join(f"{k}={v}" for k, v in sorted(segment.items())) or "all"


#: where a resolved value sits against the clear threshold, per rule comparison: the negation of
#: the firing condition (a ``<`` rule clears once the value is no longer below it, ``alerting.rules``)
_CLEARED: Final = {"<": "at or above", "<=": "above", ">": "at or below", ">=": "below"}


def condition_text(d: AlertData) -> str:
    """The metric's value against its threshold, in words true for the alert's state.

    Firing: the breach as the rule states it. Resolved: the value that cleared it and the side
    of the clear threshold it is on (``evidence["clear_threshold"]``, which the lifecycle sets;
    the fire threshold when an alert carries none). Both thresholds are absolute: a rule
    relative to its baseline has had the baseline added before the alert was made.

    >>> from driftline.schemas import Window
    >>> d = AlertData(dedup_key="k", status="firing", rule="r", metric="accuracy", severity="info",
    ...     model_id="m", model_version="1", segment={}, observed=0.5, threshold=0.6, comparison="<",
    ...     window=Window(start="2026-01-01T00:00:00.000Z", end="2026-01-01T00:01:00.000Z"),
    ...     starts_at="2026-01-01T00:01:00.000Z", evidence={"clear_threshold": 0.65})
    >>> condition_text(d)
    '0.5 < 0.6'
    >>> d.status, d.observed = "resolved", 0.8833
    >>> condition_text(d)
    'back to 0.8833, at or above 0.65'
    """
    if d.status != "resolved":
        return f"{format_value(d.observed)} {d.comparison} {format_value(d.threshold)}"
    clear = d.evidence.get("clear_threshold")
    if isinstance(clear, bool) or not isinstance(clear, int | float) or not math.isfinite(clear):
        clear = d.threshold
    side = f"{_CLEARED[d.comparison]} {format_value(clear)}"
    return side if d.observed is None else f"back to {format_value(d.observed)}, {side}"


def summary_line(event: AlertEvent) -> str:
    """One self-contained line: what, where, how bad. Used as a page title and fallback text.

    Resolved alerts lead with RESOLVED so that a reader skimming titles never mistakes the
    all-clear for a new page. Plain text for people (an SMS, a phone call's text-to-speech, a
    pager's title): rule, model and segment names are escaped (:func:`printable`), so a newline
    cannot forge a second line. Formats with their own markup escape that on top (Slack).
    """
    d = event.data
    state = "RESOLVED" if d.status == "resolved" else f"FIRING {d.severity}"
    return printable(
        f"[{state}] {d.rule} on {d.model_id} {d.model_version} ({describe_segment(d.segment)}): "
        f"{d.metric} {condition_text(d)}"
    )


def truncate(text: str, limit: int) -> str:
    """Cut to ``limit`` characters with an ellipsis, so a destination's length limit never
    turns a real alert into a rejected request."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
