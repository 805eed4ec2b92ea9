"""Batch review: a workflow that watches the promoted model's predictions on an uploaded file.

Augmented AI's human loops on a batch prediction job, locally: a file (a
text CSV/JSONL, a table CSV, an image zip, folder or CSV manifest: what
`groundwork predict` reads) is predicted with the promoted model, and the
batch workflow's activation conditions (`review.conditions`) open a human
review task on the rows that need a person. Rows that do not activate keep
the model's prediction as the batch's output.

Every row becomes an item of the project, stored like an imported one (the
text, the table row with the project's columns, the image under `media/`),
keyed `batch:<batch>:<row key>` and tagged with the batch in its metadata, so
a reviewer sees the real input and an answer becomes a curated label (source
`review`) the next training run uses. The model's prediction is kept in the
`predictions` table under the model version that made it, so a later
promotion does not change a batch's output; pool workflows leave batch items
alone (a batch is reviewed by its own workflow). Which batches exist, with
their file, model version and counts, is kept per project in the settings
table (`review_batches:<project id>`), so backups carry it.

Reading and predicting happen before anything is written (`read_batch`),
so a preview costs no writes and a bad file (no promoted model, an
unreadable file, missing columns) changes nothing; the items, media,
predictions, tasks and the batch's record then land in one transaction.

`batch_rows` / `export_batch` give the result per row: key, prediction,
confidence, probabilities, whether a task was opened and answered, and the
final label with who gave it (a reviewer, an annotator, or the model).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import sqlite_utils

from automl.registry import load_model, promoted_model
from labeling.errors import GroundworkError
from labeling.export import neutralise
from labeling.importers import MAX_TEXT_CHARS, json_safe, read_prediction_input
from labeling.items import add_items, item_ids_by_key
from labeling.media import discard_media, sha256_bytes, store_media
from labeling.projects import Project
from labeling.queue import store_predictions, uncertainty_scores
from labeling.store import data_dir_of, get_setting, set_setting, utcnow
from review.conditions import Candidate, describe, evaluate

SOURCE = "batch"
KEY_PREFIX = "batch:"
EXPORT_FORMATS = ("csv", "jsonl")
_PREDICT_CHUNK = 2000


@dataclass
class BatchInput:
    """A file read and predicted, nothing written yet: what a preview and a run share."""

    file: str
    keys: list[str]
    contents: list[str | None]
    media: list[tuple[bytes, str] | None]
    probabilities: np.ndarray  # one column per project class, in project order
    predicted: list[list[str]]
    confidence: np.ndarray
    model_version_id: int
    model_version: int
    skipped: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)


def _setting_key(project: Project) -> str:
    # "<what>:<project id>": a backup of one project keeps exactly its own batches.
    return f"review_batches:{project.id}"


def _registry(db: sqlite_utils.Database, project: Project) -> dict[str, dict]:
    raw = get_setting(db, _setting_key(project))
    return json.loads(raw) if raw else {}


def _prefix(name: str) -> tuple[str, str]:
    """The key range of a batch's items (`key >= low AND key < high` uses the key index)."""
    low = f"{KEY_PREFIX}{name}:"
    return low, low[:-1] + chr(ord(":") + 1)


def check_batch_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise GroundworkError("a batch needs a name of 1 to 100 characters")
    if any(ord(ch) < 32 for ch in name):
        raise GroundworkError("a batch name cannot hold control characters")
    return name


def next_batch_name(db: sqlite_utils.Database, project: Project, source: str | Path) -> str:
    """The file's name without its suffix, numbered when a batch of that name exists."""
    stem = Path(str(source)).stem.strip() or "batch"
    stem = re.sub(r"[\x00-\x1f]", "", stem)[:90] or "batch"
    taken = set(_registry(db, project))
    if stem not in taken:
        return stem
    n = 2
    while f"{stem}-{n}" in taken:
        n += 1
    return f"{stem}-{n}"


# ---------------------------------------------------------------- reading and predicting


