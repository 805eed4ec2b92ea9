"""The quick rule: "confidence below T" on the promoted model's predictions, not saved.

The Review page's slider and `groundwork review open --below T` use it; the
same conditions saved with a name, reviewers and expiry are a workflow
(`review.workflows`). The rule is stored with every task it opens.
"""

from __future__ import annotations

import sqlite_utils

from labeling.projects import Project
from review.conditions import describe as describe_conditions
from review.conditions import validate
from review.workflows import open_tasks, preview


def validate_threshold(below: float) -> float:
    return validate({"confidence_below": below}, [])["confidence_below"]


def describe(rule: dict) -> str:
    return describe_conditions(rule)


def preview_review(db: sqlite_utils.Database, project: Project, below: float) -> int:
    """How many tasks `open_review` would open now, before anything is saved."""
    return preview(db, project, {"confidence_below": validate_threshold(below)})["would_open"]


def open_review(
    db: sqlite_utils.Database, project: Project, below: float, limit: int | None = None
) -> int:
    """Open a review task for each current prediction with confidence below `below`."""
    return open_tasks(db, project, {"confidence_below": validate_threshold(below)}, limit=limit)
