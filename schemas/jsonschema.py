"""Generate the JSON Schema files that producers in other languages validate against.

The structs are the source of truth; the files in ``schemas/json/`` are derived and committed
so that non-Python producers can fetch them from the repository. ``--check`` (run in CI and by
the tests) fails when a struct changed without regenerating, so the files can never drift.

    python -m driftline.schemas.jsonschema           # (re)write the files
    python -m driftline.schemas.jsonschema --check   # exit 1 if any file is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from driftline.schemas.cloudevents import AlertEvent, RetrainingRequest
from driftline.schemas.events import GroundTruthBatch, GroundTruthEvent, PredictionBatch, PredictionEvent
from driftline.schemas.results import WindowResult

JSON_DIR: Final = Path(__file__).resolve().parent / "json"
DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

SCHEMAS: Final[dict[str, tuple[type[msgspec.Struct], str]]] = {
    "prediction-event.schema.json": (PredictionEvent, "driftline PredictionEvent"),
    "ground-truth-event.schema.json": (GroundTruthEvent, "driftline GroundTruthEvent"),
    "prediction-batch.schema.json": (PredictionBatch, "driftline prediction batch"),
    "ground-truth-batch.schema.json": (GroundTruthBatch, "driftline ground-truth batch"),
    "alert-event.schema.json": (AlertEvent, "driftline AlertEvent (CloudEvents 1.0)"),
    "retraining-request.schema.json": (RetrainingRequest, "driftline RetrainingRequest (CloudEvents 1.0)"),
    "window-result.schema.json": (WindowResult, "driftline WindowResult"),
}


def schema_for(struct: type[msgspec.Struct], title: str) -> dict[str, Any]:
    """The JSON Schema (2020-12) of one contract struct."""
    schema = msgspec.json.schema(struct)
    return {"$schema": DIALECT, "title": title, **schema}


def _canonical(node: Any) -> Any:
    """Put every ``anyOf`` in one order. Python and msgspec cache unions by equality, which
    ignores member order, so ``str | int`` may come back as an equal ``int | str`` built
    earlier in the process: the generated order depended on what had been imported."""
    if isinstance(node, dict):
        out = {k: _canonical(v) for k, v in node.items()}
        if isinstance(out.get("anyOf"), list):
            out["anyOf"] = sorted(out["anyOf"], key=lambda item: json.dumps(item, sort_keys=True))
        return out
    if isinstance(node, list):
        return [_canonical(v) for v in node]
    return node


def render(schema: dict[str, Any]) -> str:
    """Canonical text: sorted keys, canonical ``anyOf`` order and fixed indent, so regenerating
    is byte-stable and diffs show only real contract changes."""
    return json.dumps(_canonical(schema), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """File name -> canonical text for every contract."""
    return {name: render(schema_for(struct, title)) for name, (struct, title) in SCHEMAS.items()}


def stale_files(directory: Path = JSON_DIR) -> list[str]:
    """Names of files that are missing or differ from freshly generated ones."""
    stale = []
    for name, text in generate().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def write_all(directory: Path = JSON_DIR) -> list[str]:
    """Write every schema file; returns the names that changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = stale_files(directory)
    for name, text in generate().items():
        if name in changed:
            (directory / name).write_text(text, encoding="utf-8")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m driftline.schemas.jsonschema", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if any file is missing or stale")
    parser.add_argument("--dir", type=Path, default=JSON_DIR, help="output directory")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.dir)
        for name in stale:
            print(f"stale: {args.dir / name}", file=sys.stderr)
        return 1 if stale else 0
    for name in write_all(args.dir):
        print(f"wrote {args.dir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
