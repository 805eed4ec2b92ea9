"""Review workflows in the browser: define one, tasks open, an expired task is not offered,
a reviewer corrects a prediction with the keyboard, and the correction is in the next
training snapshot."""

from __future__ import annotations

import re
import sqlite3
import time

import pandas as pd
import pytest
from playwright.sync_api import expect

from automl.training import train_project
from labeling.importers import import_source
from labeling.projects import get_project
from labeling.store import connect
from review.workflows import preview
from tests.browser.conftest import AppServer, press_key
from tests.browser.test_full_loop import shot

pytestmark = pytest.mark.browser


def seed(data_dir, spam_csv, tmp_path) -> int:
    """Spam subset, a third of it labeled, one model trained.

    Returns how many pool items the model is less than certain about: the search
    may pick a family that gives some items a confidence of exactly 1.0, which a
    "confidence below 1.00" condition rightly does not match.
    """
    frame = pd.read_csv(spam_csv)
    frame = frame.assign(label=[v if i % 3 == 0 else None for i, v in enumerate(frame["label"])])
    path = tmp_path / "mail.csv"
    frame.to_csv(path, index=False)
    db = connect(data_dir)
    import_source(db, "mail", path, "text", label_column="label")
    train_project(db, get_project(db, "mail"), budget=3)
    pool = preview(db, get_project(db, "mail"), {"confidence_below": 1.0})["would_open"]
    assert pool >= 5, "the test needs a few uncertain items to review"
    db.conn.close()
    return pool


def query(data_dir, sql: str, args=()) -> list[tuple]:
    with sqlite3.connect(data_dir / "groundwork.db") as conn:
        return conn.execute(sql, args).fetchall()


def test_workflow_opens_tasks_expired_one_skipped_keyboard_correction_retrained(
        page, tmp_path, spam_csv):
    data = tmp_path / "store"
    pool = seed(data, spam_csv, tmp_path)
    server = AppServer(data)
    try:
        # 1. Define a workflow with a preview, then save it and open its tasks.
        page.goto(f"{server.url}/workflows?project=mail")
        expect(page.get_by_role("heading", name=re.compile("^Workflows · mail"))).to_be_visible(
            timeout=30_000)
        page.get_by_label("Workflow name").fill("doubts")
        page.get_by_label("Workflow name").press("Enter")
        below = page.get_by_label("below", exact=True)
        below.fill("1.00")
        below.press("Enter")
        expiry = page.get_by_label("Tasks expire after (hours; 0 = never)")
        expiry.fill("24")
        expiry.press("Enter")
        expect(page.get_by_text(f"This workflow would open {pool} new tasks")).to_be_visible()
        page.locator('[data-test-script-state="notRunning"]').wait_for()
        shot(page, "7-workflow")
        page.get_by_role("button", name="Save and open tasks").click()
        expect(page.get_by_text(f"Saved workflow doubts; opened {pool} review tasks")
               ).to_be_visible()
        rows = query(data, "SELECT t.id, t.expires_at, w.expiry_hours FROM review_tasks t "
                           "JOIN review_workflows w ON w.id = t.workflow_id "
                           "WHERE w.name = 'doubts' ORDER BY t.confidence, t.id")
        assert len(rows) == pool and all(r[1] and r[2] == 24 for r in rows)

        # 2. The task that would come first expires: it must not be offered.
        expired_id = rows[0][0]
        with sqlite3.connect(data / "groundwork.db") as conn:
            conn.execute("UPDATE review_tasks SET expires_at = '2000-01-01T00:00:00.000Z' "
                         "WHERE id = ?", [expired_id])
        expired_key = query(data, "SELECT i.key FROM review_tasks t JOIN items i ON "
                                  "i.id = t.item_id WHERE t.id = ?", [expired_id])[0][0]
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Review",
                                                        exact=True).click()
        expect(page.get_by_text(f"{pool - 1} open · 0 completed · 1 expired")).to_be_visible()
        why = page.get_by_text(re.compile(r"^Model says \S+ with confidence"))
        expect(why).to_be_visible()
        expect(page.get_by_text("flagged because confidence < 1.00")).to_be_visible()
        # the task on screen is the one the page claimed for this reviewer
        shown = query(data, "SELECT id FROM review_tasks WHERE status = 'in progress' "
                            "AND id != ? ORDER BY confidence, id LIMIT 1", [expired_id])[0][0]
        assert page.get_by_test_id("stCaptionContainer").filter(
            has_text=re.compile(rf"^{re.escape(expired_key)}$")).count() == 0

        # 3. The reviewer corrects the prediction with the keyboard (the other class).
        predicted = re.search(r"Model says (\S+) with", why.inner_text()).group(1)
        press_key(page, "1" if predicted == "spam" else "2")
        expect(page.get_by_text(f"{pool - 2} open · 1 completed · 1 expired")).to_be_visible()
        shot(page, "8-review-workflow")
        answer = query(data, "SELECT t.id, t.status, t.predicted, a.labels, a.source, a.user "
                             "FROM review_tasks t JOIN annotations a ON a.id = t.annotation_id")
        assert len(answer) == 1
        task_id, status, task_predicted, labels, source, user = answer[0]
        assert task_id == shown and status == "completed" and labels != task_predicted
        assert (source, user) == ("review", "local-admin")
        assert query(data, "SELECT status FROM review_tasks WHERE id = ?",
                     [expired_id]) == [("expired",)]

        # 4. Retrain from corrected labels: the correction is in the new training snapshot.
        page.get_by_role("button", name="Retrain from corrected labels").click()
        expect(page.get_by_text(re.compile(r"Started training job"))).to_be_visible()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not query(
                data, "SELECT 1 FROM model_versions WHERE version = 2"):
            time.sleep(0.5)
        item = query(data, "SELECT item_id FROM review_tasks WHERE id = ?", [task_id])[0][0]
        snapshot = query(data, "SELECT s.labels, s.source FROM training_set_items s JOIN "
                               "model_versions m ON m.training_set_id = s.training_set_id "
                               "WHERE m.version = 2 AND s.item_id = ?", [item])
        assert snapshot == [(labels, "review")]
    finally:
        server.stop()
