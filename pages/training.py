"""Training: launch SFT / SaRFT as a background job, watch its curves live, cancel it."""
import re
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from app import state, widgets
from sarft_core import audit, jobs, plots
from sarft_core.data import PROJECT_ROOT
from sarft_core.errors import SarftError
from sarft_core.experiment import experiment_plan, launch_experiment, plan_commands
from sarft_core.runconfig import runs_of_kind
from sarft_core.runview import runs_table
from sarft_core.store import RunDir, list_runs, runs_root
from sarft_core.cli.train import recipe_args
from sarft_core.reproduce import TRAIN_RECIPES as RECIPES, recipe_settings
from sarft_core.training.run import DEFAULT_LR, KL_METHODS, METHODS, PEFT_KINDS

COMPUTED = "(computed by the trainer)"


def lr_help(default: str) -> str:
    """The learning rate's help, from the values in force, so it can never contradict the field's default."""
    return (f"this recipe's default: {default}. Left out of the command, the trainer uses {DEFAULT_LR['lora']:g} for LoRA "
            f"and {DEFAULT_LR['full']:g} for full weights (the published value).")


st.title("Training")
st.caption("SFT fine-tunes on all the role's samples; SaRFT adds λ·KL(reference ‖ model) on the flagged samples D_h, "
           "keeping the model close to the base where the data pulls it towards unsafe behaviour.")

try:
    profile = state.current_profile()
except SarftError as err:
    widgets.show_error(err)
    st.stop()
# only a review saved for the run's present table: a leftover one would hand training another table's flags
reviews = dict((str(run.path), review) for run, review in audit.current_reviews(list_runs(), profile.name))  # latest first
config_dirs = [PROJECT_ROOT / "configs" / "accelerate", PROJECT_ROOT / "accelerate", PROJECT_ROOT / "configs"]
configs = sorted({p for d in config_dirs if d.is_dir() for p in d.glob("*.y*ml")
                  if d.name == "accelerate" or "accelerate" in p.name})
recipe = st.radio("Recipe", list(RECIPES), horizontal=True, format_func=lambda r: RECIPES[r]["label"],
                  help="The experiment's recipe is the one docs/reproduce.md measured: under it plain SFT visibly erodes the "
                       "aligned model's refusals, so SFT and SaRFT differ. The quick one is a short smoke test. With full "
                       "weights the recipe's LoRA settings do not apply; lower the learning rate there (published: 2e-5).")
chosen = RECIPES[recipe]
st.caption(chosen["about"])
# plain widgets, not a form: the command below follows every change, as the Scoring page's does
c1, c2, c3 = st.columns(3)
method = c1.selectbox("Method", list(METHODS), index=None, placeholder="choose a method")
lam = c2.number_input("λ (weight of the KL term)", min_value=0.0, value=float(chosen["lam"]), step=0.1, format="%.2f", key=f"lam-{recipe}")
peft = c3.radio("Weights", list(PEFT_KINDS), horizontal=True)
c4, c5, c6 = st.columns(3)
epochs = c4.number_input("Epochs", min_value=1, value=int(chosen["epochs"]), step=1, key=f"epochs-{recipe}")
lr = c5.text_input("Learning rate", value=chosen["lr"], key=f"lr-{recipe}", help=lr_help(chosen["lr"]))
limit = c6.number_input("Samples (0 = all)", min_value=0, value=0, step=8)
# the latest review saved on the Scoring page is the default: the analyst's τ and overrides are what training should use
flags_run = st.selectbox("Flags (D_h) from a reviewed scoring run", list(reviews) + [COMPUTED],
                         format_func=lambda p: p if p == COMPUTED else f"{Path(p).name} · {audit.review_summary(reviews[p])}",
                         help="a scoring run whose review (τ and overrides) was saved on the Scoring page, the latest first; "
                              "or let the trainer score the samples itself (τ 0)")
accel = st.selectbox("Accelerate config", ["(none: one process)"] + [str(c) for c in configs],
                     format_func=lambda p: p if p.startswith("(") else Path(p).name)


def train_args(out: str) -> list[str]:
    """The train command the form stands for, writing to ``out``; one SarftError for a form that cannot run."""
    if method is None:
        raise SarftError("no method chosen", "pick sft, sarft or another method")
    try:
        lr_value = float(lr)
    except ValueError:
        raise SarftError(f"learning rate {lr!r} is not a number", "write it like 2e-4") from None
    if not 0 < lr_value < 1:
        raise SarftError(f"learning rate {lr_value} is out of range", "use a value between 0 and 1, e.g. 2e-4")
    flags_file = tau = None
    if flags_run != COMPUTED and method in KL_METHODS:  # the reviewed flags are a D_h: other methods have none
        reviewed_scores = Path(flags_run) / audit.SCORES_FILE
        flags_file = str(audit.flags_path(reviewed_scores))  # {sample_id: bool}: the final D_h of the scored samples
        tau = audit.load_review(reviewed_scores)[0]  # for samples that run did not score
    return ["train", *jobs.cli_args([
        ("--method", method), ("--role", profile.name), ("--lambda", lam if method != "sft" else None), ("--peft", peft),
        ("--epochs", int(epochs)), ("--lr", lr), ("--limit", int(limit) or None), ("--overrides", flags_file), ("--tau", tau),
    ]), *recipe_args(recipe_settings(recipe, peft)), *state.data_args(), *state.model_args(), "--out", out]


