"""Train page: start a background training run, watch it, see and promote model versions."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from automl.jobs import cancel_job, latest_job, reap_stale_jobs, start_training
from automl.registry import list_models, promote
from labeling.errors import GroundworkError
from labeling.pages.common import current_project, get_db

db = get_db()
project = current_project(db)
st.title(f"Train · {project.name}")
st.caption(
    "Trains on curated labels (human, imported, reviewed; never auto-labels) with an Optuna "
    "search over scikit-learn pipelines. The holdout score is balanced accuracy on labels "
    "people gave that the search never saw (imported labels when a project has fewer than "
    "ten of its own)."
)

models = list_models(db, project)
budget = st.number_input("Search time budget (seconds)", min_value=5, max_value=3600, value=30)
include_auto = st.checkbox(
    "Also train on machine (auto) labels", value=False, key="include-auto",
    help="Off by default: machine labels can reinforce the model's own mistakes. "
    "They are never used to measure a model.",
)
label = "Retrain from corrected labels" if models else "Train model"
if st.button(label, key="train", type="primary"):
    try:
        start_training(db, project, budget=float(budget), include_auto=include_auto)
    except GroundworkError as exc:
        st.error(str(exc))


@st.fragment(run_every=1.0)
def job_status() -> None:
    reap_stale_jobs(db)
    job = latest_job(db, project)
    if job is None:
        st.caption("No training run yet.")
        return
    status = job["status"]
    progress = job.get("progress") or {}
    if isinstance(progress, str):
        progress = json.loads(progress or "{}")
    if status in ("queued", "running"):
        elapsed = float(progress.get("elapsed") or 0.0)
        total = float(progress.get("budget") or job.get("params", {}).get("budget") or 1.0)
        best = progress.get("best")
        st.progress(
            min(elapsed / total, 1.0),
            text=f"Training job {job['id']} {status}: {progress.get('trials', 0)} trials, "
            f"best CV {best if best is None else f'{best:.3f}'}, "
            f"{max(total - elapsed, 0):.0f} s left",
        )
        if st.button("Cancel training", key="cancel"):
            cancel_job(db, job["id"])
    elif status == "succeeded":
        result = job.get("result") or {}
        if isinstance(result, str):
            result = json.loads(result)
        st.success(
            f"Training job {job['id']} finished: model v{result.get('model_version')} "
            f"({'promoted' if result.get('promoted') else 'kept as candidate'})."
        )
    else:
        st.warning(f"Training job {job['id']} {status}: {job.get('error') or ''}")
    if st.session_state.get("last_job_status") != (job["id"], status):
        if st.session_state.get("last_job_status") is not None and status == "succeeded":
            st.session_state["last_job_status"] = (job["id"], status)
            st.rerun()
        st.session_state["last_job_status"] = (job["id"], status)


job_status()

st.subheader("Model versions")
if not models:
    st.info("No model yet. Label a few items of at least two classes, then train.")
else:
    table = pd.DataFrame(
        [
            {
                "version": m["version"],
                "status": m["status"],
                "model": m["estimator"],
                "CV balanced acc.": m["cv_score"],
                "holdout balanced acc.": m["holdout_score"],
                "holdout labels": m["holdout_size"],
                "train labels": m["train_size"],
                "created": m["created_at"],
            }
            for m in models
        ]
    )
    st.dataframe(table, hide_index=True, width="stretch", key="models-table")
    measured = next((m for m in models if m["status"] == "promoted"), models[0])
    if how := measured["metrics"].get("how_measured"):
        st.caption(f"v{measured['version']}: {how}.")
    versions = [m["version"] for m in models]
    with st.container(horizontal=True):
        chosen = st.selectbox("Version", versions, label_visibility="collapsed")
        if st.button("Promote this version", key="promote"):
            try:
                promote(db, project, int(chosen))
                st.rerun()
            except GroundworkError as exc:
                st.error(str(exc))
