"""The fixed replay corpus whose report must not change when code moves (issue 13).

The input is generated, not committed: ``simulate`` is seeded, so the same call gives the
same events on every machine. Only the expected report is committed
(``tests/data/replay-golden.json``), made by ``python tests/golden_replay.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from replaying import replay_cli

from driftline.apps.simulate import simulate, write_jsonl

GOLDEN = Path(__file__).parent / "data" / "replay-golden.json"
CONFIG = {
    "defaults": {"window": "60s", "grace": "10s", "label_horizon": "30s"},
    "models": {
        "churn": {
            "task": "binary",
            "drift_tests": {"amount": "psi"},
            "reference": "r.jsonl",
            "multivariate": True,
        }
    },
}


def write_corpus(folder: Path) -> tuple[Path, Path, Path, Path]:
    """Two models over five windows each: one drifts in its features, then its concept; the
    other is stationary and sends attributions."""
    fraud = simulate(
        3000,
        model_id="fraud",
        events_per_s=10,
        feature_drift_at=0.4,
        concept_drift_at=0.7,
        seed=3,
        id_prefix="f",
    )
    # churn's events and reference carry attributions (SHAP values): its windows have an
    # attribution section against the profile's means
    churn = simulate(3000, model_id="churn", events_per_s=10, seed=4, id_prefix="c", attributions=True)
    reference = simulate(4000, model_id="churn", events_per_s=10, seed=5, id_prefix="r", attributions=True)
    pred, gt, ref, cfg = (folder / n for n in ("p.jsonl", "g.jsonl", "r.jsonl", "cfg.yaml"))
    write_jsonl(sorted(fraud.predictions + churn.predictions, key=lambda r: r["timestamp"]), pred)
    write_jsonl(sorted(fraud.labels + churn.labels, key=lambda r: r["timestamp"]), gt)
    rows = [
        {**r, "label": lab["label"]} for r, lab in zip(reference.predictions, reference.labels, strict=True)
    ]
    write_jsonl(rows, ref)
    cfg.write_text(yaml.safe_dump(CONFIG))
    return pred, gt, ref, cfg


def run_replay(folder: Path) -> dict:
    """The corpus replayed through the real CLI, with what depends on timing taken out: the
    folder's path (replaced by ``.``), the order in which alerts and requests reached their
    partitioned topics (sorted by id), and how many provisional results there were (a window
    whose grace and horizon pass in one watermark step goes straight to final)."""
    pred, gt, _, cfg = write_corpus(folder)
    out = folder / "report.json"
    replay_cli(cfg, pred, gt, out)
    report = json.loads(out.read_text().replace(str(folder.resolve()), "."))
    del report["provisional_windows"], report["counters"]["early_labels"]
    for key in ("alerts", "retraining_requests"):
        report[key].sort(key=lambda event: event["id"])
    return report


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        GOLDEN.write_text(json.dumps(run_replay(Path(tmp)), indent=2) + "\n")
    print(f"wrote {GOLDEN}")
