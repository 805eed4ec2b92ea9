"""Audit page (admins): who did what and when.

Recent events of the audit log (logins and failures, lock-outs, account
changes, exports, promotions), answers per person and project (every
annotation and review answer carries its user and time), and every model
promotion. Filter by project, person, kind of event and period.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import streamlit as st

from labeling.errors import GroundworkError
from labeling.pages.common import current_account, get_db
from labeling.projects import list_projects
from labeling.users import (
    annotations_per_user,
    audit_actions,
    audit_events,
    people,
    promotions,
    require,
)

db = get_db()
try:
    require(current_account(db), "view_audit")
except GroundworkError as exc:
    st.error(str(exc))
    st.stop()

st.title("Audit")
st.caption("Every label and review answer records who gave it and when; logins, account "
           "changes, exports and promotions are kept in the audit log below.")

ALL = "(all)"
PERIODS = {"last 24 hours": timedelta(days=1), "last 7 days": timedelta(days=7),
           "last 30 days": timedelta(days=30), "all time": None}
projects = {p.name: p for p in list_projects(db)}
cols = st.columns([1, 1, 2, 1])
project_name = cols[0].selectbox("Project", [ALL, *projects], key="audit-project")
person = cols[1].selectbox("Person", [ALL, *people(db)], key="audit-person")
actions = cols[2].multiselect("Events", audit_actions(db), key="audit-actions",
                              placeholder="every kind")
period = cols[3].selectbox("Period", list(PERIODS), index=2, key="audit-period")

project = projects.get(project_name)
user = None if person == ALL else person
since = None
if PERIODS[period] is not None:
    since = (datetime.now(UTC) - PERIODS[period]).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")

events_tab, answers_tab, promotions_tab = st.tabs(
    ["Events", "Answers per person", "Promotions"])

with events_tab:
    events = audit_events(db, project=project, user=user, actions=actions or None, since=since)
    if events:
        frame = pd.DataFrame([{
            "when (UTC)": e["at"].replace("T", " ")[:19], "who": e["user"], "event": e["action"],
            "project": e["project"] or "", "on": e["target"] or "",
            "details": ", ".join(f"{k}: {v}" for k, v in e["details"].items())}
            for e in events])
        st.dataframe(frame, hide_index=True, width="stretch", key="audit-events")
        st.caption(f"{len(events)} most recent events" + (" (the newest 500)"
                                                          if len(events) == 500 else ""))
    else:
        st.caption("No events match.")

with answers_tab:
    rows = annotations_per_user(db, project=project, user=user, since=since)
    if rows:
        st.dataframe(pd.DataFrame(rows).rename(columns={
            "labels": "labels (live)", "taken_back": "taken back",
            "review_labels": "review labels", "review_answers": "review answers",
            "first_at": "first", "last_at": "last"}),
            hide_index=True, width="stretch", key="audit-answers")
        st.caption("Labels people gave (live and taken back), labels that came from review, "
                   "each reviewer's answers, imports and machine labels, per person and project.")
    else:
        st.caption("No answers match.")

with promotions_tab:
    rows = [r for r in promotions(db, project=project)
            if (user is None or r["by"] == user) and (since is None or (r["at"] or "") >= since)]
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                     key="audit-promotions")
    else:
        st.caption("No promotions match.")
