"""Batch review: a workflow over the promoted model's predictions on an uploaded file.

Real stores and real models: the SpamAssassin subset (text), scikit-learn's
wine (table) and digits (images). Each data set is imported and trained once
per module; every test works on its own copy of that store.
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from automl.training import train_project
from labeling.annotations import current_labels
from labeling.errors import GroundworkError
from labeling.importers import import_source
from labeling.projects import create_project, get_project
from labeling.store import connect
from review.batches import (
    batch_csv,
    batch_jsonl,
    batch_rows,
    export_batch,
    list_batches,
    preview_batch,
    read_batch,
    run_batch,
)
from review.conditions import in_sample
from review.tasks import answer_task, next_tasks
from review.workflows import preview, run_workflow, save_workflow
from tests.conftest import TESTS, digit_png, write_digits_folder

CONDITIONS = {"any": [{"confidence_below": 0.75}, {"sample": 0.1}]}


def _trained_store(root: Path, name: str, source: Path, modality: str, **columns) -> Path:
    db = connect(root)
    import_source(db, name, source, modality, **columns)
    train_project(db, get_project(db, name), budget=3)
    db.conn.close()
    return root


@pytest.fixture(scope="module")
def spam_store(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """80 labeled emails with a promoted model; the other 40 are the batch (with the truth)."""
    root = tmp_path_factory.mktemp("spam")
    frame = pd.read_csv(TESTS / "data" / "spam.csv")
    order = np.random.default_rng(0).permutation(len(frame))
    train, batch = frame.iloc[order[:80]], frame.iloc[order[80:]].reset_index(drop=True)
    train.to_csv(root / "train.csv", index=False)
    batch.to_csv(root / "batch.csv", index=False)  # with its label column: ignored
    _trained_store(root / "store", "mail", root / "train.csv", "text", label_column="label")
    return root, batch


@pytest.fixture
def mail(spam_store, tmp_path):
    root, batch = spam_store
    shutil.copytree(root / "store", tmp_path / "store")
    db = connect(tmp_path / "store")
    yield db, get_project(db, "mail"), root / "batch.csv", batch
    db.conn.close()


def counts(db) -> dict:
    out = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
           for t in ("items", "annotations", "predictions", "review_tasks", "review_workflows")}
    out["settings"] = sorted(r[0] for r in db.execute("SELECT key FROM settings"))
    media = Path(db.data_dir) / "media"
    out["media"] = sorted(str(p) for p in media.rglob("*")) if media.exists() else []
    return out


def test_a_batch_opens_loops_on_the_rows_its_conditions_activate(mail):
    db, project, path, batch = mail
    save_workflow(db, project, "incoming", CONDITIONS, source="batch", reviewers=1)
    data = read_batch(db, project, path)
    assert len(data) == 40 and data.file == "batch.csv"
    before = counts(db)
    shown = preview_batch(db, project, CONDITIONS, data, workflow="incoming")
    assert counts(db) == before  # a preview writes nothing
    expected = [i for i in range(40) if data.confidence[i] < 0.75
                or in_sample("incoming:batch", i, 0.1)]
    assert 0 < len(expected) < 40
    assert shown["would_open"] == len(expected) and shown["rows"] == 40
    assert shown["batch"] == "batch" and shown["model_version"] == 1

    summary = run_batch(db, project, "incoming", data, user="boss")
    assert summary["opened"] == len(expected) and summary["batch"] == "batch"
    assert db.execute("SELECT count(*) FROM items").fetchone()[0] == before["items"] + 40
    tasks = list(db.query("SELECT t.*, i.key, i.content, i.metadata FROM review_tasks t "
                          "JOIN items i ON i.id = t.item_id ORDER BY t.id"))
    assert len(tasks) == len(expected) and {t["source"] for t in tasks} == {"batch"}
    rows = sorted(json.loads(t["metadata"])["batch_row"] for t in tasks)
    assert rows == expected
    for task in tasks:  # the reviewer sees the real input, and why it was flagged
        meta = json.loads(task["metadata"])
        assert task["key"] == f"batch:batch:{meta['batch_key']}"
        assert task["content"] == batch["text"][meta["batch_row"]]
        assert json.loads(task["fired"])
    # Items that were not activated keep the model's answer; nothing else watches them.
    save_workflow(db, project, "pool doubts", {"confidence_below": 1.0})
    assert preview(db, project, {"confidence_below": 1.0}, salt="pool doubts")["would_open"] == 0
    assert run_workflow(db, project, "incoming") == 0  # a re-run draws the same rows
    assert preview(db, project, CONDITIONS, source="batch", salt="incoming") == {
        "would_open": 0, "candidates": 40 - len(expected), "by_condition": {},
        "description": "confidence < 0.75 OR random 10% audit sample",
        "model_version_id": summary["model_version_id"]}
    listed = list_batches(db, project)
    assert [(b["name"], b["workflow"], b["rows"], b["opened"], b["created_by"])
            for b in listed] == [("batch", "incoming", 40, len(expected), "boss")]
    again = run_batch(db, project, "incoming", path)  # the same file again: a new batch
    assert again["batch"] == "batch-2" and again["rows"] == 40


def test_answers_become_curated_labels_and_the_export_says_who_gave_the_final_label(
        mail, tmp_path):
    db, project, path, batch = mail
    save_workflow(db, project, "incoming", CONDITIONS, source="batch")
    summary = run_batch(db, project, "incoming", path, name="monday")
    tasks = next_tasks(db, project, n=100)
    assert len(tasks) == summary["opened"]
    answered = {}
    for task in tasks[:3]:
        key = json.loads(db["items"].get(task["item_id"])["metadata"])["batch_key"]
        truth = batch["label"][int(key)]
        answer_task(db, project, task["id"], truth, user="rev")
        answered[key] = truth
    labels = current_labels(db, project, curated_only=True)
    mine = labels[labels["item_id"].isin([t["item_id"] for t in tasks[:3]])]
    assert len(mine) == 3 and set(mine["source"]) == {"review"} and set(mine["user"]) == {"rev"}

    rows = batch_rows(db, project, "monday")
    assert [r["key"] for r in rows] == [str(i) for i in range(40)]
    for row in rows:
        if row["key"] in answered:
            assert row["reviewed"] and row["review_status"] == "completed"
            assert (row["final"], row["final_source"], row["final_by"]) == (
                [answered[row["key"]]], "review", "rev")
        else:
            assert not row["reviewed"]
            assert (row["final"], row["final_source"], row["final_by"]) == (
                row["predicted"], "model", "model v1")
        assert row["activated"] == (row["review_status"] is not None)
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert sum(r["activated"] for r in rows) == summary["opened"]

    out = tmp_path / "monday.csv"
    assert export_batch(db, project, "monday", out) == 40
    frame = pd.read_csv(out, dtype={"key": str})
    assert list(frame.columns) == ["key", "predicted_label", "confidence", "p_ham", "p_spam",
                                   "activated", "review_status", "reviewed", "final_label",
                                   "final_source", "final_by", "item_id"]
    assert out.read_bytes().decode() == batch_csv(db, project, "monday")
    reviewed = frame[frame["reviewed"]]
    assert dict(zip(reviewed["key"], reviewed["final_label"], strict=True)) == answered
    assert set(reviewed["final_by"]) == {"rev"}
    assert (frame.loc[~frame["reviewed"], "final_label"]
            == frame.loc[~frame["reviewed"], "predicted_label"]).all()
    jsonl = tmp_path / "monday.jsonl"
    assert export_batch(db, project, "monday", jsonl) == 40
    assert jsonl.read_text() == batch_jsonl(db, project, "monday")
    assert [json.loads(line) for line in jsonl.read_text().splitlines()] == rows


def test_bad_input_gives_a_clear_error_and_changes_nothing(mail, tmp_path, monkeypatch):
    db, project, path, _ = mail
    save_workflow(db, project, "incoming", CONDITIONS, source="batch")
    save_workflow(db, project, "pool", {"confidence_below": 0.5})
    run_batch(db, project, "incoming", path, name="first")
    before = counts(db)
    no_text = tmp_path / "no_text.csv"
    pd.DataFrame({"body": ["hello"], "label": ["ham"]}).to_csv(no_text, index=False)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text\nna\xefve caf\xe9\n".encode("latin-1"))
    empty = tmp_path / "empty.csv"
    empty.write_text("text\n")
    blank = tmp_path / "blank.csv"
    blank.write_text('text\n" "\n')
    bad = [
        (lambda: run_batch(db, project, "incoming", tmp_path / "missing.csv"), "does not exist"),
        (lambda: run_batch(db, project, "incoming", no_text), "no text column"),
        (lambda: run_batch(db, project, "incoming", latin), "UTF-8"),
        (lambda: run_batch(db, project, "incoming", empty), "header but no rows"),
        (lambda: run_batch(db, project, "incoming", blank), "nothing to predict.*empty text"),
        (lambda: run_batch(db, project, "incoming", path, name="first"), "already has a batch"),
        (lambda: run_batch(db, project, "pool", path), "not a batch file"),
        (lambda: run_batch(db, project, "nope", path), "no review workflow 'nope'"),
        (lambda: save_workflow(db, project, "x", {"label_error": True}, source="batch"),
         "label error"),
        (lambda: save_workflow(db, project, "x", CONDITIONS, source="stream"),
         "unknown workflow source"),
        (lambda: export_batch(db, project, "nope", tmp_path / "x.csv"), "no batch 'nope'"),
    ]
    for call, message in bad:
        with pytest.raises(GroundworkError, match=message):
            call()
        assert counts(db) == before, message

    other = create_project(db, "untrained", "text", classes=["ham", "spam"])
    save_workflow(db, other, "incoming", CONDITIONS, source="batch")
    with pytest.raises(GroundworkError, match="no promoted model"):
        run_batch(db, other, "incoming", path)

    import review.batches

    def broken(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(review.batches, "store_predictions", broken)
    snapshot = counts(db)
    with pytest.raises(sqlite3.OperationalError):
        run_batch(db, project, "incoming", path, name="late failure")
    assert counts(db) == snapshot  # items written before the failure are rolled back


@pytest.fixture(scope="module")
def wine_store(tmp_path_factory) -> Path:
    from sklearn.datasets import load_wine

    root = tmp_path_factory.mktemp("wine")
    wine = load_wine(as_frame=True)
    frame = wine.frame.rename(columns={"target": "cultivar"})
    frame["cultivar"] = frame["cultivar"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    order = np.random.default_rng(1).permutation(len(frame))
    frame.iloc[order[:140]].to_csv(root / "train.csv", index=False)
    frame.iloc[order[140:]].to_csv(root / "batch.csv", index=False)
    _trained_store(root / "store", "wine", root / "train.csv", "tabular",
                   label_column="cultivar")
    return root


def test_a_table_batch_uses_the_project_columns_and_refuses_missing_ones(wine_store, tmp_path):
    shutil.copytree(wine_store / "store", tmp_path / "store")
    db = connect(tmp_path / "store")
    project = get_project(db, "wine")
    save_workflow(db, project, "audit", {"sample": 0.5}, source="batch")
    truth = pd.read_csv(wine_store / "batch.csv")["cultivar"]
    summary = run_batch(db, project, "audit", wine_store / "batch.csv")
    assert summary["rows"] == 38 and 5 < summary["opened"] < 33
    item = next(iter(db.query("SELECT content FROM items WHERE key LIKE 'batch:%' LIMIT 1")))
    imported = next(iter(db.query("SELECT content FROM items WHERE key NOT LIKE 'batch:%' "
                                  "LIMIT 1")))
    assert list(json.loads(item["content"])) == list(json.loads(imported["content"]))
    assert "cultivar" not in json.loads(item["content"])  # the label column is not a feature
    rows = batch_rows(db, project, "batch")
    accuracy = np.mean([r["predicted"] == [truth[int(r["key"])]] for r in rows])
    assert accuracy > 0.8
    before = counts(db)
    partial = tmp_path / "partial.csv"
    pd.read_csv(wine_store / "batch.csv").drop(columns=["alcohol", "hue"]).to_csv(
        partial, index=False)
    with pytest.raises(GroundworkError, match="lacks the column.*alcohol, hue"):
        run_batch(db, project, "audit", partial)
    assert counts(db) == before
    db.conn.close()


@pytest.fixture(scope="module")
def digits_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits")
    write_digits_folder(root / "train", per_class=15, classes=(0, 1))
    _trained_store(root / "store", "digits", root / "train", "image")
    buffer = io.BytesIO()
    from sklearn.datasets import load_digits

    digits = load_digits()
    with zipfile.ZipFile(buffer, "w") as zf:
        for n, i in enumerate(np.flatnonzero(np.isin(digits.target, (0, 1)))[40:50]):
            zf.writestr(f"new/{n}.png", digit_png(digits.data[i]))
        zf.writestr("new/broken.png", b"not a picture")
    (root / "batch.zip").write_bytes(buffer.getvalue())
    return root


def test_an_image_batch_stores_its_images_like_an_import(digits_store, tmp_path, monkeypatch):
    shutil.copytree(digits_store / "store", tmp_path / "store")
    db = connect(tmp_path / "store")
    project = get_project(db, "digits")
    save_workflow(db, project, "all", {"confidence_below": 1.0}, source="batch")
    import review.batches

    real = review.batches.store_predictions
    monkeypatch.setattr(review.batches, "store_predictions",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    before = counts(db)
    with pytest.raises(OSError):
        run_batch(db, project, "all", digits_store / "batch.zip")
    assert counts(db) == before  # the media files it wrote are gone again
    monkeypatch.setattr(review.batches, "store_predictions", real)

    summary = run_batch(db, project, "all", digits_store / "batch.zip")
    assert summary["rows"] == 10 and summary["opened"] == 10  # the broken file is left out
    tasks = next_tasks(db, project, n=20)
    paths = [db["items"].get(t["item_id"])["media_path"] for t in tasks]
    assert all((Path(db.data_dir) / p).is_file() for p in paths)
    keys = sorted(r["key"] for r in batch_rows(db, project, "batch"))
    assert keys == sorted(f"new/{n}.png" for n in range(10))
    db.conn.close()


def test_the_workflows_page_uploads_a_batch_previews_and_opens_its_loops(mail, monkeypatch):
    from streamlit.testing.v1 import AppTest

    db, project, path, _ = mail
    monkeypatch.setenv("GROUNDWORK_DATA", str(db.data_dir))
    monkeypatch.setenv("GROUNDWORK_DEMO", "0")
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "review/pages/workflows.py"),
                           default_timeout=120)
    at.session_state["project_name"] = "mail"
    at.session_state["user"] = "ann"
    at.run()
    assert not at.exception
    at.text_input(key="wf-name").set_value("incoming").run()
    at.radio(key="wf-source").set_value("batch").run()
    at.checkbox(key="wf-use-sample").check().run()
    at.file_uploader(key="wf-batch-file").upload("monday.csv", path.read_bytes(),
                                                 "text/csv").run()
    assert not at.exception
    conditions = {"any": [{"confidence_below": 0.7}, {"sample": 0.05}]}
    expected = preview_batch(db, project, conditions, read_batch(db, project, path),
                             workflow="incoming", batch="monday")["would_open"]
    assert any(f"would open {expected} new tasks on the 40 rows of batch monday" in c.value
               for c in at.caption)
    assert db["review_tasks"].count == 0 and list_batches(db, project) == []
    next(b for b in at.button if b.key == "wf-save-run").click().run()
    assert not at.exception
    assert any(f"batch monday: predicted 40 rows with model v1, opened {expected} review tasks"
               in s.value for s in at.success)
    assert db.execute("SELECT count(*) FROM review_tasks WHERE source = 'batch'").fetchone()[0] \
        == expected
    frames = [f.value for f in at.dataframe if "batch" in f.value.columns]
    assert frames and frames[0][["batch", "rows", "opened"]].values.tolist() == [
        ["monday", 40, expected]]
