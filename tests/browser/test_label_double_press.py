"""Issue 3: a shortcut pressed twice quickly answers the item shown once, never the next one.

The second press is sent by the browser while it still shows the first item,
and reaches the server after the server has already moved on to the second
item (the answer saved, the next item leased). To make that order certain,
the server's messages to the browser are held back (Playwright's WebSocket
routing) from the first press until after the second: exactly what a slow
connection or a busy browser does.
"""

from __future__ import annotations

import re
import sqlite3
import time

import pytest
from playwright.sync_api import expect

from labeling.items import add_items
from labeling.projects import create_project
from labeling.store import connect
from tests.browser.conftest import AppServer, press_key

pytestmark = pytest.mark.browser


def _rows(data, sql: str, args=()) -> list[tuple]:
    with sqlite3.connect(data / "groundwork.db") as conn:
        return conn.execute(sql, args).fetchall()


def test_pressing_a_class_key_twice_answers_only_the_item_shown(page, tmp_path):
    data = tmp_path / "store"
    db = connect(data)
    project = create_project(db, "mail", "text", classes=["ham", "spam"])
    with db.atomic():
        add_items(db, project, [{"key": str(i), "content": f"message {i}", "sha256": str(i)}
                                for i in range(3)])
    db.conn.close()
    server = AppServer(data)
    held = {"on": False, "messages": [], "routes": []}

    def route(ws) -> None:
        upstream = ws.connect_to_server()

        def to_browser(message) -> None:
            if held["on"]:
                held["messages"].append((ws, message))
            else:
                ws.send(message)

        ws.on_message(upstream.send)
        upstream.on_message(to_browser)
        held["routes"].append(ws)

    try:
        page.route_web_socket(re.compile(r".*/_stcore/stream$"), route)
        page.goto(f"{server.url}/label?project=mail")
        expect(page.get_by_text("0 of 3 items labeled")).to_be_visible()
        first = page.get_by_test_id("stText").first.inner_text()
        (first_id,) = _rows(data, "SELECT id FROM items WHERE content = ?", [first])[0]
        assert held["routes"], "the app's WebSocket was not routed"

        held["on"] = True  # from here the browser keeps showing the first item
        press_key(page, "1")
        deadline = time.monotonic() + 30
        while not (_rows(data, "SELECT 1 FROM annotations")
                   and _rows(data, "SELECT 1 FROM leases WHERE item_id != ?", [first_id])):
            assert time.monotonic() < deadline, "the first press was not answered"
            page.wait_for_timeout(50)  # lets Playwright pass the browser's messages on
        # The server has saved the answer and moved on to the next item; the browser has not
        # heard yet, so this press is one of the first item's "1" button.
        expect(page.get_by_test_id("stText").first).to_have_text(first)
        page.keyboard.press("1")
        page.wait_for_timeout(1500)  # the server handles the second press meanwhile
        held["on"] = False
        for ws, message in held["messages"]:
            ws.send(message)
        held["messages"].clear()

        expect(page.get_by_text("1 of 3 items labeled")).to_be_visible()
        page.wait_for_timeout(500)
        answers = _rows(data, "SELECT item_id, labels FROM annotations")
        assert answers == [(first_id, '["ham"]')], answers  # once, on the first item only
        second = page.get_by_test_id("stText").first.inner_text()
        assert second != first
        # The second item is answered only when it is shown and its key is pressed.
        press_key(page, "2")
        expect(page.get_by_text("2 of 3 items labeled")).to_be_visible()
        answers = _rows(data, "SELECT i.content, a.labels FROM annotations a JOIN items i "
                        "ON i.id = a.item_id ORDER BY a.id")
        assert answers == [(first, '["ham"]'), (second, '["spam"]')]
    finally:
        server.stop()
