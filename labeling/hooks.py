"""Hooks: let the layers above labeling react to saved answers without labeling importing them.

The dependency rule runs review -> automl -> labeling, yet the background
refit (automl) must start when a person's answers (labeling) pile up. The
app registers `automl.refit.maybe_refit` here once; the Label page fires
`answers_saved` after each answer. Registering the same function twice is a
no-op, so a router that runs on every page view can register freely.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

from labeling.projects import Project

AnswerHook = Callable[[sqlite_utils.Database, Project], object]
_after_answers: list[AnswerHook] = []


def on_answers_saved(hook: AnswerHook) -> None:
    if hook not in _after_answers:
        _after_answers.append(hook)


def answers_saved(db: sqlite_utils.Database, project: Project) -> None:
    """Run every registered hook; a hook's failure never loses or blocks the answer."""
    for hook in list(_after_answers):
        try:
            hook(db, project)
        except Exception:  # noqa: BLE001,S110 - the answer is already saved; the hook is best effort
            pass
