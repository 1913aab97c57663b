"""Compare: runs side by side (one chart per kind of metric: refusal, ROUGE-L, ...; the role-play vs safety Pareto view)."""
from pathlib import Path

import streamlit as st

from app import state, widgets
from sarft_core import plots
from sarft_core.data import SHIPPED_GRIDS
from sarft_core.errors import SarftError
from sarft_core.runconfig import runs_of_kind
from sarft_core.runview import compare_metrics, disagreements, has_eval, kind_tables, pareto_points, read_generations, run_labels, suite_axis
from sarft_core.store import RunDir, list_runs

st.title("Compare runs")
grids = runs_of_kind("reproduce")  # the workspace's first, then the ones measured for the docs
shipped = {str(g.path) for g in runs_of_kind("reproduce", list_runs(SHIPPED_GRIDS))}
if grids or shipped:
    with st.expander("The paper's experiment in miniature (reproduce grids)", expanded=bool(grids)):  # open for the workspace's own
        grid_path = st.selectbox("Grid", [str(g.path) for g in grids] + sorted(shipped),
                                 format_func=lambda p: Path(p).name + (" (measured for the docs, docs/grids)" if p in shipped else ""))
        try:
            view = state.grid_view(grid_path)
        except SarftError as err:
            widgets.show_error(err)
        else:
            st.caption(view["caption"])
            if view["partial"]:
                st.warning(view["partial"])
            st.markdown("**SFT vs SaRFT, side by side**, with the grid's ablations and baselines (mean [95% CI] over seeds and prompts)")
            st.dataframe(view["side_by_side"], hide_index=True, width="stretch")
            group = st.radio("Characters", ["all", "villain", "benevolent"], horizontal=True, key="grid-group")
            c1, c2 = st.columns(2)
            widgets.chart(plots.grid_pareto(view["table"], y="advbench", group=group), "grid-pareto", c1)
            widgets.chart(plots.grid_pareto(view["table"], y="margin", group=group), "grid-pareto-margin", c2)
            metric = st.selectbox("Villains vs heroes", list(view["columns"]), format_func=lambda m: view["columns"][m])
            widgets.chart(plots.grid_group_bars(view["table"], metric), "grid-groups")
            st.markdown(view["contrasts"])
            if view["selection"]:
                st.markdown(view["selection"])
evaluated = [r for r in list_runs() if has_eval(r)]
if len(evaluated) < 1:
    st.info("No run has evaluation results yet: train runs (SFT, SaRFT) and evaluate them first.")
    st.stop()
paths = [str(r.path) for r in evaluated]
labels = run_labels(evaluated)  # an evaluation of a model is named by the model, not by its folder's digest
asked = st.session_state.get("compare_select")  # a run opened from another page's lineage comes first
first = [asked] if asked in paths else []
picked = st.multiselect("Runs", paths, default=(first + [p for p in paths if p not in first])[:4], format_func=labels.__getitem__)
runs = [RunDir(Path(p)) for p in picked]
if not runs:
    st.caption("Pick runs to compare.")
    st.stop()
for i, run in enumerate(runs):
    widgets.lineage(str(run.path), key=f"compare-{i}", title=f"Lineage · {labels[str(run.path)]}")


try:
    long = compare_metrics(runs)
    for kind, rows in kind_tables(long):  # one chart per kind of metric (the metric registry), undeclared ones included
        widgets.chart(plots.refusal_bars(suite_axis(rows), kind.title), f"kind-{kind.slug}")
    widgets.chart(plots.pareto_scatter(pareto_points(runs, long)), "pareto")
except SarftError as err:
    widgets.show_error(err)
    st.stop()

widgets.report_download([r.path for r in runs], "sarft-comparison-report.html", key="report:compare")

st.subheader("Where two runs disagree")
if len(runs) < 2:
    st.caption("Pick two runs to see the prompts where their verdicts differ.")
    st.stop()
c1, c2 = st.columns(2)
a = c1.selectbox("Run A", picked, index=0, format_func=labels.__getitem__)
b = c2.selectbox("Run B", picked, index=1, format_func=labels.__getitem__)
try:
    diff = disagreements(read_generations(RunDir(Path(a))), read_generations(RunDir(Path(b))), "A", "B")
except SarftError as err:
    widgets.show_error(err)
    st.stop()
st.caption(f"{len(diff)} prompts with different verdicts")
st.dataframe(diff, hide_index=True, width="stretch", height=360)
