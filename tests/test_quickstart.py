"""``driftline quickstart`` on the shipped sample data: the printed mapping, the inferred set-up,
the report it writes, and the configuration it prints (which must load as a real config)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from driftline.apps.cli import build_parser
from driftline.apps.quickstart import ColumnMapping, flatten_rows, infer_mapping, infer_task, window_for
from driftline.platform.config import config_from_mapping
from driftline.platform.files import load_rows

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data"


def test_mapping_is_inferred_by_name_and_values() -> None:
    rows = [
        {"ID": "a", "event_time": 1, "y_pred": 1, "proba": 0.9, "target": 1, "city": "x", "v": 1.5},
        {"ID": "b", "event_time": 2, "y_pred": 0, "proba": 0.2, "target": 1, "city": "y", "v": 2.5},
    ]
    m = infer_mapping(rows, {})
    assert (m.id, m.timestamp, m.prediction, m.score, m.label) == (
        "ID",
        "event_time",
        "y_pred",
        "proba",
        "target",
    )
    assert m.features == ["city", "v"] and m.segments == ["city"]
    given = infer_mapping(rows, {"label": "v", "segments": []})
    assert given.label == "v" and given.reasons["label"] == "given by flag"
    with pytest.raises(ValueError, match="--score-column 'nope': no such column"):
        infer_mapping(rows, {"score": "nope"})
    # with a labels file, --label-column names its column, not one of the predictions file
    apart = infer_mapping(rows, {"label": "truth"}, label_in_other_file=True)
    assert apart.label is None and "target" in apart.features


def test_event_shaped_jsonl_rows_are_flattened() -> None:
    rows, segments = flatten_rows(
        [{"prediction_id": "a", "timestamp": 1, "features": {"x": 1.0, "c": "u"}, "segments": {"c": "u"},
          "prediction": 1}]
    )  # fmt: skip
    assert rows == [{"prediction_id": "a", "timestamp": 1, "prediction": 1, "x": 1.0, "c": "u"}]
    assert segments == ["c"]
    m = infer_mapping(rows, {"segments": segments})
    assert m.features == ["x", "c"] and m.segments == ["c"] and m.reasons["segments"] == "given by flag"


def test_task_and_window_inference() -> None:
    assert infer_task([0, 1, 1], [1.0, 0.0])[:2] == ("binary", {})
    assert infer_task(["ok", "fraud", "ok"], ["ok"])[:2] == (
        "binary",
        {"positive_label": "fraud", "negative_label": "ok"},
    )
    assert infer_task([0.5, 1.25], [])[0] == "regression"
    assert infer_task(["a", "b", "c"], [])[0] == "multiclass"
    assert window_for(100 * 60_000) == ("5m", 300_000)  # 20 windows
    assert window_for(20 * 60_000) == ("1m", 60_000)
    assert window_for(3 * 86_400_000) == ("6h", 21_600_000)


def test_flags_repeat_the_mapping() -> None:
    m = ColumnMapping(id="i", timestamp="t", features=["a", "b"], segments=["a"])
    assert m.flags() == ["--id-column i", "--timestamp-column t", "--features a,b", "--segments a"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quickstart_on_the_sample_csv(tmp_path: Path) -> None:
    report = tmp_path / "out" / "report.html"
    run = subprocess.run(
        [
            sys.executable, "-m", "driftline.apps.cli", "quickstart",
            "--predictions", str(DATA / "predictions.csv"),
            "--labels", str(DATA / "labels.csv"),
            "--report", str(report),
        ],
        capture_output=True, text=True, timeout=200,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    for line in (
        "  id            <- prediction_id    (column named 'prediction_id')",
        "  timestamp     <- timestamp        (column named 'timestamp')",
        "  prediction    <- prediction       (column named 'prediction')",
        "  score         <- score            (column named 'score')",
        f"  label         <- label            (column named 'label' in {DATA / 'labels.csv'}, joined on "
        "'prediction_id')",
        "  features      <- x1, x2, amount, channel (every other column)",
        "  segments      <- channel (text columns with 2 to 10 distinct values (also kept as features))",
        "  task          =  binary (labels/predictions are 0 and 1)",
        "  window        =  5m (the smallest round size giving <= 24 windows)",
    ):
        assert line in out, out
    assert "no --reference: the earliest 20% of the predictions" in out
    # 6000 predictions a second apart: 100 minutes, 20 windows of 5 minutes, 1 + 3 channel slices
    assert "replayed 6000 predictions and 6000 labels: 80 window results" in out
    assert "0 dead-lettered" in out
    fired = re.search(r"(\d+) alerts fired", out)
    assert fired is not None and int(fired.group(1)) > 0  # the sample drifts at 50 %

    config_text = out[out.index("\nmodels:\n") + 1 : out.index("\nand the same mapping")]
    raw = yaml.safe_load(config_text)
    config = config_from_mapping(raw)
    model = config.models["my-model"]
    assert (model.task, model.window_ms) == ("binary", 300_000)
    assert Path(str(model.reference)).is_file()

    repeat = out.rstrip("\n").splitlines()[-1].strip()
    assert repeat.startswith("driftline quickstart --predictions ") and "--label-column label" in repeat
    args = build_parser().parse_args(shlex.split(repeat)[1:])
    assert (args.id_column, args.label_column, args.segments) == ("prediction_id", "label", "channel")

    page = report.read_text(encoding="utf-8")
    assert "my-model" in page and "<html" in page
    assert (tmp_path / "out" / "report.sqlite").is_file()


def test_a_parquet_file_reads_as_its_csv_and_maps_the_same(tmp_path: Path) -> None:
    """Parquet input (pyarrow, a test dependency): the sample written as Parquet with its column
    types gives the rows the CSV gives, so quickstart maps and replays it the same."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    csv_rows = list(load_rows(DATA / "predictions.csv"))
    path = tmp_path / "predictions.parquet"
    pq.write_table(pa.Table.from_pylist(csv_rows), path)
    parquet_rows = list(load_rows(path))
    assert parquet_rows == csv_rows
    from_csv, from_parquet = infer_mapping(csv_rows, {}), infer_mapping(parquet_rows, {})
    assert from_parquet == from_csv and from_parquet.score == "score"
