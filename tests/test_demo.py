"""The demo project a first `make run` seeds: real digits, gold hidden, seeded once."""

from __future__ import annotations

from labeling.demo import DEMO_PROJECT, seed_demo
from labeling.projects import get_project, project_counts
from labeling.queue import next_items


def test_demo_is_seeded_once_with_hidden_gold(db):
    assert seed_demo(db, limit=60) == DEMO_PROJECT
    project = get_project(db, DEMO_PROJECT)
    assert project.modality == "image" and project.classes == [str(d) for d in range(10)]
    counts = project_counts(db, project)
    assert counts == {"items": 60, "labeled": 0, "with_gold": 60}
    assert "1..9" in project.instructions
    assert len(next_items(db, project, n=5)) == 5
    # a user who deletes the demo is not overruled on the next start
    with db.atomic():
        db["projects"].delete(project.id)
    seed_demo(db, limit=60)
    assert db["projects"].count == 0
