"""The frame every page shares: the store, the current project and user, item display.

A page module, so it may import streamlit; domain code never does.
"""

from __future__ import annotations

import os

import pandas as pd
import sqlite_utils
import streamlit as st

from labeling.items import Item, media_file
from labeling.projects import Project, find_project, list_projects
from labeling.store import connect

DEFAULT_USER = "local-admin"


def get_db() -> sqlite_utils.Database:
    """One connection per browser session: transactions never interleave across users."""
    if "db" not in st.session_state:
        st.session_state["db"] = connect(os.environ.get("GROUNDWORK_DATA") or None)
    return st.session_state["db"]


def current_user() -> str:
    return st.session_state.get("user") or os.environ.get("GROUNDWORK_USER") or DEFAULT_USER


def sidebar_frame(db: sqlite_utils.Database) -> None:
    """Project picker and user name, kept in the URL so a reload lands in the same place."""
    projects = list_projects(db)
    names = [p.name for p in projects]
    wanted = st.session_state.get("project_name") or st.query_params.get("project")
    if wanted not in names:
        wanted = names[0] if names else None
    with st.sidebar:
        st.markdown("### Groundwork")
        if names:
            chosen = st.selectbox("Project", names, index=names.index(wanted))
            st.session_state["project_name"] = chosen
            st.query_params["project"] = chosen
        else:
            st.caption("No project yet: import one on the Projects page.")
        st.session_state["user"] = st.text_input(
            "You are", value=current_user(), key="user_input"
        ).strip() or DEFAULT_USER


def current_project(db: sqlite_utils.Database) -> Project:
    """The project picked in the sidebar; stops the page with a hint when there is none."""
    name = st.session_state.get("project_name")
    project = find_project(db, name) if name else None
    if project is None:
        st.info("No project selected. Create one on the **Projects** page by importing data.")
        st.stop()
    return project


def show_item(db: sqlite_utils.Database, project: Project, item: Item) -> None:
    """Items are always shown as data, never as markup: text and names are escaped."""
    if project.modality == "image":
        path = media_file(db, item)
        st.image(str(path), width=224, caption=item.key)
    elif project.modality == "text":
        st.caption(item.key)
        st.text(item.content or "")
    else:
        st.caption(f"row {item.key}")
        row = item.row()
        frame = pd.DataFrame(
            {"field": list(row.keys()), "value": [str(v) for v in row.values()]}
        )
        st.dataframe(frame, hide_index=True, width="stretch")


def shortcut_for(index: int) -> str | None:
    return str(index + 1) if index < 9 else None
