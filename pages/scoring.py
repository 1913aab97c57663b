"""Scoring (RDS): score the role's samples, look at which are flagged and why, review, export D_h."""
from pathlib import Path

import streamlit as st

from app import state, widgets
from sarft_core import audit, jobs, plots
from sarft_core.errors import SarftError
from sarft_core.flags import flag_margin
from sarft_core.runconfig import RunConfig, ScoreSettings
from sarft_core.runview import runs_of_kind
from sarft_core.store import RunDir

st.title("Scoring (RDS)")
st.caption("Each answer y to a question x is scored under three system prompts with one frozen model: "
           "s_role = log π_role(y|x) − log π_ref(y|x), s_unsafe = log π_unsafe(y|x) − log π_ref(y|x). "
           "A sample is flagged harmful (it joins D_h) when s_unsafe − s_role > τ (τ = 0 as published).")
try:
    profile = state.current_profile()
    samples = state.role_samples()
except SarftError as err:
    widgets.show_error(err)
    st.stop()

# --- launch ---------------------------------------------------------------------------------
st.subheader(f"Score {profile.name}" + (" (edited prompts)" if state.is_edited(profile.name) else ""))
c1, c2 = st.columns([1, 2])
n = int(c1.number_input("Samples to score", min_value=1, max_value=len(samples), value=min(12, len(samples)),
                        help=f"the first N of the role's {len(samples)} samples; up to {state.in_process_max()} are scored in this "
                             "app process with a live progress bar, more in a background job"))
c2.markdown(f"**{len(samples)}** samples available · model `{state.model_label()}` · "
            + ("in-process" if n <= state.in_process_max() else "background job"))
with st.expander("Equivalent command"):
    args = ["score", "--role", profile.name, *state.data_args(), "--limit", str(n), *state.model_args(),
            "--out", "RUN_DIR/scores.parquet", "--with-tokens"]
    st.code(jobs.format_command(jobs.cli_argv(*args)), language="bash")
    st.caption("With edited prompts, the run's command uses `--profiles RUN_DIR/profiles.json` holding them.")

if st.button("Score", type="primary", key="score_go"):
    try:
        data_path, profiles_path = state.data_paths()
        run = audit.create_score_run(profile, data_path if state.data_source() != "demo" else None, state.model_spec(), limit=n,
                                     profiles_source=profiles_path if state.data_source() != "demo" else None)
        st.session_state["score_run"] = str(run.path)
        if n <= state.in_process_max():
            bar = st.progress(0.0, text="loading the model…")
            lm = state.get_model(state.model_spec())

            def progress(done, total):
                total = total or n
                bar.progress(min(1.0, done / total), text=f"scored {done:.0f} / {total} samples")

            result = audit.score_in_process(lm, samples[:n], profile, run, progress)
            bar.progress(1.0, text=f"done: {result.stats['flagged']} of {n} flagged")
        else:
            run.set_status("running")
            job = jobs.start(audit.score_args(run), kind="score", run_dir=run.path, label=f"RDS {profile.name} ({n} samples)")
            st.toast(f"started background job {job.id}")
    except SarftError as err:
        widgets.show_error(err)

# --- pick a run ---------------------------------------------------------------------------------
runs = runs_of_kind("score", role=profile.name)
if not runs:
    st.info("No scoring run for this role yet: press **Score**.")
    st.stop()
paths = [str(r.path) for r in runs]
if st.session_state.get("score_run") in paths and st.session_state.get("_score_run_seen") != st.session_state["score_run"]:
    st.session_state["score_run_pick"] = st.session_state["score_run"]  # a new run: show it
    st.session_state["_score_run_seen"] = st.session_state["score_run"]
if st.session_state.get("score_run_pick") not in paths:
    st.session_state["score_run_pick"] = paths[0]


def run_caption(path: str) -> str:
    r = RunDir(Path(path))
    return f"{r.name} · {(RunConfig.of(r).score or ScoreSettings()).limit or 'all'} samples"  # stable: a label that changes resets the choice


