"""Label page: one item at a time, keyboard first (1..9 classes, S skip, U undo).

Multi-label: 1..9 toggle tags, Enter submits them (or accepts the suggested set),
0 answers that no tag applies.

The loop runs in a fragment so an answer re-renders only the item; the next
item comes from `lease_next_items`: `next_items` (an indexed query over stored
model scores) without the items other annotators hold, leased to this person
for a few minutes so two people are not shown the same item (issue 6).
Answer buttons are keyed by item, so a key press meant for one item can never
land on the next one (issue 3).
"""

from __future__ import annotations

import json
import time

import pandas as pd
import streamlit as st

from labeling.annotations import (
    answer_progress,
    labels_per_hour,
    recent_annotations,
    record_annotation,
    retract_annotation,
    validate_labels,
)
from labeling.autolabel import auto_label_count
from labeling.consolidation import agreement
from labeling.errors import GroundworkError
from labeling.hooks import answers_saved
from labeling.items import get_item
from labeling.leases import default_lease_seconds, lease_item, lease_next_items, release_lease
from labeling.pages.common import (
    current_account,
    current_project,
    current_user,
    get_db,
    require,
    shortcut_for,
    show_item,
)
from labeling.projects import Project, set_annotations_per_item
from labeling.queue import (
    interval_half_width,
    labeling_progress,
    next_items,
    prediction_for,
    promoted_model_id,
    queue_suggestion,
)
from labeling.users import allowed

db = get_db()
project = current_project(db)
st.title(f"Label · {project.name}")


def _instructions(project: Project) -> None:
    """Instructions (Markdown, never raw HTML) and a few trusted examples per class, collapsed.

    Shown when either exists, so a project with no written instructions still
    shows what each class looks like. Which items are examples is decided in
    `labeling.examples`; this only draws them, always as data: text through
    `st.text`, names escaped before they reach Markdown. (Imported here so the
    page's import list stays as it is.)
    """
    from labeling.examples import class_examples, example_rows, literal_markdown, snippet
    from labeling.items import media_file
    from labeling.media import display_image

    examples = class_examples(db, project)
    if not project.instructions and not any(examples.values()):
        return
    with st.expander("Instructions", expanded=False):
        if project.instructions:
            st.markdown(project.instructions)
        if not any(examples.values()):
            return
        st.caption("Examples: items whose agreed label is the class (pinned ones first).")
        for index, (label, chosen) in enumerate(examples.items()):
            # Keyed containers, and no st.text or image captions, so the examples never
            # shadow the item being labeled below them (pages and tests look those up).
            with st.container(key=f"examples-{index}"):
                st.markdown(f"**{literal_markdown(label)}**")
                pinned = sum(example.pinned for example in chosen)
                if not chosen:
                    st.caption("No example yet.")
                elif project.modality == "image":
                    with st.container(horizontal=True):
                        for example in chosen:
                            path = media_file(db, example.item)
                            if path.exists():
                                st.image(display_image(path), width=96,
                                         alt=f"example of {label}: {example.item.key}")
                elif project.modality == "text":
                    for example in chosen:
                        st.code(snippet(example.item.content), language=None, wrap_lines=True)
                else:
                    st.dataframe(example_rows(chosen), hide_index=True)
                if pinned:
                    st.caption(f"📌 The first {pinned} pinned by the project."
                               if pinned > 1 else "📌 The first one is pinned by the project.")

_instructions(project)


def _state(project: Project) -> dict:
    return st.session_state.setdefault(
        f"label-{project.id}",
        {"current": None, "skipped": [], "history": [], "shown_at": None, "selected": [],
         "message": None, "cursor": None},
    )


