"""Per-class examples: a few trustworthy items that show annotators what each class looks like.

Examples come from labels people already gave, so the guide grows with the
project instead of being written up front. An example is only as good as its
label, so only curated labels count (consolidated when several people answer;
never machine labels), an item whose gold contradicts its label is never shown,
and items that agree with gold or that several people agreed on come first.
A project can also pin items it chose by hand; pins are shown before the
automatic picks. Pins live in the `settings` table as JSON under
`examples:<project id>`, so the feature needs no schema change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
import sqlite_utils

from labeling.annotations import CURATED_SOURCES, current_labels, live_annotations
from labeling.errors import GroundworkError
from labeling.items import Item, get_item, get_items
from labeling.projects import Project
from labeling.store import get_setting, set_setting

EXAMPLES_PER_CLASS = 3
SNIPPET_CHARS = 280
# CommonMark lets any ASCII punctuation be backslash-escaped; Streamlit adds
# `$` (maths) and `:` (emoji and colour directives) on top of it.
_MARKDOWN_SPECIAL = set("\\`*_{}[]()<>#+-.!|~$:&\"'=^")


@dataclass(frozen=True)
class Candidate:
    """Why an item could show a class: what it is labeled, who agreed, what gold says."""

    item_id: int
    labels: tuple[str, ...]  # the item's current curated label(s)
    agreeing: int = 0  # people whose latest answer is exactly those labels
    gold_agrees: bool | None = None  # None when the item has no gold


@dataclass(frozen=True)
class Example:
    """One item shown as an example of `label`, with the reasons it was chosen."""

    item: Item
    label: str
    pinned: bool
    labels: tuple[str, ...] = ()  # the item's current curated label(s); empty for a bare pin
    agreeing: int = 0  # people whose latest answer is exactly that label
    gold_agrees: bool | None = None  # None when the item has no gold


def settings_key(project: Project) -> str:
    """One settings row per project keeps pins out of the schema."""
    return f"examples:{project.id}"


def pinned_examples(db: sqlite_utils.Database, project: Project) -> dict[str, list[int]]:
    """Pinned item ids per class, in the order they were pinned (classes without pins omitted).

    A value that is not the JSON this module writes is treated as no pins, so a
    hand-edited setting can never break the Label page.
    """
    raw = get_setting(db, settings_key(project))
    try:
        stored = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    if not isinstance(stored, dict):
        return {}
    pins: dict[str, list[int]] = {}
    for label, ids in stored.items():
        if isinstance(ids, list):
            clean = [int(i) for i in ids if isinstance(i, int) and not isinstance(i, bool)]
            if clean:
                pins[str(label)] = clean
    return pins


def _check_label(project: Project, label: str) -> str:
    label = str(label).strip()
    if label not in project.classes:
        raise GroundworkError(
            f"unknown class {label!r} for project {project.name!r}: classes are "
            + (", ".join(project.classes) or "none yet")
        )
    return label


def pin_example(
    db: sqlite_utils.Database, project: Project, label: str, item_id: int
) -> dict[str, list[int]]:
    """Pin an item as an example of `label` (shown before automatic picks); returns the pins.

    The pin is the project's own choice, so the item need not carry that label
    yet. Pinning twice is a no-op. Each class holds at most `EXAMPLES_PER_CLASS`
    pins, because only that many examples are shown: a pin that could never be
    seen is refused rather than silently ignored. Bad input changes nothing.
    """
    label = _check_label(project, label)
    item = get_item(db, project, item_id)
    pins = pinned_examples(db, project)
    current = pins.get(label, [])
    if item.id in current:
        return pins
    if len(current) >= EXAMPLES_PER_CLASS:
        raise GroundworkError(
            f"class {label!r} already has {len(current)} pinned examples (the most shown): "
            "unpin one first"
        )
    pins[label] = [*current, item.id]
    set_setting(db, settings_key(project), json.dumps(pins, sort_keys=True))
    return pins


def unpin_example(
    db: sqlite_utils.Database, project: Project, label: str, item_id: int
) -> dict[str, list[int]]:
    """Take a pin back; returns the remaining pins.

    The item is not looked up, so a pin can be removed even if its item no
    longer exists; unpinning something that is not pinned is an error, since it
    usually means a wrong id or class.
    """
    label = _check_label(project, label)
    pins = pinned_examples(db, project)
    current = pins.get(label, [])
    if int(item_id) not in current:
        raise GroundworkError(
            f"item {item_id} is not a pinned example of {label!r} in project "
            f"{project.name!r}: pinned are {', '.join(map(str, current)) or 'none'}"
        )
    remaining = [i for i in current if i != int(item_id)]
    if remaining:
        pins[label] = remaining
    else:
        pins.pop(label)
    set_setting(db, settings_key(project), json.dumps(pins, sort_keys=True))
    return pins


def _agreeing_people(db: sqlite_utils.Database, project: Project,
                     labels: pd.DataFrame) -> dict[int, int]:
    """Per item, how many people's latest curated answer equals its current label."""
    answers = live_annotations(db, project)
    answers = answers[answers["source"].isin(CURATED_SOURCES)]
    if answers.empty:
        return {}
    latest = answers.sort_values("id").drop_duplicates(["item_id", "user"], keep="last")
    wanted = dict(zip(labels["item_id"], labels["labels"].map(sorted), strict=True))
    same = latest[[sorted(v) == wanted.get(i) for i, v in
                   zip(latest["item_id"], latest["labels"], strict=True)]]
    return {int(k): int(v) for k, v in same.groupby("item_id")["user"].nunique().items()}


