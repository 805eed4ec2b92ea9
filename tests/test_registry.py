"""The registry's lineage: versioned training sets, promote and roll back, compare two versions."""

from __future__ import annotations

import json
import sqlite3

import pytest

from automl.compare import compare_versions
from automl.registry import list_models, promote, promoted_model, rollback
from automl.snapshots import diff_snapshots, list_snapshots, snapshot_items
from automl.training import train_project
from labeling.annotations import record_annotation
from labeling.errors import GroundworkError
from labeling.importers import import_source
from labeling.projects import get_project
from tests.test_cli import Run


@pytest.fixture
def gw(data_dir, capsys) -> Run:
    return Run(data_dir, capsys)


def labeled_wine(db, wine_csv):
    """Every wine labeled by a person, with ten labels wrong on purpose (rows 1..30, odd ids)."""
    import_source(db, "wine", wine_csv, "tabular", gold_column="cultivar")
    project = get_project(db, "wine")
    wrong = set()
    for item_id, gold in db.execute("SELECT id, gold FROM items ORDER BY id").fetchall():
        truth = json.loads(gold)
        if item_id % 3 == 1 and len(wrong) < 10:
            other = next(c for c in project.classes if c != truth[0])
            record_annotation(db, project, item_id, [other], user="careless")
            wrong.add(item_id)
        else:
            record_annotation(db, project, item_id, truth, user="ann")
    return project, wrong


def test_each_model_points_to_the_training_set_it_learned_from(db, wine_csv):
    project, wrong = labeled_wine(db, wine_csv)
    first = train_project(db, project, budget=3)
    again = train_project(db, project, budget=3)
    # Unchanged labels: one training set, both versions on it.
    sets = list_snapshots(db, project)
    assert len(sets) == 1 and sets[0]["model_versions"] == [1, 2]
    assert first["training_set"] == again["training_set"] == 1
    rows = snapshot_items(db, sets[0]["id"])
    assert len(rows) == 178 and rows["holdout"].sum() == sets[0]["holdout_size"] > 0
    assert sum(sets[0]["class_counts"].values()) == 178

    # A reviewer corrects the careless labels: a new training set, the old one unchanged.
    for item_id in wrong:
        gold = json.loads(db.execute("SELECT gold FROM items WHERE id = ?", [item_id])
                          .fetchone()[0])
        record_annotation(db, project, item_id, gold, user="rev", source="review")
    third = train_project(db, project, budget=3)
    assert third["training_set"] == 2
    diff = diff_snapshots(db, project, 1, 2)
    assert diff["changed"] == len(wrong) and diff["added"] == diff["removed"] == 0
    assert {c["id"] for c in diff["changed_items"]} == wrong
    assert all(c["source"] == "review" for c in diff["changed_items"])
    # The first training set still holds what the model learned then: the careless labels.
    old_rows = snapshot_items(db, sets[0]["id"]).set_index("item_id")
    for change in diff["changed_items"]:
        assert old_rows.at[change["id"], "labels"] == change["old"] != change["new"]
        assert old_rows.at[change["id"], "source"] == "human"
    models = {m["version"]: m for m in list_models(db, project)}
    assert models[3]["training_set_id"] == list_snapshots(db, project)[0]["id"]
    with pytest.raises(GroundworkError, match="no training set 9"):
        diff_snapshots(db, project, 1, 9)


def test_rollback_returns_to_the_version_promoted_before(db, wine_csv):
    project, _ = labeled_wine(db, wine_csv)
    for _ in range(3):
        train_project(db, project, budget=2)
    with pytest.raises(GroundworkError, match="no model v7"):
        promote(db, project, 7)
    promote(db, project, 1, user="lead")
    promote(db, project, 3, user="lead")
    row = promoted_model(db, project)
    assert row["version"] == 3 and row["promoted_by"] == "lead"
    assert rollback(db, project, user="lead")["version"] == 1
    assert promoted_model(db, project)["version"] == 1
    assert rollback(db, project)["version"] == 3  # back again: by promotion time
    # Exactly one promoted version at any time, and the pool is scored by it.
    statuses = [m["status"] for m in list_models(db, project)]
    assert statuses.count("promoted") == 1


def test_rollback_without_an_earlier_promotion_is_a_clear_error(db, wine_csv):
    project, _ = labeled_wine(db, wine_csv)
    with pytest.raises(GroundworkError, match="no earlier promoted model"):
        rollback(db, project)
    train_project(db, project, budget=2)
    with pytest.raises(GroundworkError, match="v1 is the only one promoted"):
        rollback(db, project)


def test_compare_measures_both_versions_on_the_same_unseen_holdout(db, wine_csv):
    project, wrong = labeled_wine(db, wine_csv)
    train_project(db, project, budget=2)
    train_project(db, project, budget=2)
    result = compare_versions(db, project, 1, 2)
    sets = list_snapshots(db, project)
    assert result["holdout_size"] == sets[0]["holdout_size"]
    assert [v["version"] for v in result["versions"]] == [1, 2]
    for v in result["versions"]:
        low, high = v["accuracy_interval"]
        assert 0 <= low <= v["accuracy"] <= high <= 1
        assert v["balanced_accuracy"] > 0.6
    assert 0 <= result["p_value"] <= 1
    assert "McNemar" in result["how_measured"]
    with pytest.raises(GroundworkError, match="no model v5"):
        compare_versions(db, project, 1, 5)


