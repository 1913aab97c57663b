"""Evaluation: launch safety / role-play evaluations of runs, read metrics with CIs and generations."""
from pathlib import Path

import streamlit as st

from app import state, widgets
from sarft_core import jobs, plots
from sarft_core.errors import SarftError
from sarft_core.paths import confine
from sarft_core.evaluation import review
from sarft_core.evaluation.judges import judge_specs
from sarft_core.evaluation.suites import add_benchmark, read_benchmarks, suite_names
from sarft_core.evaluation.results import find_eval_runs
from sarft_core.runconfig import runs_of_kind
from sarft_core.runview import eval_target_args, eval_target_label, has_eval, model_target, read_generations, read_metrics, run_label
from sarft_core.store import RunDir, list_runs

st.title("Evaluation")
runs = list_runs()
trained = [r for r in runs_of_kind("train", runs) if r.is_complete]

with st.expander("Add a benchmark from a file (HarmBench's behaviours, say)"):
    st.caption("A .csv, .jsonl, .json or .parquet file of harmful prompts becomes a suite of its own, for this workspace: "
               "listed below, in `eval --suite NAME`, and in `reproduce --benchmarks NAME`. Registered: "
               + (", ".join(f"`{n}`" for n in read_benchmarks()) or "none yet") + ".")
    with st.form("benchmark"):
        b1, b2, b3 = st.columns([1, 2, 1])
        bench_name = b1.text_input("Name", placeholder="harmbench")
        bench_path = b2.text_input("File", placeholder="path of the prompts file, inside the workspace or data folders")
        bench_col = b3.text_input("Prompt column (optional)", placeholder="prompt, goal, behavior ...")
        if st.form_submit_button("Register"):
            try:
                suite = add_benchmark(bench_name, confine(bench_path), bench_col.strip() or None)
                st.success(f"Registered {suite.name}; pick it among the suites below.")
            except SarftError as err:
                widgets.show_error(err)

# the model training starts from is a target too: "SFT vs SaRFT vs the model you started from"
targets = [model_target(state.model_spec())] + [str(r.path) for r in trained]
with st.form("eval"):
    picked = st.multiselect("What to evaluate", targets, format_func=eval_target_label, placeholder="the model, or completed training runs",
                            help="the sidebar's model as it is (change it there), and every completed training run")
    other = st.text_input("Another model (optional)", placeholder="embedded, a local model folder, a .gguf file or a hub id",
                          help="evaluated as it is, like the sidebar's model")
    suites = st.multiselect("Suites", suite_names(), default=None)  # the registry: every suite the CLI accepts
    specs = judge_specs()  # the registry: every judge the CLI accepts
    judge = st.selectbox("Judge", list(specs), key="judge", format_func=lambda n: f"{n}: {specs[n].description}")
    c1, c2 = st.columns(2)
    base_url = c1.text_input("Judge endpoint (openai judge)", placeholder="http://127.0.0.1:8000/v1")
    judge_model = c2.text_input("Judge model (openai judge)")
    limit = st.number_input("Prompts per suite (0 = all)", min_value=0, value=0, step=10)
    go = st.form_submit_button("Evaluate", type="primary")
if go:
    try:
        picked = picked + ([model_target(other)] if other.strip() else [])
        if not picked:
            raise SarftError("nothing chosen to evaluate", "pick the model or a completed training run, or type another model")
        if not suites:
            raise SarftError("no suite chosen", "pick at least one suite")
        extra = jobs.cli_args([
            ("--judge-base-url", base_url.strip() or None if "base_url" in specs[judge].options else None),
            ("--judge-model", judge_model.strip() or None if "model" in specs[judge].options else None),
            ("--limit", int(limit) or None),
        ])
        for target in dict.fromkeys(picked):
            args = ["eval", *eval_target_args(target), "--suite", ",".join(suites), "--judge", judge, *extra]
            # a model's results go to a folder named by its weights and settings, which the command works out
            run_dir = None if eval_target_args(target)[0] == "--model" else target
            job = jobs.start(args, kind="eval", run_dir=run_dir, label=f"eval {eval_target_label(target)}")
            widgets.command_box(job.command)
        st.success(f"Started {len(dict.fromkeys(picked))} evaluation job(s).")
    except SarftError as err:
        widgets.show_error(err)


