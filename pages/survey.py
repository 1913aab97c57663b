"""Survey: safety degradation against character traits across roles."""
from pathlib import Path

import pandas as pd
import streamlit as st

from app import widgets
from sarft_core import jobs, plots
from sarft_core.errors import SarftError
from sarft_core.paths import confine
from sarft_core.stats import correlate
from sarft_core.store import read_table, workspace_root

OUTCOMES = ("degradation", "flagged_fraction")

st.title("Survey: which characters are risky to fine-tune?")
st.caption("One row per role: trait scores and a safety outcome (degradation = refusal rate before − after fine-tuning, "
           "or the RDS flagged fraction from a screening run). Points are roles; the line is a least-squares fit.")

with st.expander("Run a survey"):
    roles = st.text_input("Roles", value="all", help="comma-separated role names, or all")
    out = workspace_root() / "surveys" / "survey"
    args = ["survey", *jobs.cli_args([("--roles", roles), ("--out", str(out))])]
    widgets.launch_panel(args, "survey", "Start survey", label=f"survey {roles}", cancel=True)

found = sorted((p for ext in ("csv", "parquet", "jsonl") for p in (workspace_root() / "surveys").rglob(f"*.{ext}")),
               key=lambda p: p.stat().st_mtime, reverse=True) if (workspace_root() / "surveys").is_dir() else []
source = st.selectbox("Survey table", [str(p) for p in found] + ["(another file…)"], format_func=lambda p: p if p.startswith("(") else Path(p).name)
if source.startswith("("):
    source = st.text_input("Path of a table (.csv, .parquet, .jsonl) with a role column, trait columns and an outcome")
if not source:
    st.info("No survey table yet: run a survey, or give the path of a table.")
    st.stop()
try:
    table = read_table(confine(source))
    if "role" not in table:
        raise SarftError(f"{Path(source).name} has no 'role' column", "give a table with one row per role")
    if "degradation" not in table and {"safety_before", "safety_after"} <= set(table.columns):
        table["degradation"] = table["safety_before"] - table["safety_after"]
    numeric = [c for c in table.select_dtypes("number").columns]
    outcomes = [c for c in OUTCOMES if c in numeric] or numeric
    if not outcomes:
        raise SarftError(f"{Path(source).name} has no numeric column", "add trait scores and a degradation column")
except SarftError as err:
    widgets.show_error(err)
    st.stop()

c1, c2 = st.columns(2)
outcome = c1.selectbox("Outcome", outcomes)
traits = [c for c in numeric if c != outcome and c not in OUTCOMES and not c.startswith(("safety_", "n_"))]
if not traits:
    st.warning("The table has no trait column besides the outcome.")
    st.stop()
trait = c2.selectbox("Trait", traits)

shown = ["n", "pearson_r", "pearson_p", "spearman_r", "spearman_p"]
stats = pd.DataFrame([dict(trait=t, **{k: v for k, v in correlate(table[t], table[outcome], n_boot=0).items() if k in shown})
                      for t in traits])
st.dataframe(stats, hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("pearson_r", "pearson_p", "spearman_r", "spearman_p")})
widgets.chart(plots.trait_scatter(table, trait, outcome), "trait_scatter")
widgets.chart(plots.per_role_bars(table, outcome), "role_bars")
widgets.report_download(confine(source), f"{Path(source).stem}-report.html", key="report:survey")
