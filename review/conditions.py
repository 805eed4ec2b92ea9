"""Activation conditions: when a prediction (or a given label) needs a person.

A condition is a small JSON document, stored with its workflow and with every
task it opens, so a reviewer can always see why an item was flagged:

    {"confidence_below": 0.7}                       the model is unsure
    {"confidence_below": 0.9, "class": "spam"}      ... when it predicts spam
    {"confidence_above": 0.99}                      suspiciously sure
    {"sample": 0.05}                                a random 5% audit
    {"label_error": true}                           a suspected label error
    {"any": [c1, c2, ...]}  /  {"all": [c1, c2, ...]}   OR / AND

Groups nest two levels deep at most (`{"any": [{"all": [...]}, ...]}`). The
random sample is decided by a hash of the workflow and the item id, so
running a workflow again draws the same sample. Everything here is pure:
`evaluate` takes one candidate and says which conditions fired.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

from labeling.errors import GroundworkError

LEAVES = ("confidence_below", "confidence_above", "sample", "label_error")
GROUPS = ("any", "all")
MAX_DEPTH = 2
SOURCES = ("pool", "labels")


@dataclass(frozen=True)
class Candidate:
    """What a condition can look at: one prediction, and for label checks the given label."""

    item_id: int
    predicted: list[str]
    confidence: float
    label_error: bool = False
    extra: dict = field(default_factory=dict, compare=False)


def in_sample(salt: str, item_id: int, share: float) -> bool:
    """A deterministic draw: the same workflow and item always land on the same side."""
    digest = hashlib.sha256(f"{salt}:{int(item_id)}".encode()).hexdigest()
    return int(digest[:12], 16) / float(1 << 48) < share


def _number(value, name: str, low: float, high: float, *, low_open: bool, high_open: bool):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise GroundworkError(f"{name} {value!r} is not a number: use a value in 0..1") from None
    too_low = number <= low if low_open else number < low
    too_high = number >= high if high_open else number > high
    if not math.isfinite(number) or too_low or too_high:
        span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise GroundworkError(f"{name} {number:g} is outside {span}")
    return number


def _leaf(node: dict, classes: list[str], source: str) -> dict:
    kinds = [k for k in LEAVES if k in node]
    unknown = sorted(set(node) - set(LEAVES) - {"class"})
    if len(kinds) != 1 or unknown:
        raise GroundworkError(
            f"a condition needs exactly one of {', '.join(LEAVES)} (or a group 'any'/'all'); "
            f"got {json.dumps(node)}")
    kind = kinds[0]
    out: dict = {}
    if kind == "confidence_below":
        out[kind] = _number(node[kind], "confidence threshold", 0.0, 1.0,
                            low_open=True, high_open=False)
    elif kind == "confidence_above":
        out[kind] = _number(node[kind], "confidence threshold", 0.0, 1.0,
                            low_open=False, high_open=True)
    elif kind == "sample":
        out[kind] = _number(node[kind], "sample share", 0.0, 1.0, low_open=True, high_open=False)
    else:
        if node[kind] is not True:
            raise GroundworkError('write the label-error condition as {"label_error": true}')
        if source != "labels":
            raise GroundworkError(
                "'suspected label error' checks given labels: use it in a workflow whose "
                "source is the project's labels (source 'labels'), not model predictions")
        out[kind] = True
    if "class" in node and node["class"] not in (None, ""):
        if kind not in ("confidence_below", "confidence_above"):
            raise GroundworkError("only confidence conditions can be limited to a class")
        if node["class"] not in classes:
            raise GroundworkError(f"unknown class {node['class']!r} in a condition: classes are "
                                  f"{', '.join(classes)}")
        out["class"] = node["class"]
    return out


def validate(conditions, classes: list[str], source: str = "pool") -> dict:
    """The normalised condition tree, or a GroundworkError that says what is wrong."""
    if source not in SOURCES:
        raise GroundworkError(f"unknown workflow source {source!r}: use one of "
                              f"{', '.join(SOURCES)}")
    if isinstance(conditions, str):
        try:
            conditions = json.loads(conditions)
        except json.JSONDecodeError as exc:
            raise GroundworkError(f"conditions are not valid JSON: {exc.msg}") from None

    def walk(node, depth: int) -> dict:
        if not isinstance(node, dict) or not node:
            raise GroundworkError(f"a condition must be a JSON object, not {json.dumps(node)}")
        groups = [g for g in GROUPS if g in node]
        if not groups:
            return _leaf(node, classes, source)
        if len(groups) > 1 or len(node) > 1:
            raise GroundworkError("a group holds one key, 'any' (OR) or 'all' (AND)")
        if depth >= MAX_DEPTH:
            raise GroundworkError(f"conditions nest at most {MAX_DEPTH} groups deep")
        children = node[groups[0]]
        if not isinstance(children, list) or not children:
            raise GroundworkError(f"'{groups[0]}' needs a non-empty list of conditions")
        return {groups[0]: [walk(child, depth + 1) for child in children]}

    return walk(conditions, 0)


def legacy(rule: dict) -> dict:
    """Tasks opened before workflows stored `{"below": x}`."""
    if isinstance(rule, dict) and set(rule) == {"below"}:
        return {"confidence_below": rule["below"]}
    return rule


def describe(conditions: dict) -> str:
    """A person's reading of a condition tree: 'confidence < 0.70 OR random 5% audit sample'."""
    node = legacy(conditions)
    for group, word in (("any", " OR "), ("all", " AND ")):
        if group in node:
            parts = [describe(c) if not any(g in c for g in GROUPS) else f"({describe(c)})"
                     for c in node[group]]
            return word.join(parts)
    if "confidence_below" in node:
        text = f"confidence < {node['confidence_below']:.2f}"
    elif "confidence_above" in node:
        text = f"confidence > {node['confidence_above']:.2f}"
    elif "sample" in node:
        text = f"random {node['sample']:.0%} audit sample"
    else:
        text = "suspected label error"
    if node.get("class"):
        text += f" when predicted {node['class']}"
    return text


