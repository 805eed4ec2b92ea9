"""Export labels: a SageMaker Ground Truth augmented manifest, a flat CSV, or JSON Lines.

The manifest follows Ground Truth's classification output so tools that read
Ground Truth jobs read ours: the label attribute is named after the project and
holds the class index, `<project>-metadata` holds the class name, confidence,
whether a person gave the label, the task type, the job name and the date.
Machine (auto) labels are exported but always marked `human-annotated: no`.
For an item whose label was consolidated from several people's answers, the
metadata also lists each person's answer (`worker-answers`: their latest live
answer, the ones consolidation weighed) and `consolidation-method`.
`labeling.importers` reads this manifest back.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils

from labeling.annotations import CURATED_SOURCES, current_labels
from labeling.consolidation import (
    consolidate,
    consolidate_numbers,
    latest_human_answers,
    reviewed_truth,
)
from labeling.errors import GroundworkError
from labeling.items import Item, iter_items
from labeling.projects import Project
from labeling.store import data_dir_of

FORMATS = ("manifest", "csv", "jsonl")
# OWASP's list (= + - @ tab CR) plus their full-width forms, which some spreadsheet
# locales also read as the start of a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
# A plain decimal number, the only thing starting with + or - that is left as it is.
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def task_type(project: Project) -> str:
    """Ground Truth's built-in type names where one exists; ours for tables."""
    base = {
        "image": "groundtruth/image-classification",
        "text": "groundtruth/text-classification",
        "tabular": "groundwork/tabular-classification",
    }[project.modality]
    if project.regression:
        return "groundwork/tabular-regression"
    return f"{base}-multilabel" if project.multi_label else base


