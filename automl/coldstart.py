"""Cold start: before any model exists, ask people first about items that cover the data.

The items nearest k-means centres over the project's features are moved to
the front of the queue (their `rank`), so the first labels span the data's
variety instead of whatever a random order or the file order offers. Big
projects are clustered on a random sample, which keeps this to seconds.
"""

from __future__ import annotations

import sqlite_utils

from automl.features import make_features
from labeling.inputs import model_input
from labeling.items import get_items
from labeling.projects import Project
from labeling.queue import promoted_model_id
from labeling.strategies import diverse_seed

SAMPLE = 5000


def seed_queue(
    db: sqlite_utils.Database, project: Project, n: int | None = None, *, seed: int = 0
) -> list[int]:
    """Put a diverse seed of unlabeled items first in the queue; return their ids in order."""
    if promoted_model_id(db, project) is not None:
        return []  # a model already chooses what to ask
    ids = [r[0] for r in db.execute(
        "SELECT id FROM items WHERE project_id = ? AND n_labels = 0 AND n_auto = 0 "
        "ORDER BY rank LIMIT ?", [project.id, SAMPLE])]
    if len(ids) < 3:
        return []
    n = min(n or max(3 * len(project.classes), 20), len(ids))
    items = get_items(db, project, ids)
    X = model_input(db, project, items)
    features = make_features(project.modality, X).fit_transform(X)
    picked = [items[i].id for i in diverse_seed(features, n, seed)]
    with db.atomic():
        for position, item_id in enumerate(picked):
            db.execute("UPDATE items SET rank = ? WHERE id = ?",
                       [-1.0 + position / len(picked), item_id])
    return picked


def seed_new_projects(db: sqlite_utils.Database) -> list[str]:
    """Seed each project's queue once, before its first label (the app calls this per run).

    A setting per project records that it was looked at, so this is one
    indexed lookup per project afterwards.
    """
    from labeling.projects import list_projects, project_counts
    from labeling.store import get_setting, set_setting

    seeded = []
    for project in list_projects(db):
        key = f"coldstart:{project.id}"
        if get_setting(db, key) is not None:
            continue
        if project_counts(db, project)["labeled"] == 0 and seed_queue(db, project):
            seeded.append(project.name)
        set_setting(db, key, "done")
    return seeded
