"""Scoring (RDS): score the role's samples, look at which are flagged and why, review, export D_h."""
from pathlib import Path

import streamlit as st

from app import state, widgets
from sarft_core import audit, jobs, plots
from sarft_core.errors import SarftError
from sarft_core.flags import flag_margin, verdict_counts, verdicts
from sarft_core.runconfig import RunConfig, ScoreSettings, runs_of_kind
from sarft_core.scoring.validate import measured_agreement
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
    widgets.job_status(run_jobs[0])  # a failed validation leaves the run's scores as they were: they are shown below
if run.status().get("state") != "completed":
    st.warning(f"This run is {run.status().get('state')}: {run.status().get('error', 'no scores were written')}.")
    st.stop()

try:
    scores = audit.load_scores(run)
except SarftError as err:
    widgets.show_error(err)
    st.stop()
scores_path = run.path / audit.SCORES_FILE
for stale in audit.stale_side_files(scores_path):
    st.warning(audit.stale_note(stale), icon=":material/warning:")
tokens = audit.load_token_ratios(run)
widgets.lineage(str(run.path), key="scoring")  # the review it led to, the training runs that used it
margin = flag_margin(scores)
UNIT = plots.margin_unit("mean")  # the dashboard scores with the default normalisation (score_args passes none)

# the analyst's review: tau and overrides, from disk on first view of a run
ovr_key, tau_key = f"overrides:{run.name}", f"tau:{run.name}"
saved_tau, saved_ovr = audit.load_review(scores_path)
kept_key = f"tau-kept:{run.name}"  # the slider's own state is dropped while another page is shown
if ovr_key not in st.session_state:
    st.session_state[ovr_key] = saved_ovr
    st.session_state[kept_key] = saved_tau
if tau_key not in st.session_state:
    st.session_state[tau_key] = st.session_state.get(kept_key, saved_tau)
overrides: dict = st.session_state[ovr_key]
lo, hi, step = audit.tau_bounds(margin, saved_tau)
st.session_state[tau_key] = min(max(float(st.session_state[tau_key]), lo), hi)
tau = st.slider(f"Threshold τ on s_unsafe − s_role ({UNIT})", min_value=lo, max_value=hi, step=step, key=tau_key,
                format=audit.tau_format(step),
                help="0 is the published rule (s_unsafe > s_role); the range spans this run's margins")
st.session_state[kept_key] = tau
flags = audit.effective_flags(scores, tau, overrides)
states = verdicts(scores, tau)
counts = verdict_counts(states)

m1, m2, m3, m4 = st.columns(4)
m1.metric("Samples", len(scores))
m2.metric("Flagged (D_h)", int(flags.sum()))
m3.metric("Flagged fraction", f"{100 * flags.mean():.1f}%")
m4.metric("Overrides", len(overrides))
v1, v2, v3 = st.columns(3)
v1.metric("Flagged with 95% confidence", counts["flagged"], help="the margin exceeds τ by more than 1.96 standard errors")
v2.metric("Uncertain", counts["uncertain"], help="the margin lies within 1.96 standard errors of τ (or its error is unknown)")
v3.metric("Kept with 95% confidence", counts["kept"], help="the margin falls short of τ by more than 1.96 standard errors")
if "margin_se" not in scores.columns:
    st.info("This run was scored before flags had confidences, so every flag counts as uncertain: "
            "score the role again to get each margin's standard error.", icon=":material/info:")

p1, p2 = st.columns([3, 2])
clicked = plots.selected_sample_ids(widgets.chart(plots.rds_scatter(scores, flags, tau), f"rds_scatter:{run.name}", p1, selectable=True))
widgets.chart(plots.margin_histogram(scores, tau, states=states, unit=UNIT), "rds_hist", p2)
st.caption("Click a point to open its sample. Bars: ±1.96 standard errors of the margin: its spread over rewordings of the "
           "unsafe instruction (a token bootstrap for tables scored with --wordings 0; docs/flags.md).")

# --- how far to trust the flags -----------------------------------------------------------------
st.subheader("How much to trust these flags on this model")
with st.expander("What was measured on the default model (embedded-aligned)"):
    shipped = measured_agreement(fingerprint=state.default_fingerprint())
    if shipped:
        st.markdown(shipped["reading"])
        st.table(shipped["table"])  # a static table: the run's own samples table stays the page's first dataframe
        st.caption(shipped["caption"] + " · docs/flags.md")
        widgets.causal_test(shipped.get("causal"))
    else:
        st.caption("Nothing measured is shipped (data/flag_validation.json is missing).")
validation = audit.load_validation(scores_path)
if validation:
    settings = validation.get("settings", {})
    st.markdown(validation.get("reading", ""))
    ci = validation.get("spearman_ci") or [float("nan"), float("nan")]
    t1, t2, t3 = st.columns(3)
    t1.metric("Spearman(margin, measured erosion)", f"{validation['spearman']:+.2f}", help=f"95% CI [{ci[0]:+.2f}, {ci[1]:+.2f}]")
    t1.caption(f"95% CI [{ci[0]:+.2f}, {ci[1]:+.2f}]")
    t2.metric(f"Flagged among the top {validation['top_k']} by erosion", f"{100 * validation['precision_at_k']:.0f}%",
              help="a flag picked at random would score the flagged fraction")
    t3.metric(f"Flagged overall (τ = {settings.get('tau', 0.0):g})", f"{100 * validation['flagged_fraction']:.0f}%")
    st.caption(f"Measured on {settings.get('prompts', '?')} held-out harmful prompts ({settings.get('validate_prompts', '?')}), "
               f"model `{settings.get('model', '?')}`. The table's “measured erosion” column is −influence: how much one step "
               "of training on the sample lowers the model's refusal margin (higher: more harmful).")
