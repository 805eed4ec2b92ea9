"""HTML and script in user data is shown as text and never run, in a real Chromium.

Class names, instructions, item text, file names and project names carry
`<img src=x onerror=...>` and `<script>...</script>` payloads that would set
`window.__pwned` if any page rendered them as HTML. Every page is visited
(Projects with an upload, Label with a keypress, Review, Train, Auto-label,
Savings, Workflows); on each, no frame has `window.__pwned`, no injected
element exists, and the literal text is on screen. The same run checks that
odd images (CMYK, 16-bit, EXIF-rotated) reach the browser upright and in 8 bits.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from playwright.sync_api import expect

from automl.training import train_project
from labeling.importers import import_source
from labeling.projects import get_project, set_instructions
from labeling.store import connect
from review.rules import open_review
from tests.bad_inputs.make_corpus import XSS_IMG, digit_image, encoded, good_members
from tests.browser.conftest import AppServer, press_key

pytestmark = pytest.mark.browser

CORPUS = Path(__file__).resolve().parents[1] / "bad_inputs"
XSS_SCRIPT = "<script>window.__pwned=1</script>"
TEXT_PROJECT = f"mail {XSS_IMG}"
IMAGE_PROJECT = f"digits {XSS_SCRIPT}"
PAYLOAD = f"{XSS_IMG} and {XSS_SCRIPT}"
INSTRUCTIONS = f"Read this first: {XSS_IMG} and {XSS_SCRIPT} are class names, not markup."
ODD_NAMES = ("cmyk.jpg", "gray16.png", "exif-rotated.jpg")


def seed(data_dir: Path, tmp_path: Path) -> None:
    """A text project whose classes, instructions and open items carry markup, with a
    promoted model and open review tasks; an image project whose file names carry it."""
    spam = pd.read_csv(CORPUS.parent / "data" / "spam.csv")
    classes = {"ham": XSS_IMG, "spam": XSS_SCRIPT}
    spam["label"] = spam["label"].map(classes)
    # The unlabeled rest (what Label and Review show) all start with the payloads.
    open_rows = spam.index >= 80
    payload = pd.read_csv(CORPUS / "csv" / "markup-text.csv")["text"][0]
    assert payload.startswith(PAYLOAD)  # the corpus's markup text, as the open items' start
    spam.loc[open_rows, "text"] = f"{PAYLOAD} " + spam.loc[open_rows, "text"]
    spam.loc[open_rows, "label"] = ""
    spam.to_csv(tmp_path / "mail.csv", index=False)
    db = connect(data_dir)
    import_source(db, TEXT_PROJECT, tmp_path / "mail.csv", "text", label_column="label",
                  classes=list(classes.values()))
    project = get_project(db, TEXT_PROJECT)
    set_instructions(db, project, INSTRUCTIONS)
    train_project(db, project, budget=3)
    assert open_review(db, project, 1.0) > 0
    # Images: labeled digits, plus one unlabeled image whose file name is the payload and
    # three in odd modes (they are the only open items, so Label shows one of them).
    members = [*good_members(), (f"{XSS_IMG}.png", encoded(digit_image(40), "PNG"))]
    members += [(name, (CORPUS / "odd" / name).read_bytes()) for name in ODD_NAMES]
    archive = tmp_path / "digits.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    import_source(db, IMAGE_PROJECT, archive, "image")
    db.conn.close()


def assert_not_executed(page) -> None:
    """No frame ran a payload and no payload became an element."""
    for frame in page.frames:
        assert frame.evaluate("typeof window.__pwned") == "undefined", frame.url
        assert frame.evaluate(
            """() => document.querySelectorAll('img[src="x"], img[onerror]').length
                   + [...document.scripts].filter(s => s.text.includes('__pwned')).length"""
        ) == 0, frame.url


def visit(page, url: str, path: str, project: str, heading: str) -> None:
    page.goto(f"{url}/{path}?project={quote(project)}")
    expect(page.get_by_role("heading", name=heading)).to_be_visible(timeout=30_000)
    page.locator('[data-test-script-state="notRunning"]').wait_for()


def shown_image(page, src: str) -> Image.Image:
    """The bytes the browser got for an <img>, decoded the way it decodes them."""
    response = page.request.get(src)
    assert response.ok, src
    with Image.open(io.BytesIO(response.body())) as img:
        assert img.format in ("PNG", "JPEG", "GIF", "WEBP")
        assert img.getexif().get(0x0112, 1) == 1  # nothing left for the browser to rotate
        return img.convert("L")


def test_markup_is_shown_as_text_and_never_run(page, tmp_path):
    data = tmp_path / "store"
    seed(data, tmp_path)
    server = AppServer(data)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        # Label: the title (project name), the item text, the class buttons, the instructions.
        visit(page, server.url, "label", TEXT_PROJECT, f"Label · {TEXT_PROJECT}")
        expect(page.get_by_text(PAYLOAD).filter(visible=True).first).to_be_visible()
        expect(page.get_by_role("button", name=XSS_IMG).first).to_be_visible()
        expect(page.get_by_role("button", name=XSS_SCRIPT).first).to_be_visible()
        page.get_by_text("Instructions").click()
        expect(page.get_by_text(INSTRUCTIONS)).to_be_visible()
        assert_not_executed(page)
        # Answer with the first class: the "Saved ..." message names it, as text.
        press_key(page, "1")
        expect(page.get_by_text(f"Saved {XSS_IMG}")).to_be_visible()
        assert_not_executed(page)

        # Review: the task's item, the predicted class and the correction buttons.
        visit(page, server.url, "review", TEXT_PROJECT, f"Review · {TEXT_PROJECT}")
        expect(page.get_by_text(PAYLOAD).filter(visible=True).first).to_be_visible()
        expect(page.get_by_text(re.compile(re.escape(XSS_SCRIPT) + "|" + re.escape(XSS_IMG)))
               .first).to_be_visible()
        assert_not_executed(page)

        for path, title in (("train", "Train"), ("autolabel", "Auto-label"),
                            ("savings", "Savings"), ("workflows", "Workflows")):
            visit(page, server.url, path, TEXT_PROJECT, f"{title} · {TEXT_PROJECT}")
            assert_not_executed(page)

        # Projects: upload a zip whose file names carry the payload into a project whose
        # name carries it; the report and the sidebar show both as text.
        archive = tmp_path / "upload.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for name, data_ in good_members():
                zf.writestr(name, data_)
            zf.writestr(f"0/{XSS_IMG}.png", b"not an image at all")
        page.goto(server.url)
        expect(page.get_by_role("heading", name="Projects")).to_be_visible()
        name = f"up {XSS_SCRIPT}"
        page.get_by_label("Project name").fill(name)
        page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(archive))
        expect(page.get_by_text("upload.zip")).to_be_visible()
        page.get_by_role("button", name="Import").click()
        expect(page.get_by_text(f"Imported 4 items into {name}")).to_be_visible()
        expect(page.get_by_text("Skipped files:")).to_be_visible()
        assert_not_executed(page)

        # Label an image project: the caption is the file name, shown as text; odd images
        # reach the browser upright and in 8 bits.
        visit(page, server.url, "label", IMAGE_PROJECT, f"Label · {IMAGE_PROJECT}")
        seen: dict[str, Image.Image] = {}
        captions = page.get_by_test_id("stImageCaption").filter(visible=True)
        for _ in range(12):  # four open items; a keypress lost to a rerun is pressed again
            image = page.get_by_test_id("stImage").locator("img").filter(visible=True).first
            expect(image).to_be_visible()
            caption = captions.first.inner_text()
            seen[caption] = shown_image(page, image.get_attribute("src"))
            assert_not_executed(page)
            if len(seen) == 4:
                break
            press_key(page, "s")  # skip to the next open item
            try:
                expect(captions.first).not_to_have_text(caption, timeout=10_000)
            except AssertionError:
                continue
        assert set(seen) == {f"{XSS_IMG}.png", *ODD_NAMES}
        expected = {"cmyk.jpg": digit_image(1), "gray16.png": digit_image(3),
                    "exif-rotated.jpg": digit_image(7).resize((32, 64), Image.NEAREST)}
        for name_, want in expected.items():
            got = seen[name_]
            assert got.size[1] / got.size[0] == pytest.approx(want.size[1] / want.size[0])
            got = np.asarray(got.resize(want.size), dtype=float).ravel()
            assert np.corrcoef(got, np.asarray(want, dtype=float).ravel())[0, 1] > 0.9, name_
        assert dialogs == []
    finally:
        server.stop()
