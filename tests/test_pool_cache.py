"""The quick features file: built once, reused by later refits, kept up to date, never trusted
blindly (real SpamAssassin emails in a real store)."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from automl.pool_cache import (
    REBUILD_SHARE,
    PoolCacheError,
    cache_path,
    drop_pool_features,
    load_featurizer,
    pool_features,
    settings_key,
)
from automl.refit import refit
from automl.training import training_set
from labeling.annotations import record_annotation
from labeling.importers import import_source
from labeling.items import add_items
from labeling.projects import get_project
from labeling.queue import next_items, uncertainty_scores
from labeling.store import connect, get_setting, set_setting

SPAM = Path(__file__).resolve().parent / "data" / "spam.csv"


@pytest.fixture(scope="module")
def emails() -> pd.DataFrame:
    return pd.read_csv(SPAM).sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture
def mail(db, tmp_path, emails):
    """80 of the 120 emails imported with their class as gold, 30 of them labeled."""
    path = tmp_path / "mail.csv"
    emails.iloc[:80].to_csv(path, index=False)
    import_source(db, "mail", path, "text", gold_column="label")
    project = get_project(db, "mail")
    for item in next_items(db, project, n=30, user="ann"):
        gold = json.loads(db.execute("SELECT gold FROM items WHERE id = ?",
                                     [item["id"]]).fetchone()[0])
        record_annotation(db, project, item["id"], gold, user="ann")
    return project


def add_emails(db, project, frame: pd.DataFrame) -> list[int]:
    """A later import of more emails (one transaction, as an import does)."""
    with db.atomic():
        add_items(db, project, [{"key": f"late-{i}", "content": text, "sha256": f"late-{i}"}
                                for i, text in frame["text"].items()])
    return [r[0] for r in db.execute("SELECT id FROM items WHERE key LIKE 'late-%' ORDER BY id")]


def all_texts(db, project) -> tuple[list[int], list[str]]:
    rows = db.execute("SELECT id, content FROM items WHERE project_id = ? ORDER BY id",
                      [project.id]).fetchall()
    return [r[0] for r in rows], [r[1] for r in rows]


def stored_scores(db, project) -> dict[int, tuple[str, float]]:
    return {r[0]: (json.loads(r[1])[0], r[2]) for r in db.execute(
        "SELECT item_id, predicted, confidence FROM queue_scores WHERE project_id = ?",
        [project.id])}


def test_second_refit_reuses_the_rows_and_scores_as_a_fresh_transform_would(db, mail):
    first = refit(db, mail)
    assert first["features"] == {"transformed": 80, "rebuilt": True, "rows": 80}
    path = cache_path(db, mail)
    before = os.stat(path)

    second = refit(db, mail)
    assert second["features"] == {"transformed": 0, "rebuilt": False, "rows": 80}
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # untouched

    # The cached rows are scikit-learn's own transform with the kept featurizer ...
    featurizer = load_featurizer(db, mail)
    ids, texts = all_texts(db, mail)
    fresh = featurizer.transform(texts)
    cached = pool_features(db, mail).rows(ids)
    assert cached.shape == fresh.shape and abs(cached - fresh).max() < 1e-6

    # ... and the stored queue scores are those of a model fitted on fresh rows.
    data = training_set(db, mail)
    row_of = {item_id: i for i, item_id in enumerate(ids)}
    train = [row_of[i] for i, held in zip(data.item_ids, data.holdout, strict=True) if not held]
    answers = [a[0] for a, held in zip(data.labels, data.holdout, strict=True) if not held]
    model = LogisticRegression(max_iter=1000).fit(fresh[train], answers)
    scores = stored_scores(db, mail)
    pool = sorted(scores)
    proba = model.predict_proba(fresh[[row_of[i] for i in pool]])
    confidence = uncertainty_scores(proba)["confidence"]
    assert [scores[i][0] for i in pool] == list(model.classes_[proba.argmax(axis=1)])
    assert np.allclose([scores[i][1] for i in pool], confidence, atol=1e-5)


def test_a_small_import_is_transformed_and_appended_a_large_one_refits(db, mail, emails):
    refit(db, mail)
    sha = json.loads(get_setting(db, settings_key(mail)))["featurizer_sha256"]

    new_ids = add_emails(db, mail, emails.iloc[80:90])  # 10 of 90: a small import
    assert len(new_ids) / 90 <= REBUILD_SHARE
    result = refit(db, mail)
    assert result["features"] == {"transformed": 10, "rebuilt": False, "rows": 90}
    assert set(new_ids) <= set(stored_scores(db, mail))  # the new emails are scored
    assert json.loads(get_setting(db, settings_key(mail)))["featurizer_sha256"] == sha
    featurizer = load_featurizer(db, mail)
    fresh = featurizer.transform(emails["text"].iloc[80:90].tolist())
    assert abs(pool_features(db, mail).rows(new_ids) - fresh).max() < 1e-6

    more = add_emails(db, mail, emails.iloc[90:])  # 30 of 120: the featurizer is fitted again
    assert len(more) / 120 > REBUILD_SHARE
    result = refit(db, mail)
    assert result["features"] == {"transformed": 120, "rebuilt": True, "rows": 120}
    assert json.loads(get_setting(db, settings_key(mail)))["featurizer_sha256"] != sha
    ids, texts = all_texts(db, mail)
    rows = pool_features(db, mail).rows(ids)
    assert abs(rows - load_featurizer(db, mail).transform(texts)).max() < 1e-6


def test_a_file_the_store_did_not_record_is_never_unpickled_but_rebuilt(db, mail):
    refit(db, mail)
    key = settings_key(mail)
    record = json.loads(get_setting(db, key))
    set_setting(db, key, json.dumps({**record, "featurizer_sha256": "0" * 64}))
    with pytest.raises(PoolCacheError, match="not the features file"):
        load_featurizer(db, mail)
    assert refit(db, mail)["features"]["rebuilt"]

    path = cache_path(db, mail)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # torn
    with pytest.raises(PoolCacheError):
        load_featurizer(db, mail)
    assert refit(db, mail)["features"]["rebuilt"]
    assert pool_features(db, mail).transformed == 0  # and good again afterwards

    drop_pool_features(db, mail)
    assert not path.exists()
    assert refit(db, mail)["features"]["rebuilt"]


def test_a_table_project_reuses_its_rows_too(db, wine_csv):
    import_source(db, "wine", wine_csv, "tabular", gold_column="cultivar")
    project = get_project(db, "wine")
    for item in next_items(db, project, n=40, user="ann"):
        gold = json.loads(db.execute("SELECT gold FROM items WHERE id = ?",
                                     [item["id"]]).fetchone()[0])
        record_annotation(db, project, item["id"], gold, user="ann")
    first, second = refit(db, project), refit(db, project)
    assert first["features"]["rebuilt"] and second["features"]["transformed"] == 0
    assert second["accuracy"] == first["accuracy"] and second["scored"] == first["scored"]


def _build(data_dir: str, project_id: int) -> tuple[int, bool]:
    db = connect(Path(data_dir))
    try:
        features = pool_features(db, get_project(db, project_id))
        return features.transformed, features.rebuilt
    finally:
        db.conn.close()


def test_two_refits_at_once_build_the_file_once(db, mail, data_dir):
    with multiprocessing.get_context("spawn").Pool(2) as workers:
        results = workers.starmap(_build, [(str(data_dir), mail.id)] * 2)
    assert sorted(results) == [(0, False), (80, True)]  # the second waited, then reused it
    ids, texts = all_texts(db, mail)
    assert abs(pool_features(db, mail).rows(ids)
               - load_featurizer(db, mail).transform(texts)).max() < 1e-6
