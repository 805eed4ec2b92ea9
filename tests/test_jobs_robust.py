"""A failed or cancelled training job leaves the promoted model in place and records why;
the `jobs`, `cancel` and `models --version` commands, through the installed console script.

Real stores, real models, real processes: v1 is trained first, then a second run is cancelled
after its search ended, or fails after its search on a pool image that cannot be read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


# ---------------------------------------------------------------- the CLI, as installed


@pytest.fixture
def groundwork(data_dir):
    exe = shutil.which("groundwork", path=str(Path(sys.executable).parent))
    assert exe, "the groundwork console script is not installed in this environment"

    def run(*args: object, ok: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([exe, *map(str, args), "--data-dir", str(data_dir)],
                              capture_output=True, text=True, timeout=300)
        if ok:
            assert proc.returncode == 0, proc.stderr
        return proc

    def as_json(*args: object) -> dict:
        out = run(*args, "--json").stdout.strip().splitlines()
        assert len(out) == 1, out
        return json.loads(out[0])

    run.json = as_json
    return run


def wait_until_ended(groundwork, job_id: int, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = next(j for j in groundwork.json("jobs", "wine")["jobs"] if j["id"] == job_id)
        if row["status"] not in ("queued", "running"):
            return row
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not end in {timeout} s")


def wait_for_exit(pid: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split(") ")[-1][:1] == "Z":
                    return
        except (ProcessLookupError, FileNotFoundError):
            return
        time.sleep(0.2)
    raise AssertionError(f"process {pid} still running")


def test_cli_lists_jobs_cancels_one_and_shows_a_version_in_full(groundwork, data_dir,
                                                                wine_csv):
    groundwork("import", "wine", wine_csv, "--modality", "tabular", "--label-column",
               "cultivar")
    assert groundwork.json("jobs", "wine") == {"jobs": []}
    first = groundwork.json("train", "wine", "--background", "--budget", "120",
                            "--max-trials", "2")["job"]
    done = wait_until_ended(groundwork, first)
    assert done["status"] == "succeeded", done["reason"]
    assert set(done) >= {"id", "status", "progress", "trials", "best", "started", "finished",
                         "reason"}
    assert done["progress"] == 1.0 and done["trials"] == 2 and done["best"] > 0.8
    assert done["started"] and done["finished"] and done["reason"] is None
    assert done["model_version"] == 1
    text = groundwork("jobs", "wine").stdout
    assert f"job {first}" in text and "succeeded" in text

    late = groundwork.json("cancel", "wine", first)  # it ended: the cancel changes nothing
    assert late == {"job": first, "cancelled": False, "status": "succeeded"}

    details = groundwork.json("models", "wine", "--version", "1")
    assert details["version"] == 1 and details["status"] == "promoted"
    board = details["leaderboard"]
    assert len(board) == 2 and {"trial", "model", "cv_mean", "state", "reason"} <= set(board[0])
    holdout = details["holdout"]
    assert holdout["size"] > 0 and holdout["score"] == details["holdout_score"]
    assert holdout["metrics"] and holdout["per_class"] and holdout["confusion_matrix"]
    assert details["search_stopped_by"] == "max trials"
    assert details["timings"]["budgeted"] > 0
    assert details["library_versions"]["lightgbm"]

    second = groundwork.json("train", "wine", "--background", "--budget", "600")["job"]
    cancelled = groundwork.json("cancel", "wine", second)
    assert cancelled == {"job": second, "cancelled": True, "status": "cancelled"}
    row = wait_until_ended(groundwork, second)
    assert row["status"] == "cancelled" and row["reason"] == "cancelled by a user"
    db = connect(data_dir)
    try:
        pid = job(db, second)["pid"]
        if pid:
            wait_for_exit(pid)
        project = get_project(db, "wine")
        assert [(m["version"], m["status"]) for m in list_models(db, project)] == \
            [(1, "promoted")]
    finally:
        db.conn.close()

    for args, message in ((("cancel", "wine", 99), "no job 99"),
                          (("models", "wine", "--version", "7"), "no model v7"),
                          (("jobs", "nope"), "nope")):
        bad = groundwork(*args, ok=False)
        assert bad.returncode != 0 and message in bad.stderr
        assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