def neutralise(cell: object) -> str:
    """Keep spreadsheet programs from running a cell as a formula (CSV injection).

    A cell that starts with = + - @, a tab or a carriage return (or a full-width
    = + - @) gets a leading apostrophe, as OWASP recommends: spreadsheets show
    it as text. The one exception is a plain decimal number such as -1.5, +3 or
    -2e-5: a spreadsheet computes nothing from it but the number itself, and
    labels like "-1" (common for tables) must read back as numbers. "-inf",
    "-nan", "-1_000" or "-1+1" are not plain numbers and are prefixed.
    """
    text = "" if cell is None else str(cell)
    if text.startswith(_FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def _source_of(db: sqlite_utils.Database, project: Project, item: Item) -> tuple[str, str]:
    if project.modality == "image":
        return "source-ref", str(data_dir_of(db) / (item.media_path or ""))
    return "source", item.content or ""


def _labeled(db: sqlite_utils.Database, project: Project) -> Iterator[tuple[Item, dict | None]]:
    labels = current_labels(db, project, curated_only=False)
    by_item = {int(row["item_id"]): row for row in labels.to_dict("records")}
    for item in iter_items(db, project):
        yield item, by_item.get(item.id)


def _confidence(answer: dict) -> float | None:
    value = answer.get("confidence")
    if value is not None and value == value:  # not NaN
        return float(value)
    # A single person's answer is taken as certain until consolidation weighs it.
    return 1.0 if answer["source"] in CURATED_SOURCES else None


def _worker_answers(db: sqlite_utils.Database, project: Project,
                    answers: dict[int, dict | None]) -> dict[int, dict]:
    """`worker-answers` and `consolidation-method` for each item whose label is a consensus.

    An item's current label is a consensus when it is a human answer and two or
    more people answered the item (`current_labels` then replaces their answers
    by the consolidated one). The answers listed are the ones consolidation
    weighed: each person's latest live human answer.
    """
    latest = latest_human_answers(db, project)
    if latest.empty:
        return {}
    people = latest.groupby("item_id")["user"].nunique()
    consolidated = {
        int(item_id) for item_id in people[people >= 2].index
        if (answers.get(int(item_id)) or {}).get("source") == "human"
    }
    if not consolidated:
        return {}
    combined = consolidate_numbers(latest) if project.regression else consolidate(
        latest, reviewed_truth(db, project))
    methods = combined.set_index("item_id")["method"]
    out: dict[int, dict] = {}
    for item_id, rows in latest[latest["item_id"].isin(consolidated)].groupby("item_id"):
        workers = []
        for row in rows.sort_values("id").to_dict("records"):
            worker: dict = {"worker-id": row["user"]}
            if project.multi_label:
                worker["class-names"] = list(row["labels"])
            elif project.regression:
                worker["value"] = float(row["labels"][0])
            else:
                worker["class-name"] = row["labels"][0]
            worker["creation-date"] = row["created_at"]
            workers.append(worker)
        extra: dict = {"worker-answers": workers}
        method = methods.get(item_id)
        if isinstance(method, str):
            extra["consolidation-method"] = method
        out[int(item_id)] = extra
    return out


def manifest_lines(db: sqlite_utils.Database, project: Project) -> Iterator[dict]:
    """One Ground Truth manifest object per labeled item, in item order."""
    kind = task_type(project)
    labeled = list(_labeled(db, project))
    workers = _worker_answers(db, project, {item.id: answer for item, answer in labeled})
    for item, answer in labeled:
        if answer is None:
            continue
        ref_name, ref = _source_of(db, project, item)
        labels = list(answer["labels"])
        indices = [project.classes.index(c) for c in labels if c in project.classes]
        confidence = _confidence(answer)
        metadata: dict = {
            "confidence": confidence,
            "human-annotated": "yes" if answer["source"] in CURATED_SOURCES else "no",
            "type": kind,
            "job-name": f"labeling-job/{project.name}",
            "creation-date": answer["created_at"],
            "groundwork-source": answer["source"],
            "groundwork-user": answer["user"],
        }
        if project.regression:  # the number itself: there is no class index
            value: float | int | list[int] = float(labels[0])
        elif project.multi_label:
            value = indices
            metadata["class-map"] = {str(i): project.classes[i] for i in indices}
            metadata["confidence-map"] = {str(i): confidence for i in indices}
        else:
            value = indices[0]
            metadata["class-name"] = labels[0]
        metadata.update(workers.get(item.id, {}))
        yield {ref_name: ref, project.name: value, f"{project.name}-metadata": metadata,
               "key": item.key}


def csv_rows(db: sqlite_utils.Database, project: Project) -> Iterator[list[str]]:
    """Every item, labeled or not: key, label(s), where the label came from, confidence."""
    for item, answer in _labeled(db, project):
        if answer is None:
            yield [neutralise(item.key), "", "", ""]
            continue
        confidence = _confidence(answer)
        yield [
            neutralise(item.key),
            neutralise(",".join(answer["labels"])),
            answer["source"],
            "" if confidence is None else f"{confidence:.6g}",
        ]


def jsonl_lines(db: sqlite_utils.Database, project: Project) -> Iterator[dict]:
    """Every item with its content and its current answer (if any), for scripts."""
    for item, answer in _labeled(db, project):
        ref_name, ref = _source_of(db, project, item)
        yield {
            "id": item.id,
            "key": item.key,
            ref_name: ref,
            "metadata": item.metadata,
            "labels": list(answer["labels"]) if answer else None,
            "source": answer["source"] if answer else None,
            "user": answer["user"] if answer else None,
            "confidence": _confidence(answer) if answer else None,
            "created_at": answer["created_at"] if answer else None,
        }


def export_project(db: sqlite_utils.Database, project: Project, fmt: str, out: str | Path,
                   *, user: str | None = None) -> int:
    """Write the export next to `out` and rename it into place; return the number of rows.

    The rename means a reader never sees half a file and a failed export
    leaves any earlier file at `out` untouched.
    """
    if fmt not in FORMATS:
        raise GroundworkError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    out = Path(out)
    if not out.parent.exists():
        raise GroundworkError(f"folder {str(out.parent)!r} does not exist: create it first")
    if out.is_dir():
        raise GroundworkError(f"{str(out)!r} is a folder: give a file name")
    buffer = io.StringIO()
    count = 0
    if fmt == "csv":
        writer = csv.writer(buffer)
        writer.writerow(["key", "label", "source", "confidence"])
        for row in csv_rows(db, project):
            writer.writerow(row)
            count += 1
    else:
        lines = manifest_lines(db, project) if fmt == "manifest" else jsonl_lines(db, project)
        for line in lines:
            buffer.write(json.dumps(line, ensure_ascii=False) + "\n")
            count += 1
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(buffer.getvalue(), encoding="utf-8", newline="")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    from labeling.users import record_event  # who exported what, and when (audit log)
    with db.atomic():
        record_event(db, user, "export", project, out.name, format=fmt, rows=count)
    return count