st.divider()
run = RunDir(Path(st.selectbox("Scoring run", paths, key="score_run_pick", format_func=run_caption)))
run_jobs = jobs.jobs_for_run(run.path)


@st.fragment(run_every=1.5)
def live_job(job: jobs.Job) -> None:
    state_ = widgets.job_status(job)
    widgets.cancel_button(job, key=f"cancel-{job.id}")
    if state_ not in ("running", "starting", "cancelling"):
        st.rerun()


if run_jobs and run_jobs[0].is_active:
    live_job(run_jobs[0])
    st.stop()
if run_jobs and run_jobs[0].state() == "failed":
    widgets.job_status(run_jobs[0])
    st.stop()
if run.status().get("state") != "completed":
    st.warning(f"This run is {run.status().get('state')}: {run.status().get('error', 'no scores were written')}.")
    st.stop()

try:
    scores = audit.load_scores(run)
except SarftError as err:
    widgets.show_error(err)
    st.stop()
scores_path = run.path / audit.SCORES_FILE
tokens = audit.load_token_ratios(run)
margin = flag_margin(scores)

# the analyst's review: tau and overrides, from disk on first view of a run
ovr_key, tau_key = f"overrides:{run.name}", f"tau:{run.name}"
if ovr_key not in st.session_state:
    saved_tau, saved_ovr = audit.load_review(scores_path)
    st.session_state[ovr_key] = saved_ovr
    st.session_state[tau_key] = saved_tau
overrides: dict = st.session_state[ovr_key]
lo = float(min(-0.5, margin.min()))
hi = float(max(0.5, margin.max()))
st.session_state[tau_key] = min(max(float(st.session_state[tau_key]), round(lo, 2)), round(hi, 2))
tau = st.slider("Threshold τ on s_unsafe − s_role", min_value=round(lo, 2), max_value=round(hi, 2), step=0.01, key=tau_key,
                help="0 is the published rule (s_unsafe > s_role)")
flags = plots.effective_flags(scores, tau, overrides)

m1, m2, m3, m4 = st.columns(4)
m1.metric("Samples", len(scores))
m2.metric("Flagged (D_h)", int(flags.sum()))
m3.metric("Flagged fraction", f"{100 * flags.mean():.1f}%")
m4.metric("Overrides", len(overrides))

p1, p2 = st.columns([3, 2])
p1.plotly_chart(plots.rds_scatter(scores, flags, tau), key="rds_scatter", width="stretch")
p2.plotly_chart(plots.margin_histogram(scores, tau), key="rds_hist", width="stretch")

# --- table ---------------------------------------------------------------------------------------
st.subheader("Samples")
f1, f2 = st.columns([2, 1])
query = f1.text_input("Filter by text (question or answer)", key=f"q:{run.name}")
show = f2.radio("Show", ["all", "flagged", "kept"], horizontal=True, key=f"show:{run.name}")
table = scores.assign(margin=margin, flagged=flags.to_numpy(),
                      override=scores["id"].map(lambda i: {True: "flagged", False: "kept"}.get(overrides.get(i), "")))
table = table[["id", "flagged", "override", "margin", "s_role", "s_unsafe", "input", "output"]]
if query:
    hit = table["input"].str.contains(query, case=False, regex=False) | table["output"].str.contains(query, case=False, regex=False)
    table = table[hit]
if show != "all":
    table = table[table["flagged"] == (show == "flagged")]
event = st.dataframe(table.sort_values("margin", ascending=False), hide_index=True, width="stretch", height=300,
                     on_select="rerun", selection_mode="single-row", key=f"table:{run.name}",
                     column_config={"margin": st.column_config.NumberColumn(format="%.3f"),
                                    "s_role": st.column_config.NumberColumn(format="%.3f"),
                                    "s_unsafe": st.column_config.NumberColumn(format="%.3f")})