def _answer(project: Project, labels: list[str], item_id: int | None = None) -> None:
    """Record an answer to the item shown; `item_id` is the item the pressed button was drawn
    for, so a press that arrives after the page moved on is dropped, never given to the
    next item (issue 3)."""
    state = _state(project)
    if not labels and not project.multi_label:
        return  # only a multi-label answer may be empty ("No tags apply")
    if state.get("cursor") is not None:
        _change(project, labels, item_id)
        return
    current = state["current"]
    if current is None:
        return
    if item_id is not None and item_id != current:
        return  # a stale key press for an item no longer on screen
    duration = int((time.monotonic() - (state["shown_at"] or time.monotonic())) * 1000)
    require(current_account(db), "label", project)  # roles (issue 6)
    user = current_user()
    annotation_id = record_annotation(
        db, project, current, labels, user=user, source="human", duration_ms=duration
    )
    release_lease(db, project, current, user)  # answered: the item's lease is done (issue 6)
    state["history"] = (state["history"] + [(annotation_id, current)])[-10:]
    state["message"] = f"Saved {_names(labels)}"
    state["current"], state["selected"] = None, []
    answers_saved(db, project)


def _change(project: Project, labels: list[str], item_id: int | None = None) -> None:
    """A new answer to an item from the history replaces the old one (which stays on record)."""
    state = _state(project)
    old_id, shown = state["history"][state["cursor"]]
    if item_id is not None and item_id != shown:
        return  # a stale key press for another answer of the history
    require(current_account(db), "label", project)  # roles (issue 6)
    new_id = record_annotation(db, project, shown, labels, user=current_user(),
                               source="human", duration_ms=None)
    retract_annotation(db, project, old_id)
    state["history"][state["cursor"]] = (new_id, shown)
    state["message"] = f"Changed to {_names(labels)}"
    state["selected"] = []
    answers_saved(db, project)
    _forward(project)


def _back(project: Project) -> None:
    """Left arrow: look at (and possibly change) earlier answers of this session."""
    state = _state(project)
    if not state["history"]:
        state["message"] = "No earlier answers in this session"
        return
    cursor = state.get("cursor")
    state["cursor"] = len(state["history"]) - 1 if cursor is None else max(cursor - 1, 0)
    state["selected"] = []


def _forward(project: Project) -> None:
    """Right arrow: the next answer in the history, then back to the queue."""
    state = _state(project)
    cursor = state.get("cursor")
    if cursor is None:
        return
    state["cursor"] = cursor + 1 if cursor + 1 < len(state["history"]) else None
    state["selected"] = []


def _skip(project: Project) -> None:
    state = _state(project)
    if state.get("cursor") is not None:
        _forward(project)
        return
    if state["current"] is not None:
        state["skipped"].append(state["current"])
        release_lease(db, project, state["current"], current_user())  # free it for others
    state["message"] = "Skipped"
    state["current"], state["selected"] = None, []


def _undo(project: Project) -> None:
    state = _state(project)
    if not state["history"]:
        state["message"] = "Nothing to undo"
        return
    require(current_account(db), "label", project)  # roles (issue 6)
    annotation_id, item_id = state["history"].pop()
    state["cursor"] = None
    retract_annotation(db, project, annotation_id)
    lease_item(db, project, item_id, current_user(), default_lease_seconds())  # back on screen
    state["message"] = "Undone: the item is back"
    state["current"], state["selected"], state["shown_at"] = item_id, [], time.monotonic()


def _submit(project: Project, item_id: int, suggested: list[str] | None) -> None:
    """Multi-label Enter: the tags toggled when it is pressed, else the suggested set.

    Read at press time (a toggle pressed just before Enter counts); with
    nothing toggled and no suggestion there is nothing to submit, never an
    empty answer nobody chose ("No tags apply" is its own key).
    """
    selected = [c for c in project.classes if c in _state(project)["selected"]]
    if selected:
        _answer(project, selected, item_id)
    elif suggested is not None:
        _answer(project, suggested, item_id)


def _toggle(project: Project, label: str) -> None:
    selected = _state(project)["selected"]
    if label in selected:
        selected.remove(label)
    else:
        selected.append(label)


