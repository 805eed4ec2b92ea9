"""The Label page's multi-label keyboard in Chromium: digits toggle tags, Enter submits the set
or accepts the model's suggested set, 0 answers that no tag applies; every button shows its key.

The model is a promoted model version row with stored predictions of known probabilities
(p >= 0.5 is a predicted tag), so each item's suggestion is exact whatever order the queue
serves them in; what is checked is what lands in the SQLite file.
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
from tests.browser.conftest import AppServer, press_key

pytestmark = pytest.mark.browser

TAGS = ["a", "b", "c", "d"]
# One row per item: the model suggests a, b / c / nothing / b, d.
PROBABILITIES = [[0.9, 0.7, 0.1, 0.2], [0.1, 0.3, 0.8, 0.4], [0.2, 0.1, 0.3, 0.4],
                 [0.3, 0.6, 0.2, 0.9]]


def seed(data) -> dict[str, list[str]]:
    """The project, its items and a promoted model's predictions; item text -> suggested set."""
    db = connect(data)
    project = create_project(db, "tags", "text", task="multi-label", classes=TAGS)
    with db.atomic():
        add_items(db, project, [{"key": f"t{i}", "content": f"note number {i}",
                                 "sha256": str(i)} for i in range(len(PROBABILITIES))])
        model = db["model_versions"].insert({
            "project_id": project.id, "version": 1, "created_at": "now", "status": "promoted",
            "estimator": "logreg", "metric_name": "balanced_accuracy", "train_size": 0,
            "snapshot_hash": "-", "artifact_path": "-", "artifact_sha256": "-",
            "classes": json.dumps(TAGS)}).last_pk
    ids = [r[0] for r in db.execute("SELECT id FROM items ORDER BY id")]
    store_predictions(db, model, ids, TAGS, np.array(PROBABILITIES), multi_label=True)
    suggested = {f"note number {i}": [t for t, p in zip(TAGS, row, strict=True) if p >= 0.5]
                 for i, row in enumerate(PROBABILITIES)}
    db.conn.close()
    return suggested


def answers(data) -> dict[str, list[str]]:
    """Item text -> the live answer's tags."""
    with sqlite3.connect(data / "groundwork.db") as conn:
        rows = conn.execute("SELECT i.content, a.labels FROM annotations a JOIN items i "
                            "ON i.id = a.item_id WHERE a.retracted_at IS NULL").fetchall()
    return {content: json.loads(labels) for content, labels in rows}


def button(page, key: str):
    """The button keyed `key-<item id>` (answer buttons are keyed by the item shown)."""
    return page.locator(f'[class*="st-key-{key}"] button').first


def next_item(page, previous: str) -> str:
    """The item now on screen, once the page has replaced `previous` (the bar and the item
    are redrawn one after the other)."""
    expect(page.get_by_test_id("stText").first).not_to_have_text(previous)
    return page.get_by_test_id("stText").first.inner_text()


def test_multi_label_keys_toggle_submit_accept_and_answer_no_tags(page, tmp_path):
    data = tmp_path / "store"
    suggested = seed(data)
    server = AppServer(data)
    try:
        page.goto(f"{server.url}/label?project=tags")
        expect(page.get_by_text("0 of 4 items labeled")).to_be_visible()
        expect(button(page, "forward")).to_be_visible()  # drawn to the last button

        # Every button carries its shortcut, shown in the button.
        for key, hint in (("cls-0-", "1"), ("cls-1-", "2"), ("cls-2-", "3"), ("cls-3-", "4"),
                          ("none-", "0"), ("submit-", "Enter"), ("skip", "S"), ("undo", "U"),
                          ("undo-backspace", "Backspace"), ("back", "←"),
                          ("forward", "→")):
            expect(button(page, key).locator("kbd")).to_have_text(hint)
            expect(button(page, key).locator("kbd")).to_have_attribute(
                "aria-label", f"Shortcut {hint}")

        # 1 and 3 toggle a and c on, 1 again takes a off, Enter submits the set: c.
        first = page.get_by_test_id("stText").first.inner_text()
        submit = button(page, "submit-")
        press_key(page, "1")
        expect(submit).to_contain_text("Submit a")
        press_key(page, "3")
        expect(submit).to_contain_text("Submit a, c")
        expect(button(page, "cls-0-")).to_have_attribute("kind", "primary")  # drawn as on
        press_key(page, "1")
        expect(submit).to_contain_text("Submit c")
        expect(button(page, "cls-0-")).to_have_attribute("kind", "secondary")
        assert answers(data) == {}  # toggling saves nothing
        press_key(page, "Enter")
        expect(page.get_by_text("1 of 4 items labeled")).to_be_visible()
        assert answers(data) == {first: ["c"]}

        # Nothing toggled: Enter accepts the model's suggested set, whatever it is.
        second = next_item(page, first)
        wanted = suggested[second]
        expect(page.get_by_text(re.compile(
            rf"^Model suggests {re.escape(', '.join(wanted) or '(none)')} "))).to_be_visible()
        expect(submit).to_contain_text(f"Accept {', '.join(wanted) or 'no tags'}")
        press_key(page, "Enter")
        expect(page.get_by_text("2 of 4 items labeled")).to_be_visible()
        assert answers(data)[second] == wanted

        # 0: no tag applies, even with a tag toggled and the model suggesting some.
        third = next_item(page, second)
        press_key(page, "2")
        expect(submit).to_contain_text("Submit b")
        press_key(page, "0")
        expect(page.get_by_text("3 of 4 items labeled")).to_be_visible()
        expect(page.get_by_text("Saved no tags")).to_be_visible()
        assert answers(data)[third] == []

        # The last item: Enter accepts its suggestion, an empty one included.
        fourth = next_item(page, third)
        expect(submit).to_contain_text(f"Accept {', '.join(suggested[fourth]) or 'no tags'}")
        press_key(page, "Enter")
        expect(page.get_by_text(re.compile("^Every item has a label"))).to_be_visible()
        assert answers(data) == {first: ["c"], second: suggested[second], third: [],
                                 fourth: suggested[fourth]}
    finally:
        server.stop()
