"""Labeling: the store, projects, items, importers, annotations, the queue, export.

The foundation of Groundwork; it imports nothing from `automl` or `review`.
"""

from labeling.errors import GroundworkError
from labeling.store import connect

__all__ = ["GroundworkError", "connect"]
