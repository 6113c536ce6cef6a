"""A throwaway PostgreSQL server for tests: initdb into a temp dir, listen on 127.0.0.1 only.

Needs the server binaries (Debian: ``apt-get install -y postgresql``, which puts ``initdb`` and
``pg_ctl`` in ``/usr/lib/postgresql/<ver>/bin``). Without them :func:`find_pg_bin` returns None
and tests skip, except under ``CI``, where a missing server must fail the run: CI exists to
prove the store works on PostgreSQL.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user (which
the Debian package creates) in a temp dir outside pytest's root-only ``tmp_path``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_START_TIMEOUT_S = 60


def find_pg_bin() -> Path | None:
    """The directory holding both ``initdb`` and ``pg_ctl``: ``$PG_BIN``, PATH, then the newest
    ``/usr/lib/postgresql/<ver>/bin``."""
    candidates: list[Path] = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        candidates.append(Path(pg_ctl).resolve().parent)
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = sorted(
            (p for p in root.iterdir() if p.name.split(".")[0].isdigit()),
            key=lambda p: [int(x) for x in p.name.split(".") if x.isdigit()],
            reverse=True,
        )
        candidates.extend(v / "bin" for v in versions)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _run(argv: list[str], timeout: float, cwd: Path) -> None:
    done = subprocess.run(
        _as_server_user(argv), capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd
    )
    if done.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


@contextmanager
def postgres_server(bin_dir: Path) -> Iterator[str]:
    """Run a fresh server and yield its SQLAlchemy URL; stop it and delete its data on exit."""
    workdir = Path(tempfile.mkdtemp(prefix="driftline-pg-"))
    data = workdir / "data"
    log = workdir / "server.log"
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(workdir, user.pw_uid, user.pw_gid)
    port = _free_port()
    started = False
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
              "--encoding=UTF8", "--no-sync"], timeout=120, cwd=workdir)
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {workdir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
              "-w", "-t", str(_START_TIMEOUT_S), "start"], timeout=_START_TIMEOUT_S + 10, cwd=workdir)
        started = True
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            stop = [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
            _run(stop, timeout=60, cwd=workdir)
        shutil.rmtree(workdir, ignore_errors=True)
