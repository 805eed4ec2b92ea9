"""Workflows page: define review workflows with a live preview, and check labels for errors.

A workflow watches the promoted model's predictions on the pool, the
project's own labels, or a batch file uploaded here (`review.batches`: its
rows are predicted, the activated ones go to review, the rest keep the
model's answer); its conditions are built from the choices below (any
or all of them) or written as JSON for two-level AND/OR. The preview counts
what it would open before anything is saved. Each batch's result downloads
as CSV or JSON Lines. Label issues come from
`review.label_issues` (out-of-fold probabilities and cleanlab); they can be
routed to a workflow over the project's labels in one click.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from labeling.errors import GroundworkError
from labeling.examples import literal_markdown
from labeling.pages.common import (
    current_account,
    current_project,
    current_user,
    get_db,
    require,
    stop_unless_classes,
)
from labeling.queue import promoted_model_id
from labeling.users import allowed
from review.batches import (
    BatchInput,
    batch_csv,
    batch_jsonl,
    list_batches,
    preview_batch,
    read_batch,
    record_batch_export,
    run_batch,
)
from review.label_issues import annotator_error_rates, check_labels, label_issues, last_check
from review.workflows import (
    delete_workflow,
    find_workflow,
    list_workflows,
    preview,
    refresh_workflows,
    run_workflow,
    save_workflow,
)

db = get_db()
project = current_project(db)
st.title(f"Workflows · {project.name}")
stop_unless_classes(project, "review")
try:  # a model promoted since the last look: pool workflows re-evaluate the pool first
    for refreshed, opened in refresh_workflows(db, project).items():
        if opened:
            st.toast(f"New model promoted: workflow {refreshed} opened {opened} tasks")
except GroundworkError as exc:
    st.warning(str(exc))
ANY_CLASS = "any class"
SOURCES = {"pool": "Model predictions on unlabeled items",
           "labels": "The project's own labels (error checks)",
           "batch": "A batch prediction on an uploaded file"}
UPLOAD_TYPES = {"text": ["csv", "tsv", "jsonl", "ndjson"], "tabular": ["csv", "tsv"],
                "image": ["zip", "png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff"]}

workflows = list_workflows(db, project)
if workflows:
    rows = []
    for w in workflows:
        counts = dict(db.execute("SELECT status, count(*) FROM review_tasks WHERE workflow_id = ? "
                                 "GROUP BY status", [w.id]).fetchall())
        rows.append({"workflow": w.name, "watches": w.source, "conditions": w.description,
                     "reviewers": w.reviewers,
                     "expiry (h)": w.expiry_hours if w.expiry_hours is not None else "never",
                     "open": counts.get("open", 0) + counts.get("in progress", 0),
                     "completed": counts.get("completed", 0),
                     "expired": counts.get("expired", 0)})
    st.dataframe(pd.DataFrame(rows).astype({"expiry (h)": str}), hide_index=True,
                 width="stretch")
else:
    st.caption("No workflows yet: define one below.")

batches = list_batches(db, project)
if batches:
    st.subheader("Batches")
    st.dataframe(pd.DataFrame([{
        "batch": b["name"], "workflow": b["workflow"], "file": b["file"], "rows": b["rows"],
        "opened": b["opened"], "reviewed": b["reviewed"], "waiting": b["waiting"],
        "model": f"v{b['model_version']}", "created": b["created_at"][:16].replace("T", " ")}
        for b in batches]), hide_index=True, width="stretch", key="batches-table")
    col = st.columns([2, 1, 1])
    chosen_batch = col[0].selectbox("Batch result", [b["name"] for b in reversed(batches)],
                                    key="batch-export-name")
    may_export = allowed(current_account(db), "export", project)  # roles (issue 6)
    def exported(fmt: str) -> str:
        """The file's text, with the download in the audit log (who exported what)."""
        text = (batch_csv if fmt == "csv" else batch_jsonl)(db, project, chosen_batch)
        rows = max(text.count("\n") - (fmt == "csv"), 0)
        record_batch_export(db, project, chosen_batch, fmt, rows, current_user())
        return text

    col[1].download_button(
        "Download CSV", data=lambda: exported("csv"),
        file_name=f"{project.name}-{chosen_batch}.csv", mime="text/csv", key="batch-csv",
        on_click="ignore", disabled=not may_export)
    col[2].download_button(
        "Download JSON Lines", data=lambda: exported("jsonl"),
        file_name=f"{project.name}-{chosen_batch}.jsonl", mime="application/jsonl",
        key="batch-jsonl", on_click="ignore", disabled=not may_export)
    st.caption("Per row: the key, the model's prediction and confidence, whether a review "
               "task was opened and answered, and the final label with who gave it (the "
               "reviewer, or the model where nobody reviewed the row).")

if message := st.session_state.pop("workflow-message", None):
    st.success(message)

st.subheader("Create or change a workflow")
name = st.text_input("Workflow name", key="wf-name").strip()
existing = find_workflow(db, project, name) if name else None
if existing:
    st.caption(f"Saving replaces the settings of {literal_markdown(existing.name)}: "
               f"{literal_markdown(existing.description)}.")
