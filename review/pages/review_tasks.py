"""Review page: open tasks (a quick rule or a saved workflow), then review them keyboard first.

Enter accepts the model's prediction (or, for a suspected label error, the
suggested label), 1..9 picks another class, K keeps a given label, S skips,
U undoes. In a multi-label project, as on the Label page, 1..9 toggle tags
and Enter submits the toggled set (with none toggled it accepts the
predicted set). Answer and skip buttons are keyed by the task on screen, so
a key pressed twice never answers the next task unseen. The task on screen
is claimed for the reviewer (`claim_tasks`), so two reviewers are never
shown the same task; a skip frees it for others, and skipped tasks come
back once nothing else is left. Below: the model's
accuracy on reviewed items with Wilson intervals, the human-loop export, and
retraining from the corrected labels.
"""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from automl.jobs import start_training
from labeling.errors import GroundworkError
from labeling.examples import literal_markdown
from labeling.items import get_item
from labeling.pages.common import (
    current_account,
    current_project,
    current_user,
    get_db,
    require,
    shortcut_for,
    show_item,
    stop_unless_classes,
)
from labeling.projects import Project
from labeling.store import utcnow
from labeling.users import allowed
from review.report import loops_jsonl, reviewed_accuracy
from review.rules import open_review, preview_review
from review.tasks import (
    OPEN_STATES,
    answer_task,
    claim_task,
    claim_tasks,
    get_task,
    held_by_others,
    release_claim,
    task_counts,
    undo_answer,
)
from review.workflows import list_workflows, preview, refresh_workflows, run_workflow

db = get_db()
project = current_project(db)
st.title(f"Review · {project.name}")
stop_unless_classes(project, "review")

try:
    for name, opened in refresh_workflows(db, project).items():
        if opened:
            st.toast(f"New model promoted: workflow {name} opened {opened} tasks")
except GroundworkError as exc:
    st.warning(str(exc))


def _names(labels: list[str]) -> str:
    return ", ".join(literal_markdown(v) for v in labels) or "(none)"


def _why_text(task: dict) -> str:
    """The conditions that fired; only the class names in them are user text to escape."""
    parts = []
    for text in task["fired"]:
        for cls in project.classes:
            text = text.replace(f"when predicted {cls}", f"when predicted {literal_markdown(cls)}")
        parts.append(text)
    return "; ".join(parts)


with st.expander("Open review tasks", expanded=not any(task_counts(db, project).values())):
    below = st.slider(
        "Flag predictions with confidence below", 0.05, 1.0, 0.7, 0.05, key="review-below"
    )
    st.caption(f"This rule would open {preview_review(db, project, below)} new tasks.")
    if st.button("Open review tasks", key="open-review"):
        try:
            require(current_account(db), "manage_review", project)  # roles (issue 6)
            opened = open_review(db, project, below)
            st.session_state["review-message"] = f"Opened {opened} review tasks"
        except GroundworkError as exc:
            st.error(str(exc))
    workflows = list_workflows(db, project)
    if workflows:
        chosen = st.selectbox("Or run a saved workflow", [w.name for w in workflows],
                              key="run-workflow-name")
        workflow = next(w for w in workflows if w.name == chosen)
        shown = preview(db, project, workflow.conditions, source=workflow.source,
                        salt=workflow.name)
        note = " (labels changed since the last check: running re-checks them)" \
            if shown.get("stale") else ""
        st.caption(f"{literal_markdown(workflow.description)}: it would open "
                   f"{shown['would_open']} new tasks{note}.")
        if st.button("Run workflow", key="run-workflow"):
            try:
                require(current_account(db), "manage_review", project)  # roles (issue 6)
                with st.spinner("Evaluating the workflow..."):
                    opened = run_workflow(db, project, chosen)
                st.session_state["review-message"] = f"Opened {opened} review tasks"
            except GroundworkError as exc:
                st.error(str(exc))
    st.caption("Create or change saved workflows (conditions, reviewers, expiry) on the "
               "**Workflows** page.")


def _state(project: Project) -> dict:
    return st.session_state.setdefault(
        f"review-{project.id}", {"skipped": [], "history": [], "shown_at": None, "task": None}
    )


def _answer(project: Project, task_id: int, labels: list[str]) -> None:
    state = _state(project)
    duration = int((time.monotonic() - (state["shown_at"] or time.monotonic())) * 1000)
    try:
        require(current_account(db), "review", project)  # roles (issue 6)
        answer_task(db, project, task_id, labels, user=current_user(), duration_ms=duration)
    except GroundworkError as exc:  # expired or answered meanwhile: move on
        st.session_state["review-message"] = str(exc)
        state["task"] = None
        return
    state["history"] = (state["history"] + [task_id])[-10:]
    state["task"] = None
    st.session_state["review-message"] = f"Saved {', '.join(labels)} for task {task_id}"


