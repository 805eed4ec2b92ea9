"""Project instructions: written on the Projects page (admins) or with `groundwork import` /
`groundwork settings`, read on the Label page as Markdown whose HTML stays text.

The CLI runs as the installed console script in a subprocess against a temporary
store, as a script or a person would run it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from streamlit.testing.v1 import AppTest

from labeling.errors import GroundworkError
from labeling.items import add_items
from labeling.projects import create_project, get_project, read_instructions_file, set_instructions
from labeling.store import connect
from labeling.users import add_user, assign, get_user, start_session

ROOT = Path(__file__).resolve().parents[1]
GROUNDWORK = ROOT / ".venv" / "bin" / "groundwork"
MARKDOWN = "Spam **sells** something.\n\n- <b>not bold</b> stays text\n"


def groundwork(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(GROUNDWORK), *map(str, args), "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def stored(data_dir: Path, name: str) -> str:
    db = connect(data_dir)
    try:
        return get_project(db, name).instructions
    finally:
        db.conn.close()


def test_import_and_settings_set_instructions_inline_or_from_a_file(tmp_path, spam_csv):
    data = tmp_path / "store"
    guide = tmp_path / "guide.md"
    guide.write_text(MARKDOWN, encoding="utf-8")
    done = groundwork(data, "import", "mail", spam_csv, "--modality", "text",
                      "--label-column", "label", "--no-seed", "--instructions-file", guide,
                      "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["instructions"] == MARKDOWN.rstrip()
    assert stored(data, "mail") == MARKDOWN.rstrip()

    done = groundwork(data, "settings", "mail", "--json")  # shown without changing them
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["instructions"] == MARKDOWN.rstrip()

    done = groundwork(data, "settings", "mail", "--instructions", "Read the *subject*.",
                      "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["instructions"] == "Read the *subject*."
    assert stored(data, "mail") == "Read the *subject*."

    done = groundwork(data, "settings", "mail", "--instructions", "")  # clears them
    assert done.returncode == 0 and "instructions: none" in done.stdout
    assert stored(data, "mail") == ""


def test_bad_instruction_flags_fail_in_one_line_and_change_nothing(tmp_path, spam_csv):
    data = tmp_path / "store"
    done = groundwork(data, "import", "mail", spam_csv, "--modality", "text",
                      "--instructions-file", tmp_path / "missing.md")
    assert done.returncode != 0 and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (data / "groundwork.db").exists() or "mail" not in groundwork(
        data, "projects").stdout  # the import never ran

    assert groundwork(data, "import", "mail", spam_csv, "--modality", "text",
                      "--label-column", "label", "--no-seed",
                      "--instructions", "First.").returncode == 0
    latin = tmp_path / "latin.md"
    latin.write_bytes("Caf\xe9".encode("latin-1"))
    done = groundwork(data, "settings", "mail", "--instructions-file", latin)
    assert done.returncode != 0 and "not UTF-8" in done.stderr
    both = groundwork(data, "settings", "mail", "--instructions", "x",
                      "--instructions-file", latin)
    assert both.returncode != 0 and "not allowed with" in both.stderr
    assert stored(data, "mail") == "First."


def test_instructions_are_refused_when_too_long_and_files_must_be_text(db, tmp_path):
    project = create_project(db, "notes", "text", classes=["a", "b"])
    with pytest.raises(GroundworkError, match="more than 100,000"):
        set_instructions(db, project, "x" * 100_001)
    assert get_project(db, "notes").instructions == ""
    bom = tmp_path / "bom.md"
    bom.write_bytes("\ufeffHello".encode())
    assert read_instructions_file(bom) == "Hello"
    with pytest.raises(GroundworkError, match="is a folder"):
        read_instructions_file(tmp_path)


@pytest.fixture
def app_store(db, data_dir, monkeypatch):
    monkeypatch.setenv("GROUNDWORK_DATA", str(data_dir))
    monkeypatch.setenv("GROUNDWORK_DEMO", "0")
    monkeypatch.setattr("labeling.users._hasher",
                        PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    project = create_project(db, "mail", "text", classes=["ham", "spam"])
    with db.atomic():
        add_items(db, project, [{"key": str(i), "content": f"message {i}", "sha256": str(i)}
                                for i in range(3)])
    return db, project


def projects_page(token: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "labeling/pages/projects.py"), default_timeout=30)
    at.session_state["project_name"] = "mail"
    if token:
        at.session_state["session_token"] = token
    return at.run()


def test_an_admin_writes_instructions_on_the_projects_page_and_annotators_read_them(app_store):
    db, project = app_store
    at = projects_page()
    assert not at.exception
    box = at.text_area(key=f"instructions-{project.id}")
    box.input(MARKDOWN)
    at.button(key="instructions-save").click().run()
    assert not at.exception
    assert get_project(db, "mail").instructions == MARKDOWN.rstrip()
    assert at.success[0].value == "Instructions saved."
    preview = at.expander[0].markdown[0]  # drawn as the Label page draws them
    assert preview.value == MARKDOWN.rstrip() and preview.proto.allow_html is False

    label = AppTest.from_file(str(ROOT / "labeling/pages/label.py"), default_timeout=30)
    label.session_state["project_name"] = "mail"
    label.run()
    shown = label.expander[0].markdown[0]
    assert shown.value == MARKDOWN.rstrip() and shown.proto.allow_html is False


def test_only_who_may_change_settings_sees_the_instructions_editor(app_store):
    db, project = app_store
    add_user(db, "boss", "admin", "password1")
    add_user(db, "ann", "annotator", "password1")
    assign(db, "ann", "mail")
    admin = projects_page(start_session(db, get_user(db, "boss")))
    assert [t.key for t in admin.text_area] == [f"instructions-{project.id}"]
    annotator = projects_page(start_session(db, get_user(db, "ann")))
    assert not annotator.exception and not annotator.text_area
    assert not [b for b in annotator.button if b.key == "instructions-save"]
