"""The Review page's whole keyboard in Chromium: S skips, a digit corrects, U undoes, Enter
accepts, each followed by the next task on screen without a click; in a multi-label
project digits toggle tags and Enter submits the set.

The store is real; the model is a promoted model version row with stored predictions
of known probabilities, so which task comes when (least confident first) is exact.
"""

from __future__ import annotations

import json
import re
import sqlite3

import numpy as np
import pytest
from playwright.sync_api import expect

from labeling.items import add_items
from labeling.projects import create_project
from labeling.queue import store_predictions
from labeling.store import connect
from review.workflows import run_workflow, save_workflow
from tests.browser.conftest import AppServer, press_key

pytestmark = pytest.mark.browser

CLASSES = ["a", "b", "c", "d"]


def seed(data, task: str, probabilities: list[list[float]]) -> None:
    """One item per row of `probabilities`, a promoted model that gave them, and a workflow
    that opened a task for each prediction less sure than 0.6."""
    db = connect(data)
    project = create_project(db, "notes", "text", task=task, classes=CLASSES)
    with db.atomic():
        add_items(db, project, [{"key": f"n{i}", "content": f"note number {i}",
                                 "sha256": str(i)} for i in range(len(probabilities))])
        model = db["model_versions"].insert({
            "project_id": project.id, "version": 1, "created_at": "now", "status": "promoted",
            "estimator": "logreg", "metric_name": "balanced_accuracy", "train_size": 0,
            "snapshot_hash": "-", "artifact_path": "-", "artifact_sha256": "-",
            "classes": json.dumps(CLASSES)}).last_pk
    store_predictions(db, model, list(range(1, len(probabilities) + 1)), CLASSES,
                      np.array(probabilities), multi_label=task == "multi-label")
    save_workflow(db, project, "unsure", {"confidence_below": 0.6})
    run_workflow(db, project, "unsure")
    db.conn.close()


def tasks(data) -> dict[int, tuple]:
    """item id -> (status, live answer labels or None, live review answers)."""
    with sqlite3.connect(data / "groundwork.db") as conn:
        rows = conn.execute(
            "SELECT t.item_id, t.status, a.labels, (SELECT count(*) FROM review_answers r "
            "WHERE r.task_id = t.id AND r.retracted_at IS NULL) FROM review_tasks t "
            "LEFT JOIN annotations a ON a.id = t.annotation_id AND a.retracted_at IS NULL"
        ).fetchall()
    return {item: (status, json.loads(labels) if labels else None, answers)
            for item, status, labels, answers in rows}


def claimed_items(data) -> list[int]:
    """The items of the tasks someone holds a claim on now."""
    with sqlite3.connect(data / "groundwork.db") as conn:
        return [i for (i,) in conn.execute(
            "SELECT t.item_id FROM review_claims c JOIN review_tasks t ON t.id = c.task_id "
            "WHERE c.expires_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now')").fetchall()]


def on_screen(page, predicted: str, confidence: str) -> None:
    expect(page.get_by_text(re.compile(
        rf"^Model says {re.escape(predicted)} with confidence {confidence}"))).to_be_visible()


def loaded(page, url: str) -> None:
    """The whole page drawn, down to its last button: a key pressed while the first run
    is still drawing can reach a page without its shortcut handlers yet."""
    page.goto(url)
    expect(page.get_by_role("button", name="Retrain from corrected labels")).to_be_visible()


def test_skip_correct_undo_accept_with_the_keyboard_each_advancing(page, tmp_path):
    data = tmp_path / "store"
    seed(data, "single-label", [
        [0.40, 0.30, 0.20, 0.10],  # item 1: the least sure, first
        [0.10, 0.45, 0.25, 0.20],  # item 2
        [0.15, 0.15, 0.20, 0.50],  # item 3
        [0.90, 0.05, 0.03, 0.02],  # item 4: sure, no task
    ])
    server = AppServer(data)
    try:
        loaded(page, f"{server.url}/review?project=notes")
        on_screen(page, "a", "0.40")
        expect(page.get_by_text("Top 3: a 0.40 · b 0.30 · c 0.20")).to_be_visible()
        expect(page.get_by_text("3 open · 0 completed · 0 expired")).to_be_visible()

        press_key(page, "s")  # skip: the next task, and item 1 is free for anyone
        on_screen(page, "b", "0.45")
        expect(page.get_by_text("Top 3: b 0.45 · c 0.25 · d 0.20")).to_be_visible()
        assert tasks(data)[1] == ("open", None, 0)
        assert 1 not in claimed_items(data)

        press_key(page, "3")  # correct item 2 to c
        on_screen(page, "d", "0.50")
        assert tasks(data)[2] == ("completed", ["c"], 1)

        press_key(page, "u")  # undo: item 2 is back, held for this reviewer, unanswered
        on_screen(page, "b", "0.45")
        assert tasks(data)[2] == ("in progress", None, 0)

        press_key(page, "Enter")  # accept the model's b this time
        on_screen(page, "d", "0.50")
        assert tasks(data)[2] == ("completed", ["b"], 1)

        press_key(page, "Enter")  # accept d on item 3: the skipped item 1 comes back last
        on_screen(page, "a", "0.40")
        expect(page.get_by_text("1 open · 2 completed · 0 expired")).to_be_visible()
        assert tasks(data)[3] == ("completed", ["d"], 1)
        assert tasks(data)[1] == ("in progress", None, 0)  # on screen again: held
    finally:
        server.stop()


def test_multi_label_digits_toggle_tags_and_enter_submits_the_set(page, tmp_path):
    data = tmp_path / "store"
    seed(data, "multi-label", [
        [0.90, 0.60, 0.10, 0.05],  # item 1: a, b (b at 0.60 is the least sure: 0.20)
        [0.20, 0.95, 0.55, 0.02],  # item 2: b, c (c at 0.55: 0.10), first
    ])
    server = AppServer(data)
    try:
        loaded(page, f"{server.url}/review?project=notes")
        on_screen(page, "b, c", "0.10")
        accept = page.locator("[class*='st-key-accept-'] button")  # keyed by the task shown
        expect(accept).to_contain_text("Accept b, c")
        press_key(page, "1")  # a on
        expect(accept).to_contain_text("Submit a")
        press_key(page, "4")  # d on
        press_key(page, "1")  # a off again
        expect(accept).to_contain_text("Submit d")
        press_key(page, "2")  # b on
        expect(accept).to_contain_text("Submit b, d")
        assert tasks(data)[2][0] == "in progress"  # toggling saves nothing
        press_key(page, "Enter")
        on_screen(page, "a, b", "0.20")  # auto-advance, nothing toggled for the next one
        expect(accept).to_contain_text("Accept a, b")
        assert tasks(data)[2] == ("completed", ["b", "d"], 1)
        press_key(page, "Enter")  # nothing toggled: Enter accepts the predicted set
        expect(page.get_by_text(re.compile("^No open review tasks"))).to_be_visible()
        assert tasks(data)[1] == ("completed", ["a", "b"], 1)
    finally:
        server.stop()
