"""The validation split: which labeled items a model never trains on.

One rule for everybody: training holds these items out to measure a model,
automated labeling uses the model's predictions on them to choose its
threshold, and review measures accuracy on them. A hash of the project and
the item key decides, so the split is random with respect to the data but the
same from one run to the next (a retrain is compared on the same items).
"""

from __future__ import annotations

import hashlib

HOLDOUT_SHARE = 0.2
HOLDOUT_SOURCES = ("human", "review")


def in_holdout(project_id: int, key: str, share: float = HOLDOUT_SHARE) -> bool:
    digest = hashlib.sha256(f"{project_id}:{key}".encode()).hexdigest()
    return int(digest[:8], 16) / 0xFFFFFFFF < share