def _table_columns(db: sqlite_utils.Database, project: Project, model) -> list[str]:
    """The project's feature columns: its items' fields, else what the model was trained on."""
    row = db.execute("SELECT content FROM items WHERE project_id = ? AND key NOT LIKE ? "
                     "ORDER BY id LIMIT 1", [project.id, f"{KEY_PREFIX}%"]).fetchone()
    if row and row[0]:
        return list(json.loads(row[0]))
    return list(model.columns or [])


def _in_project_order(model, project: Project, proba: np.ndarray) -> np.ndarray:
    out = np.zeros((len(proba), len(project.classes)))
    for j, name in enumerate(model.classes):
        if name in project.classes:
            out[:, project.classes.index(name)] = proba[:, j]
    return out


def _predict(model, X, name: str) -> np.ndarray:
    """The model's probabilities, `_PREDICT_CHUNK` rows at a time."""
    parts = []
    n = len(X)
    try:
        for start in range(0, n, _PREDICT_CHUNK):
            part = X.iloc[start:start + _PREDICT_CHUNK] if hasattr(X, "iloc") \
                else X[start:start + _PREDICT_CHUNK]
            parts.append(np.asarray(model.predict_proba(part), dtype=float))
    except GroundworkError:
        raise
    except (ValueError, TypeError, KeyError, OSError) as exc:
        raise GroundworkError(f"the promoted model cannot read {name}: {exc}") from None
    return np.vstack(parts) if parts else np.zeros((0, len(model.classes)))


def read_batch(
    db: sqlite_utils.Database,
    project: Project,
    source: str | Path,
    *,
    text_column: str | None = None,
    image_column: str | None = None,
    encoding: str = "utf-8",
    name: str | None = None,
) -> BatchInput:
    """Read `source` and predict it with the promoted model; write nothing.

    The rows are read as `groundwork predict` reads them; the model sees
    exactly what it would see for the stored items (`labeling.inputs`), so the
    batch's predictions are those the items would get from the pool scorer.
    Empty or over-long texts are skipped (as on import) and listed.
    """
    row = promoted_model(db, project)
    if row is None:
        raise GroundworkError(
            f"project {project.name!r} has no promoted model yet: train one "
            f"(`groundwork train {project.name}`) before reviewing a batch prediction")
    model = load_model(db, row)
    source = Path(source)
    shown = name or source.name
    skipped: list[dict] = []
    contents: list[str | None] = []
    media: list[tuple[bytes, str] | None] = []
    keys: list[str] = []
    with tempfile.TemporaryDirectory() as work:
        read_keys, X = read_prediction_input(source, project.modality, text_column=text_column,
                                             image_column=image_column, workdir=work,
                                             encoding=encoding)
        if project.modality == "image":
            for key, path in zip(read_keys, X, strict=True):
                keys.append(str(key))
                contents.append(None)
                media.append((Path(path).read_bytes(), Path(path).suffix))
            proba = _predict(model, list(X), shown)
        elif project.modality == "text":
            texts = []
            for key, text in zip(read_keys, X, strict=True):
                if not str(text).strip():
                    skipped.append({"file": f"row {key}", "reason": "empty text"})
                    continue
                if len(text) > MAX_TEXT_CHARS:
                    skipped.append({"file": f"row {key}", "reason": (
                        f"text of {len(text)} characters is over the {MAX_TEXT_CHARS} "
                        "character limit")})
                    continue
                keys.append(str(key))
                texts.append(str(text))
            contents, media = list(texts), [None] * len(texts)
            proba = _predict(model, texts, shown)
        else:
            wanted = _table_columns(db, project, model)
            missing = [c for c in wanted if c not in X.columns]
            if missing or not wanted:
                raise GroundworkError(
                    f"{shown} lacks the column(s) {', '.join(map(str, missing)) or '(none)'} "
                    f"of project {project.name!r}; columns found: "
                    f"{', '.join(map(str, X.columns)) or 'none'}")
            frame = X[wanted]
            for number in range(len(frame)):
                values = {c: json_safe(v) for c, v in frame.iloc[number].items()}
                contents.append(json.dumps(values, ensure_ascii=False))
            keys = [str(k) for k in read_keys]
            media = [None] * len(keys)
            # What `labeling.inputs.model_input` hands the model for these items once stored.
            table = pd.DataFrame([json.loads(c) for c in contents if c is not None])
            proba = _predict(model, table, shown) if len(table) else np.zeros((0, 0))
    if not keys:
        detail = f" (first: {skipped[0]['file']}: {skipped[0]['reason']})" if skipped else ""
        raise GroundworkError(f"nothing to predict in {shown}: no readable rows{detail}")
    proba = _in_project_order(model, project, proba)
    if project.multi_label:
        predicted = [[c for c, p in zip(project.classes, r, strict=True) if p >= 0.5]
                     for r in proba]
        confidence = (np.abs(proba - 0.5) * 2).min(axis=1)
    else:
        predicted = [[project.classes[int(i)]] for i in proba.argmax(axis=1)]
        confidence = np.asarray(uncertainty_scores(proba)["confidence"], dtype=float)
    return BatchInput(file=shown, keys=keys, contents=contents, media=media,
                      probabilities=proba, predicted=predicted, confidence=confidence,
                      model_version_id=int(row["id"]), model_version=int(row["version"]),
                      skipped=skipped)