# --- sample detail -------------------------------------------------------------------------------
st.subheader("Sample detail")
order = table.sort_values("margin", ascending=False)["id"].tolist() or scores["id"].tolist()
pick_key = f"sample:{run.name}"
selected_rows = event.selection.rows if event and hasattr(event, "selection") else []
if selected_rows:
    chosen = table.sort_values("margin", ascending=False).iloc[selected_rows[0]]["id"]
    if st.session_state.get(f"_last_sel:{run.name}") != chosen:
        st.session_state[pick_key] = chosen
        st.session_state[f"_last_sel:{run.name}"] = chosen
if st.session_state.get(pick_key) not in order:
    st.session_state[pick_key] = order[0]
labels = dict(zip(scores["id"], flags))
sid = st.selectbox("Sample", order, key=pick_key,
                   format_func=lambda i: f"{i} · margin {float(margin[scores['id'] == i].iloc[0]):+.3f} · "
                                         f"{str(scores.loc[scores['id'] == i, 'input'].iloc[0])[:60]}")
row = scores[scores["id"] == sid].iloc[0]
d1, d2, d3 = st.columns(3)
d1.metric("s_role", f"{row['s_role']:.3f}")
d2.metric("s_unsafe", f"{row['s_unsafe']:.3f}")
d3.metric("s_unsafe − s_role", f"{row['s_unsafe'] - row['s_role']:+.3f}", delta="flagged" if labels.get(sid) else "kept",
          delta_color="inverse" if labels.get(sid) else "off")
st.markdown("**Question**")
st.text(row["input"])
st.markdown("**Answer, each token shaded by log π_unsafe − log π_role** (red: likelier under the unsafe prompt, blue: under the role prompt)")
tok = tokens.get(sid)
if tok:
    shading = plots.token_shading(tok["tokens"], tok["ratio"])
    st.html(plots.token_spans_html(shading))  # every token is HTML-escaped text
    with st.expander("As a heat strip"):
        st.plotly_chart(plots.token_heatstrip(shading), key="heatstrip", width="stretch")
else:
    st.text(row["output"])
    st.caption("No per-token ratios were saved for this run.")

current = {True: "flagged", False: "kept"}.get(overrides.get(sid), "auto")
choice = st.radio("Flag of this sample", ["auto", "flagged", "kept"], index=["auto", "flagged", "kept"].index(current), horizontal=True,
                  key=f"ovr:{run.name}:{sid}", help="auto follows τ; flagged / kept override it for training")
if choice != current:
    new = dict(overrides)
    if choice == "auto":
        new.pop(sid, None)
    else:
        new[sid] = choice == "flagged"
    st.session_state[ovr_key] = new
    st.rerun()

# --- save and export -------------------------------------------------------------------------------
st.subheader("Save for the trainer, export D_h")
s1, s2, s3, s4 = st.columns(4)
if s1.button("Save review (τ and overrides)", type="primary"):
    with widgets.guard():
        final = audit.save_review(scores, scores_path, tau, overrides)
        st.success(f"Saved {sum(final.values())} of {len(final)} flags to `{audit.flags_path(scores_path)}` "
                   f"(τ and overrides in `{audit.review_path(scores_path).name}`).")
s2.download_button("D_h as JSONL", audit.d_h_bytes(scores, flags, "jsonl"), file_name=f"{run.name}-d_h.jsonl", mime="application/jsonl")
s3.download_button("D_h as CSV", audit.d_h_bytes(scores, flags, "csv"), file_name=f"{run.name}-d_h.csv", mime="text/csv")
widgets.report_download(run.path, f"{run.name}-report.html", key=f"report:{run.name}", reviews={str(run.path): (tau, dict(overrides))}, container=s4)
saved_tau, saved_ovr = audit.load_review(scores_path)
if audit.flags_path(scores_path).exists() and (saved_tau != tau or saved_ovr != overrides):
    st.caption("The saved review differs from what is shown: save again to pass it to training.")
widgets.command_box(jobs.format_command(jobs.cli_argv(*audit.score_args(run))), caption="This run's command:")
