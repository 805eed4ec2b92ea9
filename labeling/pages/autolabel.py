"""Auto-label page: label the confident rest with the promoted model, at a certified accuracy."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from labeling.autolabel import (
    auto_label_count,
    plan_autolabel,
    revert_auto_labels,
    run_autolabel,
)
from labeling.errors import GroundworkError
from labeling.pages.common import (
    current_account,
    current_project,
    get_db,
    require,
    stop_unless_classes,
)

db = get_db()
project = current_project(db)
st.title(f"Auto-label · {project.name}")
stop_unless_classes(project, "automated labeling")
st.caption(
    "The promoted model labels every unlabeled item whose confidence is above a threshold. "
    "The threshold is chosen so that a lower confidence bound on the accuracy of those labels, "
    "measured on held-out human labels the model never trained on, reaches your target. "
    "Machine labels are marked as such everywhere and are not used for training unless you "
    "opt in."
)

left, right = st.columns(2)
target = left.number_input("Target accuracy", min_value=0.5, max_value=0.999, value=0.95,
                           step=0.01, format="%.3f", key="autolabel-target")
confidence = right.selectbox("Confidence of the bound", [0.9, 0.95, 0.99], index=1,
                             format_func=lambda c: f"{c:.0%}", key="autolabel-confidence")
try:
    plan = plan_autolabel(db, project, float(target), float(confidence))
except GroundworkError as exc:
    st.info(str(exc))
    st.stop()

cols = st.columns(5)
cols[0].metric("Validation labels", plan["validation_size"])
cols[1].metric("Threshold", "none" if plan["threshold"] is None else f"{plan['threshold']:.3f}")
cols[2].metric("Accuracy", "n/a" if plan["estimated_accuracy"] is None
               else f"{plan['estimated_accuracy']:.3f}")
cols[3].metric(f"At least ({confidence:.0%})", "n/a" if plan["lower_bound"] is None
               else f"{plan['lower_bound']:.3f}")
# The pool size goes in the label: "1338 of 1347" is too wide for a fifth of the page.
cols[4].metric(f"Would label (of {plan['pool_size']})", plan["would_label"])
st.caption(plan["how_measured"] + ".")
if plan["threshold"] is None:
    st.warning(plan["reason"])

def coverage_chart(plan: dict, target: float) -> dict:
    """Vega-Lite layers: accuracy and its bound against coverage, the target, the chosen point.

    The chosen threshold is drawn on the chart (a rule at its coverage and a
    labelled point at its validation accuracy), carried in the spec itself, so
    the point a user is about to apply is where they look, not only in a caption.
    """
    x = {"field": "coverage", "type": "quantitative", "axis": {"format": "%"},
         "title": "share of the unlabeled pool labeled by the model"}
    layers: list[dict] = [
        {"mark": {"type": "line"},
         "encoding": {"x": x, "y": {"field": "value", "type": "quantitative",
                                    "scale": {"zero": False},
                                    "title": "accuracy on held-out human labels"},
                      "color": {"field": "series", "type": "nominal", "title": None}}},
        {"data": {"values": [{"target": float(target)}]},
         "mark": {"type": "rule", "strokeDash": [4, 4], "color": "gray"},
         "encoding": {"y": {"field": "target", "type": "quantitative"},
                      "tooltip": [{"field": "target", "format": ".3f"}]}},
    ]
    if plan["threshold"] is not None:
        chosen = {"coverage": plan["coverage"], "accuracy": plan["estimated_accuracy"],
                  "lower_bound": plan["lower_bound"], "threshold": plan["threshold"],
                  "label": f"chosen: confidence ≥ {plan['threshold']:.3f}"}
        point = {"x": x, "y": {"field": "accuracy", "type": "quantitative"}}
        tooltip = [{"field": "threshold", "format": ".3f"},
                   {"field": "coverage", "format": ".1%"},
                   {"field": "accuracy", "format": ".3f"},
                   {"field": "lower_bound", "format": ".3f", "title": "lower bound"}]
        layers += [
            {"name": "chosen-rule", "data": {"values": [chosen]},
             "mark": {"type": "rule", "color": "#d62728"}, "encoding": {"x": x}},
            {"name": "chosen-point", "data": {"values": [chosen]},
             "mark": {"type": "point", "filled": True, "size": 140, "color": "#d62728"},
             "encoding": {**point, "tooltip": tooltip}},
            {"name": "chosen-label", "data": {"values": [chosen]},
             "mark": {"type": "text", "align": "left", "dx": 8, "dy": -10,
                      "color": "#d62728"},
             "encoding": {**point, "text": {"field": "label"}}},
        ]
    return {"height": 320, "layer": layers}


if plan["curve"]:
    curve = pd.DataFrame(plan["curve"])
    lines = curve[["coverage", "accuracy", "lower_bound"]].rename(
        columns={"accuracy": "validation accuracy", "lower_bound": "lower bound"}).melt(
        id_vars="coverage", var_name="series", value_name="value")
    st.subheader("Coverage against accuracy")
    chosen = ("" if plan["threshold"] is None else
              f"Chosen point for target {float(target):.3f}: confidence ≥ "
              f"{plan['threshold']:.3f} covers {plan['coverage']:.1%} of the pool with accuracy "
              f"{plan['estimated_accuracy']:.3f} on {plan['validation_above_threshold']} "
              "validation labels.")
    st.vega_lite_chart(lines, coverage_chart(plan, float(target)), width="stretch",
                       alt="Accuracy on held-out human labels and its lower bound against "
                       "the share of the pool the model would label; the dashed line is the "
                       "goal. " + chosen)
    if chosen:
        st.caption(chosen + " Red on the chart; the dashed line is the target.")

existing = auto_label_count(db, project)
with st.container(horizontal=True):
    if st.button(f"Auto-label {plan['would_label']} items", key="autolabel-run", type="primary",
                 disabled=plan["threshold"] is None):
        require(current_account(db), "autolabel", project)  # roles (issue 6)
        result = run_autolabel(db, project, float(target), float(confidence))
        st.session_state["autolabel-message"] = (
            f"Labeled {result['auto_labeled']} items by machine"
            + (f" (replacing {result['reverted']} earlier machine labels)"
               if result["reverted"] else "")
        )
        st.rerun()
    if st.button(f"Revert all {existing} machine labels", key="autolabel-revert",
                 disabled=existing == 0):
        require(current_account(db), "autolabel", project)  # roles (issue 6)
        st.session_state["autolabel-message"] = (
            f"Reverted {revert_auto_labels(db, project)} machine labels"
        )
        st.rerun()
if message := st.session_state.pop("autolabel-message", None):
    st.success(message)
st.caption(f"{auto_label_count(db, project)} items currently carry a machine label.")
