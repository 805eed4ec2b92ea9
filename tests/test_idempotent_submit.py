"""Idempotent submit: an answer sent twice with the same submission id is recorded once."""

from __future__ import annotations

import json
import multiprocessing
import traceback
from pathlib import Path

import pytest

import cli
from labeling.annotations import find_submission, record_annotation, retract_annotation
from labeling.errors import GroundworkError
from labeling.items import add_items
from labeling.projects import create_project, get_project
from labeling.store import connect


@pytest.fixture
def project(db):
    p = create_project(db, "mail", "text", classes=["ham", "spam"])
    with db.atomic():
        add_items(db, p, [{"key": str(i), "content": f"mail {i}", "sha256": str(i)}
                          for i in range(10)])
    return p


def test_the_same_submission_id_returns_the_first_answer(db, project):
    first = record_annotation(db, project, 1, "spam", user="ann", submission_id="s-1")
    again = record_annotation(db, project, 1, "spam", user="ann", submission_id=" s-1 ")
    assert again == first
    assert db["annotations"].count == 1
    assert db["items"].get(1)["n_labels"] == 1  # counted once
    assert find_submission(db, project, "s-1") == first
    assert find_submission(db, project, "s-2") is None


def test_no_id_or_a_blank_id_is_not_idempotent(db, project):
    record_annotation(db, project, 1, "spam", user="ann")
    record_annotation(db, project, 1, "spam", user="ann", submission_id="  ")
    assert db["annotations"].count == 2


def test_an_id_reused_for_another_answer_is_refused(db, project):
    record_annotation(db, project, 1, "spam", user="ann", submission_id="s-1")
    for item, label, user in ((2, "spam", "ann"), (1, "ham", "ann"), (1, "spam", "bob")):
        with pytest.raises(GroundworkError, match="already used for another answer"):
            record_annotation(db, project, item, label, user=user, submission_id="s-1")
    assert db["annotations"].count == 1


def test_ids_are_per_project(db, project):
    other = create_project(db, "other", "text", classes=["ham", "spam"])
    with db.atomic():
        add_items(db, other, [{"key": "x", "content": "x", "sha256": "x"}])
    item = db.execute("SELECT id FROM items WHERE project_id = ?", [other.id]).fetchone()[0]
    a = record_annotation(db, project, 1, "spam", user="ann", submission_id="s-1")
    b = record_annotation(db, other, item, "spam", user="ann", submission_id="s-1")
    assert a != b


def test_a_resent_answer_does_not_bring_back_an_undone_one(db, project):
    answer = record_annotation(db, project, 1, "spam", user="ann", submission_id="s-1")
    retract_annotation(db, project, answer)
    assert record_annotation(db, project, 1, "spam", user="ann", submission_id="s-1") == answer
    assert db["items"].get(1)["n_labels"] == 0


def _submit(data_dir: str, barrier, results) -> None:
    try:
        db = connect(data_dir)
        project = get_project(db, "mail")
        barrier.wait(timeout=300)
        results.put(record_annotation(db, project, 3, "ham", user="ann", submission_id="race"))
        db.conn.close()
    except BaseException:  # reported to the test, which shows it
        results.put(traceback.format_exc())


def test_processes_racing_with_the_same_id_record_one_answer(db, data_dir, project):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_submit, args=(str(data_dir), barrier, results))
             for _ in range(4)]
    for p in procs:
        p.start()
    answers = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
    errors = [a for a in answers if isinstance(a, str)]
    assert not errors, "\n".join(errors)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert len(set(answers)) == 1
    assert db.execute("SELECT count(*) FROM annotations WHERE item_id = 3").fetchone()[0] == 1
    assert db["items"].get(3)["n_labels"] == 1


def test_cli_label_with_a_submission_id(data_dir: Path, db, project, capsys):
    def label(*extra):
        capsys.readouterr()
        code = cli.main(["label", "mail", "4", "spam", "--user", "ann", "--no-refit",
                         "--data-dir", str(data_dir), *extra])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = label("--submission-id", "retry-7", "--json")
    first = json.loads(out)
    assert code == 0 and first["resent"] is False
    code, out, _ = label("--submission-id", "retry-7", "--json")
    again = json.loads(out)
    assert code == 0 and again == {**first, "resent": True}
    code, out, _ = label("--submission-id", "retry-7")
    assert code == 0 and "already recorded" in out
    assert db.execute("SELECT count(*) FROM annotations WHERE item_id = 4").fetchone()[0] == 1
    code, _, err = label("--submission-id", "retry-7", "--user", "bob")
    assert code != 0 and "already used for another answer" in err
