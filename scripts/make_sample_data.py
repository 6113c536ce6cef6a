"""Write the sample data set the README's second example uses (examples/data/*.csv).

A binary fraud model's predictions, its labels in a separate file (they arrive later) and its
training rows as the reference, from the same simulator as the demo (driftline/apps/simulate.py),
seeded, so re-running this script writes the same files. The covariate drift (x1 +1.5 sd) starts
at 50 % of the predictions, the concept drift (accuracy collapses) at 75 %.

    .venv/bin/python scripts/make_sample_data.py        # rewrites examples/data/
"""

from __future__ import annotations

import csv
from pathlib import Path

from driftline.apps.simulate import simulate
from driftline.schemas import ms_to_rfc3339

OUT = Path(__file__).resolve().parent.parent / "examples" / "data"
N = 6000
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
RATE = 1.0  # one prediction a second: 100 minutes


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    live = simulate(
        N,
        start_ms=START_MS,
        events_per_s=RATE,
        label_delay_ms=120_000,
        feature_drift_at=0.5,
        concept_drift_at=0.75,
        seed=11,
    )
    _write(
        OUT / "predictions.csv",
        ["prediction_id", "timestamp", "x1", "x2", "amount", "channel", "prediction", "score"],
        [
            [
                p["prediction_id"],
                ms_to_rfc3339(p["timestamp"]),
                *p["features"].values(),
                p["prediction"],
                p["score"],
            ]
            for p in live.predictions
        ],
    )
    _write(
        OUT / "labels.csv",
        ["prediction_id", "timestamp", "label"],
        [[y["prediction_id"], ms_to_rfc3339(y["timestamp"]), y["label"]] for y in live.labels],
    )
    train = simulate(3000, start_ms=START_MS - 86_400_000, events_per_s=RATE, seed=12, id_prefix="t")
    _write(
        OUT / "reference.csv",
        ["prediction_id", "timestamp", "x1", "x2", "amount", "channel", "prediction", "score", "label"],
        [
            [
                p["prediction_id"],
                ms_to_rfc3339(p["timestamp"]),
                *p["features"].values(),
                p["prediction"],
                p["score"],
                y["label"],
            ]
            for p, y in zip(train.predictions, train.labels, strict=True)
        ],
    )


if __name__ == "__main__":
    main()
