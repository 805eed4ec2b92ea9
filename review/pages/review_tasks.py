"""Review page: open tasks from a confidence rule, then accept (Enter) or correct (1..9)."""

from __future__ import annotations

import time

import streamlit as st

from automl.jobs import start_training
from labeling.errors import GroundworkError
from labeling.items import get_item
from labeling.pages.common import current_project, current_user, get_db, shortcut_for, show_item
from labeling.projects import Project
from review.rules import open_review, preview_review
from review.tasks import (
    OPEN_STATES,
    answer_task,
    get_task,
    next_tasks,
    task_counts,
    undo_answer,
)

db = get_db()
project = current_project(db)
st.title(f"Review · {project.name}")

with st.expander("Open review tasks", expanded=not any(task_counts(db, project).values())):
    below = st.slider(
        "Flag predictions with confidence below", 0.05, 1.0, 0.7, 0.05, key="review-below"
    )
    st.caption(f"This rule would open {preview_review(db, project, below)} new tasks.")
    if st.button("Open review tasks", key="open-review"):
        try:
            opened = open_review(db, project, below)
            st.session_state["review-message"] = f"Opened {opened} review tasks"
        except GroundworkError as exc:
            st.error(str(exc))


def _state(project: Project) -> dict:
    return st.session_state.setdefault(
        f"review-{project.id}", {"skipped": [], "history": [], "shown_at": None, "task": None}
    )


def _answer(project: Project, task_id: int, labels: list[str]) -> None:
    state = _state(project)
    duration = int((time.monotonic() - (state["shown_at"] or time.monotonic())) * 1000)
    answer_task(db, project, task_id, labels, user=current_user(), duration_ms=duration)
    state["history"] = (state["history"] + [task_id])[-10:]
    state["task"] = None
    st.session_state["review-message"] = f"Saved {', '.join(labels)} for task {task_id}"


def _skip(project: Project, task_id: int) -> None:
    state = _state(project)
    state["skipped"].append(task_id)
    state["task"] = None


def _undo(project: Project) -> None:
    state = _state(project)
    if state["history"]:
        task_id = state["history"].pop()
        undo_answer(db, project, task_id)
        state["task"] = task_id
        st.session_state["review-message"] = f"Undone: task {task_id} is open again"


@st.fragment
def review_loop() -> None:
    state = _state(project)
    counts = task_counts(db, project)
    st.caption(
        f"{counts['open'] + counts['in progress']} open · {counts['completed']} completed · "
        f"{counts['expired']} expired"
    )
    if state["task"] is None:
        tasks = next_tasks(db, project, n=1, exclude=tuple(state["skipped"]))
        state["task"] = tasks[0]["id"] if tasks else None
        state["shown_at"] = time.monotonic()
    if state["task"] is None:
        st.info("No open review tasks. Open some with a rule above.")
        return
    task = get_task(db, project, state["task"])
    if task["status"] not in OPEN_STATES:
        state["task"] = None
        st.rerun(scope="fragment")
    item = get_item(db, project, task["item_id"])
    show_item(db, project, item)
    predicted = task["predicted"]
    st.markdown(
        f"Model says **{', '.join(predicted) or '(none)'}** with confidence "
        f"**{task['confidence']:.2f}** · flagged because confidence < {task['rule']['below']:.2f}"
    )
    probabilities = task.get("probabilities") or []
    if probabilities and len(probabilities) == len(project.classes):
        top = sorted(zip(project.classes, probabilities, strict=True), key=lambda x: -x[1])[:3]
        st.caption("Top 3: " + " · ".join(f"{c} {p:.2f}" for c, p in top))
    with st.container(horizontal=True, key="review-actions"):
        st.button(
            f"Accept {', '.join(predicted)}", key="accept", shortcut="Enter", type="primary",
            on_click=_answer, args=(project, task["id"], predicted), disabled=not predicted,
        )
        st.button("Skip", key="review-skip", shortcut="S", on_click=_skip,
                  args=(project, task["id"]))
        st.button("Undo", key="review-undo", shortcut="U", on_click=_undo, args=(project,),
                  disabled=not state["history"])
    st.caption("Or correct it:")
    with st.container(horizontal=True, key="review-classes"):
        for i, label in enumerate(project.classes):
            st.button(label, key=f"fix-{i}", shortcut=shortcut_for(i), on_click=_answer,
                      args=(project, task["id"], [label]))
    if message := st.session_state.get("review-message"):
        st.caption(message)


review_loop()

st.divider()
if st.button("Retrain from corrected labels", key="retrain"):
    try:
        job_id = start_training(db, project)
        st.success(f"Started training job {job_id}; follow it on the **Train** page.")
    except GroundworkError as exc:
        st.error(str(exc))
