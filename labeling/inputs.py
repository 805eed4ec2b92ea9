"""What a model sees for an item, per modality: the contract between store and models.

- text: a list of strings
- tabular: a DataFrame with the item's fields as columns (label/gold excluded)
- image: a list of absolute paths to the media files

Batch prediction on a new file (`labeling.importers.read_prediction_input`)
produces the same shapes, so one pipeline serves both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd
import sqlite_utils

from labeling.items import Item
from labeling.projects import Project
from labeling.store import data_dir_of


def model_input(
    db: sqlite_utils.Database, project: Project, items: Sequence[Item]
) -> list[str] | pd.DataFrame:
    if project.modality == "text":
        return [item.content or "" for item in items]
    if project.modality == "tabular":
        return pd.DataFrame([json.loads(item.content or "{}") for item in items])
    root = data_dir_of(db)
    return [str(root / item.media_path) for item in items if item.media_path]
