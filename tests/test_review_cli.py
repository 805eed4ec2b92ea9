"""The review half of the CLI: workflows, human loops, export, accuracy, label issues."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest

from tests.test_cli import Run


@pytest.fixture
def gw(data_dir, capsys) -> Run:
    return Run(data_dir, capsys)


@pytest.fixture
def mail(gw, spam_csv, tmp_path):
    """Spam subset with a third labeled and a model trained on them: (runner, truth by key)."""
    frame = pd.read_csv(spam_csv)
    truth = {str(i): label for i, label in enumerate(frame["label"])}
    frame = frame.assign(label=[v if i % 3 == 0 else None for i, v in enumerate(frame["label"])])
    path = tmp_path / "mail.csv"
    frame.to_csv(path, index=False)
    gw.json("import", "mail", path, "--modality", "text", "--label-column", "label")
    gw.json("train", "mail", "--budget", "3")
    return gw, truth


def test_workflow_preview_save_open_answer_undo_export_accuracy(mail, tmp_path):
    gw, truth = mail
    dry = gw.json("review", "workflow", "mail", "doubts", "--below", "0.9", "--sample", "0.1",
                  "--expiry-hours", "24", "--dry-run")
    assert dry["saved"] is False and dry["preview"]["would_open"] > 0
    assert gw.json("review", "workflows", "mail") == {"workflows": []}
    saved = gw.json("review", "workflow", "mail", "doubts", "--below", "0.9", "--sample", "0.1",
                    "--expiry-hours", "24", "--instructions", "Spam sells something.")
    assert saved["saved"] and saved["workflow"]["conditions"] == {
        "any": [{"confidence_below": 0.9}, {"sample": 0.1}]}
    assert saved["workflow"]["description"] == "confidence < 0.90 OR random 10% audit sample"
    opened = gw.json("review", "open", "mail", "--workflow", "doubts")
    assert opened["opened"] == saved["preview"]["would_open"] == dry["preview"]["would_open"]
    assert gw.json("review", "open", "mail", "--workflow", "doubts")["opened"] == 0
    listed = gw.json("review", "workflows", "mail")["workflows"]
    assert listed[0]["name"] == "doubts" and listed[0]["tasks"] == {"open": opened["opened"]}

    tasks = gw.json("review", "next", "mail", "--n", "100")["tasks"]
    assert len(tasks) == opened["opened"]
    task = tasks[0]
    assert task["workflow"] == "doubts" and task["fired"] and task["expires_at"]
    answer = gw.json("review", "answer", "mail", task["id"], truth[task["key"]], "--user", "rev")
    assert answer["status"] == "completed" and answer["annotation"] > 0
    assert gw.json("review", "undo", "mail", task["id"]) == {"task": task["id"],
                                                             "status": "open"}
    gw.json("review", "answer", "mail", task["id"], truth[task["key"]], "--user", "rev")

    out = tmp_path / "loops.jsonl"
    assert gw.json("review", "export", "mail", "--out", out)["loops"] == len(tasks)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    done = [r for r in records if r["status"] == "completed"]
    assert len(done) == 1 and done[0]["answers"][0]["reviewer"] == "rev"
    assert done[0]["input"]["key"] == task["key"] and done[0]["workflow"] == "doubts"

    accuracy = gw.json("review", "accuracy", "mail")
    assert accuracy["overall"]["reviewed"] == 1
    assert set(accuracy) >= {"overall", "per_class", "audit", "interval"}


def test_inline_conditions_and_the_old_flags_still_work(mail):
    gw, _ = mail
    both = gw.json("review", "open", "mail", "--below", "0.8", "--sample", "0.05")
    assert both["conditions"] == {"any": [{"confidence_below": 0.8}, {"sample": 0.05}]}
    plain = gw.json("review", "open", "mail", "--below", "0.95", "--limit", "2")
    assert plain["rule"] == {"below": 0.95} and plain["opened"] <= 2
    assert "not both" in gw.fails("review", "open", "mail", "--workflow", "x", "--below", "0.5")
    assert "no review workflow 'nope'" in gw.fails("review", "open", "mail", "--workflow",
                                                    "nope")
    assert "outside" in gw.fails("review", "workflow", "mail", "w", "--below", "2")
    assert "needs conditions" in gw.fails("review", "workflow", "mail", "w")
    assert "1, 2 or 3" in gw.fails("review", "workflow", "mail", "w", "--below", "0.5",
                                   "--reviewers", "5")
    assert "no review task 999" in gw.fails("review", "answer", "mail", "999", "ham")
    two = {"any": [{"confidence_below": 0.6},
                   {"all": [{"confidence_below": 0.9, "class": "spam"}, {"sample": 0.5}]}]}
    saved = gw.json("review", "workflow", "mail", "deep", "--conditions", json.dumps(two),
                    "--reviewers", "2")
    assert saved["workflow"]["conditions"] == two and saved["workflow"]["reviewers"] == 2
    changed = gw.json("review", "workflow", "mail", "deep", "--expiry-hours", "2")
    assert changed["workflow"]["conditions"] == two and changed["workflow"]["expiry_hours"] == 2
    assert "not valid JSON" in gw.fails("review", "workflow", "mail", "x", "--conditions", "{x")


def test_label_issues_json_and_route_to_review(gw, wine_csv, tmp_path):
    frame = pd.read_csv(wine_csv)
    names = ["barolo", "grignolino", "barbera"]
    wrong = set(np.random.default_rng(3).choice(len(frame), 18, replace=False).tolist())
    frame["label"] = [names[(names.index(v) + 1) % 3] if i in wrong else v
                      for i, v in enumerate(frame["cultivar"])]
    path = tmp_path / "noisy.csv"
    frame.drop(columns=["cultivar"]).to_csv(path, index=False)
    gw.json("import", "wine", path, "--modality", "tabular", "--label-column", "label")
    result = gw.json("label-issues", "wine")
    items = result["items"]
    assert items and all(set(i) == {"id", "key", "given", "suggested", "score", "users"}
                         for i in items)
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
    assert len({int(i["key"]) for i in items} & wrong) >= 0.8 * len(items)
    assert result["check"]["checked"] == 178
    assert gw.json("label-issues", "wine", "--limit", "3")["items"] == items[:3]
    routed = gw.json("label-issues", "wine", "--route", "label errors")
    assert routed["opened"] == len(items)
    tasks = gw.json("review", "next", "wine", "--n", "100", "--workflow", "label errors")["tasks"]
    assert [t["key"] for t in tasks] == [i["key"] for i in items]
    assert tasks[0]["given"] == items[0]["given"] and tasks[0]["given_by"] == ["import"]
    workflows = gw.json("review", "workflows", "wine")["workflows"]
    assert workflows[0]["source"] == "labels"


def test_label_issues_needs_labels(gw, spam_csv):
    gw.json("import", "mail", spam_csv, "--modality", "text", "--classes", "ham,spam")
    assert "at least 2 labels" in gw.fails("label-issues", "mail")


def test_batch_workflow_on_a_file_preview_open_answer_export(mail, spam_csv, tmp_path):
    from tests.test_cli import store_counts

    gw, _ = mail
    frame = pd.read_csv(spam_csv).iloc[:30]
    path = tmp_path / "incoming.csv"
    frame.to_csv(path, index=False)
    before = store_counts(gw.data_dir)
    dry = gw.json("review", "workflow", "mail", "incoming", "--below", "0.9", "--sample", "0.2",
                  "--file", path, "--dry-run")
    assert dry["saved"] is False and dry["preview"]["rows"] == 30
    assert dry["preview"]["batch"] == "incoming" and dry["preview"]["would_open"] > 0
    assert store_counts(gw.data_dir) == before  # a preview on a file writes nothing
    saved = gw.json("review", "workflow", "mail", "incoming", "--source", "batch", "--below",
                    "0.9", "--sample", "0.2")
    assert saved["workflow"]["source"] == "batch" and saved["preview"]["would_open"] == 0

    opened = gw.json("review", "open", "mail", "--workflow", "incoming", "--file", path)
    assert opened["opened"] == dry["preview"]["would_open"]
    assert opened["source"] == "batch" and opened["workflow"] == "incoming"
    assert opened["batch"]["batch"] == "incoming" and opened["batch"]["rows"] == 30
    assert opened["conditions"] == {"any": [{"confidence_below": 0.9}, {"sample": 0.2}]}
    listed = gw.json("review", "batches", "mail")["batches"]
    assert [(b["name"], b["rows"], b["opened"], b["reviewed"]) for b in listed] == [
        ("incoming", 30, opened["opened"], 0)]

    tasks = gw.json("review", "next", "mail", "--n", "100", "--workflow", "incoming")["tasks"]
    assert len(tasks) == opened["opened"]
    row = int(tasks[0]["key"].split(":")[-1])
    assert tasks[0]["key"] == f"batch:incoming:{row}"
    truth = frame["label"][row]
    answer = gw.json("review", "answer", "mail", tasks[0]["id"], truth, "--user", "rev")
    assert answer["status"] == "completed"

    out = tmp_path / "result.csv"
    assert gw.json("review", "batch-export", "mail", "incoming", "--out", out) == {
        "rows": 30, "out": str(out), "batch": "incoming"}
    result = pd.read_csv(out, dtype={"key": str})
    assert result["key"].tolist() == [str(i) for i in range(30)]
    done = result[result["reviewed"]]
    assert done[["key", "final_label", "final_source", "final_by"]].values.tolist() == [
        [str(row), truth, "review", "rev"]]
    rest = result[~result["reviewed"]]
    assert (rest["final_label"] == rest["predicted_label"]).all()
    assert set(rest["final_source"]) == {"model"}
    lines = tmp_path / "result.jsonl"
    assert gw.json("review", "batch-export", "mail", "incoming", "--out", lines)["rows"] == 30
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    assert sum(r["reviewed"] for r in records) == 1 and len(records) == 30
    with sqlite3.connect(gw.data_dir / "groundwork.db") as conn:  # exports are audited
        events = conn.execute("SELECT action, target, details FROM audit_log "
                              "WHERE action = 'export'").fetchall()
    assert [(a, t) for a, t, _ in events] == [("export", "batch incoming")] * 2
    assert json.loads(events[1][2]) == {"format": "jsonl", "rows": 30}

    again = gw.json("review", "workflow", "mail", "incoming", "--file", path, "--batch", "tue")
    assert again["saved"] and again["batch"]["batch"] == "tue"
    assert again["opened"] == again["preview"]["would_open"]

    before = store_counts(gw.data_dir)
    assert "--file needs --workflow" in gw.fails("review", "open", "mail", "--file", path)
    assert "does not exist" in gw.fails("review", "open", "mail", "--workflow", "incoming",
                                        "--file", tmp_path / "nope.csv")
    assert "already has a batch 'tue'" in gw.fails("review", "open", "mail", "--workflow",
                                                   "incoming", "--file", path, "--batch", "tue")
    gw.json("review", "workflow", "mail", "doubts", "--below", "0.5")
    assert "not a batch file" in gw.fails("review", "open", "mail", "--workflow", "doubts",
                                          "--file", path)
    assert "--source batch" in gw.fails("review", "workflow", "mail", "doubts", "--file", path)
    assert "no batch 'nope'" in gw.fails("review", "batch-export", "mail", "nope", "--out", out)
    assert store_counts(gw.data_dir) == before


def test_a_promotion_from_the_cli_re_evaluates_the_pool_workflows(mail, data_dir):
    """`train`, `promote` and `rollback` promote in automl, which must not import review;
    the commands re-run the pool workflows themselves, so the new model's doubts are open
    tasks at once, not only when someone next opens the Review page."""
    gw, truth = mail

    def tasks_by_model() -> dict[int, int]:
        with sqlite3.connect(data_dir / "groundwork.db") as conn:
            return dict(conn.execute(
                "SELECT m.version, count(*) FROM review_tasks t JOIN model_versions m "
                "ON m.id = t.model_version_id GROUP BY m.version").fetchall())

    gw.json("review", "workflow", "mail", "doubts", "--below", "1.0")
    assert gw.json("review", "open", "mail", "--workflow", "doubts", "--limit", "2")[
        "opened"] == 2
    for task in gw.json("review", "next", "mail", "--n", "2")["tasks"]:
        gw.json("review", "answer", "mail", task["id"], truth[task["key"]], "--user", "rev")
    assert tasks_by_model() == {1: 2}

    trained = gw.json("train", "mail", "--budget", "3")
    assert trained["model_version"] == 2
    if trained["promoted"]:
        opened = trained["review_opened"]
    else:  # the new model lost on the holdout: promote it by hand
        assert "review_opened" not in trained
        opened = gw.json("promote", "mail", "2")["review_opened"]
    assert opened["doubts"] == tasks_by_model()[2] > 0
    assert gw.json("review", "workflow", "mail", "doubts", "--below", "1.0", "--dry-run")[
        "preview"]["would_open"] == 0  # nothing left for the new model to open

    back = gw.json("rollback", "mail")
    assert back["version"] == 1 and set(back["review_opened"]) == {"doubts"}
    code, out, _ = gw("promote", "mail", "2")
    assert code == 0 and "workflow doubts re-evaluated the pool with the new model" in out


def test_review_next_holds_tasks_for_each_reviewer(mail):
    """Two reviewers asking `review next --user` are given different tasks; the other's
    task is refused with who holds it; a look without --user holds nothing; a claim
    runs out by itself."""
    import time

    gw, truth = mail
    gw.json("review", "open", "mail", "--below", "1.0", "--limit", "3")
    look = gw.json("review", "next", "mail", "--n", "10")
    assert len(look["tasks"]) == 3 and {t["status"] for t in look["tasks"]} == {"open"}
    ann = gw.json("review", "next", "mail", "--n", "2", "--user", "ann")["tasks"]
    bob = gw.json("review", "next", "mail", "--n", "2", "--user", "bob", "--lease", "0.2")
    assert [t["id"] for t in ann] == [t["id"] for t in look["tasks"][:2]]
    assert [t["id"] for t in bob["tasks"]] == [look["tasks"][2]["id"]]
    assert bob["held_by_others"] == 2
    assert ann[0]["status"] == "in progress" and ann[0]["claimed_until"]
    assert "being reviewed by ann" in gw.fails("review", "answer", "mail", ann[0]["id"],
                                               truth[ann[0]["key"]], "--user", "bob")
    again = gw.json("review", "next", "mail", "--n", "2", "--user", "ann")["tasks"]
    assert [t["id"] for t in again] == [t["id"] for t in ann]  # her own claims come back
    gw.json("review", "answer", "mail", ann[0]["id"], truth[ann[0]["key"]], "--user", "ann")
    code, _, err = gw("review", "next", "mail", "--n", "3", "--user", "cy")
    assert code == 0 and "2 more task(s) are being reviewed by others" in err
    time.sleep(0.3)  # bob's short claim has ended: his task goes to the next reviewer
    assert [t["id"] for t in gw.json("review", "next", "mail", "--user", "dan")["tasks"]] == [
        bob["tasks"][0]["id"]]
    assert "lease" in gw.fails("review", "next", "mail", "--user", "dan", "--lease", "0")


def test_review_answer_takes_a_comma_separated_set_in_a_multi_label_project(gw, db):
    from labeling.items import add_items
    from labeling.projects import create_project
    from labeling.queue import store_predictions

    project = create_project(db, "tags", "text", task="multi-label", classes=["a", "b", "c"])
    with db.atomic():
        add_items(db, project, [{"key": str(i), "content": f"note number {i}",
                                 "sha256": str(i)} for i in range(2)])
        mv = db["model_versions"].insert({
            "project_id": project.id, "version": 1, "created_at": "now", "status": "promoted",
            "estimator": "logreg", "metric_name": "f1_macro", "train_size": 0,
            "snapshot_hash": "-", "artifact_path": "-", "artifact_sha256": "-",
            "classes": '["a", "b", "c"]'}).last_pk
    store_predictions(db, mv, [1, 2], ["a", "b", "c"],
                      np.array([[0.9, 0.6, 0.1], [0.2, 0.95, 0.55]]), multi_label=True)
    assert gw.json("review", "open", "tags", "--below", "0.5")["opened"] == 2
    first, second = gw.json("review", "next", "tags", "--user", "rev")["tasks"]
    assert first["predicted"] == ["b", "c"] and second["predicted"] == ["a", "b"]
    answer = gw.json("review", "answer", "tags", first["id"], "c,a", "--user", "rev")
    assert answer["status"] == "completed"
    row = db["annotations"].get(answer["annotation"])
    assert (json.loads(row["labels"]), row["source"]) == (["a", "c"], "review")
    assert "unknown label 'd'" in gw.fails("review", "answer", "tags", second["id"], "a,d",
                                            "--user", "rev")
    gw.json("review", "answer", "tags", second["id"], "a,b,c", "--user", "rev")
    assert gw.json("review", "next", "tags", "--n", "5")["tasks"] == []
