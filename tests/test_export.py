"""Exports: Ground Truth augmented manifest, CSV (formula-safe) and JSON Lines,
and the manifest read back by the importer (the round trip)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from labeling.annotations import (
    current_labels,
    live_annotations,
    record_annotation,
    retract_annotation,
)
from labeling.errors import GroundworkError
from labeling.export import export_project, neutralise
from labeling.importers import import_source
from labeling.items import iter_items
from labeling.projects import get_project, set_annotations_per_item
from labeling.store import connect


def test_image_manifest_is_ground_truth_shaped(db, digits_folder, tmp_path):
    import_source(db, "digits", digits_folder, "image")
    project = get_project(db, "digits")
    out = tmp_path / "out.manifest"
    assert export_project(db, project, "manifest", out) == 36
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    first = lines[0]
    assert Path(first["source-ref"]).is_file()
    meta = first["digits-metadata"]
    assert project.classes[first["digits"]] == meta["class-name"] == first["key"].split("/")[0]
    assert meta["type"] == "groundtruth/image-classification"
    assert meta["job-name"] == "labeling-job/digits"
    assert meta["human-annotated"] == "yes" and meta["groundwork-source"] == "import"
    assert meta["creation-date"].endswith("Z") and 0 <= meta["confidence"] <= 1


def test_auto_labels_are_marked_not_human_and_multilabel_uses_class_map(db, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"}\n')
    import_source(db, "tags", path, "text", task="multi-label", classes=["x", "y", "z"])
    project = get_project(db, "tags")
    items = list(iter_items(db, project))
    record_annotation(db, project, items[0].id, "x,z", user="ann")
    record_annotation(db, project, items[1].id, "y", user="model", source="auto",
                      confidence=0.97)
    out = tmp_path / "m.manifest"
    assert export_project(db, project, "manifest", out) == 2
    human, auto = [json.loads(line) for line in out.read_text().splitlines()]
    assert human["source"] == "a" and human["tags"] == [0, 2]
    assert human["tags-metadata"]["class-map"] == {"0": "x", "2": "z"}
    assert human["tags-metadata"]["type"] == "groundtruth/text-classification-multilabel"
    assert auto["tags-metadata"]["human-annotated"] == "no"
    assert auto["tags-metadata"]["confidence"] == pytest.approx(0.97)


def test_csv_has_every_item_and_neutralises_formulas(db, tmp_path):
    path = tmp_path / "evil.csv"
    path.write_text("text,label\n=HYPERLINK(\"http://x\"),@SUM(A1)\nfine,-1\nplain,\n")
    import_source(db, "evil", path, "text", label_column="label")
    out = tmp_path / "export.csv"
    assert export_project(db, get_project(db, "evil"), "csv", out) == 3
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["key", "label", "source", "confidence"]
    assert rows[0]["label"] == "'@SUM(A1)" and rows[0]["source"] == "import"
    assert rows[1]["label"] == "-1"  # a plain number is data, not a formula
    assert rows[2]["label"] == "" and rows[2]["source"] == ""
    assert neutralise("=1+1") == "'=1+1" and neutralise("+cmd") == "'+cmd"


def test_jsonl_and_bad_targets(db, spam_csv, tmp_path):
    import_source(db, "mail", spam_csv, "text", label_column="label")
    project = get_project(db, "mail")
    out = tmp_path / "all.jsonl"
    assert export_project(db, project, "jsonl", out) == 120
    first = json.loads(out.read_text().splitlines()[0])
    assert first["labels"] in (["ham"], ["spam"]) and first["source"] == "import"
    with pytest.raises(GroundworkError, match="does not exist"):
        export_project(db, project, "csv", tmp_path / "missing" / "x.csv")
    with pytest.raises(GroundworkError, match="unknown export format"):
        export_project(db, project, "xml", tmp_path / "x.xml")
    with pytest.raises(GroundworkError, match="is a folder"):
        export_project(db, project, "csv", tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ---------------------------------------------------------------- consolidated items


def test_consolidated_items_carry_the_worker_answers(db, spam_csv, tmp_path):
    import_source(db, "mail", spam_csv, "text", classes=["ham", "spam"])
    project = set_annotations_per_item(db, get_project(db, "mail"), 2)
    first, second, third = list(iter_items(db, project))[:3]
    record_annotation(db, project, first.id, "spam", user="ann")
    record_annotation(db, project, first.id, "spam", user="bob")
    wrong = record_annotation(db, project, first.id, "ham", user="cy")
    retract_annotation(db, project, wrong)  # undone: not one of the worker answers
    record_annotation(db, project, second.id, "ham", user="ann")  # waits for a second person
    record_annotation(db, project, third.id, "ham", user="ann")
    record_annotation(db, project, third.id, "spam", user="ann")  # ann changed her mind
    record_annotation(db, project, third.id, "spam", user="bob")
    out = tmp_path / "mail.manifest"
    assert export_project(db, project, "manifest", out) == 2
    lines = {line["key"]: line for line in map(json.loads, out.read_text().splitlines())}
    assert set(lines) == {first.key, third.key}
    meta = lines[first.key]["mail-metadata"]
    # every key a script reads is still there, unchanged
    assert meta["class-name"] == "spam" and lines[first.key]["mail"] == 1
    assert meta["human-annotated"] == "yes" and meta["job-name"] == "labeling-job/mail"
    assert meta["type"] == "groundtruth/text-classification"
    assert meta["groundwork-user"] == "consensus" and meta["groundwork-source"] == "human"
    assert 0 < meta["confidence"] <= 1
    assert meta["consolidation-method"] == "majority"
    assert [(w["worker-id"], w["class-name"]) for w in meta["worker-answers"]] == [
        ("ann", "spam"), ("bob", "spam")]
    assert all(w["creation-date"].endswith("Z") for w in meta["worker-answers"])
    # a changed mind counts once, with the latest answer
    third_answers = lines[third.key]["mail-metadata"]["worker-answers"]
    assert [(w["worker-id"], w["class-name"]) for w in third_answers] == [
        ("ann", "spam"), ("bob", "spam")]


def test_single_annotator_and_multilabel_consolidation(db, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "red apple"}\n{"text": "green pear"}\n')
    import_source(db, "tags", path, "text", task="multi-label", classes=["red", "green", "fruit"])
    project = get_project(db, "tags")
    apple, pear = list(iter_items(db, project))
    record_annotation(db, project, apple.id, "red,fruit", user="ann")
    record_annotation(db, project, apple.id, "red,fruit", user="bob")
    record_annotation(db, project, pear.id, "green", user="ann")  # one person: no consensus
    out = tmp_path / "tags.manifest"
    export_project(db, project, "manifest", out)
    apple_line, pear_line = map(json.loads, out.read_text().splitlines())
    assert sorted(apple_line["tags"]) == [0, 2]
    assert apple_line["tags-metadata"]["worker-answers"][1] == {
        "worker-id": "bob", "class-names": ["red", "fruit"],
        "creation-date": apple_line["tags-metadata"]["worker-answers"][1]["creation-date"]}
    assert "worker-answers" not in pear_line["tags-metadata"]
    assert "consolidation-method" not in pear_line["tags-metadata"]


# ---------------------------------------------------------------- round trips


def labels_by_key(db, project) -> dict[str, list[str]]:
    frame = current_labels(db, project, curated_only=True)
    return {row["key"]: sorted(row["labels"]) for row in frame.to_dict("records")}


def contents_by_key(db, project) -> dict[str, tuple]:
    return {i.key: (i.content, i.sha256) for i in iter_items(db, project)}


def test_round_trip_single_label_text(db, spam_csv, tmp_path):
    import_source(db, "mail", spam_csv, "text", classes=["ham", "spam"])  # no labels yet
    project = get_project(db, "mail")
    frame = pd.read_csv(spam_csv)
    items = list(iter_items(db, project))
    for item in items[:40]:
        record_annotation(db, project, item.id, frame["label"][int(item.key)], user="ann")
    record_annotation(db, project, items[40].id, "spam", user="model", source="auto",
                      confidence=0.99)
    before = labels_by_key(db, project)
    out = tmp_path / "mail.manifest"
    assert export_project(db, project, "manifest", out) == 41

    other = connect(tmp_path / "other-store")
    try:
        report = import_source(other, "mail-again", out, "text")
        again = get_project(other, "mail-again")
        assert report.imported == 41 and report.labeled == 40 and report.skipped == []
        assert report.machine_labels_not_imported == 1
        assert "machine labels" in report.notes[0]
        assert again.task == "single-label" and again.classes == project.classes
        assert labels_by_key(other, again) == before
        assert set(live_annotations(other, again)["source"]) == {"import"}
        # the machine-labeled item came back unlabeled, content and keys intact
        kept = contents_by_key(db, project)
        assert contents_by_key(other, again) == {k: kept[k] for k in [*before, items[40].key]}
        # exporting the copy gives the same labels, under the same class indices
        out2 = tmp_path / "again.manifest"
        export_project(other, again, "manifest", out2)
        first = [(d["key"], d["mail"], d["mail-metadata"]["class-name"])
                 for d in map(json.loads, out.read_text().splitlines())
                 if d["mail-metadata"]["human-annotated"] == "yes"]
        second = [(d["key"], d["mail-again"], d["mail-again-metadata"]["class-name"])
                  for d in map(json.loads, out2.read_text().splitlines())]
        assert first == second
        # importing it again adds nothing
        assert import_source(other, "mail-again", out, "text").duplicates == 41
    finally:
        other.conn.close()


def test_round_trip_multi_label_text_from_jsonl(db, spam_csv, tmp_path):
    frame = pd.read_csv(spam_csv).head(30)
    path = tmp_path / "mail.jsonl"
    with path.open("w") as fh:
        for text in frame["text"]:
            fh.write(json.dumps({"text": text}) + "\n")
    import_source(db, "topics", path, "text", task="multi-label",
                  classes=["money", "link", "reply", "unused"])
    project = get_project(db, "topics")
    for item in iter_items(db, project):
        text = item.content or ""
        tags = [tag for tag, hit in (("money", "$" in text), ("link", "http" in text),
                                     ("reply", "Re:" in text or "wrote:" in text)) if hit]
        if tags:
            record_annotation(db, project, item.id, tags, user="ann")
    before = labels_by_key(db, project)
    assert any(len(v) > 1 for v in before.values()) and any(len(v) == 1 for v in before.values())
    out = tmp_path / "topics.jsonl"  # the manifest under a .jsonl name is recognised too
    assert export_project(db, project, "manifest", out) == len(before)

    other = connect(tmp_path / "other-store")
    try:
        # default task: the manifest's multi-label answers make the project multi-label
        report = import_source(other, "topics", out, "text")
        again = get_project(other, "topics")
        assert report.labeled == len(before) and report.machine_labels_not_imported == 0
        assert again.task == "multi-label"
        assert again.classes == [c for c in project.classes if c != "unused"]
        assert labels_by_key(other, again) == before
        kept = contents_by_key(db, project)
        assert contents_by_key(other, again) == {k: kept[k] for k in before}
    finally:
        other.conn.close()


def test_round_trip_keeps_a_human_no_tags_answer_and_drops_machine_labels(db, tmp_path):
    """A multi-label "no tag applies" answer (`[]`, the Label page's 0) is exported as an
    empty class list marked human-annotated and comes back as that answer, not as an
    unlabeled item; machine labels, empty or not, still come back unlabeled."""
    path = tmp_path / "notes.jsonl"
    path.write_text("".join(json.dumps({"text": f"note {i}"}) + "\n" for i in range(5)))
    import_source(db, "tags", path, "text", task="multi-label", classes=["x", "y", "z"])
    project = get_project(db, "tags")
    items = list(iter_items(db, project))
    record_annotation(db, project, items[0].id, "x,z", user="ann")
    record_annotation(db, project, items[1].id, "[]", user="ann")  # none of the tags
    record_annotation(db, project, items[2].id, "y", user="model", source="auto",
                      confidence=0.9)
    record_annotation(db, project, items[3].id, [], user="model", source="auto",
                      confidence=0.8)  # the model's empty set: a machine label too
    # items[4] stays unlabeled (and is not in the manifest)
    out = tmp_path / "tags.manifest"
    assert export_project(db, project, "manifest", out) == 4
    lines = {line["key"]: line for line in map(json.loads, out.read_text().splitlines())}
    empty = lines[items[1].key]
    assert empty["tags"] == [] and empty["tags-metadata"]["human-annotated"] == "yes"
    assert empty["tags-metadata"]["class-map"] == {}

    other = connect(tmp_path / "other-store")
    try:
        report = import_source(other, "tags", out, "text")
        again = get_project(other, "tags")
        assert again.task == "multi-label"
        assert (report.imported, report.labeled, report.machine_labels_not_imported) == (4, 2, 2)
        assert labels_by_key(other, again) == {items[0].key: ["x", "z"], items[1].key: []}
        assert labels_by_key(other, again) == labels_by_key(db, project)  # the curated ones
        counts = {i.key: i.n_labels for i in iter_items(other, again)}
        assert counts == {items[0].key: 1, items[1].key: 1, items[2].key: 0, items[3].key: 0}
        # Exported again, the empty answer is the same line's answer as before.
        twice = tmp_path / "again.manifest"
        assert export_project(other, again, "manifest", twice) == 2
        back = {line["key"]: line for line in map(json.loads, twice.read_text().splitlines())}
        assert back[items[1].key]["tags"] == []
        assert back[items[1].key]["tags-metadata"]["human-annotated"] == "yes"
    finally:
        other.conn.close()


def test_round_trip_image_project(db, data_dir, digits_folder, tmp_path):
    import_source(db, "digits", digits_folder, "image")
    project = get_project(db, "digits")
    items = list(iter_items(db, project))
    record_annotation(db, project, items[0].id, "2", user="ann")  # a person corrects one
    before = labels_by_key(db, project)
    assert before[items[0].key] == ["2"]
    exported = tmp_path / "exported"
    exported.mkdir()
    out = exported / "digits.manifest"
    assert export_project(db, project, "manifest", out) == 36
    media = {i.key: (Path(data_dir) / (i.media_path or "")).read_bytes() for i in items}

    other = connect(tmp_path / "other-store")
    try:
        # the manifest's source-refs point into the first store
        report = import_source(other, "digits", out, "image")
        again = get_project(other, "digits")
        assert report.imported == 36 and report.labeled == 36 and report.skipped == []
        assert again.classes == ["0", "1", "2"] and labels_by_key(other, again) == before
        for item in iter_items(other, again):
            assert (tmp_path / "other-store" / (item.media_path or "")).read_bytes() \
                == media[item.key]
            assert item.metadata["format"] == "PNG"
    finally:
        other.conn.close()

    # the first store's media moved next to the manifest (a copied export): still found
    shutil.move(str(Path(data_dir) / "media"), str(exported / "media"))
    third = connect(tmp_path / "third-store")
    try:
        report = import_source(third, "digits", out, "image")
        assert report.imported == 36 and report.skipped == []
        assert labels_by_key(third, get_project(third, "digits")) == before
    finally:
        third.conn.close()


def test_image_manifest_cannot_pull_in_other_files(db, digits_folder, tmp_path):
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes((digits_folder / "0" / "0.png").read_bytes())
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "in.png").write_bytes((digits_folder / "1" / "1.png").read_bytes())
    meta = {"class-name": "1", "human-annotated": "yes"}
    lines = [{"source-ref": str(outside), "d": 0, "d-metadata": {**meta, "class-name": "0"}},
             {"source-ref": "../elsewhere.png", "d": 0, "d-metadata": {**meta, "class-name": "0"}},
             {"source-ref": "in.png", "d": 1, "d-metadata": meta}]
    manifest = folder / "x.manifest"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = import_source(db, "d", manifest, "image", classes=["0", "1"])
    assert report.imported == 1 and report.labeled == 1
    assert [s["reason"] for s in report.skipped] == ["path leaves the manifest's folder"] * 2


def test_round_trip_table_rows(db, wine_csv, tmp_path):
    import_source(db, "wine", wine_csv, "tabular", label_column="cultivar")
    project = get_project(db, "wine")
    out = tmp_path / "wine.manifest"
    assert export_project(db, project, "manifest", out) == 178
    other = connect(tmp_path / "other-store")
    try:
        import_source(other, "wine", out, "tabular")
        again = get_project(other, "wine")
        assert labels_by_key(other, again) == labels_by_key(db, project)
        assert contents_by_key(other, again) == contents_by_key(db, project)
    finally:
        other.conn.close()


# ---------------------------------------------------------------- bad manifests


def store_snapshot(db) -> dict:
    return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("projects", "items", "annotations")}


def _exported_lines(db, tmp_path) -> list[dict]:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"}\n')
    import_source(db, "tags", path, "text", task="multi-label", classes=["x", "y", "z"])
    project = get_project(db, "tags")
    for item, labels in zip(iter_items(db, project), ("x,z", "y", "x"), strict=True):
        record_annotation(db, project, item.id, labels, user="ann")
    out = tmp_path / "tags.manifest"
    export_project(db, project, "manifest", out)
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda line: json.dumps(line)[:-5], r"line 2 of bad\.manifest is not valid JSON"),
        (lambda line: json.dumps({k: v for k, v in line.items() if k != "tags"}),
         r"line 2 of bad\.manifest has no label attribute 'tags'"),
        (lambda line: json.dumps({**line, "tags": [1, 2]}),
         r"line 2 of bad\.manifest: class 2 of 'tags' is not in the class-map"),
        (lambda line: json.dumps({k: v for k, v in line.items() if k != "source"}),
         r"line 2 of bad\.manifest has no 'source'"),
    ],
    ids=["unparseable", "no-label-attribute", "class-not-in-class-map", "no-source"],
)
def test_a_bad_manifest_line_is_refused_and_nothing_changes(db, tmp_path, spoil, message):
    lines = _exported_lines(db, tmp_path)
    bad = tmp_path / "bad.manifest"
    bad.write_text("\n".join([json.dumps(lines[0]), spoil(lines[1]), json.dumps(lines[2])])
                   + "\n")
    before = store_snapshot(db)
    for project_name in ("fresh", "tags"):  # a new project, and the existing one
        with pytest.raises(GroundworkError, match=message) as caught:
            import_source(db, project_name, bad, "text", task="multi-label")
        assert "nothing was imported" in str(caught.value)
        assert store_snapshot(db) == before


def test_a_manifest_of_the_wrong_kind_is_refused(db, digits_folder, tmp_path):
    import_source(db, "digits", digits_folder, "image")
    out = tmp_path / "d.manifest"
    export_project(db, get_project(db, "digits"), "manifest", out)
    before = store_snapshot(db)
    with pytest.raises(GroundworkError, match="has no 'source'.*import it as an image project"):
        import_source(db, "as-text", out, "text")
    text = tmp_path / "t.csv"
    text.write_text("text,label\na,x\nb,y\n")
    import_source(db, "words", text, "text", label_column="label")
    before = store_snapshot(db)
    multi = tmp_path / "tags.manifest"
    multi.write_text(json.dumps({"source": "c", "t": [0], "t-metadata": {"class-map": {"0": "x"}}})
                     + "\n")
    with pytest.raises(GroundworkError, match="multi-label answers but project 'words' is single"):
        import_source(db, "words", multi, "text")
    assert store_snapshot(db) == before
