"""A Slack incoming webhook: ``POST /services/T…/B…/<token>`` with a JSON message.

Answers as Slack documents: ``200 ok``; ``400 invalid_payload`` for a malformed message
(bad JSON, neither ``text`` nor ``blocks``, unknown block type, a Block Kit limit exceeded);
``404 no_service`` for an unknown webhook path. Scripted replies cover the rest
(``403 action_prohibited``, ``404 channel_not_found``, ``410 channel_is_archived``, ``429``).

Slack does not reject unescaped ``<``, ``>`` and ``&`` in ``text`` or ``mrkdwn``: it parses
them, so ``<!channel>`` notifies everyone and ``<https://…|click here>`` is a disguised link
(https://api.slack.com/reference/surfaces/formatting#escaping). The fake accepts them as
Slack does; :func:`special_sequences` says what Slack would act on, for tests to assert on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from fakes import FakeServer, Reply

WEBHOOK_PATH = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"


def slack_error(status: int, error: str, headers: Mapping[str, str] | None = None) -> Reply:
    """An error reply the way Slack sends it: a bare string, not JSON."""
    return Reply.text(status, error, headers)


class FakeSlack(FakeServer):
    def __init__(self, path: str = WEBHOOK_PATH) -> None:
        super().__init__()
        self.path = path

    @property
    def webhook_url(self) -> str:
        return self.base_url + self.path

    def validate(self, path: str, headers: Mapping[str, str], body: bytes) -> Reply | None:
        if path != self.path:
            return slack_error(404, "no_service")
        try:
            message = json.loads(body)
        except ValueError:
            return slack_error(400, "invalid_payload")
        problem = message_problem(message)
        return None if problem is None else slack_error(400, "invalid_payload")

    def handle(self, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        return Reply.text(200, "ok")


def message_problem(message: Any) -> str | None:
    """Why Slack would reject this message, or ``None``. Public so tests can assert on it."""
    if not isinstance(message, dict):
        return "not an object"
    text, blocks = message.get("text"), message.get("blocks")
    if text is None and blocks is None:
        return "no text"
    if text is not None and (not isinstance(text, str) or not text or len(text) > 40_000):
        return "bad text"
    if blocks is None:
        return None
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
        return "blocks: 1..50 required"
    for i, block in enumerate(blocks):
        problem = _block_problem(block)
        if problem:
            return f"blocks[{i}]: {problem}"
    return None


def special_sequences(text: str) -> list[str]:
    """The ``<…>`` sequences Slack would parse out of ``text`` instead of showing them: mentions
    (``<!channel>``, ``<!here>``, ``<@U123>``, ``<!subteam^S1>``), channel links (``<#C1>``) and
    links (``<url|label>``). Escaped as ``&lt;…&gt;``, they are shown as typed."""
    return re.findall(r"<[^<>]*>", text)


def _text_problem(obj: Any, limit: int, *, plain_only: bool = False) -> str | None:
    if not isinstance(obj, dict) or obj.get("type") not in (
        ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    ):
        return "bad text object"
    text = obj.get("text")
    if not isinstance(text, str) or not 1 <= len(text) <= limit:
        return f"text must be 1..{limit} chars"
    return None


def _block_problem(block: Any) -> str | None:
    if not isinstance(block, dict):
        return "not an object"
    kind = block.get("type")
    if kind == "header":
        return _text_problem(block.get("text"), 150, plain_only=True)
    if kind == "divider":
        return None
    if kind == "section":
        text, fields = block.get("text"), block.get("fields")
        if text is None and fields is None:
            return "section needs text or fields"
        if text is not None and (problem := _text_problem(text, 3000)):
            return problem
        if fields is not None:
            if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                return "fields: 1..10 required"
            for f in fields:
                if problem := _text_problem(f, 2000):
                    return problem
        return None
    if kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
            return "context: 1..10 elements"
        for e in elements:
            if problem := _text_problem(e, 3000):
                return problem
        return None
    if kind == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
            return "actions: 1..25 elements"
        ids = [e.get("action_id") for e in elements if isinstance(e, dict)]
        if len(set(ids)) != len(ids):
            return "duplicate action_id"
        for e in elements:
            if not isinstance(e, dict) or e.get("type") != "button":
                return "only buttons supported"
            if problem := _text_problem(e.get("text"), 75, plain_only=True):
                return problem
            url = e.get("url")
            if url is not None and (not isinstance(url, str) or len(url) > 3000):
                return "bad button url"
        return None
    return f"unknown block type {kind!r}"