launcher = None if accel.startswith("(") else jobs.accelerate_launcher(accel)
try:
    shown = train_args("RUN_DIR")
    preview = jobs.format_command([*launcher, *shown] if launcher else jobs.cli_argv(*shown))  # as jobs.start builds it
except SarftError as err:
    preview, not_ready = None, err
with st.expander("Equivalent command", expanded=True):
    if preview is not None:
        widgets.command_box(preview, caption="The command Launch runs (RUN_DIR: a new folder under the workspace's runs):")
    else:
        st.caption(f"No command yet: {not_ready.problem}.")
if st.button("Launch training", type="primary"):
    try:
        out = runs_root() / f"{time.strftime('%Y%m%d-%H%M%S')}-train-{method}-{re.sub(r'[^A-Za-z0-9]+', '-', profile.name).strip('-')}"
        job = jobs.start(train_args(str(out)), kind="train", run_dir=out, label=f"train {method} · {profile.name}", launcher=launcher)
        st.session_state["train_watch"] = str(out)
        st.success(f"Started job {job.id}.")
        widgets.command_box(job.command)
    except SarftError as err:
        widgets.show_error(err)

# --- one click for the experiment ---------------------------------------------------------------
with st.expander(f"SFT vs SaRFT on {profile.name} (one click)", icon=":material/experiment:"):
    st.caption("Both methods on the same data, seed and recipe (the experiment's), each evaluated when its training ends, "
               "and the base model evaluated on the same suites: the runs land on Compare as they finish.")
    e1, e2, e3 = st.columns(3)
    x_seed = e1.number_input("Seed", min_value=0, value=0, step=1, key="exp_seed")
    x_limit = e2.number_input("Samples (0 = all)", min_value=0, value=int(limit), step=8, key="exp_limit")
    x_eval = e3.number_input("Prompts per suite", min_value=1, value=50, step=10, key="exp_eval_limit")
    try:
        plan = experiment_plan(profile.name, len(state.role_samples()), runs_root(), time.strftime("%Y%m%d-%H%M%S"),
                               seed=int(x_seed), limit=int(x_limit) or None, eval_limit=int(x_eval),
                               model_args=state.model_args(), data_args=state.data_args())
    except SarftError as err:
        widgets.show_error(err)
    else:
        total = sum(step["steps"] for step in plan)
        st.markdown(f"**Cost:** {total} optimizer steps in all ("
                    + ", ".join(f"{step['method']} {step['steps']}" for step in plan if step["train"])
                    + f"), then {len(plan)} evaluations of {x_eval} prompts per suite.")
        for step in plan:
            widgets.command_box(plan_commands(step), caption=f"{step['label']}:")
        if st.button("Launch the experiment", key="exp_go"):
            try:
                started = launch_experiment(plan)
                st.session_state["train_watch"] = plan[0]["out"]
                st.success(f"Started {len(started)} jobs: " + ", ".join(f"`{job.id}`" for job in started))
            except SarftError as err:
                widgets.show_error(err)

# --- watch ---------------------------------------------------------------------------------------
st.subheader("Runs")
train_runs = runs_of_kind("train")
pending = [j for j in jobs.list_jobs("train") if j.run_dir and not j.run_dir.config_path.exists()]
if train_runs:
    st.dataframe(runs_table(train_runs).drop(columns=["kind", "path"]), hide_index=True, width="stretch")
choices = [str(j.run_dir.path) for j in pending] + [str(r.path) for r in train_runs]
if not choices:
    st.caption("No training run yet.")
    st.stop()
if st.session_state.get("train_watch") not in choices:
    st.session_state["train_watch"] = choices[0]
watch = st.selectbox("Watch", choices, key="train_watch", format_func=lambda p: Path(p).name)


@st.fragment(run_every=2.0)
def live(path: str) -> None:
    run = RunDir(Path(path))
    job = next(iter(jobs.jobs_for_run(path)), None)
    status = run.status() if run.status_path.exists() else {"state": "starting"}
    run_state = job.state() if job is not None and job.state() in ("failed", "cancelled", "cancelling") else status.get("state")
    logs = [r for r in run.logs() if "step" in r]
    last = logs[-1] if logs else {}
    cols = st.columns(4)
    cols[0].metric("State", run_state)
    planned = last.get("max_steps") or status.get("max_steps")  # known at launch, before the first step's log
    cols[1].metric("Step", f"{last.get('step', 0)} / {planned or '?'}")
    eta = last.get("eta_s")
    cols[2].metric("ETA", f"{eta:.0f} s" if isinstance(eta, (int, float)) and run_state == "running" else "–")
    cols[3].metric("Loss", f"{last['loss']:.4f}" if isinstance(last.get("loss"), (int, float)) else "–")
    if planned:
        st.progress(min(1.0, float(last.get("step", 0)) / float(planned)))
    widgets.chart(plots.training_curves(pd.DataFrame(logs)), f"curves-{run.name}")
    if job is not None:
        widgets.job_status(job)
        widgets.cancel_button(job, key=f"cancel-{job.id}")
    elif run_state == "failed":
        st.error(f"The run failed: {status.get('error', 'see its logs')}")


live(watch)
widgets.lineage(watch, key="training")