def _names(labels: list[str]) -> str:
    """An answer as a person reads it; an empty multi-label answer is "no tags"."""
    return ", ".join(labels) if labels else "no tags"


def _short(predicted: list[str]) -> str:
    """A predicted number as a person reads it (4 significant digits)."""
    try:
        return f"{float(predicted[0]):.4g}"
    except (IndexError, TypeError, ValueError):
        return "(none)"


def _typed_number(project: Project, item_id: int, suggested: list[str]) -> None:
    """A regression answer from the form: the number typed, or the suggestion when empty."""
    typed = str(st.session_state.get(f"value-{item_id}") or "").strip()
    answer = typed or (suggested[0] if suggested else "")
    if not answer:
        _state(project)["message"] = "Type a number (or S to skip)"
        return
    try:
        checked = validate_labels(project, answer)
    except GroundworkError as exc:
        _state(project)["message"] = str(exc)
        return
    _answer(project, checked, item_id)


def _number_form(project: Project, suggestion: dict | None, item_id: int) -> None:
    """Regression: type the number, Enter saves; Enter on an empty box accepts the suggestion."""
    suggested = list((suggestion or {}).get("predicted") or [])[:1]
    with st.form(key=f"number-{item_id}", border=False, enter_to_submit=True):
        st.text_input(
            "Value", key=f"value-{item_id}",
            placeholder=f"Enter alone accepts {suggested[0]}" if suggested else "a number",
        )
        st.form_submit_button("Save [Enter]", type="primary", on_click=_typed_number,
                              args=(project, item_id, suggested))


def _buttons(project: Project, state: dict, suggestion: dict | None, item_id: int) -> None:
    """Classes 1..9, Enter, S, U/Backspace and the arrows: every action has a key.

    The answer buttons' keys name the item (`cls-{i}-{item_id}`, `submit-...`,
    `accept-...`): a second press of a shortcut that reaches the server after
    the page moved on is a press of a button that no longer exists, and
    `_answer` drops it, instead of answering the next item unseen (issue 3).
    """
    if project.regression:
        _number_form(project, suggestion, item_id)
    with st.container(horizontal=True, key="class-buttons"):
        for i, label in enumerate(project.classes):
            if project.multi_label:
                picked = label in state["selected"]
                st.button(
                    label, key=f"cls-{i}-{item_id}", shortcut=shortcut_for(i),
                    type="primary" if picked else "secondary",
                    on_click=_toggle, args=(project, label),
                )
            else:
                st.button(
                    label, key=f"cls-{i}-{item_id}", shortcut=shortcut_for(i),
                    on_click=_answer, args=(project, [label], item_id),
                )
        if project.multi_label:  # an empty set is an answer too (labeling.annotations.NO_TAGS)
            st.button("No tags apply", key=f"none-{item_id}", shortcut="0",
                      on_click=_answer, args=(project, [], item_id))
    suggested = [c for c in (suggestion or {}).get("predicted", []) if c in project.classes]
    with st.container(horizontal=True, key="actions"):
        if project.multi_label:
            # Enter submits the toggled tags, or accepts the suggested set if none are toggled
            # (an empty suggestion too: the model gives no tag p >= 0.5).
            selected = [c for c in project.classes if c in state["selected"]]
            st.button(
                f"Submit {', '.join(selected)}" if selected else
                f"Accept {_names(suggested)}" if suggestion else "Submit",
                key=f"submit-{item_id}", shortcut="Enter", type="primary",
                on_click=_submit, args=(project, item_id, suggested if suggestion else None),
                disabled=not (selected or suggestion),
            )
        elif suggested and not project.regression:
            st.button(
                f"Accept {suggested[0]}", key=f"accept-{item_id}", shortcut="Enter",
                type="primary", on_click=_answer, args=(project, suggested[:1], item_id),
            )
        st.button("Skip", key="skip", shortcut="S", on_click=_skip, args=(project,))
        st.button("Undo", key="undo", shortcut="U", on_click=_undo, args=(project,),
                  disabled=not state["history"])
        st.button("Undo", key="undo-backspace", shortcut="Backspace", on_click=_undo,
                  args=(project,), disabled=not state["history"], type="tertiary")
        st.button("Back", key="back", shortcut="Left", on_click=_back, args=(project,),
                  disabled=not state["history"] or state.get("cursor") == 0)
        st.button("Forward", key="forward", shortcut="Right", on_click=_forward,
                  args=(project,), disabled=state.get("cursor") is None)
    if state.get("message"):
        st.caption(state["message"])