def _gold_by_item(db: sqlite_utils.Database, project: Project) -> dict[int, list[str]]:
    """Only the gold column: ranking needs it for every labeled item, the content for three."""
    return {int(item_id): json.loads(gold) for item_id, gold in db.execute(
        "SELECT id, gold FROM items WHERE project_id = ? AND gold IS NOT NULL", [project.id])}


def rank_candidates(candidates: list[Candidate]) -> list[Candidate]:
    """Most trustworthy first, and always in the same order for the same labels.

    Agreement with gold beats no gold; then more people agreeing; then fewer
    labels on the item (in a multi-label project an item that is only this
    class shows it more clearly); the item id breaks ties. An item whose gold
    contradicts its label is dropped: it would teach the wrong thing.
    """
    kept = [c for c in candidates if c.gold_agrees is not False]
    return sorted(kept, key=lambda c: (c.gold_agrees is not True, -c.agreeing,
                                       len(c.labels), c.item_id))


def class_examples(
    db: sqlite_utils.Database, project: Project, per_class: int = EXAMPLES_PER_CLASS
) -> dict[str, list[Example]]:
    """Up to `per_class` examples for every class of the project, pinned ones first.

    Every class is a key (in the project's order), with an empty list when it
    has no example yet. Automatic picks are items whose curated, consolidated
    label contains the class, ranked by `rank_candidates`. Pins of an item that
    no longer exists are skipped.
    """
    gold = _gold_by_item(db, project)
    chosen: dict[str, list[tuple[Candidate, bool]]] = {label: [] for label in project.classes}
    for label, ids in pinned_examples(db, project).items():
        if label in chosen:
            chosen[label] = [(Candidate(i, (), 0, _agrees(gold.get(i), label)), True)
                             for i in ids[:per_class]]

    labels = current_labels(db, project, curated_only=True)
    if not labels.empty:
        agreeing = _agreeing_people(db, project, labels)
        candidates: dict[str, list[Candidate]] = {label: [] for label in chosen}
        for item_id, given in zip(labels["item_id"], labels["labels"], strict=True):
            for label in given:
                if label in candidates:
                    candidates[label].append(Candidate(
                        int(item_id), tuple(given), agreeing.get(int(item_id), 0),
                        _agrees(gold.get(int(item_id)), label)))
        for label, found in candidates.items():
            taken = {c.item_id for c, _ in chosen[label]}
            for candidate in rank_candidates(found):
                if len(chosen[label]) >= per_class:
                    break
                if candidate.item_id not in taken:
                    chosen[label].append((candidate, False))

    wanted = sorted({c.item_id for picks in chosen.values() for c, _ in picks})
    items = {item.id: item for item in get_items(db, project, wanted)}
    return {
        label: [Example(items[c.item_id], label, pinned, c.labels, c.agreeing, c.gold_agrees)
                for c, pinned in picks if c.item_id in items]
        for label, picks in chosen.items()
    }


def _agrees(gold: list[str] | None, label: str) -> bool | None:
    return None if gold is None else label in gold


def snippet(text: str | None, limit: int = SNIPPET_CHARS) -> str:
    """A text item cut to a glance: whitespace folded to single spaces, an ellipsis if cut."""
    folded = " ".join((text or "").split())
    return folded if len(folded) <= limit else folded[: limit - 1].rstrip() + "…"


def literal_markdown(text: str) -> str:
    """Escape a user-given name so Markdown shows it as typed (no markup, links or HTML)."""
    return "".join(f"\\{ch}" if ch in _MARKDOWN_SPECIAL else ch for ch in str(text))


def example_rows(examples: list[Example]) -> pd.DataFrame:
    """Tabular examples as one small table: the item key, then the row's fields as text.

    Values become text so a column mixing numbers and words still renders.
    """
    rows = [{"key": e.item.key, **{k: str(v) for k, v in e.item.row().items()}}
            for e in examples]
    return pd.DataFrame(rows).fillna("")
