"""constraints.txt pins every dependency pyproject.toml names, so adding one without running
scripts/refresh-constraints.sh fails here instead of installing an unpinned release."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def normalise(name: str) -> str:
    """PEP 503: case-insensitive, runs of ``-``, ``_`` and ``.`` are one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The project name a PEP 508 requirement starts with (extras, versions, markers dropped)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return normalise(match.group(1))


def pins() -> dict[str, str]:
    out = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            match = PIN.fullmatch(line.strip())
            assert match, f"not an exact pin: {line!r}"
            out[normalise(match.group(1))] = match.group(2)
    return out


def named_dependencies() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    named = project["dependencies"] + project["optional-dependencies"]["test"]
    return {requirement_name(requirement) for requirement in named}


def test_names_are_normalised_per_pep_503():
    assert normalise("Faust_streaming") == normalise("faust.streaming") == "faust-streaming"
    assert requirement_name("aiokafka[lz4,snappy,zstd]") == "aiokafka"
    assert requirement_name("psycopg[binary]>=3.1") == "psycopg"
    assert requirement_name("pandas<3 ; python_version >= '3.11'") == "pandas"


def test_every_dependency_and_test_dependency_is_pinned():
    pinned = pins()
    assert {"msgspec", "faust-streaming", "pytest", "psycopg"} <= named_dependencies()
    missing = sorted(named_dependencies() - set(pinned))
    assert missing == [], f"not in constraints.txt: {missing}; run scripts/refresh-constraints.sh"


def test_pip_is_pinned_and_driftline_is_not():
    pinned = pins()
    assert "pip" in pinned
    assert "driftline" not in pinned  # it is installed from the checkout, never from a pin
