"""Per-class examples: which items are trusted to show a class, pins, and the Label page's view.

Domain tests run on a real store; the page is driven through Streamlit's
AppTest (the real browser check is tests/browser/test_class_examples.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from labeling.annotations import record_annotation, retract_annotation
from labeling.errors import GroundworkError
from labeling.examples import (
    EXAMPLES_PER_CLASS,
    class_examples,
    example_rows,
    literal_markdown,
    pin_example,
    pinned_examples,
    settings_key,
    snippet,
    unpin_example,
)
from labeling.importers import import_source
from labeling.items import add_items
from labeling.projects import Project, create_project, get_project, set_annotations_per_item
from labeling.store import get_setting, set_setting

ROOT_DIR = Path(__file__).resolve().parents[1]


def make_text_project(db, n: int = 10, name: str = "mail", gold: dict[int, str] | None = None,
                      instructions: str = "") -> tuple[Project, list[int]]:
    """A text project whose item ids are returned in key order (item i has key str(i))."""
    project = create_project(db, name, "text", classes=["ham", "spam"],
                             instructions=instructions)
    gold = gold or {}
    with db.atomic():
        add_items(db, project, [
            {"key": str(i), "content": f"message {i}", "sha256": f"{name}{i}",
             "gold": [gold[i]] if i in gold else None}
            for i in range(n)])
    ids = [r[0] for r in db.execute("SELECT id FROM items WHERE project_id = ? ORDER BY id",
                                    [project.id])]
    return project, ids


def ids_of(examples: dict, label: str) -> list[int]:
    return [e.item.id for e in examples[label]]


# ------------------------------------------------------------------ choosing


def test_examples_come_from_curated_labels_per_class_in_a_fixed_order(db):
    project, ids = make_text_project(db)
    for i in (5, 1, 3, 7):
        record_annotation(db, project, ids[i], "spam", user="ann")
    record_annotation(db, project, ids[2], "ham", user="ann")
    record_annotation(db, project, ids[0], "ham", user="model", source="auto", confidence=0.99)
    undone = record_annotation(db, project, ids[4], "ham", user="ann")
    retract_annotation(db, project, undone)

    examples = class_examples(db, project)
    assert list(examples) == ["ham", "spam"]  # every class, in the project's order
    assert ids_of(examples, "ham") == [ids[2]]  # no machine label, no retracted answer
    # at most three, lowest item id first when nothing else tells them apart
    assert ids_of(examples, "spam") == [ids[1], ids[3], ids[5]]
    assert len(examples["spam"]) == EXAMPLES_PER_CLASS
    assert all(not e.pinned and e.label == "spam" for e in examples["spam"])
    assert class_examples(db, project) == examples  # deterministic


def test_no_labels_means_no_examples_for_any_class(db):
    project, _ = make_text_project(db)
    assert class_examples(db, project) == {"ham": [], "spam": []}


def test_a_review_correction_moves_the_item_to_the_corrected_class(db):
    project, ids = make_text_project(db)
    record_annotation(db, project, ids[0], "spam", user="ann")
    record_annotation(db, project, ids[0], "ham", user="rev", source="review")
    examples = class_examples(db, project)
    assert ids_of(examples, "ham") == [ids[0]] and ids_of(examples, "spam") == []


def test_gold_agreement_comes_first_and_gold_contradictions_are_never_shown(db):
    # items 6 and 8 carry gold spam, item 2 carries gold ham, the rest have no gold
    project, ids = make_text_project(db, gold={6: "spam", 8: "spam", 2: "ham"})
    for i in (1, 2, 3, 6, 8):
        record_annotation(db, project, ids[i], "spam", user="ann")
    examples = class_examples(db, project)
    assert ids_of(examples, "spam") == [ids[6], ids[8], ids[1]]
    assert [e.gold_agrees for e in examples["spam"]] == [True, True, None]
    assert ids[2] not in ids_of(examples, "spam")  # labeled spam, but gold says ham
    assert ids_of(examples, "ham") == []


def test_items_more_people_agreed_on_come_first(db):
    project, ids = make_text_project(db)
    record_annotation(db, project, ids[1], "spam", user="ann")
    for user in ("ann", "bob", "cy"):  # three people agree on item 7
        record_annotation(db, project, ids[7], "spam", user=user)
    for user, label in (("ann", "spam"), ("bob", "spam"), ("cy", "ham")):  # 2 of 3 on item 4
        record_annotation(db, project, ids[4], label, user=user)
    examples = class_examples(db, project)
    assert ids_of(examples, "spam") == [ids[7], ids[4], ids[1]]
    assert [e.agreeing for e in examples["spam"]] == [3, 2, 1]
    assert ids_of(examples, "ham") == []  # the outvoted answer is not an example


def test_items_still_waiting_for_more_answers_are_not_examples(db):
    project, ids = make_text_project(db)
    project = set_annotations_per_item(db, project, 2)
    record_annotation(db, project, ids[0], "spam", user="ann")
    assert class_examples(db, project)["spam"] == []
    record_annotation(db, project, ids[0], "spam", user="bob")
    assert ids_of(class_examples(db, project), "spam") == [ids[0]]


def test_multi_label_items_show_under_each_class_single_class_items_first(db):
    project = create_project(db, "tags", "text", task="multi-label",
                             classes=["urgent", "billing"])
    with db.atomic():
        add_items(db, project, [{"key": str(i), "content": f"t{i}", "sha256": f"t{i}"}
                                for i in range(3)])
    ids = [r[0] for r in db.execute("SELECT id FROM items ORDER BY id")]
    record_annotation(db, project, ids[0], ["urgent", "billing"], user="ann")
    record_annotation(db, project, ids[1], ["urgent"], user="ann")
    examples = class_examples(db, project)
    assert ids_of(examples, "urgent") == [ids[1], ids[0]]
    assert ids_of(examples, "billing") == [ids[0]]


def test_imported_labels_of_an_image_project_are_examples(db, digits_folder):
    import_source(db, "digits", digits_folder, "image")
    project = get_project(db, "digits")
    examples = class_examples(db, project)
    assert list(examples) == ["0", "1", "2"]
    for label, chosen in examples.items():
        assert len(chosen) == 3
        assert all(e.item.key.startswith(f"{label}/") and e.item.media_path for e in chosen)


# ------------------------------------------------------------------ pins


def test_pinned_examples_come_first_in_pin_order_and_once(db):
    project, ids = make_text_project(db)
    for i in (1, 2, 3):
        record_annotation(db, project, ids[i], "spam", user="ann")
    assert pin_example(db, project, "spam", ids[9]) == {"spam": [ids[9]]}  # unlabeled is fine
    pin_example(db, project, "spam", ids[2])
    pin_example(db, project, "spam", ids[2])  # pinning twice changes nothing
    assert json.loads(get_setting(db, settings_key(project))) == {"spam": [ids[9], ids[2]]}
    examples = class_examples(db, project)
    assert ids_of(examples, "spam") == [ids[9], ids[2], ids[1]]
    assert [e.pinned for e in examples["spam"]] == [True, True, False]

    assert unpin_example(db, project, "spam", ids[9]) == {"spam": [ids[2]]}
    assert ids_of(class_examples(db, project), "spam") == [ids[2], ids[1], ids[3]]
    assert unpin_example(db, project, "spam", ids[2]) == {}
    assert pinned_examples(db, project) == {}


def test_pins_are_kept_per_project(db):
    mail, mail_ids = make_text_project(db)
    other, other_ids = make_text_project(db, name="other")
    pin_example(db, mail, "ham", mail_ids[0])
    pin_example(db, other, "ham", other_ids[3])
    assert ids_of(class_examples(db, mail), "ham") == [mail_ids[0]]
    assert ids_of(class_examples(db, other), "ham") == [other_ids[3]]


@pytest.mark.parametrize("bad", ["unknown class", "item of another project", "no such item",
                                 "fourth pin", "unpin what is not pinned", "unpin bad class"])
def test_bad_pin_requests_are_refused_and_change_nothing(db, bad):
    project, ids = make_text_project(db)
    _, other_ids = make_text_project(db, name="other")
    for i in range(3):
        pin_example(db, project, "spam", ids[i])
    before = get_setting(db, settings_key(project))
    calls = {
        "unknown class": (lambda: pin_example(db, project, "eggs", ids[5]),
                          "unknown class 'eggs'.*classes are ham, spam"),
        "item of another project": (lambda: pin_example(db, project, "ham", other_ids[0]),
                                    f"no item {other_ids[0]} in project 'mail'"),
        "no such item": (lambda: pin_example(db, project, "ham", 9999),
                         "no item 9999 in project 'mail'"),
        "fourth pin": (lambda: pin_example(db, project, "spam", ids[5]),
                       "already has 3 pinned examples.*unpin one first"),
        "unpin what is not pinned": (lambda: unpin_example(db, project, "spam", ids[5]),
                                     f"item {ids[5]} is not a pinned example of 'spam'"),
        "unpin bad class": (lambda: unpin_example(db, project, "eggs", ids[0]),
                            "unknown class 'eggs'"),
    }
    call, message = calls[bad]
    with pytest.raises(GroundworkError, match=message):
        call()
    assert get_setting(db, settings_key(project)) == before


def test_a_broken_pins_setting_means_no_pins_not_a_broken_page(db):
    project, ids = make_text_project(db)
    record_annotation(db, project, ids[0], "ham", user="ann")
    for raw in ("not json", "[1, 2]", '{"ham": "x", "spam": [true, "3"]}'):
        set_setting(db, settings_key(project), raw)
        assert pinned_examples(db, project) == {}
        assert ids_of(class_examples(db, project), "ham") == [ids[0]]
    set_setting(db, settings_key(project), json.dumps({"ham": [9999], "gone": [ids[1]]}))
    examples = class_examples(db, project)  # a missing item or class is skipped
    assert ids_of(examples, "ham") == [ids[0]] and list(examples) == ["ham", "spam"]


# ------------------------------------------------------------------ display helpers


def test_snippet_folds_whitespace_and_cuts_long_text():
    assert snippet("  a\n\n b\tc ") == "a b c"
    assert snippet(None) == ""
    cut = snippet("word " * 100, limit=20)
    assert len(cut) <= 20 and cut.endswith("…")


def test_literal_markdown_escapes_markup():
    assert literal_markdown("a_b *c* <b>x</b> [l](u) $x$ :red[y]") == (
        r"a\_b \*c\* \<b\>x\</b\> \[l\]\(u\) \$x\$ \:red\[y\]")
    assert literal_markdown("plain 7") == "plain 7"


def test_example_rows_are_text_with_the_key_first(db, wine_csv):
    import_source(db, "wine", wine_csv, "tabular", label_column="cultivar")
    project = get_project(db, "wine")
    frame = example_rows(class_examples(db, project)["barolo"])
    assert list(frame.columns)[0] == "key" and len(frame) == 3
    assert "alcohol" in frame.columns and frame.map(lambda v: isinstance(v, str)).all().all()


# ------------------------------------------------------------------ the Label page


@pytest.fixture
def app_env(data_dir, monkeypatch):
    monkeypatch.setenv("GROUNDWORK_DATA", str(data_dir))
    monkeypatch.setenv("GROUNDWORK_DEMO", "0")


def label_page(project: str) -> AppTest:
    at = AppTest.from_file(str(ROOT_DIR / "labeling/pages/label.py"), default_timeout=60)
    at.session_state["project_name"] = project
    at.session_state["user"] = "ann"
    return at.run()


def instructions(at: AppTest) -> list:
    """The Instructions expander(s); the page has other expanders further down."""
    return [e for e in at.expander if e.label == "Instructions"]


def test_label_page_shows_text_examples_as_text_even_without_instructions(db, app_env):
    project, ids = make_text_project(db)
    with db.atomic():
        add_items(db, project, [{"key": "html", "content": "<b>buy</b> <script>x()</script>",
                                 "sha256": "html"}])
    html_id = db.execute("SELECT id FROM items WHERE key = 'html'").fetchone()[0]
    record_annotation(db, project, html_id, "spam", user="bob")
    record_annotation(db, project, ids[3], "spam", user="bob")
    pin_example(db, project, "spam", ids[8])

    at = label_page("mail")
    assert not at.exception
    assert len(instructions(at)) == 1
    box = instructions(at)[0]
    headings = [m.value for m in box.markdown]
    assert headings == ["**ham**", "**spam**"]
    assert all(m.proto.allow_html is False for m in box.markdown)
    assert any("No example yet" in c.value for c in box.caption)
    assert [c.value for c in box.code] == ["message 8", "message 3",
                                           "<b>buy</b> <script>x()</script>"]
    assert any("pinned" in c.value for c in box.caption)
    assert not box.text  # st.text stays the item being labeled, below the expander
    assert at.text[0].value.startswith("message")


def test_label_page_without_instructions_or_examples_has_no_expander(db, app_env):
    make_text_project(db)
    at = label_page("mail")
    assert not at.exception and not instructions(at)


def test_label_page_keeps_markdown_instructions_above_the_examples(db, app_env):
    project, ids = make_text_project(db, instructions="Spam *sells* <b>things</b>.")
    record_annotation(db, project, ids[0], "ham", user="ann")
    at = label_page("mail")
    box = instructions(at)[0]
    assert box.markdown[0].value == "Spam *sells* <b>things</b>."
    assert box.markdown[0].proto.allow_html is False
    assert [c.value for c in box.code] == ["message 0"]


def test_label_page_shows_image_thumbnails_per_class(db, app_env, digits_folder):
    import_source(db, "digits", digits_folder, "image")
    at = label_page("digits")
    assert not at.exception
    box = instructions(at)[0]
    assert [m.value for m in box.markdown] == ["**0**", "**1**", "**2**"]
    images = box.image
    assert len(images) == 9
    assert all(img.proto.imgs[0].alt.startswith("example of ") for img in images)
    assert all(not img.captions[0] for img in images)  # captions stay the labeled item's


def test_label_page_shows_tabular_examples_as_a_row_table(db, app_env, wine_csv):
    import_source(db, "wine", wine_csv, "tabular", label_column="cultivar")
    at = label_page("wine")
    assert not at.exception
    box = instructions(at)[0]
    assert len(box.dataframe) == 3
    assert all(len(d.value) == 3 and list(d.value.columns)[0] == "key" for d in box.dataframe)
