"""`groundwork`: the command line, a thin layer over the same domain functions as the pages.

Names, flags and `--json` keys are a contract scripts rely on (issue 2): add,
never rename. Every `--json` output is one JSON object on stdout; every error
is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import subprocess
import sys
from pathlib import Path

from labeling.errors import GroundworkError

ROOT = Path(__file__).resolve().parent


def _default_user() -> str:
    try:
        return os.environ.get("GROUNDWORK_USER") or getpass.getuser()
    except OSError:
        return "local"


def _print_json(obj: dict) -> None:
    print(json.dumps(obj, default=str))


def _open(args: argparse.Namespace):
    from labeling.store import connect

    return connect(args.data_dir)


def _project(db, name: str):
    from labeling.projects import get_project

    return get_project(db, name)


def cmd_import(args: argparse.Namespace) -> int:
    from labeling.importers import import_source

    instructions = _instructions_arg(args)  # a bad --instructions-file fails before the import
    db = _open(args)
    classes = [c for c in args.classes.split(",")] if args.classes else None
    report = import_source(
        db,
        args.project,
        args.source,
        args.modality,
        task=args.task,
        text_column=args.text_column,
        image_column=args.image_column,
        label_column=args.label_column,
        gold_column=args.gold_column,
        classes=classes,
        folders_as=args.folders_as,
        encoding=args.encoding,
        user=args.user,
        strict=args.strict,
    )
    result = report.to_dict()
    if instructions is not None:
        from labeling.projects import get_project, set_instructions

        result["instructions"] = set_instructions(
            db, get_project(db, report.project), instructions).instructions
    if args.no_seed:
        from labeling.projects import get_project
        from labeling.store import set_setting

        set_setting(db, f"coldstart:{get_project(db, report.project).id}", "skipped")
    elif report.imported:
        from automl.coldstart import seed_new_projects

        result["seeded"] = report.project in seed_new_projects(db)
    for skipped in report.skipped:
        print(f"skipped {skipped['file']}: {skipped['reason']}", file=sys.stderr)
    if args.json:
        _print_json(result)
    else:
        print(
            f"{report.project}: imported {report.imported} items "
            f"({report.labeled} labeled, {report.gold} with hidden gold, "
            f"{report.duplicates} already present, {len(report.skipped)} skipped); "
            + ("regression: labels are numbers" if report.task == "regression"
               else f"classes: {', '.join(report.classes)}")
        )
        for note in report.notes:
            print(note)
    return 0


def cmd_projects(args: argparse.Namespace) -> int:
    from labeling.projects import list_projects, project_counts

    db = _open(args)
    rows = [
        {
            "name": p.name,
            "modality": p.modality,
            "task": p.task,
            "classes": p.classes,
            **project_counts(db, p),
        }
        for p in list_projects(db)
    ]
    if args.json:
        _print_json({"projects": rows})
    else:
        for r in rows:
            print(
                f"{r['name']}\t{r['modality']}\t{r['task']}\t"
                f"{r['labeled']}/{r['items']} labeled\t{','.join(r['classes'])}"
            )
    return 0


def cmd_next(args: argparse.Namespace) -> int:
    from labeling.queue import next_items

    db = _open(args)
    project = _project(db, args.project)
    if args.no_lease:  # a look at the queue: nothing is held for anyone
        items = next_items(db, project, n=args.n, strategy=args.strategy, user=args.user)
        waiting = 0
    else:  # concurrent annotators (issue 6): what is served is leased to --user
        from labeling.leases import default_lease_seconds, lease_next_items, leased_by_others

        seconds = default_lease_seconds() if args.lease is None else args.lease
        items = lease_next_items(db, project, n=args.n, user=args.user, seconds=seconds,
                                 strategy=args.strategy)
        waiting = leased_by_others(db, project, args.user) if len(items) < args.n else 0
    if args.json:
        _print_json({"items": items, "leased_by_others": waiting})
    else:
        for item in items:
            print(f"{item['id']}\t{item['key']}\t{item['reason']}")
        if waiting:
            print(f"{waiting} more item(s) are being labeled by others; try again in a minute",
                  file=sys.stderr)
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from labeling.annotations import record_annotation

    db = _open(args)
    project = _project(db, args.project)
    try:
        item_id = int(args.item_id)
    except ValueError:
        raise GroundworkError(
            f"item id {args.item_id!r} is not a number: use the ids `groundwork next` prints"
        ) from None
    from labeling.annotations import find_submission  # idempotent submit (--submission-id)

    resent = bool(args.submission_id) and find_submission(db, project, args.submission_id) \
        is not None
    annotation_id = record_annotation(db, project, item_id, args.label, user=args.user,
                                      submission_id=args.submission_id)
    from labeling.leases import release_lease

    release_lease(db, project, item_id, args.user)  # the item `next` leased to --user is done
    if not args.no_refit and not resent:
        from automl.refit import maybe_refit

        maybe_refit(db, project)  # starts a background process when due; never waits
    if args.json:
        _print_json({"annotation": annotation_id, "item": item_id, "resent": resent})
    elif resent:
        print(f"already recorded as annotation {annotation_id} for item {item_id} (same "
              "--submission-id); nothing new was recorded")
    else:
        print(f"recorded annotation {annotation_id} for item {item_id}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    db = _open(args)
    project = _project(db, args.project)
    if args.background:
        from automl.jobs import start_training

        job_id = start_training(db, project, budget=args.budget,
                                include_auto=args.include_auto, ensemble=args.ensemble,
                                metric=args.metric, embeddings=args.embeddings,
                                model_families=_families(args.families),
                                max_trials=args.max_trials)
        if args.json:
            _print_json({"job": job_id})
        else:
            print(f"started training job {job_id}")
        return 0
    from automl.training import train_project

    def progress(p: dict) -> None:
        if not args.json and sys.stderr.isatty():
            print(f"\rtrials {p.get('trials')} best {p.get('best')}", end="", file=sys.stderr)

    def announce(name: str) -> None:
        if args.storage:
            print(f"study {name}: join with `groundwork worker {project.name} --study {name} "
                  "--storage URL`", file=sys.stderr, flush=True)

    result = train_project(db, project, budget=args.budget, seed=args.seed, progress=progress,
                           include_auto=args.include_auto, storage_url=args.storage,
                           study_name=args.study, on_study=announce,
                           ensemble=args.ensemble, metric=args.metric,
                           embeddings=args.embeddings, model_families=_families(args.families),
                           max_trials=args.max_trials)
    if result["promoted"]:
        result["review_opened"] = _refresh_review(db, project)
    if args.json:
        _print_json(result)
    else:
        holdout = result.get("holdout")
        shown = "n/a" if holdout is None else f"{holdout:.3f}"
        print(
            f"model v{result['model_version']} ({result['estimator']}): "
            f"{result['metric']} cv {result['cv']:.3f}, holdout {shown} "
            f"on {result['holdout_size']} held-out human labels; "
            f"{'promoted' if result['promoted'] else 'not promoted'}"
        )
        _print_refreshed(result.get("review_opened") or {})
    return 0


def _refresh_review(db, project) -> dict[str, int]:
    """After a promotion, pool workflows re-evaluate the pool with the new model.

    Here and on the pages, not in automl: automl must not import review (the
    dependency rule), so whoever promotes from a command or a page calls it.
    """
    from review.workflows import refresh_workflows

    return refresh_workflows(db, project)


def _print_refreshed(opened: dict[str, int]) -> None:
    for name, n in opened.items():
        print(f"workflow {name} re-evaluated the pool with the new model: opened {n} "
              "review tasks")


def _families(text: str | None) -> list[str] | None:
    return [f for f in (text or "").split(",") if f.strip()] or None


def cmd_data_report(args: argparse.Namespace) -> int:
    from automl.training import training_report

    db = _open(args)
    report = training_report(db, _project(db, args.project), include_auto=args.include_auto,
                             metric=args.metric)
    if args.json:
        _print_json(report)
    else:
        print(f"{report['n']} labels, {report['problem_type']}, metric {report['metric']} "
              f"(choices: {', '.join(report['metrics'])})")
        for finding in report["findings"]:
            print(f"{finding['level']:<8} {finding['check']}: {finding['message']}")
    return 1 if report["blocking"] else 0


def cmd_worker(args: argparse.Namespace) -> int:
    from automl.training import run_worker

    db = _open(args)
    result = run_worker(db, _project(db, args.project), args.study, args.storage,
                        worker=args.name, wait=args.wait)
    if args.json:
        _print_json(result)
    else:
        print(f"worker {result['worker']} ran {result['trials']} of the study's "
              f"{result['study_trials']} trials")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from automl.registry import list_models

    db = _open(args)
    project = _project(db, args.project)
    if args.version is not None:
        return _model_details(args, db, project, list_models(db, project))
    rows = [{k: m[k] for k in ("version", "status", "estimator", "cv_score", "holdout_score",
                                "holdout_size", "train_size", "created_at", "promoted_at",
                                "promoted_by", "artifact_sha256", "snapshot_hash")}
            | {"training_set": _training_set_version(db, m), "params": m["params"],
               "library_versions": m["metrics"].get("library_versions")}
            for m in list_models(db, project)]
    if args.json:
        _print_json({"models": rows})
    elif not rows:
        print(f"project {project.name} has no model yet: `groundwork train {project.name}`")
    else:
        for m in rows:
            holdout = "n/a" if m["holdout_score"] is None else f"{m['holdout_score']:.3f}"
            print(f"v{m['version']:<3} {m['status']:<9} {m['estimator']:<24} "
                  f"cv {m['cv_score']:.3f}  holdout {holdout} on {m['holdout_size']}  "
                  f"training set {m['training_set'] or '-'}  {m['created_at']}")
    return 0


def _model_details(args: argparse.Namespace, db, project, models: list[dict]) -> int:
    """One version in full: what the Train page shows for it, leaderboard and holdout included."""
    m = next((m for m in models if m["version"] == args.version), None)
    if m is None:
        known = ", ".join(f"v{v['version']}" for v in models) or "none"
        raise GroundworkError(f"project {project.name!r} has no model v{args.version} "
                              f"(versions: {known})")
    metrics = m["metrics"]
    explanation = metrics.get("explanation") or {}
    detail = {k: m[k] for k in ("version", "status", "estimator", "metric_name", "cv_score",
                                "holdout_score", "holdout_size", "train_size", "created_at",
                                "promoted_at", "promoted_by", "artifact_sha256",
                                "snapshot_hash", "job_id", "params")} | {
        "training_set": _training_set_version(db, m),
        "holdout": {"metric": m["metric_name"], "score": m["holdout_score"],
                    "size": m["holdout_size"], "sources": metrics.get("holdout_sources"),
                    "metrics": explanation.get("holdout_metrics"),
                    "per_class": metrics.get("per_class"),
                    "confusion_matrix": metrics.get("confusion_matrix"),
                    "prediction_interval": metrics.get("prediction_interval"),
                    "compared_with": metrics.get("compared_with")},
        "leaderboard": metrics.get("leaderboard") or [],
    } | {k: metrics.get(k) for k in ("cv_std", "cv_folds", "trials", "trials_completed",
                                     "trials_pruned", "trials_failed", "search_stopped_by",
                                     "timings", "budget", "warm_start", "families", "ensemble",
                                     "library_versions", "how_measured", "study")}
    if args.json:
        _print_json(detail)
        return 0
    holdout = "n/a" if m["holdout_score"] is None else f"{m['holdout_score']:.3f}"
    print(f"v{m['version']} {m['status']} {m['estimator']}: {m['metric_name']} cv "
          f"{m['cv_score']:.3f}, holdout {holdout} on {m['holdout_size']} labels")
    for row in detail["leaderboard"]:
        cv = "-" if row.get("cv_mean") is None else f"{row['cv_mean']:.3f}"
        why = f"  ({row['reason']})" if row.get("reason") else ""
        print(f"  trial {row['trial']:<4} {row['state']:<8} {str(row['model']):<22} cv {cv}"
              f"{why}")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from automl.jobs import list_jobs

    db = _open(args)
    project = _project(db, args.project)
    rows = []
    for j in list_jobs(db, project):
        p = j["progress"] or {}
        budget = float(p.get("budget") or j["params"].get("budget") or 0) or None
        done = 1.0 if j["status"] == "succeeded" else (
            min(float(p.get("elapsed") or 0) / budget, 1.0) if budget else 0.0)
        rows.append({"id": j["id"], "status": j["status"], "stage": p.get("stage"),
                     "progress": round(done, 3), "trials": p.get("trials", 0),
                     "best": p.get("best"), "started": j["started_at"],
                     "finished": j["finished_at"], "reason": j["error"],
                     "model_version": (j["result"] or {}).get("model_version")})
    if args.json:
        _print_json({"jobs": rows})
        return 0
    if not rows:
        print(f"project {project.name} has no training job yet: `groundwork train "
              f"{project.name} --background`")
    for r in rows:
        best = "-" if r["best"] is None else f"{r['best']:.3f}"
        print(f"job {r['id']:<4} {r['status']:<9} {r['progress']:>4.0%}  {r['trials']} trials, "
              f"best {best}  started {r['started'] or '-'}  finished {r['finished'] or '-'}"
              + (f"  {r['reason']}" if r["reason"] else ""))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from automl.jobs import cancel_job, job

    db = _open(args)
    project = _project(db, args.project)
    found = job(db, args.job_id)
    if found["project_id"] != project.id:
        raise GroundworkError(f"job {args.job_id} is not a job of project {project.name!r}: "
                              f"see `groundwork jobs {project.name}`")
    cancelled = cancel_job(db, args.job_id)
    status = job(db, args.job_id)["status"]
    if args.json:
        _print_json({"job": args.job_id, "cancelled": cancelled, "status": status})
    elif cancelled:
        print(f"job {args.job_id} cancelled; it stops at its next step and the promoted model "
              "stays in place")
    else:
        print(f"job {args.job_id} had already ended ({status}): nothing to cancel")
    return 0


def _training_set_version(db, model: dict) -> int | None:
    if not model.get("training_set_id"):
        return None
    row = db.execute("SELECT version FROM training_sets WHERE id = ?",
                     [model["training_set_id"]]).fetchone()
    return int(row[0]) if row else None


def _print_promoted(args: argparse.Namespace, row: dict, opened: dict[str, int]) -> None:
    if args.json:
        _print_json({"version": row["version"], "status": row["status"],
                     "estimator": row["estimator"], "review_opened": opened})
    else:
        print(f"v{row['version']} ({row['estimator']}) is now the promoted model; the pool "
              "was re-scored with it")
        _print_refreshed(opened)


def cmd_promote(args: argparse.Namespace) -> int:
    from automl.registry import promote

    db = _open(args)
    project = _project(db, args.project)
    row = promote(db, project, args.version, user=args.user)
    _print_promoted(args, row, _refresh_review(db, project))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from automl.registry import rollback

    db = _open(args)
    project = _project(db, args.project)
    row = rollback(db, project, user=args.user)
    _print_promoted(args, row, _refresh_review(db, project))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from automl.compare import compare_versions

    db = _open(args)
    result = compare_versions(db, _project(db, args.project), args.a, args.b)
    if args.json:
        _print_json(result)
        return 0
    if "only_a_closer" in result:  # a regression project
        for v in result["versions"]:
            print(f"v{v['version']} ({v['estimator']}): R² {v['r2']}, MAE {v['mae']}, "
                  f"RMSE {v['rmse']}")
        print(f"on the same {result['holdout_size']} held-out rows; v{args.a} closer on "
              f"{result['only_a_closer']}, v{args.b} closer on {result['only_b_closer']} "
              f"(Wilcoxon p = {result['p_value']})")
        return 0
    for v in result["versions"]:
        low, high = v["accuracy_interval"]
        print(f"v{v['version']} ({v['estimator']}): balanced accuracy "
              f"{v['balanced_accuracy']:.3f}, accuracy {v['accuracy']:.3f} "
              f"[{low:.3f}, {high:.3f}]")
    print(f"on the same {result['holdout_size']} held-out labels; only v{args.a} right on "
          f"{result['only_a_right']}, only v{args.b} right on {result['only_b_right']} "
          f"(McNemar p = {result['p_value']})")
    return 0


def cmd_snapshots(args: argparse.Namespace) -> int:
    from automl.snapshots import diff_snapshots, list_snapshots

    db = _open(args)
    project = _project(db, args.project)
    if args.diff:
        result = diff_snapshots(db, project, args.diff[0], args.diff[1])
        if args.json:
            _print_json(result)
        else:
            print(f"training set {result['old']} -> {result['new']}: {result['added']} added, "
                  f"{result['removed']} removed, {result['changed']} changed")
        return 0
    rows = list_snapshots(db, project)
    if args.json:
        _print_json({"training_sets": rows})
    else:
        for r in rows:
            models = ", ".join(f"v{v}" for v in r["model_versions"]) or "no model"
            print(f"{r['version']:<3} {r['size']} labels ({r['holdout_size']} held out) "
                  f"{r['hash'][:12]}  {r['created_at']}  -> {models}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from automl.predict import predict_file

    db = _open(args)
    project = _project(db, args.project)
    from tqdm import tqdm

    bar = tqdm(total=None, unit="rows", file=sys.stderr, desc="predicting",
               disable=not (args.progress or sys.stderr.isatty()))

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        rows = predict_file(
            db,
            project,
            args.input,
            args.out,
            text_column=args.text_column,
            image_column=args.image_column,
            progress=progress,
        )
    finally:
        bar.close()
    if args.json:
        _print_json({"rows": rows, "out": str(args.out)})
    else:
        print(f"wrote {rows} predictions to {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from labeling.export import export_project

    db = _open(args)
    project = _project(db, args.project)
    rows = export_project(db, project, args.format, args.out)
    if args.json:
        _print_json({"rows": rows, "out": str(args.out), "format": args.format})
    else:
        print(f"wrote {rows} rows to {args.out}")
    return 0


def _inline_conditions(args: argparse.Namespace) -> dict | str | None:
    """Conditions from --below/--above/--sample/--label-errors (each can open a task: OR)."""
    from review.conditions import inline

    if getattr(args, "conditions", None):
        return args.conditions  # JSON text: validated (with a readable error) where it is used
    if all(getattr(args, k, None) in (None, False)
           for k in ("below", "above", "sample", "label_errors")):
        return None
    conditions = inline(args.below, args.above, args.sample, args.label_errors)
    if getattr(args, "cls", None):
        for node in conditions.get("any", [conditions]):
            if "confidence_below" in node or "confidence_above" in node:
                node["class"] = args.cls
    return conditions


def cmd_review_open(args: argparse.Namespace) -> int:
    from review.workflows import get_workflow, open_tasks, run_workflow

    db = _open(args)
    project = _project(db, args.project)
    conditions = _inline_conditions(args)
    batch = None
    if args.file and not args.workflow:
        raise GroundworkError("--file needs --workflow NAME, a batch workflow (create one with "
                              f"`groundwork review workflow {args.project} NAME --source batch "
                              "--below 0.7`)")
    if args.workflow:
        if conditions is not None:
            raise GroundworkError("give either --workflow NAME or inline conditions "
                                  "(--below, --above, --sample, --label-errors), not both")
        workflow = get_workflow(db, project, args.workflow)
        if args.file:
            from review.batches import run_batch

            batch = run_batch(db, project, args.workflow, args.file, name=args.batch,
                              user=_default_user(), limit=args.limit,
                              text_column=args.text_column, image_column=args.image_column)
            opened = batch["opened"]
        else:
            opened = run_workflow(db, project, args.workflow, limit=args.limit)
        conditions, source = workflow.conditions, workflow.source
    else:
        if conditions is None:
            conditions = {"confidence_below": 0.7}
        source = "labels" if args.label_errors else "pool"
        opened = open_tasks(db, project, conditions, source=source, limit=args.limit)
    result = {"opened": opened, "workflow": args.workflow, "source": source,
              "conditions": conditions}
    if set(conditions) == {"confidence_below"}:
        result["rule"] = {"below": conditions["confidence_below"]}
    if batch is not None:
        result["batch"] = batch
    if args.json:
        _print_json(result)
    else:
        from review.conditions import describe

        where = f"workflow {args.workflow}: " if args.workflow else ""
        if batch is not None:
            print(f"batch {batch['batch']}: predicted {batch['rows']} rows of {batch['file']} "
                  f"with model v{batch['model_version']}")
            for skipped in batch["skipped"]:
                print(f"skipped {skipped['file']}: {skipped['reason']}", file=sys.stderr)
        print(f"opened {opened} review tasks ({where}{describe(conditions)})")
    return 0


def cmd_review_next(args: argparse.Namespace) -> int:
    from review.tasks import claim_tasks, held_by_others, next_tasks
    from review.workflows import refresh_workflows

    db = _open(args)
    project = _project(db, args.project)
    refresh_workflows(db, project)
    waiting = 0
    if args.user and not args.no_lease:  # what is listed is held for --user (a claim)
        tasks = claim_tasks(db, project, args.user, n=args.n, seconds=args.lease,
                            workflow=args.workflow)
        waiting = held_by_others(db, project, args.user) if len(tasks) < args.n else 0
    else:  # a look: nothing is held for anyone
        tasks = next_tasks(db, project, n=args.n, user=args.user, workflow=args.workflow)
    out = [
        {
            "id": t["id"],
            "item": t["item_id"],
            "key": t["key"],
            "predicted": t["predicted"],
            "confidence": t["confidence"],
            "status": t["status"],
            "workflow": t["workflow"],
            "fired": t["fired"],
            "reviewers": t["reviewers"],
            "expires_at": t["expires_at"],
            "given": t.get("given"),
            "given_by": t.get("given_by"),
            "claimed_until": t.get("claimed_until"),
        }
        for t in tasks
    ]
    if args.json:
        _print_json({"tasks": out, "held_by_others": waiting})
    else:
        for t in out:
            print(f"{t['id']}\t{t['key']}\t{','.join(t['predicted'])}\t{t['confidence']:.3f}"
                  f"\t{'; '.join(t['fired'])}")
        if waiting:
            print(f"{waiting} more task(s) are being reviewed by others; try again in a minute",
                  file=sys.stderr)
    return 0


def cmd_review_answer(args: argparse.Namespace) -> int:
    from review.tasks import answer_task, get_task

    db = _open(args)
    project = _project(db, args.project)
    annotation_id = answer_task(db, project, args.task_id, args.label, user=args.user)
    status = get_task(db, project, args.task_id)["status"]
    if args.json:
        _print_json({"annotation": annotation_id, "task": int(args.task_id), "status": status})
    elif annotation_id is None:
        print(f"recorded {args.user}'s answer to task {args.task_id}; it waits for more "
              "reviewers")
    else:
        print(f"recorded review answer {annotation_id} for task {args.task_id}")
    return 0


def cmd_review_undo(args: argparse.Namespace) -> int:
    from review.tasks import get_task, undo_answer

    db = _open(args)
    project = _project(db, args.project)
    undo_answer(db, project, args.task_id, user=args.user)
    status = get_task(db, project, args.task_id)["status"]
    if args.json:
        _print_json({"task": int(args.task_id), "status": status})
    else:
        print(f"task {args.task_id} is {status} again")
    return 0


def cmd_review_export(args: argparse.Namespace) -> int:
    from review.report import export_loops

    db = _open(args)
    project = _project(db, args.project)
    n = export_loops(db, project, args.out, workflow=args.workflow)
    if args.json:
        _print_json({"loops": n, "out": str(args.out)})
    else:
        print(f"wrote {n} human loops to {args.out}")
    return 0


def cmd_review_workflow(args: argparse.Namespace) -> int:
    from review.workflows import find_workflow, preview, save_workflow

    db = _open(args)
    project = _project(db, args.project)
    conditions = _inline_conditions(args)
    existing = find_workflow(db, project, args.name)
    if conditions is None:
        if existing is None:
            raise GroundworkError("a new workflow needs conditions: --below, --above, --sample, "
                                  "--label-errors or --conditions JSON")
        conditions = existing.conditions
    if args.file:
        if args.source not in (None, "batch"):
            raise GroundworkError(f"--file is a batch to review: use --source batch, not "
                                  f"--source {args.source}")
        if existing is not None and existing.source != "batch" and args.source is None:
            raise GroundworkError(f"workflow {existing.name!r} watches {existing.source!r}; "
                                  "pass --source batch to make it watch batch files")
    source = args.source or ("batch" if args.file else "labels" if args.label_errors else
                             existing.source if existing else "pool")
    data = None
    if args.file:
        from review.batches import preview_batch, read_batch

        data = read_batch(db, project, args.file, text_column=args.text_column,
                          image_column=args.image_column)
        shown = preview_batch(db, project, conditions, data, workflow=args.name,
                              batch=args.batch)
    else:
        shown = preview(db, project, conditions, source=source, salt=args.name.strip())
    result: dict = {"saved": False, "preview": shown}
    if not args.dry_run:
        workflow = save_workflow(
            db, project, args.name, conditions, source=source,
            reviewers=args.reviewers if args.reviewers is not None else
            (existing.reviewers if existing else 1),
            expiry_hours=args.expiry_hours if args.expiry_hours is not None else
            (existing.expiry_hours if existing else None),
            instructions=args.instructions if args.instructions is not None else
            (existing.instructions if existing else ""))
        result.update(saved=True, workflow=workflow.to_dict())
        if data is not None:
            from review.batches import run_batch

            batch = run_batch(db, project, workflow.name, data, name=args.batch,
                              user=_default_user())
            result.update(batch=batch, opened=batch["opened"])
    if args.json:
        _print_json(result)
    else:
        verb = "saved" if result["saved"] else "would save"
        print(f"{verb} workflow {args.name}: {shown['description']}; it would open "
              f"{shown['would_open']} tasks now")
        if "batch" in result:
            print(f"batch {result['batch']['batch']}: predicted {result['batch']['rows']} rows, "
                  f"opened {result['opened']} review tasks")
    return 0


def cmd_review_batches(args: argparse.Namespace) -> int:
    from review.batches import list_batches

    db = _open(args)
    batches = list_batches(db, _project(db, args.project))
    if args.json:
        _print_json({"batches": batches})
    else:
        for b in batches:
            print(f"{b['name']}\t{b['workflow']}\t{b['file']}\t{b['rows']} rows\t"
                  f"{b['opened']} opened\t{b['reviewed']} reviewed\tmodel v{b['model_version']}")
    return 0


def cmd_review_batch_export(args: argparse.Namespace) -> int:
    from review.batches import export_batch

    db = _open(args)
    rows = export_batch(db, _project(db, args.project), args.batch, args.out, args.format,
                        user=_default_user())
    if args.json:
        _print_json({"rows": rows, "out": str(args.out), "batch": args.batch})
    else:
        print(f"wrote {rows} rows of batch {args.batch} to {args.out}")
    return 0


def cmd_review_workflows(args: argparse.Namespace) -> int:
    from review.workflows import list_workflows

    db = _open(args)
    project = _project(db, args.project)
    rows = []
    for w in list_workflows(db, project):
        counts = dict(db.execute("SELECT status, count(*) FROM review_tasks WHERE workflow_id = ? "
                                 "GROUP BY status", [w.id]).fetchall())
        rows.append({**w.to_dict(), "tasks": counts})
    if args.json:
        _print_json({"workflows": rows})
    else:
        for r in rows:
            print(f"{r['name']}\t{r['source']}\t{r['description']}\t{r['reviewers']} reviewer(s)"
                  f"\t{r['tasks']}")
    return 0


def cmd_review_accuracy(args: argparse.Namespace) -> int:
    from review.report import reviewed_accuracy

    db = _open(args)
    report = reviewed_accuracy(db, _project(db, args.project), workflow=args.workflow)
    if args.json:
        _print_json(report)
        return 0

    def line(name: str, m: dict) -> str:
        if not m["reviewed"]:
            return f"{name}: nothing reviewed yet"
        return (f"{name}: {m['accuracy']:.3f} ({m['low']:.3f}-{m['high']:.3f}) on "
                f"{m['reviewed']} reviewed predictions")

    print(line("overall", report["overall"]))
    print(line("random audits", report["audit"]))
    for row in report["per_class"]:
        print(line(f"predicted {row['class']}", row))
    return 0


def cmd_label_issues(args: argparse.Namespace) -> int:
    from review.label_issues import annotator_error_rates, label_issues, last_check

    db = _open(args)
    project = _project(db, args.project)
    items = label_issues(db, project, limit=args.limit, seed=args.seed)
    result: dict = {
        "items": [{k: i[k] for k in ("id", "key", "given", "suggested", "score", "users")}
                  for i in items],
        "check": last_check(db, project),
        "annotators": annotator_error_rates(db, project),
    }
    if args.route:
        from review.workflows import find_workflow, run_workflow, save_workflow

        if find_workflow(db, project, args.route) is None:
            save_workflow(db, project, args.route, {"label_error": True}, source="labels")
        result["opened"] = run_workflow(db, project, args.route)
        result["workflow"] = args.route
    if args.json:
        _print_json(result)
        return 0
    for i in result["items"]:
        print(f"{i['id']}\t{i['key']}\tgiven {','.join(i['given'])}\tsuggested "
              f"{','.join(i['suggested'])}\tscore {i['score']:.3f}\tby {','.join(i['users'])}")
    check = result["check"] or {}
    print(f"{len(items)} suspected label errors among {check.get('checked', 0)} checked labels "
          f"({check.get('method', '')})", file=sys.stderr)
    if args.route:
        print(f"opened {result['opened']} review tasks in workflow {args.route}")
    return 0


def cmd_autolabel(args: argparse.Namespace) -> int:
    from labeling.autolabel import plan_autolabel, revert_auto_labels, run_autolabel

    db = _open(args)
    project = _project(db, args.project)
    if args.revert:
        reverted = revert_auto_labels(db, project)
        if args.json:
            _print_json({"reverted": reverted, "auto_labeled": 0})
        else:
            print(f"reverted {reverted} machine labels")
        return 0
    if args.dry_run:
        result = plan_autolabel(db, project, args.target_accuracy, args.confidence)
        result["auto_labeled"] = 0
    else:
        result = run_autolabel(db, project, args.target_accuracy, args.confidence)
    if args.json:
        _print_json(result)
    elif result["threshold"] is None:
        print(f"labeled nothing: {result['reason']}")
    else:
        verb = "would label" if args.dry_run else "labeled"
        count = result["would_label"] if args.dry_run else result["auto_labeled"]
        print(
            f"{verb} {count} of {result['pool_size']} unlabeled items at confidence >= "
            f"{result['threshold']:.3f}: accuracy {result['estimated_accuracy']:.3f} on "
            f"{result['validation_above_threshold']} held-out human labels, at least "
            f"{result['lower_bound']:.3f} with {result['confidence']:.0%} confidence"
        )
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from automl.simulate import simulate

    db = _open(args)
    project = _project(db, args.project)
    result = simulate(db, project, strategy=args.strategy, budget=args.budget, batch=args.batch,
                      seed=args.seed)
    if args.compare_random and args.strategy != "random":
        baseline = simulate(db, project, strategy="random", budget=args.budget,
                            batch=args.batch, seed=args.seed)
        result["random_curve"] = baseline["curve"]
    if args.json:
        _print_json(result)
        return 0
    print(f"{result['strategy']} on {project.name}: {result['how_measured']}")
    baseline = {p["labels"]: p["accuracy"] for p in result.get("random_curve", [])}
    for point in result["curve"]:
        extra = f"\trandom {baseline[point['labels']]:.3f}" if point["labels"] in baseline else ""
        print(f"{point['labels']:6d} labels\taccuracy {point['accuracy']:.3f}{extra}")
    if result["stop_hint"]:
        print(f"the curve flattens after about {result['stop_hint']} labels")
    return 0


def _instructions_arg(args: argparse.Namespace) -> str | None:
    """`--instructions TEXT` or `--instructions-file PATH` (Markdown), or None when neither."""
    if getattr(args, "instructions_file", None):
        from labeling.projects import read_instructions_file

        return read_instructions_file(args.instructions_file)
    return getattr(args, "instructions", None)


def cmd_settings(args: argparse.Namespace) -> int:
    from labeling.projects import (
        set_annotations_per_item,
        set_instructions,
        set_refit_every,
        set_strategy,
    )

    instructions = _instructions_arg(args)
    db = _open(args)
    project = _project(db, args.project)
    if instructions is not None:
        project = set_instructions(db, project, instructions)
    if args.annotations_per_item is not None:
        project = set_annotations_per_item(db, project, args.annotations_per_item)
    if args.strategy is not None:
        project = set_strategy(db, project, args.strategy)
    if args.refit_every is not None:
        project = set_refit_every(db, project, args.refit_every)
    result = {"project": project.name, "annotations_per_item": project.annotations_per_item,
              "strategy": project.strategy, "refit_every": project.refit_every,
              "classes": project.classes, "modality": project.modality, "task": project.task,
              "instructions": project.instructions}
    if args.json:
        _print_json(result)
    else:
        print(f"{project.name}: {project.annotations_per_item} answer(s) wanted per item; "
              f"queue strategy {project.strategy}; quick refit every "
              f"{project.refit_every or 'never (off)'} labels; instructions: "
              + (f"{len(project.instructions)} characters" if project.instructions else "none"))
    return 0


def cmd_refit(args: argparse.Namespace) -> int:
    from automl.committee import quick_refit

    db = _open(args)
    result = quick_refit(db, _project(db, args.project), seed=args.seed)
    if args.json:
        _print_json(result)
    else:
        score = result.get("r2", result.get("accuracy"))
        measured = (f"holdout {'R²' if 'r2' in result else 'accuracy'} {score:.3f} on "
                    f"{result['holdout_size']} random validation items" if score is not None
                    else "no validation items labeled yet")
        print(f"quick model on {result['labels']} labels: {measured}; re-scored "
              f"{result['scored']} open items with {result['strategy']} in "
              f"{result['seconds']:.1f} s")
    return 0


def cmd_agreement(args: argparse.Namespace) -> int:
    from labeling.consolidation import agreement

    db = _open(args)
    report = agreement(db, _project(db, args.project))
    if args.json:
        _print_json(report)
        return 0
    alpha = "n/a" if report["alpha"] is None else f"{report['alpha']:.3f}"
    print(f"Krippendorff's alpha {alpha} over {report['items_with_overlap']} shared items")
    for a in report["annotators"]:
        print(f"{a['user']}\t{a['answers']} answers\tagreement {a['agreement_with_consensus']}"
              f"\tgold accuracy {a['gold_accuracy']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from labeling.demo import seed_demo

    db = _open(args)
    name = seed_demo(db, force=True)
    print(f"demo project {name!r} is ready")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.data_dir:
        env["GROUNDWORK_DATA"] = str(Path(args.data_dir).resolve())
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "app.py"),
        "--server.port",
        str(args.port),
        "--server.address",
        args.address,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    return subprocess.call(command, env=env)


def cmd_backup(args: argparse.Namespace) -> int:
    from labeling.backup import backup_store

    if bool(args.project) == bool(args.all):
        raise GroundworkError("name one PROJECT to back up, or pass --all for the whole store")
    db = _open(args)
    report = backup_store(db, args.out, None if args.all else [args.project])
    for path in report["missing"]:
        print(f"missing from the store, not backed up: {path}", file=sys.stderr)
    if args.json:
        _print_json(report)
    else:
        print(f"backed up {len(report['projects'])} project(s) "
              f"({', '.join(p['name'] for p in report['projects']) or 'none'}), "
              f"{report['media']} media files and {report['models']} models to {report['out']}")
    return 0


def cmd_media_sweep(args: argparse.Namespace) -> int:
    from labeling.media import sweep_media
    from labeling.store import data_dir_of

    db = _open(args)
    report = sweep_media(db, data_dir_of(db), min_age_seconds=args.min_age_minutes * 60,
                         dry_run=args.dry_run)
    if args.json:
        _print_json(report)
    else:
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {report['files']} orphaned media files ({report['bytes']} bytes)")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from labeling.backup import restore_store
    from labeling.store import default_data_dir

    report = restore_store(args.file, args.data_dir or default_data_dir(), force=args.force)
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        _print_json(report)
    else:
        print(f"restored {len(report['projects'])} project(s) "
              f"({', '.join(report['projects']) or 'none'}) to {report['restored_to']}")
    return 0


def _new_password(args: argparse.Namespace) -> str | None:
    """--password, or a prompt (twice) on a terminal; never a silent empty password."""
    if args.password is not None:
        return args.password
    if getattr(args, "sso_only", False):
        return None
    if not sys.stdin.isatty():
        raise GroundworkError("give --password (or run this in a terminal to be asked for it, or "
                              "--sso-only for a single-sign-on account)")
    first = getpass.getpass(f"Password for {args.name}: ")
    if getpass.getpass("Again: ") != first:
        raise GroundworkError("the two passwords differ; nothing was changed")
    return first


def cmd_users(args: argparse.Namespace) -> int:
    """Accounts, roles and assignments. The CLI is the local administrator's tool: whoever
    has the store's files is admin, so these commands need no login."""
    from labeling import users

    db = _open(args)
    command = args.users_command
    if command == "list":
        rows = users.list_users(db)
        if args.json:
            _print_json({"users": rows})
            return 0
        if not rows:
            print("no accounts: the app has one local admin and no login")
        for r in rows:
            locked = f"\tlocked until {r['locked_until']}" if r["locked_until"] else ""
            print(f"{r['name']}\t{r['role']}\t{','.join(r['projects']) or '-'}\t"
                  f"{r['email'] or ''}{locked}")
        return 0
    if command == "add":
        account = users.add_user(db, args.name, args.role, _new_password(args), email=args.email)
        result = {"name": account.name, "role": account.role, "email": account.email}
        message = f"added {account.name} ({account.role}); the app now asks everyone to log in"
    elif command == "remove":
        users.remove_user(db, args.name)
        result, message = {"removed": args.name}, f"removed {args.name}"
    elif command in ("assign", "unassign"):
        changed = (users.assign if command == "assign" else users.unassign)(
            db, args.name, args.project)
        result = {"name": args.name, "project": args.project, "changed": changed}
        message = (f"{args.name} {'now works on' if command == 'assign' else 'no longer works on'}"
                   f" {args.project}" if changed else f"nothing to change for {args.name} and "
                   f"{args.project}")
    elif command == "role":
        account = users.set_role(db, args.name, args.role)
        result, message = {"name": account.name, "role": account.role}, \
            f"{account.name} is now {account.role}"
    elif command == "passwd":
        users.set_password(db, args.name, _new_password(args))
        result = {"name": args.name, "password": "changed"}
        message = f"new password for {args.name}; their sessions were ended"
    else:  # unlock
        users.unlock_user(db, args.name)
        result, message = {"name": args.name, "unlocked": True}, f"unlocked {args.name}"
    if args.json:
        _print_json(result)
    else:
        print(message)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from labeling.users import audit_events

    db = _open(args)
    project = _project(db, args.project) if args.project else None
    events = audit_events(db, project=project, user=args.user,
                          actions=args.action or None, since=args.since, limit=args.limit)
    if args.json:
        _print_json({"events": events})
    else:
        for e in events:
            details = " ".join(f"{k}={v}" for k, v in e["details"].items())
            print(f"{e['at']}\t{e['user']}\t{e['action']}\t{e['project'] or '-'}\t"
                  f"{e['target'] or '-'}\t{details}")
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are errors too: one line, not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def _instruction_flags(p: argparse.ArgumentParser) -> None:
    """The project's instructions for annotators, inline or from a Markdown file."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--instructions", metavar="TEXT",
                       help="instructions annotators read above each item (Markdown; HTML "
                       "is shown as text); an empty string clears them")
    group.add_argument("--instructions-file", metavar="PATH",
                       help="the instructions from a UTF-8 Markdown file")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        default=argparse.SUPPRESS,
        help="folder of the store (default: $GROUNDWORK_DATA or ./data)",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print one JSON object on stdout",
    )

    parser = _Parser(
        prog="groundwork",
        description="Label, review and train on one local store.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, parents=[common])
        p.set_defaults(func=func)
        return p

    p = add("import", cmd_import, "import images, text or table rows (creates the project)")
    p.add_argument("project")
    p.add_argument("source")
    p.add_argument("--modality", required=True, choices=["image", "text", "tabular"])
    p.add_argument("--task", default=None, choices=["single-label", "multi-label", "regression"],
                   help="default: single-label, or regression for a new table whose label or "
                        "gold column holds quantities (many distinct numbers)")
    p.add_argument("--text-column")
    p.add_argument("--image-column")
    p.add_argument("--label-column")
    p.add_argument("--gold-column")
    p.add_argument("--classes", help="comma-separated class names")
    p.add_argument("--folders-as", default="label", choices=["label", "gold", "none"])
    p.add_argument("--encoding", default="utf-8", help="CSV/JSONL encoding (default utf-8)")
    p.add_argument("--user", default="import", help="who the imported labels are from")
    p.add_argument("--strict", action="store_true", help="fail instead of skipping bad files")
    p.add_argument("--no-seed", action="store_true",
                   help="keep the random queue order (no k-means cold-start seed)")
    _instruction_flags(p)

    add("projects", cmd_projects, "list projects")

    p = add("next", cmd_next, "the next items to label, most useful first")
    p.add_argument("project")
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--user", default=_default_user())
    p.add_argument("--strategy", default=None,
                   choices=["uncertainty", "margin", "entropy", "random", "batch"],
                   help="default: the project's strategy (`groundwork settings --strategy`)")
    p.add_argument("--lease", type=float, default=None, metavar="SECONDS",
                   help="hold the items served for --user this long, so other annotators are "
                   "served others (default: $GROUNDWORK_LEASE_SECONDS or 300); `label` frees one")
    p.add_argument("--no-lease", action="store_true",
                   help="only look at the queue: lease nothing")

    p = add("label", cmd_label, "record a human label for an item")
    p.add_argument("project")
    p.add_argument("item_id")
    p.add_argument("label", help="a class; several comma-separated in a multi-label project")
    p.add_argument("--user", default=_default_user())
    p.add_argument("--no-refit", action="store_true",
                   help="do not start the background quick refit even when it is due")
    p.add_argument("--submission-id",
                   help="a unique id for this answer: sending it again records nothing new")

    p = add("train", cmd_train, "train a model from curated labels and score the pool")
    p.add_argument("project")
    p.add_argument("--budget", type=float, default=30.0, help="search time budget in seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--background", action="store_true", help="run as a background job")
    p.add_argument("--include-auto", action="store_true",
                   help="also train on machine (auto) labels; never held out")
    p.add_argument("--storage", help="Optuna storage URL (postgresql://...) that "
                   "`groundwork worker` processes share; default: a journal file in the store")
    p.add_argument("--study", help="name the study (so workers can be started alongside)")
    p.add_argument("--ensemble", action="store_true",
                   help="also try soft voting over the best model of each top family; kept "
                   "only if it wins on the holdout")
    p.add_argument("--metric", help="objective metric, a scikit-learn scorer name that fits "
                   "the problem type (see `groundwork data-report`: metrics); remembered for "
                   "the project's next runs. Default: balanced_accuracy for classification")
    p.add_argument("--families", help="search only these model families, comma-separated "
                   "(e.g. logistic_regression,random_forest); default: every family for the "
                   "modality")
    p.add_argument("--max-trials", type=int, metavar="N",
                   help="also stop the search after N trials (whichever comes first with "
                   "--budget), so a run ends the same way on a fast or a busy machine")
    p.add_argument("--embeddings", action="store_true",
                   help="text projects: add all-MiniLM-L6-v2 sentence embeddings to the "
                   "features (the optional extra: pip install -e \".[embeddings]\")")

    p = add("data-report", cmd_data_report,
            "check the training data first: problem type, metric, blocking problems, warnings")
    p.add_argument("project")
    p.add_argument("--include-auto", action="store_true", help="as `train --include-auto`")
    p.add_argument("--metric", help="check this objective metric against the problem type")

    p = add("worker", cmd_worker, "join a training run's study and run trials until its deadline")
    p.add_argument("project")
    p.add_argument("--study", required=True, help="the study name `groundwork train` printed")
    p.add_argument("--storage", required=True, help="the same storage URL as the run")
    p.add_argument("--name", help="worker name shown on the leaderboard (default host:pid)")
    p.add_argument("--wait", type=float, default=60.0,
                   help="seconds to wait for the study to be created (default 60)")

    p = add("models", cmd_models, "list model versions (registry)")
    p.add_argument("project")
    p.add_argument("--version", type=int, metavar="N",
                   help="one version in full: holdout metrics, leaderboard, timings, lineage")

    p = add("jobs", cmd_jobs, "list the project's training jobs (status, progress, why)")
    p.add_argument("project")

    p = add("cancel", cmd_cancel, "cancel a training job (the promoted model stays)")
    p.add_argument("project")
    p.add_argument("job_id", type=int)

    p = add("promote", cmd_promote, "promote a model version (re-scores the pool)")
    p.add_argument("project")
    p.add_argument("version", type=int)
    p.add_argument("--user", default=_default_user())

    p = add("rollback", cmd_rollback, "promote again the version promoted before the current one")
    p.add_argument("project")
    p.add_argument("--user", default=_default_user())

    p = add("compare", cmd_compare, "compare two model versions on the same held-out labels")
    p.add_argument("project")
    p.add_argument("a", type=int, help="a model version")
    p.add_argument("b", type=int, help="another model version")

    p = add("snapshots", cmd_snapshots, "list the versioned training sets (and what changed)")
    p.add_argument("project")
    p.add_argument("--diff", nargs=2, type=int, metavar=("OLD", "NEW"),
                   help="labels added, removed and changed between two training sets")

    p = add("predict", cmd_predict, "batch prediction with the promoted model")
    p.add_argument("project")
    p.add_argument("input")
    p.add_argument("--out", required=True)
    p.add_argument("--text-column")
    p.add_argument("--image-column")
    p.add_argument("--progress", action="store_true",
                   help="show the progress bar on stderr even when it is not a terminal")

    p = add("export", cmd_export, "export labels")
    p.add_argument("project")
    p.add_argument("--format", default="manifest", choices=["manifest", "csv", "jsonl"])
    p.add_argument("--out", required=True)

    review = sub.add_parser("review", help="review workflows and tasks", parents=[common])
    review_sub = review.add_subparsers(dest="review_command", required=True, parser_class=_Parser)

    def batch_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--file", help="a batch to predict and review with a batch workflow: a "
                       "text CSV/JSONL, a table CSV, or an image zip/folder/CSV manifest")
        p.add_argument("--batch", help="the batch's name (default: the file's name)")
        p.add_argument("--text-column", help="the batch file's text column (default: text)")
        p.add_argument("--image-column", help="the image column of a CSV manifest")

    def conditions_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--below", type=float, help="open when confidence is below this")
        p.add_argument("--above", type=float, help="open when confidence is above this")
        p.add_argument("--class", dest="cls", help="limit --below/--above to a predicted class")
        p.add_argument("--sample", type=float,
                       help="also open a random share for audit (0.05 = 5%%; same items on "
                       "every run)")
        p.add_argument("--label-errors", action="store_true",
                       help="suspected label errors in the project's own labels")

    p = review_sub.add_parser("open", help="open review tasks from a workflow or inline "
                              "conditions (default: --below 0.7)", parents=[common])
    p.set_defaults(func=cmd_review_open)
    p.add_argument("project")
    p.add_argument("--workflow", help="a saved workflow (`groundwork review workflow`)")
    conditions_flags(p)
    p.add_argument("--limit", type=int)
    batch_flags(p)
    p = review_sub.add_parser("next", help="list open review tasks", parents=[common])
    p.set_defaults(func=cmd_review_next)
    p.add_argument("project")
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--user", default=None,
                   help="the reviewer: leave out tasks they answered or others hold, and hold "
                   "the listed ones for them (5 minutes) so nobody else is given them")
    p.add_argument("--workflow", help="only this workflow's tasks")
    p.add_argument("--lease", type=float, default=None, metavar="SECONDS",
                   help="how long the listed tasks stay held for --user (default 300, or "
                   "GROUNDWORK_LEASE_SECONDS)")
    p.add_argument("--no-lease", action="store_true",
                   help="only look at the tasks: hold nothing")
    p = review_sub.add_parser("answer", help="answer a review task", parents=[common])
    p.set_defaults(func=cmd_review_answer)
    p.add_argument("project")
    p.add_argument("task_id")
    p.add_argument("label", help="a class; in a multi-label project the whole set of tags, "
                   "comma-separated (a,b)")
    p.add_argument("--user", default=_default_user())
    p = review_sub.add_parser("undo", help="take back a review answer", parents=[common])
    p.set_defaults(func=cmd_review_undo)
    p.add_argument("project")
    p.add_argument("task_id")
    p.add_argument("--user", default=None, help="whose answer (default: the latest)")
    p = review_sub.add_parser("export", help="every human loop as JSON Lines", parents=[common])
    p.set_defaults(func=cmd_review_export)
    p.add_argument("project")
    p.add_argument("--out", required=True)
    p.add_argument("--workflow", help="only this workflow's loops")
    p = review_sub.add_parser("workflow", help="create or change a review workflow",
                              parents=[common])
    p.set_defaults(func=cmd_review_workflow)
    p.add_argument("project")
    p.add_argument("name")
    p.add_argument("--source", choices=["pool", "labels", "batch"],
                   help="pool: the promoted model's predictions (default); labels: the "
                   "project's own labels, for error checks; batch: its predictions on an "
                   "uploaded file (--file)")
    conditions_flags(p)
    p.add_argument("--conditions", help='conditions as JSON, e.g. \'{"any": [{"confidence_below":'
                   ' 0.7}, {"sample": 0.05}]}\'')
    p.add_argument("--reviewers", type=int, help="reviewers per task, 1-3 (default 1)")
    p.add_argument("--expiry-hours", type=float, help="unanswered tasks expire after this")
    p.add_argument("--instructions", help="what reviewers are told")
    p.add_argument("--dry-run", action="store_true", help="preview only; save nothing")
    batch_flags(p)
    p = review_sub.add_parser("workflows", help="list review workflows", parents=[common])
    p.set_defaults(func=cmd_review_workflows)
    p.add_argument("project")
    p = review_sub.add_parser("accuracy", help="the model's accuracy on reviewed items, with "
                              "Wilson intervals, per class", parents=[common])
    p.set_defaults(func=cmd_review_accuracy)
    p.add_argument("project")
    p.add_argument("--workflow")
    p = review_sub.add_parser("batches", help="list the batches reviewed with batch workflows",
                              parents=[common])
    p.set_defaults(func=cmd_review_batches)
    p.add_argument("project")
    p = review_sub.add_parser("batch-export", help="a batch's result per row: prediction, "
                              "review and final label (CSV or JSON Lines)", parents=[common])
    p.set_defaults(func=cmd_review_batch_export)
    p.add_argument("project")
    p.add_argument("batch")
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=["csv", "jsonl"],
                   help="default: jsonl for a .jsonl file, else csv")

    p = add("label-issues", cmd_label_issues,
            "suspected label errors in the project's labels, most likely first")
    p.add_argument("project")
    p.add_argument("--limit", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--route", metavar="WORKFLOW",
                   help="open review tasks for them in this workflow (created over the "
                   "project's labels if missing)")

    p = add("autolabel", cmd_autolabel,
            "label the confident rest with the promoted model, at a certified accuracy")
    p.add_argument("project")
    p.add_argument("--target-accuracy", type=float, default=0.95,
                   help="accuracy the machine labels must reach (default 0.95)")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="confidence of the lower bound on that accuracy (default 0.95)")
    p.add_argument("--dry-run", action="store_true", help="show what would be labeled")
    p.add_argument("--revert", action="store_true", help="take back every machine label")

    p = add("simulate", cmd_simulate,
            "replay labeling with the hidden gold as annotator: a learning curve per strategy")
    p.add_argument("project")
    p.add_argument("--strategy", default="margin",
                   choices=["uncertainty", "margin", "entropy", "random", "batch"])
    p.add_argument("--budget", type=int, default=200, help="labels to spend")
    p.add_argument("--batch", type=int, default=10, help="labels per round")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare-random", action="store_true",
                   help="also run random sampling on the same split (random_curve)")

    p = add("settings", cmd_settings, "show or change a project's settings")
    p.add_argument("project")
    p.add_argument("--annotations-per-item", type=int,
                   help="how many people answer each item (1-5); answers are consolidated")
    p.add_argument("--strategy", choices=["uncertainty", "margin", "entropy", "random", "batch"],
                   help="query strategy that orders the live queue")
    p.add_argument("--refit-every", type=int,
                   help="refit the quick queue model after this many new labels (0: off)")
    _instruction_flags(p)

    p = add("refit", cmd_refit,
            "refit the quick queue model now and re-score the pool with the project's strategy")
    p.add_argument("project")
    p.add_argument("--seed", type=int, default=0)

    p = add("agreement", cmd_agreement,
            "inter-annotator agreement and each annotator's record (gold accuracy)")
    p.add_argument("project")

    add("demo", cmd_demo, "seed the demo project (digits rendered to PNG)")

    p = add("backup", cmd_backup, "back up a project (or --all) with its media and models")
    p.add_argument("project", nargs="?")
    p.add_argument("--all", action="store_true", help="the whole store")
    p.add_argument("--out", required=True, help="archive to write (.tar, or .tar.gz)")

    p = add("media-sweep", cmd_media_sweep, "remove media files no item uses (left by an "
            "import that was killed mid-way)")
    p.add_argument("--min-age-minutes", type=float, default=60.0,
                   help="only files untouched this long (an import running now keeps its "
                   "files); default 60")
    p.add_argument("--dry-run", action="store_true", help="list them, remove nothing")

    p = add("restore", cmd_restore, "restore a backup into --data-dir (checks every hash)")
    p.add_argument("file")
    p.add_argument("--force", action="store_true",
                   help="replace a store that already holds projects")

    users = sub.add_parser("users", help="user accounts, roles and project assignments (the "
                           "app asks for a login once one exists)", parents=[common])
    users.set_defaults(func=cmd_users)
    users_sub = users.add_subparsers(dest="users_command", required=True, parser_class=_Parser)
    p = users_sub.add_parser("add", help="add an account", parents=[common])
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=["admin", "annotator", "reviewer"])
    p.add_argument("--password", help="default: asked for on a terminal")
    p.add_argument("--email", help="matched against the single-sign-on email")
    p.add_argument("--sso-only", action="store_true",
                   help="no password: logs in by single sign-on only")
    users_sub.add_parser("list", help="list accounts", parents=[common])
    p = users_sub.add_parser("remove", help="remove an account (its answers stay)",
                             parents=[common])
    p.add_argument("name")
    for name, help_text in (("assign", "let an account work on a project"),
                            ("unassign", "take a project away from an account")):
        p = users_sub.add_parser(name, help=help_text, parents=[common])
        p.add_argument("name")
        p.add_argument("project")
    p = users_sub.add_parser("role", help="change an account's role", parents=[common])
    p.add_argument("name")
    p.add_argument("role", choices=["admin", "annotator", "reviewer"])
    p = users_sub.add_parser("passwd", help="set a new password (unlocks, ends sessions)",
                             parents=[common])
    p.add_argument("name")
    p.add_argument("--password", help="default: asked for on a terminal")
    p = users_sub.add_parser("unlock", help="lift a lock-out after failed logins",
                             parents=[common])
    p.add_argument("name")

    p = add("audit", cmd_audit, "the audit log: logins, account changes, exports, promotions")
    p.add_argument("--project")
    p.add_argument("--user")
    p.add_argument("--action", action="append", help="only this kind of event (repeatable)")
    p.add_argument("--since", help="ISO time, e.g. 2026-01-31 or 2026-01-31T12:00")
    p.add_argument("--limit", type=int, default=100)

    p = add("serve", cmd_serve, "start the app")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default="127.0.0.1")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors and --help: an exit code, not an exception
        return exc.code if isinstance(exc.code, int) else 2
    args.data_dir = getattr(args, "data_dir", None)
    args.json = getattr(args, "json", False)
    try:
        return args.func(args)
    except GroundworkError as exc:
        # One line even when a message quotes user data with line breaks in it.
        print("error: " + " ".join(str(exc).splitlines()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the contract is one line, never a traceback
        if os.environ.get("GROUNDWORK_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
