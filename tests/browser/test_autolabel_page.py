"""Auto-label in the browser: the curve, a run, and Enter accepting the model's suggestion."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from playwright.sync_api import expect
from sklearn.datasets import load_digits

from automl.training import train_project
from labeling.annotations import record_annotation
from labeling.importers import import_source
from labeling.projects import get_project
from labeling.queue import next_items
from labeling.store import connect
from tests.browser.conftest import AppServer
from tests.browser.test_full_loop import shot

pytestmark = pytest.mark.browser


def seed(data_dir, tmp_path) -> None:
    """Digits as a table, 450 answers served by the queue and answered with the gold."""
    frame = load_digits(as_frame=True).frame.rename(columns={"target": "digit"})
    frame.to_csv(tmp_path / "digits.csv", index=False)
    db = connect(data_dir)
    import_source(db, "dt", tmp_path / "digits.csv", "tabular", gold_column="digit")
    project = get_project(db, "dt")
    gold = {r[0]: json.loads(r[1]) for r in db.execute("SELECT id, gold FROM items")}
    for round_size, budget in ((300, 3), (150, 4)):
        for _ in range(round_size):
            item_id = next_items(db, project)[0]["id"]
            record_annotation(db, project, item_id, gold[item_id], user="ann")
        train_project(db, project, budget=budget)
    db.conn.close()


def test_autolabel_page_and_enter_accepts_the_suggestion(page, tmp_path):
    data = tmp_path / "store"
    seed(data, tmp_path)
    server = AppServer(data)
    try:
        page.goto(f"{server.url}/autolabel?project=dt")
        expect(page.get_by_role("heading", name=re.compile("^Auto-label · dt"))).to_be_visible()
        target = page.get_by_label("Target accuracy")
        target.fill("0.850")
        target.press("Enter")
        # Wait for the rerun with the new target before reading the button's count.
        expect(page.get_by_text(re.compile(r"^Chosen point for target 0\.850: confidence"))
               ).to_be_visible()
        page.locator('[data-test-script-state="notRunning"]').wait_for()
        expect(page.get_by_test_id("stVegaLiteChart")).to_be_visible()
        button = page.get_by_role("button", name=re.compile(r"^Auto-label \d+ items"))
        count = int(re.search(r"\d+", button.inner_text()).group())
        button.click()
        expect(page.get_by_text(f"Labeled {count} items by machine")).to_be_visible()
        shot(page, "6-autolabel")
        with sqlite3.connect(data / "groundwork.db") as conn:
            assert conn.execute("SELECT count(*) FROM annotations WHERE source = 'auto' AND "
                                "retracted_at IS NULL").fetchone()[0] == count

        # Revert in one action: the items go back to people.
        page.get_by_role("button", name=f"Revert all {count} machine labels").click()
        expect(page.get_by_text(f"Reverted {count} machine labels")).to_be_visible()

        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Label", exact=True).click()
        suggestion = page.get_by_text(re.compile(r"^Model suggests"))
        expect(suggestion).to_be_visible()
        suggested = re.search(r"suggests (\S+)", suggestion.inner_text()).group(1)
        before = sqlite3.connect(data / "groundwork.db").execute(
            "SELECT count(*) FROM annotations WHERE source = 'human'").fetchone()[0]
        # Enter on the focused nav link would follow the link: take the focus off it first.
        page.evaluate("document.activeElement && document.activeElement.blur()")
        # A key pressed while the page is still rerunning can land on a button being replaced.
        page.locator('[data-test-script-state="notRunning"]').wait_for()
        page.keyboard.press("Enter")
        expect(page.get_by_text(f"Saved {suggested}")).to_be_visible()
        with sqlite3.connect(data / "groundwork.db") as conn:
            last = conn.execute("SELECT labels, source FROM annotations WHERE source = 'human' "
                                "ORDER BY id DESC LIMIT 1").fetchone()
            after = conn.execute("SELECT count(*) FROM annotations WHERE source = 'human'"
                                 ).fetchone()[0]
        assert after == before + 1 and last == (json.dumps([suggested]), "human")
    finally:
        server.stop()
