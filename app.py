"""Groundwork's entry point: a router over the pages plus the frame they share."""

from __future__ import annotations

import os

import streamlit as st

from automl.coldstart import seed_new_projects
from automl.refit import maybe_refit
from labeling.demo import seed_demo
from labeling.hooks import on_answers_saved
from labeling.pages.common import get_db, sidebar_frame

st.set_page_config(page_title="Groundwork", page_icon=":material/label:", layout="wide")

db = get_db()
if os.environ.get("GROUNDWORK_DEMO", "1") != "0" and "demo_checked" not in st.session_state:
    with st.spinner("Preparing the demo project (digits rendered to PNG)..."):
        seed_demo(db)
    st.session_state["demo_checked"] = True

# Before a project's first label, put a diverse k-means seed first in its queue.
seed_new_projects(db)
# Every `refit_every` labels, refit the quick queue model in a background process.
on_answers_saved(maybe_refit)

sidebar_frame(db)

pages = [
    st.Page("labeling/pages/projects.py", title="Projects", icon=":material/folder:", default=True),
    st.Page("labeling/pages/label.py", title="Label", icon=":material/label:", url_path="label"),
    st.Page("labeling/pages/autolabel.py", title="Auto-label", icon=":material/bolt:",
            url_path="autolabel"),
    st.Page("automl/pages/savings.py", title="Savings", icon=":material/savings:",
            url_path="savings"),
    st.Page("review/pages/review_tasks.py", title="Review", icon=":material/fact_check:",
            url_path="review"),
    st.Page("automl/pages/train.py", title="Train", icon=":material/model_training:",
            url_path="train"),
]
st.navigation(pages).run()
