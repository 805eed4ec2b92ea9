"""Background training jobs: a separate process per run, its state in the `jobs` table.

A process (not a thread of the Streamlit server) so that a page reload, a
second browser tab or a server restart neither blocks nor kills training, and
so a crash in a model library cannot take the app down. The page only reads
the job row; cancelling writes `cancelled` and the runner stops at the next
trial boundary or stage, leaving the promoted model in place (`run_job`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from labeling.errors import GroundworkError
from labeling.projects import Project, get_project
from labeling.store import connect, data_dir_of, utcnow

ROOT = Path(__file__).resolve().parents[1]
ACTIVE = ("queued", "running")


def _parse(row: dict | None) -> dict | None:
    if row is None:
        return None
    row = dict(row)
    for key in ("params", "progress", "result"):
        row[key] = json.loads(row[key]) if row.get(key) else ({} if key != "result" else None)
    return row


def job(db: sqlite_utils.Database, job_id: int) -> dict:
    row = next(iter(db.query("SELECT * FROM jobs WHERE id = ?", [int(job_id)])), None)
    if row is None:
        raise GroundworkError(f"no job {job_id}")
    return _parse(row)


def latest_job(
    db: sqlite_utils.Database, project: Project, kind: str = "train"
) -> dict | None:
    return _parse(next(iter(db.query(
        "SELECT * FROM jobs WHERE project_id = ? AND kind = ? ORDER BY id DESC LIMIT 1",
        [project.id, kind])), None))


def start_training(
    db: sqlite_utils.Database,
    project: Project,
    budget: float = 30.0,
    *,
    seed: int = 0,
    include_auto: bool = False,
    ensemble: bool = False,
    metric: str | None = None,
    embeddings: bool = False,
    model_families: list[str] | None = None,
    max_trials: int | None = None,
) -> int:
    """Queue a training run and start its process; refuse what would fail anyway, now."""
    job_id = queue_training(db, project, budget, seed=seed, include_auto=include_auto,
                            ensemble=ensemble, metric=metric, embeddings=embeddings,
                            model_families=model_families, max_trials=max_trials)
    spawn(db, job_id)
    return job_id


def queue_training(
    db: sqlite_utils.Database,
    project: Project,
    budget: float = 30.0,
    *,
    seed: int = 0,
    include_auto: bool = False,
    ensemble: bool = False,
    metric: str | None = None,
    embeddings: bool = False,
    model_families: list[str] | None = None,
    max_trials: int | None = None,
) -> int:
    """The job row of a training run, checked and queued, with no process started yet.

    `start_training` starts one; `run_job` runs it in whatever process calls it.
    """
    # Imported here, not at the top: listing and cancelling jobs (`groundwork jobs`, the
    # page's poll) then need no scikit-learn or Optuna, seconds of imports on a busy machine.
    from automl.search import check_max_trials, choose_families
    from automl.training import check_embeddings, validate_training

    check_max_trials(max_trials)
    if embeddings:
        check_embeddings(project)
    choose_families(project.modality, model_families)  # refuse unknown names now
    validate_training(db, project, include_auto=include_auto, metric=metric)
    reap_stale_jobs(db)
    running = db.execute(
        "SELECT id FROM jobs WHERE project_id = ? AND kind = 'train' AND status IN "
        "('queued', 'running')", [project.id]).fetchone()
    if running:
        raise GroundworkError(
            f"training job {running[0]} is still running for {project.name!r}: wait for it or "
            "cancel it"
        )
    with db.atomic():
        job_id = db["jobs"].insert({
            "project_id": project.id,
            "kind": "train",
            "status": "queued",
            "params": json.dumps({"budget": float(budget), "seed": int(seed),
                                  "include_auto": bool(include_auto),
                                  "ensemble": bool(ensemble), "metric": metric or None,
                                  "embeddings": bool(embeddings),
                                  "model_families": list(model_families or []),
                                  "max_trials": max_trials}),
            "progress": json.dumps({"trials": 0, "best": None, "elapsed": 0.0,
                                    "budget": float(budget)}),
            "created_at": utcnow(),
        }).last_pk
    return job_id


def spawn(db: sqlite_utils.Database, job_id: int) -> int:
    """Start the process that runs a queued job; return its pid."""
    data_dir = data_dir_of(db)
    logs = data_dir / "jobs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{job_id}.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "automl.jobs", str(job_id), "--data-dir", str(data_dir)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    with db.atomic():
        db.execute("UPDATE jobs SET pid = ? WHERE id = ? AND pid IS NULL", [proc.pid, job_id])
    return proc.pid


def cancel_job(db: sqlite_utils.Database, job_id: int) -> bool:
    """Ask the runner to stop; a job that already ended keeps its outcome.

    Returns whether the cancel took: False when the job had already ended
    (a run whose save committed first counts as succeeded, and its model stays).
    """
    with db.atomic():
        cursor = db.execute(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?, "
            "error = 'cancelled by a user' WHERE id = ? AND status IN ('queued', 'running')",
            [utcnow(), int(job_id)],
        )
    return cursor.rowcount > 0


def list_jobs(db: sqlite_utils.Database, project: Project, kind: str = "train",
              limit: int = 50) -> list[dict]:
    """The project's jobs of one kind, newest first, with their progress and outcome.

    Jobs whose process died are marked failed first, so none shows as
    running forever.
    """
    reap_stale_jobs(db)
    return [_parse(r) for r in db.query(
        "SELECT * FROM jobs WHERE project_id = ? AND kind = ? ORDER BY id DESC LIMIT ?",
        [project.id, kind, int(limit)])]


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not alive
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def reap_stale_jobs(db: sqlite_utils.Database) -> int:
    """Jobs whose process died without saying so are failed, so the page stops waiting."""
    stale = [
        r[0] for r in db.execute("SELECT id, pid FROM jobs WHERE status IN ('queued', 'running')")
        if r[1] is not None and not pid_alive(r[1])
    ]
    if stale:
        with db.atomic():
            db.execute(
                f"UPDATE jobs SET status = 'failed', finished_at = ?, "
                f"error = 'the training process died' WHERE id IN ({','.join('?' * len(stale))}) "
                "AND status IN ('queued', 'running')",
                [utcnow(), *stale],
            )
    return len(stale)


def run_job(data_dir: str | Path, job_id: int, *,
            on_progress: Callable[[dict], None] | None = None) -> str:
    """The body of a job process: train (or refit the quick queue model), record the outcome,
    never leave `running` behind.

    A cancel wins until the run's save commits: the runner checks for it
    between trials and between the stages after the search, and the
    `succeeded` update happens inside the transaction that saves (and
    promotes) the version, guarded by `status = 'running'`. So a cancel that
    arrives while the model is measured or the pool scored leaves the
    promoted model in place, and one that arrives after the save finds the
    job ended. `on_progress` sees every progress report the row gets (the
    page polls the row instead).
    """
    from automl.training import JobCancelled, train_project

    db = connect(data_dir)
    row = job(db, job_id)
    if row["status"] != "queued":
        return row["status"]
    with db.atomic():
        db.execute("UPDATE jobs SET status = 'running', pid = ?, started_at = ? WHERE id = ? "
                   "AND status = 'queued'", [os.getpid(), utcnow(), job_id])
    project = get_project(db, row["project_id"])
    last = [0.0, ""]

    def progress(p: dict) -> None:
        # A new stage is always written (there are few); trials at most twice a second.
        if time.monotonic() - last[0] < 0.5 and p.get("stage", "") == last[1]:
            return
        last[0], last[1] = time.monotonic(), p.get("stage", "")
        with db.atomic():
            db.execute("UPDATE jobs SET progress = ? WHERE id = ? AND status = 'running'",
                       [json.dumps(p), job_id])
        if on_progress is not None:
            on_progress(p)

    def should_stop() -> bool:
        return db.execute("SELECT status FROM jobs WHERE id = ?", [job_id]).fetchone()[0] \
            == "cancelled"

    params = row["params"]

    def succeed(result: dict) -> None:
        """Mark the job succeeded unless it is no longer running (cancelled meanwhile)."""
        updated = db.execute(
            "UPDATE jobs SET status = 'succeeded', result = ?, finished_at = ?, progress = ? "
            "WHERE id = ? AND status = 'running'",
            [json.dumps(result, default=str), utcnow(),
             json.dumps({"stage": "done", "trials": result.get("trials", 0),
                         "best": result.get("cv"), "elapsed": result.get("seconds"),
                         "budget": params.get("budget")}),
             job_id],
        ).rowcount
        if not updated:
            raise JobCancelled("the job was cancelled before its model was saved")

    def runner() -> dict:
        if row["kind"] == "refit":
            from automl.committee import quick_refit

            result = quick_refit(db, project)
            with db.atomic():
                succeed(result)
            return result
        # Inside the save's transaction: a job cancelled meanwhile undoes the save.
        return train_project(db, project, budget=float(params.get("budget", 30.0)),
                             seed=int(params.get("seed", 0)), job_id=job_id,
                             include_auto=bool(params.get("include_auto", False)),
                             ensemble=bool(params.get("ensemble", False)),
                             metric=params.get("metric") or None,
                             embeddings=bool(params.get("embeddings", False)),
                             model_families=params.get("model_families") or None,
                             max_trials=params.get("max_trials"),
                             progress=progress, should_stop=should_stop, on_commit=succeed)

    try:
        runner()
    except JobCancelled:
        return "cancelled"
    except Exception as exc:  # noqa: BLE001 - any failure is recorded as the job's outcome
        message = " ".join(str(exc).split()) or type(exc).__name__
        with db.atomic():
            db.execute("UPDATE jobs SET status = 'failed', error = ?, finished_at = ? "
                       "WHERE id = ? AND status = 'running'",
                       [f"{type(exc).__name__}: {message}"[:500], utcnow(), job_id])
        return "failed"
    return "succeeded"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run one Groundwork background job")
    parser.add_argument("job_id", type=int)
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args(argv)
    status = run_job(args.data_dir, args.job_id)
    return 0 if status in ("succeeded", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
