"""Widgets shared by the pages: the sidebar pickers, error display, jobs and CLI commands."""
from __future__ import annotations

import contextlib
from typing import Iterator

import streamlit as st

from app import state
from sarft_core import jobs
from sarft_core.errors import SarftError

STATE_ICONS = {"created": ":material/radio_button_unchecked:", "starting": ":material/hourglass_top:", "running": ":material/sync:",
               "cancelling": ":material/stop_circle:", "completed": ":material/check_circle:", "failed": ":material/cancel:",
               "cancelled": ":material/stop_circle:"}


def show_error(err: SarftError) -> None:
    if isinstance(err, state.AwaitingInput):  # nothing is wrong yet: say what to type
        st.info(err.problem, icon=":material/info:")
        return
    st.error(f"{err.problem}" + (f"\n\n**Fix:** {err.fix}" if err.fix else ""), icon=":material/error:")


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Show a user mistake (SarftError) as a readable message instead of a traceback."""
    try:
        yield
    except SarftError as err:
        show_error(err)


def sidebar() -> None:
    """Model, data source and role pickers, present on every page."""
    with st.sidebar:
        st.markdown("### SaRFT Studio")
        st.session_state.setdefault("model_spec", state.model_spec())
        st.session_state.setdefault("data_source", "demo")
        st.text_input("Model", key="model_spec", placeholder="embedded-aligned (default)",
                      help="embedded-aligned (the default: SmolLM2-135M-Instruct with the project's safety adapter), "
                           "embedded (raw SmolLM2), a training run's folder, a local model directory, a .gguf file or a hub id")
        st.radio("Data", ["demo", "files"], key="data_source", horizontal=True,
                 format_func=lambda s: {"demo": "Demo data", "files": "Files (RoleBench…)"}[s])
        if state.data_source() == "files":
            st.text_input("Samples file", key="samples_path", placeholder="../shared/data/rolebench/…/test.jsonl",
                          help="RoleBench JSONL or any .jsonl/.json/.csv/.parquet with input/output columns")
            st.text_input("Profiles file", key="profiles_path", placeholder="../shared/data/profiles/role_prompts.json")
        try:
            names = sorted(state.profiles())
        except SarftError as err:
            if not isinstance(err, state.AwaitingInput):  # the fields right above already ask for the paths
                show_error(err)
            st.session_state.pop("role", None)
            return
        if st.session_state.get("role") not in names:
            st.session_state["role"] = names[0]
        st.selectbox("Role", names, key="role")


def chart(fig, key: str, container=None, selectable: bool = False) -> list[dict]:
    """A plotly figure on the page, drawn as the report draws it (:func:`sarft_core.figure_theme.themed`):
    a themed copy is shown, so the figure itself is never changed by being shown and the process's
    default template (Streamlit's placeholder colours) never reaches it. A figure with nothing to
    draw is its message in one line, not a blank frame. ``selectable``: clicking (or lasso-selecting)
    points reruns the page; the selected points are returned (else [])."""
    from sarft_core.figure_theme import themed
    from sarft_core.plots import empty_message

    message = empty_message(fig)
    if message is not None:
        (container or st).caption(f"{message[:1].upper()}{message[1:]}.")
        return []
    if not selectable:
        (container or st).plotly_chart(themed(fig), key=key, width="stretch")
        return []
    event = (container or st).plotly_chart(themed(fig), key=key, width="stretch", on_select="rerun", selection_mode=("points", "lasso"))
    return list(_selection(event).get("points") or [])


def _selection(event) -> dict:
    """The ``selection`` of a chart's or table's event (a plain dict where a test seeded it)."""
    if not event:
        return {}
    selection = event.get("selection") if isinstance(event, dict) else getattr(event, "selection", None)
    return selection or {}


def selected_row_id(event, ids: list[str]) -> str | None:
    """The sample id of the row selected in a single-row table showing ``ids`` in order, or None.
    Positions mean something only for the rows they were made on: the caller keys the table by its
    rows (:func:`rows_key`), so a selection never outlives the rows it points at."""
    rows = list(_selection(event).get("rows") or [])
    return ids[rows[0]] if rows and 0 <= rows[0] < len(ids) else None


def rows_key(prefix: str, ids: list[str]) -> str:
    """A widget key that changes whenever the rows shown (and their order) change."""
    import hashlib

    return f"{prefix}:{hashlib.sha256(chr(0).join(ids).encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


def command_box(command: str, caption: str = "Equivalent command (copy it to rerun this anywhere):") -> None:
    st.caption(caption)
    st.code(command, language="bash")


def launch_panel(args: list[str], kind: str, button: str, label: str, started: str = "", cancel: bool = False) -> None:
    """The exact CLI command, a button that starts it as a background job, and the latest job of ``kind``."""
    command_box(jobs.format_command(jobs.cli_argv(*args)))
    if st.button(button):
        with guard():
            job = jobs.start(args, kind=kind, label=label)
            st.success(f"Started job {job.id}. {started}".rstrip())
    for latest in jobs.list_jobs(kind)[:1]:
        job_status(latest, show_command=False)
        if cancel:
            cancel_button(latest, key=f"cancel-{latest.id}")
    if jobs.history(kind, limit=1):
        with st.expander("Finished jobs"):
            job_history(kind)


def job_status(job: jobs.Job, show_command: bool = True) -> str:
    """A job's state, progress, command and (when it failed) its log tail."""
    state_ = job.state()
    meta = job.meta()
    st.markdown(f"{STATE_ICONS.get(state_, '')} **{meta.get('label', job.kind)}** — {state_} · job `{job.id}`")
    if show_command:
        st.code(job.command, language="bash")
    if state_ in ("running", "starting", "cancelling"):
        record = job.progress_record()
        if record is not None and record.get("fraction") is not None:
            st.progress(record["fraction"], text=jobs.progress_text(record))
    if state_ == "failed":
        st.error(f"The job failed: {job.problem()}. Last lines of its log:")
        st.code(job.log_tail(25) or "(empty log)", language="text")
    elif state_ != "completed":
        with st.expander("Log"):
            st.code(job.log_tail(15) or "(nothing yet)", language="text")
    return state_


def job_history(kind: str | None = None, limit: int = 10) -> bool:
    """The finished, failed and cancelled jobs (of ``kind``) with command, duration and outcome;
    False when there is none. Read from the job store, so nothing that ended vanishes unseen."""
    import pandas as pd

    rows = jobs.history(kind, limit=limit)
    if not rows:
        return False
    table = pd.DataFrame(rows)
    table["started"] = pd.to_datetime(table["started"], unit="s", utc=True).dt.tz_convert(None).dt.strftime("%Y-%m-%d %H:%M:%S")
    table["duration"] = table["duration_s"].map(jobs.format_duration)
    st.dataframe(table[["outcome", "label", "started", "duration", "command", "problem"]], hide_index=True, width="stretch",
                 column_config={"command": st.column_config.TextColumn(width="large")})
    return True


def rerun_when_jobs_end(active: list, key: str) -> None:
    """Inside a live fragment: when a job that was running at the last look has ended, rerun the
    whole page, so that its results appear without a reload."""
    ids = {job.id for job in active}
    before = st.session_state.get(key)
    st.session_state[key] = ids
    if before and before - ids:
        st.rerun(scope="app")


def cancel_button(job: jobs.Job, key: str) -> None:
    if job.is_active and st.button("Cancel job", key=key, type="secondary"):
        with st.spinner("Stopping the job's process tree…"):
            final = jobs.cancel(job, grace_s=5.0)
        st.toast(f"job {job.id}: {final}")
        st.rerun()


def report_download(paths, file_name: str, key: str, reviews: dict | None = None, container=None) -> None:
    """A button that downloads the self-contained HTML audit report of ``paths`` (built on click)."""
    from sarft_core import report

    (container or st).download_button(
        "Audit report (HTML)", data=lambda: report.report_bytes(paths, reviews=reviews), file_name=file_name, mime="text/html",
        key=key, icon=":material/description:", on_click="ignore",
        help="one HTML file with the plots, tables and flagged samples, that opens offline in any browser "
             "(same as `python -m sarft_core report`)")


# the session-state key each page reads to select a run (so a lineage link opens the run, not just the page)
SELECT_KEYS = {"scoring": "score_run", "training": "train_watch", "compare": "compare_select"}


def open_run(page: str, run: str | None) -> None:
    """Switch to ``page`` with ``run`` selected there."""
    if run:
        st.session_state[SELECT_KEYS[page]] = run
    from pathlib import Path

    st.switch_page(str(Path(__file__).resolve().parents[1] / "pages" / f"{page}.py"))


def lineage(run_path: str, key: str, title: str = "Lineage") -> None:
    """A "Lineage" expander: what the run came from and what came of it, each a button that opens it on its page."""
    from sarft_core.runview import lineage as links_of

    found = links_of(run_path)
    with st.expander(title, icon=":material/account_tree:"):
        for title, links in (("Came from", found["parents"]), ("Led to", found["children"])):
            st.markdown(f"**{title}**")
            if not links:
                st.caption("nothing recorded")
            for i, link in enumerate(links):
                c1, c2 = st.columns([1, 3])
                c1.caption(link.relation)
                if link.page is None:
                    c2.markdown(f"`{link.label}`")
                elif c2.button(link.label, key=f"lineage:{key}:{title}:{i}", icon=":material/open_in_new:"):
                    open_run(link.page, link.select)


def causal_test(causal: dict | None) -> None:
    """The selection experiment's paired contrasts as shipped (data/flag_validation.json "causal"):
    training on, or anchoring, the top F of the samples against the bottom or a random F."""
    if not causal or not isinstance(causal.get("contrasts"), dict):
        return
    from sarft_core.reproduce import selection_lines

    fraction = causal.get("fraction", 0.3)
    st.markdown(f"**The causal test** (the selection experiment, F = {100 * fraction:.0f}%, seeds {causal.get('seeds')}, "
                f"{len(causal.get('characters', []))} characters; mean [95% CI], paired by character and seed; "
                "SFT top − SFT bottom below zero: the top samples erode more):")
    st.markdown("\n".join(selection_lines(causal["contrasts"], fraction)))
    st.caption(f"bench/selection_summary.py on {causal.get('grid')}, {causal.get('date')} · docs/reproduce.md")
