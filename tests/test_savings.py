"""The savings dashboard: live learning curve, strategy vs random replay, hours saved."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from sklearn.datasets import load_digits
from streamlit.testing.v1 import AppTest

from automl.refit import refit
from automl.savings import compare_with_random, labels_to_reach, last_comparison, summarise
from automl.simulate import simulate
from labeling.annotations import record_annotation
from labeling.errors import GroundworkError
from labeling.importers import import_source
from labeling.projects import get_project
from labeling.queue import next_items
from tests.test_pages import ROOT_DIR


def test_summary_counts_labels_to_the_goal_and_hours_at_the_pace():
    ours = {"full_accuracy": 0.9, "curve": [{"labels": 10, "accuracy": 0.5},
                                            {"labels": 20, "accuracy": 0.86},
                                            {"labels": 30, "accuracy": 0.88}]}
    theirs = {"full_accuracy": 0.9, "curve": [{"labels": 10, "accuracy": 0.5},
                                              {"labels": 20, "accuracy": 0.7},
                                              {"labels": 30, "accuracy": 0.8},
                                              {"labels": 40, "accuracy": 0.86}]}
    summary = summarise(ours, theirs, pace_per_hour=120.0)
    assert summary["goal"] == 0.855
    assert summary["labels_strategy"] == 20 and summary["labels_random"] == 40
    assert summary["ratio"] == 0.5 and summary["labels_saved"] == 20
    assert summary["hours_saved"] == round(20 / 120, 2)
    never = summarise(ours, {**theirs, "curve": theirs["curve"][:2]}, None)
    assert never["labels_random"] is None and never["labels_saved"] is None
    assert labels_to_reach([], 0.5) is None


@pytest.fixture
def digits_table(db, tmp_path):
    digits = load_digits()
    frame = pd.DataFrame(digits.data[:500], columns=[f"p{i}" for i in range(64)])
    frame["digit"] = [str(d) for d in digits.target[:500]]
    frame.to_csv(tmp_path / "digits.csv", index=False)
    import_source(db, "dg", tmp_path / "digits.csv", "tabular", gold_column="digit")
    return get_project(db, "dg")


def test_compare_with_random_on_gold_is_kept_for_the_page(db, digits_table):
    result = compare_with_random(db, digits_table, budget=120, batch=20, seed=1)
    assert result["oracle"] == "gold" and result["strategy"] == "margin"
    assert [p["labels"] for p in result["curve"]] == [p["labels"] for p in result["random_curve"]]
    summary = result["summary"]
    assert 0 < summary["full_accuracy"] <= 1 and summary["goal"] == round(
        0.95 * summary["full_accuracy"], 4)
    assert last_comparison(db, digits_table) == json.loads(json.dumps(result))


def test_replay_of_own_labels_when_there_is_no_gold(db, tmp_path):
    digits = load_digits()
    frame = pd.DataFrame(digits.data[:200], columns=[f"p{i}" for i in range(64)])
    frame["digit"] = [str(d) for d in digits.target[:200]]
    frame.to_csv(tmp_path / "own.csv", index=False)
    import_source(db, "own", tmp_path / "own.csv", "tabular", label_column="digit")
    project = get_project(db, "own")
    with pytest.raises(GroundworkError, match="gold"):
        simulate(db, project, budget=50)
    result = simulate(db, project, budget=60, batch=10, oracle="labels")
    assert result["oracle"] == "labels" and result["pool_size"] + result["test_size"] == 200
    assert "curated labels answer the queries" in result["how_measured"]
    with pytest.raises(GroundworkError, match="unknown oracle"):
        simulate(db, project, oracle="crowd")


def test_savings_page_shows_the_live_curve_and_runs_the_comparison(db, digits_table,
                                                                   data_dir, monkeypatch):
    monkeypatch.setenv("GROUNDWORK_DATA", str(data_dir))
    monkeypatch.setenv("GROUNDWORK_DEMO", "0")
    for n in (40, 40):
        for item in next_items(db, digits_table, n=n):
            gold = db.execute("SELECT gold FROM items WHERE id = ?", [item["id"]]).fetchone()[0]
            record_annotation(db, digits_table, item["id"], json.loads(gold), user="ann",
                              duration_ms=3000)
        refit(db, digits_table)
    at = AppTest.from_file(str(ROOT_DIR / "automl/pages/savings.py"), default_timeout=120)
    at.session_state["project_name"] = "dg"
    at.run()
    assert not at.exception
    assert any("random validation items labeled so far" in c.value for c in at.caption)
    at.number_input[1].set_value(100)  # labels to spend
    at.number_input[2].set_value(20)
    at.button[1].click().run()  # the form's submit button
    assert not at.exception
    labels = [m.label for m in at.metric]
    assert any(label.startswith("Labels to") for label in labels)
    assert any(c.value.startswith("Goal: 95% of") for c in at.caption)
    assert last_comparison(db, digits_table)["summary"]["pace_per_hour"] == 1200.0

    at.selectbox(key="strategy").set_value("batch").run()
    assert get_project(db, "dg").strategy == "batch"
