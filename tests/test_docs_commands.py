"""Every ``driftline …`` command line in README.md and docs/*.md parses, and those that can run
offline run, so the documentation and the command line cannot drift apart."""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from driftline.apps.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
#: placeholders the docs write for option values, and a value of the type the option takes
PLACEHOLDERS = {"N": "5", "S": "1", "R": "1", "PORT": "9108", "T": "24h", "REV": "head"}
#: leaf commands that need neither a broker nor the network: these are also run
OFFLINE = {("db", "upgrade"), ("db", "current"), ("alerts", "list"), ("retraining", "list"), ("status",)}


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every command line: code-block lines and inline code spans."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        in_block = False
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("```"):
                in_block = not in_block
                continue
            spans = (
                [line.strip().removeprefix("$ ")] if in_block else re.findall(r"`(driftline [^`]*)`", line)
            )
            found += [(f"{path.name}:{n}", s) for s in spans if s.startswith("driftline ")]
    return found


def expand(command: str) -> tuple[list[list[str]], bool]:
    """The argument lists a documented line stands for, and whether it elides arguments (``…``).

    Notation: ``[x]`` optional (included), ``a|b`` and ``(a | b)`` alternatives (each tried),
    a trailing ``# comment``, ``…`` for arguments left out."""
    text = re.sub(r"\s#\s.*$", "", command).replace("\\|", "|").strip()
    text = re.sub(r"\]…", "]", text)
    elided = "…" in text.split() or "..." in text.split()
    text = " ".join(t for t in text.split() if t not in ("…", "..."))
    if " | " in text and "(" not in text:  # `driftline db upgrade [REV] | downgrade REV | current`
        first, *others = text.split(" | ")
        path = [w for w in first.split() if not w.startswith(("-", "["))]
        prefix = " ".join(path[:-1]) if len(path) > 2 else first
        texts = [first, *(f"{prefix} {o}" for o in others)]
    else:
        texts = [text]
    out = []
    for t in texts:
        for group in re.findall(r"\(([^)]*)\)", t):
            t = t.replace(f"({group})", group.split(" | ")[0])
        t = t.replace("[", "").replace("]", "")
        choices = [w.split("|") if "|" in w else [w] for w in t.split()[1:]]
        for combo in itertools.product(*choices):
            out.append([PLACEHOLDERS.get(w, w) for w in combo])
    return out, elided


COMMANDS = documented_commands()


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _leaf(args: list[str]) -> tuple[argparse.ArgumentParser, list[str], list[str]]:
    """The sub-parser the leading command words name, those words, and the rest."""
    parser, path = build_parser(), []
    rest = [a for a in args]
    while rest and rest[0].startswith("--") and rest[0] in ("--config", "--loglevel"):
        rest = rest[2:]  # a global option before the sub-command
    while rest and rest[0] in _subcommands(parser):
        parser = _subcommands(parser)[rest[0]]
        path.append(rest.pop(0))
    return parser, path, rest


def test_the_docs_document_every_command() -> None:
    assert len(COMMANDS) > 40
    documented = {tuple(_leaf(args)[1][:1]) for _, c in COMMANDS for args in expand(c)[0]}
    assert {(c,) for c in _subcommands(build_parser())} - documented == set()


def test_the_readme_commands_table_lists_every_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Commands")
    table = readme[start : readme.index("\n## ", start + 5)]
    missing = {c for c in _subcommands(build_parser()) if f"`driftline {c}" not in table}
    assert missing == set()


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_a_documented_command_line_parses(where: str, command: str) -> None:
    """A full line must parse; a span that only names a command (``driftline replay``) or one
    of its options (``driftline history --retention``) must name one that exists."""
    variants, elided = expand(command)
    for args in variants:
        leaf, path, rest = _leaf(args)
        if not path and elided and not rest:
            continue  # `driftline …`: the command in general
        assert path, f"{where}: `{command}` names no sub-command"
        if not rest and not _subcommands(leaf):
            continue  # the name of a command
        if len(rest) == 1 and rest[0].startswith("--"):
            assert rest[0] in leaf._option_string_actions, f"{where}: {' '.join(path)} has no {rest[0]}"
            continue
        try:
            build_parser().parse_args(args)
        except SystemExit as exc:
            assert exc.code == 0 or elided, f"{where}: `{command}` does not parse as {args}"


def test_the_offline_commands_run(tmp_path: Path) -> None:
    env = {**os.environ, "DRIFTLINE_STORE_URL": f"sqlite:///{tmp_path / 'store.sqlite'}"}
    env.pop("DRIFTLINE_CONFIG", None)
    ran = []
    runnable = sorted(
        {
            tuple(args)
            for _, c in COMMANDS
            for args in expand(c)[0]
            if (tuple(args[:2]) in OFFLINE or tuple(args[:1]) in OFFLINE)
            and "--serve" not in args
            and ("--watch" not in args or "--count" in args)  # an endless --watch is not run
        },
        key=lambda a: a[:2] != ("db", "upgrade"),  # migrate first
    )
    for args in runnable:
        done = subprocess.run(
            [sys.executable, "-m", "driftline", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"driftline {' '.join(args)}: {done.stderr[-2000:]}"
        ran.append(args)
    assert len(ran) >= 5


#: a benchmark command line: the script and the rest of the line (options and values)
_BENCHMARK = re.compile(r"benchmarks/(\w+)\.py([^`]*)")


def documented_benchmark_commands() -> list[tuple[str, str, str]]:
    """(where, script, options) for every ``benchmarks/NAME.py …`` in code blocks and inline
    code spans of README.md and docs/*.md: the sizing numbers cite them."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        in_block = False
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("```"):
                in_block = not in_block
                continue
            spans = [line] if in_block else re.findall(r"`([^`]*benchmarks/\w+\.py[^`]*)`", line)
            for span in spans:
                for script, rest in _BENCHMARK.findall(span):
                    found.append((f"{path.name}:{n}", script, re.sub(r"\s#\s.*$", "", rest)))
    return found


BENCHMARK_COMMANDS = documented_benchmark_commands()


def test_the_documented_benchmark_commands_exist_with_their_options() -> None:
    """Each documented benchmark script exists and takes every option the docs give it (read
    from its ``--help``, one subprocess per script)."""
    assert any(where.startswith("README.md") for where, _, _ in BENCHMARK_COMMANDS)
    helps: dict[str, str] = {}
    for where, script, rest in BENCHMARK_COMMANDS:
        path = ROOT / "benchmarks" / f"{script}.py"
        assert path.is_file(), f"{where}: no benchmarks/{script}.py"
        options = re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest)
        if not options:
            continue
        if script not in helps:
            done = subprocess.run([sys.executable, str(path), "--help"], cwd=ROOT, capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, f"benchmarks/{script}.py --help: {done.stderr[-2000:]}"
            helps[script] = done.stdout
        for option in options:
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", helps[script]), (
                f"{where}: benchmarks/{script}.py has no {option}")
