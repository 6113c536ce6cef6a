"""``driftline baseline create | show`` through the real entry point, on files small enough to
check by hand; the numbers are cross-checked with numpy and scikit-learn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, mean_absolute_error, r2_score

import driftline.apps.cli
from driftline.detectors.profile import ReferenceProfile
from driftline.platform.store import head_revision

pytestmark = pytest.mark.timeout(60)

MODULE = "driftline.apps.commands.baseline_cli"

ROWS = [
    {"prediction_id": "r1", "features": {"amount": 10.0, "channel": "web"}, "prediction": 1, "label": 1,
     "segments": {"region": "eu"}},
    {"prediction_id": "r2", "features": {"amount": 20.0, "channel": "app"}, "prediction": 0, "label": 1,
     "segments": {"region": "eu"}},
    {"prediction_id": "r3", "features": {"amount": None, "channel": "web"}, "prediction": 0, "label": 0,
     "segments": {"region": "us"}},
    {"prediction_id": "r4", "features": {"amount": 40.0, "channel": "web"}, "prediction": 1, "label": 1,
     "segments": {"region": "us"}},
]  # fmt: skip

SHOW_WHOLE = """\
baseline of fraud version *: 4 rows
  feature       kind         n  missing  summary
  amount        numeric      3  1        mean 23.3333, std 12.4722, range [10, 40]
                                         edges 10 12 14 16 18 20 24 28 32 36 40
  channel       categorical  4  0        2 categories: web 3, app 1
  (prediction)  categorical  4  0        2 categories: 0 2, 1 2
  (label)       categorical  4  0        2 categories: 1 3, 0 1
baseline metrics:
  accuracy            0.75
  balanced_accuracy   0.833333
  f1.0                0.666667
  f1.1                0.8
  f1_macro            0.733333
  f1_micro            0.75
  f1_weighted         0.766667
  n                   4
  precision.0         0.5
  precision.1         1
  precision_macro     0.75
  precision_micro     0.75
  precision_weighted  0.875
  recall.0            1
  recall.1            0.666667
  recall_macro        0.833333
  recall_micro        0.75
  recall_weighted     0.75
  support.0           1
  support.1           3
segments: region=eu (2 rows), region=us (2 rows)
"""

SHOW_US_HEAD = """\
baseline of fraud version * segment region=us: 2 rows
  feature       kind         n  missing  summary
  amount        numeric      1  1        mean 40, std 0, range [40, 40]
                                         edges 40 40
  channel       categorical  2  0        1 category: web 2
  (prediction)  categorical  2  0        2 categories: 0 1, 1 1
  (label)       categorical  2  0        2 categories: 0 1, 1 1
baseline metrics:
  accuracy            1
"""

CSV = """\
prediction_id,size,zip,prediction,label
a,1.5,75001,2.0,2.5
b,2.5,75002,3.0,2.0
c,,75001,4.0,5.0
d,4.0,,1.0,1.0
"""

SHOW_CSV = """\
baseline of price version v2: 4 rows
  feature       kind         n  missing  summary
  size          numeric      3  1        mean 2.66667, std 1.0274, range [1.5, 4]
                                         edges 1.5 1.7 1.9 2.1 2.3 2.5 2.8 3.1 3.4 3.7 4
  zip           categorical  3  1        2 categories: 75001 2, 75002 1
  (prediction)  numeric      4  0        mean 2.5, std 1.11803, range [1, 4]
                                         edges 1 1.3 1.6 1.9 2.2 2.5 2.8 3.1 3.4 3.7 4
  (label)       numeric      4  0        mean 2.625, std 1.47373, range [1, 5]
                                         edges 1 1.3 1.6 1.9 2.1 2.25 2.4 2.75 3.5 4.25 5
baseline metrics:
  mae         0.625
  mape        0.225
  mean_error  -0.125
  n           4
  r2          0.741007
  rmse        0.75
