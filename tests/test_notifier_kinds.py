"""One registration per notifier kind: what a kind declares is what every stage uses.

The proof is a throw-away kind ("teams", defined here and registered only for the test) that
subscriptions, the outbox's default rate and ``driftline subscriptions test`` all pick up with no
edit anywhere else, the way a real new receiver would be one module plus one registry line.
"""

from __future__ import annotations

import doctest
import json
import random
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fakes import FakeServer, Reply, sample_alert
from sqlalchemy.orm import Session, sessionmaker

import driftline.apps.cli
from driftline.alerting.delivery import Delivery
from driftline.alerting.notifiers import registry
from driftline.alerting.notifiers.base import (
    SECRET,
    HttpRequest,
    NotifierKind,
    Setting,
    classify_response,
    summary_line,
)
from driftline.alerting.outbox import default_rate_per_s, ingest
from driftline.alerting.secrets import Secret
from driftline.alerting.subscriptions import SubscriptionConfigError, make_notifier, subscriptions_from_config
from driftline.platform.store import make_engine, session_factory, upgrade
from driftline.schemas import AlertEvent

pytestmark = pytest.mark.timeout(60)

T0 = 1_800_000_000.0
CLI_MODULE = "driftline.apps.commands.alerting_cli"


# ---- the throw-away receiver: what a new module would contain -----------------------------------


@dataclass(frozen=True)
class TeamsNotifier:
    url: Secret
    kind: str = "teams"
    max_alerts_per_request: int | None = 1

    def build(self, alerts: Sequence[AlertEvent]) -> HttpRequest:
        body = json.dumps({"text": summary_line(alerts[0])}).encode()
        return HttpRequest("POST", self.url, {"Content-Type": "application/json"}, body)

    classify = staticmethod(classify_response)


def _teams(settings: Mapping[str, Any], secret: Callable[[str], Secret]) -> TeamsNotifier:
    return TeamsNotifier(url=secret("url"))


TEAMS = NotifierKind(
    name="teams",
    settings={"url": Setting(SECRET, required=True)},
    make=_teams,
    default_rate_per_s=0.5,
    needs_resolve=True,
)


class FakeTeams(FakeServer):
    """An incoming-webhook lookalike: a JSON object with a non-empty ``text``, else 400."""

    def validate(self, path: str, headers: Mapping[str, str], body: bytes) -> Reply | None:
        try:
            message = json.loads(body)
        except ValueError:
            return Reply.text(400, "bad json")
        ok = isinstance(message, dict) and isinstance(message.get("text"), str) and message["text"]
        return None if ok else Reply.text(400, "text required")

    def handle(self, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        return Reply.text(200, "1")


@pytest.fixture()
def teams_registered(monkeypatch: pytest.MonkeyPatch) -> NotifierKind:
    """The registry line, for this test only."""
    monkeypatch.setitem(registry.KINDS, "teams", TEAMS)  # type: ignore[index]
    return TEAMS


@pytest.fixture()
def sessions() -> Iterator[sessionmaker[Session]]:
    engine = make_engine("sqlite://")
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


# ---- the product's own kinds ---------------------------------------------------------------------


def test_the_registry_lists_each_product_kind_once_under_the_name_its_notifier_reports() -> None:
    assert list(registry.KINDS) == ["slack", "pagerduty", "webhook", "alertmanager"]
    for name, kind in registry.KINDS.items():
        settings = {
            key: ("http://h" if s.type is str else {"env": "X"})
            for key, s in kind.settings.items()
            if s.required
        }
        notifier = kind.make(settings, lambda key: Secret("k" * 32))
        assert kind.name == name == notifier.kind
    assert [k for k, v in registry.KINDS.items() if v.needs_resolve] == ["pagerduty", "alertmanager"]
    assert {k: default_rate_per_s(k) for k in registry.KINDS} == {
        "slack": 1.0,
        "pagerduty": None,
        "webhook": None,
        "alertmanager": None,
    }


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("slak", "k: expected one of ['slack', 'pagerduty', 'webhook', 'alertmanager'], got 'slak' "
                 "(did you mean 'slack'?)"),
        ("PagerDuty", "k: expected one of ['slack', 'pagerduty', 'webhook', 'alertmanager'], "
                      "got 'PagerDuty' (did you mean 'pagerduty'?)"),
        ("email", "k: expected one of ['slack', 'pagerduty', 'webhook', 'alertmanager'], got 'email'"),
        (None, "k: expected one of ['slack', 'pagerduty', 'webhook', 'alertmanager'], got None"),
        (3, "k: expected one of ['slack', 'pagerduty', 'webhook', 'alertmanager'], got 3"),
    ],
)  # fmt: skip
def test_check_kind_names_the_place_the_valid_kinds_and_the_closest(name: object, message: str) -> None:
    with pytest.raises(SubscriptionConfigError) as info:
        registry.check_kind(name, "k")
    assert str(info.value) == message


