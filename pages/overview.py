"""Overview: what the tool does, the model and data in use, recent runs and jobs."""
import streamlit as st

from app import state, widgets
from sarft_core import jobs
from sarft_core.alignment import figures_table
from sarft_core.scoring.validate import measured_agreement
from sarft_core.data import PROJECT_ROOT
from sarft_core.paths import allowed_roots
from sarft_core.runview import runs_table
from sarft_core.store import list_runs, workspace_root

st.title("SaRFT Studio: safety audits for role-play fine-tuning")
st.markdown(
    "Fine-tuning a model to play a character can erode its safety, and villains erode it most. "
    "This tool scores every training sample of a character with **RDS** (is the answer likelier under the "
    "character's prompt made *unsafe* than under the plain character prompt?) and trains with **SaRFT**, which "
    "keeps the model close to its original self on the flagged samples. It then evaluates safety and role-play "
    "quality and compares runs and characters."
)

col1, col2 = st.columns(2)
with col1:
    st.subheader("Model")
    st.markdown(f"`{state.model_label()}`")
    st.caption("Change it in the sidebar. It is loaded once per app process, when a page first needs it.")
with col2:
    st.subheader("Data")
    with widgets.guard():
        samples, profiles = state.data_paths()
        shown = lambda p: p.relative_to(PROJECT_ROOT) if p.is_relative_to(PROJECT_ROOT) else p  # noqa: E731
        st.markdown(f"Samples: `{shown(samples)}`  \nProfiles: `{shown(profiles)}`  \nRoles: {len(state.profiles())}")
    st.caption("Files are read only from: " + ", ".join(f"`{r}`" for r in allowed_roots()))

figures = figures_table()
if figures:
    st.subheader("The default model, `embedded-aligned`")
    st.markdown("SmolLM2-135M-Instruct with the project's safety adapter (`python -m sarft_core align`, docs/alignment.md), "
                "against raw SmolLM2 (`--model embedded`), measured on prompts the alignment never trained on (`bench/bench_aligned.py`, "
                "keyword judge, greedy):")
    st.dataframe(figures, hide_index=True, width="stretch")
    agreement = measured_agreement(fingerprint=state.default_fingerprint())
    if agreement:
        st.markdown("**Do its RDS flags carry signal?** " + agreement["reading"])
        st.dataframe(agreement["table"], hide_index=True, width="stretch")
        st.caption(agreement["caption"] + " · docs/flags.md")
        widgets.causal_test(agreement.get("causal"))

active = [j for j in jobs.list_jobs() if j.is_active]
st.subheader(f"Background jobs ({len(active)} running)")
if active:
    for job in active:
        widgets.job_status(job, show_command=False)
else:
    st.caption("No job is running.")
if jobs.history(limit=1):
    with st.expander("Finished jobs (completed, failed, cancelled)"):
        widgets.job_history()

st.subheader("Recent runs")
runs = list_runs()
if runs:
    st.dataframe(runs_table(runs[:15]).drop(columns=["path"]), hide_index=True, width="stretch")
else:
    st.caption(f"No runs yet in `{workspace_root()}`. Start with **Scoring (RDS)**.")
