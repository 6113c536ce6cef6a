"""Every notifier kind driftline knows, one line each; everything kind-specific is read from here.

Subscriptions (settings checks, :func:`~driftline.alerting.subscriptions.make_notifier`), the
outbox's default rate and ``driftline subscriptions test`` (whether to send the resolve) all
ask :data:`KINDS`, so a new destination is a module declaring its
:class:`~driftline.alerting.notifiers.base.NotifierKind` plus one line below.

Importing this module is cheap (no HTTP client is loaded), so the config loader can call
:func:`check_kind` while it reads the file and fail on a typo before anything starts:

>>> check_kind("slack", "kind")
'slack'
>>> try:
...     check_kind("slak", "kind")
... except SubscriptionConfigError as exc:
...     print(exc)
kind: expected one of ['slack', 'pagerduty', 'webhook', 'alertmanager'], got 'slak' (did you mean 'slack'?)
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Final

from driftline.alerting.notifiers import alertmanager, pagerduty, slack, webhook
from driftline.alerting.notifiers.base import NotifierKind

#: Kind name -> its declaration, in the order the docs and error messages list them.
KINDS: Final[Mapping[str, NotifierKind]] = {
    kind.name: kind
    for kind in (
        slack.KIND,
        pagerduty.KIND,
        webhook.KIND,
        alertmanager.KIND,
    )
}


class SubscriptionConfigError(ValueError):
    """A subscription config that cannot work; the message says where (``subscriptions[2].…``)."""


def check_kind(name: Any, where: str) -> str:
    """Refuse a kind no module declares, naming the place, the valid kinds and the nearest one.

    The message starts like the other config errors (``<where>: expected ...``) so one grep
    finds them all; the suggestion comes from :func:`difflib.get_close_matches`.
    """
    if isinstance(name, str) and name in KINDS:
        return name
    close = difflib.get_close_matches(name, list(KINDS), n=1) if isinstance(name, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise SubscriptionConfigError(f"{where}: expected one of {list(KINDS)}, got {name!r}{hint}")
