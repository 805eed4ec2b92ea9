"""Backup and restore: a real store with images, labels, a trained model and review tasks.

Everything comes back (rows, media with their hashes, models that pass the
registry's hash check), a single-project backup holds only that project, and
a bad archive (truncated, tampered with, not a backup) is refused with a
clear message and changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import tarfile
import zipfile
from pathlib import Path

import pytest

import cli
from automl.registry import list_models, load_model
from automl.training import train_project
from labeling.annotations import current_labels, record_annotation
from labeling.backup import backup_store, restore_store
from labeling.errors import GroundworkError
from labeling.importers import import_source
from labeling.projects import get_project, list_projects
from labeling.queue import next_items
from labeling.store import SCHEMA_VERSION, connect, schema_version
from review.rules import open_review
from tests.conftest import write_digits_folder


def _fill(db, tmp: Path) -> None:
    """Two projects: digit images (labels, a model, review tasks) and spam text (labels)."""
    folder = write_digits_folder(tmp / "digits", per_class=15, classes=(0, 1, 2))
    import_source(db, "digits", folder, "image", folders_as="gold", classes=["0", "1", "2"])
    digits = get_project(db, "digits")
    for item in next_items(db, digits, n=36):
        gold = db["items"].get(item["id"])["gold"]
        record_annotation(db, digits, item["id"], json.loads(gold), user="ann",
                          duration_ms=900)
    train_project(db, digits, budget=2)
    open_review(db, digits, below=1.0, limit=3)
    spam_csv = Path(__file__).parent / "data" / "spam.csv"
    import_source(db, "mail", spam_csv, "text", text_column="text", label_column="label")
    mail = get_project(db, "mail")
    for item in next_items(db, mail, n=5):
        record_annotation(db, mail, item["id"], "spam", user="bob")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """The source store, built once (training takes a few seconds) and never changed by tests."""
    root = tmp_path_factory.mktemp("source")
    db = connect(root / "store")
    _fill(db, root)
    db.conn.close()
    return root / "store"


@pytest.fixture
def source(store):
    db = connect(store)
    yield db
    db.conn.close()


def _tables(path: Path, project_ids: list[int] | None = None) -> dict[str, list]:
    """Every row of every table (of the given projects where a table has a project_id)."""
    conn = sqlite3.connect(path / "groundwork.db")
    out = {}
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                 "AND name NOT LIKE 'sqlite_%' AND name != 'schema_version'"):
        columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
        rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
        if project_ids is not None and ("project_id" in columns or table == "projects"):
            key = columns.index("id" if table == "projects" else "project_id")
            rows = [r for r in rows if r[key] in project_ids]
        out[table] = sorted(rows, key=repr)
    conn.close()
    return out


def _tree(path: Path) -> dict[str, str]:
    """Every file under a folder with its sha256 (what "changes nothing" compares)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _check_usable(data_dir: Path, expect: set[str]) -> None:
    db = connect(data_dir)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert schema_version(db) == SCHEMA_VERSION
        assert {p.name for p in list_projects(db)} == expect
        digits = get_project(db, "digits")
        for row in db.query("SELECT media_path, sha256 FROM items WHERE media_path IS NOT NULL"):
            data = (data_dir / row["media_path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == row["sha256"]
        models = list_models(db, digits)
        assert models and all(load_model(db, m) is not None for m in models)  # hash check
        assert len(current_labels(db, digits, curated_only=True)) == 36
        item = next_items(db, digits)[0]["id"]
        record_annotation(db, digits, item, "1", user="after-restore")
        assert db["review_tasks"].count == 3
    finally:
        db.conn.close()


def test_backup_all_and_restore_brings_back_every_row_file_and_model(store, source, tmp_path):
    report = backup_store(source, tmp_path / "all.tar")
    assert report["scope"] == "all" and report["missing"] == []
    assert {p["name"] for p in report["projects"]} == {"digits", "mail"}
    assert report["media"] == 45 and report["models"] == 1
    before = _tables(store)

    restored = restore_store(tmp_path / "all.tar", tmp_path / "restored")
    assert set(restored["projects"]) == {"digits", "mail"} and restored["warnings"] == []
    assert _tables(tmp_path / "restored") == before  # row for row
    assert not list(tmp_path.glob(".restored*"))  # no staging folder left behind
    _check_usable(tmp_path / "restored", {"digits", "mail"})


def test_a_project_backup_holds_only_that_project(store, source, tmp_path):
    mail = get_project(source, "mail")
    mail_text = source.execute("SELECT content FROM items WHERE project_id = ? LIMIT 1",
                               [mail.id]).fetchone()[0]
    live = _tables(store)
    report = backup_store(source, tmp_path / "digits.tar.gz", ["digits"])
    assert [p["name"] for p in report["projects"]] == ["digits"]
    assert _tables(store) == live  # the live store is never cut down

    restore_store(tmp_path / "digits.tar.gz", tmp_path / "one")
    digits_id = get_project(source, "digits").id
    assert _tables(tmp_path / "one") == _tables(store, [digits_id])
    raw = (tmp_path / "one" / "groundwork.db").read_bytes()
    assert mail_text[:40].encode() not in raw  # vacuumed: no trace of the other project
    _check_usable(tmp_path / "one", {"digits"})


def test_cli_backup_and_restore(store, tmp_path, capsys):
    def run(*args):
        capsys.readouterr()
        code = cli.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = run("backup", "digits", "--out", tmp_path / "b.tar", "--data-dir", store,
                         "--json")
    assert code == 0, err
    assert json.loads(out)["projects"][0]["name"] == "digits"
    code, out, err = run("restore", tmp_path / "b.tar", "--data-dir", tmp_path / "new", "--json")
    assert code == 0, err
    assert json.loads(out)["projects"] == ["digits"]

    code, _, err = run("backup", "--out", tmp_path / "x.tar", "--data-dir", store)
    assert code != 0 and "--all" in err and len(err.strip().splitlines()) == 1
    code, _, err = run("backup", "nope", "--out", tmp_path / "x.tar", "--data-dir", store)
    assert code != 0 and "no project named 'nope'" in err

    # A store holding projects is replaced only with --force.
    code, out, err = run("backup", "--all", "--out", tmp_path / "all.tar", "--data-dir", store)
    assert code == 0, err
    before = _tree(tmp_path / "new")
    code, _, err = run("restore", tmp_path / "all.tar", "--data-dir", tmp_path / "new")
    assert code != 0 and "not empty" in err and "--force" in err
    assert _tree(tmp_path / "new") == before
    code, out, err = run("restore", tmp_path / "all.tar", "--data-dir", tmp_path / "new",
                         "--force")
    assert code == 0, err and "restored 2 project(s)" in out
    assert _tables(tmp_path / "new") == _tables(store)


def test_restore_into_an_empty_store_needs_no_force(source, tmp_path):
    backup_store(source, tmp_path / "b.tar", ["mail"])
    connect(tmp_path / "fresh").conn.close()  # a store with no project yet
    assert restore_store(tmp_path / "b.tar", tmp_path / "fresh")["projects"] == ["mail"]


def test_backup_sees_only_committed_answers(store, source, tmp_path):
    other = sqlite3.connect(store / "groundwork.db", timeout=10)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE projects SET instructions = 'uncommitted'")
    try:
        backup_store(source, tmp_path / "b.tar")
    finally:
        other.rollback()
        other.close()
    restore_store(tmp_path / "b.tar", tmp_path / "r")
    db = connect(tmp_path / "r")
    assert "uncommitted" not in {p.instructions for p in list_projects(db)}
    db.conn.close()


def test_a_backup_of_an_older_schema_is_upgraded_on_restore(tmp_path):
    old = connect(tmp_path / "old", migrate_to=1)
    old["projects"].insert({"id": 1, "name": "p", "modality": "text", "task": "single-label",
                            "classes": '["a", "b"]', "created_at": "2026-01-01"})
    old["items"].insert({"id": 1, "project_id": 1, "key": "1", "content": "x", "sha256": "s",
                         "created_at": "2026-01-01"})
    old.conn.commit()
    backup_store(old, tmp_path / "old.tar")
    old.conn.close()
    report = restore_store(tmp_path / "old.tar", tmp_path / "new")
    assert report["backup_schema_version"] == 1 and report["schema_version"] == SCHEMA_VERSION
    db = connect(tmp_path / "new")
    assert next_items(db, get_project(db, "p"))[0]["key"] == "1"
    db.conn.close()


# --- bad archives -----------------------------------------------------------------------


def _members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar]


def _write(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _tampered_media(members):
    out, done = [], False
    for info, data in members:
        if info.name.startswith("media/") and not done:
            data, done = data[:-1] + bytes([data[-1] ^ 1]), True
        out.append((info, data))
    return out


def _corrupt_db_with_matching_manifest(members):
    """A store whose pages are garbage but whose manifest was rewritten to match it."""
    out, manifest = [], None
    for info, data in members:
        if info.name == "groundwork.db":
            data = data[:4096] + bytes(len(data) - 4096)
            new_db = data
        if info.name == "manifest.json":
            manifest = json.loads(data)
            manifest["database"]["sha256"] = hashlib.sha256(new_db).hexdigest()
            manifest["database"]["size"] = len(new_db)
            data = json.dumps(manifest).encode()
        out.append((info, data))
    return out


def _with_member(name):
    def build(members):
        info = tarfile.TarInfo(name)
        return [(info, b"evil"), *members]
    return build


@pytest.fixture(scope="module")
def good_archive(store, tmp_path_factory) -> Path:
    db = connect(store)
    path = tmp_path_factory.mktemp("archives") / "good.tar"
    backup_store(db, path)
    db.conn.close()
    return path


BAD = {
    "truncated": (lambda path, tmp: _file(tmp / "cut.tar", path.read_bytes()[
        : path.stat().st_size // 2]), "truncated or damaged|cut short"),
    "tampered media": (lambda path, tmp: _write(tmp / "t.tar", _tampered_media(_members(path))),
                       r"media/.* does not match the sha256"),
    "corrupt database": (
        lambda path, tmp: _write(tmp / "c.tar", _corrupt_db_with_matching_manifest(
            _members(path))), "integrity_check|not a SQLite store"),
    "no manifest": (lambda path, tmp: _write(tmp / "m.tar", [
        (i, d) for i, d in _members(path) if i.name != "manifest.json"]), "no manifest.json"),
    "zip-slip member": (lambda path, tmp: _write(tmp / "z.tar", _with_member("media/../../x")(
        _members(path))), "unexpected member"),
    "a zip file": (lambda path, tmp: _zip(tmp / "w.zip"), "not a Groundwork backup .a zip"),
    "a text file": (lambda path, tmp: _file(tmp / "notes.txt", b"hello\n" * 100),
                    "not a readable tar archive"),
    "another tar": (lambda path, tmp: _write(tmp / "o.tar", [(tarfile.TarInfo("a.txt"), b"x")]),
                    "unexpected member 'a.txt'"),
}


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("manifest.json", "{}")
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_archives_are_refused_and_change_nothing(case, good_archive, source, tmp_path):
    make, message = BAD[case]
    bad = make(good_archive, tmp_path)
    # Even forced over an existing store, a bad archive leaves that store exactly as it was.
    target = tmp_path / "target"
    backup_store(source, tmp_path / "mail.tar", ["mail"])
    restore_store(tmp_path / "mail.tar", target)
    before = _tree(target)
    with pytest.raises(GroundworkError, match=message) as err:
        restore_store(bad, target, force=True)
    assert "\n" not in str(err.value)
    assert _tree(target) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".target")]
    # ...and into a folder that does not exist yet, it creates nothing.
    with pytest.raises(GroundworkError, match=message):
        restore_store(bad, tmp_path / "never")
    assert not (tmp_path / "never").exists()
