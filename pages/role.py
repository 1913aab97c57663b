"""Role: the character's profile, its editable role and unsafe prompts, its samples and traits."""
from pathlib import Path

import pandas as pd
import streamlit as st

from app import state, widgets
from sarft_core.errors import SarftError
from sarft_core.store import read_table, workspace_root

TRAITS_DIR = "traits"

st.title("Role")
try:
    profile = state.current_profile()
except SarftError as err:
    widgets.show_error(err)
    st.stop()

name = profile.name
st.header(name)
if profile.description and profile.description != profile.role_prompt:
    st.text(profile.description)

st.subheader("Prompts used by RDS")
st.caption("RDS scores each answer under the role prompt and under the unsafe prompt. Edits apply to this "
           "browser session's scoring runs and are recorded in each run's profiles.json.")
if state.is_edited(name):
    st.warning("These prompts are edited (not the ones in the profiles file).", icon=":material/edit:")
with st.form(f"prompts-{name}"):
    role_prompt = st.text_area("Role prompt (π_role)", value=profile.role_prompt, height=200)
    unsafe_prompt = st.text_area("Unsafe prompt (π_unsafe)", value=profile.unsafe_prompt, height=200)
    c1, c2 = st.columns(2)
    apply = c1.form_submit_button("Apply edits", type="primary")
    reset = c2.form_submit_button("Reset to the file's prompts")
if apply:
    with widgets.guard():
        state.set_edit(name, role_prompt, unsafe_prompt)
        st.success("Prompts updated for this session.")
        st.rerun()
if reset:
    state.reset_edit(name)
    st.rerun()

st.subheader("Training samples")
with widgets.guard():
    samples = state.role_samples()
    st.caption(f"{len(samples)} samples")
    st.dataframe(pd.DataFrame([s.to_dict() for s in samples[:200]])[["id", "input", "output"]], hide_index=True, width="stretch", height=260)

st.subheader("Trait scores")
traits_dir = workspace_root() / TRAITS_DIR


def trait_row(role: str) -> pd.DataFrame | None:
    from sarft_core.data import normalise_name

    files = sorted(traits_dir.glob("*.csv"), key=lambda p: p.stat().st_mtime, reverse=True) if traits_dir.is_dir() else []
    for f in files:
        try:
            df = read_table(f)
        except SarftError:
            continue
        if "role" in df:
            hit = df[df["role"].astype(str).map(normalise_name) == normalise_name(role)]
            if len(hit):
                return hit
    return None


row = trait_row(name)
if row is not None:
    numeric = row.drop(columns=["role"]).select_dtypes("number")
    st.dataframe(numeric, hide_index=True)
else:
    out = traits_dir / f"traits-{Path(state.data_paths()[1]).stem}.csv"
    args = ["traits", "--out", str(out)] + (["--profiles", str(state.data_paths()[1])] if state.data_source() != "demo" else [])
    widgets.launch_panel(args, "traits", "Compute trait scores", label=f"traits of {Path(state.data_paths()[1]).name}",
                         started="The scores appear here when it finishes.")