@st.fragment(run_every=2.0)
def live_jobs() -> None:
    active = [j for j in jobs.list_jobs("eval") if j.is_active]
    widgets.rerun_when_jobs_end(active, "eval-jobs-active")  # a finished evaluation's results appear at once
    for job in active:
        widgets.job_status(job)
        widgets.cancel_button(job, key=f"cancel-{job.id}")
    if not active:
        st.caption("No evaluation is running.")
    recent_failed = [j for j in jobs.list_jobs("eval")[:5] if j.state() == "failed"]
    for job in recent_failed[:1]:
        widgets.job_status(job)
    st.markdown("**Finished jobs**")
    widgets.job_history("eval")


if jobs.list_jobs("eval"):
    st.subheader("Evaluation jobs")
    live_jobs()

# --- results -------------------------------------------------------------------------------------
st.subheader("Results")
evaluated = [r for r in runs if has_eval(r)]
if not evaluated:
    st.caption("No run has evaluation results yet (RUN/eval/metrics.json).")
    st.stop()
run = RunDir(Path(st.selectbox("Run", [str(r.path) for r in evaluated], format_func=lambda p: run_label(RunDir(Path(p))))))
widgets.lineage(str(run.path), key="evaluation")
try:
    metrics = read_metrics(run)
    generations = read_generations(run)
except SarftError as err:
    widgets.show_error(err)
    st.stop()

shown = metrics.copy()
shown["95% CI"] = [f"[{lo:.3f}, {hi:.3f}]" if lo == lo and hi == hi else "" for lo, hi in zip(shown["ci_low"], shown["ci_high"])]
# which prompts each figure is about (harmful, harmless, safe, unsafe, an attack) and which judge read them
shown["prompts"] = shown["group"] if "group" in shown else ""
shown["judge"] = shown["judge"].fillna("–") if "judge" in shown else "–"
st.dataframe(shown[["suite", "prompts", "metric", "judge", "value", "95% CI", "n"]], hide_index=True, width="stretch",
             column_config={"value": st.column_config.NumberColumn(format="%.3f")})

st.subheader("Generations")
if generations.empty:
    st.caption("No generations saved for this run.")
    st.stop()
widgets.chart(plots.verdict_bars(generations), "verdicts")
g1, g2, g3 = st.columns(3)
suite_pick = g1.multiselect("Suite", sorted(generations["suite"].dropna().astype(str).unique()))
verdict_pick = g2.multiselect("Verdict", sorted(generations["verdict"].dropna().astype(str).unique()),
                              help="e.g. the harmful prompts the model complied with")
text = g3.text_input("Text in prompt or response")
view = generations
if suite_pick:
    view = view[view["suite"].astype(str).isin(suite_pick)]
if verdict_pick:
    view = view[view["verdict"].astype(str).isin(verdict_pick)]
if text:
    view = view[view["prompt"].astype(str).str.contains(text, case=False, regex=False)
                | view["response"].astype(str).str.contains(text, case=False, regex=False)]
st.caption(f"{len(view)} of {len(generations)} generations")
st.dataframe(view.assign(prompts=plots.prompt_kind_labels(view))[["prompts", "verdict", "prompt", "response"]], hide_index=True,
             width="stretch", height=400)

# --- human review -------------------------------------------------------------------------------
st.subheader("Least certain verdicts")
try:
    items = review.review_table(find_eval_runs(run.path))
except SarftError as err:
    widgets.show_error(err)
    st.stop()
unsure = review.least_certain(items, n=10)
if unsure.empty:
    st.caption("No verdict here has a confidence (the hybrid judge gives one), or all are corrected.")
else:
    st.caption("The verdicts their judge was least sure of. A correction is stored with the run and counts in every rate.")
    st.dataframe(unsure[["suite", "judge", "verdict", "confidence", "prompt", "response"]], hide_index=True, width="stretch",
                 column_config={"confidence": st.column_config.NumberColumn(format="%.2f")})
    with st.form("correct"):
        pick = st.selectbox("Item", list(unsure.index), format_func=lambda i: f"{unsure.at[i, 'suite']} · {str(unsure.at[i, 'prompt'])[:70]}")
        label = st.radio("Human verdict", list(review.HUMAN_LABELS), horizontal=True, key="human_label")
        if st.form_submit_button("Save correction"):
            row = unsure.loc[pick]
            try:
                review.save_correction(row["eval_dir"], row["suite"], row["id"], row["prompt"], row["response"], label)
                st.success(f"Saved: {label}. The run's rates now use it.")
            except SarftError as err:
                widgets.show_error(err)
corrected = items[items[review.HUMAN_COLUMN].notna()] if not items.empty else items
if len(corrected):
    st.caption(f"{len(corrected)} verdict(s) corrected by a human in this run.")
