"""Survey: safety degradation against character traits across roles."""
from pathlib import Path

import pandas as pd
import streamlit as st

from app import state, widgets
from sarft_core import jobs, plots
from sarft_core.errors import SarftError
from sarft_core.paths import confine
from sarft_core.store import workspace_root
from sarft_core.survey.config import SurveyConfig
from sarft_core.surveyview import (correlation_rows, flag_trust_table, full_survey_cost, outcome_columns, small_n_warning,
                                   survey_frame, survey_tables_under, table_label, trait_columns, unconfident_note)

st.title("Survey: which characters are risky to fine-tune?")
st.caption("One row per role: trait scores and a safety outcome (degradation = refusal rate before − after fine-tuning, "
           "or the RDS flagged fraction from a screening run). Points are roles; the line is a least-squares fit.")

surveys = workspace_root() / "surveys"
with st.expander("Run a survey"):
    roles = st.text_input("Roles", value="all", help="comma-separated role names, or all")
    mode = st.radio("Survey", ["screen", "full"], horizontal=True, key="survey_mode",
                    format_func={"screen": "Screening: RDS flagged fraction only (no training)",
                                 "full": "Full: train and evaluate every role"}.get)
    args = ["survey", *jobs.cli_args([("--roles", roles), ("--screen", mode == "screen"), ("--out", str(surveys / mode))]),
            *state.model_args(), *state.data_args()]
    ready = True
    if mode == "full":
        try:
            names = list(state.profiles()) if roles.strip().lower() == "all" else [r for r in roles.split(",") if r.strip()]
        except SarftError as err:
            widgets.show_error(err)
            names = []
        st.warning(full_survey_cost(len(names), SurveyConfig(roles=names).methods, None), icon=":material/schedule:")
        ready = st.checkbox("Start the full survey anyway", key="survey_full_ok")
    if ready:
        widgets.launch_panel(args, "survey", "Start survey", label=f"survey ({mode}) {roles}", cancel=True)

found = survey_tables_under(surveys)
source = st.selectbox("Survey table", [str(p) for p in found] + ["(another file…)"],
                      format_func=lambda p: p if p.startswith("(") else table_label(Path(p), surveys))
if source.startswith("("):
    source = st.text_input("Path of a table (.csv, .parquet, .jsonl) with a role column, trait columns and an outcome")
if not source:
    st.info("No survey table yet: run a survey, or give the path of a table.")
    st.stop()
try:
    table = survey_frame(confine(source))
    if "role" not in table:
        raise SarftError(f"{Path(source).name} has no 'role' column", "give a table with one row per role (a survey's table.csv)")
    outcomes = outcome_columns(table)
    if not outcomes:
        raise SarftError(f"{Path(source).name} has no outcome column (degradation, or flagged_fraction) with two values or more",
                         "give a survey's table.csv, or a table with a degradation or flagged_fraction column")
except SarftError as err:
    widgets.show_error(err)
    st.stop()

traits = trait_columns(table)
if not traits:
    st.warning("The table has no trait column (malevolence, aggression, … or another numeric column that is not a measurement).")
    st.stop()
c1, c2 = st.columns(2)
outcome = c1.selectbox("Outcome", outcomes)
trait = c2.selectbox("Trait", traits)

stats = pd.DataFrame(correlation_rows(table, outcome, traits))
caveat = small_n_warning(int(stats["n"].min()))
if caveat:
    st.warning(caveat, icon=":material/warning:")
    stats = stats.drop(columns=["pearson_p", "spearman_p"])
st.dataframe(stats, hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("pearson_r", "pearson_p", "spearman_r", "spearman_p")})
widgets.chart(plots.trait_scatter(table, trait, outcome), "trait_scatter")
widgets.chart(plots.per_role_bars(table, outcome), "role_bars")
trust = flag_trust_table(table)
if len(trust):
    st.subheader("How sure each role's flags are")
    st.caption("Shares flagged with 95% confidence and left uncertain; with --validate, the Spearman of the flag margin with "
               "each sample's measured erosion of refusal, and its 95% CI.")
    if note := unconfident_note(table):
        st.caption(note)
    st.dataframe(trust, hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in trust.columns[1:]})
widgets.report_download(confine(source), f"{Path(source).stem}-report.html", key="report:survey")