def _toggle(project: Project, task_id: int, label: str) -> None:
    """Multi-label: a digit toggles a tag of the task on screen (a late press is dropped)."""
    state = _state(project)
    if state["task"] != task_id:
        return
    selected = state.setdefault("selected", [])
    if label in selected:
        selected.remove(label)
    else:
        selected.append(label)


def _submit(project: Project, task_id: int, predicted: list[str]) -> None:
    """Multi-label Enter: the toggled tags, or the predicted set when none are toggled."""
    state = _state(project)
    chosen = [c for c in project.classes if c in state.get("selected", [])]
    _answer(project, task_id, chosen or predicted)


def _skip(project: Project, task_id: int) -> None:
    """Not answered: the task goes back to the others now, and to this reviewer later."""
    state = _state(project)
    state["skipped"].append(task_id)
    state["task"] = None
    release_claim(db, project, task_id, current_user())
    st.session_state["review-message"] = f"Skipped task {task_id}"


def _undo(project: Project) -> None:
    state = _state(project)
    if state["history"]:
        task_id = state["history"].pop()
        try:
            require(current_account(db), "review", project)  # roles (issue 6)
            undo_answer(db, project, task_id, user=current_user())
            claim_task(db, project, task_id, current_user())  # back on this reviewer's screen
        except GroundworkError as exc:
            st.session_state["review-message"] = str(exc)
            return
        state["task"] = task_id
        st.session_state["review-message"] = f"Undone: task {task_id} is open again"


def _why(task: dict) -> None:
    """What the model said, or for a label check what was given, and why it was flagged."""
    predicted = task["predicted"]
    if task.get("given"):
        who = ", ".join(task.get("given_by") or []) or "unknown"
        st.markdown(
            f"Given label **{_names(task['given'])}** by {literal_markdown(who)} · "
            f"suggested **{_names(predicted)}** · likely wrong: "
            f"**{(task.get('issue_score') or 0):.2f}**")
    else:
        st.markdown(
            f"Model says **{_names(predicted)}** with confidence "
            f"**{task['confidence']:.2f}** · flagged because {_why_text(task)}")
    if task.get("given"):
        st.caption(f"Flagged because {_why_text(task)}")
    probabilities = task.get("probabilities") or []
    if probabilities and len(probabilities) == len(project.classes):
        top = sorted(zip(project.classes, probabilities, strict=True), key=lambda x: -x[1])[:3]
        st.caption("Top 3: " + " · ".join(f"{literal_markdown(c)} {p:.2f}" for c, p in top))
    details = []
    if task.get("workflow"):
        details.append(f"workflow {literal_markdown(task['workflow'])}")
    if (task.get("reviewers") or 1) > 1:
        details.append(f"{task['reviewers']} reviewers per task")
    if task.get("expires_at"):
        details.append(f"expires {task['expires_at'][:16].replace('T', ' ')} UTC")
    if details:
        st.caption(" · ".join(details))
    if task.get("instructions"):
        with st.expander("Instructions", expanded=False):
            st.markdown(task["instructions"])


