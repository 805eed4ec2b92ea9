"""Groundwork's entry point: a router over the pages plus the frame they share.

Who may open which page follows their role (`labeling.users`): a page a role
cannot use is not in its navigation, and each page checks the role again
right before every action. A store without accounts has one local admin and
no login; once an account exists, everyone logs in first.
"""

from __future__ import annotations

import os

import streamlit as st

from automl.coldstart import seed_new_projects
from automl.refit import maybe_refit
from labeling.demo import seed_demo
from labeling.hooks import on_answers_saved
from labeling.pages.common import current_account, get_db, sidebar_frame, sweep_orphaned_media_once
from labeling.store import data_dir_of
from labeling.users import may

st.set_page_config(page_title="Groundwork", page_icon=":material/label:", layout="wide")

# (page file, title, icon, url path, the action a role needs to see the page)
PAGES = [
    ("labeling/pages/projects.py", "Projects", ":material/folder:", "projects", "import"),
    ("labeling/pages/label.py", "Label", ":material/label:", "label", "label"),
    ("labeling/pages/autolabel.py", "Auto-label", ":material/bolt:", "autolabel", "autolabel"),
    ("automl/pages/savings.py", "Savings", ":material/savings:", "savings", "settings"),
    ("review/pages/review_tasks.py", "Review", ":material/fact_check:", "review", "review"),
    ("review/pages/workflows.py", "Workflows", ":material/tune:", "workflows", "manage_review"),
    ("automl/pages/train.py", "Train", ":material/model_training:", "train", "train"),
    ("labeling/pages/users.py", "Users", ":material/group:", "users", "manage_users"),
    ("labeling/pages/audit.py", "Audit", ":material/history:", "audit", "view_audit"),
]

db = get_db()
sweep_orphaned_media_once(str(data_dir_of(db)))
account = current_account(db)
if account is None:  # accounts exist and nobody is logged in: the login page is all there is
    # at every page's address, so a bookmark or a reload logs in and lands on its page.
    login = "labeling/pages/login.py"
    st.navigation([st.Page(login, title="Log in", icon=":material/login:", default=True)]
                  + [st.Page(login, title="Log in", url_path=url, visibility="hidden")
                     for *_, url, _ in PAGES], position="hidden").run()
    st.stop()

if os.environ.get("GROUNDWORK_DEMO", "1") != "0" and "demo_checked" not in st.session_state:
    with st.spinner("Preparing the demo project (digits rendered to PNG)..."):
        seed_demo(db)
    st.session_state["demo_checked"] = True

# Before a project's first label, put a diverse k-means seed first in its queue.
seed_new_projects(db)
# Every `refit_every` labels, refit the quick queue model in a background process.
on_answers_saved(maybe_refit)

sidebar_frame(db, account)

allowed = [spec for spec in PAGES if may(account.role, spec[4])]
if account.role == "admin":  # Projects, at the root URL, as before accounts existed
    pages = [st.Page(path, title=title, icon=icon, default=(url == "projects"),
                     **({} if url == "projects" else {"url_path": url}))
             for path, title, icon, url, _ in allowed]
else:
    pages = [st.Page(path, title=title, icon=icon, url_path=url)
             for path, title, icon, url, _ in allowed]

    def _home() -> None:
        """The root URL opens the role's first page under its own address (/label, /review)."""
        st.switch_page(pages[1])

    def _not_for_role() -> None:
        """Another role's page address: say so (the page itself never runs)."""
        st.warning(f"That page is not open to {account.role}s. Your pages are in the menu.")
        st.page_link(pages[1], label=f"Go to {pages[1].title}")

    pages.insert(0, st.Page(_home, title="Home", url_path="home", default=True,
                            visibility="hidden"))
    pages += [st.Page(_not_for_role, title=title, url_path=url, visibility="hidden")
              for _, title, _, url, action in PAGES if not may(account.role, action)]
st.navigation(pages).run()
