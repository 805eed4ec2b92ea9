"""The savings dashboard in a real browser: live curve, then strategy against random."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from playwright.sync_api import expect
from sklearn.datasets import load_digits

from automl.refit import refit
from labeling.annotations import record_annotation
from labeling.importers import import_source
from labeling.projects import get_project
from labeling.queue import next_items
from labeling.store import connect
from tests.browser.conftest import AppServer
from tests.browser.test_full_loop import shot

pytestmark = pytest.mark.browser


def test_savings_page_charts_the_live_curve_and_the_comparison(page, tmp_path):
    data = tmp_path / "store"
    digits = load_digits()
    frame = pd.DataFrame(digits.data[:400], columns=[f"p{i}" for i in range(64)])
    frame["digit"] = [str(d) for d in digits.target[:400]]
    frame.to_csv(tmp_path / "digits.csv", index=False)
    db = connect(data)
    import_source(db, "dg", tmp_path / "digits.csv", "tabular", gold_column="digit")
    project = get_project(db, "dg")
    for _ in range(2):
        for item in next_items(db, project, n=40):
            gold = db.execute("SELECT gold FROM items WHERE id = ?", [item["id"]]).fetchone()[0]
            record_annotation(db, project, item["id"], json.loads(gold), user="ann",
                              duration_ms=2000)
        refit(db, project)
    db.conn.close()
    server = AppServer(data)
    try:
        page.goto(f"{server.url}/savings?project=dg")
        expect(page.get_by_role("heading", name=re.compile("^Savings · dg"))).to_be_visible()
        expect(page.get_by_text(re.compile("random validation items labeled so far"))) \
            .to_be_visible()
        expect(page.get_by_test_id("stVegaLiteChart")).to_have_count(1)
        page.get_by_label("Labels to spend").fill("100")
        page.get_by_label("Labels per round").fill("20")
        page.get_by_role("button", name="Compare margin with random").click()
        expect(page.get_by_text(re.compile(r"^Goal: 95% of"))).to_be_visible(timeout=60_000)
        expect(page.get_by_test_id("stVegaLiteChart")).to_have_count(2)
        expect(page.get_by_test_id("stMetric").first).to_be_visible()
        shot(page, "7-savings")
    finally:
        server.stop()
