"""Reference profiles: exact values against numpy/sklearn, JSON round trips, file loaders."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from driftline.detectors.hashing import stable_keys
from driftline.detectors.profile import (
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    build_profile,
    new_categorical_sketch,
    new_numeric_sketch,
)
from driftline.detectors.sketches import bin_index
from driftline.platform.files import load_rows


def _rows(n: int = 400, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        x = float(rng.normal(10, 2))
        rows.append({
            "prediction_id": f"p{i}",
            "model_id": "m",
            "features": {"x": None if i % 20 == 0 else x, "city": ["ny", "sf", "la"][i % 3],
                         "flag": bool(i % 2), "k": int(i % 4)},
            "prediction": "yes" if x > 10 else "no",
            "label": "yes" if rng.random() < 0.7 else "no",
        })
    return rows


def test_numeric_profile_values() -> None:
    rows = _rows()
    p = build_profile(rows, model_id="m", model_version="1", sample_size=50)
    x = np.array([r["features"]["x"] for r in rows if r["features"]["x"] is not None])
    fx = p.features["x"]
    assert isinstance(fx, NumericProfile)
    assert fx.edges.tolist() == np.unique(np.quantile(x, np.linspace(0, 1, 11))).tolist()
    assert (fx.edges[0], fx.edges[-1]) == (x.min(), x.max())
    assert fx.counts.tolist() == np.histogram(x, fx.edges)[0].tolist()
    assert (fx.n, fx.missing) == (380, 20)
    assert fx.mean == pytest.approx(x.mean(), rel=1e-14) and fx.std == pytest.approx(x.std(), rel=1e-14)
    ids = [r["prediction_id"] for r in rows if r["features"]["x"] is not None]
    order = np.argsort(stable_keys(ids))[:50]
    assert fx.sample.tolist() == x[order].tolist()
    assert isinstance(p.features["k"], NumericProfile)  # ints are numeric unless overridden


def test_categorical_types_prediction_label_and_metrics() -> None:
    rows = _rows()
    p = build_profile(rows, model_id="m", model_version="1", feature_types={"k": "categorical"})
    assert p.features["city"] == CategoricalProfile({"la": 133, "ny": 134, "sf": 133}, 0)
    assert p.features["flag"] == CategoricalProfile({"0": 200, "1": 200}, 0)  # category_string spelling
    assert p.features["k"] == CategoricalProfile({"0": 100, "1": 100, "2": 100, "3": 100}, 0)
    y = [r["label"] for r in rows]
    yp = [r["prediction"] for r in rows]
    assert isinstance(p.prediction, CategoricalProfile) and p.prediction.n == 400
    assert p.metrics["accuracy"] == pytest.approx(skm.accuracy_score(y, yp), abs=1e-12)
    assert p.metrics["f1_macro"] == pytest.approx(skm.f1_score(y, yp, average="macro"), abs=1e-12)
    assert p.n_rows == 400


def test_regression_profile_and_flat_rows() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(size=100)
    yp = y + rng.normal(scale=0.3, size=100)
    rows = [{"a": float(i), "prediction": float(q), "label": float(t)}
            for i, (t, q) in enumerate(zip(y, yp, strict=True))]
    p = build_profile(rows, model_id="r", model_version="2")
    assert list(p.features) == ["a"]
    assert p.metrics["r2"] == pytest.approx(skm.r2_score(y, yp), abs=1e-9)
    assert p.metrics["mae"] == pytest.approx(skm.mean_absolute_error(y, yp), abs=1e-12)


def test_roundtrip_is_json_safe_and_exact() -> None:
    rows = _rows(60)
    rows[0]["features"]["only_missing"] = None
    p = build_profile(rows, model_id="m", model_version="1")
    text = json.dumps(p.to_dict(), allow_nan=False)
    q = ReferenceProfile.from_dict(json.loads(text))
    assert q == p
    assert q.features["x"].sample.tolist() == p.features["x"].sample.tolist()
    assert q.to_dict() == p.to_dict()
    only = q.features["only_missing"]
    assert isinstance(only, CategoricalProfile) and only.missing == 60


def test_constant_feature_and_window_sketches() -> None:
    rows = [{"c": 5.0, "s": "a"} for _ in range(10)]
    p = build_profile(rows, model_id="m", model_version="1")
    assert p.features["c"].edges.tolist() == [5.0, 5.0] and p.features["c"].counts.tolist() == [10]
    sk = new_numeric_sketch(p, "c")
    sk.update(np.array([4.0, 5.0, 6.0]), stable_keys(["a", "b", "c"]))
    assert sk.counts.tolist() == [3] and (sk.out_of_range_low, sk.out_of_range_high) == (1, 1)
    cs = new_categorical_sketch(p, "s", max_categories=0)
    cs.update(np.array(["a", "zz"], dtype=object))
    assert cs.counts == {"a": 1} and cs.overflow == 1
    with pytest.raises(TypeError):
        new_numeric_sketch(p, "s")
    with pytest.raises(KeyError):
        p.get("nope")


def test_window_counts_compare_with_profile_bins() -> None:
    rows = _rows()
    p = build_profile(rows, model_id="m", model_version="1")
    fx = p.features["x"]
    sk = new_numeric_sketch(p, "x")
    x = np.array([math.nan if r["features"]["x"] is None else r["features"]["x"] for r in rows])
    sk.update(x, stable_keys([r["prediction_id"] for r in rows]))
    assert sk.counts.tolist() == fx.counts.tolist()  # same edges, same binning
    by_hand = np.bincount(bin_index(fx.edges, x[~np.isnan(x)]), minlength=fx.counts.size)
    assert by_hand.tolist() == sk.counts.tolist()


def test_loaders(tmp_path: Path) -> None:
    rows = _rows(30)
    jl = tmp_path / "ref.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    from_jsonl = build_profile(load_rows(jl), model_id="m", model_version="1")
    assert from_jsonl == build_profile(rows, model_id="m", model_version="1")
    flat = [{"x": r["features"]["x"], "city": r["features"]["city"], "label": r["label"]} for r in rows]
    cv = tmp_path / "ref.csv"
    with cv.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["x", "city", "label"])
        w.writeheader()
        w.writerows(flat)
    loaded = list(load_rows(cv))
    assert loaded[0]["x"] is None and loaded[1]["x"] == flat[1]["x"] and loaded[1]["city"] == "sf"
    from_csv = build_profile(loaded, model_id="m", model_version="1")
    assert from_csv.features["x"].counts.tolist() == from_jsonl.features["x"].counts.tolist()
    with pytest.raises(ValueError):
        list(load_rows(tmp_path / "ref.txt"))


@pytest.mark.parametrize("module", ["profile"])
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"driftline.detectors.{module}"))
    assert result.attempted > 0 and result.failed == 0