def test_cli_models_promote_rollback_compare_snapshots(gw, data_dir, wine_csv):
    gw.json("import", "wine", wine_csv, "--modality", "tabular", "--label-column", "cultivar")
    gw.json("train", "wine", "--budget", "2")
    gw.json("train", "wine", "--budget", "2")
    models = gw.json("models", "wine")["models"]
    assert [m["version"] for m in models] == [2, 1]
    assert all(m["training_set"] == 1 and len(m["artifact_sha256"]) == 64 for m in models)
    assert models[0]["library_versions"]["scikit-learn"]
    assert gw.json("promote", "wine", "1")["version"] == 1
    assert gw.json("rollback", "wine")["version"] in (1, 2)
    compared = gw.json("compare", "wine", "1", "2")
    assert compared["holdout_size"] > 0 and len(compared["versions"]) == 2
    sets = gw.json("snapshots", "wine")["training_sets"]
    assert len(sets) == 1 and sets[0]["model_versions"] == [1, 2]
    assert gw.json("snapshots", "wine", "--diff", "1", "1")["changed"] == 0
    assert "no model v9" in gw.fails("promote", "wine", "9")
    with sqlite3.connect(data_dir / "groundwork.db") as conn:
        assert conn.execute("SELECT count(*) FROM model_versions WHERE status = 'promoted'"
                            ).fetchone()[0] == 1


def test_data_report_blocks_a_class_with_one_example_before_any_job(gw, db, wine_csv):
    gw.json("import", "wine", wine_csv, "--modality", "tabular", "--gold-column", "cultivar")
    project = get_project(db, "wine")
    gold = {i: json.loads(g) for i, g in db.execute("SELECT id, gold FROM items")}
    firsts = {}
    for item_id, truth in gold.items():
        if truth == ["barbera"] and "barbera" in firsts:
            continue  # barbera gets a single example
        firsts.setdefault(truth[0], item_id)
        record_annotation(db, project, item_id, truth, user="ann")
    code, out, _ = gw("data-report", "wine", "--json")
    report = json.loads(out)
    assert code == 1 and report["blocking"] and report["problem_type"] == "multiclass"
    blocking = [f for f in report["findings"] if f["level"] == "blocking"]
    assert [f["check"] for f in blocking] == ["singleton_class"]
    message = gw.fails("train", "wine", "--budget", "2")
    assert "training cannot start" in message and "barbera" in message
    assert "training cannot start" in gw.fails("train", "wine", "--background")
    assert db["model_versions"].count == 0 and db["jobs"].count == 0


def test_library_versions_name_every_library_a_model_depends_on():
    import importlib.util

    from automl.training import library_versions

    versions = library_versions()
    for name in ("python", "scikit-learn", "numpy", "pandas", "optuna", "lightgbm", "pillow"):
        assert versions.get(name), name
    assert ("xgboost" in versions) == (importlib.util.find_spec("xgboost") is not None)


def test_an_artifact_path_outside_the_projects_model_folder_is_refused(db, wine_csv, tmp_path):
    """A row edited to point at another file is refused before anything is unpickled, even
    when that file is a byte-for-byte copy of the model (its hash matches)."""
    import shutil

    from automl.predict import predict_file
    from automl.registry import load_model

    project, _ = labeled_wine(db, wine_csv)
    train_project(db, project, budget=2, max_trials=1)
    row = promoted_model(db, project)
    assert load_model(db, row) is not None
    original = db.data_dir / row["artifact_path"]
    outside = tmp_path / "elsewhere" / "v1.joblib"
    outside.parent.mkdir()
    shutil.copy(original, outside)
    beside = db.data_dir / "elsewhere.joblib"
    shutil.copy(original, beside)
    other = db.data_dir / "models" / str(project.id + 1) / "v1.joblib"
    other.parent.mkdir()
    shutil.copy(original, other)
    for edited in (str(outside), f"models/{project.id}/../../elsewhere.joblib",
                   f"models/{project.id + 1}/v1.joblib", f"models/{project.id}", ""):
        with db.atomic():
            db.execute("UPDATE model_versions SET artifact_path = ? WHERE id = ?",
                       [edited, row["id"]])
        edited_row = promoted_model(db, project)
        with pytest.raises(GroundworkError, match="outside the project's model folder"):
            load_model(db, edited_row)
    with pytest.raises(GroundworkError, match="outside the project's model folder"):
        predict_file(db, project, wine_csv, tmp_path / "p.csv")
    # The path as it was written still loads, spelled with a harmless "./" too.
    with db.atomic():
        db.execute("UPDATE model_versions SET artifact_path = ? WHERE id = ?",
                   [f"./models/{project.id}/v1.joblib", row["id"]])
    assert load_model(db, promoted_model(db, project)).classes == project.classes