# ---------------------------------------------------------------- activation


def _salt(workflow: str, batch: str) -> str:
    """Per workflow and batch: a run again draws the same sample, another batch a fresh one."""
    return f"{workflow}:{batch}"


def _row_candidates(data: BatchInput) -> list[Candidate]:
    return [Candidate(item_id=i, predicted=list(data.predicted[i]),
                      confidence=float(data.confidence[i]))
            for i in range(len(data))]


def _activate(conditions: dict, data: BatchInput, salt: str) -> list[tuple[int, list[str]]]:
    """Row positions the conditions activate, each with what fired (the sample hashes the row)."""
    out = []
    for candidate in _row_candidates(data):
        fired = evaluate(conditions, candidate, salt)
        if fired:
            out.append((candidate.item_id, fired))
    return out


def preview_batch(
    db: sqlite_utils.Database,
    project: Project,
    conditions,
    data: BatchInput,
    *,
    workflow: str,
    batch: str | None = None,
) -> dict:
    """How many tasks the conditions would open on this file, before anything is saved."""
    from review.workflows import check_conditions

    conditions = check_conditions(conditions, project, SOURCE)
    batch = check_batch_name(batch) if batch else next_batch_name(db, project, data.file)
    hits = _activate(conditions, data, _salt(workflow.strip(), batch))
    by_condition = Counter(text for _, fired in hits for text in fired)
    return {"would_open": len(hits), "candidates": len(data), "by_condition": dict(by_condition),
            "description": describe(conditions), "model_version_id": data.model_version_id,
            "model_version": data.model_version, "batch": batch, "file": data.file,
            "rows": len(data), "skipped": data.skipped}


def stored_activations(
    db: sqlite_utils.Database, project: Project, conditions: dict, workflow: str,
) -> tuple[int, list[tuple[Candidate, list[str]]]]:
    """Re-evaluate a batch workflow on its stored batches: (candidates, activated ones).

    Candidates are batch rows without a review task of their own yet and
    without a curated label; each batch keeps its model's prediction and its
    sample (the same rows are drawn as when it ran).
    """
    n, hits = 0, []
    for batch in list_batches(db, project, counts=False):
        if batch["workflow"] != workflow:
            continue
        low, high = _prefix(batch["name"])
        rows = db.execute(
            """
            SELECT i.id, json_extract(i.metadata, '$.batch_row'), p.predicted, p.confidence,
                   p.probabilities
            FROM items i JOIN predictions p ON p.item_id = i.id AND p.model_version_id = ?
            WHERE i.project_id = ? AND i.key >= ? AND i.key < ? AND i.n_labels = 0
              AND json_extract(i.metadata, '$.review_batch') = ?
              AND NOT EXISTS (SELECT 1 FROM review_tasks t
                              WHERE t.item_id = i.id AND t.source = 'batch')
            ORDER BY i.id
            """,
            [batch["model_version_id"], project.id, low, high, batch["name"]]).fetchall()
        salt = _salt(workflow, batch["name"])
        for item_id, position, predicted, confidence, probabilities in rows:
            candidate = Candidate(item_id=int(item_id), predicted=json.loads(predicted),
                                  confidence=float(confidence),
                                  extra={"probabilities": probabilities,
                                         "model_version_id": batch["model_version_id"]})
            n += 1
            fired = evaluate(conditions, replace(candidate, item_id=int(position)), salt)
            if fired:
                hits.append((candidate, fired))
    return n, hits


