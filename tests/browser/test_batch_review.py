"""A batch workflow in the browser: upload a file on the Workflows page, see the preview, open
its human loops, review one on the Review page, and download the batch result."""

from __future__ import annotations

import csv
import io
import re
import sqlite3

import numpy as np
import pandas as pd
import pytest
from playwright.sync_api import expect

from automl.training import train_project
from labeling.importers import import_source
from labeling.projects import get_project
from labeling.store import connect
from review.batches import preview_batch, read_batch
from tests.browser.conftest import AppServer, press_key

pytestmark = pytest.mark.browser


def query(data_dir, sql: str, args=()) -> list[tuple]:
    with sqlite3.connect(data_dir / "groundwork.db") as conn:
        return conn.execute(sql, args).fetchall()


def test_upload_a_batch_open_its_loops_review_one_and_download_the_result(
        page, tmp_path, spam_csv):
    frame = pd.read_csv(spam_csv)
    order = np.random.default_rng(0).permutation(len(frame))
    frame.iloc[order[:80]].to_csv(tmp_path / "train.csv", index=False)
    batch_file = tmp_path / "incoming.csv"
    frame.iloc[order[80:]][["text"]].to_csv(batch_file, index=False)
    data = tmp_path / "store"
    db = connect(data)
    import_source(db, "mail", tmp_path / "train.csv", "text", label_column="label")
    project = get_project(db, "mail")
    train_project(db, project, budget=3)
    expected = preview_batch(db, project, {"confidence_below": 1.0},
                             read_batch(db, project, batch_file), workflow="incoming")
    db.conn.close()
    assert expected["would_open"] >= 1 and expected["batch"] == "incoming"
    opened = expected["would_open"]

    server = AppServer(data)
    try:
        page.goto(f"{server.url}/workflows?project=mail")
        expect(page.get_by_role("heading", name=re.compile("^Workflows · mail"))).to_be_visible(
            timeout=30_000)
        page.get_by_label("Workflow name").fill("incoming")
        page.get_by_label("Workflow name").press("Enter")
        page.get_by_text("A batch prediction on an uploaded file").click()
        below = page.get_by_label("below", exact=True)
        below.fill("1.00")
        below.press("Enter")
        page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(batch_file))
        expect(page.get_by_text(f"This workflow would open {opened} new tasks on the 40 rows "
                                "of batch incoming (model v1)")).to_be_visible(timeout=60_000)
        assert query(data, "SELECT count(*) FROM items") == [(80,)]  # the preview wrote nothing
        page.locator('[data-test-script-state="notRunning"]').wait_for()
        page.get_by_role("button", name="Save and open tasks").click()
        expect(page.get_by_text(f"batch incoming: predicted 40 rows with model v1, opened "
                                f"{opened} review tasks")).to_be_visible()
        assert query(data, "SELECT count(*) FROM review_tasks WHERE source = 'batch'") == [
            (opened,)]
        assert query(data, "SELECT count(*) FROM items WHERE key LIKE 'batch:incoming:%'") == [
            (40,)]

        # A reviewer sees the batch row's real text and accepts the model's answer.
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Review",
                                                        exact=True).click()
        expect(page.get_by_text(f"{opened} open · 0 completed")).to_be_visible()
        expect(page.get_by_text(re.compile(r"^batch:incoming:\d+$")).first).to_be_visible()
        press_key(page, "Enter")
        expect(page.get_by_text(f"{opened - 1} open · 1 completed")).to_be_visible()
        done = query(data, "SELECT i.key, a.labels, a.source FROM review_tasks t JOIN items i "
                           "ON i.id = t.item_id JOIN annotations a ON a.id = t.annotation_id")
        assert len(done) == 1 and done[0][2] == "review"
        reviewed_key = done[0][0].split(":")[-1]

        # The batch result: one row per input row, the reviewed one marked.
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Workflows",
                                                        exact=True).click()
        expect(page.get_by_role("heading", name="Batches")).to_be_visible()
        with page.expect_download() as download:
            page.get_by_role("button", name="Download CSV").click()
        rows = list(csv.DictReader(io.StringIO(
            download.value.path().read_text(encoding="utf-8"))))
        assert len(rows) == 40
        reviewed = [r for r in rows if r["reviewed"] == "true"]
        assert [r["key"] for r in reviewed] == [reviewed_key]
        assert reviewed[0]["final_source"] == "review"
        assert all(r["final_source"] == "model" for r in rows if r["reviewed"] == "false")
    finally:
        server.stop()
