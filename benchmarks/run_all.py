"""Every streaming benchmark in one command, printed as one table.

    .venv/bin/python benchmarks/run_all.py [--quick] [--profile /tmp/worker.raw]

Each part starts its own embedded broker (its memory grows with what it holds) and its own
``driftline worker`` subprocess; ``--quick`` shrinks the event counts for a smoke run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import latency
import memory
import throughput


def machine() -> str:
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    python = platform.python_version()
    return f"{os.cpu_count()} CPUs, {mem_kb / 1024**2:.1f} GiB RAM, Python {python}, {platform.platform()}"


def table(rows: Sequence[tuple[str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in [("measure", "value", "note"), *rows]) for i in range(3)]
    line = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    out = [line.format("measure", "value", "note"), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line.format(*r) for r in rows]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small event counts (smoke run)")
    parser.add_argument("--profile", type=Path, help="py-spy collapsed stacks of the batch throughput run")
    args = parser.parse_args(argv)
    started = time.monotonic()
    rows = throughput.run(args.quick, args.profile)
    rows += memory.run(args.quick)
    rows += latency.run(args.quick)
    print(f"machine: {machine()}")
    print(
        f"command: {' '.join([Path(sys.executable).name, *sys.argv])}  ({time.monotonic() - started:.0f} s)"
    )
    print(table(rows))
    if args.profile and args.profile.exists():
        print("\nworker hot spots during the batch run (py-spy, share of samples):")
        for fn, own, incl in throughput.hot_spots(args.profile):
            print(f"  {own:5.1f}% self {incl:5.1f}% incl  {fn}")


if __name__ == "__main__":
    main()
