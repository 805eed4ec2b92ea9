"""The quick features' faster text transform gives scikit-learn's own matrix, exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion

from automl.features import text_features
from automl.pool_cache import _transform

SPAM = Path(__file__).resolve().parent / "data" / "spam.csv"

ODD = ["", "a", "I  İstanbul  ÆØÅ naïve café\t\ttabs\nnew\u00a0nbsp", "x y", "hello hello world",
       "ab ab ab ab", "e-mail: some.one@example.com 42 4 2", "Über ÜBER über straße STRASSE"]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return pd.read_csv(SPAM)["text"].astype(str).tolist()


def _same(a, b) -> None:
    assert a.shape == b.shape
    assert a.nnz == b.nnz
    assert abs(a - b).max() < 1e-12 if a.nnz else True


def test_text_features_match_scikit_learn(texts):
    features = text_features().fit(texts[:60])  # later texts hold n-grams it never saw
    pool = texts + ODD
    _same(features.transform(pool), _transform(features, pool))


def test_word_unigrams_alone_and_other_steps_fall_back(texts):
    union = FeatureUnion([("w", TfidfVectorizer(sublinear_tf=False, norm="l1"))]).fit(texts)
    _same(union.transform(texts + ODD), _transform(union, texts + ODD))
    custom = FeatureUnion([("c", TfidfVectorizer(analyzer="char", ngram_range=(1, 3)))])
    custom.fit(texts)
    _same(custom.transform(texts), _transform(custom, texts))  # not a fast path: unchanged
    table = pd.DataFrame({"x": np.arange(3.0)})
    assert _transform(type("Steps", (), {"transform": lambda self, X: X})(), table) is table