"""


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    if MODULE not in driftline.apps.cli.MODULES:
        monkeypatch.setattr(driftline.apps.cli, "MODULES", (*driftline.apps.cli.MODULES, MODULE))
    monkeypatch.delenv("DRIFTLINE_CONFIG", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = driftline.apps.cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture()
def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "ref.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


def test_create_and_show_a_jsonl_baseline_with_segments(
    jsonl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "profile.json"
    assert run(capsys, "baseline", "create", "--model", "fraud", "--data", str(jsonl), "--out", str(out)) == (
        0,
        f"baseline of fraud version *: 4 rows, 2 features, 2 segment profiles -> {out}\n",
    )
    assert run(capsys, "baseline", "show", "--model", "fraud", "--file", str(out)) == (0, SHOW_WHOLE)
    code, text = run(
        capsys, "baseline", "show", "--model", "fraud", "--file", str(out), "--segment", "region=us"
    )
    assert code == 0 and text.startswith(SHOW_US_HEAD)
    # the file is plain JSON that the profile loader reads, numbers as numpy/sklearn compute them
    doc = json.loads(out.read_text())
    whole = ReferenceProfile.from_dict(doc)
    amount = np.array([10.0, 20.0, 40.0])
    assert whole.features["amount"].edges.tolist() == np.quantile(amount, np.linspace(0, 1, 11)).tolist()
    assert (
        whole.features["amount"].counts.tolist()
        == np.histogram(amount, whole.features["amount"].edges)[0].tolist()
    )
    assert whole.features["amount"].std == pytest.approx(np.std(amount), rel=1e-15)
    assert whole.metrics["accuracy"] == accuracy_score([1, 1, 0, 1], [1, 0, 0, 1])
    assert sorted(doc["segments"]) == ["region=eu", "region=us"]
    assert ReferenceProfile.from_dict(doc["segments"]["region=eu"]).n_rows == 2
    assert run(capsys, "baseline", "show", "--model", "fraud", "--file", str(out), "--json")[1] == (
        json.dumps(doc, indent=2, sort_keys=True) + "\n"
    )


def test_csv_regression_with_forced_feature_types(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, out = tmp_path / "ref.csv", tmp_path / "q.json"
    data.write_text(CSV, encoding="utf-8")
    argv = [
        "baseline",
        "create",
        "--model",
        "price",
        "--version",
        "v2",
        "--data",
        str(data),
        "--task",
        "regression",
    ]
    argv += ["--feature-type", "zip=categorical", "--out", str(out)]
    assert run(capsys, *argv) == (
        0,
        f"baseline of price version v2: 4 rows, 2 features, 0 segment profiles -> {out}\n",
    )
    assert run(capsys, "baseline", "show", "--model", "price", "--version", "v2", "--file", str(out)) == (
        0,
        SHOW_CSV,
    )
    metrics = json.loads(out.read_text())["metrics"]
    y, yhat = [2.5, 2.0, 5.0, 1.0], [2.0, 3.0, 4.0, 1.0]
    assert metrics["mae"] == pytest.approx(mean_absolute_error(y, yhat), rel=1e-15)
    assert metrics["r2"] == pytest.approx(r2_score(y, yhat), rel=1e-12)


def test_the_store_keeps_the_baseline_and_show_reads_the_newest(
    jsonl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/b.sqlite"
    assert run(capsys, "db", "upgrade", "--store-url", url) == (0, f"{url}: at revision {head_revision()}\n")
    out = tmp_path / "p.json"
    create = [
        "baseline",
        "create",
        "--model",
        "fraud",
        "--data",
        str(jsonl),
        "--store-url",
        url,
        "--out",
        str(out),
    ]
    assert run(capsys, *create)[0] == 0
    assert run(capsys, "baseline", "show", "--model", "fraud", "--store-url", url) == (0, SHOW_WHOLE)
    stored = run(capsys, "baseline", "show", "--model", "fraud", "--store-url", url, "--json")[1]
    assert json.loads(stored) == json.loads(out.read_text())
    assert run(capsys, "baseline", "show", "--model", "fraud", "--version", "v9", "--store-url", url) == (
        2,
        f"driftline: error: no baseline of fraud version v9 in {url}\n",
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["create", "--model", "m", "--data", "{data}"], "give --out FILE and/or --store-url URL"),
        (["create", "--model", "m", "--data", "{data}", "--out", "x.json", "--feature-type", "a=text"],
         "--feature-type 'a=text': use NAME=numeric or NAME=categorical"),
        (["show", "--model", "other", "--file", "{profile}"], "is the baseline of 'fraud', not 'other'"),
        (["show", "--model", "fraud", "--file", "{profile}", "--segment", "region=mars"],
         "no segment 'region=mars' in the baseline; it has: region=eu, region=us"),
    ],
)  # fmt: skip
def test_errors_name_the_problem(
    argv: list[str], message: str, jsonl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = tmp_path / "p.json"
    assert (
        run(capsys, "baseline", "create", "--model", "fraud", "--data", str(jsonl), "--out", str(profile))[0]
        == 0
    )
    filled = [a.format(data=jsonl, profile=profile) for a in argv]
    code, text = run(capsys, "baseline", *filled)
    assert code == 2 and text.startswith("driftline: error: ") and message in text