def _show_history(project: Project, state: dict) -> None:
    cursor = state["cursor"]
    annotation_id, item_id = state["history"][cursor]
    given = next((a["labels"] for a in recent_annotations(db, project, current_user(), 10)
                  if a["id"] == annotation_id), "[]")
    st.info(
        f"Your answer {cursor + 1} of {len(state['history'])} in this session: "
        f"**{_names(json.loads(given))}**. A new answer replaces it; "
        "← and → move through your answers, → past the last returns to the queue."
    )
    show_item(db, project, get_item(db, project, item_id))
    _buttons(project, state, None, item_id)


def _progress(project: Project) -> int:
    """The progress bar; returns how many items wait for other annotators' answers.

    With one answer wanted per item: items labeled, from indexes only (the
    click path). With k > 1: answers given of items x k, since an item one
    person answered is not done until k people have.
    """
    if project.annotations_per_item <= 1:
        counts = labeling_progress(db, project)
        st.progress(
            counts["labeled"] / counts["items"] if counts["items"] else 0.0,
            text=f"{counts['labeled']} of {counts['items']} items labeled",
        )
        return 0
    counts = answer_progress(db, project)
    st.progress(
        counts["answers"] / counts["answers_wanted"] if counts["answers_wanted"] else 0.0,
        text=f"{counts['answers']} of {counts['answers_wanted']} answers ({counts['complete']} "
             f"of {counts['items']} items have all {counts['wanted']})",
    )
    return counts["waiting"]


