"""A regression project in Chromium: type numbers on the Label page, read R² on the Train page."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from playwright.sync_api import expect
from sklearn.datasets import load_diabetes

from automl.training import train_project
from labeling.importers import import_source
from labeling.projects import get_project
from labeling.store import connect
from tests.browser.conftest import AppServer

pytestmark = pytest.mark.browser


def live_answers(data) -> list[tuple[str, str]]:
    with sqlite3.connect(data / "groundwork.db") as conn:
        return conn.execute("SELECT labels, user FROM annotations WHERE retracted_at IS NULL "
                            "AND source = 'human' ORDER BY id").fetchall()


def test_numbers_are_typed_suggestions_accepted_and_the_model_measured(page, tmp_path):
    frame = load_diabetes(as_frame=True).frame.rename(columns={"target": "progression"})
    frame["progression"] = frame["progression"].astype(object)
    frame.loc[300:, "progression"] = None  # the last 142 rows wait for a person
    path = tmp_path / "diabetes.csv"
    frame.to_csv(path, index=False)
    data = tmp_path / "store"
    db = connect(data)
    import_source(db, "diabetes", path, "tabular", label_column="progression")
    train_project(db, get_project(db, "diabetes"), budget=4, model_families=["ridge"])
    db.conn.close()
    server = AppServer(data)
    try:
        page.goto(f"{server.url}/label?project=diabetes")
        expect(page.get_by_text("300 of 442 items labeled")).to_be_visible(timeout=30_000)
        suggested = page.get_by_text(re.compile(r"^Model suggests \d"))
        expect(suggested).to_be_visible()
        expect(suggested).to_contain_text("90% interval")  # measured on the holdout
        box = page.get_by_label("Value")
        box.click()
        box.press_sequentially("151.5")
        box.press("Enter")
        expect(page.get_by_text("301 of 442 items labeled")).to_be_visible()
        assert [a[0] for a in live_answers(data)] == ['["151.5"]']
        # Backspace while typing edits the number: it must not undo the last answer.
        box = page.get_by_label("Value")
        box.click()
        box.press_sequentially("99")
        box.press("Backspace")
        box.press_sequentially("0")
        box.press("Enter")
        expect(page.get_by_text("302 of 442 items labeled")).to_be_visible()
        assert [a[0] for a in live_answers(data)] == ['["151.5"]', '["90"]']
        # Not a number: said so, nothing saved.
        box = page.get_by_label("Value")
        box.click()
        box.press_sequentially("lots")
        box.press("Enter")
        expect(page.get_by_text(re.compile("'lots' is not a number"))).to_be_visible()
        assert len(live_answers(data)) == 2
        # Enter on an empty box accepts the model's suggestion.
        box = page.get_by_label("Value")
        box.fill("")
        shown = re.search(r"suggests ([\d.]+)", suggested.inner_text()).group(1)
        box.press("Enter")
        expect(page.get_by_text("303 of 442 items labeled")).to_be_visible()
        accepted = float(json.loads(live_answers(data)[-1][0])[0])
        assert accepted == pytest.approx(float(shown), rel=1e-3)

        page.goto(f"{server.url}/train?project=diabetes")
        expect(page.get_by_text(re.compile(r"^Data report: 303 labels, regression"))
               ).to_be_visible(timeout=30_000)
        page.get_by_role("tab", name=re.compile("Holdout")).click()
        expect(page.get_by_text("Prediction interval", exact=False).first).to_be_visible()
        expect(page.get_by_test_id("stMetricLabel").filter(has_text="R²")).to_be_visible()
        expect(page.get_by_text("Predicted against actual", exact=False)).to_be_visible()
    finally:
        server.stop()

