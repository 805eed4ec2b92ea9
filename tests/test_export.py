"""Exports: Ground Truth augmented manifest, CSV (formula-safe) and JSON Lines."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from labeling.annotations import record_annotation
from labeling.errors import GroundworkError
from labeling.export import export_project, neutralise
from labeling.importers import import_source
from labeling.items import iter_items
from labeling.projects import get_project


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