@st.fragment
def review_loop() -> None:
    state = _state(project)
    counts = task_counts(db, project)
    st.caption(
        f"{counts['open'] + counts['in progress']} open · {counts['completed']} completed · "
        f"{counts['expired']} expired"
    )
    user = current_user()
    if state["task"] is not None:
        try:  # the claim is renewed while the task is on screen
            claim_task(db, project, state["task"], user)
        except GroundworkError:  # answered, expired or taken over meanwhile: the next one
            state["task"] = None
    if state["task"] is None:
        tasks = claim_tasks(db, project, user, n=1, exclude=state["skipped"])
        if not tasks and state["skipped"]:  # skipped tasks come back once nothing else is left
            state["skipped"] = []
            tasks = claim_tasks(db, project, user, n=1)
        state["task"] = tasks[0]["id"] if tasks else None
        state["shown_at"] = time.monotonic()
    if state["task"] is None:
        if waiting := held_by_others(db, project, user):
            st.info(f"The {waiting} open tasks left are being reviewed by others right now; "
                    "try again in a minute.")
        else:
            st.info("No open review tasks. Open some with a rule or a workflow above.")
        return
    task = get_task(db, project, state["task"])
    if task["status"] not in OPEN_STATES or (task.get("expires_at")
                                              and task["expires_at"] <= utcnow()):
        state["task"] = None
        st.rerun(scope="fragment")
    item = get_item(db, project, task["item_id"])
    show_item(db, project, item)
    _why(task)
    predicted = task["predicted"]
    label_check = bool(task.get("given"))
    if state.get("selected_for") != task["id"]:  # a new task on screen: nothing toggled yet
        state["selected"], state["selected_for"] = [], task["id"]
    selected = [c for c in project.classes if c in state["selected"]]
    # Answer and skip buttons are keyed by the task shown, as the Label page keys its answer
    # buttons by item: a key pressed twice reaches the server the second time after it moved
    # on, and Streamlit runs a press's callback with the arguments of the button of that key
    # in the latest run, so under a fixed key the late press would answer the next task,
    # unseen. Under this task's key it finds no button and is dropped. Undo stays one key: it
    # takes back the latest answer, whichever task is on screen.
    task_id = task["id"]
    with st.container(horizontal=True, key="review-actions"):
        accept = "Accept suggestion" if label_check else "Accept"
        if project.multi_label:
            st.button(
                f"Submit {', '.join(selected)}" if selected else
                f"{accept} {', '.join(predicted) or '(no tags)'}",
                key=f"accept-{task_id}", shortcut="Enter", type="primary", on_click=_submit,
                args=(project, task_id, predicted), disabled=not (selected or predicted),
            )
        else:
            st.button(
                f"{accept} {', '.join(predicted)}", key=f"accept-{task_id}", shortcut="Enter",
                type="primary", on_click=_answer, args=(project, task_id, predicted),
                disabled=not predicted,
            )
        if label_check:
            st.button(f"Keep {', '.join(task['given'])}", key=f"keep-given-{task_id}",
                      shortcut="K", on_click=_answer, args=(project, task_id, task["given"]))
        st.button("Skip", key=f"review-skip-{task_id}", shortcut="S", on_click=_skip,
                  args=(project, task_id))
        st.button("Undo", key="review-undo", shortcut="U", on_click=_undo, args=(project,),
                  disabled=not state["history"])
    if project.multi_label:
        st.caption("Or correct it: toggle tags with 1..9, then Enter submits them"
                   + (f" (selected: {_names(selected)})" if selected else ""))
    else:
        st.caption("Or correct it:")
    with st.container(horizontal=True, key="review-classes"):
        for i, label in enumerate(project.classes):
            if project.multi_label:
                st.button(label, key=f"fix-{i}-{task_id}", shortcut=shortcut_for(i),
                          type="primary" if label in selected else "secondary",
                          on_click=_toggle, args=(project, task_id, label))
            else:
                st.button(label, key=f"fix-{i}-{task_id}", shortcut=shortcut_for(i),
                          on_click=_answer, args=(project, task_id, [label]))
    if message := st.session_state.get("review-message"):
        st.caption(message)


review_loop()


def _accuracy_table(report: dict) -> pd.DataFrame:
    rows = [("all reviewed", report["overall"]), ("random audits", report["audit"])]
    rows += [(f"predicted {r['class']}", r) for r in report["per_class"]]
    return pd.DataFrame([{
        "predictions": name, "reviewed": m["reviewed"], "correct": m["correct"],
        "accuracy": m["accuracy"],
        "95% interval": (f"{m['low']:.2f} – {m['high']:.2f}" if m["reviewed"] else ""),
    } for name, m in rows])


with st.expander("Model accuracy on reviewed items"):
    report = reviewed_accuracy(db, project)
    if report["overall"]["reviewed"]:
        st.dataframe(_accuracy_table(report), hide_index=True, width="stretch",
                     column_config={"accuracy": st.column_config.NumberColumn(format="%.3f")})
        st.caption(f"{report['how_measured']}; intervals: {report['interval']}.")
    else:
        st.caption("No reviewed predictions yet.")

st.download_button(
    "Export human loops (JSON Lines)", data=lambda: loops_jsonl(db, project),
    file_name=f"{project.name}-review.jsonl", mime="application/jsonl", key="export-loops",
    on_click="ignore", disabled=not allowed(current_account(db), "export", project))  # roles

st.divider()
if st.button("Retrain from corrected labels", key="retrain"):
    try:
        require(current_account(db), "train", project)  # roles (issue 6)
        job_id = start_training(db, project)
        st.success(f"Started training job {job_id}; follow it on the **Train** page.")
    except GroundworkError as exc:
        st.error(str(exc))