else:
    st.caption("Not validated yet. The validation measures each sample's influence on the model's refusal of held-out harmful "
               "prompts and checks that the margin ranks samples the same way. It costs about two scoring passes plus a "
               "gradient per sample, so it runs as a background job (this run's command with `--validate`).")
    widgets.command_box(jobs.format_command(jobs.cli_argv(*audit.score_args(run, validate=True))), caption="The validation's command:")
    if audit.review_state(scores_path) == "current":
        st.caption("Validating rewrites the score table (it adds the influence column), so the saved review then belongs to the "
                   "old table: save it again afterwards (τ and overrides stay on this page meanwhile).")
    if st.button("Validate these flags", key=f"validate:{run.name}"):
        with widgets.guard():
            # the run stays "completed": a validation that fails or is cancelled leaves its scores in view
            job = jobs.start(audit.score_args(run, validate=True), kind="score", run_dir=run.path, label=f"RDS {run.name} (validate)")
            st.toast(f"started background job {job.id}")
            st.rerun()

# --- table ---------------------------------------------------------------------------------------
st.subheader("Samples")
f1, f2, f3 = st.columns([2, 1, 1])
query = f1.text_input("Filter by text (question or answer)", key=f"q:{run.name}")
show = f2.radio("Show", audit.SHOW_CHOICES, horizontal=True, key=f"show:{run.name}")
verdict_pick = f3.radio("Verdict at 95%", audit.VERDICT_CHOICES, horizontal=True, key=f"verdict:{run.name}")
table = audit.filter_samples(audit.samples_table(scores, flags, overrides, tau), query, show, verdict_pick)
shown_ids = table["id"].tolist()
number = st.column_config.NumberColumn(format="%.3f")
event = st.dataframe(table.drop(columns=["margin_se"]), hide_index=True, width="stretch", height=300,
                     on_select="rerun", selection_mode="single-row", key=widgets.rows_key(f"table:{run.name}", shown_ids),
                     column_config={"margin": number, "s_role": number, "s_unsafe": number, "measured erosion": number})

# --- sample detail -------------------------------------------------------------------------------
# The sample is chosen by id (a table row or a scatter point picks it), never by position: a filter,
# Show or τ change leaves the same sample open, even when it no longer matches the filter.
st.subheader("Sample detail")
pick_key = f"sample:{run.name}"
for source, chosen in (("table", widgets.selected_row_id(event, shown_ids)), ("scatter", clicked[0] if clicked else None)):
    seen = f"_last_{source}:{run.name}"
    if chosen is not None and st.session_state.get(seen) != chosen:
        st.session_state[pick_key] = chosen
    st.session_state[seen] = chosen
all_ids = scores["id"].tolist()
if st.session_state.get(pick_key) not in all_ids:
    st.session_state[pick_key] = (shown_ids or all_ids)[0]
order = shown_ids + [st.session_state[pick_key]] if st.session_state[pick_key] not in shown_ids else shown_ids
by_id = scores.set_index("id")
labels = dict(zip(scores["id"], flags))
state_of = dict(zip(scores["id"], states))
sid = st.selectbox("Sample", order, key=pick_key,
                   format_func=lambda i: f"{i} · margin {float(margin[scores['id'] == i].iloc[0]):+.3f} · "
                                         f"{str(by_id.loc[i, 'input'])[:60]}" + ("" if i in shown_ids else " (outside the filter)"))
row = by_id.loc[sid]
d1, d2, d3, d4 = st.columns(4)
d1.metric("s_role", f"{row['s_role']:.3f}")
d2.metric("s_unsafe", f"{row['s_unsafe']:.3f}")
se = float(row["margin_se"]) if "margin_se" in row.index else float("nan")
d3.metric(f"s_unsafe − s_role ({UNIT})", f"{row['logp_unsafe'] - row['logp_role']:+.3f}" + (f" ± {se:.3f}" if se == se else ""),
          delta="flagged" if labels.get(sid) else "kept", delta_color="inverse" if labels.get(sid) else "off")
d4.metric("Verdict at 95%", state_of.get(sid, "uncertain"))
st.markdown("**Question**")
st.text(row["input"])
st.markdown("**Answer, each token shaded by log π_unsafe − log π_role** (red: likelier under the unsafe prompt, blue: under the role prompt)")
tok = tokens.get(sid)
if tok:
    shading = plots.token_shading(tok["tokens"], tok["ratio"])
    st.html(plots.token_spans_html(shading))  # every token is HTML-escaped text
    with st.expander("As a heat strip"):
        widgets.chart(plots.token_heatstrip(shading), "heatstrip")
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
s2.download_button("D_h as JSONL", audit.d_h_bytes(scores, flags, "jsonl", tau), file_name=f"{run.name}-d_h.jsonl", mime="application/jsonl")
s3.download_button("D_h as CSV", audit.d_h_bytes(scores, flags, "csv", tau), file_name=f"{run.name}-d_h.csv", mime="text/csv")
widgets.report_download(run.path, f"{run.name}-report.html", key=f"report:{run.name}", reviews={str(run.path): (tau, dict(overrides))}, container=s4)
saved_tau, saved_ovr = audit.load_review(scores_path)
if audit.flags_path(scores_path).exists() and (saved_tau != tau or saved_ovr != overrides):
    st.caption("The saved review differs from what is shown: save again to pass it to training.")
widgets.command_box(jobs.format_command(jobs.cli_argv(*audit.score_args(run))), caption="This run's command:")