# ---------------------------------------------------------------- running


def run_batch(
    db: sqlite_utils.Database,
    project: Project,
    workflow: str,
    source: str | Path | BatchInput,
    *,
    name: str | None = None,
    user: str = "local",
    limit: int | None = None,
    text_column: str | None = None,
    image_column: str | None = None,
) -> dict:
    """Add the file's rows to the project, keep their predictions, open the activated loops.

    Returns the batch's summary (`batch`, `rows`, `opened`, `skipped`, ...).
    All or nothing: a failure leaves the store (and the media folder) as it was.
    """
    from review.workflows import get_workflow, task_rows

    flow = get_workflow(db, project, workflow)
    if flow.source != SOURCE:
        raise GroundworkError(
            f"workflow {flow.name!r} watches {flow.source!r}, not a batch file: create a batch "
            f"workflow (`groundwork review workflow {project.name} NAME --source batch "
            "--below 0.7`)")
    data = source if isinstance(source, BatchInput) else read_batch(
        db, project, source, text_column=text_column, image_column=image_column)
    batch = check_batch_name(name) if name else next_batch_name(db, project, data.file)
    if batch in _registry(db, project):
        raise GroundworkError(f"project {project.name!r} already has a batch {batch!r}: "
                              "give this one another name")
    hits = _activate(flow.conditions, data, _salt(flow.name, batch))
    if limit is not None:
        hits = hits[: max(int(limit), 0)]
    low, _ = _prefix(batch)
    keys = [f"{low}{key}" for key in data.keys]
    data_dir = data_dir_of(db)
    created: list[str] = []
    now = utcnow()
    try:
        with db.atomic():
            records = []
            for position, key in enumerate(data.keys):
                record = {"key": keys[position], "content": data.contents[position],
                          "metadata": {"review_batch": batch, "batch_key": key,
                                       "batch_row": position}}
                stored = data.media[position]
                if stored is not None:
                    record["media_path"], record["sha256"] = store_media(
                        data_dir, stored[0], stored[1], created=created)
                else:
                    record["sha256"] = sha256_bytes((data.contents[position] or "").encode())
                records.append(record)
            add_items(db, project, records)  # the first write: the transaction holds the lock
            registry = _registry(db, project)
            if batch in registry:  # another process took the name meanwhile
                raise GroundworkError(f"project {project.name!r} already has a batch {batch!r}")
            ids = item_ids_by_key(db, project, keys)
            if len(ids) != len(keys):
                raise GroundworkError(f"batch {batch!r}: some rows' keys are already taken")
            item_ids = [ids[k] for k in keys]
            store_predictions(db, data.model_version_id, item_ids, project.classes,
                              data.probabilities, multi_label=project.multi_label)
            candidates = [
                (Candidate(item_id=item_ids[position], predicted=list(data.predicted[position]),
                           confidence=float(data.confidence[position]),
                           extra={"probabilities": json.dumps(
                                      [round(float(p), 6)
                                       for p in data.probabilities[position]]),
                                  "model_version_id": data.model_version_id}), fired)
                for position, fired in hits]
            rows = task_rows(project, flow.conditions, SOURCE, flow, candidates)
            db["review_tasks"].insert_all(rows, batch_size=1000)
            db["review_workflows"].update(flow.id, {"active": 1})
            record = {"name": batch, "workflow": flow.name, "file": data.file,
                      "rows": len(data), "skipped": len(data.skipped), "opened": len(rows),
                      "model_version_id": data.model_version_id,
                      "model_version": data.model_version, "conditions": flow.conditions,
                      "created_at": now, "created_by": user}
            registry[batch] = record
            set_setting(db, _setting_key(project), json.dumps(registry))
    except BaseException:
        discard_media(db, data_dir, created)
        raise
    by_condition = Counter(text for _, fired in hits for text in fired)
    return {"batch": batch, "workflow": flow.name, "file": data.file, "rows": len(data),
            "opened": len(rows), "by_condition": dict(by_condition),
            "skipped": data.skipped, "model_version": data.model_version,
            "model_version_id": data.model_version_id, "created_at": now}