source = st.radio("Watches", list(SOURCES), format_func=SOURCES.get, key="wf-source",
                  horizontal=True)
combine = st.radio("Open a task when", ["any", "all"], key="wf-combine", horizontal=True,
                   format_func=lambda v: {"any": "any condition holds (OR)",
                                          "all": "all conditions hold (AND)"}[v])
classes = [ANY_CLASS, *project.classes]
parts: list[dict] = []
with st.container(border=True):
    col = st.columns([2, 1, 1])
    if col[0].checkbox("Confidence below", value=True, key="wf-use-below"):
        value = col[1].number_input("below", 0.01, 1.0, 0.7, 0.05, key="wf-below",
                                    label_visibility="collapsed")
        cls = col[2].selectbox("class", classes, key="wf-below-class",
                               label_visibility="collapsed")
        parts.append({"confidence_below": value, **({"class": cls} if cls != ANY_CLASS else {})})
    col = st.columns([2, 1, 1])
    if col[0].checkbox("Confidence above", key="wf-use-above"):
        value = col[1].number_input("above", 0.0, 0.99, 0.95, 0.01, key="wf-above",
                                    label_visibility="collapsed")
        cls = col[2].selectbox("class ", classes, key="wf-above-class",
                               label_visibility="collapsed")
        parts.append({"confidence_above": value, **({"class": cls} if cls != ANY_CLASS else {})})
    col = st.columns([2, 1, 1])
    if col[0].checkbox("Random audit sample (%)", key="wf-use-sample"):
        value = col[1].number_input("sample", 0.1, 100.0, 5.0, 1.0, key="wf-sample",
                                    label_visibility="collapsed")
        parts.append({"sample": value / 100})
    if source == "labels" and st.checkbox("Suspected label error", value=True,
                                          key="wf-use-errors"):
        parts.append({"label_error": True})
    advanced = st.text_area(
        "Or conditions as JSON (replaces the choices above; 'any'/'all' nest two deep)",
        key="wf-json", placeholder='{"any": [{"confidence_below": 0.6}, {"all": '
        '[{"confidence_below": 0.9, "class": "spam"}, {"sample": 0.2}]}]}')


