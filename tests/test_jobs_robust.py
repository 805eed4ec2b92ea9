"""A failed or cancelled training job leaves the promoted model in place and records why.

Real stores, real models, real processes: v1 is trained first, then a second run is cancelled
after its search ended, or fails after its search on a pool image that cannot be read.
"""

from __future__ import annotations

import json

from automl.jobs import cancel_job, job, queue_training, run_job, start_training
from automl.registry import list_models, promoted_model
from automl.training import train_project
from labeling.annotations import record_annotation
from labeling.importers import import_source
from labeling.projects import get_project
from labeling.store import connect
from tests.conftest import write_digits_folder
from tests.test_automl import half_labeled_wine, wait_for


def queue_scorer(db, project) -> set[str]:
    return {r[0] for r in db.execute("SELECT DISTINCT scorer FROM queue_scores WHERE "
                                     "project_id = ?", [project.id])}


def test_a_job_cancelled_after_its_search_leaves_v1_promoted_and_saves_nothing(
        db, data_dir, wine_csv, tmp_path):
    project = half_labeled_wine(db, wine_csv, tmp_path)
    train_project(db, project, budget=60, max_trials=2)
    v1 = promoted_model(db, project)
    assert v1["version"] == 1 and queue_scorer(db, project) == {f"model:{v1['id']}"}
    job_id = queue_training(db, project, budget=60, max_trials=2)
    other = connect(data_dir)  # the person cancelling, on their own connection
    stages: list[str] = []

    def cancel_once_the_pool_is_scored(p: dict) -> None:
        stages.append(p.get("stage"))
        if p.get("stage") == "scoring":  # the search and the refit are over
            assert cancel_job(other, job_id)

    try:
        assert run_job(data_dir, job_id, on_progress=cancel_once_the_pool_is_scored) \
            == "cancelled"
    finally:
        other.conn.close()
    assert {"search", "refit", "holdout", "scoring"} <= set(stages)
    assert "saving" not in stages
    ended = job(db, job_id)
    assert ended["status"] == "cancelled" and ended["error"] == "cancelled by a user"
    assert ended["result"] is None
    assert [(m["version"], m["status"]) for m in list_models(db, project)] == [(1, "promoted")]
    assert queue_scorer(db, project) == {f"model:{v1['id']}"}
    assert not (data_dir / "models" / str(project.id) / "v2.joblib").exists()
    # A cancel that comes after the job ended changes nothing.
    assert cancel_job(db, job_id) is False


def test_a_job_that_fails_after_its_search_leaves_v1_promoted_and_says_why(db, tmp_path):
    """An unlabeled image that cannot be read breaks pool scoring, after the search, the
    refit and the holdout: nothing of the second run is saved, and the job says why."""
    folder = write_digits_folder(tmp_path / "digits", per_class=12, classes=(0, 1, 2))
    import_source(db, "digits", folder, "image", folders_as="gold")
    project = get_project(db, "digits")
    items = db.execute("SELECT id, gold, media_path FROM items ORDER BY id").fetchall()
    for item_id, gold, _ in items[::3] + items[1::3]:
        record_annotation(db, project, item_id, json.loads(gold), user="ann")
    train_project(db, project, budget=60, max_trials=2)
    v1 = promoted_model(db, project)
    before = db.execute("SELECT count(*) FROM predictions").fetchone()[0]
    pool_image = db.data_dir / items[2][2]  # every third item stays unlabeled
    pool_image.write_bytes(b"not a picture any more")

    job_id = start_training(db, project, budget=60, max_trials=2)
    ended = wait_for(db, job_id)
    assert ended["status"] == "failed"
    assert ended["error"].startswith("UnidentifiedImageError: ")
    assert ended["progress"]["stage"] == "scoring"  # the search and refit had ended
    assert [(m["version"], m["status"]) for m in list_models(db, project)] == [(1, "promoted")]
    assert promoted_model(db, project)["id"] == v1["id"]
    assert queue_scorer(db, project) == {f"model:{v1['id']}"}
    assert db.execute("SELECT count(*) FROM predictions").fetchone()[0] == before
    assert not (db.data_dir / "models" / str(project.id) / "v2.joblib").exists()