# ---------------------------------------------------------------- listing and export


def list_batches(db: sqlite_utils.Database, project: Project, *,
                 counts: bool = True) -> list[dict]:
    """The project's batches, oldest first, with their tasks' states when `counts`."""
    batches = sorted(_registry(db, project).values(), key=lambda b: (b["created_at"], b["name"]))
    if not counts:
        return batches
    out = []
    for batch in batches:
        low, high = _prefix(batch["name"])
        states = dict(db.execute(
            """
            SELECT t.status, count(*) FROM review_tasks t JOIN items i ON i.id = t.item_id
            WHERE i.project_id = ? AND i.key >= ? AND i.key < ? AND t.source = 'batch'
            GROUP BY t.status
            """, [project.id, low, high]).fetchall())
        out.append({**batch, "tasks": states,
                    "reviewed": int(states.get("completed", 0)),
                    "waiting": int(states.get("open", 0) + states.get("in progress", 0))})
    return out


def get_batch(db: sqlite_utils.Database, project: Project, name: str) -> dict:
    batch = _registry(db, project).get(str(name).strip())
    if batch is None:
        known = ", ".join(sorted(_registry(db, project))) or "none yet"
        raise GroundworkError(
            f"no batch {name!r} in project {project.name!r} (batches: {known}); run one with "
            f"`groundwork review open {project.name} --workflow NAME --file PATH`")
    return batch


def batch_rows(db: sqlite_utils.Database, project: Project, name: str) -> list[dict]:
    """The batch's result, one dict per input row in file order.

    `final` is the reviewer's answer when a loop completed, else a person's
    label if someone labeled the item on the Label page, else the model's
    prediction; `final_source` says which (`review`, `human`, `model`) and
    `final_by` who (the reviewer, `consensus` for several, or `model vN`).
    """
    batch = get_batch(db, project, name)
    low, high = _prefix(batch["name"])
    items = list(db.query(
        """
        SELECT i.id, json_extract(i.metadata, '$.batch_key') AS batch_key,
               json_extract(i.metadata, '$.batch_row') AS batch_row,
               p.predicted, p.confidence, p.probabilities
        FROM items i LEFT JOIN predictions p
          ON p.item_id = i.id AND p.model_version_id = ?
        WHERE i.project_id = ? AND i.key >= ? AND i.key < ?
          AND json_extract(i.metadata, '$.review_batch') = ?
        ORDER BY batch_row, i.id
        """, [batch["model_version_id"], project.id, low, high, batch["name"]]))
    tasks: dict[int, dict] = {}
    for row in db.query(
        """
        SELECT t.id, t.item_id, t.status, t.fired FROM review_tasks t JOIN items i
          ON i.id = t.item_id
        WHERE i.project_id = ? AND i.key >= ? AND i.key < ? AND t.source = 'batch'
        ORDER BY t.id
        """, [project.id, low, high]):
        tasks[int(row["item_id"])] = row  # the latest task of each item wins
    answers: dict[int, dict] = {}
    for row in db.query(
        """
        SELECT a.id, a.item_id, a.labels, a.user, a.source FROM annotations a
        JOIN items i ON i.id = a.item_id
        WHERE i.project_id = ? AND i.key >= ? AND i.key < ? AND a.retracted_at IS NULL
          AND a.source IN ('review', 'human')
        ORDER BY a.source = 'review', a.id
        """, [project.id, low, high]):
        answers[int(row["item_id"])] = row  # a review answer beats a human one, latest wins
    out = []
    for item in items:
        predicted = json.loads(item["predicted"]) if item["predicted"] else []
        probabilities = json.loads(item["probabilities"]) if item["probabilities"] else []
        task = tasks.get(int(item["id"]))
        answer = answers.get(int(item["id"]))
        if answer is not None:
            final, source, by = json.loads(answer["labels"]), answer["source"], answer["user"]
        else:
            final, source, by = predicted, "model", f"model v{batch['model_version']}"
        out.append({
            "key": item["batch_key"],
            "item_id": int(item["id"]),
            "predicted": predicted,
            "confidence": item["confidence"],
            "probabilities": dict(zip(project.classes, probabilities, strict=False)),
            "activated": task is not None,
            "fired": json.loads(task["fired"] or "[]") if task else [],
            "review_status": task["status"] if task else None,
            "reviewed": bool(task and task["status"] == "completed"),
            "final": final,
            "final_source": source,
            "final_by": by,
        })
    return out


