"""Distributed search: `groundwork train --storage postgresql://...` plus two workers.

Runs against a real PostgreSQL server started for the test (tests/postgres.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from automl.registry import promoted_model
from automl.training import run_worker
from labeling.annotations import record_annotation
from labeling.errors import GroundworkError
from labeling.importers import import_source
from labeling.projects import get_project
from tests.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer()
    yield server
    server.stop()


def groundwork(data_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli", *args, "--data-dir", str(data_dir)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def labeled_wine(db, wine_csv):
    import_source(db, "wine", wine_csv, "tabular", gold_column="cultivar")
    project = get_project(db, "wine")
    for item_id, gold in db.execute("SELECT id, gold FROM items").fetchall():
        record_annotation(db, project, item_id, json.loads(gold), user="ann")
    return project


def test_two_workers_share_one_study_on_postgresql(db, data_dir, wine_csv, postgres):
    project = labeled_wine(db, wine_csv)
    study = "wine-distributed"
    budget = 12
    # Workers may start first: they wait for the run to create the study.
    workers = [groundwork(data_dir, "worker", "wine", "--study", study, "--storage",
                          postgres.url, "--name", f"w{i}", "--json") for i in (1, 2)]
    time.sleep(1)
    run = groundwork(data_dir, "train", "wine", "--budget", str(budget), "--storage",
                     postgres.url, "--study", study, "--json")
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    result = json.loads(out)
    reports = []
    for w in workers:
        w_out, w_err = w.communicate(timeout=60)
        assert w.returncode == 0, w_err
        reports.append(json.loads(w_out))
    assert all(r["trials"] >= 1 for r in reports), reports
    assert {r["worker"] for r in reports} == {"w1", "w2"}

    loaded = optuna.load_study(study_name=study, storage=postgres.url)
    by_worker = {t.user_attrs.get("worker") for t in loaded.trials}
    assert {"main", "w1", "w2"} <= by_worker
    assert len(loaded.trials) == result["trials"] or len(loaded.trials) >= result["trials"]
    model = promoted_model(db, project)
    assert model["metrics"]["study"] == study and model["metrics"]["storage"] == "postgresql"
    assert set(model["metrics"]["workers"]) >= {"main", "w1", "w2"}
    board = model["metrics"]["leaderboard"]
    assert {row["worker"] for row in board} >= {"w1", "w2"}
    # The best trial may come from any worker; the run refits it.
    assert result["cv"] == pytest.approx(loaded.best_value)
    # The run stops its own search at the shared deadline (wall-clock figures are
    # measured by the AutoML benchmark, not asserted here).
    assert result["search_and_refit_seconds"] < budget * 3


def test_worker_bad_input_is_a_clear_error(db, data_dir, wine_csv, postgres, tmp_path):
    project = labeled_wine(db, wine_csv)
    with pytest.raises(GroundworkError, match="no study named"):
        run_worker(db, project, "never-started", postgres.url, wait=0.5)
    with pytest.raises(GroundworkError, match="PostgreSQL"):
        run_worker(db, project, "x", "sqlite:///studies.db", wait=0)
    with pytest.raises(GroundworkError, match="cannot open the study storage"):
        run_worker(db, project, "x", "postgresql://nobody@127.0.0.1:1/none", wait=0)

    # A worker whose labels differ from the run's refuses to score other data.
    from automl.search import create_study, storage_for

    storage = storage_for(data_dir, project.id, postgres.url)
    create_study(storage, "other-labels", 0, {"deadline": time.time() + 5,
                                               "snapshot_hash": "not-these-labels",
                                               "project_id": project.id, "seed": 0})
    with pytest.raises(GroundworkError, match="differ from the ones study"):
        run_worker(db, project, "other-labels", postgres.url, wait=0)