def _leaf_fires(node: dict, c: Candidate, salt: str) -> bool:
    cls = node.get("class")
    if cls is not None and cls not in c.predicted:
        return False
    if "confidence_below" in node:
        return c.confidence < node["confidence_below"]
    if "confidence_above" in node:
        return c.confidence > node["confidence_above"]
    if "sample" in node:
        return in_sample(salt, c.item_id, node["sample"])
    return bool(c.label_error)


def evaluate(conditions: dict, candidate: Candidate, salt: str) -> list[str]:
    """The conditions that fired, described; empty when the item is not activated.

    In an AND group every member fired; in an OR group, the members that did.
    """

    def walk(node: dict) -> tuple[bool, list[str]]:
        if "any" in node or "all" in node:
            results = [walk(child) for child in node.get("any") or node.get("all")]
            if "all" in node:
                ok = all(r[0] for r in results)
            else:
                ok = any(r[0] for r in results)
            fired = [text for r in results if r[0] for text in r[1]]
            return ok, fired if ok else []
        ok = _leaf_fires(node, candidate, salt)
        return ok, [describe(node)] if ok else []

    ok, fired = walk(legacy(conditions))
    return list(dict.fromkeys(fired)) if ok else []


def inline(below: float | None = None, above: float | None = None,
           sample: float | None = None, label_errors: bool = False) -> dict:
    """Conditions from command-line flags: each one given can open a task (OR)."""
    parts: list[dict] = []
    if below is not None:
        parts.append({"confidence_below": below})
    if above is not None:
        parts.append({"confidence_above": above})
    if sample is not None:
        parts.append({"sample": sample})
    if label_errors:
        parts.append({"label_error": True})
    if not parts:
        raise GroundworkError("no condition given: use --below, --above, --sample or "
                              "--label-errors, or --workflow NAME")
    return parts[0] if len(parts) == 1 else {"any": parts}


def uses_label_errors(conditions: dict) -> bool:
    node = legacy(conditions)
    if "any" in node or "all" in node:
        return any(uses_label_errors(c) for c in node.get("any") or node.get("all"))
    return "label_error" in node
