"""Savings page: is active learning paying on this data, and when to stop labeling."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from automl.refit import learning_curve, start_refit
from automl.savings import compare_with_random, default_oracle, last_comparison
from automl.simulate import stop_hint
from labeling.errors import GroundworkError
from labeling.pages.common import (
    current_account,
    current_project,
    get_db,
    require,
    stop_unless_classes,
)
from labeling.projects import set_refit_every, set_strategy
from labeling.strategies import STRATEGIES

db = get_db()
project = current_project(db)
st.title(f"Savings · {project.name}")
stop_unless_classes(project, "the savings dashboard (strategy against random)")

with st.expander("Active learning settings", expanded=False):
    strategy = st.selectbox(
        "Query strategy for the queue", STRATEGIES, index=STRATEGIES.index(project.strategy),
        key="strategy",
        help="margin / entropy / uncertainty: modAL's measures on the quick model; batch: "
        "a diverse (ranked batch), class-balanced batch; random: no active learning.")
    every = st.number_input("Refit the quick model every N new labels (0: off)", min_value=0,
                            max_value=100_000, value=project.refit_every, key="refit-every")
    if strategy != project.strategy or int(every) != project.refit_every:
        require(current_account(db), "settings", project)  # roles (issue 6)
        project = set_refit_every(db, set_strategy(db, project, strategy), int(every))
        st.rerun()
    if st.button("Refit now", key="refit-now"):
        require(current_account(db), "settings", project)  # roles (issue 6)
        job_id = start_refit(db, project)
        st.caption(f"Refit job {job_id} started in the background.")

st.subheader("As you label")
points = learning_curve(db, project)
measured = [p for p in points if p["accuracy"] is not None]
if not measured:
    st.caption(
        f"No measurements yet: every {project.refit_every or 'N'} labels a quick model is refit "
        "in the background and measured on the random validation items people labeled.")
else:
    live = pd.DataFrame(measured)
    st.line_chart(live, x="labels", y="accuracy", x_label="labels",
                  y_label="holdout accuracy")
    last = measured[-1]
    st.caption(
        f"Quick model (logistic regression) accuracy on the {last['holdout_size']} random "
        f"validation items labeled so far, after each refit; latest: {last['accuracy']:.3f} at "
        f"{last['labels']} labels with the {last['strategy']} strategy.")
    hint = stop_hint(measured)
    if hint is not None:
        st.info(f"The curve has flattened since about {hint} labels: more labels of this kind "
                "gain little. Consider training (Train), auto-labeling the confident rest "
                "(Auto-label), or reviewing (Review).")

st.subheader("Strategy against random, on this data")
saved = last_comparison(db, project)
oracle = default_oracle(db, project)
st.caption(
    "Replays labeling twice on the same split and seed, once choosing items with the "
    "project's strategy and once at random; the answers come from "
    + ("the project's hidden gold labels." if oracle == "gold" else
       "the project's own curated labels (no gold here), so the pool is only what people "
       "labeled: indicative, not unbiased."))
with st.form("compare"):
    cols = st.columns(3)
    budget = cols[0].number_input("Labels to spend", min_value=20, max_value=5000, value=300)
    batch = cols[1].number_input("Labels per round", min_value=1, max_value=500, value=10)
    seed = cols[2].number_input("Seed", min_value=0, max_value=10_000, value=0)
    compared = project.strategy if project.strategy != "random" else "margin"
    run = st.form_submit_button(f"Compare {compared} with random", type="primary")
if run:
    try:
        require(current_account(db), "train", project)  # roles (issue 6)
        with st.spinner("Replaying both strategies..."):
            saved = compare_with_random(db, project, budget=int(budget), batch=int(batch),
                                        seed=int(seed))
    except GroundworkError as exc:
        st.error(str(exc))
if saved:
    curves = pd.DataFrame(saved["curve"]).rename(columns={"accuracy": saved["strategy"]})
    random_curve = pd.DataFrame(saved["random_curve"]).rename(columns={"accuracy": "random"})
    both = curves.merge(random_curve, on="labels", how="outer").sort_values("labels")
    st.line_chart(both, x="labels", y=[saved["strategy"], "random"], x_label="labels",
                  y_label="accuracy")
    summary = saved["summary"]
    cols = st.columns(3)
    cols[0].metric(f"Labels to {summary['goal']:.3f} with {saved['strategy']}",
                   summary["labels_strategy"] if summary["labels_strategy"] is not None
                   else f"> {saved['budget']}")
    cols[1].metric("Labels to the same accuracy at random",
                   summary["labels_random"] if summary["labels_random"] is not None
                   else f"> {saved['budget']}")
    if summary["labels_saved"] is not None:
        hours = (f" (about {summary['hours_saved']} hours at your team's "
                 f"{summary['pace_per_hour']} labels/hour)" if summary["hours_saved"] is not None
                 else "")
        cols[2].metric("Labels saved", summary["labels_saved"],
                       delta=f"{summary['ratio']}x the random labels", delta_color="off")
        st.caption(f"Saves {summary['labels_saved']} labels{hours}.")
    st.caption(
        f"Goal: 95% of {summary['full_accuracy']:.3f}, the accuracy the same model reaches "
        f"with every pool answer. {saved['how_measured']}. Run at {saved['created_at']}.")
    if summary["stop_hint"] is not None:
        st.info(f"With {saved['strategy']}, the curve flattens after about "
                f"{summary['stop_hint']} labels.")
