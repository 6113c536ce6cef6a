"""The store URL and --since, resolved one way for every sub-command."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from driftline.apps.commands.common import parse_since, store_url


def test_store_url_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("store_url: sqlite:///from-file.sqlite\n")
    monkeypatch.delenv("DRIFTLINE_STORE_URL", raising=False)
    monkeypatch.delenv("DRIFTLINE_CONFIG", raising=False)
    assert store_url(argparse.Namespace()) == "sqlite:///driftline.sqlite"
    assert store_url(argparse.Namespace(config=str(cfg))) == "sqlite:///from-file.sqlite"
    monkeypatch.setenv("DRIFTLINE_STORE_URL", "sqlite:///from-env.sqlite")
    assert store_url(argparse.Namespace(config=str(cfg))) == "sqlite:///from-env.sqlite"
    assert (
        store_url(argparse.Namespace(config=str(cfg), store_url="sqlite:///flag.sqlite"))
        == "sqlite:///flag.sqlite"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", 10_000_000 - 5_400_000),
        ("7d", 10_000_000 - 604_800_000),
        ("123", 123),
        ("1970-01-01T00:00:01Z", 1000),
    ],
)
def test_since(text: str, expected: int) -> None:
    assert parse_since(text, now_ms=10_000_000) == expected


def test_bad_since_is_named() -> None:
    with pytest.raises(ValueError, match="--since 'yesterday'"):
        parse_since("yesterday")
