"""A trained model as saved: the pipeline plus what it needs to answer in project terms.

The pipeline's own class order is whatever scikit-learn sorted; the rest of
Groundwork (predictions table, exports, review) speaks in the project's class
order, and a class nobody has labeled yet must still get a column (with
probability 0). This wrapper does that mapping once, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from labeling.errors import GroundworkError
from labeling.targets import number_label


@dataclass
class TrainedModel:
    pipeline: Pipeline
    classes: list[str]  # the project's classes when trained: columns of predict_proba
    fitted_classes: list[str]  # the classes the pipeline saw, in its own order
    modality: str
    multi_label: bool
    columns: list[str] | None = None  # tabular: the feature columns, in order
    # Regression: the pipeline predicts numbers. `interval` is the half-width of a
    # split-conformal prediction interval from held-out absolute errors (covering
    # `interval_coverage` of new rows); None when there was no holdout to measure it on.
    regression: bool = False
    interval: float | None = None
    interval_coverage: float | None = None

    def prepare(self, X):  # noqa: N803 - scikit-learn's name for inputs
        """Tables: keep the training columns (extra ones, like a label column, are ignored)."""
        if self.columns is None:
            return X
        frame = pd.DataFrame(X)
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise GroundworkError(
                f"the input lacks the column(s) {', '.join(missing)} the model was trained on; "
                f"columns found: {', '.join(map(str, frame.columns))}"
            )
        return frame[self.columns]

    def predict_values(self, X) -> np.ndarray:  # noqa: N803
        """A regression model's predicted numbers."""
        if not self.regression:
            raise GroundworkError("this model predicts classes: use predict_proba")
        return np.asarray(self.pipeline.predict(self.prepare(X)), dtype=float).ravel()

    def predict_proba(self, X) -> np.ndarray:  # noqa: N803
        """Probabilities with one column per project class, in project order."""
        if self.regression:
            raise GroundworkError("a regression model predicts numbers, not class "
                                  "probabilities: use predict_values")
        raw = self.pipeline.predict_proba(self.prepare(X))
        if isinstance(raw, list):  # some multi-output estimators return one array per label
            raw = np.column_stack([r[:, 1] for r in raw])
        raw = np.asarray(raw, dtype=float)
        out = np.zeros((raw.shape[0], len(self.classes)))
        for j, name in enumerate(self.fitted_classes):
            if name in self.classes:
                out[:, self.classes.index(name)] = raw[:, j]
        if not self.multi_label:
            totals = out.sum(axis=1, keepdims=True)
            out = np.divide(out, totals, out=np.full_like(out, 1 / len(self.classes)),
                            where=totals > 0)
        return out

    def predict(self, X) -> list[list[str]]:  # noqa: N803
        if self.regression:
            return [[number_label(v)] for v in self.predict_values(X)]
        proba = self.predict_proba(X)
        if self.multi_label:
            return [[c for c, p in zip(self.classes, row, strict=True) if p >= 0.5]
                    for row in proba]
        return [[self.classes[int(i)]] for i in proba.argmax(axis=1)]
