"""Login page: the only page while this store has accounts and nobody is logged in.

A name and password (Argon2 hashes in the store; five failures in a row lock
the account for fifteen minutes), or single sign-on through Streamlit's
`st.login` when an OIDC provider is configured in .streamlit/secrets.toml.
"""

from __future__ import annotations

import streamlit as st

from labeling.errors import GroundworkError
from labeling.examples import literal_markdown
from labeling.pages.common import get_db, log_in, sso_providers, write_session_cookie
from labeling.users import authenticate

db = get_db()

if st.session_state.pop("sso_logout", False):
    st.logout()  # also leave the identity provider's login, or it would log straight back in

st.title("Log in to Groundwork")
write_session_cookie(db)  # drops the cookie of a session that ended
if st.session_state.pop("clear_cookie", False):
    st.success("You are logged out.")

if email := st.session_state.get("sso_unknown"):
    st.error(f"No Groundwork account has the email {literal_markdown(email)}: ask an admin to "
             "add one (`groundwork users add EMAIL --role annotator --sso-only`).")
    if st.button("Log out of single sign-on", key="sso-logout"):
        st.session_state.pop("sso_unknown", None)
        st.logout()

with st.form("login", border=True):
    name = st.text_input("User name", key="login-name", autocomplete="username")
    password = st.text_input("Password", type="password", key="login-password",
                             autocomplete="current-password")
    submitted = st.form_submit_button("Log in", type="primary")
if submitted:
    try:
        account = authenticate(db, name, password)
    except GroundworkError as exc:
        st.error(f"Login failed: {exc}")
    else:
        log_in(db, account)
        st.rerun()

for provider, label in sso_providers():
    if st.button(f"Log in with {label}", key=f"sso-{provider or 'default'}"):
        if provider:
            st.login(provider)
        else:
            st.login()

st.caption("Accounts are managed by an admin (`groundwork users add NAME --role ROLE`, or the "
           "Users page).")
