"""Batch prediction: the promoted model on a new file, written as a CSV scripts can rely on.

Columns (a contract): `key, predicted_label, confidence, p_<class>` with one
probability column per project class, in the project's class order. A
regression project's file has `key, predicted_label, predicted_value,
interval_low, interval_high`: the number (as text and as a number) and its
split-conformal prediction interval (`automl.residuals`; empty when the model
had too small a holdout to measure one). Keys are
the same as an import of that file would give (row number, relative path or
manifest value), so predictions can be joined back to the source.
Keys and labels that a spreadsheet would run as a formula get a leading `'`
(`labeling.export.neutralise`).
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import sqlite_utils

from automl.registry import load_model, promoted_model
from labeling.errors import GroundworkError
from labeling.export import neutralise
from labeling.importers import read_prediction_input
from labeling.projects import Project
from labeling.queue import uncertainty_scores
from labeling.targets import number_label


def predict_file(
    db: sqlite_utils.Database,
    project: Project,
    source: str | Path,
    out: str | Path,
    *,
    text_column: str | None = None,
    image_column: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk: int = 2000,
) -> int:
    """Predict every readable row or image of `source`; return the number of rows written.

    Rows are predicted `chunk` at a time and `progress(done, total)` is told
    after each, so a large file shows a moving bar instead of a silent wait.
    """
    row = promoted_model(db, project)
    if row is None:
        raise GroundworkError(
            f"no promoted model for project {project.name!r}: train one first "
            f"(`groundwork train {project.name}`)"
        )
    out = Path(out)
    if not out.parent.exists():
        raise GroundworkError(f"folder {str(out.parent)!r} does not exist: create it first")
    model = load_model(db, row)
    with tempfile.TemporaryDirectory() as work:
        keys, X = read_prediction_input(source, project.modality, text_column=text_column,
                                        image_column=image_column, workdir=work)
        parts = []
        for start in range(0, len(keys), chunk):
            part = X.iloc[start:start + chunk] if hasattr(X, "iloc") else X[start:start + chunk]
            parts.append(np.asarray(model.predict_values(part) if model.regression
                                    else model.predict_proba(part), dtype=float))
            if progress is not None:
                progress(min(start + chunk, len(keys)), len(keys))
    if model.regression:
        values = np.concatenate(parts) if parts else np.zeros(0)
        return _write_rows(out, ["key", "predicted_label", "predicted_value", "interval_low",
                                 "interval_high"],
                           ([neutralise(key), number_label(v), f"{v:.6g}",
                             *_interval(v, model.interval)]
                            for key, v in zip(keys, values, strict=True)), len(keys))
    proba = np.vstack(parts) if parts else np.zeros((0, len(model.classes)))
    if model.multi_label:
        predicted = [",".join(c for c, p in zip(model.classes, r, strict=True) if p >= 0.5)
                     for r in proba]
        confidence = (np.abs(proba - 0.5) * 2).min(axis=1) if len(proba) else np.zeros(0)
    else:
        predicted = [model.classes[int(i)] for i in proba.argmax(axis=1)]
        confidence = uncertainty_scores(proba)["confidence"] if len(proba) else np.zeros(0)
    return _write_rows(out, ["key", "predicted_label", "confidence",
                             *[f"p_{c}" for c in model.classes]],
                       ([neutralise(key), neutralise(label), f"{conf:.6f}",
                         *[f"{p:.6f}" for p in probs]]
                        for key, label, conf, probs in zip(keys, predicted, confidence, proba,
                                                           strict=True)), len(keys))


def _interval(value: float, half: float | None) -> list[str]:
    return ["", ""] if half is None else [f"{value - half:.6g}", f"{value + half:.6g}"]


def _write_rows(out: Path, header: list[str], rows: Iterable[list[str]], n: int) -> int:
    """Write the CSV next to `out` and move it into place: a reader never sees half a file."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return n
