"""The live queue: strategies over stored scores, the background quick refit, its curve."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from automl.jobs import latest_job
from automl.refit import learning_curve, maybe_refit, refit, refit_due
from labeling.annotations import record_annotation
from labeling.errors import GroundworkError
from labeling.hooks import answers_saved, on_answers_saved
from labeling.importers import import_source
from labeling.items import add_items
from labeling.projects import get_project, set_refit_every, set_strategy
from labeling.queue import next_items, queue_suggestion
from labeling.strategies import STRATEGIES, queue_order, usefulness
from tests.test_cli import Run


@pytest.fixture
def digits_table(db, tmp_path):
    digits = load_digits()
    frame = pd.DataFrame(digits.data[:600], columns=[f"p{i}" for i in range(64)])
    frame["digit"] = [str(d) for d in digits.target[:600]]
    path = tmp_path / "digits.csv"
    frame.to_csv(path, index=False)
    import_source(db, "dg", path, "tabular", gold_column="digit")
    return get_project(db, "dg")


def label_with_gold(db, project, n, user="ann"):
    done = []
    for item in next_items(db, project, n=n, user=user):
        gold = json.loads(db.execute("SELECT gold FROM items WHERE id = ?",
                                     [item["id"]]).fetchone()[0])
        done.append(record_annotation(db, project, item["id"], gold, user=user))
    return done


def test_queue_order_keeps_every_row_once_for_every_strategy():
    rng = np.random.default_rng(1)
    proba = rng.dirichlet(np.ones(4), size=300)
    predicted = np.array(list("abcd"))[proba.argmax(axis=1)]
    features = rng.normal(size=(300, 5))
    for strategy in STRATEGIES:
        order = queue_order(strategy, proba, predicted, {"a": 3}, batch=20,
                            pool_features=features, labeled_features=features[:5])
        assert sorted(order.tolist()) == list(range(300)), strategy
    margin = queue_order("margin", proba, predicted, {})
    assert margin[0] == np.argmax(usefulness("margin", proba))
    assert list(queue_order("random", proba, predicted, {}, seed=3)) == list(
        queue_order("random", proba, predicted, {}, seed=3))


def test_batch_order_gives_under_represented_predicted_classes_their_share():
    # The 40 most uncertain rows are all predicted "a"; "b" has few labels.
    proba = np.r_[np.tile([0.51, 0.49], (40, 1)), np.tile([0.2, 0.8], (60, 1))]
    proba[:40, 0] += np.linspace(0, 0.01, 40)
    proba[:40, 1] = 1 - proba[:40, 0]
    predicted = np.where(proba[:, 0] >= 0.5, "a", "b")
    first = queue_order("batch", proba, predicted, {"a": 100, "b": 1}, batch=10)[:10]
    assert sum(predicted[first] == "b") >= 5
    plain = queue_order("uncertainty", proba, predicted, {"a": 100, "b": 1})[:10]
    assert all(predicted[plain] == "a")


def test_refit_scores_the_pool_and_the_queue_follows_the_stored_order(db, digits_table):
    project = set_strategy(db, digits_table, "margin")
    label_with_gold(db, project, 80)
    result = refit(db, project)
    assert result["labels"] == 80 and result["scored"] == 520
    assert result["holdout_size"] > 0 and 0.0 <= result["accuracy"] <= 1.0
    stored = db.execute("SELECT count(*) FROM queue_scores WHERE project_id = ?",
                        [project.id]).fetchone()[0]
    assert stored == 520

    served = [r for r in next_items(db, project, n=30) if r["reason"] == "margin"]
    assert served, "scored items are served by the strategy"
    expected = [r[0] for r in db.execute(
        "SELECT q.item_id FROM queue_scores q JOIN items i ON i.id = q.item_id "
        "WHERE q.project_id = ? AND i.holdout = 0 ORDER BY q.priority LIMIT ?",
        [project.id, len(served)])]
    assert [r["id"] for r in served] == expected
    # Stored with each score: the quick model's suggestion for the Label page.
    suggestion = queue_suggestion(db, expected[0])
    assert suggestion["predicted"][0] in project.classes and 0 <= suggestion["confidence"] <= 1

    point = learning_curve(db, project)[-1]
    assert point["labels"] == 80 and point["accuracy"] == result["accuracy"]
    assert point["holdout_size"] == result["holdout_size"] and point["strategy"] == "margin"


def test_refit_batch_strategy_and_new_items_stay_reachable(db, digits_table):
    project = set_strategy(db, digits_table, "batch")
    label_with_gold(db, project, 60)
    refit(db, project)
    reasons = {r["reason"] for r in next_items(db, project, n=40)}
    assert "batch" in reasons
    with db.atomic():
        add_items(db, project, [{"key": "late", "content": json.dumps({"p0": 1.0}),
                                 "sha256": "late"}])
    everything = next_items(db, project, n=10_000)
    assert "late" in {r["key"] for r in everything}  # imported after the refit, still offered
    open_items = db.execute("SELECT count(*) FROM items WHERE project_id = ? AND n_labels = 0",
                            [project.id]).fetchone()[0]
    assert len(everything) == open_items


def test_refit_with_one_class_is_a_clear_error_and_changes_nothing(db, digits_table):
    first = next_items(db, digits_table, n=1)[0]
    record_annotation(db, digits_table, first["id"], ["0"], user="ann")
    with pytest.raises(GroundworkError, match="class"):
        refit(db, digits_table)
    assert db["queue_scores"].count == 0 and db["learning_curve"].count == 0


def test_refit_runs_in_the_background_every_n_labels(db, digits_table):
    project = set_refit_every(db, digits_table, 30)
    on_answers_saved(maybe_refit)
    label_with_gold(db, project, 29)
    answers_saved(db, project)
    assert latest_job(db, project, "refit") is None  # not due yet
    label_with_gold(db, project, 1)
    assert refit_due(db, project)
    answers_saved(db, project)  # what the Label page does after each answer
    job = latest_job(db, project, "refit")
    assert job is not None and job["params"]["labels"] == 30
    assert not refit_due(db, project)  # one refit at a time
    deadline = time.monotonic() + 120
    while latest_job(db, project, "refit")["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, "refit did not finish"
        time.sleep(0.2)
    done = latest_job(db, project, "refit")
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["labels"] == 30
    assert db.execute("SELECT count(*) FROM queue_scores").fetchone()[0] > 0
    assert not refit_due(db, project)
    label_with_gold(db, project, 30)
    assert refit_due(db, project)
    assert not refit_due(db, set_refit_every(db, project, 0))  # 0 turns it off


def test_refit_multi_label(db, tmp_path):
    rows = []
    for i in range(80):
        tags = [t for t, on in (("urgent", i % 2 == 0), ("billing", i % 3 == 0)) if on]
        words = ("asap now " if "urgent" in tags else "later ") + (
            "invoice paid" if "billing" in tags else "hello there")
        rows.append({"text": f"{words} {i}", "tags": ",".join(tags) or None})
    path = tmp_path / "tags.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    import_source(db, "tags", path, "text", task="multi-label", gold_column="tags",
                  classes=["urgent", "billing"])
    project = get_project(db, "tags")
    for item in next_items(db, project, n=40):
        gold = db.execute("SELECT gold FROM items WHERE id = ?", [item["id"]]).fetchone()[0]
        labels = json.loads(gold) if gold else []
        if labels:
            record_annotation(db, project, item["id"], labels, user="ann")
    result = refit(db, project)
    assert result["scored"] > 0
    suggestion = queue_suggestion(db, next_items(db, project, n=1)[0]["id"])
    assert set(suggestion["predicted"]) <= {"urgent", "billing"}


def test_cli_settings_and_refit(db, digits_table, data_dir, tmp_path, capsys):
    gw = Run(data_dir, capsys)
    out = gw.json("settings", "dg", "--strategy", "entropy", "--refit-every", "15")
    assert out["strategy"] == "entropy" and out["refit_every"] == 15
    assert "0 (off) to 100000" in gw.fails("settings", "dg", "--refit-every", "-1")
    assert "magic" in gw.fails("settings", "dg", "--strategy", "magic")
    assert gw.json("settings", "dg")["refit_every"] == 15  # the bad calls changed nothing
    label_with_gold(db, get_project(db, "dg"), 50)
    result = gw.json("refit", "dg")
    assert result["labels"] == 50 and result["strategy"] == "entropy" and result["scored"] == 550
    nxt = gw.json("next", "dg", "--n", "20")["items"]
    assert {i["reason"] for i in nxt} <= {"entropy", "validation"}
    assert "entropy" in {i["reason"] for i in nxt}

    other = Run(tmp_path / "other", capsys)
    other.json("import", "x", str(tmp_path / "digits.csv"), "--modality", "tabular",
               "--gold-column", "digit")
    assert "label" in other.fails("refit", "x")  # no labels yet: says what to do
