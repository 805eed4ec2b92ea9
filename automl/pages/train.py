"""Train page: start a background run and watch it, then inspect, compare, promote or roll back."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from automl.compare import compare_versions
from automl.embeddings import INSTALL_HINT as EMBEDDINGS_HINT
from automl.embeddings import available as embeddings_available
from automl.jobs import cancel_job, latest_job, reap_stale_jobs, start_training
from automl.metrics import DEFAULT as METRIC
from automl.metrics import label as metric_label
from automl.registry import list_models, promote, rollback
from automl.search import families
from automl.snapshots import list_snapshots
from automl.training import study_trials, training_report
from automl.views import (
    confusion_frame,
    family_summary,
    importance_frame,
    leaderboard_frame,
    optimisation_history,
)
from labeling.errors import GroundworkError
from labeling.pages.common import current_account, current_project, current_user, get_db, require

db = get_db()
project = current_project(db)
st.title(f"Train · {project.name}")
st.caption(
    "Trains on curated labels (human, imported, reviewed; never auto-labels unless you opt in) "
    "with an Optuna search over scikit-learn pipelines. The holdout score is the objective "
    "metric (balanced accuracy unless you choose another) on labels people gave that the "
    "search never saw (imported labels when a project has "
    "fewer than ten of its own)."
)

models = list_models(db, project)


@st.cache_data(ttl=30, show_spinner="Checking the training data...")
def _report(data_dir: str, project_id: int, include_auto: bool, labels: int) -> dict | None:
    """Cached per store, project and label count: a new label refreshes it."""
    try:
        return training_report(db, project, include_auto=include_auto)
    except GroundworkError as exc:
        return {"error": str(exc)}


def data_report_panel(include_auto: bool) -> dict | None:
    labels = db.execute("SELECT count(*) FROM annotations WHERE project_id = ?",
                        [project.id]).fetchone()[0]
    report = _report(str(db.data_dir), project.id, include_auto, labels)
    if report is None:
        return None
    if "error" in report:
        st.warning(report["error"])
        return None
    levels = [f["level"] for f in report["findings"]]
    title = (f"Data report: {report['n']} labels, {report['problem_type']}, objective "
             f"{report['metric'].replace('_', ' ')} · {levels.count('blocking')} blocking, "
             f"{levels.count('warning')} warnings")
    with st.expander(title, expanded=report["blocking"]):
        if report.get("target"):
            t = report["target"]
            st.caption(f"Target: {report['n']} numbers from {t['min']:.4g} to {t['max']:.4g}, "
                       f"mean {t['mean']:.4g}, median {t['median']:.4g}, std {t['std']:.4g}, "
                       f"{t['distinct']} distinct values")
        if report["class_counts"]:
            counts = pd.DataFrame(sorted(report["class_counts"].items(), key=lambda kv: -kv[1]),
                                  columns=["class", "labels"])
            st.bar_chart(counts, x="class", y="labels", horizontal=True, height=min(
                60 + 28 * len(counts), 320))
        show = {"blocking": st.error, "warning": st.warning, "info": st.info}
        for finding in report["findings"]:
            show[finding["level"]](f"**{finding['check'].replace('_', ' ')}**: "
                                   f"{finding['message']}")
        if not report["findings"]:
            st.success("No problems found in the training data.")
    return report


budget = st.number_input("Search time budget (seconds)", min_value=5, max_value=3600, value=30)
include_auto = st.checkbox(
    "Also train on machine (auto) labels", value=False, key="include-auto",
    help="Off by default: machine labels can reinforce the model's own mistakes. "
    "They are never used to measure a model.",
)
ensemble = st.checkbox(
    "Try an ensemble of the best model families", value=False, key="ensemble",
    help="Soft voting over the best trial of each of the top three families, kept only if it "
    "beats the best single model on the holdout.")
all_families = families(project.modality, project.regression)
chosen_families = st.multiselect(
    "Model families", all_families, default=all_families, key="families",
    format_func=lambda f: f.replace("_", " "),
    help="The search tries only these (like Autopilot's algorithm selection): keep a "
    "linear model only, for instance, when it must be explained or be fast.")
embeddings = False
if project.modality == "text":
    ready = embeddings_available()
    embeddings = st.checkbox(
        "Add sentence embeddings (all-MiniLM-L6-v2)", value=False, key="embeddings",
        disabled=not ready,
        help="Meaning, not just words: texts that say the same thing in other words land "
        "close together, which helps most with few labels. Slower to train and predict. "
        + ("" if ready else f"Not installed here: {EMBEDDINGS_HINT}."))
report = data_report_panel(include_auto)
metric = None
if report is not None:
    choices = report["metrics"]
    metric = st.selectbox(
        "Objective metric", choices, index=choices.index(report["metric"]), key="metric",
        format_func=lambda m: f"{metric_label(m)} ({m})",
        help="What the search optimises and what the holdout and promotion are judged by; "
        "remembered for the next runs. Balanced accuracy is the default for classes because "
        "a model that always answers the majority class scores 1/k on it, however "
        "imbalanced the labels.")
label = "Retrain from corrected labels" if models else "Train model"
if st.button(label, key="train", type="primary"):
    try:
        require(current_account(db), "train", project)  # roles (issue 6)
        if not chosen_families:
            raise GroundworkError("no model family chosen: pick at least one under "
                                  "Model families")
        start_training(db, project, budget=float(budget), include_auto=include_auto,
                       ensemble=ensemble, metric=metric, embeddings=embeddings,
                       model_families=chosen_families
                       if set(chosen_families) != set(all_families) else None)
        _report.clear()  # the remembered metric changes the report's default
    except GroundworkError as exc:
        st.error(str(exc))


def _json(value) -> dict:
    if isinstance(value, str):
        return json.loads(value or "{}")
    return value or {}


def regression_holdout(explanation: dict) -> None:
    """A regression model on its holdout: R², MAE, RMSE with intervals, the prediction
    interval, predicted against actual, and what the model leans on."""
    hm = explanation.get("holdout_metrics") or {}
    cols = st.columns(3)
    for col, key, name in ((cols[0], "r2", "R²"), (cols[1], "mae", "Mean absolute error"),
                           (cols[2], "rmse", "Root mean squared error")):
        if hm.get(key):
            v = hm[key]
            col.metric(name, f"{v['value']:.4g}")
            col.caption(f"95% interval {v['low']:.4g} – {v['high']:.4g}")
    st.caption(hm.get("how") or "")
    interval = explanation.get("interval") or {}
    if interval.get("half_width") is not None:
        st.markdown(f"**Prediction interval**: prediction ± {interval['half_width']:.4g} "
                    f"({interval['coverage']:.0%}, split conformal)")
        st.caption(interval.get("how", ""))
    points = (explanation.get("residuals") or {}).get("points") or []
    if points:
        st.markdown("**Predicted against actual** (holdout; on the diagonal is right)")
        st.scatter_chart(pd.DataFrame(points), x="actual", y="predicted")
    imp = explanation.get("importance") or {}
    if imp.get("features"):
        st.markdown("**Permutation importance** (drop in R² when a column is shuffled)")
        st.bar_chart(pd.DataFrame(imp["features"]).head(20), x="feature", y="mean",
                     horizontal=True)
        st.caption(imp.get("how", ""))
    for problem in (explanation.get("reasons") or []) + (explanation.get("errors") or []):
        st.caption(f"Note: {problem}")


@st.fragment(run_every=1.0)
def job_status() -> None:
    """The latest run, read from the store: a reload or another tab sees the same progress."""
    reap_stale_jobs(db)
    job = latest_job(db, project)
    if job is None:
        st.caption("No training run yet.")
        return
    status = job["status"]
    progress = _json(job.get("progress"))
    if status in ("queued", "running"):
        elapsed = float(progress.get("elapsed") or 0.0)
        total = float(progress.get("budget") or _json(job.get("params")).get("budget") or 1.0)
        best = progress.get("best")
        st.progress(
            min(elapsed / total, 1.0),
            text=f"Training job {job['id']} {status}: {progress.get('trials', 0)} trials done, "
            f"best CV {'-' if best is None else f'{best:.3f}'}, "
            f"{max(total - elapsed, 0):.0f} s left",
        )
        if st.button("Cancel training", key="cancel"):
            require(current_account(db), "train", project)  # roles (issue 6)
            cancel_job(db, job["id"])
        if progress.get("study"):
            board = leaderboard_frame(study_trials(db, project, progress["study"]))
            if not board.empty:
                st.dataframe(board.head(10), hide_index=True, width="stretch",
                             key="live-leaderboard")
    elif status == "succeeded":
        result = _json(job.get("result"))
        st.success(
            f"Training job {job['id']} finished: model v{result.get('model_version')} "
            f"({'promoted' if result.get('promoted') else 'kept as candidate'}), "
            f"{result.get('trials')} trials in {result.get('seconds')} s."
        )
    else:
        st.warning(f"Training job {job['id']} {status}: {job.get('error') or ''}. "
                   "The promoted model is unchanged.")
    if st.session_state.get("last_job_status") != (job["id"], status):
        if st.session_state.get("last_job_status") is not None and status == "succeeded":
            st.session_state["last_job_status"] = (job["id"], status)
            st.rerun()
        st.session_state["last_job_status"] = (job["id"], status)


job_status()

st.subheader("Model versions")
if not models:
    st.info("No model yet. Label a few items of at least two classes, then train.")
    st.stop()

snapshot_version = {s["id"]: s["version"] for s in list_snapshots(db, project)}
table = pd.DataFrame([
    {
        "version": m["version"],
        "status": m["status"],
        "model": m["estimator"],
        "CV balanced acc.": m["cv_score"],
        "holdout balanced acc.": m["holdout_score"],
        "holdout labels": m["holdout_size"],
        "train labels": m["train_size"],
        "training set": snapshot_version.get(m.get("training_set_id")),
        "trials": m["metrics"].get("trials"),
        "created": m["created_at"],
    }
    for m in models
])
st.dataframe(table, hide_index=True, width="stretch", key="models-table")

versions = [m["version"] for m in models]
promoted = next((m for m in models if m["status"] == "promoted"), None)
default = versions.index(promoted["version"]) if promoted else 0
with st.container(horizontal=True, vertical_alignment="bottom"):
    chosen = st.selectbox("Version", versions, index=default, format_func=lambda v: f"v{v}")
    if st.button("Promote this version", key="promote"):
        try:
            require(current_account(db), "promote", project)  # roles (issue 6)
            promote(db, project, int(chosen), user=current_user())
            st.rerun()
        except GroundworkError as exc:
            st.error(str(exc))
    if st.button("Roll back", key="rollback",
                 help="Promote again the version that was promoted before the current one"):
        try:
            require(current_account(db), "promote", project)  # roles (issue 6)
            back = rollback(db, project, user=current_user())
            st.session_state["train-message"] = f"Rolled back to v{back['version']}."
            st.rerun()
        except GroundworkError as exc:
            st.error(str(exc))
if message := st.session_state.pop("train-message", None):
    st.success(message)

model = next(m for m in models if m["version"] == chosen)
metrics = model["metrics"]
if how := metrics.get("how_measured"):
    features = f" Features: {metrics['features']}." if metrics.get("features") else ""
    st.caption(f"v{model['version']}: {how}.{features}")

search_tab, holdout_tab, details_tab, compare_tab = st.tabs(
    ["Search", "Holdout", "Details", "Compare"])

with search_tab:
    rows = metrics.get("leaderboard") or []
    if not rows:
        st.caption("This version was trained before leaderboards were recorded.")
    else:
        done = sum(r["state"] == "complete" for r in rows)
        st.markdown(f"**Leaderboard**: {len(rows)} trials, {done} completed, "
                    f"{metrics.get('trials_pruned', 0)} pruned, in "
                    f"{metrics.get('search_seconds')} s of a {metrics.get('budget')} s budget "
                    f"(refit {metrics.get('refit_seconds')} s; workers: "
                    f"{', '.join(metrics.get('workers') or ['main'])}).")
        st.dataframe(leaderboard_frame(rows), hide_index=True, width="stretch",
                     key="leaderboard")
        history = optimisation_history(rows)
        left, right = st.columns(2)
        with left:
            st.markdown("**Optimisation history**")
            st.line_chart(history, x="trial", y=["CV score", "best so far"],
                          y_label="CV " + metric_label(metrics.get("metric") or METRIC))
        with right:
            st.markdown("**Model families**")
            st.dataframe(family_summary(rows), hide_index=True, width="stretch")
        importances = importance_frame(metrics.get("param_importances") or {})
        if not importances.empty:
            family = metrics["param_importances"]["within_best_family"]["model"]
            st.markdown(f"**Parameter importances** (within {family}, Optuna's fANOVA-style "
                        "evaluator over its completed trials)")
            st.bar_chart(importances, x="parameter", y="importance", horizontal=True)
        elif rows:
            st.caption("Parameter importances need at least five completed trials of the best "
                       "family.")

with holdout_tab:
    explanation = metrics.get("explanation") or {}
    if model["holdout_score"] is None:
        st.info("No holdout: every label was needed for training (fewer than ten people's "
                "labels, or a class missing outside the holdout).")
    elif explanation.get("regression"):
        regression_holdout(explanation)
    else:
        hm = explanation.get("holdout_metrics") or {}
        cols = st.columns(3)
        for col, key, name in ((cols[0], "balanced_accuracy", "Balanced accuracy"),
                               (cols[1], "accuracy", "Accuracy"),
                               (cols[2], "subset_accuracy", "Subset accuracy")):
            if hm.get(key):
                v = hm[key]
                col.metric(name, f"{v['value']:.3f}",
                           help=f"95% interval {v['low']:.3f} – {v['high']:.3f}")
                col.caption(f"95% interval {v['low']:.3f} – {v['high']:.3f}")
        objective = model.get("metric_name") or "balanced_accuracy"
        if model.get("holdout_score") is not None and (objective != "balanced_accuracy"
                                                       or not hm):
            st.metric(f"Holdout {metric_label(objective)} (the objective)",
                      f"{model['holdout_score']:.3f}")
        st.caption(hm.get("how") or f"on {model['holdout_size']} held-out labels")
        confusion = confusion_frame(metrics.get("confusion_matrix"))
        if not confusion.empty:
            st.markdown("**Confusion matrix** (rows: true class; columns: predicted)")
            st.dataframe(confusion, width="stretch")
        rows = (explanation.get("per_class") or {}).get("rows")
        if rows:
            st.markdown("**Per class**")
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        calib = explanation.get("calibration") or {}
        bins = [b for b in calib.get("bins") or [] if b.get("count")]
        if bins:
            st.markdown(f"**Calibration** (expected calibration error {calib.get('ece', 0):.3f})")
            frame = pd.DataFrame(bins)
            frame["perfectly calibrated"] = frame["mean_confidence"]
            st.line_chart(frame, x="mean_confidence", y=["accuracy", "perfectly calibrated"],
                          x_label="confidence", y_label="accuracy on the holdout")
            st.caption(calib.get("how", ""))
        imp = explanation.get("importance") or {}
        if imp.get("kind") == "tabular" and imp.get("features"):
            st.markdown("**Permutation importance** (drop in balanced accuracy when a column "
                        "is shuffled)")
            st.bar_chart(pd.DataFrame(imp["features"]).head(20), x="feature", y="mean",
                         horizontal=True)
        elif imp.get("kind") == "image" and imp.get("grid"):
            st.markdown("**Which parts of the picture matter** (drop in balanced accuracy when "
                        "a region is shuffled between images)")
            cells = [{"row": r, "col": c, "drop": v} for r, line in enumerate(imp["grid"])
                     for c, v in enumerate(line)]
            st.vega_lite_chart(pd.DataFrame(cells), {
                "mark": "rect", "width": 240, "height": 240,
                "encoding": {"x": {"field": "col", "type": "ordinal", "axis": None},
                             "y": {"field": "row", "type": "ordinal", "axis": None},
                             "color": {"field": "drop", "type": "quantitative",
                                       "scale": {"scheme": "inferno"}}}})
        elif imp.get("kind") == "text" and imp.get("per_class"):
            st.markdown("**Top terms per class**")
            st.dataframe(pd.DataFrame({c: [t["term"] for t in terms[:15]] + [""] * (
                15 - len(terms[:15])) for c, terms in imp["per_class"].items()}),
                hide_index=True, width="stretch")
        if imp.get("how"):
            st.caption(imp["how"])
        for problem in (explanation.get("reasons") or []) + (explanation.get("errors") or []):
            st.caption(f"Note: {problem}")

with details_tab:
    st.markdown(f"**Model**: `{model['estimator']}` · status {model['status']}"
                + (f" (promoted {model['promoted_at']} by {model['promoted_by']})"
                   if model.get("promoted_by") else ""))
    st.json({"parameters": model["params"],
             "training set": snapshot_version.get(model.get("training_set_id")),
             "snapshot hash": model["snapshot_hash"],
             "artifact": model["artifact_path"],
             "artifact sha256": model["artifact_sha256"],
             "warm start from": metrics.get("warm_start"),
             "study": metrics.get("study"),
             "library versions": metrics.get("library_versions")}, expanded=True)

with compare_tab:
    others = [v for v in versions if v != chosen]
    if not others:
        st.caption("Train another version to compare two on the same holdout.")
    else:
        other = st.selectbox("Compare with", others, format_func=lambda v: f"v{v}",
                             key="compare-with")
        if st.button("Compare on today's holdout", key="compare"):
            try:
                require(current_account(db), "train", project)  # roles (issue 6)
                result = compare_versions(db, project, int(chosen), int(other))
                if project.regression:
                    st.dataframe(pd.DataFrame([
                        {"version": f"v{v['version']}", "model": v["estimator"], "R²": v["r2"],
                         "MAE": v["mae"], "RMSE": v["rmse"]} for v in result["versions"]]),
                        hide_index=True, width="stretch", key="compare-table")
                    st.caption(f"{result['how_measured']}. v{chosen} closer on "
                               f"{result['only_a_closer']} rows, v{other} on "
                               f"{result['only_b_closer']} (p = {result['p_value']}).")
                    st.stop()
                st.dataframe(pd.DataFrame([
                    {"version": f"v{v['version']}", "model": v["estimator"],
                     "balanced accuracy": v["balanced_accuracy"], "accuracy": v["accuracy"],
                     "95% interval": f"{v['accuracy_interval'][0]:.3f} – "
                                     f"{v['accuracy_interval'][1]:.3f}"}
                    for v in result["versions"]]), hide_index=True, width="stretch",
                    key="compare-table")
                st.caption(f"{result['how_measured']}. Only v{chosen} right on "
                           f"{result['only_a_right']}, only v{other} right on "
                           f"{result['only_b_right']} (p = {result['p_value']}).")
            except GroundworkError as exc:
                st.error(str(exc))
