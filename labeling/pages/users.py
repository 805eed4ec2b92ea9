"""Users page (admins): accounts, roles, project assignments, passwords and lock-outs.

The same domain calls as `groundwork users ...`; each one is checked against
the acting admin's role right before it runs.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from labeling.errors import GroundworkError
from labeling.pages.common import current_account, get_db
from labeling.projects import list_projects
from labeling.users import (
    ROLES,
    add_user,
    assign,
    has_accounts,
    list_users,
    remove_user,
    require,
    set_password,
    set_role,
    unassign,
    unlock_user,
)

db = get_db()
me = current_account(db)
try:
    require(me, "manage_users")
except GroundworkError as exc:
    st.error(str(exc))
    st.stop()

st.title("Users")
if message := st.session_state.pop("users-message", None):
    st.success(message)


def _do(what, *args, done: str, **kwargs) -> None:
    """Run one account change as the logged-in admin, after checking the role again."""
    try:
        require(current_account(db), "manage_users")
        what(db, *args, by=me.name, **kwargs)
    except GroundworkError as exc:
        st.session_state["users-error"] = str(exc)
    else:
        st.session_state["users-message"] = done


users = list_users(db)
if users:
    st.dataframe(pd.DataFrame([{**u, "projects": ", ".join(u["projects"])} for u in users]),
                 hide_index=True, width="stretch", key="users-table")
else:
    st.info("No accounts yet: this store has one local admin and no login. Once an account "
            "exists everyone logs in, you too, so make the first one an admin with a password.")
if error := st.session_state.pop("users-error", None):
    st.error(error)

st.subheader("Add an account")
with st.form("add-user", clear_on_submit=True):
    cols = st.columns(2)
    name = cols[0].text_input("Name", key="new-name")
    role = cols[1].selectbox("Role", list(ROLES), key="new-role",
                             format_func=lambda r: f"{r}: {ROLES[r]}")
    email = cols[0].text_input("Email (for single sign-on, optional)", key="new-email")
    password = cols[1].text_input("Password (empty: single sign-on only)", type="password",
                                  key="new-password")
    added = st.form_submit_button("Add account", type="primary")
if added:
    if not has_accounts(db) and (role != "admin" or not password):
        st.error("The first account must be an admin with a password: from then on everyone "
                 "logs in, and you would be locked out of the app.")
    else:
        _do(add_user, name, role, password or None, email=email or None,
            done=f"Added {name.strip()} ({role})")
        st.rerun()

if users:
    names = [u["name"] for u in users]
    projects = [p.name for p in list_projects(db)]
    st.subheader("Change an account")
    who = st.selectbox("Account", names, key="edit-user")
    current = next(u for u in users if u["name"] == who)
    with st.container(border=True):
        st.markdown("**Projects**")
        chosen = st.multiselect("Assigned projects", projects, default=current["projects"],
                                key=f"assigned-{who}")
        if st.button("Save assignments", key="save-assignments"):
            for project in sorted(set(chosen) - set(current["projects"])):
                _do(assign, who, project, done=f"Saved {who}'s projects")
            for project in sorted(set(current["projects"]) - set(chosen)):
                _do(unassign, who, project, done=f"Saved {who}'s projects")
            st.rerun()
    cols = st.columns(3)
    with cols[0].container(border=True):
        new_role = st.selectbox("Role", list(ROLES), index=list(ROLES).index(current["role"]),
                                key=f"role-{who}")
        if st.button("Change role", key="change-role", disabled=new_role == current["role"]):
            _do(set_role, who, new_role, done=f"{who} is now {new_role}")
            st.rerun()
    with cols[1].container(border=True):
        new_password = st.text_input("New password", type="password", key=f"password-{who}")
        if st.button("Set password", key="set-password", disabled=not new_password):
            _do(set_password, who, new_password,
                done=f"New password for {who} (their sessions were ended)")
            st.rerun()
    with cols[2].container(border=True):
        if current["locked_until"]:
            st.caption(f"Locked until {current['locked_until'][:16].replace('T', ' ')} UTC")
        if st.button("Unlock", key="unlock", disabled=not current["locked_until"]):
            _do(unlock_user, who, done=f"Unlocked {who}")
            st.rerun()
        if st.button("Remove account", key="remove-user", type="secondary",
                     disabled=who == me.name):
            _do(remove_user, who, done=f"Removed {who} (their answers stay on record)")
            st.rerun()
