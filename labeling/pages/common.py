"""The frame every page shares: the store, the current project and user, item display.

A page module, so it may import streamlit; domain code never does.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from urllib.parse import urlparse

import pandas as pd
import sqlite_utils
import streamlit as st

from labeling.errors import GroundworkError
from labeling.items import Item, media_file
from labeling.media import display_image, sweep_media
from labeling.projects import Project, find_project, require_classes
from labeling.store import connect, data_dir_of
from labeling.users import (
    LOCAL_ADMIN,
    Account,
    account_for_email,
    end_session,
    has_accounts,
    local_admin,
    session_account,
    session_expiry,
    start_session,
    visible_projects,
)
from labeling.users import require as require  # re-exported: pages check before each action

DEFAULT_USER = LOCAL_ADMIN
SESSION_COOKIE = "groundwork_session"


def get_db() -> sqlite_utils.Database:
    """One connection per browser session: transactions never interleave across users."""
    if "db" not in st.session_state:
        st.session_state["db"] = connect(os.environ.get("GROUNDWORK_DATA") or None)
    return st.session_state["db"]


@st.cache_resource(show_spinner=False)
def sweep_orphaned_media_once(data_dir: str) -> threading.Thread:
    """Once per server: remove media an import killed mid-way left behind (an hour old or more).

    In a background thread with its own connection, so a large media folder
    never delays the first page.
    """
    def sweep() -> None:
        db = connect(data_dir)
        try:
            sweep_media(db, data_dir_of(db))
        finally:
            db.conn.close()

    thread = threading.Thread(target=sweep, name="media-sweep", daemon=True)
    thread.start()
    return thread


def current_account(db: sqlite_utils.Database | None = None) -> Account | None:
    """Who is using this browser session, read from the store on every call.

    Without accounts: the local admin, named by the sidebar's "You are" box (the
    embedded default, no login). With accounts: the logged-in account (this
    session's login, the browser's session cookie, or single sign-on); None when
    nobody is logged in. A logout, expiry, removal or role change applies at once.
    """
    db = db if db is not None else get_db()
    if not has_accounts(db):
        return local_admin(st.session_state.get("user") or os.environ.get("GROUNDWORK_USER")
                           or DEFAULT_USER)
    token = st.session_state.get("session_token")
    if token is None and not st.session_state.get("cookie_read"):
        st.session_state["cookie_read"] = True  # the cookie of the page load, read once
        token = _cookie()
    account = session_account(db, token) if token else None
    if account is not None:
        st.session_state["session_token"] = token
        return account
    st.session_state.pop("session_token", None)
    return _single_sign_on(db)


def current_user() -> str:
    """The name answers are recorded under: the account, or the local admin's chosen name."""
    account = current_account()
    if account is None:
        raise GroundworkError("log in first: this store has user accounts")
    return account.name


def sso_providers() -> list[tuple[str | None, str]]:
    """OIDC providers configured in .streamlit/secrets.toml ([auth]), as (name, label).

    `[auth]` with its own client_id is Streamlit's default provider; each
    `[auth.NAME]` table with a client_id is a named one (`st.login("NAME")`).
    """
    try:
        auth = st.secrets.get("auth")
    except Exception:  # no secrets file at all
        return []
    if not auth:
        return []
    providers: list[tuple[str | None, str]] = []
    if "client_id" in auth:
        host = urlparse(str(auth.get("server_metadata_url") or "")).hostname
        providers.append((None, host or "single sign-on"))
    for name, value in auth.items():
        if hasattr(value, "get") and value.get("client_id"):
            providers.append((name, name.replace("_", " ").title()))
    return providers


def _single_sign_on(db: sqlite_utils.Database) -> Account | None:
    """Map the identity provider's email to an account and open a session for it."""
    if not sso_providers():
        return None
    try:
        if not st.user.get("is_logged_in"):
            return None
        email = st.user.get("email")
    except Exception:  # st.user unavailable (no auth support installed)
        return None
    account = account_for_email(db, str(email or ""))
    if account is None:
        st.session_state["sso_unknown"] = str(email or "(no email)")
        return None
    st.session_state.pop("sso_unknown", None)
    st.session_state["session_token"] = start_session(db, account, method="sso")
    return account


def log_in(db: sqlite_utils.Database, account: Account) -> None:
    st.session_state["session_token"] = start_session(db, account)