def _csv_text(project: Project, rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["key", "predicted_label", "confidence",
                     *[f"p_{c}" for c in project.classes], "activated", "review_status",
                     "reviewed", "final_label", "final_source", "final_by", "item_id"])
    for row in rows:
        confidence = row["confidence"]
        writer.writerow([
            neutralise(row["key"]), neutralise(",".join(row["predicted"])),
            "" if confidence is None else f"{confidence:.6f}",
            *[f"{row['probabilities'].get(c, 0.0):.6f}" for c in project.classes],
            str(row["activated"]).lower(), row["review_status"] or "",
            str(row["reviewed"]).lower(), neutralise(",".join(row["final"])),
            row["final_source"], neutralise(row["final_by"]), row["item_id"]])
    return buffer.getvalue()


def _jsonl_text(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def batch_csv(db: sqlite_utils.Database, project: Project, name: str) -> str:
    """The batch result as CSV text.

    Columns: `key, predicted_label, confidence, p_<class>` as `groundwork
    predict` writes them (so scripts reading predictions read this too), then
    `activated, review_status, reviewed, final_label, final_source, final_by,
    item_id`. Formula-like cells get a leading `'`.
    """
    return _csv_text(project, batch_rows(db, project, name))


def batch_jsonl(db: sqlite_utils.Database, project: Project, name: str) -> str:
    """The batch result as JSON Lines text, one object per row (labels as lists)."""
    return _jsonl_text(batch_rows(db, project, name))


def record_batch_export(db: sqlite_utils.Database, project: Project, name: str, fmt: str,
                        rows: int, user: str | None) -> None:
    """Who exported which batch result, and when (the audit log, like every export)."""
    from labeling.users import record_event

    with db.atomic():
        record_event(db, user, "export", project, f"batch {name}", format=fmt, rows=rows)


def export_batch(
    db: sqlite_utils.Database, project: Project, name: str, out: str | Path,
    fmt: str | None = None, *, user: str | None = None,
) -> int:
    """Write the batch result as CSV or JSON Lines (by `fmt`, else by suffix); return rows.

    Written to a temporary name and renamed, so a reader never sees half a file.
    """
    out = Path(out)
    fmt = fmt or ("jsonl" if out.suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv")
    if fmt not in EXPORT_FORMATS:
        raise GroundworkError(f"unknown format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    if not out.parent.exists():
        raise GroundworkError(f"folder {str(out.parent)!r} does not exist: create it first")
    rows = batch_rows(db, project, name)
    text = _csv_text(project, rows) if fmt == "csv" else _jsonl_text(rows)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    record_batch_export(db, project, name, fmt, len(rows), user)
    return len(rows)