@st.fragment
def labeling_loop() -> None:
    state = _state(project)
    waiting = _progress(project)
    if state.get("cursor") is not None and state["cursor"] < len(state["history"]):
        _show_history(project, state)
        return
    state["cursor"] = None
    user = current_user()
    if state["current"] is None:
        if allowed(current_account(db), "label", project):
            # Leased to this person for a few minutes: others are served other items, and a
            # reload shows this one again (issue 6). Answer, skip or expiry frees it.
            seconds = default_lease_seconds()
            picked = lease_next_items(db, project, n=1, user=user, seconds=seconds,
                                      exclude=state["skipped"])
            if not picked and state["skipped"]:
                state["skipped"] = []
                picked = lease_next_items(db, project, n=1, user=user, seconds=seconds)
        else:  # may look but not answer (answers are refused): nothing is held for them
            picked = next_items(db, project, n=1, exclude=state["skipped"], user=user)
            if not picked and state["skipped"]:
                state["skipped"] = []
                picked = next_items(db, project, n=1, user=user)
        state["current"] = picked[0]["id"] if picked else None
        state["reason"] = picked[0]["reason"] if picked else None
        state["shown_at"] = time.monotonic()
    if state["current"] is None and next_items(db, project, n=1, user=user):
        # Open items remain, but each is leased to other annotators right now.
        st.info("All remaining items are being labeled by others; try again in a minute.")
        st.button("Try again", key="retry", icon=":material/refresh:")  # a rerun asks again
        if state["history"]:
            st.button("Back", key="back", shortcut="Left", on_click=_back, args=(project,))
        return
    if state["current"] is None and waiting:
        # This person answered every item they may; others still owe answers (issue 3).
        people = project.annotations_per_item
        st.info(
            f"You have answered every item you can. {waiting} "
            f"{'item waits' if waiting == 1 else 'items wait'} for answers from other "
            f"annotators (each item goes to {people} different people, and their answers are "
            "consolidated once it has them): nothing to train on from "
            f"{'it' if waiting == 1 else 'them'} until then."
        )
        if state["history"]:
            st.button("Back", key="back", shortcut="Left", on_click=_back, args=(project,))
        return
    if state["current"] is None:
        machine = auto_label_count(db, project)
        st.success(
            "Every item has a label"
            + (f" ({machine} from the model: see **Auto-label** to revert them)" if machine
               else "")
            + ". Train a model on the **Train** page."
        )
        if state["history"]:
            st.button("Back", key="back", shortcut="Left", on_click=_back, args=(project,))
        return
    item = get_item(db, project, state["current"])
    chosen_by = {
        "margin": "model uncertainty (margin)",
        "entropy": "model uncertainty (entropy)",
        "uncertainty": "model uncertainty (least confident)",
        "batch": "a diverse, class-balanced batch of uncertain items",
        "validation": "random validation sample (keeps the accuracy estimates honest)",
    }.get(state.get("reason") or "random", "random order")
    st.caption(f"Item {item.id} · chosen by {chosen_by}")
    show_item(db, project, item)
    model_id = promoted_model_id(db, project)
    suggestion = prediction_for(db, model_id, item.id) if model_id else None
    source = "Model"
    if suggestion is None:
        suggestion, source = queue_suggestion(db, item.id), "Quick model (refit as you label)"
    if suggestion and project.regression:
        half = interval_half_width(db, model_id) if model_id and source == "Model" else None
        around = ""
        if half is not None:
            value = float(suggestion["predicted"][0])
            around = f" (90% interval {value - half:.4g} – {value + half:.4g})"
        st.caption(f"{source} suggests **{_short(suggestion['predicted'])}**{around}")
    elif suggestion:
        st.caption(
            f"{source} suggests **{', '.join(suggestion['predicted']) or '(none)'}** "
            f"(confidence {suggestion['confidence']:.2f})"
        )
    _buttons(project, state, suggestion, item.id)

labeling_loop()

with st.expander("Annotators: answers per item and agreement"):
    if allowed(current_account(db), "settings", project):  # a project setting: admins only
        wanted = st.number_input("Answers wanted per item", min_value=1, max_value=5,
                                 value=project.annotations_per_item, key="answers-per-item",
                                 help="Each item goes to this many different people; their "
                                 "answers are consolidated (Dawid-Skene, majority as fallback).")
        if int(wanted) != project.annotations_per_item:
            require(current_account(db), "settings", project)  # roles (issue 6)
            set_annotations_per_item(db, project, int(wanted))
            st.rerun()
    else:  # annotators see the setting, read only
        people = project.annotations_per_item
        st.caption("Each item goes to one person. An admin sets this." if people == 1 else
                   f"Each item goes to {people} different people; their answers are "
                   "consolidated (Dawid-Skene, majority as fallback). An admin sets this.")
    report = agreement(db, project)
    if report["alpha"] is not None:
        st.caption(f"Krippendorff's alpha {report['alpha']:.3f} over "
                   f"{report['items_with_overlap']} items answered by two or more people.")
    if report["annotators"]:
        st.dataframe(pd.DataFrame(report["annotators"]), hide_index=True, key="annotators")

with st.expander("Pace: labels per hour, per person"):
    pace = labels_per_hour(db, project)
    if pace.empty:
        st.caption("No answers yet.")
    else:
        untimed = int(pace["untimed"].sum())
        st.caption("From the time each answer took (item shown to answer saved)."
                   + (f" {untimed} answer{'s' if untimed != 1 else ''} without a recorded "
                      "time (given from the CLI or changed from the history) "
                      f"{'are' if untimed != 1 else 'is'} left out." if untimed else ""))
        st.dataframe(pace.rename(columns={"ms": "total ms", "untimed": "left out (no time)"}),
                     hide_index=True, key="pace-table")
