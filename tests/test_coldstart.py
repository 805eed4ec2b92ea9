"""Cold start: a diverse k-means seed goes first in the queue before any label exists."""

from __future__ import annotations

import json

from automl.coldstart import seed_new_projects, seed_queue
from automl.training import train_project
from labeling.importers import import_source
from labeling.projects import get_project
from labeling.queue import next_items
from tests.conftest import write_digits_folder
from tests.test_cli import Run


def test_the_first_items_served_span_the_classes(db, tmp_path):
    folder = write_digits_folder(tmp_path / "d", per_class=20, classes=tuple(range(10)))
    import_source(db, "digits", folder, "image", folders_as="gold")
    project = get_project(db, "digits")
    assert seed_new_projects(db) == ["digits"]
    assert seed_new_projects(db) == []  # once per project
    first = next_items(db, project, n=30)
    gold = {r[0]: json.loads(r[1])[0] for r in db.execute("SELECT id, gold FROM items")}
    assert len({gold[i["id"]] for i in first}) >= 9  # 30 seeds cover the ten digits
    ranks = [r[0] for r in db.execute("SELECT rank FROM items ORDER BY rank LIMIT 30")]
    assert max(ranks) < 0 <= min(r[0] for r in db.execute(
        "SELECT rank FROM items ORDER BY rank LIMIT -1 OFFSET 30"))


def test_no_seed_once_a_model_chooses(db, wine_csv):
    import_source(db, "wine", wine_csv, "tabular", label_column="cultivar")
    project = get_project(db, "wine")
    train_project(db, project, budget=2)
    assert seed_queue(db, project) == []


def test_cli_import_seeds_the_queue(data_dir, capsys, digits_folder):
    gw = Run(data_dir, capsys)
    assert gw.json("import", "d", digits_folder, "--modality", "image",
                   "--folders-as", "gold")["seeded"] is True
    assert "seeded" not in gw.json("import", "e", digits_folder, "--modality", "image",
                                   "--folders-as", "gold", "--no-seed")
    from labeling.store import connect

    assert seed_new_projects(connect(data_dir)) == []  # --no-seed is remembered