def log_out(db: sqlite_utils.Database) -> None:
    """End the session in the store, forget everything this browser session held, drop the
    cookie (and the single sign-on login, which would otherwise log straight back in)."""
    end_session(db, st.session_state.get("session_token"))
    sso = False
    if sso_providers():
        try:
            sso = bool(st.user.get("is_logged_in"))
        except Exception:
            sso = False
    for key in list(st.session_state.keys()):
        if key != "db":
            del st.session_state[key]
    st.session_state["cookie_read"] = True
    st.session_state["clear_cookie"] = True
    st.session_state["sso_logout"] = sso


def write_session_cookie(db: sqlite_utils.Database) -> None:
    """Keep the login across reloads: the browser holds the token in a cookie.

    Set from the browser (a Streamlit script cannot send headers) until the page
    is reloaded with it; cleared the same way after a logout.
    """
    token = st.session_state.get("session_token")
    if token and _cookie() != token:
        expiry = session_expiry(db, token)
        seconds = 0
        if expiry:
            seconds = max(int((datetime.fromisoformat(expiry.replace("Z", "+00:00"))
                               - datetime.now(UTC)).total_seconds()), 0)
        _cookie_script(token, seconds)
    elif not token and (st.session_state.get("clear_cookie")
                        or _cookie()):
        _cookie_script("", 0)


def _cookie() -> str | None:
    """The session cookie the browser sent when this page was loaded."""
    try:
        value = st.context.cookies.get(SESSION_COOKIE)
    except Exception:  # no browser connection (a test run)
        return None
    return value if isinstance(value, str) and value else None


def _cookie_script(value: str, max_age: int) -> None:
    # The token is URL-safe base64 (letters, digits, - and _): nothing to escape.
    st.html(
        "<script>document.cookie = "
        f"'{SESSION_COOKIE}={value}; Max-Age={int(max_age)}; Path=/; SameSite=Strict'"
        " + (location.protocol === 'https:' ? '; Secure' : '');</script>",
        unsafe_allow_javascript=True, width="content")


def sidebar_frame(db: sqlite_utils.Database, account: Account | None = None) -> None:
    """Project picker and who is working, kept in the URL so a reload lands in the same place.

    Annotators and reviewers pick among the projects assigned to them; with
    accounts the user is the logged-in account (no free-text name), without
    them the "You are" box names the local admin's answers.
    """
    account = account or current_account(db) or local_admin()
    names = [p.name for p in visible_projects(db, account)]
    wanted = st.session_state.get("project_name") or st.query_params.get("project")
    if wanted not in names:
        wanted = names[0] if names else None
    with st.sidebar:
        st.markdown("### Groundwork")
        if names:
            chosen = st.selectbox("Project", names, index=names.index(wanted))
            st.session_state["project_name"] = chosen
            st.query_params["project"] = chosen
        elif account.role == "admin":
            st.caption("No project yet: import one on the Projects page.")
        else:
            st.session_state.pop("project_name", None)
            st.caption("No project is assigned to you yet: ask an admin.")
        if account.local:
            st.session_state["user"] = st.text_input(
                "You are", value=current_user(), key="user_input"
            ).strip() or DEFAULT_USER
        else:
            st.session_state["user"] = account.name
            st.caption(f"Signed in as **{account.name}** · {account.role}")
            st.button("Log out", key="logout", icon=":material/logout:", on_click=log_out,
                      args=(db,))
            write_session_cookie(db)


def current_project(db: sqlite_utils.Database) -> Project:
    """The project picked in the sidebar; stops the page with a hint when there is none.

    An annotator or reviewer only ever gets a project assigned to them.
    """
    account = current_account(db)
    if account is None:
        st.info("Log in first: this store has user accounts.")
        st.stop()
    name = st.session_state.get("project_name")
    project = find_project(db, name) if name else None
    if project is not None and account.role != "admin" and project.id not in account.projects:
        project = None
    if project is None:
        if account.role == "admin":
            st.info("No project selected. Create one on the **Projects** page by importing "
                    "data.")
        else:
            st.info("No project is assigned to you yet: ask an admin to assign you one.")
        st.stop()
    return project


def show_item(db: sqlite_utils.Database, project: Project, item: Item) -> None:
    """Items are always shown as data, never as markup: text and names are escaped."""
    if project.modality == "image":
        path = media_file(db, item)
        st.image(display_image(path), width=224, caption=item.key)
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


def stop_unless_classes(project: Project, what: str) -> None:
    """A class-only page on a regression project says why it has nothing, and stops there."""
    try:
        require_classes(project, what)
    except GroundworkError as exc:
        st.info(str(exc))
        st.stop()
