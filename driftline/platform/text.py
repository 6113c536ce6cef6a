"""Producer strings on a person's screen: visible, never obeyed.

Model ids, versions, feature names, segment values and rule names come from whoever can write
to the input topics or the configuration. Printed raw, an ESC starts a terminal control
sequence (recolour, move the cursor, retitle the window), a newline forges a table row or a log
line, and a bidi override (U+202E) makes ``fraud-v2`` read as something else. Every
human-readable output (tables, log lines, error messages, plain-text notification summaries)
passes such strings through :func:`printable`; machine outputs (``--json``, the webhook's
CloudEvents, Alertmanager labels) keep them exact, since JSON escapes them itself and a
consumer matching on a model id needs the real one.

The escapes are Python's own (those of ``repr``, without the quotes): a character that
``str.isprintable`` refuses (C0 and C1 controls, DEL, format characters such as the bidi
overrides and zero-width joiners, line and paragraph separators, spaces other than ``" "``)
becomes ``\\n``, ``\\x1b``, ``\\u202e`` and so on. Backslashes themselves are left alone, so the
function is idempotent: text escaped twice (a ``repr`` inside an error message, a summary line
printed in a table) reads the same as text escaped once. The price is that a name spelled with
the four characters ``\\x1b`` looks like one holding an ESC; neither can move the cursor.

>>> printable("fraud\\x1b[2J\\nfake row\\x00")
'fraud\\\\x1b[2J\\\\nfake row\\\\x00'
>>> printable("abc\\u202edef"), printable("région=eu"), printable(printable("a\\tb"))
('abc\\\\u202edef', 'région=eu', 'a\\\\tb')
"""

from __future__ import annotations

__all__ = ["printable"]


def printable(text: str) -> str:
    """``text`` with every non-printable character written as its Python escape (see the module)."""
    if text.isprintable():  # the common case, one C-speed scan
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