def _read_upload(files: list) -> BatchInput | None:
    """Read and predict the uploaded batch once per file (and model), not on every rerun."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.getvalue())
    key = (digest.hexdigest(), promoted_model_id(db, project), text_column or None)
    cached = st.session_state.get("batch-upload")
    if cached and cached[0] == key:
        return cached[1]
    with tempfile.TemporaryDirectory() as work:
        if len(files) == 1 and (project.modality != "image"
                                or files[0].name.lower().endswith(".zip")):
            path = Path(work) / Path(files[0].name).name
            path.write_bytes(files[0].getvalue())
        else:  # several images: a folder of them, as an import of a folder reads it
            path = Path(work) / Path(files[0].name).stem
            path.mkdir()
            for f in files:
                (path / Path(f.name).name).write_bytes(f.getvalue())
        data = read_batch(db, project, path, text_column=text_column or None)
    st.session_state["batch-upload"] = (key, data)
    return data


upload: BatchInput | None = None
text_column = batch_name = ""
if source == "batch":
    with st.container(border=True):
        kinds = {"text": "a CSV or JSONL file with a text column",
                 "tabular": "a CSV file with the project's columns",
                 "image": "a zip of images, or image files"}[project.modality]
        files = st.file_uploader(
            f"Batch to predict and review: {kinds}", type=UPLOAD_TYPES[project.modality],
            accept_multiple_files=project.modality == "image", key="wf-batch-file")
        files = [f for f in (files if isinstance(files, list) else [files]) if f is not None]
        col = st.columns(2)
        batch_name = col[0].text_input("Batch name (default: the file's name)",
                                       key="wf-batch-name").strip()
        if project.modality == "text":
            text_column = col[1].text_input("Text column", value="text",
                                            key="wf-batch-text-column").strip()
        if files:
            try:
                with st.spinner("Predicting the batch with the promoted model..."):
                    upload = _read_upload(files)
            except GroundworkError as exc:
                st.error(str(exc))
        else:
            st.caption("Without a file, saving re-evaluates the batches this workflow ran.")

conditions: dict | None
if advanced.strip():
    try:
        conditions = json.loads(advanced)
    except json.JSONDecodeError as exc:
        st.error(f"The JSON conditions are not valid JSON: {exc.msg}")
        conditions = None
elif parts:
    conditions = parts[0] if len(parts) == 1 else {combine: parts}
else:
    conditions = None

col = st.columns(3)
reviewers = col[0].number_input("Reviewers per task", 1, 3, 1, key="wf-reviewers")
expiry = col[1].number_input("Tasks expire after (hours; 0 = never)", 0.0, 24.0 * 365, 0.0,
                             key="wf-expiry")
instructions = st.text_area("Instructions for reviewers (Markdown)", key="wf-instructions")

shown = None
if conditions is not None:
    try:
        stale = ""
        if source == "batch" and upload is not None:
            shown = preview_batch(db, project, conditions, upload, workflow=name or "preview",
                                  batch=batch_name or None)
            stale = (f" on the {shown['rows']} rows of batch {literal_markdown(shown['batch'])}"
                     f" (model v{shown['model_version']})")
            if shown["skipped"]:
                stale += f"; {len(shown['skipped'])} rows skipped (empty or too long)"
        else:
            shown = preview(db, project, conditions, source=source, salt=name or "preview")
        if source == "labels" and not shown.get("checked"):
            stale = " (the labels have not been checked yet: saving and opening checks them)"
        elif shown.get("stale"):
            stale = " (labels changed since the last check: opening re-checks them)"
        st.caption(f"{literal_markdown(shown['description'])}. This workflow would open "
                   f"{shown['would_open']} new tasks{stale}.")
    except GroundworkError as exc:
        st.error(str(exc))
else:
    st.caption("Pick at least one condition.")


def _save(open_now: bool) -> None:
    try:
        require(current_account(db), "manage_review", project)  # roles (issue 6)
        workflow = save_workflow(db, project, name, conditions, source=source,
                                 reviewers=int(reviewers),
                                 expiry_hours=float(expiry) if expiry > 0 else None,
                                 instructions=instructions)
        text = f"Saved workflow {workflow.name}"
        if open_now and source == "batch" and upload is not None:
            batch = run_batch(db, project, workflow.name, upload, name=batch_name or None,
                              user=current_user())
            text += (f"; batch {literal_markdown(batch['batch'])}: predicted "
                     f"{batch['rows']} rows with model v{batch['model_version']}, opened "
                     f"{batch['opened']} review tasks")
        elif open_now:
            opened = run_workflow(db, project, workflow.name)
            text += f"; opened {opened} review tasks"
        st.session_state["workflow-message"] = text
    except GroundworkError as exc:
        st.session_state["workflow-message"] = None
        st.session_state["workflow-error"] = str(exc)


col = st.columns([1, 1, 3])
col[0].button("Save workflow", key="wf-save", on_click=_save, args=(False,),
              disabled=shown is None or not name)
col[1].button("Save and open tasks", key="wf-save-run", on_click=_save, args=(True,),
              disabled=shown is None or not name, type="primary")
if error := st.session_state.pop("workflow-error", None):
    st.error(error)

if workflows:
    with st.expander("Delete a workflow"):
        doomed = st.selectbox("Workflow", [w.name for w in workflows], key="wf-delete-name")
        st.caption("Its tasks stay (answered ones are labels); they are no longer linked to it.")
        if st.button("Delete workflow", key="wf-delete"):
            require(current_account(db), "manage_review", project)  # roles (issue 6)
            delete_workflow(db, project, doomed)
            st.session_state["workflow-message"] = f"Deleted workflow {doomed}"
            st.rerun()

st.divider()
st.subheader("Label issues")
st.caption("Out-of-fold predictions of a few model families over the project's curated "
           "labels, ranked by cleanlab's confident learning: labels that are probably wrong, "
           "most likely first (in a multi-label project, tag by tag: the suggestion is the "
           "set the model gives p ≥ 0.5).")
if st.button("Check labels for errors", key="check-labels"):
    try:
        require(current_account(db), "manage_review", project)  # roles (issue 6)
        with st.spinner("Fitting models out of fold..."):
            check_labels(db, project)
    except GroundworkError as exc:
        st.error(str(exc))
check = last_check(db, project)
if check:
    st.caption(f"Last check {check['checked_at'][:16].replace('T', ' ')} UTC over "
               f"{check['checked']} labels: {check['issues']} suspected errors · "
               f"{literal_markdown(check['method'])}.")
    issues = label_issues(db, project, refresh=False)
    if issues:
        st.dataframe(pd.DataFrame([{
            "key": i["key"], "given": ", ".join(i["given"]),
            "suggested": ", ".join(i["suggested"]), "likely wrong": i["score"],
            "given by": ", ".join(i["users"])} for i in issues]),
            hide_index=True, width="stretch", key="issues-table",
            column_config={"likely wrong": st.column_config.NumberColumn(format="%.2f")})
        target = st.text_input("Route them to workflow", value="label errors",
                               key="route-name").strip()
        if st.button("Route to review", key="route-issues", disabled=not target):
            try:
                require(current_account(db), "manage_review", project)  # roles
                if find_workflow(db, project, target) is None:
                    save_workflow(db, project, target, {"label_error": True},
                                  source="labels")
                opened = run_workflow(db, project, target)
                st.success(f"Opened {opened} review tasks in workflow {target}: "
                           "review them on the Review page.")
            except GroundworkError as exc:
                st.error(str(exc))
rates = [r for r in annotator_error_rates(db, project) if r["reviewed"]]
if rates:
    st.caption("Confirmed errors per annotator (reviewed label issues whose label a "
               "reviewer changed):")
    st.dataframe(pd.DataFrame(rates), hide_index=True, width="stretch")