def test_check_kind_accepts_every_registered_kind() -> None:
    for name in registry.KINDS:
        assert registry.check_kind(name, "k") == name


def test_the_subscription_loader_reports_a_typo_with_the_suggestion() -> None:
    with pytest.raises(SubscriptionConfigError, match=r"\(did you mean 'webhook'\?\)$") as info:
        subscriptions_from_config([{"name": "a", "kind": "webhok", "settings": {"url": "http://h"}}])
    assert str(info.value).startswith("subscriptions[0] (a).kind: expected one of")


@pytest.mark.parametrize(
    "module", ["driftline.alerting.notifiers.registry", "driftline.alerting.subscriptions"]
)
def test_checking_config_loads_no_http_client(module: str) -> None:
    """The config loader may validate kinds at load time; that must not cost an httpx import."""
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'httpx'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_registry_doctest() -> None:
    result = doctest.testmod(registry)
    assert result.attempted == 2 and result.failed == 0


# ---- a new kind is picked up everywhere ----------------------------------------------------------


def test_a_new_kind_is_accepted_checked_and_built_by_subscriptions(teams_registered: NotifierKind) -> None:
    (sub,) = subscriptions_from_config([{"name": "chat", "kind": "teams", "settings": {"url": {"env": "T"}}}])
    assert make_notifier(sub, environ={"T": "https://teams.example/hook"}) == TeamsNotifier(
        Secret("https://teams.example/hook")
    )
    with pytest.raises(
        SubscriptionConfigError, match=r"settings: unknown keys \['channel'\] for kind 'teams'"
    ):
        subscriptions_from_config(
            [{"name": "c", "kind": "teams", "settings": {"url": {"env": "T"}, "channel": "x"}}]
        )
    with pytest.raises(SubscriptionConfigError, match=r"settings\.url: required for kind 'teams'"):
        subscriptions_from_config([{"name": "c", "kind": "teams", "settings": {}}])
    with pytest.raises(SubscriptionConfigError, match="a literal secret is not allowed"):
        subscriptions_from_config([{"name": "c", "kind": "teams", "settings": {"url": "https://x"}}])
    registry.check_kind("teams", "k")


def test_a_new_kind_gets_its_declared_default_rate_from_the_outbox(
    teams_registered: NotifierKind, sessions: sessionmaker[Session], client: httpx.Client
) -> None:
    clock = [T0]
    with FakeTeams() as fake:
        (sub,) = subscriptions_from_config(
            [{"name": "chat", "kind": "teams", "settings": {"url": fake.base_url}}],
            allow_literal_secrets=True,
        )
        assert default_rate_per_s("teams") == 0.5
        with sessions.begin() as session:
            for m in ("aaaa", "bbbb", "cccc"):
                ingest(session, sample_alert(model_id=m, key=m * 8), [sub], int(T0 * 1000))
        delivery = Delivery(
            sessions,
            [sub],
            {"chat": make_notifier(sub)},
            client,
            clock=lambda: clock[0],
            rng=random.Random(1),
        )
        assert len(delivery.run_once()) == 1
        clock[0] += 1.999  # one request per 2 s: 0.5/s, as the kind declares
        assert delivery.run_once() == []
        clock[0] += 0.001
        assert len(delivery.run_once()) == 1
        assert [r.status for r in fake.requests] == [200, 200]


@pytest.fixture()
def cli(monkeypatch: pytest.MonkeyPatch) -> None:
    if CLI_MODULE not in driftline.apps.cli.MODULES:
        monkeypatch.setattr(driftline.apps.cli, "MODULES", (*driftline.apps.cli.MODULES, CLI_MODULE))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("needs_resolve", [True, False])
def test_subscriptions_test_sends_the_resolve_when_the_new_kind_says_so(
    needs_resolve: bool,
    cli: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(registry.KINDS, "teams", replace(TEAMS, needs_resolve=needs_resolve))  # type: ignore[index]
    config = tmp_path / "driftline.yaml"
    config.write_text(
        yaml.safe_dump(
            {"subscriptions": [{"name": "chat", "kind": "teams", "settings": {"url": {"env": "T"}}}]}
        )
    )
    with FakeTeams() as fake:
        monkeypatch.setenv("T", fake.base_url + "/hook")
        code = driftline.apps.cli.main(["--config", str(config), "subscriptions", "test", "chat"])
        out = capsys.readouterr().out
    assert code == 0, out
    texts = [r.json()["text"] for r in fake.requests]
    if needs_resolve:
        assert [t.split("]")[0] for t in texts] == ["[FIRING info", "[RESOLVED"]
        assert out.splitlines() == [
            "chat: firing test alert delivered (HTTP 200: 1)",
            "chat: resolved test alert delivered (HTTP 200: 1)",
        ]
    else:
        assert [t.split("]")[0] for t in texts] == ["[FIRING info"]
