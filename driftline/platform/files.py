"""Reading rows of reference and training data from files: JSON Lines, JSON, CSV, Parquet.

Kept out of ``driftline.detectors`` (pure computation, no I/O): profiles are built from rows,
wherever they came from.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["load_rows"]


def _coerce(text: str) -> Any:
    """CSV cells are text: empty -> missing, numbers -> float/int, everything else stays a string."""
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def load_rows(path: str | Path) -> Iterator[dict[str, Any]]:
    """Rows from ``.jsonl``/``.ndjson`` (one object per line), ``.json`` (a list), ``.csv``
    (values coerced to numbers where they parse), or ``.parquet`` (needs pyarrow)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        with p.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)
    elif suffix == ".json":
        yield from json.loads(p.read_text(encoding="utf-8"))
    elif suffix == ".csv":
        with p.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                yield {k: _coerce(v) for k, v in row.items()}
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise RuntimeError("reading parquet needs pyarrow: pip install pyarrow") from exc
        yield from pq.read_table(p).to_pylist()
    else:
        raise ValueError(f"unsupported file type {suffix!r} (jsonl, json, csv, parquet)")
