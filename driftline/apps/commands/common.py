"""What every sub-command that reads the store or a time range resolves the same way."""

from __future__ import annotations

import argparse
import time

from driftline.platform.config import load_config, parse_duration_ms
from driftline.schemas import rfc3339_to_ms

__all__ = ["parse_since", "store_url"]


def store_url(args: argparse.Namespace) -> str:
    """``--store-url``, else the configuration (``DRIFTLINE_STORE_URL`` over the file over the
    default ``sqlite:///driftline.sqlite``)."""
    if getattr(args, "store_url", None):
        return str(args.store_url)
    return load_config(getattr(args, "config", None)).store_url


def parse_since(text: str, now_ms: int | None = None) -> int:
    """``--since``: a duration back from now (``90m``, ``24h``, ``7d``), an RFC 3339 time or
    epoch milliseconds.

    >>> parse_since("2h", now_ms=10_000_000), parse_since("2026-01-01T00:00:00Z"), parse_since("5")
    (2800000, 1767225600000, 5)
    """
    text = text.strip()
    if text.isdigit():
        return int(text)
    if text[-1:].isalpha() and "T" not in text:
        try:
            back = parse_duration_ms(text)
        except ValueError:
            pass
        else:
            return (time.time_ns() // 1_000_000 if now_ms is None else now_ms) - back
    try:
        return rfc3339_to_ms(text)
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a duration (30m, 24h, 7d), an RFC 3339 time or epoch milliseconds"
        ) from None
