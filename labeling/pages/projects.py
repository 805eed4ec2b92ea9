"""Projects page: what exists, importing data, and the instructions annotators read."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from labeling.errors import GroundworkError
from labeling.importers import import_source
from labeling.pages.common import current_account, get_db, require
from labeling.projects import find_project, list_projects, project_counts, set_instructions
from labeling.users import allowed

db = get_db()
st.title("Projects")

projects = list_projects(db)
if projects:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "project": p.name,
                    "modality": p.modality,
                    "task": p.task,
                    "classes": ", ".join(p.classes),
                    **project_counts(db, p),
                }
                for p in projects
            ]
        ),
        hide_index=True,
        width="stretch",
    )
else:
    st.info("No projects yet. Import images, a text CSV/JSONL or a table below.")

st.subheader("Import data")
st.caption(
    "Images: a .zip (class sub-folders give labels) or several image files. "
    "Text: a CSV or JSONL with a text column. Tables: a CSV. "
    "An import lands whole or not at all; unreadable files are skipped and listed."
)
with st.form("import_form", clear_on_submit=False):
    left, right = st.columns(2)
    name = left.text_input("Project name", value=st.session_state.get("project_name") or "")
    modality = right.selectbox("Modality", ["image", "text", "tabular"])
    task = left.selectbox(
        "Task", ["automatic", "single-label", "multi-label", "regression"],
        help="automatic: single-label, or regression for a table whose label column holds "
        "quantities (many distinct numbers); regression is for tables only")
    classes = right.text_input("Classes (comma-separated, optional)")
    label_column = left.text_input("Label column (CSV, optional)")
    gold_column = right.text_input("Hidden gold column (CSV, optional)")
    text_column = left.text_input("Text column (text CSV/JSONL)", value="")
    folders_as = right.selectbox(
        "Zip sub-folders are", ["label", "gold", "none"],
        help="label: imported labels; gold: hidden gold for evaluation; none: ignored",
    )
    uploads = st.file_uploader(
        "Files", accept_multiple_files=True,
        type=["zip", "csv", "jsonl", "manifest", "png", "jpg", "jpeg", "gif", "bmp", "webp",
              "tif", "tiff"],
    )
    submitted = st.form_submit_button("Import", type="primary")

if submitted:
    if not uploads:
        st.error("Choose at least one file to import.")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            files = []
            for upload in uploads:
                target = Path(tmp) / Path(upload.name).name
                target.write_bytes(upload.getvalue())
                files.append(target)
            source = files[0]
            if len(files) > 1 or files[0].suffix.lower() not in (".zip", ".csv", ".jsonl",
                                                                 ".manifest"):
                # Loose image files are imported as one folder.
                folder = Path(tmp) / "upload"
                folder.mkdir()
                for f in files:
                    f.rename(folder / f.name)
                source = folder
            try:
                require(current_account(db), "import")  # roles (issue 6)
                report = import_source(
                    db,
                    name,
                    source,
                    modality,
                    task=None if task == "automatic" else task,
                    text_column=text_column.strip() or None,
                    label_column=label_column.strip() or None,
                    gold_column=gold_column.strip() or None,
                    classes=[c for c in classes.split(",") if c.strip()] or None,
                    folders_as=folders_as,
                    user=st.session_state.get("user") or "import",
                )
            except GroundworkError as exc:
                st.error(f"Import failed, nothing was changed: {exc}")
            else:
                st.session_state["project_name"] = report.project
                st.session_state["last_import"] = report.to_dict()
                st.rerun()

if report := st.session_state.get("last_import"):
    st.success(
        f"Imported {report['imported']} items into {report['project']} "
        f"({report['labeled']} labeled, {report['gold']} with hidden gold, "
        f"{report['duplicates']} already present, {len(report['skipped'])} skipped)."
    )
    for note in report.get("notes") or []:
        st.info(note)
    if report["skipped"]:
        st.warning("Skipped files:")
        st.dataframe(pd.DataFrame(report["skipped"]), hide_index=True)


def _instructions_editor() -> None:
    """Admins write the instructions of the project picked in the sidebar (Markdown).

    The preview is drawn the way the Label page draws them: `st.markdown`
    without HTML, so markup someone pastes stays text. Only who may change a
    project's settings sees the editor, and saving checks the role again.
    """
    name = st.session_state.get("project_name")
    project = find_project(db, name) if name else None
    if project is None or not allowed(current_account(db), "settings", project):
        return
    st.subheader(f"Instructions for {project.name}")
    st.caption("What annotators read above each item on the Label page (Markdown; HTML is "
               "shown as text). Pick another project in the sidebar to edit its instructions.")
    with st.form(f"instructions-form-{project.id}", border=False):
        text = st.text_area("Instructions (Markdown)", value=project.instructions, height=160,
                            key=f"instructions-{project.id}")
        saved = st.form_submit_button("Save instructions", key="instructions-save")
    if saved:
        try:
            require(current_account(db), "settings", project)  # roles (issue 6)
            project = set_instructions(db, project, text)
        except GroundworkError as exc:
            st.error(f"Instructions not saved: {exc}")
        else:
            st.success("Instructions saved." if project.instructions else
                       "Instructions cleared.")
    if project.instructions:
        with st.expander("As annotators see them", expanded=False):
            st.markdown(project.instructions)


_instructions_editor()
