"""Credentials for alert destinations, kept out of reprs, logs, exceptions and config files.

A Slack webhook URL, a PagerDuty routing key or a signing secret grants anyone who reads it the
power to page people, so it is held in a :class:`Secret` whose ``str``/``repr`` say
``<redacted>``; code that really needs the value calls :meth:`Secret.reveal` at the last moment.
Config names *where* a secret lives (``{"env": "NAME"}`` or ``{"file": "/path"}``), never the
value itself, so a config dump or a committed YAML file cannot leak it.

>>> s = Secret("hunter2")
>>> s, str(s), f"{s}"
(<redacted>, '<redacted>', '<redacted>')
>>> s.reveal()
'hunter2'
>>> scrub("POST https://hooks.example/hunter2 failed", [s])
'POST https://hooks.example/<redacted> failed'
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

REDACTED: Final = "<redacted>"


class SecretError(ValueError):
    """A secret reference that cannot be resolved; the message names the reference, never a value."""


class Secret:
    """A string that refuses to print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("a Secret holds a str")
        self._value = value

    def reveal(self) -> str:
        """The value itself: call only where it leaves the process (an HTTP request, an HMAC)."""
        return self._value

    def __repr__(self) -> str:
        return REDACTED

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        # Constant-time, so comparing a presented token with a Secret leaks no timing.
        return isinstance(other, Secret) and hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> Any:
        # Pickling (multiprocessing, caches) would write the value to disk or a pipe unnoticed.
        raise TypeError("Secret objects cannot be pickled")

    def __bool__(self) -> bool:
        return bool(self._value)


def is_secret_spec(spec: object) -> bool:
    """True for the reference shapes :func:`resolve_secret` accepts without ``allow_literal``."""
    return (
        isinstance(spec, Mapping)
        and len(spec) == 1
        and next(iter(spec)) in ("env", "file")
        and isinstance(next(iter(spec.values())), str)
    )


def check_secret_spec(spec: object, *, allow_literal: bool = False) -> None:
    """Validate the *shape* of a reference without reading it, so config errors surface at load
    time while the environment of the delivery worker supplies the value later."""
    if isinstance(spec, str):
        if not allow_literal:
            raise SecretError('a literal secret is not allowed here; use {"env": NAME} or {"file": PATH}')
        return
    if not is_secret_spec(spec):
        raise SecretError('a secret reference must be {"env": NAME} or {"file": PATH}')


def resolve_secret(
    spec: str | Mapping[str, str] | Secret,
    *,
    allow_literal: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Secret:
    """Read the secret a reference points to.

    A file's trailing newline is dropped (``echo key > file`` is how most people write them);
    empty values are errors, because an empty routing key fails far away and confusingly.
    """
    if isinstance(spec, Secret):
        return spec
    check_secret_spec(spec, allow_literal=allow_literal)
    if isinstance(spec, str):
        value = spec
        where = "literal"
    elif "env" in spec:
        name = spec["env"]
        env = os.environ if environ is None else environ
        if name not in env:
            raise SecretError(f"environment variable {name!r} is not set")
        value, where = env[name], f"environment variable {name!r}"
    else:
        path = Path(spec["file"])
        try:
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise SecretError(f"cannot read secret file {str(path)!r}: {exc.strerror}") from None
        where = f"secret file {str(path)!r}"
    if not value:
        raise SecretError(f"{where} is empty")
    return Secret(value)


def scrub(text: str, secrets: Iterable[Secret | str]) -> str:
    """Replace every occurrence of each secret value in ``text`` with ``<redacted>``.

    Longest values first, so a secret that contains another (a URL and its token) is removed
    whole rather than leaving the remainder of the longer one behind.
    """
    values = {s.reveal() if isinstance(s, Secret) else s for s in secrets}
    for value in sorted((v for v in values if v), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text
